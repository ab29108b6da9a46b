//! The HTTP/JSON ingress: google.api.http bindings and the
//! `POST /package.Service/Method` auto mapping.
//!
//! A request is matched, transcoded into an envelope, sent down the policy
//! pipeline, and the reply written back as JSON (or NDJSON / SSE for server
//! streams). Every failure becomes a JSON error response here; nothing
//! escapes to hyper.

use super::body::{FrameStream, ResponseBody};
use super::edge::{reaches_client, Edge};
use crate::config::Limits;
use crate::envelope::{MessageStream, Payload, ReplyFrame, ReplyStream, RequestCtx};
use crate::error::{ErrorKind, GatewayError};
use crate::observe;
use crate::observe::call_record::{CallRecord, ClientProtocol};
use crate::policy::aggregate::{AggregateInput, Aggregator};
use crate::policy::Pipeline;
use crate::routes::aggregate::{AggregateMatch, AggregatePlan, AggregateTable};
use crate::routes::{Binding, BodyRule, MatchOutcome, RouteTable};
use crate::transcode::json;
use crate::transcode::request::{self, UrlParts};
use crate::transcode::response::{self, HttpReplyBody};
use crate::transcode::status::StatusRenderer;
use crate::transcode::stream::{LineSplitter, StreamFormat};
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Frame;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

/// Response metadata key a backend sets to choose the HTTP success status
/// (e.g. `201`); consumed by the gateway, not forwarded.
pub const HTTP_STATUS_METADATA: http::HeaderName = http::HeaderName::from_static("x-http-status");

pub struct RestIngress {
    pub routes: Arc<RouteTable>,
    pub pipeline: Pipeline,
    pub aggregates: Arc<AggregateTable>,
    pub aggregator: Aggregator,
    pub edge: Edge,
    pub limits: Limits,
    pub status: StatusRenderer,
}

/// A request body as hyper hands it over.
pub type IncomingBody = super::request_body::RequestBody;

