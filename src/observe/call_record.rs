//! What one call (or one WebSocket session) turned out to be: each call
//! carries a [`CallRecord`] from the moment its adapter reads it. The
//! adapter, the pipeline's recorder, the policies and the upstream write
//! what they learn into it; when the last of them lets go of it, the record
//! counts the call in the usage figures, ends its span and writes its
//! access-log line. So a call is recorded exactly once however it ends (a
//! reply, a refusal before the pipeline, an error mid-stream, a client
//! that left), the same way on every protocol.

use super::access_log::{AccessLog, Field};
use super::traces::{remote_parent, traceparent, Tracing};
use crate::envelope::Principal;
use crate::error::GatewayError;
use opentelemetry::trace::{Span as _, SpanContext, Status, TraceContextExt as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::Span;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

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
    /// The context the backend continues: the attempt's span, or the
    /// call's own when the trace is not sampled (no attempt span then).
    context: Option<SpanContext>,
    /// The call's record, for an attempt dropped before it was done.
    record: Option<Arc<CallRecord>>,
}

impl Drop for Attempt {
    /// An attempt dropped before its reply started or it failed: the client
    /// left, or the gateway stopped waiting (an aggregate's timeout, or a
    /// sibling call's failure with `on_error = "fail"`), while the backend
    /// was working. The time is the upstream's all the same, and the span
    /// says how it ended.
    fn drop(&mut self) {
        let Some(since) = self.since.take() else {
            return;
        };
        if let Some(record) = &self.record {
            record.facts().upstream_time += since.elapsed();
        }
        if let Some(mut span) = self.span.take() {
            span.set_attribute(KeyValue::new(
                "rpc.grpc.status_code",
                tonic::Code::Cancelled as i64,
            ));
            span.set_status(Status::error(
                "cancelled before the backend replied: the client left or the gateway stopped waiting",
            ));
            span.end();
        }
    }
}

impl Attempt {
    /// The `traceparent` the backend gets: the attempt's span as parent.
    pub fn traceparent(&self) -> Option<http::HeaderValue> {
        http::HeaderValue::from_bytes(&traceparent(self.context.as_ref()?))
            .ok()
            .map(crate::headers::never_indexed)
    }

