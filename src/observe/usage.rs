//! Usage analytics without a database: per principal and method, calls,
//! errors, bytes and latency quantiles over sliding windows of 1 minute,
//! 1 hour and 24 hours; and per method, the last 15 minutes in 10-second
//! steps for the dashboard's charts.
//!
//! Memory is bounded: at most [`MAX_PAIRS`] (principal, method) pairs are
//! tracked. When a new pair arrives and the book is full, the pair with the
//! fewest calls in the last 24 hours is evicted and its figures are merged
//! into the `other` principal of its method, so the tracked pairs are the
//! busiest ones and every call is still counted somewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Tracked (principal, method) pairs, besides one `other` per method.
pub const MAX_PAIRS: usize = 1000;
/// The principal calls without one are counted under.
pub const ANONYMOUS: &str = "anonymous";
/// The principal evicted pairs are merged into.
pub const OTHER: &str = "other";

/// Latency histogram: bucket `i` holds durations up to `FIRST_US * GROWTH^i`
/// microseconds (50 us, 62.5 us, ...), the last everything longer.
const HIST: usize = 64;
const FIRST_US: f64 = 50.0;
const GROWTH: f64 = 1.25;

#[derive(Clone)]
struct Bucket {
    /// Which period this bucket holds (seconds since the epoch / width).
    epoch: u64,
    calls: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    hist: [u32; HIST],
}

impl Bucket {
    fn empty(epoch: u64) -> Bucket {
        Bucket {
            epoch,
            calls: 0,
            errors: 0,
            bytes_in: 0,
            bytes_out: 0,
            hist: [0; HIST],
        }
    }

    fn add(&mut self, other: &Bucket) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        for (a, b) in self.hist.iter_mut().zip(other.hist.iter()) {
            *a = a.saturating_add(*b);
        }
    }
}

/// One window: `len` buckets of `width` seconds, allocated when first used.
#[derive(Clone)]
struct Ring {
    width: u64,
    buckets: Vec<Bucket>,
    len: usize,
}

impl Ring {
    fn new(width: u64, len: usize) -> Ring {
        Ring {
            width,
            buckets: Vec::new(),
            len,
        }
    }

    fn slot(&mut self, now: u64) -> &mut Bucket {
        if self.buckets.is_empty() {
            self.buckets = (0..self.len).map(|_| Bucket::empty(u64::MAX)).collect();
        }
        let epoch = now / self.width;
        let i = (epoch % self.len as u64) as usize;
        let b = &mut self.buckets[i];
        if b.epoch != epoch {
            *b = Bucket::empty(epoch);
        }
        b
    }

    /// The buckets inside the window ending now.
    fn live(&self, now: u64) -> impl Iterator<Item = &Bucket> {
        let epoch = now / self.width;
        let oldest = epoch.saturating_sub(self.len as u64 - 1);
        self.buckets
            .iter()
            .filter(move |b| b.epoch != u64::MAX && b.epoch >= oldest && b.epoch <= epoch)
    }

    fn calls(&self, now: u64) -> u64 {
        self.live(now).map(|b| b.calls).sum()
    }

    fn total(&self, now: u64) -> Bucket {
        let mut sum = Bucket::empty(0);
        for b in self.live(now) {
            sum.add(b);
        }
        sum
    }

    fn merge(&mut self, other: &Ring, now: u64) {
        for b in other.live(now) {
            let at = b.epoch * self.width;
            self.slot(at).add(b);
        }
    }
}

/// The three windows of one pair.
#[derive(Clone)]
struct Series {
    minute: Ring,
    hour: Ring,
    day: Ring,
}

impl Series {
    fn new() -> Series {
        Series {
            minute: Ring::new(10, 6),
            hour: Ring::new(60, 60),
            day: Ring::new(3600, 24),
        }
    }

    fn record(&mut self, now: u64, call: &Call) {
        for ring in [&mut self.minute, &mut self.hour, &mut self.day] {
            let b = ring.slot(now);
            b.calls += 1;
            b.errors += u64::from(call.failed);
            b.bytes_in += call.bytes_in;
            b.bytes_out += call.bytes_out;
            b.hist[hist_index(call.duration)] += 1;
        }
    }

    fn merge(&mut self, other: &Series, now: u64) {
        self.minute.merge(&other.minute, now);
        self.hour.merge(&other.hour, now);
        self.day.merge(&other.day, now);
    }
}

fn hist_index(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= FIRST_US {
        return 0;
    }
    ((us / FIRST_US).ln() / GROWTH.ln())
        .ceil()
        .min((HIST - 1) as f64) as usize
}

/// The upper bound of bucket `i`, in milliseconds.
fn hist_bound_ms(i: usize) -> f64 {
    FIRST_US * GROWTH.powi(i as i32) / 1000.0
}

/// The `q` quantile of a histogram, as its bucket's upper bound (ms).
fn quantile(hist: &[u32; HIST], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some((hist_bound_ms(i) * 1000.0).round() / 1000.0);
        }
    }
    None
}

