//! gRPC egress: one attempt of a call on one endpoint's pooled HTTP/2
//! connections, with the raw codec, every call made in streaming shape so
//! headers, messages and trailers reach the ingress as the backend sent them.
//!
//! The deadline covers the whole call: it is sent as `grpc-timeout` and also
//! enforced here, so a backend that ignores it is still cut off. Dropping a
//! call (deadline, client gone, bad client message) resets the HTTP/2
//! stream, which the backend sees as a cancellation.
//!
//! A client stream that fails (an aborted upload, a cancelled WebSocket
//! call) resets the backend's stream with CANCEL and never ends it:
//! END_STREAM is sent only when the client's input ended well, so a backend
//! never reads a cut-off upload as complete.

use super::codec::RawCodec;
use super::upstream::endpoint::{Endpoint, StreamSlot};
use super::upstream::{overloaded, AttemptError};
use crate::config::Limits;
use crate::envelope::{Envelope, MessageStream, Payload, Reply, ReplyFrame, ReplyStream};
use crate::error::{ErrorKind, GatewayError, Origin};
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tonic::client::Grpc;
use tonic::metadata::MetadataMap;

#[derive(Clone)]
pub struct GrpcEgress {
    max_message_bytes: usize,
    /// `server.limits.upstream_header_timeout`.
    header_timeout: std::time::Duration,
    /// `server.limits.stream_idle_timeout`.
    idle_timeout: std::time::Duration,
}

impl GrpcEgress {
    pub fn new(limits: &Limits) -> GrpcEgress {
        GrpcEgress {
            max_message_bytes: limits.max_grpc_message_bytes,
            header_timeout: limits.upstream_header_timeout,
            idle_timeout: limits.stream_idle_timeout,
        }
    }

    /// One attempt of a call on one endpoint, on a stream slot of one of
    /// its pooled connections.
    pub async fn attempt(&self, ep: Arc<Endpoint>, env: Envelope) -> Result<Reply, AttemptError> {
        let pool = ep.pool.as_ref().ok_or_else(|| {
            AttemptError::from_error(
                GatewayError::internal("a gRPC endpoint without connections"),
                false,
            )
        })?;
        let Some(slot) = pool.stream() else {
            return Err(AttemptError {
                error: overloaded(&env.target.upstream_name, "max_pending"),
                unreached: false,
                endpoint_fault: false,
            });
        };
        let grpc = Grpc::new(super::non_grpc::NonGrpcReplies(slot.channel()));
        let bounds = (self.max_message_bytes, self.idle_timeout);
        self.call(grpc, env, Some(slot), bounds).await
    }

    /// A call of one of the gateway's own services, answered in process by
    /// `service` as a backend would answer it. Its replies are the
    /// gateway's own, so no bound on a backend's applies: a reflection
    /// reply may be a large schema file, and a health `Watch` may stay
    /// quiet for as long as the client keeps it.
    pub async fn local(
        &self,
        service: super::local::LocalService,
        env: Envelope,
    ) -> Result<Reply, GatewayError> {
        let bounds = (usize::MAX, std::time::Duration::MAX);
        self.call(Grpc::new(service), env, None, bounds)
            .await
            .map_err(|failed| failed.error)
    }

