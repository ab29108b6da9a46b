//! JSON/HTTP egress: calls a backend that speaks JSON over HTTP/1.1 for a
//! method, building the request from the method's google.api.http binding
//! (reverse transcoding) and parsing the JSON reply into its response
//! message. Connections are pooled per endpoint; the upstream picks the endpoint.
//!
//! A non-2xx reply becomes the gRPC status of the inverse of the standard
//! mapping (404 NOT_FOUND, 409 ALREADY_EXISTS, 503 UNAVAILABLE...), with the
//! reply's `message` (or `error.message`) as the status message.

use super::upstream::endpoint::Endpoint;
use super::upstream::AttemptError;
use crate::config::{Limits, UpstreamConfig, UpstreamProtocol};
use crate::envelope::{Envelope, Payload, Reply};
use crate::error::{BackendStatus, ErrorKind, GatewayError, Origin};
use crate::headers::is_framing;
use crate::routes::Binding;
use crate::transcode::outbound;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Code;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The most bytes of a reply's status line and headers, as HTTP/2's header
/// list limit toward gRPC backends: a larger head is a bad reply (502),
/// not an unavailable backend to retry, nor headers to hand to clients.
const MAX_REPLY_HEAD_BYTES: usize = 256 * 1024;

/// The most of an error reply's body read for its message: a larger error
/// page still maps to its status (and its retry), and its message is the
/// status line.
const MAX_ERROR_BODY_BYTES: usize = 1024 * 1024;

/// Request headers a JSON backend never gets: conditional and range
/// requests, whose `304` or `206` has no place in a gRPC reply, and
/// `expect`, which is the gateway's business with the connection.
const NOT_FOR_JSON_BACKENDS: [http::HeaderName; 7] = [
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
    http::header::RANGE,
    http::header::EXPECT,
];

#[derive(Clone)]
pub struct HttpEgress {
    /// A pooled client per upstream, by upstream index (`None` for gRPC
    /// upstreams): each has its own TLS settings, client certificate
    /// included.
    clients: Arc<Vec<Option<HttpClient>>>,
    /// `http` or `https`, by upstream index.
    schemes: Arc<Vec<&'static str>>,
    /// Whether each call to the upstream has a connection of its own
    /// (`reuse_connections = false`), by upstream index.
    one_call_each: Arc<Vec<bool>>,
    /// The `Host` every call to an upstream carries when it is not the
    /// endpoint's address (a `dns` upstream's name and port), by upstream
    /// index.
    hosts: Arc<Vec<Option<HeaderValue>>>,
    /// The binding that says how to call each method, by its gRPC path.
    bindings: Arc<HashMap<String, Arc<Binding>>>,
    max_body: usize,
    /// `server.limits.upstream_header_timeout`: the wait for the reply's
    /// status and headers.
    header_timeout: std::time::Duration,
    /// `server.limits.stream_idle_timeout`: the most time between two
    /// pieces of the reply's body.
    idle_timeout: std::time::Duration,
    /// The reply headers dropped as gRPC cannot carry them, by name, once
    /// warned of: a backend that sends one on every reply is warned of
    /// once, not on every call.
    dropped: Arc<std::sync::Mutex<std::collections::HashSet<http::HeaderName>>>,
}

/// The most header names [`HttpEgress::dropped`] remembers; past it, drops
/// are logged at debug level only.
const MAX_DROPPED_NAMES: usize = 256;

