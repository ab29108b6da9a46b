//! The gRPC and gRPC-Web ingress. Calls are routed by their
//! `/package.Service/Method` path and passed through as message bytes: no
//! protobuf decoding, frames re-cut only at message boundaries. Headers and
//! trailers go both ways; the deadline and cancellation reach the backend.
//!
//! gRPC-Web (`application/grpc-web[+proto]`, `application/grpc-web-text[+proto]`)
//! uses the same frames over HTTP/1.1 or HTTP/2, with the trailers sent as
//! a last frame (flag 0x80) in the body, base64-encoded for the text form.
//!
//! The gateway's own gRPC services (reflection, health) resolve like routed
//! methods and are answered by the pipeline ([`crate::egress::local`]).

use super::body::{FrameStream, ResponseBody};
use super::edge::{copy_reply_metadata, Edge};
use super::framed;
use crate::config::Limits;
use crate::envelope::{Payload, ReplyFrame, ReplyStream};
use crate::error::{ErrorKind, GatewayError};
use crate::observe;
use crate::observe::call_record::{CallRecord, ClientProtocol};
use crate::policy::Pipeline;
use crate::routes::RouteTable;
use crate::transcode::framing;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

/// Which wire format the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Grpc,
    Web { text: bool },
}

/// The message codec a gRPC content type names: protobuf (bare or
/// `+proto`), the only one served, or another (`+json`), refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Other,
}

impl Flavor {
    /// From a request's content type, with its codec; `None` for anything
    /// not gRPC. Read once per request, by the dispatcher.
    pub fn of(content_type: &str) -> Option<(Flavor, Codec)> {
        // Compared without case and without a lowercased copy: this runs
        // on every request.
        let ct = content_type.split(';').next().unwrap_or("").trim();
        let is = |names: [&str; 2]| names.iter().any(|n| ct.eq_ignore_ascii_case(n));
        if is([
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ]) {
            Some((Flavor::Web { text: true }, Codec::Proto))
        } else if is(["application/grpc-web", "application/grpc-web+proto"]) {
            Some((Flavor::Web { text: false }, Codec::Proto))
        } else if is(["application/grpc", "application/grpc+proto"]) {
            Some((Flavor::Grpc, Codec::Proto))
        } else {
            // Another message codec (`+json`): still gRPC, refused by
            // the adapter in gRPC's own terms rather than read as REST.
            let has = |prefix: &str| {
                ct.len() > prefix.len() && ct[..prefix.len()].eq_ignore_ascii_case(prefix)
            };
            let flavor = if has("application/grpc-web-text+") {
                Flavor::Web { text: true }
            } else if has("application/grpc-web+") {
                Flavor::Web { text: false }
            } else if has("application/grpc+") {
                Flavor::Grpc
            } else {
                return None;
            };
            Some((flavor, Codec::Other))
        }
    }

    /// The name of the codec after `+`, for the refusal of one not served.
    fn codec_name(content_type: &str) -> &str {
        let ct = content_type.split(';').next().unwrap_or("").trim();
        ct.split_once('+').map_or(ct, |(_, codec)| codec)
    }

    fn content_type(self) -> &'static str {
        match self {
            Flavor::Grpc => "application/grpc",
            Flavor::Web { text: false } => "application/grpc-web+proto",
            Flavor::Web { text: true } => "application/grpc-web-text+proto",
        }
    }
}

pub struct GrpcIngress {
    pub routes: Arc<RouteTable>,
    pub pipeline: Pipeline,
    pub limits: Limits,
    pub edge: Edge,
}