    /// The call on `grpc`: a stream slot of a backend connection (held
    /// until the reply ends), or a service in process; `bounds` are the
    /// largest reply message and the longest wait for the next one.
    async fn call<T>(
        &self,
        grpc: Grpc<T>,
        env: Envelope,
        slot: Option<StreamSlot>,
        (max_message_bytes, idle): (usize, std::time::Duration),
    ) -> Result<Reply, AttemptError>
    where
        T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
        T::Future: Send,
        T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
        <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
    {
        // Only replies are bounded here. What the gateway sends was built
        // from client input that its own limits already bound (a REST body
        // and URL, a WebSocket message), and may come out a little larger
        // than any one of them: a body wrapped in its request message, path
        // values added to it. Refusing it would blame the backend for it.
        let mut grpc = grpc
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(usize::MAX);
        grpc.ready().await.map_err(|e| {
            AttemptError::from_error(
                GatewayError::new(
                    ErrorKind::BackendUnavailable,
                    Origin::Backend,
                    format!(
                        "backend unavailable: {}",
                        crate::error::with_causes(&*Into::<tonic::codegen::StdError>::into(e))
                    ),
                ),
                true,
            )
        })?;

        let mut deadline = env
            .timeout
            .map(|t| Box::pin(tokio::time::sleep_until(Instant::now() + t)));
        let (messages, mut client_failed, client_activity) = match env.payload {
            Payload::Unary(message) => (GuardedStream::One(Some(message)), None, None),
            Payload::Stream(messages) => {
                let (stream, rx, activity) = GuardedStream::new(messages);
                (stream, Some(rx), Some(activity))
            }
        };
        // The gateway reads only uncompressed replies, whatever the client
        // takes: a backend told nothing may compress (grpc-core does).
        let mut metadata = env.metadata;
        metadata.insert(
            http::header::HeaderName::from_static("grpc-accept-encoding"),
            http::HeaderValue::from_static("identity"),
        );
        if let Some(t) = env.timeout {
            metadata.insert(crate::headers::GRPC_TIMEOUT, grpc_timeout(t));
        }
        let mut request = tonic::Request::from_parts(
            MetadataMap::from_headers(metadata),
            Default::default(),
            messages,
        );
        // A client stream may still be open when the call is left (an
        // error, the deadline, the caller dropping it): then the backend's
        // stream is reset. A unary request has ended by then already, and
        // hyper resets a stream whose reply has not started; it pays nothing.
        let cancel = CancelOnDrop(
            client_failed
                .is_some()
                .then(|| request.cancellation_handle()),
        );
        // A backend that takes a call and never answers is cut off. A
        // client-streaming backend may answer only once the whole upload is
        // in, so there the idle timeout of the client's stream applies.
        let header_timeout = self.header_timeout;
        let bounded = client_failed.is_none();
        let unary_reply = !env.target.kind.server_streams();
        let call = async move {
            let call = grpc.streaming(request, env.target.path.clone(), RawCodec);
            if bounded {
                tokio::time::timeout(header_timeout, call).await
            } else {
                Ok(call.await)
            }
        };
        // The backend may answer only after the client's whole stream (client
        // streaming), so a bad client message and the deadline race the call.
        let reached = |e: GatewayError| AttemptError::from_error(e, false);
        let deadline_at = deadline_of(&deadline);
        let upload = client_activity.as_deref().filter(|_| unary_reply);
        let response = tokio::select! {
            biased;
            Some(err) = client_error(&mut client_failed) => return Err(reached(err)),
            _ = expiry(&mut deadline) => return Err(reached(deadline_error(upload))),
            r = call => match r {
                Ok(r) => r.map_err(|s| {
                    let err = backend_error(&s, max_message_bytes, deadline_at);
                    AttemptError::from_error(err, never_reached(&s))
                })?,
                Err(_) => {
                    return Err(reached(GatewayError::upstream_timeout(
                        crate::config::UPSTREAM_HEADER_TIMEOUT,
                        header_timeout,
                    )))
                }
            },
        };
        let (metadata, mut inner, _) = response.into_parts();
        let metadata = metadata.into_headers();
        if unary_reply && client_failed.is_none() {
            // A unary call: its whole reply is read here, so the attempt is
            // judged on the backend's status, not on its headers alone.
            let failed =
                |e: GatewayError| AttemptError::from_error(e.with_reply_headers(&metadata), false);
            let mut message = None;
            loop {
                let next = next_message(
                    &mut inner,
                    &mut client_failed,
                    &mut deadline,
                    (idle, None),
                    max_message_bytes,
                );
                match next.await {
                    Ok(Some(m)) if message.is_none() => message = Some(m),
                    Ok(Some(_)) => return Err(failed(GatewayError::reply_with_extra_message())),
                    Ok(None) => break,
                    Err(e) => return Err(failed(e)),
                }
            }
            let message = message.ok_or_else(|| failed(GatewayError::reply_without_message()))?;
            let trailers = trailers_of(&mut inner).await;
            return Ok(Reply::complete(metadata, message, trailers));
        }
        Ok(Reply {
            metadata,
            body: reply_stream(CallState {
                inner,
                client_failed,
                // A bidirectional backend answers as it goes: its silence
                // is its own.
                client_activity: client_activity.filter(|_| unary_reply),
                deadline,
                idle,
                max_message_bytes,
                unary_reply,
                held: None,
                ended_ok: false,
                done: false,
                cancel,
                _slot: slot,
            }),
        })
    }
}

