//! The gateway's one error type and the one table that maps it to each
//! protocol. Adapters never pick a status themselves: they build a
//! [`GatewayError`] and call [`GatewayError::http_status`] / [`GatewayError::grpc_code`].
//!
//! Every error records where it came from ([`Origin`]) so logs and metrics
//! can tell a client's mistake from a sick backend or a gateway fault.

use bytes::Bytes;
use http::StatusCode;
use std::fmt;
use tonic::Code;

impl ErrorKind {
    /// The fields an invalid request named; none for any other kind.
    pub fn violations(&self) -> &[FieldViolation] {
        match self {
            ErrorKind::InvalidRequest { violations } => violations,
            _ => &[],
        }
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), saying
/// how much was left out; as it is when it fits.
pub fn shortened(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}... ({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

/// The most bytes of a message the gateway writes about a request (and
/// of a field violation's description): a message quoting a client's
/// 3 MB key or number is cut in its middle, so a refusal is never larger
/// than a few KiB whatever was sent, in the reply or in the log.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// The most bytes of a field violation's path.
pub const MAX_FIELD_BYTES: usize = 512;

/// `text` when it fits in `max` bytes, else its start and end around a
/// note of how many bytes were cut (the end often says what was expected),
/// at most `max` bytes in all.
pub fn cut_in_middle(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    // Room for the note: "... (N bytes cut) ..." with N of up to 20 digits.
    let max = max.saturating_sub(40);
    let mut head = max * 2 / 3;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - (max - head);
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}... ({} bytes cut) ...{}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}

/// Who caused the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request was malformed or matched nothing.
    Client,
    /// The backend answered with a non-OK status or could not be reached.
    Backend,
    /// The gateway itself failed or hit one of its limits.
    Gateway,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Backend => "backend",
            Origin::Gateway => "gateway",
        }
    }
}

/// One wrong field in a request, reported as a google.rpc.BadRequest field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field (`inner.note`, `tags[2]`) or of the query parameter.
    pub field: String,
    pub description: String,
}

