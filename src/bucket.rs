//! A token bucket, shared by the rate-limit policy (a bucket per key) and
//! the WebSocket adapter's per-connection budgets. Only arithmetic: callers
//! own the buckets and their locking.

use std::time::{Duration, Instant};

/// The slowest rate a bucket is configured with: one token a year, the
/// longest duration the gateway counts (a wait is told to clients and
/// timed).
pub const MIN_RATE: f64 = 1.0 / crate::config::MAX_DURATION.as_secs() as f64;

impl crate::config::Validator<'_> {
    /// A bucket's rate per second at `key`: a number from [`MIN_RATE`] up.
    pub(crate) fn rate(&self, key: &str, rate: f64) -> Result<f64, crate::config::ConfigError> {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(self.err(
                key,
                format!("{rate} is not a finite number greater than zero"),
            ));
        }
        if rate < MIN_RATE {
            return Err(self.err(
                key,
                format!("{rate} is less than one a year (1/31557600, about 0.0000000317), the slowest rate taken"),
            ));
        }
        Ok(rate)
    }
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        self.tokens =
            (self.tokens + now.duration_since(self.updated).as_secs_f64() * rate).min(burst);
        self.updated = now;
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant, rate: f64, burst: u32) -> Result<(), Duration> {
        self.refill(now, rate, f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            // Saturated rather than a panic, whatever the rate.
            Err(Duration::try_from_secs_f64((1.0 - self.tokens) / rate).unwrap_or(Duration::MAX))
        }
    }

    /// Full again: forgetting it loses nothing.
    pub fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens + now.duration_since(self.updated).as_secs_f64() * rate >= burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_bucket_says_its_wait_even_at_a_rate_no_config_takes() {
        let now = Instant::now();
        let mut bucket = Bucket::full(1, now);
        assert_eq!(bucket.take(now, 1e-300, 1), Ok(()));
        assert_eq!(bucket.take(now, 1e-300, 1), Err(Duration::MAX));
        let mut bucket = Bucket::full(1, now);
        assert_eq!(bucket.take(now, MIN_RATE, 1), Ok(()));
        let wait = bucket.take(now, MIN_RATE, 1).unwrap_err();
        assert!(
            wait <= crate::config::MAX_DURATION + Duration::from_secs(1),
            "{wait:?}"
        );
    }
}
