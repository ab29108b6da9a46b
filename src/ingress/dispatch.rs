//! One port, every protocol: picks the adapter for a request from its
//! content type (gRPC and gRPC-Web by `application/grpc*`, Connect by its
//! content types, protocol-version header or GET query, everything else
//! REST), answers CORS preflights, refuses cross-origin requests no policy
//! allows, and adds CORS headers to replies. It detects; it does not match,
//! transcode or call backends.

use super::body::ResponseBody;
use super::connect::{ConnectIngress, Shape};
use super::cors;
use super::grpc::{Codec, Flavor, GrpcIngress};
use super::rest::RestIngress;
use super::websocket::{is_upgrade, WebSocketIngress};
use crate::error::{ErrorKind, GatewayError, Origin};
use crate::routes::RouteTable;
use http::header::{ACCESS_CONTROL_REQUEST_METHOD, CONTENT_TYPE, ORIGIN};
use http::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Ingress {
    pub routes: Arc<RouteTable>,
    pub rest: Arc<RestIngress>,
    pub grpc: Arc<GrpcIngress>,
    pub connect: Arc<ConnectIngress>,
    pub websocket: Arc<WebSocketIngress>,
    /// Static pages served at exact paths (the demo's chat page).
    pub pages: Arc<Vec<Page>>,
    /// `/mcp`, when a route offers its methods as MCP tools.
    pub mcp: Option<Arc<super::mcp::McpIngress>>,
    /// `/openapi.json` and `/docs`, unless `[openapi] serve = false`.
    pub api: Arc<crate::openapi::ApiDescription>,
    /// The request limits the edge checks before any adapter.
    pub limits: crate::config::Limits,
}

/// A static page: served for `GET path`.
#[derive(Debug, Clone)]
pub struct Page {
    pub path: String,
    pub content_type: &'static str,
    pub body: bytes::Bytes,
}