impl GrpcIngress {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
        (flavor, codec): (Flavor, Codec),
    ) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        let started = std::time::Instant::now();
        let protocol = match flavor {
            Flavor::Grpc => ClientProtocol::Grpc,
            Flavor::Web { .. } => ClientProtocol::GrpcWeb,
        };
        let record = self
            .edge
            .record(protocol, req.method(), &path, req.headers(), client);
        let resp = match self
            .call(req, client, started, (flavor, codec), &record)
            .await
        {
            Ok(resp) => resp,
            Err(err) => {
                record.failed_finally(&err);
                let resp = trailers_only(flavor, &err);
                observe::request_failed(protocol, &path, started, resp.status(), &err);
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
        (flavor, codec): (Flavor, Codec),
        record: &Arc<CallRecord>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (parts, body) = req.into_parts();
        // Routed first, so the refusals below name the method they were for.
        let routed = self.routes.rpc_target(parts.uri.path());
        if let Ok(target) = &routed {
            record.routed(target);
        }
        if flavor == Flavor::Grpc && parts.version < http::Version::HTTP_2 {
            // Its reply would end without the trailers that carry the
            // call's status: a failed stream would read as a clean one.
            return Err(GatewayError::grpc_needs_http2());
        }
        // gRPC and gRPC-Web calls are POSTs (their specs' only method): a
        // GET would run as a call with no message.
        if parts.method != http::Method::POST {
            return Err(GatewayError::method_not_allowed(
                &parts.method,
                parts.uri.path(),
                vec![http::Method::POST],
            ));
        }
        if codec == Codec::Other {
            let content_type = parts.headers.get(CONTENT_TYPE);
            let codec =
                Flavor::codec_name(content_type.and_then(|v| v.to_str().ok()).unwrap_or(""));
            return Err(GatewayError::new(
                ErrorKind::UnsupportedEncoding,
                crate::error::Origin::Client,
                format!(
                    "the gRPC message codec {codec:?} is not supported; messages are protobuf (+proto)"
                ),
            ));
        }
        let target = routed?;
        let limit = self.limits.max_grpc_message_bytes;
        let text = flavor == Flavor::Web { text: true };
        let streams = target.kind.client_streams();
        // Deframed as it arrives (gRPC-Web text decoded from base64 on the
        // way): a length prefix over the limit is refused as soon as it is
        // read, before its bytes come. A client stream waits on its client
        // between messages; any other call's one message is a body being
        // read.
        let encoding = if text {
            framed::BodyEncoding::Base64
        } else {
            framed::BodyEncoding::Binary
        };
        let payload = match streams {
            true => Payload::Stream(framed::messages(
                body,
                encoding,
                limit,
                (self.limits.stream_idle_timeout, framed::STREAM_IDLE_TIMEOUT),
                Ok,
            )),
            false => Payload::Unary(
                framed::one(
                    body,
                    encoding,
                    limit,
                    (self.limits.body_read_timeout, framed::BODY_READ_TIMEOUT),
                    self.edge.deadline_at(&parts.headers, &target, started),
                    Ok,
                )
                .await?,
            ),
        };
        let mut inbound = self.edge.inbound_owned(parts.headers, &parts.extensions);
        inbound.record = Some(record.clone());
        self.edge.lift_query(&mut inbound, parts.uri.query());
        let target_path = target.path.clone();
        let envelope = self
            .edge
            .envelope(inbound, target, payload, client, started);
        let reply = self.pipeline.clone().oneshot(envelope).await?;
        let mut resp = Response::new(ResponseBody::stream(reply_frames(
            reply.body,
            flavor,
            target_path,
        )));
        let headers = resp.headers_mut();
        super::edge::copy_reply_metadata(&reply.metadata, headers, "");
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(flavor.content_type()),
        );
        Ok(resp)
    }
}

/// The most bytes of a `grpc-message` header, percent-encoded: clients
/// refuse header blocks past a few KiB by default (grpcio and grpc-core's
/// 8 KiB soft limit, grpc-java's 8 KiB; browsers take a gRPC-Web head far
/// smaller), so a backend's long message is cut,
/// saying by how much, rather than losing the whole reply. Counted encoded,
/// as the header is sent: a non-ASCII or `%` byte is three.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 4096;

/// The status of an error as gRPC trailers.
pub fn status_trailers(err: &GatewayError) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(err.grpc_code() as i32));
    let details = match &err.kind {
        ErrorKind::Backend(b) if !b.details.is_empty() => Some(&b.details),
        _ => None,
    };
    // With details beside it, the message is repeated in them: both copies
    // are cut to the smaller bound, and to the same text, which clients'
    // status libraries (grpcio-status) check.
    let bound = if details.is_some() {
        MAX_DETAILS_MESSAGE_BYTES
    } else {
        MAX_GRPC_MESSAGE_BYTES
    };
    let text = grpc_message_text(&err.message, bound);
    let message = percent_encoding::utf8_percent_encode(&text, GRPC_MESSAGE).to_string();
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    if let ErrorKind::Backend(b) = &err.kind {
        let metadata = &b.metadata;
        if let Some(details) = details {
            let details = bounded_details(details, err.grpc_code(), &err.message, &text);
            let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&details);
            if let Ok(v) = HeaderValue::from_str(&encoded) {
                h.insert("grpc-status-details-bin", v);
            }
        }
        copy_reply_metadata(metadata, &mut h, "");
    }
    if let ErrorKind::InvalidRequest { violations } = &err.kind {
        if let Some(v) = bad_request_details(err, violations) {
            h.insert("grpc-status-details-bin", v);
        }
    }
    // What an HTTP client gets as headers (Retry-After, RateLimit-*, the
    // overload and authentication hints) a gRPC client gets as metadata.
    for (name, value) in err.http_headers() {
        h.append(name, value);
    }
    h
}