/// What went wrong, as a fact. The mapping of each kind to HTTP and gRPC is in
/// [`ErrorKind::http_status`] and [`ErrorKind::grpc_code`], nowhere else.
#[derive(Debug, Clone)]
pub enum ErrorKind {
    /// No route for the request path.
    RouteNotFound { path: String },
    /// A gRPC call to a method no route serves.
    UnknownMethod { path: String },
    /// The client compressed a message; the gateway only takes identity.
    UnsupportedEncoding,
    /// The call needs a valid credential: no bearer token was sent or the
    /// credential that failed was not one (`missing`: a plain challenge), or
    /// a bearer token failed (a challenge with `error="invalid_token"`).
    /// `bearer`: the route takes a bearer token, so an HTTP reply carries
    /// a `Bearer` challenge.
    Unauthenticated { missing: bool, bearer: bool },
    /// The caller is known but lacks what the route requires; `scope`:
    /// the scopes the route requires, when a bearer token lacked some
    /// (RFC 6750's `insufficient_scope` challenge names them).
    Forbidden { scope: Option<String> },
    /// A rate limit is exhausted; a call will be allowed after `retry_after`.
    RateLimited {
        limit: u32,
        retry_after: std::time::Duration,
    },
    /// A browser's cross-origin request that the route's CORS policy refuses.
    OriginNotAllowed { origin: String },
    /// The path is known but not with this HTTP method.
    MethodNotAllowed { allowed: Vec<http::Method> },
    /// The request body or parameters do not fit the request message.
    InvalidRequest { violations: Vec<FieldViolation> },
    /// The request body is larger than `limits.max_request_body_bytes`.
    PayloadTooLarge { limit: usize },
    /// The request body's content type cannot be read for this route.
    UnsupportedMediaType { content_type: String },
    /// The gateway's deadline for the call passed before the backend finished (replied, or ended its stream).
    DeadlineExceeded,
    /// The backend could not be reached (connect refused, connection lost).
    BackendUnavailable,
    /// The backend replied with this gRPC status (boxed: it is large and rare).
    Backend(Box<BackendStatus>),
    /// The backend's reply could not be read as the method's response type.
    BadBackendReply,
    /// The client cancelled the call (a WebSocket `cancel` frame).
    Cancelled,
    /// The client went away mid-request (closed its connection, reset its
    /// stream): it is told nothing, and the call is CANCELLED.
    ClientLeft,
    /// An upstream's circuit breaker shed the call (`max_requests` or
    /// `max_pending` reached) rather than queue it.
    Overloaded { limit: &'static str },
    /// An aggregated call was not made because a call it takes values from failed.
    DependencyFailed { call: String },
    /// The request target (path and query) is longer than
    /// `server.limits.max_request_target_bytes`.
    RequestTargetTooLong { limit: usize },
    /// An HTTP/1.1 request whose body framing the gateway will not guess
    /// at: a `Transfer-Encoding` other than exactly `chunked`.
    UnsupportedTransferEncoding,
    /// Native gRPC over HTTP/1.1, which cannot carry its trailers (the
    /// status of every call that sent a reply).
    GrpcNeedsHttp2,
    /// A request with more header fields than `server.limits.max_header_count`.
    TooManyHeaderFields { limit: usize },
    /// A request whose header fields are larger than `server.limits.max_header_bytes`.
    HeaderBytesTooLarge { limit: usize },
    /// A WebSocket handshake for a version other than 13 (RFC 6455 section 4.4).
    UnsupportedWebSocketVersion,
    /// The client sent nothing for longer than the named timeout
    /// (`server.limits.body_read_timeout`, `stream_idle_timeout`).
    ClientTimeout { timeout: &'static str },
    /// The backend sent nothing for longer than the named timeout
    /// (`server.limits.upstream_header_timeout`, `stream_idle_timeout`).
    UpstreamTimeout { timeout: &'static str },
    /// A service a policy must ask (token introspection, external
    /// authorization) did not answer, so the call could not be judged.
    PolicyServiceUnavailable,
    /// An external authorization service refused the call with this reply.
    Denied(Box<Denial>),
    /// A failure inside the gateway that is nobody else's fault.
    Internal,
}

/// An external authorization service's refusal, as it wrote it: its HTTP
/// status, the headers meant for the client, and a body (also the error's
/// message for protocols that carry only a message).
#[derive(Debug, Clone)]
pub struct Denial {
    pub status: StatusCode,
    /// Headers for the client, without framing ones (`content-type`,
    /// `content-length` and the like).
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// The body's content type, when it has one.
    pub content_type: Option<http::HeaderValue>,
}

impl Denial {
    /// THE gRPC code of a refusal's HTTP status.
    pub fn grpc_code(&self) -> Code {
        match self.status.as_u16() {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            404 => Code::NotFound,
            409 => Code::Aborted,
            429 => Code::ResourceExhausted,
            500 => Code::Internal,
            501 => Code::Unimplemented,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            s if s >= 500 => Code::Unavailable,
            // 403, other 4xx, and redirects (to a login page) alike.
            _ => Code::PermissionDenied,
        }
    }
}

/// A backend's non-OK status, as it sent it.
#[derive(Debug, Clone)]
pub struct BackendStatus {
    pub code: Code,
    /// `grpc-status-details-bin`: an encoded google.rpc.Status, if sent.
    pub details: Bytes,
    /// Other metadata sent with the status (its trailers).
    pub metadata: http::HeaderMap,
}

/// A failure with its cause, its origin and a message for the client.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub origin: Origin,
    pub message: String,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, origin: Origin, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            origin,
            message: Self::bounded(origin, message.into()),
        }
    }

