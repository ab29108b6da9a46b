//! The WebSocket ingress: a handshake on a method's path (its google.api.http
//! path or `/package.Service/Method`) opens one call to that method; a
//! `portico.json.v1` handshake on any other path opens a multiplexed session
//! whose calls are opened by frames. Calls go through the same pipeline as
//! every other protocol; the call kind comes from the schema.
//!
//! The handshake is where browsers are checked: the `Origin` must be the
//! gateway's own or a configured one. Its headers, with the credentials a
//! browser can only send in the query or a `portico.token.<base64url>`
//! subprotocol entry, go through the request edge like any protocol's.

pub mod config;

pub mod protocol;
mod session;

use super::body::ResponseBody;
use super::edge::{Edge, Inbound};
use crate::config::WebSocketConfig;
use crate::error::{ErrorKind, GatewayError, Origin};
use crate::observe::call_record::CallRecord;
use crate::policy::Pipeline;
use crate::routes::{Binding, MatchOutcome, RouteTable};
use crate::transcode::status::StatusRenderer;
use http::header::{
    CONNECTION, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use protocol::Dialect;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

pub struct WebSocketIngress {
    pub routes: Arc<RouteTable>,
    pub pipeline: Pipeline,
    /// The routes' authenticators, the pipeline's own: a handshake on a
    /// method's path is authenticated by them before the `101`.
    pub auth: crate::policy::PerRoute<crate::policy::auth::RouteAuth>,
    /// Where credentials travel (the pipeline's one-credential rule): a
    /// handshake carrying two is refused with `400`, not upgraded.
    pub credentials: crate::policy::one_credential::OneCredentialLayer,
    pub config: WebSocketConfig,
    /// `server.limits.stream_idle_timeout`, for a call's client stream.
    pub stream_idle_timeout: std::time::Duration,
    /// `server.limits`: a call's metadata joins its handshake's headers,
    /// and the two together are bounded as any request's headers are.
    pub limits: crate::config::Limits,
    pub edge: Edge,
    pub status: StatusRenderer,
    /// Turns true when the gateway shuts down: sessions close with 1001.
    pub shutdown: watch::Receiver<bool>,
    /// Sessions open now, so shutdown can wait for their going-away closes.
    pub sessions: Arc<std::sync::atomic::AtomicUsize>,
    /// The newest generation's WebSocket ingress (after a config reload):
    /// a session opens its later calls there, while the calls it already
    /// runs keep theirs. Weak, so an old generation does not keep the
    /// newest one alive.
    pub newest: std::sync::Weak<arc_swap::ArcSwapOption<WebSocketIngress>>,
}

impl WebSocketIngress {
    /// The generation a call opened now should use.
    pub fn newest(self: &Arc<Self>) -> Arc<WebSocketIngress> {
        self.newest
            .upgrade()
            .and_then(|n| n.load_full())
            .unwrap_or_else(|| self.clone())
    }
}

/// Whether a request asks to become a WebSocket: a `GET` with `Upgrade:
/// websocket`. One without `Connection: Upgrade` beside it (a proxy in
/// front dropped it) is still a handshake, refused for what it lacks,
/// rather than a REST call its client never meant.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && has_token(req.headers(), UPGRADE, "websocket")
}