/// `grpc-timeout` for `t`, in the most precise unit that fits the
/// protocol's eight digits (as tonic writes it), formatted without the
/// intermediate strings tonic's `set_timeout` makes on every call. Never
/// indexed: what is left of a deadline differs on every call, and each
/// value put in the connection's header table would push out the entries
/// every call reuses.
fn grpc_timeout(t: std::time::Duration) -> http::HeaderValue {
    use std::io::Write;
    const MAX: u128 = 99_999_999;
    let minutes = u128::from(t.as_secs() / 60);
    let (value, unit) = [
        (t.as_nanos(), 'n'),
        (t.as_micros(), 'u'),
        (t.as_millis(), 'm'),
        (u128::from(t.as_secs()), 'S'),
        (minutes, 'M'),
        (minutes / 60, 'H'),
    ]
    .into_iter()
    .find(|(v, _)| *v <= MAX)
    .unwrap_or((MAX, 'H'));
    let mut buf = [0u8; 16];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = write!(cursor, "{value}{unit}").is_ok();
    let len = cursor.position() as usize;
    let value = match written {
        true => http::HeaderValue::from_bytes(&buf[..len]),
        false => http::HeaderValue::from_bytes(b"99999999H"),
    };
    crate::headers::never_indexed(value.unwrap_or(http::HeaderValue::from_static("99999999H")))
}

/// Resolves with the client's stream error, or `None` once its stream ended
/// well (the receiver is then cleared, as a oneshot may not be polled again);
/// pends forever when there is nothing to watch.
async fn client_error(rx: &mut Option<oneshot::Receiver<GatewayError>>) -> Option<GatewayError> {
    let Some(receiver) = rx.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = receiver.await.ok();
    *rx = None;
    outcome
}

/// How close to the call's deadline a backend's own timeout counts as that
/// deadline: the two timers start a network hop apart and tick separately.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(20);

fn deadline_of(deadline: &Option<Pin<Box<Sleep>>>) -> Option<Instant> {
    deadline.as_ref().map(|d| d.deadline())
}

async fn expiry(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(d) => d.as_mut().await,
        None => std::future::pending().await,
    }
}

struct CallState {
    inner: tonic::Streaming<Bytes>,
    client_failed: Option<oneshot::Receiver<GatewayError>>,
    /// The client's stream's progress, for a call with one.
    client_activity: Option<Arc<ClientActivity>>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Longest wait for the backend's next message.
    idle: std::time::Duration,
    /// `server.limits.max_grpc_message_bytes`.
    max_message_bytes: usize,
    /// Replies to a method that does not stream its reply: exactly one
    /// message, or the call fails (as a gRPC client's own stub would
    /// fail it), whichever protocol the client speaks. The message is
    /// held until the backend's status, so no client sees it from a call
    /// that then fails for a second one.
    unary_reply: bool,
    held: Option<Bytes>,
    /// The backend ended the call `OK` after the held message, which has
    /// been handed on: its trailers come next.
    ended_ok: bool,
    done: bool,
    cancel: CancelOnDrop,
    /// The connection's stream slot, held while the call runs (none for
    /// the gateway's own services).
    _slot: Option<StreamSlot>,
}