impl RestIngress {
    /// Serves one request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<IncomingBody>,
        client: Option<SocketAddr>,
    ) -> Response<ResponseBody> {
        // Cheap clones (the URI is reference-counted): kept for the log line.
        let method = req.method().clone();
        let uri = req.uri().clone();
        let started = std::time::Instant::now();
        let record = self.edge.record(
            ClientProtocol::Rest,
            &method,
            uri.path(),
            req.headers(),
            client,
        );
        let resp = match self.serve(req, client, started, &record).await {
            Ok(resp) => {
                record.http_status(resp.status());
                resp
            }
            Err(err) => {
                record.failed_finally(&err);
                let resp = self.error_response(&err);
                observe::request_failed(
                    ClientProtocol::Rest,
                    &format!("{method} {}", uri.path()),
                    started,
                    resp.status(),
                    &err,
                );
                record.http_status(resp.status());
                resp
            }
        };
        // A HEAD's body is left out by the dispatcher, as for every HEAD.
        resp
    }

    async fn serve(
        &self,
        req: Request<IncomingBody>,
        client: Option<SocketAddr>,
        started: std::time::Instant,
        record: &Arc<CallRecord>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let mut inbound = self.edge.inbound(&parts.headers, &parts.extensions);
        inbound.record = Some(record.clone());
        let query = self.edge.lift_query(&mut inbound, parts.uri.query());
        let query = query.as_deref();
        // HEAD is answered as GET without the body (RFC 9110 section 9.3.2),
        // unless a custom HEAD rule serves the path.
        let (found, lookup) = self.routes.find_request(&parts.method, path);
        // Aggregates are few and named in config; they win over method
        // bindings, but not over a HEAD rule made for the request.
        if !self.aggregates.is_empty() && lookup != Method::HEAD {
            if let AggregateMatch::Found(plan, segments) = self.aggregates.find(&lookup, path) {
                record.route(|| format!("{} {}", parts.method, plan.config.path));
                let input = AggregateInput {
                    path: plan.path_values(&segments),
                    query: query
                        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                        .unwrap_or_default(),
                    body: None,
                };
                // The forwarding headers are rewritten first, as for any call:
                // the backend sees what the gateway saw, never a client's claim.
                let ctx = self.edge.context(inbound, client, started);
                let metadata = self.edge.metadata(&ctx.headers);
                let answered = self
                    .aggregate(plan, input, &parts, body, metadata, ctx)
                    .await;
                if answered.is_ok() {
                    record.succeeded_finally();
                }
                return answered;
            }
        }
        let found = match found {
            MatchOutcome::Found(m) => m,
            // A path a binding or an aggregate serves with other methods:
            // a 405 that allows both's.
            outcome => {
                let bound = match outcome {
                    MatchOutcome::MethodNotAllowed(allowed) => allowed,
                    _ => Vec::new(),
                };
                // The path is a route's: its refusal is that route's (its
                // `access_log` switch applies), named by a binding it has.
                if let Some(MatchOutcome::Found(m)) =
                    bound.first().map(|m| self.routes.find(m, path))
                {
                    record.routed(&m.binding.target);
                }
                let allowed = self.aggregates.allowed_at(&self.routes, path, bound);
                return Err(if allowed.is_empty() {
                    GatewayError::route_not_found(path)
                } else {
                    GatewayError::method_not_allowed(&parts.method, path, allowed)
                });
            }
        };
        let binding = found.binding.clone();
        record.routed(&binding.target);
        // A stream has no headers of its own to show before its messages:
        // HEAD would start a backend stream only to cancel it.
        if lookup != parts.method && binding.target.kind.server_streams() {
            return Err(GatewayError::method_not_allowed(
                &parts.method,
                path,
                vec![Method::GET],
            ));
        }
        record.route(|| format!("{} {}", binding.method, binding.template_text));
        let target = binding.target.clone();
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());

        let payload = if target.kind.client_streams() {
            // One rule for what a body may be: an upload's lines are JSON
            // (raw HttpBody chunks take any type).
            let ndjson = binding.raw_request_body
                || content_type.is_some_and(|ct| {
                    let essence = ct.split(';').next().unwrap_or("").trim();
                    essence.eq_ignore_ascii_case("application/x-ndjson")
                        || essence.eq_ignore_ascii_case("application/jsonl")
                });
            if !ndjson && !crate::transcode::request::is_json(content_type) {
                return Err(GatewayError::unsupported_media_type_wanting(
                    content_type.unwrap_or(""),
                    "application/x-ndjson (or application/json)",
                ));
            }
            // The URL is checked before the first line is read: a bad
            // query parameter is the URL's fault, not line 1's.
            request::check_url(
                &binding,
                UrlParts {
                    segments: &found.segments,
                    query,
                },
            )?;
            let segments: Vec<String> = found.segments.iter().map(|s| s.to_string()).collect();
            if binding.raw_request_body {
                Payload::Stream(raw_body_messages(
                    body,
                    binding.clone(),
                    segments,
                    query.map(str::to_owned),
                    content_type.map(str::to_owned),
                    self.limits.max_grpc_message_bytes,
                    self.limits.stream_idle_timeout,
                ))
            } else {
                Payload::Stream(ndjson_messages(
                    body,
                    binding.clone(),
                    segments,
                    query.map(str::to_owned),
                    self.limits.max_grpc_message_bytes,
                    self.limits.stream_idle_timeout,
                ))
            }
        } else {
            let bytes = match binding.body {
                BodyRule::None => Bytes::new(),
                _ => {
                    super::framed::read_limited(
                        body,
                        self.limits.max_request_body_bytes,
                        crate::config::REQUEST_BODY_LIMIT,
                        self.limits.body_read_timeout,
                        self.edge
                            .deadline_at(&parts.headers, &binding.target, started),
                    )
                    .await?
                }
            };
            let url = UrlParts {
                segments: &found.segments,
                query,
            };
            Payload::Unary(request::build(&binding, Some(url), &bytes, content_type)?)
        };

        let envelope = self
            .edge
            .envelope(inbound, target, payload, client, started);
        let reply = self.pipeline.clone().oneshot(envelope).await?;
        let resp = if binding.target.kind.server_streams() && binding.raw_response_body {
            return self.raw_stream(&binding, reply).await;
        } else if binding.target.kind.server_streams() {
            let format = StreamFormat::from_accept(
                parts
                    .headers
                    .get_all(ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let mut builder = Response::builder().status(stream_status(&reply.metadata));
            if let Some(headers) = builder.headers_mut() {
                copy_reply_headers(&reply.metadata, headers);
            }
            builder
                .header(CONTENT_TYPE, format.content_type())
                .header("cache-control", "no-cache")
                .header("x-accel-buffering", "no")
                .body(ResponseBody::stream(
                    self.stream_frames(&binding, reply.body, format),
                ))
        } else {
            let (metadata, bytes) = reply.into_unary().await?;
            let status = success_status(&metadata);
            let mut builder = Response::builder().status(status);
            if let Some(headers) = builder.headers_mut() {
                copy_reply_headers(&metadata, headers);
            }
            // No content, whatever the reply message holds.
            if has_no_content(status) {
                builder.body(ResponseBody::empty())
            } else {
                match response::unary(&binding, &bytes)? {
                    HttpReplyBody::Json(json) => builder
                        .header(CONTENT_TYPE, "application/json")
                        .body(ResponseBody::full(json)),
                    HttpReplyBody::Raw { content_type, data } => builder
                        .header(CONTENT_TYPE, http_body_content_type(&content_type)?)
                        .body(ResponseBody::full(data)),
                }
            }
        };
        resp.map_err(|e| GatewayError::internal(format!("could not build the response: {e}")))
    }

    async fn aggregate(
        &self,
        plan: &Arc<AggregatePlan>,
        mut input: AggregateInput,
        parts: &http::request::Parts,
        body: IncomingBody,
        metadata: HeaderMap,
        ctx: RequestCtx,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let bytes = super::framed::read_limited(
            body,
            self.limits.max_request_body_bytes,
            crate::config::REQUEST_BODY_LIMIT,
            self.limits.body_read_timeout,
            None,
        )
        .await?;
        input.body = if bytes.is_empty() {
            None
        } else {
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if !request::is_json(content_type) {
                return Err(GatewayError::unsupported_media_type(
                    content_type.unwrap_or_default(),
                ));
            }
            // Refused in the words a binding's body would be.
            let body: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| crate::transcode::json::unreadable(&e))?;
            // `{body.NAME}` reads members: anything else would leave every
            // such template unset without a word.
            if !body.is_object() {
                return Err(GatewayError::invalid_field(
                    "",
                    "an aggregate's request body must be a JSON object",
                ));
            }
            Some(body)
        };
        let outcome = self.aggregator.run(plan, input, metadata, ctx).await?;
        let json = serde_json::to_vec(&outcome.body)
            .map_err(|e| GatewayError::internal(format!("could not write the reply: {e}")))?;
        Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .header(
                "x-aggregate-complete",
                if outcome.complete { "true" } else { "false" },
            )
            .body(ResponseBody::full(json))
            .map_err(|e| GatewayError::internal(format!("could not build the response: {e}")))
    }

    /// A server stream of `google.api.HttpBody`: one download, its bytes
    /// the messages' `data` in order and its content type the first
    /// message's, as grpc-gateway and Envoy write it. A failure after the
    /// first byte cannot be said in the body: the reply is cut short
    /// (HTTP/2: reset; HTTP/1.1: no last chunk), never ended as complete.
    async fn raw_stream(
        &self,
        binding: &Arc<Binding>,
        reply: crate::envelope::Reply,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let crate::envelope::Reply { metadata, mut body } = reply;
        let mut first = None;
        while let Some(frame) = body.next().await {
            match frame {
                Ok(ReplyFrame::Message(bytes)) => {
                    first = Some(raw_part(binding, &bytes)?);
                    break;
                }
                Ok(ReplyFrame::Trailers(_)) => {}
                // Nothing sent yet: the error is the reply.
                Err(e) => return Err(e.with_reply_headers(&metadata)),
            }
        }
        let (content_type, data) = first.unwrap_or_default();
        let content_type = http_body_content_type(&content_type)?;
        let mut builder = Response::builder().status(stream_status(&metadata));
        if let Some(headers) = builder.headers_mut() {
            copy_reply_headers(&metadata, headers);
        }
        let path = binding.target.path.clone();
        let request_id = crate::observe::request_scope::current();
        let binding = binding.clone();
        let rest = body.filter_map(move |frame| {
            let out = match frame {
                Ok(ReplyFrame::Message(bytes)) => match raw_part(&binding, &bytes) {
                    Ok((_, data)) => Some(Ok(Frame::data(data))),
                    Err(e) => Some(Err(e)),
                },
                Ok(ReplyFrame::Trailers(_)) => None,
                Err(e) => Some(Err(e)),
            };
            let out = out.map(|r| {
                r.map_err(|e| {
                    crate::observe::stream_failed(
                        ClientProtocol::Rest,
                        path.as_str(),
                        request_id.as_ref(),
                        &e,
                    );
                    crate::ingress::body::Aborted
                })
            });
            std::future::ready(out)
        });
        let frames = futures_util::stream::iter((!data.is_empty()).then(|| Ok(Frame::data(data))))
            .chain(rest)
            // After an abort, nothing more.
            .scan(false, |aborted, frame| {
                if *aborted {
                    return std::future::ready(None);
                }
                *aborted = frame.is_err();
                std::future::ready(Some(frame))
            });
        builder
            .header(CONTENT_TYPE, content_type)
            .header("cache-control", "no-cache")
            .header("x-accel-buffering", "no")
            .body(ResponseBody::fallible_stream(Box::pin(frames)))
            .map_err(|e| GatewayError::internal(format!("could not build the response: {e}")))
    }

    fn stream_frames(
        &self,
        binding: &Arc<Binding>,
        messages: ReplyStream,
        format: StreamFormat,
    ) -> FrameStream {
        let options = json::output(&binding.json, binding.target.reply_json_direct);
        let status = self.status.clone();
        let path = binding.target.path.clone();
        let request_id = crate::observe::request_scope::current();
        let binding = binding.clone();
        Box::pin(futures_util::stream::unfold(
            (messages, 0u64, false),
            move |(mut messages, seq, finished)| {
                let binding = binding.clone();
                let options = options.clone();
                let status = status.clone();
                let path = path.clone();
                let request_id = request_id.clone();
                async move {
                    if finished {
                        return None;
                    }
                    let failure = loop {
                        match messages.next().await {
                            Some(Ok(ReplyFrame::Message(bytes))) => {
                                match response::stream_message_json(&binding, &bytes, &options) {
                                    Ok(json) => {
                                        return Some((
                                            Frame::data(format.message(seq + 1, &json)),
                                            (messages, seq + 1, false),
                                        ))
                                    }
                                    Err(e) => break e,
                                }
                            }
                            // HTTP/1.1 clients rarely read trailers; streams end without them.
                            Some(Ok(ReplyFrame::Trailers(_))) => continue,
                            Some(Err(e)) => break e,
                            None => {
                                return format
                                    .end()
                                    .map(|end| (Frame::data(end), (messages, seq, true)))
                            }
                        }
                    };
                    crate::observe::stream_failed(
                        ClientProtocol::Rest,
                        path.as_str(),
                        request_id.as_ref(),
                        &failure,
                    );
                    Some((
                        Frame::data(format.error(&status.to_vec(&failure))),
                        (messages, seq, true),
                    ))
                }
            },
        ))
    }

    pub fn error_response(&self, err: &GatewayError) -> Response<ResponseBody> {
        if let ErrorKind::Denied(d) = &err.kind {
            if !d.body.is_empty() {
                // An authorization service's refusal reaches a REST client
                // as it wrote it.
                let mut resp = Response::new(ResponseBody::full(d.body.to_vec()));
                *resp.status_mut() = d.status;
                let ct = d
                    .content_type
                    .clone()
                    .unwrap_or(HeaderValue::from_static("text/plain; charset=utf-8"));
                resp.headers_mut().insert(CONTENT_TYPE, ct);
                for (name, value) in err.http_headers() {
                    resp.headers_mut().append(name, value);
                }
                return resp;
            }
        }
        let mut resp = Response::new(ResponseBody::full(self.status.to_vec(err)));
        *resp.status_mut() = err.http_status();
        // A backend's error metadata reaches a REST client as headers, as
        // its success metadata does (and as Connect and gRPC carry it);
        // the gateway's own headers below take precedence.
        if let ErrorKind::Backend(b) = &err.kind {
            copy_reply_headers(&b.metadata, resp.headers_mut());
        }
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in err.http_headers() {
            resp.headers_mut().insert(name, value);
        }
        resp
    }
}

