//! The access log: one line per call, whatever protocol carried it, and one
//! per WebSocket session when it ends. Each call carries a [`CallRecord`]
//! from the moment its adapter reads it: the adapter, the pipeline's
//! recorder, the policies and the upstream write what they learn into it,
//! and the line is written when the last of them lets go of it, so a call
//! makes exactly one line however it ends (a reply, a refusal before the
//! pipeline, an error mid-stream, a client that left).
//!
//! Lines go to a writer thread through a bounded queue: a slow disk or a
//! blocked stdout never holds up a request; a line that finds the queue
//! full is dropped and counted (`portico_access_log_dropped_total`).

pub mod config;

pub use config::{AccessLogConfig, Format};

use super::traces::{remote_parent, traceparent, Tracing};
use crate::envelope::Principal;
use crate::error::GatewayError;
use opentelemetry::trace::{Span as _, SpanContext, Status, TraceContextExt as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::Span;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Lines dropped because the writer fell behind, over the process's life.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines written, over the process's life.
pub static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// How many lines may wait for the writer before new ones are dropped.
const QUEUE_LINES: usize = 16_384;

/// The protocol a call came in on, as logs, metrics and traces name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocol {
    Rest,
    Grpc,
    GrpcWeb,
    Connect,
    WebSocket,
    Mcp,
}

impl ClientProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientProtocol::Rest => "rest",
            ClientProtocol::Grpc => "grpc",
            ClientProtocol::GrpcWeb => "grpc-web",
            ClientProtocol::Connect => "connect",
            ClientProtocol::WebSocket => "websocket",
            ClientProtocol::Mcp => "mcp",
        }
    }
}

/// Where lines go: one per generation (a reload opens the file again, so
/// a log rotated by renaming it continues in a new file).
pub struct AccessLog {
    format: Format,
    sample: f64,
    lines: SyncSender<String>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .field("sample", &self.sample)
            .finish()
    }
}