fn has_token(headers: &http::HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// The method a handshake opens, with the binding that maps its URL.
pub(crate) struct CallSpec {
    pub target: Arc<crate::envelope::Target>,
    pub binding: Option<Arc<Binding>>,
    /// Raw path segments and query that fill the first request message.
    pub url: Option<(Vec<String>, Option<String>)>,
}

impl WebSocketIngress {
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
    ) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        let record = self.edge.session_record(req.method(), &path, req.headers());
        let accepted = match self.accept(&req, &record) {
            Ok((dialect, spec, inbound)) => self
                .authenticate_handshake(spec.as_ref(), &inbound, client)
                .await
                .map(|()| (dialect, spec, inbound)),
            Err(err) => Err(err),
        };
        match accepted {
            Err(err) => {
                let resp = self.refusal(&err);
                // The fields every protocol's failed request has.
                let (status, code) = (resp.status().as_u16(), err.grpc_code() as i32);
                tracing::info!(target: "portico::access", protocol = "websocket", path = path.as_str(), status, code, origin = err.origin.as_str(), error = err.message.as_str(), "websocket handshake refused");
                record.client(self.edge.client_of(req.headers(), client));
                record.failed(&err);
                record.http_status(resp.status());
                resp
            }
            Ok((dialect, spec, inbound)) => {
                let key = req
                    .headers()
                    .get(SEC_WEBSOCKET_KEY)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static(""));
                let accept =
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let upgrade = hyper::upgrade::on(&mut req);
                let this = self.clone();
                let sessions = self.sessions.clone();
                // The session keeps the connection's max_connections slot.
                let slot = req
                    .extensions()
                    .get::<super::slot::ConnectionSlot>()
                    .and_then(|s| s.take());
                sessions.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                // The session's lines (refused frames, its end) carry the
                // handshake's request id, as the calls' carry theirs.
                let session_id = crate::observe::request_scope::current()
                    .unwrap_or_else(|| HeaderValue::from_static(""));
                tokio::spawn(crate::observe::request_scope::scope(
                    session_id,
                    async move {
                        let _slot = slot;
                        match upgrade.await {
                            Ok(io) => session::run(this, io, dialect, spec, inbound, client).await,
                            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                        }
                        sessions.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    },
                ));
                record.http_status(StatusCode::SWITCHING_PROTOCOLS);
                let mut resp = Response::new(ResponseBody::empty());
                *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = resp.headers_mut();
                h.insert(UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                if let Ok(v) = HeaderValue::from_str(&accept) {
                    h.insert(SEC_WEBSOCKET_ACCEPT, v);
                }
                if let Some(p) = dialect.subprotocol() {
                    h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
                }
                resp
            }
        }
    }

    /// A session on a method's path is that method's call: the route's
    /// authenticators judge the handshake, so a client without a valid
    /// credential gets a 401 as HTTP, not a `101` and a close later. The
    /// call itself goes through the whole pipeline as every call does.
    /// Two credentials are refused first, on any handshake: every call
    /// of the session would be refused for them.
    async fn authenticate_handshake(
        &self,
        spec: Option<&CallSpec>,
        inbound: &Inbound,
        client: Option<SocketAddr>,
    ) -> Result<(), GatewayError> {
        crate::policy::one_credential::check(&inbound.headers, &self.credentials.0)?;
        let Some(spec) = spec else {
            return Ok(());
        };
        let Some(auth) = self.auth.get(spec.target.route) else {
            return Ok(());
        };
        let mut env = self.edge.envelope(
            inbound.clone(),
            spec.target.clone(),
            crate::envelope::Payload::Unary(bytes::Bytes::new()),
            client,
            std::time::Instant::now(),
        );
        auth.authenticate(&mut env).await
    }

    /// A refused handshake: the HTTP status of the error, its JSON body.
    pub fn refusal(&self, err: &GatewayError) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::full(self.status.to_vec(err)));
        *resp.status_mut() = err.http_status();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in err.http_headers() {
            resp.headers_mut().insert(name, value);
        }
        resp
    }

    /// Checks the handshake and works out the session: dialect, the call it
    /// opens (if any) and the metadata every call of it carries.
    fn accept(
        &self,
        req: &Request<super::request_body::RequestBody>,
        record: &Arc<CallRecord>,
    ) -> Result<(Dialect, Option<CallSpec>, Inbound), GatewayError> {
        let headers = req.headers();
        // RFC 6455 section 4.1: an upgrade needs HTTP/1.1; an HTTP/1.0
        // connection closes after its reply, so a 101 would lead nowhere.
        if req.version() < http::Version::HTTP_11 {
            return Err(GatewayError::invalid_field(
                "version",
                format!(
                    "a WebSocket handshake needs HTTP/1.1, not {:?}",
                    req.version()
                ),
            ));
        }
        if !has_token(headers, CONNECTION, "upgrade") {
            return Err(GatewayError::invalid_field(
                "connection",
                "a WebSocket handshake needs `Connection: Upgrade` beside `Upgrade: websocket` \
                 (a proxy in front may have dropped it: it must pass both)",
            ));
        }
        let Some(key) = headers.get(SEC_WEBSOCKET_KEY) else {
            return Err(GatewayError::invalid_field(
                "sec-websocket-key",
                "a WebSocket handshake needs Sec-WebSocket-Key",
            ));
        };
        if headers.get_all(SEC_WEBSOCKET_KEY).iter().any(|k| k != key) {
            return Err(GatewayError::invalid_field(
                "sec-websocket-key",
                "is given more than once with different values; a handshake has one (RFC 6455 section 4.2.1)",
            ));
        }
        // RFC 6455 section 4.2.1: the base64 of a 16-byte nonce.
        {
            use base64::Engine as _;
            let nonce = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
            if !nonce.is_ok_and(|n| n.len() == 16) {
                return Err(GatewayError::invalid_field(
                    "sec-websocket-key",
                    "is not the base64 of a 16-byte nonce (RFC 6455 section 4.2.1)",
                ));
            }
        }
        let version = headers
            .get(http::header::SEC_WEBSOCKET_VERSION)
            .and_then(|v| v.to_str().ok());
        if version != Some("13") {
            return Err(GatewayError::new(
                crate::error::ErrorKind::UnsupportedWebSocketVersion,
                crate::error::Origin::Client,
                format!(
                    "WebSocket version {} is not supported: only 13 (RFC 6455)",
                    version.unwrap_or("(none)")
                ),
            ));
        }
        if let Err(err) = self.check_origin(headers) {
            // Refused before the rest is read, but still the call of the
            // route the path names: its access-log switch and method hold.
            if let Some(spec) = self.resolve(req.uri().path(), None, None) {
                record.routed(&spec.target);
            }
            return Err(err);
        }
        let offered: Vec<String> = headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
            .collect();
        let dialect = Dialect::negotiate(offered.iter().map(String::as_str));

        let mut inbound = self.edge.inbound(headers, req.extensions());
        inbound.record = Some(record.clone());
        // Once for the session: every call goes through the edge with the
        // handshake's headers again, and would count each drop again.
        self.edge.drop_underscored_now(&mut inbound.headers);
        let path = req.uri().path();
        let mut query_pairs: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        self.edge
            .lift_websocket(&mut inbound, &offered, &mut query_pairs)?;
        // grpc-websocket-proxy clients name the binding's HTTP method in
        // ?method=; taken out however many times it is given, and refused
        // when two say different things.
        let mut named_method: Option<String> = None;
        let mut refused = None;
        query_pairs.retain(|(k, v)| {
            if k != "method" {
                return true;
            }
            match &named_method {
                Some(first) if !first.eq_ignore_ascii_case(v) => {
                    refused = Some(GatewayError::invalid_field(
                        "method",
                        format!(
                            "the query parameter is given more than once with different values ({first:?} and {v:?}); give the binding's HTTP method once"
                        ),
                    ));
                }
                Some(_) => {}
                None => named_method = Some(v.clone()),
            }
            false
        });
        if let Some(err) = refused {
            return Err(err);
        }
        let query = (!query_pairs.is_empty()).then(|| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            s.extend_pairs(query_pairs.iter());
            s.finish()
        });
        let spec = self.resolve(path, named_method.as_deref(), query);
        if let Some(spec) = &spec {
            record.routed(&spec.target);
        }
        match (&spec, dialect) {
            (None, Dialect::Json) => {}
            (None, _) => {
                // A path bound for other methods than ?method= names: the
                // same 404, saying which methods it has.
                let mut err = GatewayError::route_not_found(path);
                if let Some(method) = &named_method {
                    let lookup = http::Method::from_bytes(method.as_bytes()).ok();
                    if let Some(crate::routes::MatchOutcome::MethodNotAllowed(allowed)) =
                        lookup.map(|m| self.routes.find(&m, path))
                    {
                        let list: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
                        err.message = format!(
                            "no route for {method} {path}: the path is bound for {} (name one in ?method=)",
                            list.join(", ")
                        );
                    }
                }
                return Err(err);
            }
            _ => {}
        }
        Ok((dialect, spec, inbound))
    }

    /// Same-origin pages and non-browser clients (no Origin) are let in;
    /// other origins only when configured.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), GatewayError> {
        let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
            return Ok(());
        };
        let same = super::cors::is_own_origin(origin, headers, None);
        let listed = self
            .config
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
        if same || listed {
            Ok(())
        } else {
            Err(GatewayError::new(
                ErrorKind::OriginNotAllowed { origin: origin.to_owned() },
                Origin::Client,
                format!("WebSocket connections from {origin} are not allowed (websocket.allowed_origins)"),
            ))
        }
    }

    /// The method a path names: a REST binding (with the method named in
    /// `?method=`, else GET, else the only method the path has), or a gRPC path.
    fn resolve(&self, path: &str, named: Option<&str>, query: Option<String>) -> Option<CallSpec> {
        let try_method = |m: &Method| match self.routes.find(m, path) {
            MatchOutcome::Found(found) => Some(CallSpec {
                target: found.binding.target.clone(),
                binding: Some(found.binding.clone()),
                url: Some((
                    found.segments.iter().map(|s| s.to_string()).collect(),
                    query.clone(),
                )),
            }),
            _ => None,
        };
        if let Some(m) =
            named.and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        {
            return try_method(&m);
        }
        if let Some(spec) = try_method(&Method::GET) {
            return Some(spec);
        }
        if let MatchOutcome::MethodNotAllowed(allowed) = self.routes.find(&Method::GET, path) {
            if let [only] = allowed.as_slice() {
                return try_method(only);
            }
        }
        self.routes.call_target(path).map(|t| CallSpec {
            target: t.clone(),
            binding: None,
            url: None,
        })
    }
}
