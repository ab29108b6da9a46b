//! The Connect protocol on the auto-mapped `/package.Service/Method` paths,
//! so connect-web / connect-es clients work against plain gRPC backends.
//!
//! - Unary: `POST` with `application/json` or `application/proto` and a
//!   `Connect-Protocol-Version: 1` header; the reply is the bare message, an
//!   error is a non-200 status with a Connect error JSON body. Trailers come
//!   back as `trailer-` prefixed headers.
//! - Unary `GET` (`?connect=v1&encoding=json|proto&message=...[&base64=1]`)
//!   for methods marked `idempotency_level = NO_SIDE_EFFECTS`.
//! - Streams: `application/connect+json` or `application/connect+proto`,
//!   messages in 5-byte envelopes, ending with an end-stream envelope (flag
//!   0x02) that carries the error, if any, and the trailers.
//! - `Connect-Timeout-Ms` sets the deadline.

use super::body::{FrameStream, ResponseBody};
use super::edge::{copy_reply_metadata, reaches_client, Edge};
use super::framed;
use crate::config::Limits;
use crate::envelope::{CallKind, Payload, ReplyFrame, ReplyStream, Target};
use crate::error::{ErrorKind, GatewayError, Origin};
use crate::observe;
use crate::observe::call_record::{CallRecord, ClientProtocol};
use crate::policy::Pipeline;
use crate::routes::RouteTable;
use crate::transcode::status::StatusRenderer;
use crate::transcode::{json, response};
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Frame;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

const END_STREAM: u8 = 0x02;

/// How messages are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

/// A Connect request, recognised from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Unary(Codec),
    UnaryGet,
    Stream(Codec),
    /// A Connect request (an `application/connect+*` type, or a POST with
    /// `Connect-Protocol-Version`) in a codec the gateway does not speak:
    /// refused with Connect's error, not taken for REST.
    UnknownCodec,
}

impl Shape {
    /// Whether a request speaks Connect; `None` leaves it to REST.
    pub fn of(method: &Method, headers: &HeaderMap, query: Option<&str>) -> Option<Shape> {
        let ct = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Every REST request passes here: compared without a lowercased copy.
        let ct = ct.split(';').next().unwrap_or("").trim();
        if ct.eq_ignore_ascii_case("application/connect+json") {
            return Some(Shape::Stream(Codec::Json));
        }
        if ct.eq_ignore_ascii_case("application/connect+proto") {
            return Some(Shape::Stream(Codec::Proto));
        }
        if ct.len() > "application/connect+".len()
            && ct.as_bytes()[.."application/connect+".len()]
                .eq_ignore_ascii_case(b"application/connect+")
        {
            return Some(Shape::UnknownCodec);
        }
        // `connect=v1`, or another version, refused as Connect refuses a
        // wrong Connect-Protocol-Version, not answered as a REST GET. A HEAD
        // of the same URL is that GET without its body, as on REST.
        if (method == Method::GET || method == Method::HEAD)
            && query.is_some_and(|q| q.split('&').any(|p| p.starts_with("connect=v")))
        {
            return Some(Shape::UnaryGet);
        }
        if !headers.contains_key(crate::headers::CONNECT_PROTOCOL_VERSION) {
            return None;
        }
        if ct.eq_ignore_ascii_case("application/json") {
            Some(Shape::Unary(Codec::Json))
        } else if ct.eq_ignore_ascii_case("application/proto") {
            Some(Shape::Unary(Codec::Proto))
        } else if method == Method::GET || method == Method::HEAD {
            // A GET (or HEAD) with the header and without `connect=v1` in
            // its query is not a Connect GET: REST's.
            None
        } else {
            Some(Shape::UnknownCodec)
        }
    }
}

pub struct ConnectIngress {
    pub routes: Arc<RouteTable>,
    pub pipeline: Pipeline,
    pub limits: Limits,
    pub edge: Edge,
    pub status: StatusRenderer,
}

