//! Rate limiting: a token bucket per key (client IP, principal, header or
//! the whole route), per route. A call over the limit is refused with
//! RESOURCE_EXHAUSTED / 429 and a `Retry-After`, before the backend.
//!
//! Memory stays bounded under many distinct keys: a bucket that has refilled
//! completely holds nothing a fresh bucket would not, so such buckets are
//! dropped whenever the table reaches its size bound.

pub mod config;

use super::per_route::{Next, Policy};
use crate::bucket::Bucket;
use crate::config::{RateLimitConfig, RateLimitKey};
use crate::envelope::{Envelope, Reply};
use crate::error::GatewayError;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::Service;

/// Keys tracked per route before idle buckets are swept.
const MAX_KEYS: usize = 100_000;

pub struct Limiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Limiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (self.config.rate, self.config.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(key) {
            buckets.retain(|_, b| !b.is_full(now, rate, f64::from(burst)));
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst)
    }

    pub fn tracked_keys(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }

    fn key_of(&self, env: &Envelope) -> String {
        let ip = || {
            env.ctx
                .client_addr
                .map(|a| a.ip().to_string())
                .unwrap_or_default()
        };
        match &self.config.key {
            RateLimitKey::ClientIp => ip(),
            RateLimitKey::Principal => env
                .ctx
                .principal
                .as_ref()
                .map(|p| format!("sub:{}", p.subject))
                .unwrap_or_else(ip),
            RateLimitKey::Route => String::new(),
            RateLimitKey::Header(h) => env
                .ctx
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        }
    }
}

impl Policy for Limiter {
    fn call(
        self: Arc<Self>,
        env: Envelope,
        mut next: Next,
    ) -> BoxFuture<'static, Result<Reply, GatewayError>> {
        if let Err(retry_after) = self.take(&self.key_of(&env), Instant::now()) {
            let err =
                GatewayError::rate_limited(self.config.burst, retry_after, "rate limit exceeded");
            return Box::pin(std::future::ready(Err(err)));
        }
        Box::pin(async move { next.call(env).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32) -> Limiter {
        Limiter::new(RateLimitConfig {
            rate,
            burst,
            key: RateLimitKey::Route,
        })
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = limiter(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take("k", t0).is_ok());
        }
        let wait = l.take("k", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(l.take("k", t0 + Duration::from_millis(499)).is_err());
        assert!(l.take("k", t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.take("other", t0).is_ok(), "keys have their own buckets");
    }

    #[test]
    fn idle_keys_are_dropped_when_the_table_is_full() {
        let l = limiter(1000.0, 1);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS {
            let _ = l.take(&i.to_string(), t0);
        }
        assert_eq!(l.tracked_keys(), MAX_KEYS);
        // A second later every bucket has refilled: a new key sweeps them.
        assert!(l.take("new", t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(l.tracked_keys(), 1);
    }
}
