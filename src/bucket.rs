//! A token bucket, shared by the rate-limit policy (a bucket per key) and
//! the WebSocket adapter's per-connection budgets. Only arithmetic: callers
//! own the buckets and their locking.

use std::time::{Duration, Instant};

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
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    /// Full again: forgetting it loses nothing.
    pub fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        self.tokens + now.duration_since(self.updated).as_secs_f64() * rate >= burst
    }
}