    /// The same failure, told differently.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Self::bounded(self.origin, message.into());
        self
    }

    /// The gateway's own words are bounded; a backend's message is its
    /// own, passed on as it sent it (each protocol bounds what it carries).
    fn bounded(origin: Origin, message: String) -> String {
        match origin {
            Origin::Backend => message,
            _ => cut_in_middle(message, MAX_MESSAGE_BYTES),
        }
    }

    /// No credential (`missing`) or one that failed verification.
    pub fn unauthenticated(missing: bool, message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Unauthenticated {
                missing,
                bearer: true,
            },
            Origin::Client,
            message,
        )
    }

    /// The same refusal on a route that takes no bearer token (API keys,
    /// client certificates only): no `Bearer` challenge names a scheme the
    /// route would not accept.
    pub fn without_bearer_challenge(mut self) -> Self {
        if let ErrorKind::Unauthenticated { bearer, .. } = &mut self.kind {
            *bearer = false;
        }
        self
    }

    /// A call over a limit of `limit` per period; `what` says which limit.
    pub fn rate_limited(limit: u32, retry_after: std::time::Duration, what: &str) -> Self {
        Self::new(
            ErrorKind::RateLimited { limit, retry_after },
            Origin::Client,
            format!("{what}; retry in {} ms", retry_after.as_millis().max(1)),
        )
    }

    /// Headers an HTTP reply to this error carries: an RFC 6750 challenge,
    /// or `Retry-After` and the IETF `RateLimit-*` fields.
    pub fn http_headers(&self) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut out = Vec::new();
        if let Some(c) = self
            .www_authenticate()
            .and_then(|c| http::HeaderValue::from_str(&c).ok())
        {
            out.push((http::header::WWW_AUTHENTICATE, c));
        }
        if let ErrorKind::Denied(d) = &self.kind {
            for (name, value) in &d.headers {
                out.push((name.clone(), value.clone()));
            }
        }
        if let ErrorKind::UnsupportedWebSocketVersion = &self.kind {
            out.push((
                http::header::SEC_WEBSOCKET_VERSION,
                http::HeaderValue::from_static("13"),
            ));
        }
        if let ErrorKind::UnsupportedEncoding = &self.kind {
            // What the gateway takes, in each protocol's own header (RFC
            // 9110 section 12.5.3, the gRPC and Connect specs): a client
            // that reads it can send again uncompressed.
            for name in [
                "accept-encoding",
                "grpc-accept-encoding",
                "connect-accept-encoding",
            ] {
                out.push((
                    http::HeaderName::from_static(name),
                    http::HeaderValue::from_static("identity"),
                ));
            }
        }
        if let ErrorKind::MethodNotAllowed { allowed } = &self.kind {
            // RFC 9110 section 15.5.6: a 405 says which methods would do.
            let list = allowed
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = http::HeaderValue::from_str(&list) {
                out.push((http::header::ALLOW, v));
            }
        }
        if let ErrorKind::Overloaded { limit } = &self.kind {
            out.push((
                http::HeaderName::from_static("x-portico-overloaded"),
                http::HeaderValue::from_static(limit),
            ));
        }
        if let ErrorKind::RateLimited { limit, retry_after } = &self.kind {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            out.push((http::header::RETRY_AFTER, http::HeaderValue::from(secs)));
            out.push((
                http::HeaderName::from_static("ratelimit-limit"),
                http::HeaderValue::from(*limit),
            ));
            out.push((
                http::HeaderName::from_static("ratelimit-remaining"),
                http::HeaderValue::from_static("0"),
            ));
            out.push((
                http::HeaderName::from_static("ratelimit-reset"),
                http::HeaderValue::from(secs),
            ));
        }
        out
    }

    /// The `WWW-Authenticate` challenge an HTTP reply to this error carries (RFC 6750).
    pub fn www_authenticate(&self) -> Option<String> {
        match &self.kind {
            ErrorKind::Unauthenticated { bearer: false, .. } => None,
            ErrorKind::Unauthenticated { missing: true, .. } => {
                Some("Bearer realm=\"portico\"".to_owned())
            }
            ErrorKind::Unauthenticated { missing: false, .. } => Some(format!(
                "Bearer realm=\"portico\", error=\"invalid_token\", error_description=\"{}\"",
                description(&self.message)
            )),
            ErrorKind::Forbidden { scope: Some(scope) } => Some(format!(
                "Bearer realm=\"portico\", error=\"insufficient_scope\", scope=\"{scope}\""
            )),
            _ => None,
        }
    }

    pub fn route_not_found(path: &str) -> Self {
        Self::new(
            ErrorKind::RouteNotFound {
                path: path.to_owned(),
            },
            Origin::Client,
            format!("no route for {path}"),
        )
    }

    pub fn unknown_method(path: &str) -> Self {
        Self::new(
            ErrorKind::UnknownMethod {
                path: path.to_owned(),
            },
            Origin::Client,
            match path.strip_prefix("/grpc.health.v1.Health/") {
                // The gateway's own service, which no route serves.
                Some(method) if !method.is_empty() => format!(
                    "the gateway's grpc.health.v1.Health serves Check and Watch, not {method}"
                ),
                _ => format!("no route serves the method {path}"),
            },
        )
    }

    pub fn method_not_allowed(
        method: &http::Method,
        path: &str,
        allowed: Vec<http::Method>,
    ) -> Self {
        let list = allowed
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Self::new(
            ErrorKind::MethodNotAllowed { allowed },
            Origin::Client,
            format!("{method} is not allowed on {path}; allowed: {list}"),
        )
    }

    /// A request that does not fit its message, naming the field at fault.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = cut_in_middle(field.into(), MAX_FIELD_BYTES);
        let description: String = description.into();
        // The message says both parts, each cut to its own room (the
        // description to what the field leaves), so it is never cut again
        // as a whole: the field and what is wrong with it both stay.
        let room = MAX_MESSAGE_BYTES - "invalid value for : ".len() - field.len();
        let message = if field.is_empty() {
            format!(
                "invalid request: {}",
                cut_in_middle(description.clone(), room)
            )
        } else {
            format!(
                "invalid value for {field}: {}",
                cut_in_middle(description.clone(), room)
            )
        };
        let description = cut_in_middle(description, MAX_MESSAGE_BYTES);
        Self::new(
            ErrorKind::InvalidRequest {
                violations: vec![FieldViolation { field, description }],
            },
            Origin::Client,
            message,
        )
    }

    /// A request (its body, one of its messages, or a line of a stream)
    /// over the limit set by `key`, named so the client knows which.
    pub fn payload_too_large(limit: usize, key: &'static str) -> Self {
        let what = if key.ends_with("max_request_body_bytes") {
            "the request body"
        } else {
            "a request message"
        };
        Self::new(
            ErrorKind::PayloadTooLarge { limit },
            Origin::Client,
            format!("{what} is larger than {key} ({limit} bytes)"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::unsupported_media_type_wanting(content_type, "application/json")
    }

    /// A content type with a byte no media type has, shown escaped.
    pub fn unreadable_content_type(escaped: &str) -> Self {
        Self::new(
            ErrorKind::UnsupportedMediaType {
                content_type: escaped.to_owned(),
            },
            Origin::Client,
            format!(
                "content type \"{escaped}\" (its bytes outside ASCII written as \\xNN) is not a media type: a content type is ASCII text"
            ),
        )
    }

    /// Native gRPC asked over HTTP/1.1.
    pub fn grpc_needs_http2() -> Self {
        Self::new(
            ErrorKind::GrpcNeedsHttp2,
            Origin::Client,
            "native gRPC needs HTTP/2 (h2c with prior knowledge, or TLS with ALPN h2): HTTP/1.1 cannot carry its trailers; over HTTP/1.1 use gRPC-Web or Connect",
        )
    }

    /// A content type this request cannot have, and what it should send.
    pub fn unsupported_media_type_wanting(content_type: &str, wanted: &str) -> Self {
        Self::new(
            ErrorKind::UnsupportedMediaType {
                content_type: content_type.to_owned(),
            },
            Origin::Client,
            format!("content type {content_type:?} is not supported here; send {wanted}"),
        )
    }

    /// The client went quiet for longer than `timeout` (a config key).
    pub fn client_timeout(timeout: &'static str, after: std::time::Duration) -> Self {
        GatewayError::new(
            ErrorKind::ClientTimeout { timeout },
            Origin::Client,
            format!("the client sent nothing for {after:?} ({timeout})"),
        )
    }

    /// The backend went quiet for longer than `timeout` (a config key).
    pub fn upstream_timeout(timeout: &'static str, after: std::time::Duration) -> Self {
        GatewayError::new(
            ErrorKind::UpstreamTimeout { timeout },
            Origin::Backend,
            format!("the backend sent nothing for {after:?} ({timeout})"),
        )
    }

    /// The client went away (closed its connection, reset its stream)
    /// before its request ended: CANCELLED, as a client that leaves at any
    /// other moment, on every protocol; never a malformed request.
    pub fn client_left(detail: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorKind::ClientLeft,
            Origin::Client,
            format!("the client left before its request ended ({detail})"),
        )
    }

    /// Whether the client left mid-request: a call it abandoned, which got
    /// no answer (unlike a `cancel` it was answered for).
    pub fn is_client_gone(&self) -> bool {
        matches!(self.kind, ErrorKind::ClientLeft)
    }

    pub fn deadline_exceeded() -> Self {
        Self::new(
            ErrorKind::DeadlineExceeded,
            Origin::Gateway,
            "the call's deadline passed before the backend finished",
        )
    }

    /// A backend's failure with the response headers it sent before its
    /// status: kept beside the status's own metadata (which wins for a
    /// name both carry), so a client that gets the error gets them too.
    pub fn with_reply_headers(mut self, headers: &http::HeaderMap) -> Self {
        if let ErrorKind::Backend(status) = &mut self.kind {
            for name in headers.keys() {
                // A reply header of the request id's name is replaced by the
                // request's own on every protocol: never the backend's.
                if name == crate::ingress::edge::request_id::HEADER {
                    continue;
                }
                if !status.metadata.contains_key(name) {
                    for value in headers.get_all(name) {
                        status.metadata.append(name.clone(), value.clone());
                    }
                }
            }
        }
        self
    }

    /// The deadline passed before `what` (the backend was called, Redis
    /// answered...): the time went elsewhere than to the backend.
    pub fn deadline_exceeded_before(what: &str) -> Self {
        Self::new(
            ErrorKind::DeadlineExceeded,
            Origin::Gateway,
            format!("the call's deadline passed before {what}"),
        )
    }

    /// The client's own timeout was zero (`grpc-timeout: 0S`): the call
    /// had no time from the start, the client's doing whoever noticed.
    pub fn deadline_given_no_time(before: &str) -> Self {
        Self::new(
            ErrorKind::DeadlineExceeded,
            Origin::Client,
            format!("the call's deadline passed before {before} (the client's timeout was 0)"),
        )
    }

    /// The deadline passed while the client was still sending its
    /// request: the client's doing, and the backend was never called.
    pub fn deadline_passed_reading_request() -> Self {
        Self::new(
            ErrorKind::DeadlineExceeded,
            Origin::Client,
            "the call's deadline passed before its request had arrived (the backend was not called)",
        )
    }

    /// A client-streaming call's deadline passing while the gateway waits
    /// on its client for more of the upload: the backend has it in part.
    pub fn deadline_passed_during_upload() -> Self {
        Self::new(
            ErrorKind::DeadlineExceeded,
            Origin::Client,
            "the call's deadline passed while its client was still sending the request stream",
        )
    }

    /// A unary call's reply ended `OK` with no message: gRPC clients
    /// treat that as INTERNAL, so every protocol's client gets that.
    pub fn reply_without_message() -> Self {
        Self::new(
            ErrorKind::BadBackendReply,
            Origin::Backend,
            "the backend ended the call without a message",
        )
    }

    /// A unary call's reply had a second message.
    pub fn reply_with_extra_message() -> Self {
        Self::new(
            ErrorKind::BadBackendReply,
            Origin::Backend,
            "the backend sent more than one message for a unary call",
        )
    }

    /// A policy's own service (introspection, external authorization) failed.
    pub fn policy_service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::PolicyServiceUnavailable,
            Origin::Gateway,
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, Origin::Gateway, message)
    }

    /// Maps a status from a backend call. Statuses that tonic synthesises for
    /// transport failures (the backend never answered) become `BackendUnavailable`.
    pub fn from_backend_status(status: &tonic::Status) -> Self {
        // tonic enforces the request's grpc-timeout itself and reports it as a
        // cancellation caused by `TimeoutExpired`.
        if source_is::<tonic::TimeoutExpired>(status) {
            return Self::deadline_exceeded();
        }
        if let Some(reset) = reset_by_backend(status) {
            return reset;
        }
        // A connection reset mid-call comes as UNKNOWN "transport error".
        if matches!(status.code(), Code::Unavailable | Code::Unknown)
            && status.metadata().is_empty()
            && transport_failure(status)
        {
            // The cause says what an operator can fix (a refused client
            // certificate, a reset), where tonic's message says only
            // "transport error".
            let why = causes_after(
                status.message().to_owned(),
                std::error::Error::source(status),
            );
            return Self::new(
                ErrorKind::BackendUnavailable,
                Origin::Backend,
                format!("backend unavailable: {why}"),
            );
        }
        if status.code() == Code::Cancelled && transport_failure(status) {
            // With its cause when there is one: a backend that refused the
            // gateway's client certificate closes the connection this way.
            let why = causes_after(String::new(), std::error::Error::source(status));
            let why = why.trim_start_matches(": ");
            return Self::new(
                ErrorKind::BackendUnavailable,
                Origin::Backend,
                if why.is_empty() {
                    "backend connection lost".to_owned()
                } else {
                    format!("backend connection lost: {why}")
                },
            );
        }
        if let Some(refused) = refused_reply(status) {
            return refused;
        }
        // tonic's word for a body that ended inside a message: no status
        // came, the message is cut short, so the reply is unreadable.
        if status.code() == Code::Internal
            && status.metadata().is_empty()
            && status.message() == "Unexpected EOF decoding stream."
        {
            return Self::new(
                ErrorKind::BadBackendReply,
                Origin::Backend,
                "the backend's reply could not be read: its stream ended inside a message, with no grpc-status (cut short, perhaps by a proxy or load balancer)",
            );
        }
        Self::new(
            ErrorKind::Backend(Box::new(BackendStatus {
                code: status.code(),
                details: status.details().to_vec().into(),
                metadata: status.metadata().clone().into_headers(),
            })),
            Origin::Backend,
            status.message().to_owned(),
        )
    }

    /// HTTP status of this error, from the one table.
    pub fn http_status(&self) -> StatusCode {
        self.kind.http_status()
    }

    /// gRPC code of this error, from the one table.
    pub fn grpc_code(&self) -> Code {
        self.kind.grpc_code()
    }
}