impl ConnectIngress {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
        shape: Shape,
    ) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        let started = std::time::Instant::now();
        let record = self.edge.record(
            ClientProtocol::Connect,
            req.method(),
            &path,
            req.headers(),
            client,
        );
        // A call by another method than POST (a GET of a unary method is
        // `UnaryGet`) is refused as HTTP, as a wrong content type is, stream
        // or not: no Connect call has begun.
        let by_post = shape == Shape::UnaryGet || req.method() == Method::POST;
        let answer_shape = if by_post {
            shape
        } else {
            Shape::Unary(Codec::Json)
        };
        let resp = match self.call(req, client, started, shape, &record).await {
            Ok(resp) => resp,
            Err(err) => {
                record.failed_finally(&err);
                let resp = self.error_response(answer_shape, &err);
                observe::request_failed(
                    ClientProtocol::Connect,
                    &path,
                    started,
                    resp.status(),
                    &err,
                );
                resp
            }
        };
        record.http_status(resp.status());
        resp
    }

    async fn call(
        &self,
        req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
        started: std::time::Instant,
        shape: Shape,
        record: &Arc<CallRecord>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (parts, body) = req.into_parts();
        // Connect calls are POSTs, or GETs of a unary method with no side
        // effects (refused per method further on): a PUT or DELETE must
        // not run a method a GET may not. A method no route serves is that
        // first, whatever the HTTP method, as for any Connect call.
        if shape != Shape::UnaryGet && parts.method != Method::POST {
            let target = self.routes.rpc_target(parts.uri.path())?;
            record.routed(&target);
            return Err(GatewayError::method_not_allowed(
                &parts.method,
                parts.uri.path(),
                methods_allowed(&target),
            ));
        }
        let target = self.routes.rpc_target(parts.uri.path())?;
        record.routed(&target);
        // The protocol has one version; another is a client built for a
        // protocol this gateway does not speak. Refused on the route it
        // named, so logs and traces name the method.
        if let Some(v) = parts.headers.get(crate::headers::CONNECT_PROTOCOL_VERSION) {
            if v.as_bytes() != b"1" {
                return Err(GatewayError::invalid_field(
                    "connect-protocol-version",
                    format!(
                        "connect-protocol-version must be \"1\", not {:?}",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                ));
            }
        }
        let limit = self.limits.max_grpc_message_bytes;
        let json_options = self.routes_json(&target);
        let streaming_call = target.kind != CallKind::Unary;
        // The types the method takes, told to a client that sent another.
        let media_type_refusal = || {
            let wanted = if streaming_call {
                "application/connect+json or application/connect+proto"
            } else {
                "application/json or application/proto"
            };
            let sent = match parts.headers.get(CONTENT_TYPE) {
                Some(v) => v.to_str().unwrap_or("?"),
                None => "",
            };
            GatewayError::unsupported_media_type_wanting(
                sent,
                &format!("{wanted} to a {} method", target.kind.describe()),
            )
        };
        // A GET names no content type: it is a method a stream cannot be
        // called by, not a wrong type.
        if streaming_call && shape == Shape::UnaryGet {
            return Err(GatewayError::method_not_allowed(
                &Method::GET,
                parts.uri.path(),
                methods_allowed(&target),
            ));
        }
        if streaming_call != matches!(shape, Shape::Stream(_)) && shape != Shape::UnknownCodec {
            return Err(media_type_refusal());
        }
        let (codec, payload) = match shape {
            Shape::UnknownCodec => return Err(media_type_refusal()),
            Shape::Unary(codec) => {
                let bytes = framed::read_limited(
                    body,
                    limit,
                    crate::config::MESSAGE_LIMIT,
                    self.limits.body_read_timeout,
                    self.edge.deadline_at(&parts.headers, &target, started),
                )
                .await?;
                (
                    codec,
                    Payload::Unary(decode_message(&target, codec, bytes, &json_options)?),
                )
            }
            Shape::UnaryGet => {
                if !crate::routes::has_no_side_effects(&target.method) {
                    return Err(GatewayError::method_not_allowed(
                        &Method::GET,
                        parts.uri.path(),
                        methods_allowed(&target),
                    ));
                }
                let (codec, bytes) = get_message(parts.uri.query().unwrap_or(""))?;
                // The same bound as a POST's message, once decoded.
                if bytes.len() > limit {
                    return Err(GatewayError::payload_too_large(
                        limit,
                        crate::config::MESSAGE_LIMIT,
                    ));
                }
                (
                    codec,
                    Payload::Unary(decode_message(&target, codec, bytes, &json_options)?),
                )
            }
            Shape::Stream(codec) if !target.kind.client_streams() => {
                // A server stream's request is one message, read whole
                // before the call starts, as gRPC reads it.
                let message = framed::one(
                    body,
                    framed::BodyEncoding::Binary,
                    limit,
                    (self.limits.body_read_timeout, framed::BODY_READ_TIMEOUT),
                    self.edge.deadline_at(&parts.headers, &target, started),
                    |m| decode_message(&target, codec, m, &json_options),
                )
                .await?;
                (codec, Payload::Unary(message))
            }
            Shape::Stream(codec) => (
                codec,
                Payload::Stream({
                    let target = target.clone();
                    framed::messages(
                        body,
                        framed::BodyEncoding::Binary,
                        limit,
                        (self.limits.stream_idle_timeout, framed::STREAM_IDLE_TIMEOUT),
                        move |m| decode_message(&target, codec, m, &json_options),
                    )
                }),
            ),
        };
        let mut inbound = self.edge.inbound_owned(parts.headers, &parts.extensions);
        inbound.record = Some(record.clone());
        self.edge.lift_query(&mut inbound, parts.uri.query());
        let envelope = self
            .edge
            .envelope(inbound, target.clone(), payload, client, started);
        let reply = self.pipeline.clone().oneshot(envelope).await?;
        match shape {
            Shape::Stream(codec) => {
                let mut resp = Response::new(ResponseBody::stream(
                    self.stream_frames(&target, codec, reply.body),
                ));
                copy_reply_metadata(&reply.metadata, resp.headers_mut(), "");
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(stream_content_type(codec)),
                );
                Ok(resp)
            }
            _ => {
                let (metadata, message, trailers) = reply.into_unary_parts().await?;
                let body = match codec {
                    Codec::Proto => message,
                    Codec::Json => {
                        let options =
                            json::output(&self.routes_json(&target), target.reply_json_direct);
                        response::message_json(&target.method.output(), &message, &options)?.into()
                    }
                };
                let mut resp = Response::new(ResponseBody::full(body));
                copy_reply_metadata(&metadata, resp.headers_mut(), "");
                copy_reply_metadata(&trailers, resp.headers_mut(), "trailer-");
                let ct = if codec == Codec::Json {
                    "application/json"
                } else {
                    "application/proto"
                };
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
                Ok(resp)
            }
        }
    }

    /// The route's JSON options (Connect JSON follows them like REST does).
    fn routes_json(&self, target: &Target) -> crate::config::JsonOptions {
        self.routes.json_options(target.route)
    }

    fn stream_frames(&self, target: &Arc<Target>, codec: Codec, reply: ReplyStream) -> FrameStream {
        let output = target.method.output();
        let options = json::output(&self.routes_json(target), target.reply_json_direct);
        let status = self.status.clone();
        let path = target.path.clone();
        let request_id = crate::observe::request_scope::current();
        Box::pin(futures_util::stream::unfold(
            (reply, false),
            move |(mut reply, ended)| {
                let request_id = request_id.clone();
                let output = output.clone();
                let options = options.clone();
                let status = status.clone();
                let path = path.clone();
                async move {
                    if ended {
                        return None;
                    }
                    let (error, trailers) = match reply.next().await {
                        Some(Ok(ReplyFrame::Message(m))) => {
                            let payload = match codec {
                                Codec::Proto => Ok(m),
                                Codec::Json => {
                                    response::message_json(&output, &m, &options).map(Bytes::from)
                                }
                            };
                            match payload {
                                Ok(p) => {
                                    return Some((Frame::data(envelope(0, &p)), (reply, false)))
                                }
                                Err(e) => (Some(e), HeaderMap::new()),
                            }
                        }
                        Some(Ok(ReplyFrame::Trailers(t))) => (None, t),
                        Some(Err(e)) => (Some(e), HeaderMap::new()),
                        None => (None, HeaderMap::new()),
                    };
                    if let Some(err) = &error {
                        crate::observe::stream_failed(
                            ClientProtocol::Connect,
                            path.as_str(),
                            request_id.as_ref(),
                            err,
                        );
                    }
                    let end = end_stream_json(&status, error.as_ref(), &trailers);
                    Some((Frame::data(envelope(END_STREAM, &end)), (reply, true)))
                }
            },
        ))
    }

    /// An error in the Connect format of the request's shape.
    pub fn error_response(&self, shape: Shape, err: &GatewayError) -> Response<ResponseBody> {
        match shape {
            Shape::Stream(codec) => self.stream_error_response(codec, err),
            _ => self.unary_error_response(err),
        }
    }

    fn unary_error_response(&self, err: &GatewayError) -> Response<ResponseBody> {
        let body = serde_json::to_vec(&connect_error(&self.status, err)).unwrap_or_default();
        let mut resp = Response::new(ResponseBody::full(body));
        *resp.status_mut() = match &err.kind {
            // A Connect client reads the code; the status follows it, even
            // when an authorization service answered with a redirect.
            ErrorKind::Denied(_) => crate::error::http_status_of_grpc(err.grpc_code()),
            _ => err.http_status(),
        };
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in err.http_headers() {
            resp.headers_mut().insert(name, value);
        }
        if let ErrorKind::Backend(b) = &err.kind {
            copy_reply_metadata(&b.metadata, resp.headers_mut(), "");
        }
        resp
    }

    /// A stream that fails before it starts still answers 200: the error is
    /// in the end-stream envelope. The refusal's own headers are both HTTP
    /// headers (as on a unary call) and end-stream metadata.
    fn stream_error_response(&self, codec: Codec, err: &GatewayError) -> Response<ResponseBody> {
        let end = end_stream_json(&self.status, Some(err), &HeaderMap::new());
        let mut resp = Response::new(ResponseBody::full(envelope(END_STREAM, &end)));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(stream_content_type(codec)),
        );
        for (name, value) in err.http_headers() {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

fn stream_content_type(codec: Codec) -> &'static str {
    match codec {
        Codec::Json => "application/connect+json",
        Codec::Proto => "application/connect+proto",
    }
}

fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(payload);
    out.freeze()
}

/// The HTTP methods a Connect call of this method may come by: `POST`,
/// and `GET` (and `HEAD`, the GET without its body) for a unary method
/// marked `NO_SIDE_EFFECTS`.
fn methods_allowed(target: &Target) -> Vec<Method> {
    if target.kind == CallKind::Unary && crate::routes::has_no_side_effects(&target.method) {
        vec![Method::GET, Method::HEAD, Method::POST]
    } else {
        vec![Method::POST]
    }
}

/// The message of a Connect GET: `encoding`, `message`, optional `base64=1`.
pub(crate) fn get_message(query: &str) -> Result<(Codec, Bytes), GatewayError> {
    // Form-decoded to bytes, not text: a proto message need not be UTF-8.
    let form = |t: &str| -> Vec<u8> {
        percent_encoding::percent_decode_str(&t.replace('+', " ")).collect()
    };
    let mut codec = None;
    let mut message = None;
    let mut base64 = false;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = form(v);
        let k = form(k);
        // One value each: which of two the client meant is anyone's guess.
        if matches!(
            k.as_slice(),
            b"encoding" | b"message" | b"base64" | b"compression" | b"connect"
        ) {
            if seen.contains(&k) {
                let name = String::from_utf8_lossy(&k).into_owned();
                return Err(GatewayError::invalid_field(name, "is given more than once"));
            }
            seen.push(k.clone());
        }
        match k.as_slice() {
            b"encoding" => {
                codec = Some(match v.as_slice() {
                    b"json" => Codec::Json,
                    b"proto" => Codec::Proto,
                    other => {
                        return Err(GatewayError::invalid_field(
                            "encoding",
                            format!("{:?} is not json or proto", String::from_utf8_lossy(other)),
                        ))
                    }
                })
            }
            b"message" => message = Some(v),
            b"base64" => {
                base64 = match v.as_slice() {
                    b"1" => true,
                    b"0" | b"" => false,
                    other => {
                        return Err(GatewayError::invalid_field(
                            "base64",
                            format!("{:?} is not 1 (base64) or 0", String::from_utf8_lossy(other)),
                        ))
                    }
                }
            }
            b"compression" if v != b"identity" => {
                return Err(GatewayError::new(
                    ErrorKind::UnsupportedEncoding,
                    Origin::Client,
                    format!(
                        "compression {:?} is not supported: send the message uncompressed (compression=identity, or no compression parameter)",
                        String::from_utf8_lossy(&v)
                    ),
                ))
            }
            b"connect" if v != b"v1" => {
                return Err(GatewayError::invalid_field(
                    "connect",
                    format!(
                        "{:?} is not a Connect protocol version this gateway speaks (v1)",
                        String::from_utf8_lossy(&v)
                    ),
                ))
            }
            _ => {}
        }
    }
    let codec = codec.ok_or_else(|| GatewayError::invalid_field("encoding", "is required"))?;
    // An empty message is `message=`; none at all is a malformed request.
    let message = message.ok_or_else(|| {
        GatewayError::invalid_field("message", "is required (message= for an empty message)")
    })?;
    let bytes = if base64 {
        use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
        let unpadded = message.strip_suffix(b"=").unwrap_or(&message);
        let unpadded = unpadded.strip_suffix(b"=").unwrap_or(unpadded);
        URL_SAFE_NO_PAD
            .decode(unpadded)
            .or_else(|_| URL_SAFE.decode(&message))
            .map_err(|_| GatewayError::invalid_field("message", "is not URL-safe base64"))?
    } else {
        message
    };
    Ok((codec, bytes.into()))
}

