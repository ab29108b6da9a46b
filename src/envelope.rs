//! The protocol-neutral request and reply that flow through the policy
//! pipeline. Ingress adapters build an [`Envelope`] from their protocol;
//! egress adapters turn it into a backend call and return a [`Reply`].
//! Nothing here knows about HTTP bodies, JSON or WebSocket frames.

use crate::error::GatewayError;
use bytes::Bytes;
use futures_util::Stream;
use http::uri::PathAndQuery;
use http::HeaderMap;
use prost_reflect::MethodDescriptor;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The four shapes of a gRPC call, taken from the schema, never from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl CallKind {
    pub fn of(method: &MethodDescriptor) -> Self {
        match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => CallKind::Unary,
            (false, true) => CallKind::ServerStreaming,
            (true, false) => CallKind::ClientStreaming,
            (true, true) => CallKind::Bidi,
        }
    }

    pub fn client_streams(self) -> bool {
        matches!(self, CallKind::ClientStreaming | CallKind::Bidi)
    }

    pub fn server_streams(self) -> bool {
        matches!(self, CallKind::ServerStreaming | CallKind::Bidi)
    }

    /// The kind in words, for messages to clients.
    pub fn describe(self) -> &'static str {
        match self {
            CallKind::Unary => "unary",
            CallKind::ServerStreaming => "server-streaming",
            CallKind::ClientStreaming => "client-streaming",
            CallKind::Bidi => "bidirectional streaming",
        }
    }
}

/// Index of an upstream in the gateway's upstream list, resolved at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamId(pub usize);

impl UpstreamId {
    /// The gateway itself: its own services (health, server reflection),
    /// answered in process.
    pub const GATEWAY: UpstreamId = UpstreamId(usize::MAX);
}

/// A backend method as resolved at startup: everything the hot path needs
/// without a lookup by name.
#[derive(Debug)]
pub struct Target {
    pub method: MethodDescriptor,
    /// `/package.Service/Method`, ready for the HTTP/2 request line.
    pub path: PathAndQuery,
    pub kind: CallKind,
    pub upstream: UpstreamId,
    /// Index of the `[[routes]]` entry that routes this method.
    pub route: usize,
    /// The route's name for the upstream, for logs.
    pub upstream_name: Arc<str>,
    /// Upper bound for a unary call; a client may ask for less.
    pub timeout: Option<Duration>,
    /// Safe to serve from a cache: unary, and bound to GET, marked
    /// `idempotency_level = NO_SIDE_EFFECTS`, or listed in the route's cache.
    pub cacheable: bool,
    /// Whether its calls write access-log lines (the route's `access_log`).
    pub access_log: bool,
    /// Safe to send again after it may have reached the backend: marked
    /// `NO_SIDE_EFFECTS` or `IDEMPOTENT`, or listed in the upstream's retry config.
    pub idempotent: bool,
    /// The request field a consistent-hash upstream hashes, resolved at load;
    /// `None` when the upstream hashes something else or the input lacks it.
    pub hash_field: Option<Vec<prost_reflect::FieldDescriptor>>,
    /// Whether its request type is one a JSON body can be read for straight
    /// into wire bytes (the same test as for replies).
    pub request_json_direct: bool,
    /// Whether its request type can hold a map at any depth: its encoded
    /// requests get their entries in key order
    /// ([`crate::transcode::map_order`]), and the cache keys on them so.
    pub request_has_maps: bool,
    /// Whether its reply type is one JSON can be written for straight from
    /// the wire ([`crate::transcode::json::wire::covers`]).
    pub reply_json_direct: bool,
    /// This method's call counters, for `/metrics`.
    pub stats: Arc<crate::observe::call_stats::CallStats>,
}