/// A message as an RFC 6750 `error_description`: printable ASCII without
/// `"` or `\` (section 3), so the challenge is the same valid header on
/// every protocol, whatever a token's header put into the message.
fn description(message: &str) -> String {
    message
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

/// tonic marks statuses it made from a transport error by attaching the
/// source error; a backend's own status has none.
fn transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// A reply the gateway's own HTTP/2 client refused, or a connection it
/// closed: tonic names both by the HTTP/2 reason (ENHANCE_YOUR_CALM becomes
/// RESOURCE_EXHAUSTED, a 429 a client would retry) and says only "http2
/// error". A header block over the limit is the backend's fault; h2 closing
/// the connection for another reason (data frames piling up unread) is not,
/// and is said as the closed connection it is.
fn refused_reply(status: &tonic::Status) -> Option<GatewayError> {
    let limit = crate::config::BACKEND_HEADER_LIST_BYTES / 1024;
    let h2 = source_of::<h2::Error>(status).filter(|h2| h2.is_library())?;
    let text = h2.to_string();
    let bad = |why: String| {
        Some(GatewayError::new(
            ErrorKind::BadBackendReply,
            Origin::Backend,
            why,
        ))
    };
    match h2.reason() {
        // h2 counts a header block's CONTINUATION frames against
        // the list size it advertised, and closes the connection.
        Some(h2::Reason::ENHANCE_YOUR_CALM)
            if text.contains("too_many_continuations")
                || text.contains("header_list_way_too_large") =>
        {
            bad(format!(
                "the backend's reply headers or trailers are over the {limit} KiB the gateway accepts \
                 (too many CONTINUATION frames); the connection to it was closed"
            ))
        }
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Some(GatewayError::new(
            ErrorKind::BackendUnavailable,
            Origin::Backend,
            format!("the gateway's HTTP/2 client closed its connection to the backend: {text}"),
        )),
        Some(h2::Reason::PROTOCOL_ERROR) => bad(format!(
            "the gateway's HTTP/2 client refused the backend's reply (PROTOCOL_ERROR): a header \
             block over the {limit} KiB it accepts, a header HTTP/2 does not allow (`connection`, \
             `transfer-encoding`, `upgrade`, `keep-alive`), or a frame it does not allow"
        )),
        Some(
            reason @ (h2::Reason::FRAME_SIZE_ERROR
            | h2::Reason::COMPRESSION_ERROR
            | h2::Reason::FLOW_CONTROL_ERROR),
        ) => bad(format!("the backend's reply broke HTTP/2 ({reason:?}): {text}")),
        _ => None,
    }
}

/// A call's stream the backend reset (`RST_STREAM`), as gRPC's HTTP/2
/// mapping reads each reason: `CANCEL` is CANCELLED, `ENHANCE_YOUR_CALM`
/// RESOURCE_EXHAUSTED, `INADEQUATE_SECURITY` PERMISSION_DENIED, the rest
/// INTERNAL (a reply the gateway could not read whole: REST `502`), each
/// saying the backend reset it. `REFUSED_STREAM` (a stream
/// the backend never started, so safe to retry elsewhere) is left to the
/// unavailable backend it is.
fn reset_by_backend(status: &tonic::Status) -> Option<GatewayError> {
    let h2 = source_of::<h2::Error>(status)?;
    let reason = h2.reason().filter(|_| h2.is_reset() && h2.is_remote())?;
    let said = format!(
        "the backend reset the call's stream ({reason:?}: {})",
        reason.description()
    );
    let code = match reason {
        h2::Reason::REFUSED_STREAM => return None,
        h2::Reason::CANCEL => Code::Cancelled,
        h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        h2::Reason::INADEQUATE_SECURITY => Code::PermissionDenied,
        // A reply broken off, as one cut inside a message is.
        _ => {
            return Some(GatewayError::new(
                ErrorKind::BadBackendReply,
                Origin::Backend,
                said,
            ))
        }
    };
    Some(GatewayError::new(
        ErrorKind::Backend(Box::new(BackendStatus {
            code,
            details: Default::default(),
            metadata: Default::default(),
        })),
        Origin::Backend,
        said,
    ))
}

fn source_is<E: std::error::Error + 'static>(status: &tonic::Status) -> bool {
    source_of::<E>(status).is_some()
}