    pub fn tracestate(&self) -> Option<http::HeaderValue> {
        let state = self.context.as_ref()?.trace_state().header();
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

impl Facts {
    /// Whether `call` to `target` is the call the line is about: the only
    /// one outside an aggregate, an aggregate's first call within one
    /// (its first method, and the first of its calls to that method).
    fn is_first_call(&self, target: &crate::envelope::Target, call: usize) -> bool {
        self.target
            .as_ref()
            .is_none_or(|t| t.path == target.path && self.first_call == call)
    }
}

/// What is known of one call (or session), filled in as it goes.
#[derive(Default)]
struct Facts {
    /// What the call is to, once it entered the pipeline.
    target: Option<Arc<crate::envelope::Target>>,
    /// Which of an aggregate's calls entered first (its place in the
    /// aggregate's list): the line is that call's.
    first_call: usize,
    /// The method the request named, even when it never reached the
    /// pipeline (a malformed body): the span's name. For a session, the
    /// method of its one call.
    named: Option<Arc<crate::envelope::Target>>,
    route: Option<String>,
    endpoint: Option<String>,
    /// The request's bytes and attempts of the call (of the call at index
    /// 0 of an aggregate's list), and of an aggregate's other calls by
    /// their index less one, so a plain call allocates nothing for them.
    request: CallRequest,
    other_requests: Vec<CallRequest>,
    http_status: Option<u16>,
    code: Option<tonic::Code>,
    error: Option<(String, &'static str)>,
    principal: Option<Arc<Principal>>,
    cache: Option<&'static str>,
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
    /// The client left mid-request: no later answer is logged as sent.
    left: bool,
    /// The route turned its lines off.
    silenced: bool,
    /// The call's server span, when traces are exported.
    span: Option<Span>,
}

/// One call's request as it entered the pipeline, and its attempts to
/// send it.
#[derive(Default, Clone, Copy)]
struct CallRequest {
    bytes: u64,
    attempts: u32,
    /// Attempts whose request never left the gateway (no connection to
    /// the endpoint, or shed because its connections were full).
    unsent_attempts: u32,
}

impl CallRequest {
    /// What a backend received: nothing for a call that made no attempt (a
    /// policy refused it, no endpoint could take it, the cache answered)
    /// or whose every attempt failed before its request left the gateway,
    /// whatever the client sent.
    fn bytes_sent(&self) -> u64 {
        if self.attempts == self.unsent_attempts {
            0
        } else {
            self.bytes
        }
    }
}

impl Facts {
    /// What the backends received, summed over an aggregate's calls: a
    /// call the cache answered adds nothing to the calls that went on.
    fn bytes_sent(&self) -> u64 {
        self.request.bytes_sent()
            + self
                .other_requests
                .iter()
                .map(CallRequest::bytes_sent)
                .sum::<u64>()
    }

    /// Upstream attempts, summed over an aggregate's calls.
    fn attempts(&self) -> u32 {
        self.request.attempts + self.other_requests.iter().map(|r| r.attempts).sum::<u32>()
    }

    fn request_mut(&mut self, call: usize) -> &mut CallRequest {
        let Some(other) = call.checked_sub(1) else {
            return &mut self.request;
        };
        if self.other_requests.len() <= other {
            self.other_requests
                .resize(other + 1, CallRequest::default());
        }
        &mut self.other_requests[other]
    }
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
    /// A copy of a standard method allocates nothing.
    http_method: Option<http::Method>,
    /// An HTTP request of its own (not a WebSocket session's call): its
    /// adapter notes the status it answers with. Kept whatever is written.
    own_request: bool,
    path: String,
    trace: Option<(String, String)>,
    facts: Mutex<Facts>,
    /// The status of a call the gateway cut off itself (stopped from
    /// outside its task): what its metrics count when its future is
    /// dropped, instead of CANCELLED. Kept even when nothing else is.
    cut: std::sync::OnceLock<tonic::Code>,
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
        static NONE: std::sync::LazyLock<Arc<CallRecord>> =
            std::sync::LazyLock::new(CallRecord::unread);
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
        use crate::headers::{TRACEPARENT, TRACESTATE};
        // Usage figures need no text of the request; a log line and a span do.
        let wall = SystemTime::now();
        let header = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        // Read once: the span's parent and the log line's trace fields. Two
        // `traceparent` fields name no one parent: a new trace starts, as
        // W3C Trace Context says of a traceparent that cannot be parsed.
        let client_trace = header(&TRACEPARENT)
            .filter(|_| headers.get_all(&TRACEPARENT).iter().nth(1).is_none())
            .and_then(parse_traceparent);
        let span = sinks.tracing.as_ref().map(|t| {
            let parent = match parent {
                Some(sc) => opentelemetry::Context::new().with_remote_span_context(sc),
                None => remote_parent(client_trace, header(&TRACESTATE)),
            };
            // Named when it ends (its method, else what the gateway chose,
            // never a path a client made up): most spans are not sampled
            // and never need the text.
            let name = match kind {
                Kind::Session => "websocket",
                Kind::Call => "call",
            };
            t.server_span(std::borrow::Cow::Borrowed(name), &parent, wall)
        });
        // The request's text is kept only for a line or a sampled span;
        // usage figures and unsampled traces need none of it.
        let logging =
            sinks.log.is_some() || span.as_ref().is_some_and(|s| s.span_context().is_sampled());
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
            http_method: method.filter(|_| logging).cloned(),
            own_request: method.is_some(),
            path: if logging {
                path.to_owned()
            } else {
                String::new()
            },
            trace: client_trace
                .filter(|_| logging)
                .map(|(trace, span, _)| (trace.to_owned(), span.to_owned())),
            facts: Mutex::new(Facts {
                span,
                ..Facts::default()
            }),
            log: sinks.log.clone(),
            tracing: sinks.tracing.clone(),
            usage: sinks.usage.clone(),
            cut: std::sync::OnceLock::new(),
        })
    }

