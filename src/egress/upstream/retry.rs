//! Retries: which failures may be retried, how many retries the upstream
//! can afford (a budget that is a share of its requests), and how long to
//! wait between attempts.

use crate::config::RetryConfig;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Retries may be at most `budget_percent` of requests, plus
/// `min_retries_per_second` so a quiet upstream can still retry. Every call
/// deposits, so the balance is an atomic in thousandths of a retry; only
/// the rare withdrawal takes a lock (for the time-based refill).
pub struct RetryBudget {
    /// Thousandths of a retry each request earns.
    per_request: i64,
    min_per_second: f64,
    cap: i64,
    balance: AtomicI64,
    refilled: Mutex<Instant>,
}

impl RetryBudget {
    pub fn new(config: &RetryConfig) -> Self {
        let min = f64::from(config.min_retries_per_second);
        let per_request = i64::from(config.budget_percent) * 10;
        RetryBudget {
            per_request,
            min_per_second: min,
            cap: (min.max(1.0) as i64 + per_request / 10) * 1000,
            balance: AtomicI64::new((min as i64) * 1000),
            refilled: Mutex::new(Instant::now()),
        }
    }

    /// A request was made: it earns a share of a retry.
    pub fn deposit(&self) {
        if self.per_request > 0 && self.balance.load(Ordering::Relaxed) < self.cap {
            self.balance.fetch_add(self.per_request, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self) -> bool {
        {
            let mut last = self.refilled.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill =
                (now.duration_since(*last).as_secs_f64() * self.min_per_second * 1000.0) as i64;
            if refill > 0 {
                *last = now;
                let cap = self.cap;
                let _ = self
                    .balance
                    .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                        Some((b + refill).min(cap))
                    });
            }
        }
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
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