impl HttpEgress {
    pub fn new(
        upstreams: &[UpstreamConfig],
        bindings: HashMap<String, Arc<Binding>>,
        limits: &Limits,
    ) -> Result<HttpEgress, String> {
        let mut clients = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            clients.push(if u.protocol == UpstreamProtocol::Http {
                let connector = super::tls::upstream_connector(
                    u.tls.as_ref(),
                    u.connect_timeout,
                    u.tls_server_name(),
                )
                .map_err(|e| format!("upstreams.{}: TLS: {e}", u.name))?;
                let mut builder = Client::builder(TokioExecutor::new());
                builder.http1_max_buf_size(MAX_REPLY_HEAD_BYTES);
                if !u.reuse_connections {
                    builder.pool_max_idle_per_host(0);
                }
                Some(builder.build(connector))
            } else {
                None
            });
        }
        Ok(HttpEgress {
            clients: Arc::new(clients),
            schemes: Arc::new(
                upstreams
                    .iter()
                    .map(|u| if u.tls.is_some() { "https" } else { "http" })
                    .collect(),
            ),
            one_call_each: Arc::new(upstreams.iter().map(|u| !u.reuse_connections).collect()),
            hosts: Arc::new(
                upstreams
                    .iter()
                    .map(|u| u.authority().and_then(|a| HeaderValue::from_str(&a).ok()))
                    .collect(),
            ),
            bindings: Arc::new(bindings),
            max_body: limits.max_grpc_message_bytes,
            header_timeout: limits.upstream_header_timeout,
            idle_timeout: limits.stream_idle_timeout,
            dropped: Arc::default(),
        })
    }

    /// One attempt of a call on one endpoint.
    pub async fn attempt(&self, ep: Arc<Endpoint>, env: Envelope) -> Result<Reply, AttemptError> {
        self.exchange(&ep.address, env).await
    }

    async fn exchange(&self, endpoint: &str, env: Envelope) -> Result<Reply, AttemptError> {
        let fail = |e: GatewayError| AttemptError::from_error(e, false);
        let binding = self
            .bindings
            .get(env.target.path.as_str())
            .ok_or_else(|| fail(GatewayError::internal("no HTTP mapping for the method")))?;
        let Payload::Unary(message) = env.payload else {
            return Err(fail(GatewayError::internal(
                "http upstreams serve unary methods only",
            )));
        };
        let out = outbound::request(binding, &message).map_err(fail)?;
        let client = self
            .clients
            .get(env.target.upstream.0)
            .and_then(Option::as_ref)
            .ok_or_else(|| fail(GatewayError::internal("no HTTP client for the upstream")))?;
        let scheme = self
            .schemes
            .get(env.target.upstream.0)
            .copied()
            .unwrap_or("http");
        let mut req = Request::builder()
            .method(out.method)
            .uri(format!("{scheme}://{endpoint}{}", out.path_and_query));
        if let Some(headers) = req.headers_mut() {
            for (name, value) in &env.metadata {
                if !is_framing(name)
                    && !name.as_str().ends_with("-bin")
                    && !NOT_FOR_JSON_BACKENDS.contains(name)
                {
                    headers.append(name.clone(), value.clone());
                }
            }
            // The gateway reads replies as they are: a backend must not
            // compress one (a request without this header accepts any
            // coding, RFC 9110 section 12.5.3).
            headers.insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            let named = self.hosts.get(env.target.upstream.0).cloned().flatten();
            if let Some(host) = named.or_else(|| HeaderValue::from_str(endpoint).ok()) {
                headers.insert(HOST, host);
            }
            headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static(if binding.raw_response_body {
                    "*/*"
                } else {
                    "application/json"
                }),
            );
            if out.body.is_some() {
                let named = out
                    .raw_content_type
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok());
                headers.insert(
                    CONTENT_TYPE,
                    named.unwrap_or(HeaderValue::from_static(out.content_type)),
                );
            }
        }
        let mut req = req
            .body(Full::new(out.body.map(Bytes::from).unwrap_or_default()))
            .map_err(|e| {
                fail(GatewayError::internal(format!(
                    "could not build the upstream request: {e}"
                )))
            })?;
        // A reply to HEAD never has a body, whatever a broken backend
        // writes after it: the connection ends with it, decided before
        // it is sent (see the poisoning below for 204 and 304). So does
        // every call to an upstream whose connections carry one call.
        let one_call = self
            .one_call_each
            .get(env.target.upstream.0)
            .copied()
            .unwrap_or(false);
        if one_call || req.method() == http::Method::HEAD {
            req.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let connection = hyper_util::client::legacy::connect::capture_connection(&mut req);
        let (header_timeout, idle_timeout) = (self.header_timeout, self.idle_timeout);
        let exchange = async {
            // A backend that takes the request and never answers is cut off,
            // as a gRPC one is.
            let resp = tokio::time::timeout(header_timeout, client.request(req))
                .await
                .map_err(|_| {
                    fail(GatewayError::upstream_timeout(
                        crate::config::UPSTREAM_HEADER_TIMEOUT,
                        header_timeout,
                    ))
                })?
                .map_err(|e| {
                    // A reply that came but cannot be read (its head over
                    // the bound, or malformed) is the backend's bad
                    // reply, not a backend to try again.
                    if let Some(parse) = parse_error(&e) {
                        let message = if parse.is_parse_too_large() {
                            format!(
                                "the backend's reply headers are over {} KiB or 100 fields",
                                MAX_REPLY_HEAD_BYTES / 1024
                            )
                        } else {
                            format!("the backend's reply could not be read: {parse}")
                        };
                        return fail(GatewayError::new(
                            ErrorKind::BadBackendReply,
                            Origin::Backend,
                            message,
                        ));
                    }
                    // A connect failure never reached the backend; anything
                    // later may have.
                    let unreached = e.is_connect();
                    AttemptError::from_error(
                        GatewayError::new(
                            ErrorKind::BackendUnavailable,
                            Origin::Backend,
                            format!("backend unavailable: {}", crate::error::with_causes(&e)),
                        ),
                        unreached,
                    )
                })?;
            let (parts, body) = resp.into_parts();
            // A 204 or 304 ends at its headers, whatever a broken backend
            // writes after them: bytes it did write would be read as the
            // reply to the next call on the connection, another client's.
            // So the connection is not reused by any call that asks for one
            // from now on. The pool hands a connection back before the
            // reply reaches this code, so a call already waiting for one at
            // that instant may still get it (a HEAD's `connection: close`
            // has no such gap).
            if matches!(parts.status.as_u16(), 204 | 304) {
                if let Some(connected) = connection.connection_metadata().as_ref() {
                    connected.poison();
                }
            }
            // Before its body is read: bytes the gateway cannot read, an
            // error page's included (its message would be the encoded
            // bytes).
            let encoded = parts
                .headers
                .get_all(http::header::CONTENT_ENCODING)
                .iter()
                .flat_map(|v| v.to_str().unwrap_or("?").split(','))
                .map(str::trim)
                .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
                .map(str::to_owned);
            if let Some(coding) = encoded {
                return Err(fail(GatewayError::new(
                    ErrorKind::BadBackendReply,
                    Origin::Backend,
                    format!(
                        "the backend's reply is encoded with {coding}, though the gateway asked for identity (accept-encoding); it reads only unencoded replies"
                    ),
                )));
            }
            // Counted as HTTP/2 counts a header list (name, value and 32
            // bytes a field), so the bound is the gRPC backends' one.
            if crate::headers::header_list_bytes(&parts.headers) > MAX_REPLY_HEAD_BYTES {
                return Err(fail(GatewayError::new(
                    ErrorKind::BadBackendReply,
                    Origin::Backend,
                    format!(
                        "the backend's reply headers are over {} KiB",
                        MAX_REPLY_HEAD_BYTES / 1024
                    ),
                )));
            }
            let error_reply = !parts.status.is_success();
            let max_body = if error_reply {
                self.max_body.min(MAX_ERROR_BODY_BYTES)
            } else {
                self.max_body
            };
            let unreadable = |e: Box<dyn std::error::Error + Send + Sync>| {
                let message = if e.is::<http_body_util::LengthLimitError>() {
                    format!(
                        "the backend's reply is over server.limits.max_grpc_message_bytes ({max_body} bytes)"
                    )
                } else {
                    format!(
                        "could not read the backend's reply: {}",
                        crate::error::with_causes(&*e)
                    )
                };
                fail(GatewayError::new(
                    ErrorKind::BadBackendReply,
                    Origin::Backend,
                    message,
                ))
            };
            // Read piece by piece: a body that stalls longer than the idle
            // timeout between two pieces ends the call.
            let mut body = std::pin::pin!(http_body_util::Limited::new(body, max_body));
            let mut read = bytes::BytesMut::new();
            loop {
                let frame = tokio::time::timeout(idle_timeout, body.frame())
                    .await
                    .map_err(|_| {
                        fail(GatewayError::upstream_timeout(
                            crate::config::STREAM_IDLE_TIMEOUT,
                            idle_timeout,
                        ))
                    })?;
                match frame {
                    None => break,
                    // An error page over its bound, or one cut short: the
                    // status says it all (a 503 is unavailable however its
                    // page ends).
                    Some(Err(_)) if error_reply => {
                        read.clear();
                        break;
                    }
                    Some(frame) => {
                        if let Ok(data) = frame.map_err(unreadable)?.into_data() {
                            read.extend_from_slice(&data);
                        }
                    }
                }
            }
            Ok::<_, AttemptError>((parts, read.freeze()))
        };
        let (parts, body) = match env.timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| fail(GatewayError::deadline_exceeded()))??,
            None => exchange.await?,
        };
        // The backend's `Vary` is kept: the cache keys on what it names (and
        // never stores `Vary: *`), as for a gRPC backend's metadata. Its CORS
        // answer is not: CORS is the gateway's policy.
        let mut metadata = HeaderMap::new();
        // What the reply's `Connection` names is for the hop between the
        // backend and the gateway alone (RFC 9110 section 7.6.1).
        let hop_only = crate::headers::connection_named(&parts.headers);
        for (name, value) in &parts.headers {
            if is_framing(name)
                || name.as_str() == "access-control-allow-origin"
                || hop_only.contains(name)
            {
                continue;
            }
            // A field gRPC metadata cannot carry would fail a gRPC client's
            // call that the backend answered: it reaches no client, on any
            // protocol.
            let carried = crate::headers::is_grpc_key(name)
                && if name.as_str().ends_with("-bin") {
                    crate::headers::is_binary_value(value)
                } else {
                    crate::headers::is_grpc_ascii(value.as_bytes())
                };
            if !carried {
                let first = self.dropped.lock().is_ok_and(|mut seen| {
                    seen.len() < MAX_DROPPED_NAMES && seen.insert(name.clone())
                });
                if first {
                    tracing::warn!(
                        header = %name,
                        "a reply header of the JSON backend is not one gRPC metadata can carry (a name of lowercase letters, digits, `_`, `-` and `.`; a printable ASCII value, base64 for a -bin name); it is dropped, now and on later replies (this is said once per header name)"
                    );
                } else {
                    tracing::debug!(header = %name, "a JSON backend's reply header gRPC cannot carry is dropped");
                }
                continue;
            }
            metadata.append(name.clone(), value.clone());
        }
        if !parts.status.is_success() {
            // A redirect is not followed, and not passed on: the client gets
            // an error, and a Location beside it would read as the way on.
            let redirect = parts.status.is_redirection();
            if redirect {
                metadata.remove(http::header::LOCATION);
            }
            let message = if redirect {
                format!("backend replied {}", parts.status)
            } else {
                error_message(parts.status, &body)
            };
            let error = GatewayError::new(
                ErrorKind::Backend(Box::new(BackendStatus {
                    code: grpc_code_of_http(parts.status),
                    details: Bytes::new(),
                    // Its headers reach the client as a gRPC backend's
                    // error metadata does (a Retry-After it set).
                    metadata: metadata.clone(),
                })),
                Origin::Backend,
                message,
            );
            return Err(AttemptError {
                error,
                unreached: false,
                endpoint_fault: parts.status.is_server_error(),
            });
        }
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|c| c.to_str().ok());
        let encoded = outbound::response(binding, &body, content_type).map_err(fail)?;
        Ok(Reply::single(metadata, encoded.into()))
    }
}

/// The inverse of the gRPC -> HTTP mapping, for REST backends' statuses.
pub fn grpc_code_of_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        502 | 503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        s if (400..500).contains(&s) => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

/// The most of an HTTP backend's error message the gateway passes on: a
/// status message, not a document (it becomes gRPC's `grpc-message`
/// header, and a log line).
const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// The message of an error reply: its JSON `message` or `error.message`
/// (cut to 1 KiB), else its text, else the status line.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for m in [&v["message"], &v["error"]["message"], &v["error"]] {
            if let Some(s) = m.as_str() {
                // A message that says nothing: the status line does.
                if s.trim().is_empty() {
                    return format!("backend replied {status}");
                }
                return crate::error::shortened(s, MAX_ERROR_MESSAGE_BYTES).into_owned();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.len() > 512 {
        format!("backend replied {status}")
    } else {
        text.to_owned()
    }
}

/// The hyper error under a client error when the reply's head could not be
/// parsed.
fn parse_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a hyper::Error> {
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            return h.is_parse().then_some(h);
        }
        cause = c.source();
    }
    None
}