impl Ingress {
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
    ) -> Response<ResponseBody> {
        // The framing is judged on what the client sent, before the gateway
        // adds a header of its own.
        let mut framing = super::edge::framing::check(&req, &self.limits);
        // HTTP/2 names the host in the `:authority` pseudo-header: it becomes
        // `Host` here, so every protocol presents its host the same way (to
        // the forwarding headers, the cache key, the policies). An HTTP/1.1
        // request in absolute form names it in its target, which wins over
        // a `Host` field (RFC 9112 section 3.2.2); an HTTP/2 request whose
        // `Host` names another host than its `:authority` is malformed (RFC
        // 9113 section 8.3.1).
        if let Some(authority) = req
            .uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        {
            let default_port = if req.uri().scheme_str() == Some("https") {
                &b":443"[..]
            } else {
                &b":80"[..]
            };
            match req.headers().get(http::header::HOST) {
                Some(host) if same_host(host.as_bytes(), authority.as_bytes(), default_port) => {
                    // The same host, as the authority spells it.
                    req.headers_mut().insert(http::header::HOST, authority);
                }
                Some(host) if req.version() >= http::Version::HTTP_2 => {
                    let err = GatewayError::invalid_field(
                        "host",
                        format!(
                            "Host {:?} names another host than the request's :authority {:?}",
                            String::from_utf8_lossy(host.as_bytes()),
                            String::from_utf8_lossy(authority.as_bytes())
                        ),
                    );
                    framing = framing.and(Err(err));
                }
                _ => {
                    req.headers_mut().insert(http::header::HOST, authority);
                }
            }
        }
        // An absolute-form target names an `http` or `https` resource, or
        // nothing this gateway serves.
        if let Some(scheme) = req.uri().scheme_str() {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                let err = GatewayError::invalid_field(
                    "path",
                    format!("the request target's scheme {scheme:?} is not http or https"),
                );
                framing = framing.and(Err(err));
            }
        }
        framing = framing.and_then(|()| crate::headers::check_host(req.headers()));
        super::edge::drop_connection_named(req.headers_mut());
        // Every request has an id from here on, whatever becomes of it: the
        // policies and the backend see it as a header, the client gets it back.
        let request_id = super::edge::request_id::assign(req.headers_mut());
        let head = req.method() == Method::HEAD;
        // `portico::access=debug` logs every request as it is answered, on
        // every protocol; read only when asked for (a clock read and two
        // clones a call otherwise), and boxed: the request's future is
        // moved whole, so it stays only a pointer larger.
        let answered =
            tracing::enabled!(target: "portico::access", tracing::Level::DEBUG).then(|| {
                Box::new((
                    req.method().clone(),
                    req.uri().clone(),
                    std::time::Instant::now(),
                ))
            });
        // Every log line about the request, from any layer, carries its id.
        let mut resp = crate::observe::request_scope::scope(request_id.clone(), async move {
            let resp = self.dispatch(req, client, framing).await;
            if let Some(answered) = answered {
                let (method, uri, started) = *answered;
                tracing::debug!(target: "portico::access", %method, path = uri.path(), status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request answered");
            }
            resp
        })
        .await;
        resp.headers_mut()
            .insert(super::edge::request_id::HEADER, request_id);
        // A HEAD answer has no content (RFC 9110 section 9.3.2), refusals
        // included: HTTP/1.1's writer leaves it out, HTTP/2's would send it.
        if head {
            resp = without_body(resp);
        }
        resp
    }

    /// Every adapter's future is boxed: a future is as large as its
    /// largest state, and hyper moves every request's future whole (into
    /// the stream's task, and again as it is polled). Unboxed, a request's
    /// future was 8 KiB, and moving it was a tenth of gRPC passthrough's
    /// CPU; one allocation per request costs less (BENCHMARKS.md).
    async fn dispatch(
        self: Arc<Self>,
        mut req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
        framing: Result<(), GatewayError>,
    ) -> Response<ResponseBody> {
        if let Err(err) = framing {
            let mut resp = self.refuse(&req, &err);
            // The framing cannot be trusted, or the request broke a limit:
            // nothing more is read from it. A compressed body is only a
            // body the gateway does not take: read past, the connection
            // serves the client's next request.
            let read_past = matches!(err.kind, ErrorKind::UnsupportedEncoding)
                && !super::edge::framing::leaves_framing_unsound(&req);
            if req.version() < http::Version::HTTP_2 && !read_past {
                req.body_mut().close_unread();
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            return resp;
        }
        // Every protocol matches the normalized path (see edge::path).
        match super::edge::path::normalize(req.uri().path()) {
            Ok(std::borrow::Cow::Borrowed(_)) => {}
            Ok(std::borrow::Cow::Owned(path)) => match with_path(req.uri(), &path) {
                Some(uri) => *req.uri_mut() = uri,
                None => {
                    let err = if req.method() == Method::CONNECT {
                        // Its target is a host and port, not a path.
                        GatewayError::invalid_field(
                            "method",
                            format!(
                                "CONNECT {} asks for a tunnel, and the gateway is no forward proxy",
                                req.uri()
                            ),
                        )
                    } else {
                        GatewayError::invalid_field(
                            "path",
                            format!("{:?} is not a valid request path", req.uri().to_string()),
                        )
                    };
                    return self.refuse(&req, &err);
                }
            },
            Err(err) => return self.refuse(&req, &err),
        }
        // Read once, here: the query check needs to know a Connect GET.
        let mut protocol = Protocol::of(&req);
        let mut connect_get = protocol == Protocol::Connect(super::connect::Shape::UnaryGet);
        if connect_get && self.rest_serves_get(req.uri().path()) {
            // A REST API may have a `connect` parameter of its own: its
            // bindings keep their paths, the query is theirs.
            protocol = Protocol::Rest;
            connect_get = false;
        }
        if let Err(err) =
            super::edge::path::check_query(req.uri().query().unwrap_or_default(), connect_get)
        {
            return self.refuse_call(&req, &err, protocol, client);
        }
        // Before anything reads it: the cross-origin checks, every
        // protocol's (`POST /mcp` answers two origins itself, with the
        // JSON-RPC request's id).
        let at_mcp = self.mcp.is_some() && req.uri().path() == super::mcp::PATH;
        if !(at_mcp && req.method() == Method::POST) {
            if let Err(err) = crate::headers::check_one_value(req.headers(), ORIGIN) {
                return self.refuse_call(&req, &err, protocol, client);
            }
        }
        let origin = req
            .headers()
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(origin) = &origin {
            if req.method() == Method::OPTIONS {
                if let Some(requested) = req.headers().get(ACCESS_CONTROL_REQUEST_METHOD) {
                    let requested =
                        Method::from_bytes(requested.as_bytes()).unwrap_or(Method::POST);
                    let own = same_origin(origin, &req);
                    return self.preflight(&requested, req.uri().path(), origin, own);
                }
            }
        }
        // A cross-site page's request that needs no preflight (a GET, a form
        // or text/plain POST) would still run: it is refused before any
        // adapter unless the route's policy allows the origin. WebSocket
        // and MCP apply their own origin rules.
        if let Some(origin) = &origin {
            let own_rules = is_upgrade(&req) || at_mcp;
            if !own_rules && !same_origin(origin, &req) {
                let allowed = self
                    .cors_policy(req.method(), req.uri().path())
                    .is_some_and(|p| p.allows_origin(origin));
                if !allowed {
                    let err = origin_refused(origin, req.uri().path());
                    return self.refuse_call(&req, &err, protocol, client);
                }
            }
        }
        // The gateway's own pages answer HEAD as GET (`handle` leaves its
        // body out, as for every HEAD).
        let head = req.method() == Method::HEAD;
        if (req.method() == Method::GET || head) && !self.pages.is_empty() {
            if let Some(page) = self.pages.iter().find(|p| p.path == req.uri().path()) {
                let mut resp = Response::new(ResponseBody::full(page.body.clone()));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    http::HeaderValue::from_static(page.content_type),
                );
                return resp;
            }
        }
        if (req.method() == Method::GET || head)
            && self.api.served()
            && is_api_page(req.uri().path())
        {
            if let Some(resp) = Box::pin(self.api_page(req.uri().path())).await {
                return resp;
            }
        }
        if let Some(mcp) = &self.mcp {
            if req.uri().path() == super::mcp::PATH {
                return Box::pin(mcp.clone().handle(req, client)).await;
            }
        }
        // Checked for every call (MCP checks them itself, once it has read
        // the body's JSON-RPC id); pages and API docs need no metadata.
        if let Err(err) = crate::headers::check_values(req.headers()) {
            return self.refuse_call(&req, &err, protocol, client);
        }
        if protocol == Protocol::WebSocket {
            return Box::pin(self.websocket.clone().handle(req, client)).await;
        }
        // Only a cross-origin request pays for remembering its route.
        let cors_key = origin
            .as_ref()
            .map(|_| (req.method().clone(), req.uri().path().to_owned()));
        let mut resp = match protocol {
            Protocol::Grpc(flavor, codec) => {
                Box::pin(self.grpc.clone().handle(req, client, (flavor, codec))).await
            }
            Protocol::Connect(shape) => {
                Box::pin(self.connect.clone().handle(req, client, shape)).await
            }
            Protocol::Rest | Protocol::WebSocket => {
                Box::pin(self.rest.clone().handle(req, client)).await
            }
        };
        if let (Some(origin), Some((method, path))) = (origin, cors_key) {
            if let Some(policy) = self.cors_policy(&method, &path) {
                cors::decorate(policy, &origin, resp.headers_mut());
            }
        }
        resp
    }

    /// A request refused before any adapter took it, answered in its
    /// protocol's error format.
    fn refuse(
        &self,
        req: &Request<super::request_body::RequestBody>,
        err: &GatewayError,
    ) -> Response<ResponseBody> {
        self.refuse_detected(req, err, Protocol::of(req))
    }

    /// [`Self::refuse`] of a request whose protocol was decided already
    /// (a `GET` with `connect=v1` on a REST path is REST's).
    fn refuse_detected(
        &self,
        req: &Request<super::request_body::RequestBody>,
        err: &GatewayError,
        protocol: Protocol,
    ) -> Response<ResponseBody> {
        if let Some(mcp) = &self.mcp {
            if req.uri().path() == super::mcp::PATH && !is_upgrade(req) {
                tracing::info!(target: "portico::access", method = %req.method(), path = req.uri().path(), error = err.message.as_str(), "request refused");
                let mut resp = mcp.refusal(err);
                if let Some(origin) = sole_origin(req) {
                    if let Some(policy) = mcp.cors_policy(origin) {
                        cors::decorate(&policy, origin, resp.headers_mut());
                    }
                }
                return resp;
            }
        }
        self.refuse_as(req, err, protocol)
    }

    /// [`Self::refuse_detected`] of a call: a refusal made once the
    /// request's protocol is known (a malformed query, two origins, a
    /// foreign origin, a malformed header the gateway reads) has its
    /// access-log line and span, as an adapter's own refusals do (a
    /// WebSocket handshake's is its session's line).
    fn refuse_call(
        &self,
        req: &Request<super::request_body::RequestBody>,
        err: &GatewayError,
        protocol: Protocol,
        client: Option<SocketAddr>,
    ) -> Response<ResponseBody> {
        use crate::observe::call_record::ClientProtocol;
        let resp = self.refuse_detected(req, err, protocol);
        let (method, path, headers) = (req.method(), req.uri().path(), req.headers());
        let edge = &self.rest.edge;
        let at_mcp = self.mcp.is_some() && path == super::mcp::PATH && !is_upgrade(req);
        let record = match protocol {
            _ if at_mcp => edge.record(ClientProtocol::Mcp, method, path, headers, client),
            Protocol::WebSocket => {
                let record = edge.session_record(method, path, headers);
                record.client(edge.client_of(headers, client));
                record
            }
            Protocol::Grpc(Flavor::Grpc, _) => {
                edge.record(ClientProtocol::Grpc, method, path, headers, client)
            }
            Protocol::Grpc(Flavor::Web { .. }, _) => {
                edge.record(ClientProtocol::GrpcWeb, method, path, headers, client)
            }
            Protocol::Connect(_) => {
                edge.record(ClientProtocol::Connect, method, path, headers, client)
            }
            Protocol::Rest => edge.record(ClientProtocol::Rest, method, path, headers, client),
        };
        record.failed_finally(err);
        record.http_status(resp.status());
        resp
    }

    /// [`Self::refuse`], answered as `protocol` answers.
    fn refuse_as(
        &self,
        req: &Request<super::request_body::RequestBody>,
        err: &GatewayError,
        protocol: Protocol,
    ) -> Response<ResponseBody> {
        // The line carries the request id like every line about the request.
        tracing::info!(target: "portico::access", method = %req.method(), path = req.uri().path(), error = err.message.as_str(), "request refused");
        let mut resp = match protocol {
            Protocol::WebSocket => self.websocket.refusal(err),
            Protocol::Grpc(flavor, _) => super::grpc::trailers_only(flavor, err),
            Protocol::Connect(shape) => self.connect.error_response(shape, err),
            Protocol::Rest => self.rest.error_response(err),
        };
        // A page of an origin the route allows reads why it was refused
        // (a limit, a malformed header), as it reads any other error; an
        // origin it does not allow gets nothing from `decorate`.
        if let Some(origin) = sole_origin(req) {
            if let Some(policy) = self.cors_policy(req.method(), req.uri().path()) {
                cors::decorate(policy, origin, resp.headers_mut());
            }
        }
        resp
    }

    /// The OpenAPI description or a file of its docs page.
    async fn api_page(&self, path: &str) -> Option<Response<ResponseBody>> {
        let (content_type, body) = if path == "/openapi.json" {
            ("application/json", self.api.json_async().await)
        } else if path == "/docs" || path.starts_with("/docs/") {
            crate::openapi::docs::file(path)?
        } else {
            return None;
        };
        let mut resp = Response::new(ResponseBody::full(body));
        resp.headers_mut()
            .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        Some(resp)
    }

    /// Whether a REST binding or an aggregate answers `GET path`.
    fn rest_serves_get(&self, path: &str) -> bool {
        // A custom HEAD rule answers HEAD there too (a GET may not).
        [Method::GET, Method::HEAD].iter().any(|m| {
            matches!(
                self.routes.find_request(m, path).0,
                crate::routes::MatchOutcome::Found(_)
            )
        }) || matches!(
            self.rest.aggregates.find(&Method::GET, path),
            crate::routes::aggregate::AggregateMatch::Found(..)
        )
    }

    /// The cross-origin policy of what `method path` reaches: its route's,
    /// or for an aggregate the `[cors]` one.
    fn cors_policy(&self, method: &Method, path: &str) -> Option<&Arc<crate::config::CorsPolicy>> {
        // The gateway's own pages belong to no route, whatever binding
        // they hide there.
        let reads = *method == Method::GET || *method == Method::HEAD;
        if reads
            && ((self.api.served() && crate::openapi::docs::is_page(path))
                || self.pages.iter().any(|p| p.path == path))
        {
            return None;
        }
        self.routes
            .cors_for(method, path)
            .or_else(|| self.rest.aggregates.cors_for(path))
    }

    /// Answers a preflight by the policy of what it asks for; the
    /// gateway's own origin (`own`) needs no policy, as its requests do not.
    fn preflight(
        &self,
        requested: &Method,
        path: &str,
        origin: &str,
        own: bool,
    ) -> Response<ResponseBody> {
        // `/mcp` takes only POST; other paths, every method a binding may use.
        let (policy, methods) = match &self.mcp {
            Some(mcp) if path == super::mcp::PATH => (mcp.cors_policy(origin), "POST"),
            _ => (
                self.cors_policy(requested, path).cloned(),
                "GET, POST, PUT, PATCH, DELETE",
            ),
        };
        let answer = policy
            .and_then(|p| cors::preflight(&p, origin, methods))
            .or_else(|| own.then(|| cors::own_origin_preflight(origin, methods)));
        match answer {
            Some(headers) => {
                let mut resp = Response::new(ResponseBody::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                *resp.headers_mut() = headers;
                resp
            }
            None => {
                let err = origin_refused(origin, path);
                tracing::info!(target: "portico::access", path, origin, "CORS preflight refused");
                self.rest.error_response(&err)
            }
        }
    }
}

