//! Call metrics: per method, how many calls ended with each gRPC status and
//! how long they took to start replying. Counters live on each
//! [`Target`](crate::envelope::Target) as atomics, so recording is a few
//! relaxed adds with no lookup and no lock; the admin port's `/metrics`
//! renders them, with each upstream's endpoint state, in the Prometheus
//! text format.

use crate::egress::upstream::Upstream;
use crate::envelope::{Envelope, Payload, Reply, Target};
use crate::error::GatewayError;
use crate::observe::call_record::CallRecord;
use futures_util::future::BoxFuture;
use futures_util::StreamExt as _;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

pub use super::call_stats::{CallStats, BUCKETS, CODES};

/// The outermost pipeline layer: records every call's outcome, whatever
/// protocol it came in on and whichever policy answered it.
#[derive(Clone, Copy, Default)]
pub struct RecordLayer;

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;
    fn layer(&self, inner: S) -> Record<S> {
        Record { inner }
    }
}

#[derive(Clone)]
pub struct Record<S> {
    inner: S,
}

impl<S> Service<Envelope> for Record<S>
where
    S: Service<Envelope, Response = Reply, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Reply, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut env: Envelope) -> Self::Future {
        let target = env.target.clone();
        let started = Instant::now();
        let record = env.ctx.record.clone();
        if record.active() {
            let bytes_in = match &mut env.payload {
                Payload::Unary(m) => m.len() as u64,
                Payload::Stream(messages) => {
                    // Counted as the messages pass.
                    let counting = record.clone();
                    let inner =
                        std::mem::replace(messages, Box::pin(futures_util::stream::empty()));
                    *messages = Box::pin(inner.inspect(move |m| {
                        if let Ok(m) = m {
                            counting.add_bytes_in(m.len() as u64);
                        }
                    }));
                    0
                }
            };
            record.entered(&target, env.ctx.aggregate_call, bytes_in);
        }
        let call = self.inner.call(env);
        Box::pin(async move {
            // A call dropped before its reply starts (the client left, an
            // aggregate's deadline) still counts: as CANCELLED, or with the code
            // of the failure the gateway cut it short with.
            let mut unfinished = Unfinished(Some((target, started, record)));
            let result = call.await;
            let (target, started, record) = unfinished.0.take().expect("taken once");
            match result {
                Ok(mut reply) => {
                    target.stats.record_start(started.elapsed());
                    record.replied();
                    reply.body = Box::pin(Ending {
                        body: reply.body,
                        target: Some(target),
                        record,
                    });
                    Ok(reply)
                }
                Err(e) => {
                    target.stats.record(e.grpc_code(), started.elapsed());
                    record.failed(&e);
                    Err(e)
                }
            }
        })
    }
}

struct Unfinished(Option<(Arc<Target>, Instant, Arc<CallRecord>)>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some((target, started, record)) = self.0.take() {
            target.stats.record(record.dropped(), started.elapsed());
        }
    }
}

/// A reply's stream that counts the call by how it ended: OK at its end, the
/// error's code when one cuts it (a backend failing mid-stream, a reply over
/// a limit), CANCELLED when it was dropped before its end (the client left,
/// unless the gateway cut it short with a failure of its own,
/// or the adapter could not write a message). Each adapter logs failures.
struct Ending {
    body: crate::envelope::ReplyStream,
    /// Until the call is counted.
    target: Option<Arc<Target>>,
    record: Arc<CallRecord>,
}

impl futures_util::Stream for Ending {
    type Item = Result<crate::envelope::ReplyFrame, GatewayError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let polled = self.body.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(crate::envelope::ReplyFrame::Message(m)))) => {
                self.record.add_bytes_out(m.len() as u64);
            }
            // Trailers are the last frame of a call that ended well.
            Poll::Ready(None | Some(Ok(crate::envelope::ReplyFrame::Trailers(_)))) => {
                if let Some(t) = self.target.take() {
                    t.stats.record_end(tonic::Code::Ok);
                    self.record.ended(tonic::Code::Ok);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(t) = self.target.take() {
                    t.stats.record_end(e.grpc_code());
                    self.record.failed(e);
                }
            }
            _ => {}
        }
        polled
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(t) = self.target.take() {
            t.stats.record_end(self.record.dropped());
        }
    }
}

