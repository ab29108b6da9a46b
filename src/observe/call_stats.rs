//! One method's call counters: calls by the gRPC status they ended with and
//! a histogram of the time until their replies started, as relaxed atomics. A leaf module (it knows no envelope, no
//! upstream), so the route table can hold counters without depending on
//! what renders them; they outlive config reloads (kept by method path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// gRPC status names, by code number.
pub const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// One method's counters.
#[derive(Debug, Default)]
pub struct CallStats {
    pub(crate) by_code: [AtomicU64; 17],
    /// Calls at or under each bucket's bound (not cumulative; summed when rendered).
    pub(crate) buckets: [AtomicU64; BUCKETS.len() + 1],
    pub(crate) sum_micros: AtomicU64,
    /// Response-cache lookups in this instance's memory: answered (0) and
    /// not (1).
    pub(crate) cache: [AtomicU64; 2],
}

impl CallStats {
    /// A call that failed before its reply started: its code and latency.
    pub fn record(&self, code: tonic::Code, elapsed: Duration) {
        self.record_end(code);
        self.record_start(elapsed);
    }

    /// How a call ended: counted once, when its reply ended.
    pub fn record_end(&self, code: tonic::Code) {
        let code = (code as usize).min(16);
        self.by_code[code].fetch_add(1, Ordering::Relaxed);
    }

    /// How long a call took until its reply started (or it failed).
    pub fn record_start(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// A lookup in the response cache's memory tier, and whether it found
    /// a reply to serve.
    pub fn record_cache_lookup(&self, hit: bool) {
        self.cache[usize::from(!hit)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, code: tonic::Code) -> u64 {
        self.by_code[(code as usize).min(16)].load(Ordering::Relaxed)
    }
}