/// What one finished call adds.
pub struct Call {
    pub failed: bool,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The windows `/usage` reports.
pub const WINDOWS: [&str; 3] = ["1m", "1h", "24h"];

/// One row of `/usage`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub window: &'static str,
    pub principal: String,
    pub method: String,
    pub calls: u64,
    pub errors: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One step of a method's last 15 minutes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// The step's start, Unix seconds.
    pub t: u64,
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Default)]
struct Book {
    /// By method, then principal: looked up with the call's own strings.
    methods: ByName<MethodBook>,
    /// Pairs tracked, `other` not counted.
    tracked: usize,
}

struct MethodBook {
    /// 90 steps of 10 s, for the dashboard.
    steps: Ring,
    principals: ByName<Series>,
}

impl MethodBook {
    /// The dashboard's per-method charts come from these steps, counted
    /// whoever the principal is.
    fn count(&mut self, now: u64, call: &Call) {
        let b = self.steps.slot(now);
        b.calls += 1;
        b.errors += u64::from(call.failed);
        b.hist[hist_index(call.duration)] += 1;
    }
}

/// Looked up twice on every call: a seeded fast hash rather than SipHash.
type ByName<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;

/// Usage figures, kept across reloads.
#[derive(Default)]
pub struct UsageBook {
    book: Mutex<Book>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl std::fmt::Debug for UsageBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UsageBook")
    }
}

impl UsageBook {
    pub fn record(&self, principal: Option<&str>, method: &str, call: &Call) {
        self.record_at(now_secs(), principal, method, call);
    }

    fn record_at(&self, now: u64, principal: Option<&str>, method: &str, call: &Call) {
        let principal = principal.unwrap_or(ANONYMOUS);
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let book = &mut *book;
        // A pair seen before costs two lookups: its method, its principal.
        match book.methods.get_mut(method) {
            Some(m) => {
                m.count(now, call);
                if let Some(series) = m.principals.get_mut(principal) {
                    series.record(now, call);
                    return;
                }
            }
            None => {
                let mut m = MethodBook {
                    steps: Ring::new(10, 90),
                    principals: ByName::default(),
                };
                m.count(now, call);
                book.methods.insert(method.into(), m);
            }
        }
        if book.tracked >= MAX_PAIRS && principal != OTHER {
            // The quietest pair makes room; its figures go to `other`.
            let quietest = book
                .methods
                .iter()
                .flat_map(|(method, m)| {
                    m.principals
                        .iter()
                        .filter(|(p, _)| &***p != OTHER)
                        .map(move |(p, s)| (s.day.calls(now), method.clone(), p.clone()))
                })
                .min_by_key(|(calls, _, _)| *calls);
            if let Some((_, method, p)) = quietest {
                let m = book.methods.get_mut(&method).expect("found above");
                if let Some(evicted) = m.principals.remove(&p) {
                    book.tracked -= 1;
                    m.principals
                        .entry(OTHER.into())
                        .or_insert_with(Series::new)
                        .merge(&evicted, now);
                }
            }
        }
        let mut series = Series::new();
        series.record(now, call);
        let m = book.methods.get_mut(method).expect("inserted above");
        m.principals.insert(principal.into(), series);
        if principal != OTHER {
            book.tracked += 1;
        }
    }

    /// Every pair's figures in each window, busiest first.
    pub fn rows(&self) -> Vec<Row> {
        self.rows_at(now_secs(), None)
    }

    /// One window's rows, busiest first (the dashboard's consumers).
    pub fn window_rows(&self, window: &str) -> Vec<Row> {
        let only = WINDOWS.iter().position(|w| *w == window);
        self.rows_at(now_secs(), only)
    }

    fn rows_at(&self, now: u64, only: Option<usize>) -> Vec<Row> {
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows = Vec::new();
        for (w, window) in WINDOWS.iter().enumerate() {
            if only.is_some_and(|o| o != w) {
                continue;
            }
            let mut these: Vec<Row> = book
                .methods
                .iter()
                .flat_map(|(method, m)| m.principals.iter().map(move |(p, s)| (p, method, s)))
                .filter_map(|(principal, method, s)| {
                    let ring = [&s.minute, &s.hour, &s.day][w];
                    let t = ring.total(now);
                    (t.calls > 0).then(|| Row {
                        window,
                        principal: principal.to_string(),
                        method: method.to_string(),
                        calls: t.calls,
                        errors: t.errors,
                        bytes_in: t.bytes_in,
                        bytes_out: t.bytes_out,
                        p50_ms: quantile(&t.hist, 0.50),
                        p95_ms: quantile(&t.hist, 0.95),
                        p99_ms: quantile(&t.hist, 0.99),
                    })
                })
                .collect();
            these.sort_by(|a, b| {
                b.calls
                    .cmp(&a.calls)
                    .then_with(|| a.principal.cmp(&b.principal))
                    .then_with(|| a.method.cmp(&b.method))
            });
            rows.extend(these);
        }
        rows
    }