fn origin_refused(origin: &str, path: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::OriginNotAllowed {
            origin: origin.to_owned(),
        },
        Origin::Client,
        format!("cross-origin requests from {origin} are not allowed on {path}"),
    )
}

/// The request's `Origin`, when it names one (the same one twice is that
/// one; two different ones are a refusal of their own, which no origin's
/// page is told about).
fn sole_origin<B>(req: &Request<B>) -> Option<&str> {
    let mut all = req.headers().get_all(ORIGIN).iter();
    let first = all.next()?;
    all.all(|other| other == first)
        .then(|| first.to_str().ok())
        .flatten()
}

/// Whether a request's `Origin` is the gateway's own
/// ([`super::cors::is_own_origin`]).
fn same_origin<B>(origin: &str, req: &Request<B>) -> bool {
    let authority = req.uri().authority().map(|a| a.as_str());
    super::cors::is_own_origin(origin, req.headers(), authority)
}

/// The bindings a path the gateway answers itself hides, as warnings: a
/// GET or HEAD of the API description or its docs page (while served), any
/// method on `/mcp` (while it is served).
pub fn shadowed_bindings(
    routes: &crate::routes::RouteTable,
    aggregates: &crate::routes::aggregate::AggregateTable,
    api_pages: bool,
    mcp: bool,
) -> Vec<String> {
    let bindings = routes.bindings().iter().filter_map(|b| {
        let what = shadowed_by(b, api_pages, mcp)?;
        Some(format!(
            "the binding {} {} -> {} is never reached: {what}",
            b.method, b.template_text, b.target.path
        ))
    });
    let plans = aggregates.plans().iter().filter_map(|p| {
        let what = shadowed_at(&p.config.method, &p.config.path, api_pages, mcp)?;
        Some(format!(
            "the aggregate {} {} is never reached: {what}",
            p.config.method, p.config.path
        ))
    });
    bindings.chain(plans).collect()
}