/// The most bytes of a status message when `grpc-status-details-bin`
/// repeats it (percent-encoded, as `grpc-message` carries it): the two
/// share one header block that gRPC clients refuse past 8 KiB by default.
pub const MAX_DETAILS_MESSAGE_BYTES: usize = 1024;

/// `message` as a `grpc-message` carries it: whole when its percent-encoded
/// form fits in `max` bytes, else cut on a character boundary so that it
/// does, ending `... (N more bytes)`.
pub fn grpc_message_text(message: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let encoded_len = |s: &str| {
        percent_encoding::utf8_percent_encode(s, GRPC_MESSAGE)
            .map(str::len)
            .sum::<usize>()
    };
    if message.len() <= max && encoded_len(message) <= max {
        return std::borrow::Cow::Borrowed(message);
    }
    // Room for the note, which needs no escape.
    let budget = max.saturating_sub("... (18446744073709551615 more bytes)".len());
    let (mut used, mut end) = (0, 0);
    for (i, c) in message.char_indices() {
        let n = encoded_len(c.encode_utf8(&mut [0u8; 4]));
        if used + n > budget {
            break;
        }
        used += n;
        end = i + c.len_utf8();
    }
    std::borrow::Cow::Owned(format!(
        "{}... ({} more bytes)",
        &message[..end],
        message.len() - end
    ))
}

/// The most of a backend's error details `grpc-status-details-bin`
/// carries, encoded; details past it are left out, the first ones kept.
pub const MAX_DETAILS_BYTES: usize = 2048;

/// google.rpc.Status, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// A backend's encoded google.rpc.Status, bounded so the reply's header
/// block stays within what clients take: its message, when it is the
/// status's (`original`), becomes `sent`, the text `grpc-message` carries,
/// so the two agree; another message is cut to
/// [`MAX_DETAILS_MESSAGE_BYTES`]; details are kept in order while they fit
/// in [`MAX_DETAILS_BYTES`]; its code becomes `code`, the one
/// `grpc-status` carries (a backend's 20, which no client reads, is sent as
/// UNKNOWN in both). As sent when nothing needs changing, or when it is
/// not a Status at all (then it is the backend's to answer for).
fn bounded_details(details: &Bytes, code: tonic::Code, original: &str, sent: &str) -> Bytes {
    let Ok(mut status) = <RpcStatus as prost::Message>::decode(details.as_ref()) else {
        return details.clone();
    };
    // Clients' status libraries refuse details whose code is not the
    // status's (grpcio-status), or read the details' code over it.
    let mut changed = status.code != code as i32;
    status.code = code as i32;
    if status.message == original {
        if sent != original {
            status.message = sent.to_owned();
            changed = true;
        }
    } else if let std::borrow::Cow::Owned(cut) =
        grpc_message_text(&status.message, MAX_DETAILS_MESSAGE_BYTES)
    {
        status.message = cut;
        changed = true;
    }
    let mut room = MAX_DETAILS_BYTES;
    let before = status.details.len();
    status.details.retain(|d| {
        let size = prost::Message::encoded_len(d);
        let fits = size <= room;
        // Later details may not jump ahead of one left out.
        room = if fits { room - size } else { 0 };
        fits
    });
    if !changed && status.details.len() == before {
        return details.clone();
    }
    prost::Message::encode_to_vec(&status).into()
}