    /// Per method, the last 15 minutes in 10-second steps, oldest first.
    pub fn recent(&self) -> Vec<(String, Vec<Step>)> {
        let now = now_secs();
        let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, Vec<Step>)> = book
            .methods
            .iter()
            .map(|(method, m)| {
                let ring = &m.steps;
                let epoch = now / 10;
                let steps = (0..90u64)
                    .rev()
                    .map(|back| {
                        let e = epoch.saturating_sub(back);
                        let b = ring.live(now).find(|b| b.epoch == e);
                        Step {
                            t: e * 10,
                            calls: b.map_or(0, |b| b.calls),
                            errors: b.map_or(0, |b| b.errors),
                            p50_ms: b.and_then(|b| quantile(&b.hist, 0.50)),
                            p95_ms: b.and_then(|b| quantile(&b.hist, 0.95)),
                            p99_ms: b.and_then(|b| quantile(&b.hist, 0.99)),
                        }
                    })
                    .collect();
                (method.to_string(), steps)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// `/usage` as JSON.
    pub fn json(&self) -> serde_json::Value {
        let rows = self.rows();
        let mut windows = serde_json::Map::new();
        for w in WINDOWS {
            let these: Vec<&Row> = rows.iter().filter(|r| r.window == w).collect();
            windows.insert(w.to_owned(), serde_json::json!(these));
        }
        serde_json::json!({
            "max_pairs": MAX_PAIRS,
            "windows": windows,
        })
    }

    /// `/usage?format=csv`: one row per window, principal and method.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "window,principal,method,calls,errors,bytes_in,bytes_out,p50_ms,p95_ms,p99_ms\n",
        );
        let field = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        let num = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        for r in self.rows() {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                r.window,
                field(&r.principal),
                field(&r.method),
                r.calls,
                r.errors,
                r.bytes_in,
                r.bytes_out,
                num(r.p50_ms),
                num(r.p95_ms),
                num(r.p99_ms),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ms: u64, failed: bool) -> Call {
        Call {
            failed,
            duration: Duration::from_millis(ms),
            bytes_in: 10,
            bytes_out: 100,
        }
    }

    #[test]
    fn each_window_counts_only_its_own_span_of_time() {
        let book = UsageBook::default();
        let t0 = 1_000_000_000;
        book.record_at(t0, Some("acme"), "m/A", &call(1, false));
        book.record_at(t0 + 120, Some("acme"), "m/A", &call(1, true));
        book.record_at(t0 + 7200, Some("acme"), "m/A", &call(1, false));
        let rows = book.rows_at(t0 + 7200, None);
        let get = |w: &str| {
            rows.iter()
                .find(|r| r.window == w)
                .map(|r| (r.calls, r.errors))
        };
        assert_eq!(get("1m"), Some((1, 0)));
        assert_eq!(get("1h"), Some((1, 0)));
        assert_eq!(get("24h"), Some((3, 1)));
        let day = rows.iter().find(|r| r.window == "24h").unwrap();
        assert_eq!((day.bytes_in, day.bytes_out), (30, 300));
    }

    #[test]
    fn quantiles_come_from_the_latency_histogram() {
        let book = UsageBook::default();
        let t0 = 2_000_000_000;
        for i in 0..100 {
            book.record_at(t0, None, "m/A", &call(if i < 90 { 2 } else { 200 }, false));
        }
        let r = &book.rows_at(t0, None)[0];
        assert_eq!(r.principal, ANONYMOUS);
        let (p50, p99) = (r.p50_ms.unwrap(), r.p99_ms.unwrap());
        assert!((2.0..2.0 * GROWTH).contains(&p50), "{p50}");
        assert!((200.0..200.0 * GROWTH).contains(&p99), "{p99}");
    }

    #[test]
    fn a_full_book_keeps_the_busiest_pairs_and_counts_the_rest_as_other() {
        let book = UsageBook::default();
        let t0 = 3_000_000_000;
        for i in 0..MAX_PAIRS {
            let n = if i == 0 { 1 } else { 3 };
            for _ in 0..n {
                book.record_at(t0, Some(&format!("p{i}")), "m/A", &call(1, false));
            }
        }
        book.record_at(t0, Some("newcomer"), "m/A", &call(1, false));
        let rows = book.rows_at(t0, None);
        let day: Vec<&Row> = rows.iter().filter(|r| r.window == "24h").collect();
        assert!(
            day.iter().all(|r| r.principal != "p0"),
            "the quietest was evicted"
        );
        let other = day.iter().find(|r| r.principal == OTHER).unwrap();
        assert_eq!(other.calls, 1, "its call still counts");
        assert!(day.iter().any(|r| r.principal == "newcomer"));
        let total: u64 = day.iter().map(|r| r.calls).sum();
        assert_eq!(total, 1 + 3 * (MAX_PAIRS as u64 - 1) + 1);
    }
}