    /// A record of its own that writes nothing (the shared [`CallRecord::none`]
    /// is one of these): for a call that may be
    /// cut off from outside (a WebSocket call), whose status must still
    /// reach the metrics when nothing else reads the record.
    pub fn unread() -> Arc<CallRecord> {
        CallRecord::new(
            &Sinks::default(),
            Kind::Call,
            ClientProtocol::WebSocket,
            None,
            "",
            &http::HeaderMap::new(),
            None,
        )
    }

    pub fn protocol(&self) -> ClientProtocol {
        self.protocol
    }

    /// Whether anything reads what is recorded (a log, traces, usage):
    /// callers skip the work for a record nobody reads.
    pub fn active(&self) -> bool {
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
    pub fn entered(&self, target: &Arc<crate::envelope::Target>, call: usize, bytes_in: u64) {
        if !self.active() {
            return;
        }
        let mut f = self.facts();
        if f.pipeline_at.is_none() {
            f.pipeline_at = Some(Instant::now());
            f.target = Some(target.clone());
            f.first_call = call;
            f.silenced = !target.access_log;
        }
        f.request_mut(call).bytes += bytes_in;
    }

    /// The request names a routed method: its route's `access_log` switch
    /// applies even when the call is refused before the pipeline, and its
    /// span is named after the method. A session opened on a method's path
    /// is routed to it too: one call, one route.
    pub fn routed(&self, target: &Arc<crate::envelope::Target>) {
        // Nothing to do without a span or a line to name: a call refused
        // before the pipeline is still logged with its method.
        let name = self.tracing.is_some() || self.log.is_some();
        if self.active() && (name || !target.access_log) {
            let mut f = self.facts();
            f.silenced |= !target.access_log;
            if name {
                f.named = Some(target.clone());
            }
        }
    }

    /// The route template the request matched (REST bindings).
    pub fn route(&self, template: impl FnOnce() -> String) {
        if self.active() {
            self.facts().route = Some(template());
        }
    }

    pub fn client(&self, client: Option<SocketAddr>) {
        if self.active() {
            self.facts().client = client;
        }
    }

    /// Who the call to `target` (an aggregate's `call`) runs as. An
    /// aggregate's calls share one record, counted as its first call: only
    /// that call's caller is recorded, never a pair of a method and a
    /// caller it did not run as.
    pub fn principal(
        &self,
        target: &crate::envelope::Target,
        call: usize,
        principal: &Arc<Principal>,
    ) {
        if self.active() {
            let mut f = self.facts();
            if f.is_first_call(target, call) {
                f.principal = Some(principal.clone());
            }
        }
    }

    /// The response cache's verdict on the call to `target`. An
    /// aggregate's line is its first method's, as its principal is: only
    /// that method's verdict is recorded.
    pub fn cache(&self, target: &crate::envelope::Target, call: usize, verdict: &'static str) {
        if self.active() {
            let mut f = self.facts();
            if !f.is_first_call(target, call) {
                return;
            }
            f.cache = Some(verdict);
            if verdict != "miss" {
                if let Some(span) = f.span.as_mut() {
                    span.add_event("cache hit", vec![KeyValue::new("portico.cache", verdict)]);
                }
            }
        }
    }

    /// A streaming request's message passed (an aggregate's calls are
    /// unary: a stream is a call of its own).
    pub fn add_bytes_in(&self, n: u64) {
        if self.active() {
            self.facts().request.bytes += n;
        }
    }

    pub fn add_bytes_out(&self, n: u64) {
        if self.active() {
            self.facts().bytes_out += n;
        }
    }

    /// An upstream attempt of the call to `target` (an aggregate's
    /// `call`) on `endpoint` started; returns when, for
    /// [`CallRecord::attempt_done`].
    /// `retry_of` is the failure the attempt retries.
    pub fn attempt(
        self: &Arc<Self>,
        target: &crate::envelope::Target,
        call: usize,
        endpoint: &str,
        number: u32,
        retry_of: Option<&GatewayError>,
    ) -> Attempt {
        if !self.active() {
            return Attempt {
                since: None,
                span: None,
                context: None,
                record: None,
            };
        }
        let now = Instant::now();
        let mut f = self.facts();
        f.request_mut(call).attempts += 1;
        if self.log.is_some() {
            f.endpoint = Some(endpoint.to_owned());
        }
        f.upstream_at.get_or_insert(now);
        let span = match (&self.tracing, &f.span) {
            (Some(t), Some(parent)) if parent.span_context().is_sampled() => {
                let mut attrs = rpc_attributes(target);
                let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, ""));
                attrs.push(KeyValue::new("server.address", host.to_owned()));
                if let Ok(port) = port.parse::<i64>() {
                    attrs.push(KeyValue::new("server.port", port));
                }
                // Numbered within its own call: an aggregate's calls each
                // start at 1, so only a retry is ever 2.
                attrs.push(KeyValue::new("portico.attempt", i64::from(number)));
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
        let context = span
            .as_ref()
            .or(f.span.as_ref())
            .map(|s| s.span_context().clone());
        Attempt {
            since: Some(now),
            span,
            context,
            record: Some(self.clone()),
        }
    }

    /// The attempt has its reply, or failed with `error`; `ejected` when
    /// the failure took its endpoint out of rotation.
    pub fn attempt_done(
        &self,
        mut attempt: Attempt,
        error: Option<&GatewayError>,
        ejected: Option<Duration>,
    ) {
        let Some(since) = attempt.since.take() else {
            return;
        };
        self.facts().upstream_time += since.elapsed();
        if let Some(mut span) = attempt.span.take() {
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

    /// The attempt just made never sent its request: it could not
    /// connect, or was shed before it went out (`max_pending`).
    pub fn attempt_unsent(&self, call: usize) {
        if self.active() {
            self.facts().request_mut(call).unsent_attempts += 1;
        }
    }

    /// The reply started.
    pub fn replied(&self) {
        if self.active() {
            self.facts().replied_at.get_or_insert_with(Instant::now);
        }
    }

    /// The status the client was answered with.
    pub fn http_status(&self, status: http::StatusCode) {
        if self.active() {
            let mut f = self.facts();
            // An answer to a client already gone reaches no one.
            if !f.left {
                f.http_status.get_or_insert(status.as_u16());
            }
        }
    }

    /// How the call ended; the first ending recorded is the one logged.
    pub fn ended(&self, code: tonic::Code) {
        if self.active() {
            self.facts().code.get_or_insert(code);
        }
    }

    /// The client left before the call's end: it got no answer, so the
    /// call is CANCELLED with no error, the same on every protocol (unless
    /// an earlier failure already decided how it ended).
    pub fn abandoned(&self) {
        self.ended(tonic::Code::Cancelled);
    }

    /// The client left mid-request (its connection closed, its stream
    /// reset): abandoned, and whatever the adapter then answers reaches
    /// no one, so no status is logged unless one was already sent.
    fn left(&self) {
        if self.active() {
            self.facts().left = true;
        }
        self.abandoned();
    }

    /// The call failed with `err` (the first failure recorded is logged).
    pub fn failed(&self, err: &GatewayError) {
        if err.is_client_gone() {
            return self.left();
        }
        if self.active() {
            let mut f = self.facts();
            f.code.get_or_insert(err.grpc_code());
            if f.error.is_none() {
                f.error = Some((err.message.clone(), err.origin.as_str()));
            }
        }
    }

    /// The gateway cut the call off with `err` before stopping its task:
    /// logged as that failure, and counted with its code when the call's
    /// future is dropped (see [`CallRecord::dropped`]).
    pub fn cut_short(&self, err: &GatewayError) {
        let _ = self.cut.set(err.grpc_code());
        self.failed_finally(err);
    }

    /// The gateway stopped reading the call's replies and answered the
    /// client with what it had, a success (an MCP tool result that keeps a
    /// stream's first part): counted as OK when its future is dropped, not
    /// as a client that left.
    pub fn answered_early(&self) {
        let _ = self.cut.set(tonic::Code::Ok);
    }

    /// A call's future was dropped before its end: the code to count it
    /// with. CANCELLED (the client left), unless the gateway cut it short.
    pub fn dropped(&self) -> tonic::Code {
        match self.cut.get() {
            Some(code) => *code,
            None => {
                self.abandoned();
                tonic::Code::Cancelled
            }
        }
    }

    /// What the client was finally told: the adapter's own failure wins
    /// over whatever a layer inside recorded first (a stream that ended
    /// OK but held no message, an aggregate's call that failed).
    pub fn failed_finally(&self, err: &GatewayError) {
        if err.is_client_gone() {
            return self.left();
        }
        if self.active() {
            let mut f = self.facts();
            f.code = Some(err.grpc_code());
            f.error = Some((err.message.clone(), err.origin.as_str()));
        }
    }

    /// The client was answered with success after all (an aggregate whose
    /// failed call its `on_error` let pass).
    pub fn succeeded_finally(&self) {
        if self.active() {
            let mut f = self.facts();
            f.code = Some(tonic::Code::Ok);
            f.error = None;
        }
    }

    /// A call of this session: counted, and its line names the session.
    pub fn session_call(&self, call: &CallRecord) {
        if self.active() {
            self.facts().calls += 1;
            call.facts().session = Some(self.request_id.clone());
        }
    }

    /// The close code a session ended with.
    pub fn closed(&self, code: u16) {
        if self.active() {
            self.facts().close_code.get_or_insert(code);
        }
    }

    /// Ends the call's span with what is known of the call.
    fn end_span(&self, mut span: Span, f: &Facts) {
        let code = f.code.unwrap_or(tonic::Code::Ok);
        let method = routed_method(f);
        // No route: named by the HTTP method alone (OpenTelemetry's HTTP
        // convention), never by a path a client made up; `url.path` has it.
        span.update_name(match (self.kind, method) {
            (Kind::Call, Some(method)) => method.to_owned(),
            (Kind::Call, None) => self
                .http_method
                .as_ref()
                .map_or("HTTP".to_owned(), |m| m.as_str().to_owned()),
            (Kind::Session, Some(method)) => format!("websocket {method}"),
            (Kind::Session, None) => "websocket".to_owned(),
        });
        if let Some(method) = method {
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
        if let Some(m) = &self.http_method {
            span.set_attribute(KeyValue::new("http.request.method", m.as_str().to_owned()));
        }
        match (&f.route, self.protocol) {
            // MCP has no HTTP route: its own conventions name the JSON-RPC
            // method and the tool.
            (Some(route), ClientProtocol::Mcp) => match route.split_once(' ') {
                Some(("tool", tool)) => {
                    span.set_attribute(KeyValue::new("mcp.method.name", "tools/call"));
                    span.set_attribute(KeyValue::new("gen_ai.tool.name", tool.to_owned()));
                }
                Some(("mcp", method)) if route != "mcp response" => {
                    span.set_attribute(KeyValue::new("mcp.method.name", method.to_owned()));
                }
                _ => {}
            },
            (Some(route), _) => {
                // The template without its verb, as the convention has it.
                let template = route.split_once(' ').map_or(route.as_str(), |(_, t)| t);
                span.set_attribute(KeyValue::new("http.route", template.to_owned()));
            }
            (None, _) => {}
        }
        if let Some(status) = f.http_status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(p) = &f.principal {
            span.set_attribute(KeyValue::new("enduser.id", p.subject.clone()));
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

    /// The access-log line's fields, in order.
    /// The line's fields, in a fixed array (no allocation) with its length.
    fn fields<'a>(
        &'a self,
        f: &'a Facts,
        ids: Option<(&'a str, &'a str)>,
        ended: Instant,
    ) -> ([(&'static str, Field<'a>); 31], usize) {
        let ms = |d: Duration| Field::Millis(d.as_micros() as u64);
        let total = ended.saturating_duration_since(self.started);
        let upstream = f.upstream_at.map(|_| f.upstream_time);
        // Read against the one end the total is read against, so no part
        // is longer than the whole.
        let policies = f.pipeline_at.map(|entered| {
            f.upstream_at
                .or(f.replied_at)
                .unwrap_or(ended)
                .saturating_duration_since(entered)
        });
        let code = f.code.unwrap_or(tonic::Code::Ok);
        let opt_ms = |d: Option<Duration>| d.map_or(Field::Null, ms);
        let mut fields = [("", Field::Null); 31];
        let common = [
            (k!("timestamp"), Field::Time(self.wall)),
            (
                k!("kind"),
                Field::Str(match self.kind {
                    Kind::Call => "call",
                    Kind::Session => "session",
                }),
            ),
            (k!("request_id"), Field::Str(&self.request_id)),
            (
                k!("trace_id"),
                ids.map(|t| t.0)
                    .or(self.trace.as_ref().map(|t| t.0.as_str()))
                    .into(),
            ),
            (
                k!("span_id"),
                ids.map(|t| t.1).filter(|s| !s.is_empty()).into(),
            ),
            (
                k!("parent_span_id"),
                self.trace.as_ref().map(|t| t.1.as_str()).into(),
            ),
            (k!("protocol"), Field::Str(self.protocol.as_str())),
            (
                k!("client"),
                f.client.map_or(Field::Null, |c| Field::Ip(c.ip())),
            ),
            (
                k!("http_method"),
                self.http_method.as_ref().map(http::Method::as_str).into(),
            ),
            (k!("path"), Field::Str(&self.path)),
            (k!("route"), f.route.as_deref().into()),
            (k!("method"), routed_method(f).into()),
            (
                k!("upstream"),
                f.target
                    .as_ref()
                    .or(f.named.as_ref())
                    .map(|t| &*t.upstream_name)
                    .into(),
            ),
            (k!("endpoint"), f.endpoint.as_deref().into()),
            (k!("attempts"), Field::UInt(u64::from(f.attempts()))),
            (
                k!("http_status"),
                f.http_status
                    .map_or(Field::Null, |s| Field::UInt(u64::from(s))),
            ),
            (k!("grpc_code"), Field::UInt(code as u64)),
            (k!("grpc_status"), Field::Str(code_name(code))),
            (k!("error"), f.error.as_ref().map(|e| e.0.as_str()).into()),
            (k!("origin"), f.error.as_ref().map(|e| e.1).into()),
            (k!("duration_ms"), ms(total)),
            (k!("policies_ms"), opt_ms(policies)),
            (k!("upstream_ms"), opt_ms(upstream)),
            (k!("bytes_in"), Field::UInt(f.bytes_sent())),
            (k!("bytes_out"), Field::UInt(f.bytes_out)),
            (
                k!("principal"),
                f.principal.as_ref().map(|p| p.subject.as_str()).into(),
            ),
            (k!("cache"), f.cache.into()),
        ];
        let mut n = common.len();
        fields[..n].copy_from_slice(&common);
        match self.kind {
            Kind::Call => {
                fields[n] = (k!("session"), f.session.as_deref().into());
                n += 1;
            }
            Kind::Session => {
                fields[n] = (k!("calls"), Field::UInt(f.calls));
                fields[n + 1] = (
                    k!("close_code"),
                    f.close_code
                        .map_or(Field::Null, |c| Field::UInt(u64::from(c))),
                );
                n += 2;
            }
        }
        (fields, n)
    }
}

/// The gRPC method a call's facts name, `package.Service/Method`.
/// The method a route matched, whether or not the call reached the
/// pipeline (a log line, a span name).
fn routed_method(f: &Facts) -> Option<&str> {
    method_of(f).or_else(|| {
        f.named
            .as_ref()
            .map(|t| t.path.as_str().trim_start_matches('/'))
    })
}

/// The method of a call that entered the pipeline (usage figures).
fn method_of(f: &Facts) -> Option<&str> {
    f.target
        .as_ref()
        .map(|t| t.path.as_str().trim_start_matches('/'))
}

/// A gRPC code's canonical name (`NOT_FOUND`).
fn code_name(code: tonic::Code) -> &'static str {
    super::call_stats::CODES
        .get(code as usize)
        .copied()
        .unwrap_or("UNKNOWN")
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.active() {
            return;
        }
        let mut facts = std::mem::take(self.facts.get_mut().unwrap_or_else(|e| e.into_inner()));
        // Every adapter notes the status it answers an HTTP request with:
        // a call of one that has none, and no ending either, was dropped
        // before its answer, by a client that left (an HTTP/2 stream reset
        // mid-upload, even with `NO_ERROR`, drops the request's future).
        // A panic unwinding through the handler is the gateway's, not that.
        if self.kind == Kind::Call
            && self.own_request
            && facts.code.is_none()
            && facts.http_status.is_none()
            && !std::thread::panicking()
        {
            facts.code = Some(tonic::Code::Cancelled);
            facts.left = true;
        }
        let failed = facts.code.is_some_and(|c| c != tonic::Code::Ok) || facts.error.is_some();
        let ended = Instant::now();
        let elapsed = ended.saturating_duration_since(self.started);
        if let (Some(usage), Some(method), Kind::Call) = (&self.usage, method_of(&facts), self.kind)
        {
            usage.book.record(
                facts.principal.as_ref().map(|p| p.subject.as_str()),
                method,
                &super::usage::Call {
                    failed,
                    duration: elapsed,
                    bytes_in: facts.bytes_sent(),
                    bytes_out: facts.bytes_out,
                },
            );
        }
        let span = facts.span.take();
        let log = self
            .log
            .take()
            .filter(|l| !facts.silenced && l.wants(failed));
        // The ids in hex on the stack: a line is written on every call.
        let mut trace_hex = [0u8; 32];
        let mut span_hex = [0u8; 16];
        let ids = match (&span, &log) {
            (Some(span), Some(_)) => {
                // An unsampled span is exported nowhere: the line names the
                // trace but no span of it.
                let sc = span.span_context();
                super::traces::hex_into(&sc.trace_id().to_bytes(), &mut trace_hex);
                super::traces::hex_into(&sc.span_id().to_bytes(), &mut span_hex);
                let trace = std::str::from_utf8(&trace_hex).unwrap_or_default();
                let span_id = if sc.is_sampled() {
                    std::str::from_utf8(&span_hex).unwrap_or_default()
                } else {
                    ""
                };
                Some((trace, span_id))
            }
            _ => None,
        };
        if let Some(span) = span {
            if span.span_context().is_sampled() {
                self.end_span(span, &facts);
            }
        }
        let Some(log) = log else {
            return;
        };
        let (fields, n) = self.fields(&facts, ids, ended);
        log.write(&fields[..n]);
    }
}

/// A log field's key framed for JSON (`"name":`), written with one copy.
macro_rules! k {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}
use k;

/// The trace id, parent span id and flags of a W3C `traceparent`
/// (version 00), when it is well formed and not all zeros.
pub fn parse_traceparent(v: &str) -> Option<(&str, &str, &str)> {
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
    Some((trace, span, flags))
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
    fn a_dropped_call_counts_as_cancelled_unless_the_gateway_cut_it_short() {
        // Records nobody reads still keep the status a call was cut off
        // with: the metrics count by it.
        let left = CallRecord::unread();
        assert_eq!(left.dropped(), tonic::Code::Cancelled);
        let cut = CallRecord::unread();
        cut.cut_short(&GatewayError::payload_too_large(
            1,
            "websocket.max_in_flight",
        ));
        assert_eq!(cut.dropped(), tonic::Code::ResourceExhausted);
        // The first cut decides.
        cut.cut_short(&GatewayError::internal("later"));
        assert_eq!(cut.dropped(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn no_part_of_a_calls_time_is_longer_than_the_whole() {
        // A call refused in the pipeline, with no reply written: its
        // policies run to its end. The line is made a little after the call
        // ended (the usage book and the span come first), which must not
        // lengthen one figure and not the other.
        let record = CallRecord::unread();
        let facts = Facts {
            pipeline_at: Some(Instant::now()),
            ..Facts::default()
        };
        let ended = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        let (fields, n) = record.fields(&facts, None, ended);
        let micros = |key: &str| match fields[..n].iter().find(|(k, _)| k.contains(key)).unwrap().1
        {
            Field::Millis(m) => m,
            other => panic!("{key}: {other:?}"),
        };
        assert!(
            micros("policies_ms") <= micros("duration_ms"),
            "{:?}",
            &fields[..n]
        );
    }

    #[test]
    fn the_backends_traceparent_names_the_attempt_and_is_never_indexed() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let attempt = Attempt {
            since: None,
            span: None,
            context: Some(context),
            record: None,
        };
        let header = attempt.traceparent().unwrap();
        assert_eq!(
            header.to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(header.is_sensitive());
    }

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(ok),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01"))
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
}