/// A label value as the Prometheus text format writes it: `\`, `"` and a
/// line feed escaped. Upstream names come from the config and principals
/// from keys files and tokens, so any of them may hold one.
pub fn label_value(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The Prometheus text exposition of every routed method and upstream.
pub fn render<'a>(
    targets: impl Iterator<Item = &'a Arc<Target>>,
    upstreams: &[Arc<Upstream>],
    usage: &Usage,
) -> String {
    let mut targets: Vec<&Arc<Target>> = targets.collect();
    targets.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
    let mut out = String::new();
    out.push_str("# HELP portico_calls_total Calls through the policy pipeline, by method and gRPC status.\n# TYPE portico_calls_total counter\n");
    for t in &targets {
        let method = label_value(t.path.as_str().trim_start_matches('/'));
        let upstream = label_value(&t.upstream_name);
        for (code, name) in CODES.iter().enumerate() {
            let n = t.stats.by_code[code].load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "portico_calls_total{{method=\"{method}\",upstream=\"{upstream}\",code=\"{name}\"}} {n}",
                );
            }
        }
    }
    out.push_str("# HELP portico_call_duration_seconds Time until a call's reply started (or it failed).\n# TYPE portico_call_duration_seconds histogram\n");
    for t in &targets {
        let method = label_value(t.path.as_str().trim_start_matches('/'));
        let counts: Vec<u64> = t
            .stats
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "portico_call_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "portico_call_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {total}"
        );
        let sum = t.stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "portico_call_duration_seconds_sum{{method=\"{method}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "portico_call_duration_seconds_count{{method=\"{method}\"}} {total}"
        );
    }
    out.push_str("# HELP portico_cache_lookups_total Response-cache lookups in this instance's memory, by method and whether they found a reply (shared-tier hits are misses here, counted in portico_cache_shared_hits_total).\n# TYPE portico_cache_lookups_total counter\n");
    for t in &targets {
        let method = label_value(t.path.as_str().trim_start_matches('/'));
        for (result, n) in ["hit", "miss"].iter().zip(&t.stats.cache) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "portico_cache_lookups_total{{method=\"{method}\",result=\"{result}\"}} {n}",
                );
            }
        }
    }
    out.push_str("# HELP portico_upstream_in_flight Calls in flight per upstream.\n# TYPE portico_upstream_in_flight gauge\n");
    for u in upstreams {
        let _ = writeln!(
            out,
            "portico_upstream_in_flight{{upstream=\"{}\"}} {}",
            label_value(u.name()),
            u.in_flight()
        );
    }
    out.push_str("# HELP portico_endpoint_available Whether an endpoint is in rotation (healthy and not ejected).\n# TYPE portico_endpoint_available gauge\n");
    let mut in_flight = String::new();
    for u in upstreams {
        let status = u.status_json();
        for e in status["endpoints"].as_array().into_iter().flatten() {
            let available = e["healthy"] == true && e["ejected"] == false;
            let labels = format!(
                "upstream=\"{}\",endpoint=\"{}\"",
                label_value(u.name()),
                label_value(e["address"].as_str().unwrap_or_default())
            );
            let _ = writeln!(
                out,
                "portico_endpoint_available{{{labels}}} {}",
                u8::from(available)
            );
            let _ = writeln!(
                in_flight,
                "portico_endpoint_in_flight{{{labels}}} {}",
                e["in_flight"].as_u64().unwrap_or(0)
            );
        }
    }
    out.push_str("# HELP portico_endpoint_in_flight Calls in flight per endpoint.\n# TYPE portico_endpoint_in_flight gauge\n");
    out.push_str(&in_flight);
    usage.render(&mut out);
    out
}

/// Calls per authenticated principal (an API key's consumer or a token's
/// `sub`): per-client usage. Bounded: past [`MAX_PRINCIPALS`] distinct
/// principals, newcomers are counted under `other`.
#[derive(Debug, Default)]
pub struct Usage {
    by_principal: std::sync::Mutex<std::collections::HashMap<Arc<str>, u64>>,
    /// Per principal and method, over sliding windows (`GET /usage`).
    pub book: crate::observe::usage::UsageBook,
    /// External authorization decisions, by `[ext_authz.NAME]`; kept
    /// across reloads like the rest of the usage figures.
    ext_authz: std::sync::Mutex<
        std::collections::BTreeMap<String, Arc<crate::policy::ext_authz::ExtAuthzStats>>,
    >,
}

pub const MAX_PRINCIPALS: usize = 10_000;
const OTHER: &str = "other";

