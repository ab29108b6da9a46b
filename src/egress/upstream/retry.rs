//! Retries: which failures may be retried, how many retries the upstream
//! can afford (a budget that is a share of its requests), and how long to
//! wait between attempts.

use crate::config::RetryConfig;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Retries may be at most `budget_percent` of requests, plus
/// `min_retries_per_second` so a quiet upstream can still retry.
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    pub fn new(config: &RetryConfig) -> Self {
        let min = f64::from(config.min_retries_per_second);
        RetryBudget {
            ratio: f64::from(config.budget_percent) / 100.0,
            min_per_second: min,
            state: Mutex::new((min, Instant::now())),
        }
    }

    fn cap(&self) -> f64 {
        self.min_per_second.max(1.0) + 100.0 * self.ratio
    }

    /// A request was made: it earns a share of a retry.
    pub fn deposit(&self) {
        if self.ratio == 0.0 {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = (s.0 + self.ratio).min(self.cap());
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.min_per_second;
        s.0 = (s.0 + refill).min(self.cap());
        s.1 = now;
        // A tolerance, so twenty deposits of 0.05 make a whole retry.
        if s.0 >= 1.0 - 1e-9 {
            s.0 = (s.0 - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

/// Exponential backoff with full jitter: a random wait up to
/// `base * 2^retry`, capped at `max`.
pub fn backoff(config: &RetryConfig, retry: u32) -> Duration {
    let ceiling = config
        .backoff_base
        .saturating_mul(1u32 << retry.min(16))
        .min(config.backoff_max);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(percent: u32, min: u32) -> RetryConfig {
        RetryConfig {
            max_retries: 2,
            retry_on: vec![tonic::Code::Unavailable],
            budget_percent: percent,
            min_retries_per_second: min,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            idempotent_methods: Vec::new(),
        }
    }

    #[test]
    fn the_budget_allows_a_share_of_requests() {
        let b = RetryBudget::new(&config(20, 0));
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let c = config(20, 10);
        for retry in 0..10 {
            let d = backoff(&c, retry);
            assert!(d <= Duration::from_millis(25 << retry.min(4)).min(c.backoff_max));
        }
    }
}