/// An error in one line of a streamed body, told which line of the whole
/// body it is, always in front (the parser saw only the line, and calls
/// it line 1: its position keeps the column only).
fn on_line(mut e: GatewayError, number: usize) -> GatewayError {
    fn relabel(text: &mut String, number: usize) {
        // The parser's " at line 1 column C", and the nesting limit's
        // "(line 1 column C)".
        for (at, column) in [
            (" at line 1 column ", " at column "),
            ("(line 1 column ", "(column "),
        ] {
            if let Some(i) = text.rfind(at) {
                text.replace_range(i..i + at.len(), column);
            }
        }
        *text = format!("line {number} of the request: {text}");
    }
    relabel(&mut e.message, number);
    if let ErrorKind::InvalidRequest { violations } = &mut e.kind {
        for v in violations {
            relabel(&mut v.description, number);
        }
    }
    e
}

/// The `Content-Type` of a backend's `google.api.HttpBody`: its own, or
/// `application/octet-stream` when empty. A type no header can carry (a
/// line break in it) is the backend's bad reply, said so.
fn http_body_content_type(content_type: &str) -> Result<HeaderValue, GatewayError> {
    if content_type.is_empty() {
        return Ok(HeaderValue::from_static("application/octet-stream"));
    }
    HeaderValue::from_str(content_type).map_err(|_| {
        response::bad_reply(format!(
            "its google.api.HttpBody content_type {:?} is not a valid Content-Type header value",
            crate::error::shortened(content_type, 256)
        ))
    })
}