/// What the gateway answers itself in a binding's place, if anything:
/// `/mcp` while it serves MCP (any method), the API description and its
/// docs page while they are served (a GET or HEAD).
pub fn shadowed_by(
    binding: &crate::routes::Binding,
    api_pages: bool,
    mcp: bool,
) -> Option<&'static str> {
    shadowed_at(&binding.method, &binding.template_text, api_pages, mcp)
}

/// [`shadowed_by`] for what answers `method template` (a binding or an
/// aggregate).
pub fn shadowed_at(
    method: &Method,
    template: &str,
    api_pages: bool,
    mcp: bool,
) -> Option<&'static str> {
    if mcp && template == super::mcp::PATH {
        Some("/mcp is the MCP endpoint while a route has `mcp = true`")
    } else if api_pages
        && (*method == Method::GET || *method == Method::HEAD)
        && crate::openapi::docs::is_page(template)
    {
        Some("the gateway serves its API description and docs page there (`[openapi] serve = false` frees the path)")
    } else {
        None
    }
}

/// Whether `path` is the OpenAPI description or a file of its docs page.
fn is_api_page(path: &str) -> bool {
    path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/")
}

/// `uri` with another path, its query kept.
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Which adapter a request is for, from what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    WebSocket,
    Grpc(Flavor, Codec),
    Connect(Shape),
    Rest,
}