#[cfg(test)]
impl Target {
    /// `method` as a unary route to upstream 0 would resolve it, every
    /// switch off (the JSON direct paths as its types allow), for unit
    /// tests.
    pub(crate) fn for_method(method: MethodDescriptor) -> Target {
        Target {
            path: format!("/{}/{}", method.parent_service().full_name(), method.name())
                .parse()
                .expect("a method's path is a valid path"),
            request_json_direct: crate::transcode::json::wire::covers(&method.input()),
            request_has_maps: crate::transcode::map_order::can_hold_maps(&method.input()),
            reply_json_direct: crate::transcode::json::wire::covers(&method.output()),
            kind: CallKind::of(&method),
            method,
            upstream: UpstreamId(0),
            route: 0,
            upstream_name: "u".into(),
            timeout: None,
            cacheable: false,
            access_log: false,
            idempotent: false,
            hash_field: None,
            stats: Default::default(),
        }
    }
}

/// Stream of encoded protobuf messages.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Bytes, GatewayError>> + Send>>;

/// What the client sent: one encoded message or a stream of them.
pub enum Payload {
    Unary(Bytes),
    Stream(MessageStream),
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The token's `sub` claim.
    pub subject: String,
    /// Every verified claim.
    pub claims: serde_json::Value,
}

/// The certificate a client presented on its TLS connection, verified
/// against `server.tls.client_ca_file` during the handshake (mutual TLS).
/// Read once per connection; every request on it shares it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientCertificate {
    /// The subject's distinguished name as RFC 4514 writes it (`CN=ada,O=Example`).
    pub subject: String,
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// Subject alternative names, by kind.
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
    pub emails: Vec<String>,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
}

/// Per-request state shared by the policies, typed rather than string-keyed.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// When the call started: its deadline counts from here.
    pub started: Instant,
    pub client_addr: Option<SocketAddr>,
    /// Set by the authentication policy.
    pub principal: Option<Arc<Principal>>,
    /// Which of the route's authenticators (its place in the route's list)
    /// verified the principal: two kinds of credential naming one subject
    /// may get different replies (the backend sees different headers).
    pub authenticated_by: usize,
    /// The headers the route's authenticators write (`forward_claims` and
    /// their `-bin` twins), set by the authentication policy: no later
    /// policy (an authorization service's answer) may change them.
    pub claim_headers: Option<Arc<[http::HeaderName]>>,
    /// The client's request headers as the request edge made them (with
    /// credentials lifted from the query or a WebSocket subprotocol): what
    /// policies read, whatever the protocol. Not what the backend receives:
    /// that is [`Envelope::metadata`].
    pub headers: Arc<HeaderMap>,
    /// `headers` as they were before a policy first took out or replaced
    /// a header the client sent (an unverified credential, an
    /// authorization service's answer; see
    /// [`RequestCtx::policy_headers_mut`]): the cache keys on the
    /// credentials the client sent.
    pub edge_headers: Option<Arc<HeaderMap>>,
    /// The headers authorization services set on the backend's metadata:
    /// the backend may build its reply from them, so the cache keys on
    /// their values.
    pub service_headers: Vec<http::HeaderName>,
    /// The client's own deadline (`grpc-timeout`, `connect-timeout-ms`), as
    /// the request edge read it: calls made on the client's behalf (an
    /// aggregate's) are bounded by it too.
    pub client_timeout: Option<Duration>,
    /// The client's verified TLS certificate, when it presented one.
    pub client_cert: Option<Arc<ClientCertificate>>,
    /// What the access log will say of this call, filled in as it goes.
    pub record: Arc<crate::observe::call_record::CallRecord>,
    /// An aggregate's call, by its place in the aggregate's list (0 for
    /// every other call): its calls share one record, which only the
    /// first's facts fill, even where two call one method.
    pub aggregate_call: usize,
}

impl RequestCtx {
    pub fn new(client_addr: Option<SocketAddr>, headers: Arc<HeaderMap>) -> Self {
        RequestCtx {
            started: Instant::now(),
            client_addr,
            principal: None,
            authenticated_by: 0,
            claim_headers: None,
            headers,
            edge_headers: None,
            service_headers: Vec::new(),
            client_timeout: None,
            client_cert: None,
            record: crate::observe::call_record::CallRecord::none(),
            aggregate_call: 0,
        }
    }