/// One message of an HttpBody stream: its content type and its bytes.
fn raw_part(binding: &Binding, bytes: &[u8]) -> Result<(String, Bytes), GatewayError> {
    Ok(match response::unary(binding, bytes)? {
        HttpReplyBody::Raw { content_type, data } => (content_type, data),
        HttpReplyBody::Json(json) => ("application/json".to_owned(), Bytes::from(json)),
    })
}

/// An upload's next bytes, waited for up to `stream_idle_timeout`; `None`
/// once the body has ended. A read that fails (the client gone, broken
/// framing) is the error the stream ends with; trailers carry nothing a
/// message takes. The call's deadline is the backend call's to enforce, as
/// it is for every protocol's client stream.
async fn next_data(
    body: &mut IncomingBody,
    idle: std::time::Duration,
) -> Result<Option<Bytes>, GatewayError> {
    loop {
        let frame =
            super::framed::next_frame(body, (idle, super::framed::STREAM_IDLE_TIMEOUT), None)
                .await?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(super::framed::body_error(
                    &e,
                    "could not read the request stream",
                ))
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A client-streaming request body: newline-delimited JSON, one message per
/// line, decoded as lines arrive. Path and query fill the first message.
fn ndjson_messages(
    body: IncomingBody,
    binding: Arc<Binding>,
    segments: Vec<String>,
    query: Option<String>,
    max_line: usize,
    idle: std::time::Duration,
) -> MessageStream {
    struct State {
        body: IncomingBody,
        lines: LineSplitter,
        queue: VecDeque<(usize, Bytes)>,
        first: bool,
        done: bool,
    }
    let state = State {
        body,
        lines: LineSplitter::default(),
        queue: VecDeque::new(),
        first: true,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, move |mut st| {
        let binding = binding.clone();
        let segments = segments.clone();
        let query = query.clone();
        async move {
            loop {
                if let Some((number, line)) = st.queue.pop_front() {
                    let url_segments: Vec<&str> = segments.iter().map(String::as_str).collect();
                    let url = st.first.then_some(UrlParts {
                        segments: &url_segments,
                        query: query.as_deref(),
                    });
                    st.first = false;
                    let message =
                        request::build(&binding, url, &line, None).map_err(|e| on_line(e, number));
                    if message.is_err() {
                        st.done = true;
                        st.queue.clear();
                    }
                    return Some((message, st));
                }
                if st.done {
                    return None;
                }
                match next_data(&mut st.body, idle).await {
                    Err(err) => {
                        st.done = true;
                        return Some((Err(err), st));
                    }
                    Ok(Some(data)) => {
                        st.queue.extend(st.lines.push(&data));
                        // A line may arrive whole in one chunk: each is
                        // measured, not only the one still arriving.
                        let longest = st.queue.iter().map(|(_, l)| l.len()).max();
                        if st.lines.pending().max(longest.unwrap_or(0)) > max_line {
                            st.queue.clear();
                            st.done = true;
                            return Some((
                                Err(GatewayError::payload_too_large(
                                    max_line,
                                    crate::config::MESSAGE_LIMIT,
                                )),
                                st,
                            ));
                        }
                    }
                    Ok(None) => {
                        st.done = true;
                        match st.lines.finish() {
                            Some((_, last)) if last.len() > max_line => {
                                st.queue.clear();
                                return Some((
                                    Err(GatewayError::payload_too_large(
                                        max_line,
                                        crate::config::MESSAGE_LIMIT,
                                    )),
                                    st,
                                ));
                            }
                            last => st.queue.extend(last),
                        }
                    }
                }
            }
        }
    }))
}

/// A stream of `google.api.HttpBody` from a REST body: the bytes are not
/// lines but one upload, so the body is cut into messages as it arrives,
/// every byte kept and in order, each with the request's `Content-Type`;
/// the first also takes the URL's fields. Joined, the messages' `data` is
/// the body. What has arrived is sent together, up to the message limit
/// less room for the rest of the message: a client writing the body a
/// byte at a time does not make a message of each byte.
fn raw_body_messages(
    body: IncomingBody,
    binding: Arc<Binding>,
    segments: Vec<String>,
    query: Option<String>,
    content_type: Option<String>,
    max_message: usize,
    idle: std::time::Duration,
) -> MessageStream {
    use futures_util::FutureExt;
    struct State {
        body: IncomingBody,
        pending: bytes::BytesMut,
        first: bool,
        /// The body has ended (or failed: then `failed` says why, once
        /// what arrived before is sent).
        done: bool,
        failed: Option<GatewayError>,
    }
    let state = State {
        body,
        pending: bytes::BytesMut::new(),
        first: true,
        done: false,
        failed: None,
    };
    // The tags and lengths of `content_type` and `data` take a few bytes.
    let max_data = max_message
        .saturating_sub(content_type.as_deref().map_or(0, str::len) + 16)
        .max(1);
    Box::pin(futures_util::stream::unfold(state, move |mut st| {
        let binding = binding.clone();
        let segments = segments.clone();
        let query = query.clone();
        let content_type = content_type.clone();
        async move {
            // The next message: at most `max_data` of what has arrived.
            let send = |mut st: State| {
                let piece = st.pending.split_to(st.pending.len().min(max_data)).freeze();
                let url_segments: Vec<&str> = segments.iter().map(String::as_str).collect();
                let url = st.first.then_some(UrlParts {
                    segments: &url_segments,
                    query: query.as_deref(),
                });
                st.first = false;
                let message = request::build(&binding, url, &piece, content_type.as_deref());
                if message.is_err() {
                    st.done = true;
                    st.failed = None;
                    st.pending.clear();
                }
                Some((message, st))
            };
            loop {
                if !st.pending.is_empty() && (st.done || st.pending.len() >= max_data) {
                    return send(st);
                }
                if st.done {
                    return st.failed.take().map(|e| (Err(e), st));
                }
                if st.pending.is_empty() {
                    match next_data(&mut st.body, idle).await {
                        Ok(Some(data)) => st.pending.extend_from_slice(&data),
                        Ok(None) => st.done = true,
                        Err(err) => {
                            st.done = true;
                            return Some((Err(err), st));
                        }
                    }
                }
                // Whatever else has already arrived goes in the same message
                // (looked at once, so no idle timer is armed for it).
                while !st.done && st.pending.len() < max_data {
                    match next_data(&mut st.body, std::time::Duration::MAX).now_or_never() {
                        None => break,
                        Some(Ok(Some(data))) => st.pending.extend_from_slice(&data),
                        Some(Ok(None)) => st.done = true,
                        Some(Err(err)) => {
                            st.done = true;
                            st.failed = Some(err);
                        }
                    }
                }
                // Not enough for a full message and the body goes on: send
                // what there is rather than wait on a slow client.
                if !st.pending.is_empty() && !st.done {
                    return send(st);
                }
            }
        }
    }))
}

/// The success status a backend asked for through `x-http-status`
/// (2xx or 3xx), else 200.
fn success_status(metadata: &HeaderMap) -> StatusCode {
    let Some(asked) = metadata.get(HTTP_STATUS_METADATA) else {
        return StatusCode::OK;
    };
    let status = crate::headers::asked_http_status(metadata)
        .filter(|c| (200..400).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    status.unwrap_or_else(|| {
        // A backend's mistake the client cannot see: the call succeeded,
        // so it gets 200, and the operator gets told.
        tracing::warn!(
            value = ?asked,
            "the backend's x-http-status is not a 2xx or 3xx status; the reply is a 200"
        );
        StatusCode::OK
    })
}

/// A stream's status: as a unary reply's, except that one HTTP allows no
/// content (`204`, `205`, `304`) is a `200`, since the stream's messages
/// are its content (HTTP/1.1 would drop them, HTTP/2 would fail the
/// stream).
fn stream_status(metadata: &HeaderMap) -> StatusCode {
    let status = success_status(metadata);
    if has_no_content(status) {
        tracing::warn!(
            status = status.as_u16(),
            "the backend's x-http-status allows no content, and a stream's reply has its messages; the reply is a 200"
        );
        return StatusCode::OK;
    }
    status
}

/// Statuses that carry no content (RFC 9110 sections 15.3.5, 15.3.6 and
/// 15.4.5).
fn has_no_content(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED
    )
}

/// Backend metadata becomes response headers, except the framing headers,
/// binary (`-bin`) entries and the status convention itself.
fn copy_reply_headers(metadata: &HeaderMap, out: &mut HeaderMap) {
    for (name, value) in metadata {
        if reaches_client(name) && !name.as_str().ends_with("-bin") && *name != HTTP_STATUS_METADATA
        {
            out.append(name.clone(), value.clone());
        }
    }
}