/// The gateway's own 400s carry a google.rpc.BadRequest naming the fields
/// at fault, as they do in a JSON error body, in `grpc-status-details-bin`.
fn bad_request_details(
    err: &GatewayError,
    violations: &[crate::error::FieldViolation],
) -> Option<HeaderValue> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct BadRequest {
        #[prost(message, repeated, tag = "1")]
        field_violations: Vec<Violation>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Violation {
        #[prost(string, tag = "1")]
        field: String,
        #[prost(string, tag = "2")]
        description: String,
    }
    if violations.is_empty() {
        return None;
    }
    let bad_request = BadRequest {
        field_violations: violations
            .iter()
            .map(|v| Violation {
                field: v.field.clone(),
                description: v.description.clone(),
            })
            .collect(),
    };
    let status = RpcStatus {
        code: err.grpc_code() as i32,
        message: err.message.clone(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.BadRequest".to_owned(),
            value: prost::Message::encode_to_vec(&bad_request),
        }],
    };
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(prost::Message::encode_to_vec(&status));
    HeaderValue::from_str(&encoded).ok()
}

/// grpc-message is percent-encoded: everything outside printable ASCII, and `%`.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// A call that failed before any reply: status in the headers, no body.
pub fn trailers_only(flavor: Flavor, err: &GatewayError) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    // gRPC's answer is HTTP 200 with its status in the trailers; a client
    // that is not speaking gRPC over HTTP/2 at all is told so in HTTP too.
    if matches!(err.kind, ErrorKind::GrpcNeedsHttp2) {
        *resp.status_mut() = err.http_status();
    }
    *resp.headers_mut() = status_trailers(err);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(flavor.content_type()),
    );
    resp
}

fn ok_trailers(mut backend: HeaderMap) -> HeaderMap {
    use crate::headers::GRPC_STATUS;
    // Mostly the backend's own `grpc-status` and nothing else: its map is
    // emptied and reused rather than a new one built.
    if backend
        .keys()
        .all(|name| !crate::ingress::edge::reaches_client(name))
    {
        backend.clear();
        backend.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        return backend;
    }
    let mut h = HeaderMap::with_capacity(backend.len() + 1);
    h.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    copy_reply_metadata(&backend, &mut h, "");
    h
}

/// The reply as body frames: framed messages, then the trailers (HTTP/2
/// trailers for gRPC, a flagged body frame for gRPC-Web). `path` (the
/// method's) and the request id name a failure in the log.
fn reply_frames(reply: ReplyStream, flavor: Flavor, path: http::uri::PathAndQuery) -> FrameStream {
    let request_id = crate::observe::request_scope::current();
    // What names a failure rides along in the state: moved, not cloned,
    // from frame to frame.
    let state = (
        reply,
        VecDeque::<Frame<Bytes>>::new(),
        false,
        (path, request_id),
    );
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut reply, mut queue, mut ended, named)| async move {
            loop {
                if let Some(f) = queue.pop_front() {
                    return Some((f, (reply, queue, ended, named)));
                }
                if ended {
                    return None;
                }
                let trailers = match reply.next().await {
                    Some(Ok(ReplyFrame::Message(m))) => {
                        let (head, tail) = framing::frame(0, m);
                        match flavor {
                            Flavor::Web { text: true } => {
                                let mut whole = head.to_vec();
                                if let Some(t) = tail {
                                    whole.extend_from_slice(&t);
                                }
                                queue.push_back(Frame::data(
                                    base64::engine::general_purpose::STANDARD
                                        .encode(whole)
                                        .into(),
                                ));
                            }
                            _ => {
                                queue.push_back(Frame::data(head));
                                queue.extend(tail.map(Frame::data));
                            }
                        }
                        continue;
                    }
                    Some(Ok(ReplyFrame::Trailers(t))) => ok_trailers(t),
                    Some(Err(err)) => {
                        crate::observe::stream_failed(
                            match flavor {
                                Flavor::Grpc => ClientProtocol::Grpc,
                                Flavor::Web { .. } => ClientProtocol::GrpcWeb,
                            },
                            named.0.as_str(),
                            named.1.as_ref(),
                            &err,
                        );
                        status_trailers(&err)
                    }
                    None => ok_trailers(HeaderMap::new()),
                };
                ended = true;
                queue.push_back(match flavor {
                    Flavor::Grpc => Frame::trailers(trailers),
                    Flavor::Web { text: false } => Frame::data(framing::web_trailers(&trailers)),
                    Flavor::Web { text: true } => Frame::data(
                        base64::engine::general_purpose::STANDARD
                            .encode(framing::web_trailers(&trailers))
                            .into(),
                    ),
                });
            }
        },
    ))
}