/// Resets the backend's stream (RST_STREAM CANCEL) when the call is left,
/// even while the request stream is still open: a client stream that failed
/// pends instead of ending, so this reset is what the backend sees. After a
/// request stream that ended well it changes nothing on the wire.
struct CancelOnDrop(Option<tonic::CancellationHandle>);

impl CancelOnDrop {
    fn cancel(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.cancel();
        }
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// The gateway's error for a backend call that failed with `status`. tonic
/// refuses a reply message over the gateway's decoding limit by its length
/// prefix, before buffering it, and reports it as a local OUT_OF_RANGE with
/// no trailers naming the limit: that is the backend's reply at fault (502 /
/// INTERNAL), not the client's request. A backend's own OUT_OF_RANGE (even
/// its own tonic refusing a message over *its* limit) names another limit
/// or carries trailers, and passes through as the backend's status.
///
/// A backend enforces the `grpc-timeout` it was sent with its own timer,
/// which can fire a moment before the gateway's: its CANCELLED ("Timeout
/// expired", as tonic words it) or DEADLINE_EXCEEDED at the call's
/// deadline is the deadline passing, and is answered as the gateway's own
/// deadline error on every protocol (504 / DEADLINE_EXCEEDED), never as a
/// client cancellation.
fn backend_error(status: &tonic::Status, limit: usize, deadline: Option<Instant>) -> GatewayError {
    let at_deadline = deadline.is_some_and(|d| Instant::now() + DEADLINE_SLACK >= d);
    if at_deadline
        && matches!(
            status.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        )
    {
        return GatewayError::deadline_exceeded();
    }
    let ours = status.code() == tonic::Code::OutOfRange
        && status.metadata().is_empty()
        && status
            .message()
            .starts_with("Error, decoded message length too large: ")
        && status
            .message()
            .ends_with(&format!("the limit is: {limit} bytes"));
    if ours {
        let sizes = status
            .message()
            .trim_start_matches("Error, decoded message length too large: ");
        return GatewayError::new(
            ErrorKind::BadBackendReply,
            Origin::Backend,
            format!(
                "the backend's reply message is over server.limits.max_grpc_message_bytes ({sizes})"
            ),
        );
    }
    // tonic's own refusal of a compressed message: the backend compressed
    // although the call said it takes only identity.
    if status.code() == tonic::Code::Unimplemented
        && status.metadata().get("grpc-accept-encoding").is_some()
        && status.metadata().len() == 1
        && status.message().starts_with("Content is compressed with `")
    {
        let encoding = status
            .message()
            .trim_start_matches("Content is compressed with `")
            .split('`')
            .next()
            .unwrap_or_default();
        return GatewayError::new(
            ErrorKind::BadBackendReply,
            Origin::Backend,
            format!(
                "the backend compressed its reply with {encoding}, though the call said grpc-accept-encoding: identity; the gateway reads only uncompressed replies"
            ),
        );
    }
    GatewayError::from_backend_status(status)
}

/// Whether a failed call surely never reached the backend's handler: the
/// connection could not be made, HTTP/2 refused the stream (a server at its
/// stream limit, or one going away that had not started it), or the
/// connection closed while the request still waited to be written.
fn never_reached(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
            {
                return true;
            }
        }
        // hyper cancels requests still queued on a connection that closed
        // (a backend going away) before writing them.
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("tcp connect error") || text.contains("dns error") {
            return true;
        }
        source = e.source();
    }
    false
}