/// The first error of type `E` among a status's causes: the transport
/// error tonic attached, or one it wraps.
fn source_of<E: std::error::Error + 'static>(status: &tonic::Status) -> Option<&E> {
    error_in_chain(status)
}

/// The first error of type `E` in `e`'s chain, `e` itself included: an
/// `h2::Error` or `io::Error` inside the library errors that carry it.
pub fn error_in_chain<'a, E: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

impl ErrorKind {
    /// THE gRPC code of each kind.
    pub fn grpc_code(&self) -> Code {
        match self {
            ErrorKind::RouteNotFound { .. } => Code::NotFound,
            ErrorKind::UnknownMethod { .. } => Code::Unimplemented,
            ErrorKind::OriginNotAllowed { .. } => Code::PermissionDenied,
            ErrorKind::Unauthenticated { .. } => Code::Unauthenticated,
            ErrorKind::Forbidden { .. } => Code::PermissionDenied,
            ErrorKind::RateLimited { .. } => Code::ResourceExhausted,
            ErrorKind::UnsupportedEncoding => Code::Unimplemented,
            ErrorKind::MethodNotAllowed { .. } => Code::Unimplemented,
            ErrorKind::InvalidRequest { .. } => Code::InvalidArgument,
            ErrorKind::PayloadTooLarge { .. } => Code::ResourceExhausted,
            ErrorKind::UnsupportedMediaType { .. } => Code::InvalidArgument,
            ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorKind::BackendUnavailable => Code::Unavailable,
            ErrorKind::Backend(b) => b.code,
            ErrorKind::BadBackendReply => Code::Internal,
            ErrorKind::DependencyFailed { .. } => Code::FailedPrecondition,
            ErrorKind::Overloaded { .. } => Code::Unavailable,
            ErrorKind::Cancelled | ErrorKind::ClientLeft => Code::Cancelled,
            ErrorKind::RequestTargetTooLong { .. } => Code::InvalidArgument,
            ErrorKind::ClientTimeout { .. } | ErrorKind::UpstreamTimeout { .. } => {
                Code::DeadlineExceeded
            }
            ErrorKind::UnsupportedTransferEncoding | ErrorKind::GrpcNeedsHttp2 => {
                Code::Unimplemented
            }
            ErrorKind::TooManyHeaderFields { .. }
            | ErrorKind::HeaderBytesTooLarge { .. }
            | ErrorKind::UnsupportedWebSocketVersion => Code::InvalidArgument,
            ErrorKind::PolicyServiceUnavailable => Code::Unavailable,
            ErrorKind::Denied(d) => d.grpc_code(),
            ErrorKind::Internal => Code::Internal,
        }
    }

