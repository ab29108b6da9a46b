//! Rate limiting: a token bucket per key (client IP, principal, header or
//! the whole route), per route. A call over the limit is refused with
//! RESOURCE_EXHAUSTED / 429 and a `Retry-After`, before the backend.
//!
//! Memory stays bounded under many distinct keys: a bucket that has refilled
//! completely holds nothing a fresh bucket would not, so such buckets are
//! dropped whenever the table reaches its size bound.
//!
//! A `scope = "global"` limit is decided in Redis (GCRA, see
//! [`crate::fleet`]) for every instance at once; while Redis is
//! unavailable, each instance enforces its share (the limit divided by the
//! live instances) in its own buckets.

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
    /// For a global limit: the fleet, and what names this limit in Redis.
    global: Option<(Arc<crate::fleet::Fleet>, String)>,
}

impl Limiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Limiter {
            config,
            buckets: Mutex::new(HashMap::new()),
            global: None,
        }
    }

    /// A limit shared by the fleet; `name` must be the same on every
    /// instance for the same route and limit (it is derived from them).
    pub fn global(config: RateLimitConfig, fleet: Arc<crate::fleet::Fleet>, name: String) -> Self {
        Limiter {
            global: Some((fleet, name)),
            ..Limiter::new(config)
        }
    }

    /// Takes one token for `key`, or says how long until one is there.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.take_scaled(key, now, 1)
    }

    /// As [`Limiter::take`], with the limit divided among `share` instances.
    fn take_scaled(&self, key: &str, now: Instant, share: u32) -> Result<(), Duration> {
        let rate = self.config.rate / f64::from(share.max(1));
        let burst = self.config.burst.div_ceil(share.max(1)).max(1);
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
            // Per authenticator, as the cache keys callers: a token's
            // `sub` and an API-key consumer of the same name are two
            // callers, neither spending the other's budget.
            RateLimitKey::Principal => env
                .ctx
                .principal
                .as_ref()
                .map(|p| format!("sub:{}:{}", env.ctx.authenticated_by, p.subject))
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
        let key = self.key_of(&env);
        let record = env.ctx.record.clone();
        let refuse = move |this: &Limiter, retry_after: std::time::Duration| {
            record.event(
                "rate limited",
                vec![opentelemetry::KeyValue::new(
                    "portico.retry_after_ms",
                    retry_after.as_millis() as i64,
                )],
            );
            GatewayError::rate_limited(this.config.burst, retry_after, "rate limit exceeded")
        };
        let Some((fleet, name)) = &self.global else {
            if let Err(retry_after) = self.take(&key, Instant::now()) {
                return Box::pin(std::future::ready(Err(refuse(&self, retry_after))));
            }
            return Box::pin(async move { next.call(env).await });
        };
        let fleet = fleet.clone();
        let redis_key = {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(format!("{name}\0{key}").as_bytes());
            fleet.key("rl", &crate::app::generation::hex(&digest[..16]))
        };
        let deadline = env.deadline();
        Box::pin(async move {
            let admit = fleet.admit(&redis_key, self.config.rate, self.config.burst);
            // A slow Redis holds the call no longer than its deadline.
            let decided = super::within_deadline(
                deadline,
                "Redis decided its global rate limit (redis.command_timeout is longer than what the call had left)",
                admit,
            )
            .await?;
            let verdict = match decided {
                Ok(None) => Ok(()),
                Ok(Some(wait)) => Err(wait),
                Err(_) => {
                    // Redis did not decide: this instance's share, locally.
                    fleet
                        .stats
                        .fallback_decisions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.take_scaled(&key, Instant::now(), fleet.live_instances())
                }
            };
            match verdict {
                Ok(()) => next.call(env).await,
                Err(retry_after) => Err(refuse(&self, retry_after)),
            }
        })
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
            global: false,
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