/// The backend's messages, then its trailers; or the first error (the
/// backend's status, the deadline, or the client's bad message).
fn reply_stream(state: CallState) -> ReplyStream {
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.ended_ok {
            st.done = true;
            let trailers = trailers_of(&mut st.inner).await;
            return Some((Ok(ReplyFrame::Trailers(trailers)), st));
        }
        loop {
            let outcome = next_message(
                &mut st.inner,
                &mut st.client_failed,
                &mut st.deadline,
                (st.idle, st.client_activity.as_deref()),
                st.max_message_bytes,
            )
            .await;
            let outcome = match outcome {
                Ok(Some(message)) if st.unary_reply => {
                    if st.held.is_some() {
                        Err(GatewayError::reply_with_extra_message())
                    } else {
                        st.held = Some(message);
                        continue;
                    }
                }
                // Ok(None) is the backend's OK status: its errors are Err.
                Ok(None) if st.unary_reply && st.held.is_none() => {
                    Err(GatewayError::reply_without_message())
                }
                other => other,
            };
            return match outcome {
                Ok(Some(message)) => Some((Ok(ReplyFrame::Message(message)), st)),
                Ok(None) => match st.held.take() {
                    Some(message) => {
                        st.ended_ok = true;
                        Some((Ok(ReplyFrame::Message(message)), st))
                    }
                    None => {
                        st.done = true;
                        let trailers = trailers_of(&mut st.inner).await;
                        Some((Ok(ReplyFrame::Trailers(trailers)), st))
                    }
                },
                Err(err) => {
                    st.done = true;
                    st.cancel.cancel();
                    Some((Err(err), st))
                }
            };
        }
    }))
}

/// The backend's next message (`None` at its OK status), or the call's
/// failure: the backend's status, the deadline, a wait for the message
/// past `idle` while the client (`activity`, for a call with a client
/// stream) was not sending either, or the client's bad message.
async fn next_message(
    inner: &mut tonic::Streaming<Bytes>,
    client_failed: &mut Option<oneshot::Receiver<GatewayError>>,
    deadline: &mut Option<Pin<Box<Sleep>>>,
    (idle, activity): (std::time::Duration, Option<&ClientActivity>),
    max_message_bytes: usize,
) -> Result<Option<Bytes>, GatewayError> {
    let deadline_at = deadline_of(deadline);
    if let Some(ready) = ready_message(inner, client_failed, deadline) {
        return ready.map_err(|failed| match failed {
            Failed::Client(err) => err,
            Failed::Backend(s) => backend_error(&s, max_message_bytes, deadline_at),
        });
    }
    let message = inner.message();
    tokio::pin!(message);
    // A bound too far to reach (the gateway's own endless Watch) sets no
    // timer at all.
    let mut quiet_until = Instant::now().checked_add(idle);
    loop {
        return tokio::select! {
            biased;
            failed = client_error(client_failed) => match failed {
                Some(err) => Err(err),
                // The client's stream ended well; nothing more to watch.
                None => continue,
            },
            _ = expiry(deadline) => Err(deadline_error(activity)),
            m = &mut message => m.map_err(|s| backend_error(&s, max_message_bytes, deadline_at)),
            _ = quiet(quiet_until) => match activity {
                // A client-streaming backend may answer only once the
                // upload is in: its silence counts from the client's last
                // message (or the upload's end) if that came later. When
                // that too is `idle` ago, the silence is the client's if
                // the gateway was waiting on it, and the backend's if the
                // backend had stopped taking the upload.
                Some(a) => match a.last().and_then(|at| at.checked_add(idle)) {
                    Some(next) if next > Instant::now() => {
                        quiet_until = Some(next);
                        continue;
                    }
                    _ if a.waiting_on_client() => Err(GatewayError::client_timeout(
                        crate::config::STREAM_IDLE_TIMEOUT,
                        idle,
                    )),
                    _ => Err(GatewayError::upstream_timeout(
                        crate::config::STREAM_IDLE_TIMEOUT,
                        idle,
                    )),
                },
                None => Err(GatewayError::upstream_timeout(
                    crate::config::STREAM_IDLE_TIMEOUT,
                    idle,
                )),
            },
        };
    }
}

/// The call's deadline passing: the client's fault when the gateway was
/// waiting on a client-streaming call's client (`upload`) for more of its
/// request, as it is for a unary request still arriving; else the deadline
/// the gateway enforces while the backend works.
fn deadline_error(upload: Option<&ClientActivity>) -> GatewayError {
    match upload {
        Some(a) if a.waiting_on_client() => GatewayError::deadline_passed_during_upload(),
        _ => GatewayError::deadline_exceeded(),
    }
}