    /// THE HTTP status of each kind; backend statuses follow the standard
    /// gRPC -> HTTP mapping (google.rpc.Code's documented HTTP equivalents).
    pub fn http_status(&self) -> StatusCode {
        match self {
            ErrorKind::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ErrorKind::UnknownMethod { .. } => StatusCode::NOT_FOUND,
            ErrorKind::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            ErrorKind::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden { .. } => StatusCode::FORBIDDEN,
            ErrorKind::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ErrorKind::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::BackendUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Backend(b) => http_status_of_grpc(b.code),
            ErrorKind::BadBackendReply => StatusCode::BAD_GATEWAY,
            ErrorKind::DependencyFailed { .. } => StatusCode::FAILED_DEPENDENCY,
            ErrorKind::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Cancelled | ErrorKind::ClientLeft => http_status_of_grpc(Code::Cancelled),
            ErrorKind::RequestTargetTooLong { .. } => StatusCode::URI_TOO_LONG,
            ErrorKind::ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::GrpcNeedsHttp2 => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ErrorKind::TooManyHeaderFields { .. } | ErrorKind::HeaderBytesTooLarge { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ErrorKind::UnsupportedWebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            ErrorKind::PolicyServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Denied(d) => d.status,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Why a WebSocket connection closes, for the close codes of the one table
/// ([`WsClose::code`]); no adapter writes a close code itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsClose {
    /// The session's one call ended with this gRPC code (0: OK).
    CallEnded(Code),
    /// The gateway is shutting down, or the connection was idle too long.
    GoingAway,
    /// The client broke the WebSocket framing (a bad frame, a bad opcode,
    /// an unmasked frame, a fragmented control frame).
    ProtocolError,
    /// A text message that is not UTF-8.
    InvalidPayload,
    /// The client broke the session's rules of conduct: it floods control
    /// frames without reading the answers.
    PolicyViolation,
    /// A frame or message larger than the gateway reads.
    TooBig,
    /// The gateway failed in a way that is nobody else's fault.
    InternalError,
}

impl WsClose {
    /// THE close code: 1000 for a call that ended OK, 4000 + the gRPC code
    /// for one that failed (the private range RFC 6455 leaves to
    /// applications), and RFC 6455 section 7.4's codes for the rest: 1001
    /// going away, 1002 protocol error, 1007 invalid payload, 1008 policy
    /// violation, 1009 too big, 1011 internal error.
    pub fn code(self) -> u16 {
        match self {
            WsClose::CallEnded(Code::Ok) => 1000,
            WsClose::CallEnded(code) => 4000 + (code as i32).clamp(0, 999) as u16,
            WsClose::GoingAway => 1001,
            WsClose::ProtocolError => 1002,
            WsClose::InvalidPayload => 1007,
            WsClose::PolicyViolation => 1008,
            WsClose::TooBig => 1009,
            WsClose::InternalError => 1011,
        }
    }

    /// The error of a call still running when the session closes for this
    /// reason (`reason` is the close frame's text; `limit` the message size
    /// a 1009 was for): the client's frame for 1002, 1007, 1008 and 1009,
    /// the gateway's for the rest.
    pub fn cut_call(self, reason: &str, limit: usize) -> GatewayError {
        let (kind, origin) = match self {
            WsClose::TooBig => (ErrorKind::PayloadTooLarge { limit }, Origin::Client),
            WsClose::ProtocolError | WsClose::InvalidPayload | WsClose::PolicyViolation => (
                ErrorKind::InvalidRequest {
                    violations: Vec::new(),
                },
                Origin::Client,
            ),
            WsClose::InternalError => (ErrorKind::Internal, Origin::Gateway),
            WsClose::GoingAway | WsClose::CallEnded(_) => (ErrorKind::Cancelled, Origin::Gateway),
        };
        GatewayError::new(
            kind,
            origin,
            format!(
                "the session was closed with {} ({reason}) while this call ran",
                self.code()
            ),
        )
    }
}

/// The standard mapping of a gRPC code to an HTTP status.
pub fn http_status_of_grpc(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, from {})",
            self.message,
            self.grpc_code(),
            self.origin.as_str()
        )
    }
}