impl AccessLog {
    /// Opens the log's destination and starts its writer thread.
    pub fn start(config: &AccessLogConfig) -> Result<Arc<AccessLog>, String> {
        let mut out: Box<dyn Write + Send> = match &config.path {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            ),
            None => Box::new(std::io::stdout()),
        };
        let (lines, queue) = sync_channel::<String>(QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                // Whole lines per write: two generations appending to one
                // file during a reload never split each other's lines.
                let mut batch = Vec::with_capacity(64 * 1024);
                while let Ok(line) = queue.recv() {
                    batch.extend_from_slice(line.as_bytes());
                    while batch.len() < 60 * 1024 {
                        match queue.try_recv() {
                            Ok(line) => batch.extend_from_slice(line.as_bytes()),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = out.write_all(&batch).and_then(|()| out.flush()) {
                        tracing::warn!(error = %e, "access log write failed");
                    }
                    batch.clear();
                }
            })
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Arc::new(AccessLog {
            format: config.format,
            sample: config.sample,
            lines,
        }))
    }

    fn write(&self, line: String) {
        match self.lines.try_send(line) {
            Ok(()) => {
                WRITTEN.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Where what a call records goes: the access log, the trace exporter.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    pub log: Option<Arc<AccessLog>>,
    pub tracing: Option<Arc<Tracing>>,
    /// Usage analytics (`GET /usage`, the dashboard).
    pub usage: Option<Arc<super::metrics::Usage>>,
}

impl Sinks {
    pub fn any(&self) -> bool {
        self.log.is_some() || self.tracing.is_some() || self.usage.is_some()
    }
}

/// An upstream attempt in progress: when it started, and its span.
pub struct Attempt {
    since: Option<Instant>,
    span: Option<Span>,
}

impl Attempt {
    /// The `traceparent` the backend gets: the attempt's span as parent.
    pub fn traceparent(&self) -> Option<http::HeaderValue> {
        let sc = self.span.as_ref()?.span_context().clone();
        http::HeaderValue::from_str(&traceparent(&sc)).ok()
    }

    pub fn tracestate(&self) -> Option<http::HeaderValue> {
        let state = self.span.as_ref()?.span_context().trace_state().header();
        (!state.is_empty())
            .then(|| http::HeaderValue::from_str(&state).ok())
            .flatten()
    }
}

/// Whether a record is one call or a WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Session,
}

/// What is known of one call (or session), filled in as it goes.
#[derive(Default)]
struct Facts {
    method: Option<String>,
    route: Option<String>,
    upstream: Option<Arc<str>>,
    endpoint: Option<String>,
    attempts: u32,
    http_status: Option<u16>,
    code: Option<tonic::Code>,
    error: Option<(String, &'static str)>,
    principal: Option<String>,
    cache: Option<&'static str>,
    bytes_in: u64,
    bytes_out: u64,
    client: Option<SocketAddr>,
    /// When the call entered the pipeline.
    pipeline_at: Option<Instant>,
    /// When its first upstream attempt started.
    upstream_at: Option<Instant>,
    /// Summed over attempts, until each one's reply started or it failed.
    upstream_time: Duration,
    /// When the reply started (its headers, or its only message).
    replied_at: Option<Instant>,
    /// A session's calls; for a call, the session it belongs to.
    calls: u64,
    session: Option<String>,
    close_code: Option<u16>,
    /// The route turned its lines off.
    silenced: bool,
    /// The call's server span, when traces are exported.
    span: Option<Span>,
}

/// One call's (or session's) record; its line is written when it drops.
pub struct CallRecord {
    log: Option<Arc<AccessLog>>,
    tracing: Option<Arc<Tracing>>,
    usage: Option<Arc<super::metrics::Usage>>,
    kind: Kind,
    protocol: ClientProtocol,
    started: Instant,
    wall: SystemTime,
    request_id: String,
    http_method: String,
    path: String,
    trace: Option<(String, String)>,
    facts: Mutex<Facts>,
}

impl std::fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecord")
            .field("protocol", &self.protocol)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

impl CallRecord {
    /// A call's record, from its request line and headers.
    pub fn call(
        sinks: &Sinks,
        protocol: ClientProtocol,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Arc<CallRecord> {
        Self::new(
            sinks,
            Kind::Call,
            protocol,
            Some(method),
            path,
            headers,
            None,
        )
    }

    /// A call of a WebSocket session (no HTTP request of its own): its
    /// span is the session's child, unless `own_parent` (the call's
    /// metadata named its own `traceparent`).
    pub fn websocket_call(
        sinks: &Sinks,
        path: &str,
        headers: &http::HeaderMap,
        session: &CallRecord,
        own_parent: bool,
    ) -> Arc<CallRecord> {
        let parent = if own_parent {
            None
        } else {
            session.span_context()
        };
        Self::new(
            sinks,
            Kind::Call,
            ClientProtocol::WebSocket,
            None,
            path,
            headers,
            parent,
        )
    }

    /// A WebSocket session's record, from its handshake.
    pub fn session(
        sinks: &Sinks,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Arc<CallRecord> {
        Self::new(
            sinks,
            Kind::Session,
            ClientProtocol::WebSocket,
            Some(method),
            path,
            headers,
            None,
        )
    }

    /// A record that writes nothing (internal calls, tests): one shared.
    pub fn none() -> Arc<CallRecord> {
        static NONE: std::sync::LazyLock<Arc<CallRecord>> = std::sync::LazyLock::new(|| {
            CallRecord::new(
                &Sinks::default(),
                Kind::Call,
                ClientProtocol::Grpc,
                None,
                "",
                &http::HeaderMap::new(),
                None,
            )
        });
        NONE.clone()
    }

    fn new(
        sinks: &Sinks,
        kind: Kind,
        protocol: ClientProtocol,
        method: Option<&http::Method>,
        path: &str,
        headers: &http::HeaderMap,
        parent: Option<SpanContext>,
    ) -> Arc<CallRecord> {
        // Usage figures need no text of the request; a log line and a span do.
        let logging = sinks.log.is_some() || sinks.tracing.is_some();
        let wall = SystemTime::now();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let span = sinks.tracing.as_ref().map(|t| {
            let parent = match parent {
                Some(sc) => opentelemetry::Context::new().with_remote_span_context(sc),
                None => remote_parent(header("traceparent"), header("tracestate")),
            };
            let name = match kind {
                Kind::Session => format!("websocket {path}"),
                Kind::Call => path.trim_start_matches('/').to_owned(),
            };
            t.server_span(name, &parent, wall)
        });
        let text = |name: &http::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        Arc::new(CallRecord {
            kind,
            protocol,
            started: Instant::now(),
            wall,
            request_id: if logging {
                text(&crate::ingress::edge::request_id::HEADER)
            } else {
                String::new()
            },
            http_method: match method {
                Some(m) if logging => m.as_str().to_owned(),
                _ => String::new(),
            },
            path: if logging {
                path.to_owned()
            } else {
                String::new()
            },
            trace: if logging {
                headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_traceparent)
            } else {
                None
            },
            facts: Mutex::new(Facts {
                span,
                ..Facts::default()
            }),
            log: sinks.log.clone(),
            tracing: sinks.tracing.clone(),
            usage: sinks.usage.clone(),
        })
    }

    pub fn protocol(&self) -> ClientProtocol {
        self.protocol
    }

    /// Whether anything reads what is recorded: callers skip building
    /// strings for a record nobody logs.
    pub fn logging(&self) -> bool {
        self.log.is_some() || self.tracing.is_some() || self.usage.is_some()
    }

    /// The call's span, as a parent for others.
    pub fn span_context(&self) -> Option<SpanContext> {
        let f = self.facts();
        f.span.as_ref().map(|s| s.span_context().clone())
    }

    /// Something worth a mark on the call's span (a rate-limit refusal).
    pub fn event(&self, name: &'static str, attributes: Vec<KeyValue>) {
        if self.tracing.is_some() {
            if let Some(span) = self.facts().span.as_mut() {
                span.add_event(name, attributes);
            }
        }
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The call entered the pipeline for `target`, with a request of
    /// `bytes_in` bytes (so far).
    pub fn entered(&self, target: &crate::envelope::Target, bytes_in: u64) {
        if !self.logging() {
            return;
        }
        let mut f = self.facts();
        if f.pipeline_at.is_none() {
            f.pipeline_at = Some(Instant::now());
            f.method = Some(target.path.as_str().trim_start_matches('/').to_owned());
            f.upstream = Some(target.upstream_name.clone());
            f.silenced = !target.access_log;
        }
        f.bytes_in += bytes_in;
    }

    /// The route template the request matched (REST bindings).
    pub fn route(&self, template: impl FnOnce() -> String) {
        if self.logging() {
            self.facts().route = Some(template());
        }
    }

    pub fn client(&self, client: Option<SocketAddr>) {
        if self.logging() {
            self.facts().client = client;
        }
    }

    pub fn principal(&self, principal: &Principal) {
        if self.logging() {
            self.facts().principal = Some(principal.subject.clone());
        }
    }

    pub fn cache(&self, verdict: &'static str) {
        if self.logging() {
            let mut f = self.facts();
            f.cache = Some(verdict);
            if verdict != "miss" {
                if let Some(span) = f.span.as_mut() {
                    span.add_event("cache hit", vec![KeyValue::new("portico.cache", verdict)]);
                }
            }
        }
    }

    pub fn add_bytes_in(&self, n: u64) {
        if self.logging() {
            self.facts().bytes_in += n;
        }
    }

    pub fn add_bytes_out(&self, n: u64) {
        if self.logging() {
            self.facts().bytes_out += n;
        }
    }

    /// An upstream attempt on `endpoint` started; returns when, for
    /// [`CallRecord::attempt_done`].
    /// `retry_of` is the failure the attempt retries.
    pub fn attempt(
        &self,
        target: &crate::envelope::Target,
        endpoint: &str,
        retry_of: Option<&GatewayError>,
    ) -> Attempt {
        if !self.logging() {
            return Attempt {
                since: None,
                span: None,
            };
        }
        let now = Instant::now();
        let mut f = self.facts();
        f.attempts += 1;
        f.endpoint = Some(endpoint.to_owned());
        f.upstream_at.get_or_insert(now);
        let span = match (&self.tracing, &f.span) {
            (Some(t), Some(parent)) => {
                let mut attrs = rpc_attributes(target);
                let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, ""));
                attrs.push(KeyValue::new("server.address", host.to_owned()));
                if let Ok(port) = port.parse::<i64>() {
                    attrs.push(KeyValue::new("server.port", port));
                }
                attrs.push(KeyValue::new("portico.attempt", i64::from(f.attempts)));
                if let Some(e) = retry_of {
                    attrs.push(KeyValue::new("portico.retry_reason", e.message.clone()));
                }
                Some(t.attempt_span(
                    target.path.as_str().trim_start_matches('/').to_owned(),
                    parent.span_context(),
                    attrs,
                ))
            }
            _ => None,
        };
        Attempt {
            since: Some(now),
            span,
        }
    }

    /// The attempt has its reply, or failed with `error`; `ejected` when
    /// the failure took its endpoint out of rotation.
    pub fn attempt_done(
        &self,
        attempt: Attempt,
        error: Option<&GatewayError>,
        ejected: Option<Duration>,
    ) {
        let Some(since) = attempt.since else {
            return;
        };
        self.facts().upstream_time += since.elapsed();
        if let Some(mut span) = attempt.span {
            let code = error.map_or(tonic::Code::Ok, GatewayError::grpc_code);
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
            if let Some(e) = error {
                span.set_status(Status::error(e.message.clone()));
            }
            if let Some(d) = ejected {
                span.add_event(
                    "endpoint ejected",
                    vec![KeyValue::new(
                        "portico.ejected_for_ms",
                        d.as_millis() as i64,
                    )],
                );
            }
            span.end();
        }
    }

    /// The reply started.
    pub fn replied(&self) {
        if self.logging() {
            self.facts().replied_at.get_or_insert_with(Instant::now);
        }
    }

    /// The status the client was answered with.
    pub fn http_status(&self, status: http::StatusCode) {
        if self.logging() {
            self.facts().http_status.get_or_insert(status.as_u16());
        }
    }

    /// How the call ended; the first ending recorded is the one logged.
    pub fn ended(&self, code: tonic::Code) {
        if self.logging() {
            self.facts().code.get_or_insert(code);
        }
    }

    /// The call failed with `err` (the first failure recorded is logged).
    pub fn failed(&self, err: &GatewayError) {
        if self.logging() {
            let mut f = self.facts();
            f.code.get_or_insert(err.grpc_code());
            if f.error.is_none() {
                f.error = Some((err.message.clone(), err.origin.as_str()));
            }
        }
    }

    /// A call of this session: counted, and its line names the session.
    pub fn session_call(&self, call: &CallRecord) {
        if self.logging() {
            self.facts().calls += 1;
            call.facts().session = Some(self.request_id.clone());
        }
    }

    /// The close code a session ended with.
    pub fn closed(&self, code: u16) {
        if self.logging() {
            self.facts().close_code.get_or_insert(code);
        }
    }

    /// Ends the call's span with what is known of the call.
    fn end_span(&self, mut span: Span, f: &Facts) {
        let code = f.code.unwrap_or(tonic::Code::Ok);
        if let Some(method) = &f.method {
            span.update_name(method.clone());
            let (service, name) = method.split_once('/').unwrap_or((method, ""));
            span.set_attribute(KeyValue::new("rpc.system", "grpc"));
            span.set_attribute(KeyValue::new("rpc.service", service.to_owned()));
            span.set_attribute(KeyValue::new("rpc.method", name.to_owned()));
        }
        if self.kind == Kind::Call {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
        }
        span.set_attribute(KeyValue::new("portico.ingress", self.protocol.as_str()));
        span.set_attribute(KeyValue::new("url.path", self.path.clone()));
        span.set_attribute(KeyValue::new("portico.request_id", self.request_id.clone()));
        if !self.http_method.is_empty() {
            span.set_attribute(KeyValue::new(
                "http.request.method",
                self.http_method.clone(),
            ));
        }
        if let Some(route) = &f.route {
            // The template without its verb, as the convention has it.
            let template = route.split_once(' ').map_or(route.as_str(), |(_, t)| t);
            span.set_attribute(KeyValue::new("http.route", template.to_owned()));
        }
        if let Some(status) = f.http_status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(p) = &f.principal {
            span.set_attribute(KeyValue::new("enduser.id", p.clone()));
        }
        if let Some(c) = f.client {
            span.set_attribute(KeyValue::new("client.address", c.ip().to_string()));
        }
        if let Some(cache) = f.cache {
            span.set_attribute(KeyValue::new("portico.cache", cache));
        }
        if self.kind == Kind::Session {
            span.set_attribute(KeyValue::new("portico.websocket.calls", f.calls as i64));
            if let Some(c) = f.close_code {
                span.set_attribute(KeyValue::new("portico.websocket.close_code", i64::from(c)));
            }
        }
        match &f.error {
            Some((message, origin)) => {
                span.set_attribute(KeyValue::new("portico.error.origin", *origin));
                span.set_status(Status::error(message.clone()));
            }
            None if code != tonic::Code::Ok => span.set_status(Status::error(
                super::call_stats::CODES
                    .get(code as usize)
                    .copied()
                    .unwrap_or("UNKNOWN"),
            )),
            None => {}
        }
        span.end();
    }

    fn line(&self, f: &Facts, ids: Option<&(String, String)>) -> Map<String, Value> {
        let ms = |d: Duration| (d.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let total = self.started.elapsed();
        let upstream = f.upstream_at.map(|_| f.upstream_time);
        let policies = f.pipeline_at.map(|entered| {
            f.upstream_at
                .or(f.replied_at)
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(entered)
        });
        let code = f.code.unwrap_or(tonic::Code::Ok);
        let mut m = Map::new();
        m.insert(
            "timestamp".into(),
            json!(humantime::format_rfc3339_millis(self.wall).to_string()),
        );
        m.insert(
            "kind".into(),
            json!(match self.kind {
                Kind::Call => "call",
                Kind::Session => "session",
            }),
        );
        m.insert("request_id".into(), json!(self.request_id));
        m.insert(
            "trace_id".into(),
            json!(ids
                .map(|t| t.0.as_str())
                .or(self.trace.as_ref().map(|t| t.0.as_str()))),
        );
        m.insert("span_id".into(), json!(ids.map(|t| t.1.as_str())));
        m.insert(
            "parent_span_id".into(),
            json!(self.trace.as_ref().map(|t| t.1.as_str())),
        );
        m.insert("protocol".into(), json!(self.protocol.as_str()));
        m.insert("client".into(), json!(f.client.map(|c| c.ip().to_string())));
        m.insert(
            "http_method".into(),
            json!((!self.http_method.is_empty()).then_some(self.http_method.as_str())),
        );
        m.insert("path".into(), json!(self.path));
        m.insert("route".into(), json!(f.route));
        m.insert("method".into(), json!(f.method));
        m.insert("upstream".into(), json!(f.upstream.as_deref()));
        m.insert("endpoint".into(), json!(f.endpoint.as_deref()));
        m.insert("attempts".into(), json!(f.attempts));
        m.insert("http_status".into(), json!(f.http_status));
        m.insert("grpc_code".into(), json!(code as i32));
        m.insert(
            "grpc_status".into(),
            json!(super::call_stats::CODES
                .get(code as usize)
                .copied()
                .unwrap_or("UNKNOWN")),
        );
        m.insert(
            "error".into(),
            json!(f.error.as_ref().map(|e| e.0.as_str())),
        );
        m.insert("origin".into(), json!(f.error.as_ref().map(|e| e.1)));
        m.insert("duration_ms".into(), json!(ms(total)));
        m.insert("policies_ms".into(), json!(policies.map(ms)));
        m.insert("upstream_ms".into(), json!(upstream.map(ms)));
        m.insert("bytes_in".into(), json!(f.bytes_in));
        m.insert("bytes_out".into(), json!(f.bytes_out));
        m.insert("principal".into(), json!(f.principal));
        m.insert("cache".into(), json!(f.cache));
        match self.kind {
            Kind::Call => {
                m.insert("session".into(), json!(f.session));
            }
            Kind::Session => {
                m.insert("calls".into(), json!(f.calls));
                m.insert("close_code".into(), json!(f.close_code));
            }
        }
        m
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.logging() {
            return;
        }
        let mut facts = std::mem::take(self.facts.get_mut().unwrap_or_else(|e| e.into_inner()));
        if let (Some(usage), Some(method), Kind::Call) = (&self.usage, &facts.method, self.kind) {
            let code = facts.code.unwrap_or(tonic::Code::Ok);
            usage.book.record(
                facts.principal.as_deref(),
                method,
                &super::usage::Call {
                    failed: code != tonic::Code::Ok || facts.error.is_some(),
                    duration: self.started.elapsed(),
                    bytes_in: facts.bytes_in,
                    bytes_out: facts.bytes_out,
                },
            );
        }
        let ids = facts.span.take().map(|span| {
            let sc = span.span_context();
            let ids = (sc.trace_id().to_string(), sc.span_id().to_string());
            if sc.is_sampled() {
                self.end_span(span, &facts);
            }
            ids
        });
        let Some(log) = self.log.take() else {
            return;
        };
        if facts.silenced {
            return;
        }
        let failed = facts.code.is_some_and(|c| c != tonic::Code::Ok) || facts.error.is_some();
        if !failed && log.sample < 1.0 && fastrand::f64() >= log.sample {
            return;
        }
        let line = self.line(&facts, ids.as_ref());
        let text = match log.format {
            Format::Json => {
                let mut s = Value::Object(line).to_string();
                s.push('\n');
                s
            }
            Format::Text => text_line(&line),
        };
        log.write(text);
    }
}

/// The development format: the essentials first, then every other known
/// field as `key=value`, strings quoted and escaped (no client can forge a
/// line or send a terminal escape).
fn text_line(m: &Map<String, Value>) -> String {
    use std::fmt::Write as _;
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("-");
    let mut out = format!(
        "{} {} {} {:?} -> {} {} {}ms",
        s("timestamp"),
        s("protocol"),
        s("http_method"),
        s("path"),
        m.get("http_status")
            .filter(|v| !v.is_null())
            .map_or("-".to_owned(), Value::to_string),
        s("grpc_status"),
        m.get("duration_ms")
            .map_or("-".to_owned(), Value::to_string),
    );
    for (k, v) in m {
        if matches!(
            k.as_str(),
            "timestamp"
                | "protocol"
                | "http_method"
                | "path"
                | "http_status"
                | "grpc_status"
                | "duration_ms"
                | "grpc_code"
        ) || v.is_null()
        {
            continue;
        }
        match v {
            Value::String(t) => {
                let _ = write!(out, " {k}={t:?}");
            }
            other => {
                let _ = write!(out, " {k}={other}");
            }
        }
    }
    out.push('\n');
    out
}

/// The trace id and parent span id of a W3C `traceparent` (version 00),
/// when it is well formed and not all zeros.
pub fn parse_traceparent(v: &str) -> Option<(String, String)> {
    let mut parts = v.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
        return None;
    }
    Some((trace.to_owned(), span.to_owned()))
}

/// The RPC semantic-convention attributes of a call of `target`.
fn rpc_attributes(target: &crate::envelope::Target) -> Vec<KeyValue> {
    let method = target.path.as_str().trim_start_matches('/');
    let (service, name) = method.split_once('/').unwrap_or((method, ""));
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", name.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_text_format_escapes_what_a_client_wrote() {
        let mut m = Map::new();
        m.insert("timestamp".into(), json!("2026-12-01T00:00:00.000Z"));
        m.insert("path".into(), json!("/v1/x\r\nFORGED \u{1b}[31m"));
        m.insert("principal".into(), json!("eve\nFORGED"));
        let line = text_line(&m);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
        assert!(line.contains(r#""/v1/x\r\nFORGED \u{1b}[31m""#), "{line}");
    }
}