/// Resolves at `until`; never, without one.
async fn quiet(until: Option<Instant>) {
    match until {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The outcome of [`next_message`] when it is known without waiting: the
/// client's stream failure if it has come, else the backend's next message
/// (or its status) if it is already in and the deadline has not passed,
/// checked in the waiting path's order. Messages of a busy stream mostly
/// arrive several to a read, and this spares each one a timer set and
/// cancelled; `None` sends the caller to wait.
fn ready_message(
    inner: &mut tonic::Streaming<Bytes>,
    client_failed: &mut Option<oneshot::Receiver<GatewayError>>,
    deadline: &mut Option<Pin<Box<Sleep>>>,
) -> Option<Result<Option<Bytes>, Failed>> {
    use futures_util::FutureExt;
    if let Some(receiver) = client_failed.as_mut() {
        match receiver.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => {}
            Ok(err) => {
                *client_failed = None;
                return Some(Err(Failed::Client(err)));
            }
            // The client's stream ended well: nothing more to watch.
            Err(oneshot::error::TryRecvError::Closed) => *client_failed = None,
        }
    }
    // Polled rather than compared with the clock: no clock read, and the
    // timer is registered, so the waiting path's wake-up is in place.
    if let Some(d) = deadline.as_mut() {
        if d.as_mut().now_or_never().is_some() {
            return None;
        }
    }
    inner
        .message()
        .now_or_never()
        .map(|m| m.map_err(Failed::Backend))
}

/// Who failed a call [`ready_message`] found ended.
enum Failed {
    Client(GatewayError),
    Backend(tonic::Status),
}

/// The backend's trailers once its messages have ended (none when it
/// sent its status in the headers).
async fn trailers_of(inner: &mut tonic::Streaming<Bytes>) -> http::HeaderMap {
    inner
        .trailers()
        .await
        .ok()
        .flatten()
        .map(MetadataMap::into_headers)
        .unwrap_or_default()
}

/// The client's messages as tonic sends them. On the first bad message of
/// a stream the error goes to the receiver and the stream stays open
/// without ending, so the call is aborted (the backend sees a
/// cancellation), never half-closed as if the input were complete.
enum GuardedStream {
    /// A unary request: its one message, until sent.
    One(Option<Bytes>),
    Many {
        inner: MessageStream,
        /// Taken when the client's stream fails; from then on it pends.
        failed: Option<oneshot::Sender<GatewayError>>,
        activity: Arc<ClientActivity>,
    },
}

impl GuardedStream {
    fn new(
        inner: MessageStream,
    ) -> (
        GuardedStream,
        oneshot::Receiver<GatewayError>,
        Arc<ClientActivity>,
    ) {
        let (tx, rx) = oneshot::channel();
        let activity = Arc::new(ClientActivity::new());
        let stream = GuardedStream::Many {
            inner,
            failed: Some(tx),
            activity: activity.clone(),
        };
        (stream, rx, activity)
    }
}

/// A client stream's progress as the backend takes it: when the backend
/// last took a message (or saw the stream end), and whether the gateway is
/// now waiting on the client for the next one (rather than on the backend
/// to take it).
struct ClientActivity {
    base: Instant,
    /// Nanoseconds from `base` to the last message or the end, plus one
    /// (0: none yet).
    last: std::sync::atomic::AtomicU64,
    ended: std::sync::atomic::AtomicBool,
    waiting: std::sync::atomic::AtomicBool,
}

impl ClientActivity {
    fn new() -> Self {
        ClientActivity {
            base: Instant::now(),
            last: Default::default(),
            ended: Default::default(),
            waiting: Default::default(),
        }
    }

    fn stamp(&self) {
        let nanos = Instant::now().duration_since(self.base).as_nanos() as u64;
        self.last.store(
            nanos.saturating_add(1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn last(&self) -> Option<Instant> {
        match self.last.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + std::time::Duration::from_nanos(n - 1)),
        }
    }

    fn waiting(&self, waiting: bool) {
        self.waiting
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
    }

    fn waiting_on_client(&self) -> bool {
        !self.ended.load(std::sync::atomic::Ordering::Relaxed)
            && self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn end(&self) {
        self.stamp();
        self.ended.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Stream for GuardedStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let (inner, failed, activity) = match self.get_mut() {
            GuardedStream::One(message) => return Poll::Ready(message.take()),
            GuardedStream::Many {
                inner,
                failed,
                activity,
            } => (inner, failed, activity),
        };
        if failed.is_none() {
            return Poll::Pending;
        }
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                activity.waiting(false);
                activity.stamp();
                Poll::Ready(Some(bytes))
            }
            Poll::Ready(Some(Err(err))) => {
                if let Some(tx) = failed.take() {
                    let _ = tx.send(err);
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                activity.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                activity.waiting(true);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_timeout_is_written_in_the_most_precise_unit_of_eight_digits() {
        let table = [
            (Duration::from_millis(500), "500000u"),
            (Duration::from_micros(99_999), "99999000n"),
            (Duration::from_secs(30), "30000000u"),
            (Duration::from_secs(3600), "3600000m"),
            (Duration::from_secs(200_000), "200000S"),
            (Duration::from_secs(100_000_000 * 60), "1666666H"),
        ];
        for (t, expected) in table {
            let value = grpc_timeout(t);
            assert_eq!(value, expected, "{t:?}");
            assert!(value.is_sensitive(), "a deadline is never indexed");
        }
    }

    #[test]
    fn a_compressed_reply_is_a_reply_the_gateway_cannot_read_not_unimplemented() {
        // What tonic's decoder says of a reply with `grpc-encoding: gzip`.
        let mut refused =
            tonic::Status::unimplemented("Content is compressed with `gzip` which isn't supported");
        refused
            .metadata_mut()
            .insert("grpc-accept-encoding", "identity".parse().unwrap());
        let err = backend_error(&refused, 1024, None);
        assert_eq!(err.grpc_code(), tonic::Code::Internal);
        assert_eq!(err.http_status().as_u16(), 502);
        assert!(
            err.message.contains("compressed its reply with gzip"),
            "{}",
            err.message
        );
        // The backend's own UNIMPLEMENTED is passed on as it is.
        let theirs = backend_error(&tonic::Status::unimplemented("no such method"), 1024, None);
        assert_eq!(theirs.grpc_code(), tonic::Code::Unimplemented);
    }

    #[test]
    fn a_backend_timing_out_at_the_deadline_is_the_deadline_not_a_cancellation() {
        let timed_out = tonic::Status::cancelled("Timeout expired");
        let now = Instant::now();
        let at_deadline = backend_error(&timed_out, 1024, Some(now + Duration::from_millis(1)));
        assert_eq!(at_deadline.grpc_code(), tonic::Code::DeadlineExceeded);
        assert_eq!(at_deadline.http_status().as_u16(), 504);
        let passed = backend_error(
            &tonic::Status::deadline_exceeded("too slow"),
            1024,
            Some(now),
        );
        assert_eq!(passed.grpc_code(), tonic::Code::DeadlineExceeded);

        // Far from the deadline, or with none, the backend's own
        // cancellation is passed on as it is.
        let early = backend_error(&timed_out, 1024, Some(now + Duration::from_secs(5)));
        assert_eq!(early.grpc_code(), tonic::Code::Cancelled);
        assert_eq!(early.message, "Timeout expired");
        let unbounded = backend_error(&timed_out, 1024, None);
        assert_eq!(unbounded.grpc_code(), tonic::Code::Cancelled);
        // Other codes at the deadline are the backend's answer.
        let denied = backend_error(&tonic::Status::permission_denied("no"), 1024, Some(now));
        assert_eq!(denied.grpc_code(), tonic::Code::PermissionDenied);
    }
}