impl std::error::Error for GatewayError {}

/// An error and its causes, `outer: inner: root`, since client libraries
/// often say only "connect error" at the top.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    causes_after(e.to_string(), e.source())
}

/// A gRPC status said as its message and causes, without the `Debug`-like
/// dump of its metadata and details that its `Display` writes.
pub fn status_with_causes(status: &tonic::Status) -> String {
    causes_after(
        status.message().to_owned(),
        std::error::Error::source(status),
    )
}

/// `head`, then each cause in `source`'s chain that does not repeat what
/// is already said (libraries often put their cause's text in their own).
fn causes_after(mut out: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut not_tls = false;
    let mut wants_client_certificate = false;
    let mut closed_unannounced = false;
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        not_tls |= answered_without_tls(s);
        // Matched by its text: the TLS layer under hyper hands the alert
        // on as an io error holding only rustls's words, not its type.
        wants_client_certificate |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.to_string() == "received fatal alert: CertificateRequired");
        // A TLS 1.3 server that wants a client certificate and got none
        // may simply close after the handshake, with no alert to say why.
        closed_unannounced |= s.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.to_string()
                .starts_with("peer closed connection without sending TLS close_notify")
        });
        source = s.source();
    }
    // rustls words a plain-text reply to its hello as a corrupt message,
    // which does not say what to fix.
    if not_tls {
        out.push_str(
            " (the server did not answer in TLS: is it a plain-text server where TLS was asked for, by `tls = true` or an https:// URL?)",
        );
    } else if wants_client_certificate {
        out.push_str(
            " (the server requires a client certificate: see the upstream's `tls_cert_file` and `tls_key_file`)",
        );
    } else if closed_unannounced {
        out.push_str(
            " (the server closed the TLS connection without a word: one that requires a client certificate does so when none is sent, see the upstream's `tls_cert_file` and `tls_key_file`)",
        );
    }
    out
}

/// A TLS handshake whose reply was not TLS at all: what a plain-text
/// server answers to the gateway's hello. io errors hide the error they
/// wrap (often another io error) from `source()`, so it is looked for
/// inside them too.
fn answered_without_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    if matches!(
        e.downcast_ref::<rustls::Error>(),
        Some(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType
        ))
    ) {
        return true;
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|inner| answered_without_tls(inner))
}

#[cfg(test)]
mod tests;