fn decode_message(
    target: &Target,
    codec: Codec,
    bytes: Bytes,
    options: &crate::config::JsonOptions,
) -> Result<Bytes, GatewayError> {
    match codec {
        Codec::Proto => Ok(bytes),
        // An empty body is the empty message, whatever its type's JSON form
        // (a Timestamp's is a string), as a REST body rule reads one.
        Codec::Json if bytes.is_empty() => Ok(Bytes::new()),
        Codec::Json => crate::transcode::request::message_from_json(target, &bytes, options),
    }
}

/// Connect's name for a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "canceled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// A Connect error object: `{"code", "message", "details": [{"type", "value"}]}`.
fn connect_error(status: &StatusRenderer, err: &GatewayError) -> serde_json::Value {
    let details: Vec<serde_json::Value> = status
        .detail_anys(err)
        .into_iter()
        .map(|(type_url, value)| {
            let name = type_url.rsplit('/').next().unwrap_or(&type_url).to_owned();
            serde_json::json!({"type": name, "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(value)})
        })
        .collect();
    let mut obj = serde_json::json!({"code": code_name(err.grpc_code()), "message": err.message});
    if !details.is_empty() {
        obj["details"] = serde_json::Value::Array(details);
    }
    obj
}

/// The end-stream message: the error, if any, and the trailers.
fn end_stream_json(
    status: &StatusRenderer,
    err: Option<&GatewayError>,
    trailers: &HeaderMap,
) -> Vec<u8> {
    let mut metadata = serde_json::Map::new();
    let mut add = |h: &HeaderMap| {
        for (name, value) in h {
            if !reaches_client(name) {
                continue;
            }
            if let Ok(v) = value.to_str() {
                let entry = metadata
                    .entry(name.as_str().to_owned())
                    .or_insert_with(|| serde_json::json!([]));
                if let Some(list) = entry.as_array_mut() {
                    list.push(serde_json::Value::String(v.to_owned()));
                }
            }
        }
    };
    add(trailers);
    if let Some(ErrorKind::Backend(b)) = err.map(|e| &e.kind) {
        add(&b.metadata);
    }
    // The gateway's own headers of a refusal (`Retry-After`, `RateLimit-*`,
    // `WWW-Authenticate`, `x-portico-overloaded`) are trailing metadata
    // here, as on gRPC.
    if let Some(e) = err {
        let own: HeaderMap = e.http_headers().into_iter().collect();
        add(&own);
        // Connect's own word for the encodings the gateway takes (a
        // compressed message refused once the stream has begun), which
        // no backend's metadata may carry.
        if let Some(v) = own
            .get("connect-accept-encoding")
            .and_then(|v| v.to_str().ok())
        {
            metadata.insert("connect-accept-encoding".into(), serde_json::json!([v]));
        }
    }
    let mut end = serde_json::Map::new();
    if let Some(e) = err {
        end.insert("error".into(), connect_error(status, e));
    }
    if !metadata.is_empty() {
        end.insert("metadata".into(), serde_json::Value::Object(metadata));
    }
    serde_json::to_vec(&serde_json::Value::Object(end)).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kinds.v1.Things' method `name`, as a route resolves it.
    fn target(name: &str) -> Target {
        let method = crate::transcode::json::kinds_pool()
            .get_service_by_name("kinds.v1.Things")
            .unwrap()
            .methods()
            .find(|m| m.name() == name)
            .unwrap();
        Target::for_method(method)
    }

    #[test]
    fn an_empty_json_body_is_the_empty_message_of_any_type() {
        let options = Default::default();
        for method in ["GetThing", "Purge", "Stamp"] {
            let decoded = decode_message(&target(method), Codec::Json, Bytes::new(), &options);
            assert_eq!(decoded.unwrap(), Bytes::new(), "{method}");
        }
        // A Timestamp is written as a string, never as `{}`.
        let stamp = target("Stamp");
        let body = Bytes::from_static(b"\"1970-01-01T00:00:01Z\"");
        assert_eq!(
            decode_message(&stamp, Codec::Json, body, &options).unwrap(),
            Bytes::from_static(&[0x08, 0x01])
        );
        assert!(decode_message(&stamp, Codec::Json, Bytes::from_static(b"{}"), &options).is_err());
    }
}
