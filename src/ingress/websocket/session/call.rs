//! One call of a WebSocket connection, in its own task: builds the envelope
//! through the request edge, drives it down the pipeline, and hands the
//! reply's frames to the writer; the call's input ends well only on the
//! client's `end`.

use super::super::protocol::{self, Dialect, ServerFrame};
use super::super::{CallSpec, WebSocketIngress};
use super::writer::Outgoing;
use crate::envelope::{Payload, ReplyFrame};
use crate::error::{GatewayError, WsClose};
use crate::ingress::edge::{reaches_client, request_id, Inbound};
use crate::transcode::{json, response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tower::ServiceExt;

pub(super) struct CallTask {
    pub(super) ingress: Arc<WebSocketIngress>,
    pub(super) dialect: Dialect,
    pub(super) id: String,
    pub(super) spec: Arc<CallSpec>,
    pub(super) headers: HeaderMap,
    pub(super) client: Option<SocketAddr>,
    pub(super) client_cert: Option<Arc<crate::envelope::ClientCertificate>>,
    pub(super) over_tls: bool,
    /// Taken by the call once it starts.
    pub(super) input: Option<mpsc::Receiver<Bytes>>,
    pub(super) ended: Arc<AtomicBool>,
    /// Claimed by whoever gives the call its status: the call itself, or
    /// the session cancelling it or shutting down. One status per call.
    pub(super) settled: Arc<AtomicBool>,
    pub(super) first: Option<Bytes>,
    pub(super) out: mpsc::Sender<Outgoing>,
    pub(super) done: mpsc::UnboundedSender<(String, u64)>,
    pub(super) seq: u64,
    pub(super) single: bool,
    /// The call's access-log record.
    pub(super) record: Arc<crate::observe::call_record::CallRecord>,
}

pub(super) async fn call_task(mut t: CallTask) {
    let result = drive(&mut t).await;
    if t.settled.swap(true, Ordering::AcqRel) {
        // The session ended it (a cancel, shutdown) and told the client.
        return;
    }
    match &result {
        // The client left: recorded as a call abandoned on any protocol.
        Err(e)
            if matches!(e.kind, crate::error::ErrorKind::Cancelled)
                && e.origin == crate::error::Origin::Client =>
        {
            t.record.abandoned()
        }
        Err(e) => t.record.failed_finally(e),
        Ok(_) => {}
    }
    finish(&t.ingress, t.dialect, &t.out, &t.id, result, t.single).await;
    let _ = t.done.send((t.id.clone(), t.seq));
}

/// Runs the call; returns its trailers, or the error that ended it.
async fn drive(t: &mut CallTask) -> Result<HeaderMap, GatewayError> {
    let target = t.spec.target.clone();
    let mut input = t.input.take().expect("a call starts once");
    let payload = if target.kind.client_streams() {
        let ended = t.ended.clone();
        let mut closed = false;
        // A client stream with no message for this long ends, as on every
        // protocol. The timer is moved only when it fires, not per message.
        let idle = t.ingress.stream_idle_timeout;
        let mut last = tokio::time::Instant::now();
        let mut timer = Box::pin(tokio::time::sleep(idle));
        let mut polled = false;
        Payload::Stream(Box::pin(futures_util::stream::poll_fn(move |cx| {
            use std::task::Poll;
            if closed {
                return Poll::Ready(None);
            }
            // Counted from when the call reads its input, as on the other
            // protocols: time spent in the policies is not the client's.
            if !polled {
                polled = true;
                last = tokio::time::Instant::now();
                timer.as_mut().reset(last + idle);
            }
            loop {
                match input.poll_recv(cx) {
                    Poll::Ready(Some(m)) => {
                        last = tokio::time::Instant::now();
                        return Poll::Ready(Some(Ok(m)));
                    }
                    Poll::Ready(None) if ended.load(Ordering::Acquire) => return Poll::Ready(None),
                    Poll::Ready(None) => {
                        closed = true;
                        return Poll::Ready(Some(Err(GatewayError::new(
                            crate::error::ErrorKind::Cancelled,
                            crate::error::Origin::Client,
                            "the client abandoned the call before ending its input",
                        ))));
                    }
                    Poll::Pending => {}
                }
                if std::future::Future::poll(timer.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
                if last.elapsed() >= idle {
                    closed = true;
                    return Poll::Ready(Some(Err(GatewayError::client_timeout(
                        crate::ingress::framed::STREAM_IDLE_TIMEOUT,
                        idle,
                    ))));
                }
                timer.as_mut().reset(last + idle);
            }
        })))
    } else {
        match t.first.take() {
            Some(m) => Payload::Unary(m),
            // The one request message is held to the same idle bound as a
            // stream's messages: a client that never sends it does not hold
            // the call (and its slot) for as long as pongs keep it alive.
            None => {
                let idle = t.ingress.stream_idle_timeout;
                match tokio::time::timeout(idle, input.recv()).await {
                    Ok(Some(m)) => Payload::Unary(m),
                    Ok(None) => {
                        return Err(GatewayError::invalid_field(
                            "",
                            "the input ended before the request message",
                        ))
                    }
                    Err(_) => {
                        return Err(GatewayError::client_timeout(
                            crate::ingress::framed::STREAM_IDLE_TIMEOUT,
                            idle,
                        ))
                    }
                }
            }
        }
    };
    let inbound = Inbound {
        headers: std::mem::take(&mut t.headers),
        client_cert: t.client_cert.clone(),
        over_tls: t.over_tls,
        record: Some(t.record.clone()),
    };
    let envelope =
        t.ingress
            .edge
            .envelope(inbound, target.clone(), payload, t.client, Instant::now());
    let reply = t.ingress.pipeline.clone().oneshot(envelope).await?;
    let headers = metadata_json(&reply.metadata);
    if !headers.is_empty() {
        if let Some(out) = protocol::render(t.dialect, &t.id, ServerFrame::Headers(&headers)) {
            t.out.send(Outgoing::Frame(out)).await.map_err(|_| gone())?;
        }
    }
    let output = target.method.output();
    let options = json::output(
        &t.ingress.routes.json_options(target.route),
        target.reply_json_direct,
    );
    let mut body = reply.body;
    while let Some(frame) = body.next().await {
        match frame? {
            ReplyFrame::Message(m) => {
                let payload = match (t.dialect, &t.spec.binding) {
                    (Dialect::Proto, _) => m,
                    // A REST path's reply is what that binding's HTTP reply
                    // would be: its response_body field when it names one.
                    (_, Some(binding)) if binding.response_body.is_some() => {
                        Bytes::from(response::stream_message_json(binding, &m, &options)?)
                    }
                    _ => Bytes::from(response::message_json(&output, &m, &options)?),
                };
                if let Some(out) = protocol::render(t.dialect, &t.id, ServerFrame::Message(payload))
                {
                    // Waits while the socket is slow: this is the backpressure.
                    t.out.send(Outgoing::Frame(out)).await.map_err(|_| gone())?;
                }
            }
            ReplyFrame::Trailers(trailers) => return Ok(trailers),
        }
    }
    Ok(HeaderMap::new())
}

/// The client left while the call was writing to it: the call was
/// abandoned, as when it leaves at any other moment.
fn gone() -> GatewayError {
    GatewayError::new(
        crate::error::ErrorKind::Cancelled,
        crate::error::Origin::Client,
        "the client went away",
    )
}

pub(super) async fn finish(
    ingress: &WebSocketIngress,
    dialect: Dialect,
    out: &mpsc::Sender<Outgoing>,
    id: &str,
    result: Result<HeaderMap, GatewayError>,
    single: bool,
) {
    let (status, trailers, code, message) = match &result {
        Ok(trailers) => (
            serde_json::json!({"code": 0, "message": "", "details": []}),
            metadata_json(trailers),
            tonic::Code::Ok,
            String::new(),
        ),
        Err(err) => {
            let mut trailers = match &err.kind {
                crate::error::ErrorKind::Backend(b) => metadata_json(&b.metadata),
                _ => serde_json::Map::new(),
            };
            // What an HTTP client gets as headers (Retry-After,
            // RateLimit-*, the overload and authentication hints, a
            // denial's headers), under the rule a backend's are: no
            // framing header, and the call's own request id.
            let mut headers = HeaderMap::new();
            for (name, value) in err.http_headers() {
                headers.append(name, value);
            }
            trailers.extend(metadata_json(&headers));
            (
                ingress.status.to_json(err),
                trailers,
                err.grpc_code(),
                err.message.clone(),
            )
        }
    };
    if let Err(err) = &result {
        // The levels of every protocol: warnings are about the operator's
        // systems, not about clients.
        let code = err.grpc_code() as i32;
        let origin = err.origin.as_str();
        crate::observe::failure_event!(err.origin, target: "portico::access", protocol = "websocket", call = id, code, origin, error = err.message.as_str(), "websocket call ended with an error");
    }
    if let Some(frame) = protocol::render(
        dialect,
        id,
        ServerFrame::Status {
            status: &status,
            trailers: &trailers,
        },
    ) {
        let _ = out.send(Outgoing::Frame(frame)).await;
    }
    if single {
        // The plain dialect has no status frame: its close code carries the status.
        let (code, reason) = match dialect {
            Dialect::Plain => (WsClose::CallEnded(code), protocol::close_reason(&message)),
            _ => (WsClose::CallEnded(tonic::Code::Ok), String::new()),
        };
        let _ = out.send(Outgoing::Close(code, reason)).await;
    }
}

/// Metadata as a JSON object of strings. A binary (`-bin`) entry is its
/// base64 text as gRPC carries it, as gRPC-Web and Connect clients get it.
/// A backend's `x-request-id` is the call's own (its request scope's), as
/// the gateway's id replaces a backend's in every protocol's replies.
fn metadata_json(h: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (name, value) in h {
        if !reaches_client(name) {
            continue;
        }
        if *name == request_id::HEADER {
            if let Some(id) = crate::observe::request_scope::current() {
                if let Ok(id) = id.to_str() {
                    m.insert(
                        name.as_str().to_owned(),
                        serde_json::Value::String(id.to_owned()),
                    );
                }
            }
            continue;
        }
        if let Ok(v) = value.to_str() {
            crate::ingress::edge::add_json_metadata(&mut m, name, v);
        }
    }
    m
}