    /// `headers` to change, with the request edge's kept first: for a
    /// change that may take out or replace a credential, which the cache
    /// still keys on as the client sent it.
    pub fn policy_headers_mut(&mut self) -> &mut HeaderMap {
        if self.edge_headers.is_none() {
            self.edge_headers = Some(self.headers.clone());
        }
        Arc::make_mut(&mut self.headers)
    }

    /// The request's headers as the request edge made them, before any
    /// policy took a credential out.
    pub fn edge_headers(&self) -> &HeaderMap {
        self.edge_headers.as_deref().unwrap_or(&self.headers)
    }
}

/// A call on its way to a backend.
pub struct Envelope {
    pub target: Arc<Target>,
    /// Headers to send as gRPC metadata, already through the request edge's
    /// forwarding rule.
    pub metadata: HeaderMap,
    pub payload: Payload,
    /// How long the call may take, counted from `ctx.started`: the
    /// policies' time is the call's too. Sent as `grpc-timeout` (what is
    /// left of it) and enforced.
    pub timeout: Option<Duration>,
    pub ctx: RequestCtx,
}

impl Envelope {
    /// When the call's time is up.
    pub fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| self.ctx.started + t)
    }

    /// A copy for another attempt; only a call whose request is one message
    /// can be sent again (a client stream is consumed as it is sent).
    pub fn try_clone(&self) -> Option<Envelope> {
        let Payload::Unary(message) = &self.payload else {
            return None;
        };
        Some(Envelope {
            target: self.target.clone(),
            metadata: self.metadata.clone(),
            payload: Payload::Unary(message.clone()),
            timeout: self.timeout,
            ctx: self.ctx.clone(),
        })
    }
}

/// One item of a backend's reply.
#[derive(Debug)]
pub enum ReplyFrame {
    Message(Bytes),
    /// The trailing metadata of a call that ended well; always the last frame.
    Trailers(HeaderMap),
}

/// A reply as it arrives: messages, then trailers; an `Err` item ends the
/// call with that status instead.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<ReplyFrame, GatewayError>> + Send>>;

/// The backend's answer: its response headers, then the stream. Unary and
/// streaming calls have the same shape, so a gRPC client gets headers and
/// trailers exactly as the backend sent them.
pub struct Reply {
    pub metadata: HeaderMap,
    pub body: ReplyStream,
}

impl Reply {
    /// A reply of exactly one message and no trailers.
    pub fn single(metadata: HeaderMap, message: Bytes) -> Reply {
        Reply::complete(metadata, message, HeaderMap::new())
    }

    /// A unary reply already read to its end: one message, then trailers.
    pub fn complete(metadata: HeaderMap, message: Bytes, trailers: HeaderMap) -> Reply {
        let frames = [
            Ok(ReplyFrame::Message(message)),
            Ok(ReplyFrame::Trailers(trailers)),
        ];
        Reply {
            metadata,
            body: Box::pin(futures_util::stream::iter(frames)),
        }
    }

    /// Reads a unary reply to its end: the one message, with the trailers
    /// merged into the metadata.
    pub async fn into_unary(self) -> Result<(HeaderMap, Bytes), GatewayError> {
        let (mut metadata, message, trailers) = self.into_unary_parts().await?;
        metadata.extend(trailers);
        Ok((metadata, message))
    }

    /// Reads a unary reply to its end: its metadata, the one message and
    /// the trailers, kept apart for a protocol that sends them apart.
    pub async fn into_unary_parts(self) -> Result<(HeaderMap, Bytes, HeaderMap), GatewayError> {
        use futures_util::StreamExt;
        let mut body = self.body;
        let mut message = None;
        let mut trailers = HeaderMap::new();
        while let Some(frame) = body.next().await {
            // A status after headers: the headers go with the error.
            match frame.map_err(|e| e.with_reply_headers(&self.metadata))? {
                ReplyFrame::Message(m) if message.is_none() => message = Some(m),
                ReplyFrame::Message(_) => return Err(GatewayError::reply_with_extra_message()),
                ReplyFrame::Trailers(t) => trailers.extend(t),
            }
        }
        let message = message.ok_or_else(GatewayError::reply_without_message)?;
        Ok((self.metadata, message, trailers))
    }
}