impl Usage {
    pub fn record(&self, principal: &str) {
        let mut map = self.by_principal.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(principal) {
            *n += 1;
            return;
        }
        let key: Arc<str> = if map.len() < MAX_PRINCIPALS {
            principal.into()
        } else {
            OTHER.into()
        };
        *map.entry(key).or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> Vec<(Arc<str>, u64)> {
        let map = self.by_principal.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(Arc<str>, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// The decision counters of the external authorization service `name`.
    pub fn ext_authz_stats(&self, name: &str) -> Arc<crate::policy::ext_authz::ExtAuthzStats> {
        self.ext_authz
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn render_ext_authz(&self, out: &mut String) {
        let all = self.ext_authz.lock().unwrap_or_else(|e| e.into_inner());
        if all.is_empty() {
            return;
        }
        out.push_str("# HELP portico_ext_authz_decisions_total External authorization decisions, by service and result (allowed, denied, failed_open, failed_closed).\n# TYPE portico_ext_authz_decisions_total counter\n");
        for (name, s) in all.iter() {
            let name = label_value(name);
            for (result, n) in [
                ("allowed", &s.allowed),
                ("denied", &s.denied),
                ("failed_open", &s.failed_open),
                ("failed_closed", &s.failed_closed),
            ] {
                let _ = writeln!(
                    out,
                    "portico_ext_authz_decisions_total{{authorizer=\"{name}\",result=\"{result}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP portico_ext_authz_cache_hits_total External authorization decisions taken from the cache.\n# TYPE portico_ext_authz_cache_hits_total counter\n");
        for (name, s) in all.iter() {
            let name = label_value(name);
            let _ = writeln!(
                out,
                "portico_ext_authz_cache_hits_total{{authorizer=\"{name}\"}} {}",
                s.cache_hits.load(Ordering::Relaxed)
            );
        }
    }

    pub fn render(&self, out: &mut String) {
        self.render_ext_authz(out);
        out.push_str("# HELP portico_principal_calls_total Calls per authenticated principal (consumer or token subject).\n# TYPE portico_principal_calls_total counter\n");
        for (principal, n) in self.snapshot() {
            let escaped = label_value(&principal);
            let _ = writeln!(
                out,
                "portico_principal_calls_total{{principal=\"{escaped}\"}} {n}"
            );
        }
    }
}

/// Placed right after authentication: counts each authenticated call
/// against its principal.
#[derive(Clone)]
pub struct UsageLayer(pub Arc<Usage>);

impl<S> Layer<S> for UsageLayer {
    type Service = CountUsage<S>;
    fn layer(&self, inner: S) -> CountUsage<S> {
        CountUsage {
            inner,
            usage: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CountUsage<S> {
    inner: S,
    usage: Arc<Usage>,
}

impl<S> Service<Envelope> for CountUsage<S>
where
    S: Service<Envelope>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, env: Envelope) -> S::Future {
        if let Some(p) = &env.ctx.principal {
            self.usage.record(&p.subject);
        }
        self.inner.call(env)
    }
}

/// The same figures as JSON, for the dashboard: calls per method by status,
/// mean latency, each upstream's endpoints, and the top principals.
pub fn stats_json<'a>(
    targets: impl Iterator<Item = &'a Arc<Target>>,
    upstreams: &[Arc<Upstream>],
    usage: &Usage,
) -> serde_json::Value {
    let mut methods: Vec<serde_json::Value> = targets
        .filter_map(|t| {
            let codes: serde_json::Map<String, serde_json::Value> = CODES
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let n = t.stats.by_code[i].load(Ordering::Relaxed);
                    (n > 0).then(|| ((*name).to_owned(), n.into()))
                })
                .collect();
            let total: u64 = codes.values().filter_map(serde_json::Value::as_u64).sum();
            (total > 0).then(|| {
                let sum = t.stats.sum_micros.load(Ordering::Relaxed);
                // Latency is taken when a reply starts, so it is averaged
                // over the calls whose reply started or failed.
                let started: u64 = t
                    .stats
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .sum();
                serde_json::json!({
                    "method": t.path.as_str().trim_start_matches('/'),
                    "upstream": &*t.upstream_name,
                    "total": total,
                    "codes": codes,
                    "mean_ms": sum as f64 / started.max(1) as f64 / 1000.0,
                })
            })
        })
        .collect();
    methods.sort_by(|a, b| a["method"].as_str().cmp(&b["method"].as_str()));
    let principals: Vec<serde_json::Value> = usage
        .snapshot()
        .into_iter()
        .take(20)
        .map(|(p, n)| serde_json::json!({"principal": &*p, "calls": n}))
        .collect();
    serde_json::json!({
        "methods": methods,
        "upstreams": upstreams.iter().map(|u| u.status_json()).collect::<Vec<_>>(),
        "principals": principals,
    })
}