impl Protocol {
    fn of<B>(req: &Request<B>) -> Protocol {
        if is_upgrade(req) {
            return Protocol::WebSocket;
        }
        let flavor = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Flavor::of);
        match flavor {
            Some((flavor, codec)) => Protocol::Grpc(flavor, codec),
            None => match Shape::of(req.method(), req.headers(), req.uri().query()) {
                Some(shape) => Protocol::Connect(shape),
                None => Protocol::Rest,
            },
        }
    }
}

/// Whether two authorities name one host (RFC 3986 section 6.2.3): the
/// same letters in any case, a scheme's default port written or not.
fn same_host(a: &[u8], b: &[u8], default_port: &[u8]) -> bool {
    let bare = |v: &[u8]| -> Vec<u8> {
        let v = v.to_ascii_lowercase();
        match v.strip_suffix(default_port) {
            Some(rest) => rest.to_vec(),
            None => v,
        }
    };
    a.eq_ignore_ascii_case(b) || bare(a) == bare(b)
}

/// A HEAD request's answer: the GET's status and headers, its length when
/// known, no body. (hyper leaves the body out on HTTP/1.1 itself, not on
/// HTTP/2.)
fn without_body(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    use http_body::Body as _;
    let (mut parts, body) = resp.into_parts();
    // An answer already without its body keeps the length it said; a 204
    // or 1xx has none to say (RFC 9110 section 8.6).
    let no_content =
        parts.status == http::StatusCode::NO_CONTENT || parts.status.is_informational();
    if let Some(len) = body.size_hint().exact().filter(|_| !no_content) {
        if len > 0 || !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        }
    }
    Response::from_parts(parts, ResponseBody::empty())
}
