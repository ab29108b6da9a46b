//! One WebSocket connection: a reader loop (here) that turns frames into
//! calls and their messages, a task per call that drives the pipeline
//! ([`call`]), and a writer task that owns the socket's sending half
//! ([`writer`]).
//!
//! Flow control: client messages wait in a bounded queue per call
//! (`max_in_flight`); replies go through one bounded queue to the writer, so
//! a slow reader stops the call tasks, which stop pulling from the backend,
//! whose HTTP/2 window then fills: memory stays bounded both ways. Closing
//! the socket aborts every call task, which resets the backend's streams.

mod call;
mod writer;

use super::super::edge::Inbound;
use super::protocol::{self, Body, ClientFrame, Dialect, ServerFrame};
use super::{CallSpec, WebSocketIngress};
use crate::bucket::Bucket;
use call::{call_task, finish, CallTask};
use writer::{write_loop, Outgoing, OUT_QUEUE};

use crate::error::{GatewayError, WsClose};
use crate::headers::is_framing;
use crate::transcode::request::{self, UrlParts};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

struct Call {
    /// Tells this call from an earlier one with the same id.
    seq: u64,
    /// The call's access-log record, told why when the client cancels it.
    record: Arc<crate::observe::call_record::CallRecord>,
    /// The generation the call was opened in.
    ingress: Arc<WebSocketIngress>,
    spec: Arc<CallSpec>,
    /// `None` once the client ended its input. Only good messages are
    /// queued (a bad one is refused with an error frame), so the queue holds
    /// plain bytes: smaller slots, less memory per idle call.
    input: Option<mpsc::Sender<Bytes>>,
    /// Set by the client's `end`: only then does a closed input mean a
    /// complete one. A call whose input closes otherwise (cancel, the
    /// connection closing) is reset at the backend, never half-closed.
    ended: Arc<AtomicBool>,
    /// Who gives the call its status (see `CallTask::settled`).
    settled: Arc<AtomicBool>,
    /// The URL has filled a message already (only the first gets it).
    url_used: bool,
    /// The call takes one message (unary or server streaming).
    single_message: bool,
    /// The call's request id, on the lines the session logs about it.
    request_id: http::HeaderValue,
    task: AbortHandle,
}

struct Session {
    ingress: Arc<WebSocketIngress>,
    dialect: Dialect,
    /// The handshake's headers as the request edge made them; each call's
    /// start from these.
    headers: HeaderMap,
    client: Option<SocketAddr>,
    /// The connection's client certificate, for every call of the session.
    client_cert: Option<Arc<crate::envelope::ClientCertificate>>,
    /// Whether the connection is TLS, for every call of the session.
    over_tls: bool,
    /// The session's access-log record.
    record: Arc<crate::observe::call_record::CallRecord>,
    out: mpsc::Sender<Outgoing>,
    /// Calls that ended, by id and sequence number: an id may be reused
    /// once its call ended, so only the number tells which call it was.
    done: mpsc::UnboundedSender<(String, u64)>,
    /// The sequence number of the next call.
    next_seq: u64,
    calls: HashMap<String, Call>,
    /// The session was opened on a method's path: one call, then close.
    single: bool,
    /// Per-connection budgets for opening calls and sending messages.
    call_budget: Bucket,
    message_budget: Bucket,
    /// Refused frames logged so far (see [`MAX_REFUSALS_LOGGED`]).
    refusals_logged: u32,
}

/// Refused frames logged per connection; later ones are still answered.
const MAX_REFUSALS_LOGGED: u32 = 20;

pub(super) async fn run(
    ingress: Arc<WebSocketIngress>,
    io: hyper::upgrade::Upgraded,
    dialect: Dialect,
    implicit: Option<CallSpec>,
    inbound: Inbound,
    client: Option<SocketAddr>,
) {
    let cfg = &ingress.config;
    // The socket's own limit is a backstop; the per-frame check below answers
    // an oversized message with an error frame instead of a dropped connection.
    let hard_limit = cfg.max_message_bytes.saturating_mul(2).max(64 * 1024);
    let closes_at_twice = hard_limit == cfg.max_message_bytes.saturating_mul(2);
    // Small buffers: an idle call should cost kilobytes, not the library's
    // default 128 KiB read buffer. Larger frames still work: the buffer grows
    // for them and the bytes are handed on.
    // Pongs are queued as pings arrive; a client that floods pings and never
    // reads fills the write buffer, and past this bound the read fails
    // (closed with 1008) instead of the buffer growing without end.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .max_write_buffer_size(hard_limit + 256 * 1024)
        .max_message_size(Some(hard_limit))
        .max_frame_size(Some(hard_limit));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(ws_config)).await;
    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let record = inbound
        .record
        .clone()
        .unwrap_or_else(crate::observe::call_record::CallRecord::none);
    // The session's line names the client as its calls' do: behind a
    // trusted proxy, whom the proxy names.
    record.client(ingress.edge.client_of(&inbound.headers, client));
    // The writer pings at the newest generation's interval: a reload's
    // websocket.ping_interval reaches an open session too.
    let (ping_every, ping_rx) = tokio::sync::watch::channel(cfg.ping_interval);
    let writer = tokio::spawn(write_loop(sink, out_rx, ping_rx, record.clone()));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut session = Session {
        single: implicit.is_some(),
        ingress: ingress.clone(),
        dialect,
        headers: inbound.headers,
        client_cert: inbound.client_cert,
        over_tls: inbound.over_tls,
        record,
        client,
        out: out_tx,
        done: done_tx,
        next_seq: 0,
        calls: HashMap::new(),
        call_budget: Bucket::full(cfg.calls_per_second.map_or(0, |r| r.burst), Instant::now()),
        message_budget: Bucket::full(
            cfg.messages_per_second.map_or(0, |r| r.burst),
            Instant::now(),
        ),
        refusals_logged: 0,
    };
    if let Some(spec) = implicit {
        let headers = session.headers.clone();
        session
            .start(ingress.clone(), String::new(), Arc::new(spec), headers)
            .await;
    }

    let mut idle_timeout = cfg.idle_timeout;
    // The runtime's clock, as the timer's: a test that pauses time moves both.
    let mut last_seen = tokio::time::Instant::now();
    // Armed for when the connection would have been silent for the whole
    // timeout, and moved on only when it fires: one timer per period, not
    // one per frame, and the close comes on time.
    let idle = tokio::time::sleep_until(last_seen + idle_timeout);
    tokio::pin!(idle);
    let refresh_every =
        |idle: Duration| (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut refresh = tokio::time::interval(refresh_every(idle_timeout));
    let mut shutdown = ingress.shutdown.clone();
    // Whether the client's side of the connection is over: its close frame
    // came, or the connection failed or ended.
    let mut client_done = false;
    loop {
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(message)) => {
                    last_seen = tokio::time::Instant::now();
                    if let Message::Close(frame) = &message {
                        client_done = true;
                        session.record.closed(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                        // A close code no endpoint may send (RFC 6455 section
                        // 7.4): the library has answered it with 1002 and
                        // hands it on as that. The calls are cut as for any
                        // protocol error of the client's.
                        if frame.as_ref().is_some_and(|f| {
                            f.code == tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Protocol
                                && f.reason.as_str() == "Protocol violation"
                        }) {
                            session.cut_calls_for(
                                WsClose::ProtocolError,
                                "a close frame with a code no endpoint may send",
                                hard_limit,
                            );
                        }
                        break;
                    }
                    session.on_message(message).await;
                }
                Some(Err(e)) => {
                    client_done = true;
                    tracing::debug!(error = %e, "websocket read failed");
                    if let Some(why) = close_for(&e) {
                        let reason = match &e {
                            // Named by the setting, as the error frame for a
                            // smaller excess is.
                            tokio_tungstenite::tungstenite::Error::Capacity(_) => {
                                if closes_at_twice {
                                    format!("a message over twice websocket.max_message_bytes ({hard_limit} bytes)")
                                } else {
                                    format!("a message over {hard_limit} bytes (the least a connection is closed for, whatever websocket.max_message_bytes)")
                                }
                            }
                            e => protocol::close_reason(&e.to_string()),
                        };
                        session.cut_calls_for(why, &reason, hard_limit);
                        let _ = session.out.send(Outgoing::Close(why, reason)).await;
                    }
                    break;
                }
                None => {
                    client_done = true;
                    break;
                }
            },
            Some((id, seq)) = done_rx.recv() => {
                if session.calls.get(&id).is_some_and(|c| c.seq == seq) {
                    session.calls.remove(&id);
                }
                if session.single && session.calls.is_empty() {
                    break;
                }
            }
            _ = shutdown.changed() => {
                let err = GatewayError::new(
                    crate::error::ErrorKind::BackendUnavailable,
                    crate::error::Origin::Gateway,
                    "the gateway is shutting down",
                );
                session.close_with(err, "gateway shutting down").await;
                break;
            }
            _ = refresh.tick() => {
                // An idle session does not hold an old generation (its
                // routes, caches, upstreams) after a reload: its next calls
                // and limits come from the newest.
                session.ingress = session.ingress.newest();
                // Its own limits too: a new idle timeout counts from the
                // last frame, a new ping interval from now.
                let newest = &session.ingress.config;
                if newest.idle_timeout != idle_timeout {
                    idle_timeout = newest.idle_timeout;
                    idle.as_mut().reset(last_seen + idle_timeout);
                    refresh = tokio::time::interval(refresh_every(idle_timeout));
                }
                ping_every.send_if_modified(|every| {
                    let changed = *every != newest.ping_interval;
                    *every = newest.ping_interval;
                    changed
                });
            }
            () = &mut idle => {
                if last_seen.elapsed() >= idle_timeout {
                    // Each call still running is told why it ends (the
                    // client sent nothing, not even a pong), then the close.
                    let err = GatewayError::client_timeout("websocket.idle_timeout", idle_timeout);
                    session.close_with(err, "idle timeout").await;
                    break;
                }
                idle.as_mut().reset(last_seen + idle_timeout);
            }
        }
    }
    // Whatever is still running was abandoned by the client: logged as
    // CANCELLED, as on every protocol, even a call still waiting for its
    // message (it never reached the pipeline, which would say so itself).
    for call in session.calls.values() {
        if !call.settled.swap(true, Ordering::AcqRel) {
            call.record.abandoned();
        }
        call.task.abort();
    }
    drop(session);
    // A client that stopped reading leaves the writer stuck on the socket:
    // past the grace it is stopped, which closes the connection.
    let writer_task = writer.abort_handle();
    let written = tokio::time::timeout(WRITER_GRACE, writer).await.is_ok();
    if !written {
        writer_task.abort();
    }
    // The gateway closed first (a single call ended, a timeout, a
    // shutdown): the client's close frame completes the handshake. Dropping
    // the connection before it arrives would answer it with a TCP reset,
    // which browsers report as an unclean close (`wasClean` false), and
    // could discard the gateway's own close frame before the client read
    // it. Frames the client sent meanwhile are read and dropped.
    // (A writer stopped for a stuck client sent no close frame to answer.)
    if !client_done && written {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
}

/// How long the gateway's own close (shutdown, idle timeout) may wait to
/// queue the calls' statuses and the close frame for a slow client, and,
/// once its close frame is sent, for the client's answering one.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long a session's writer may take to send what is queued, its close
/// frame last, before it is stopped (a client that stopped reading).
const WRITER_GRACE: Duration = Duration::from_secs(5);

impl Session {
    /// The calls still running end with the session, for the close's
    /// reason (the client's frame, or the gateway's failure): said so in
    /// their lines and counted as that status, not taken for a client that
    /// merely left.
    fn cut_calls_for(&self, why: WsClose, reason: &str, hard_limit: usize) {
        let code = why.code();
        let cut = why.cut_call(reason, hard_limit);
        if cut.origin == crate::error::Origin::Client {
            tracing::info!(target: "portico::access", close_code = code, reason = reason, "websocket session closed for the client's frame");
        } else {
            tracing::warn!(target: "portico::access", close_code = code, reason = reason, "websocket session closed for a failure of the gateway");
        }
        for call in self.calls.values() {
            if !call.settled.swap(true, Ordering::AcqRel) {
                call.record.cut_short(&cut);
            }
        }
    }

    /// The gateway closes the connection (shutting down, the idle
    /// timeout): each call still running ends with `err` (a log line that
    /// blames whom `err` does), then the 1001 close, the code for a server
    /// going away, a single call's session included. A client that stopped
    /// reading gets what fits in the writer's queue within [`CLOSE_GRACE`];
    /// the calls end whatever it reads.
    async fn close_with(&mut self, err: GatewayError, reason: &str) {
        let out = self.out.clone();
        let told = tokio::time::timeout(CLOSE_GRACE, async {
            let ids: Vec<String> = self.calls.keys().cloned().collect();
            for id in ids {
                self.cut_off(&id, err.clone(), false).await;
            }
            let _ = out
                .send(Outgoing::Close(WsClose::GoingAway, reason.to_owned()))
                .await;
        })
        .await;
        if told.is_err() {
            // Those the client was not told of keep the failure in their records.
            for (_, call) in self.calls.drain() {
                if !call.settled.swap(true, Ordering::AcqRel) {
                    call.record.cut_short(&err);
                }
                call.task.abort();
            }
        }
    }

    async fn send(&self, id: &str, frame: ServerFrame<'_>) {
        if let Some(out) = protocol::render(self.dialect, id, frame) {
            let _ = self.out.send(Outgoing::Frame(out)).await;
        }
    }

    async fn refuse(&mut self, id: &str, err: &GatewayError) {
        // A client that keeps sending bad frames is answered every time,
        // but logged only so often: one connection must not flood the log.
        if self.refusals_logged < MAX_REFUSALS_LOGGED {
            let code = err.grpc_code() as i32;
            let line = if self.refusals_logged + 1 == MAX_REFUSALS_LOGGED {
                "websocket frame refused; later refusals on this connection are answered but not logged"
            } else {
                "websocket frame refused"
            };
            let origin = err.origin.as_str();
            tracing::info!(target: "portico::access", protocol = "websocket", call = id, code, origin, error = err.message.as_str(), "{line}");
            self.refusals_logged += 1;
        }
        self.send(id, ServerFrame::Error(&self.ingress.status.to_json(err)))
            .await;
    }

    async fn on_message(&mut self, message: Message) {
        let size = match &message {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            _ => return,
        };
        let limit = self.ingress.config.max_message_bytes;
        if size > limit {
            let err = GatewayError::payload_too_large(limit, "websocket.max_message_bytes");
            // The message is refused; a call that goes on without it would
            // have a hole, so the call it was for ends with code 8 (reset at
            // the backend). Which call: the frame's own `id`, read without
            // its message; a session's one call; or, when the frame says
            // nothing readable, every call still taking input.
            let named = match (&message, self.single) {
                (_, true) => Some((String::new(), false)),
                (Message::Text(t), false) => frame_names(t.as_str()),
                _ => None,
            };
            return match named {
                // An `open` never started its call: nothing to cut.
                Some((id, true)) => self.refuse(&id, &err).await,
                Some((id, false)) => self.refuse_input(Some(&id), err).await,
                None => self.refuse_input(None, err).await,
            };
        }
        let frame = match message {
            Message::Text(t) => protocol::parse_text(self.dialect, t.as_str()),
            Message::Binary(b) => protocol::parse_binary(self.dialect, b),
            _ => return,
        };
        let counts = frame.as_ref().map_or(true, ClientFrame::carries_data);
        if let (Some(r), true) = (self.ingress.config.messages_per_second, counts) {
            if let Err(wait) = self.message_budget.take(Instant::now(), r.rate, r.burst) {
                // Refused, not dropped: the client is told, with when to retry.
                let id = match &frame {
                    Ok(f) => f.id(),
                    Err(bad) => bad.id.as_deref().unwrap_or(""),
                };
                let what = format!(
                    "more than {} messages per second on this connection",
                    r.rate
                );
                let err = GatewayError::rate_limited(r.burst, wait, &what);
                // A refused message of a call under way would leave a hole
                // in its input: the call ends with the refusal instead (a
                // message whose call cannot be told: every call taking
                // input), as a frame refused for anything else does.
                let id = id.to_owned();
                let may_hold_message = match &frame {
                    Ok(f) => matches!(f, ClientFrame::Message { .. }),
                    Err(bad) => bad.may_hold_message,
                };
                return match (may_hold_message, self.single || !id.is_empty()) {
                    (true, true) => self.refuse_input(Some(&id), err).await,
                    (true, false) => self.refuse_input(None, err).await,
                    (false, _) => self.refuse(&id, &err).await,
                };
            }
        }
        // Ids are never guessed: a frame whose call is ambiguous is refused.
        if let Ok(f) = &frame {
            let id = f.id();
            if self.single && !id.is_empty() {
                let err = GatewayError::invalid_field(
                    "id",
                    "this connection is one call, opened by its path: its frames carry no id",
                );
                return self.refuse_input(Some(""), err).await;
            }
            if !self.single && id.is_empty() {
                let err = GatewayError::invalid_field(
                    "id",
                    "is required: every frame of a multiplexed session names its call",
                );
                // A message whose call cannot be told may be any call's.
                return if matches!(f, ClientFrame::Message { .. }) {
                    self.refuse_input(None, err).await
                } else {
                    self.refuse("", &err).await
                };
            }
        }
        match frame {
            // A single call's frames name no call: they are all its own.
            Err(bad) if self.single => self.refuse_input(Some(""), bad.error).await,
            // Nameless and holding no message: no call lost input by it.
            Err(bad) if bad.id.is_none() && !bad.may_hold_message => {
                self.refuse("", &bad.error).await
            }
            Err(bad) => self.refuse_input(bad.id.as_deref(), bad.error).await,
            Ok(ClientFrame::Open {
                id,
                method,
                metadata,
                message,
            }) => self.open(id, method, metadata, message).await,
            Ok(ClientFrame::Message { id, body }) => self.deliver(&id, body).await,
            Ok(ClientFrame::End { id }) => match self.calls.get_mut(&id) {
                Some(call) => {
                    call.ended.store(true, Ordering::Release);
                    call.input = None;
                }
                None => self.refuse(&id, &no_call(&id, self.single)).await,
            },
            // Cancelling races the call's end: a cancel that arrives after
            // the status frame (and its call's removal) is not an error, and
            // draws no frame after the call's last.
            Ok(ClientFrame::Cancel { id }) => {
                let err = GatewayError::new(
                    crate::error::ErrorKind::Cancelled,
                    crate::error::Origin::Client,
                    "cancelled by the client",
                );
                self.cut_off(&id, err, true).await;
            }
        }
    }

    async fn open(
        &mut self,
        id: String,
        method: String,
        extra: Vec<(String, String)>,
        message: Option<Body>,
    ) {
        if self.single {
            // Refused as any frame of the session's one call is: its
            // message may have been meant for that call.
            return self
                .refuse_input(
                    Some(""),
                    GatewayError::invalid_field(
                        "open",
                        "this session is a single call; open calls on a multiplexed session",
                    ),
                )
                .await;
        }
        // A call whose status is out is over, whatever its task still does:
        // the client reuses an id once it has that frame, and the session
        // may not have heard from the task yet.
        if self
            .calls
            .get(&id)
            .is_some_and(|c| c.settled.load(Ordering::Acquire))
        {
            if let Some(done) = self.calls.remove(&id) {
                done.task.abort();
            }
        }
        if self.calls.contains_key(&id) {
            // The client has lost track of that call, and its message may
            // have been meant for it: a call still taking input ends with
            // the refusal rather than be completed with a hole.
            return self
                .refuse_input(
                    Some(&id),
                    GatewayError::invalid_field("id", format!("call {id:?} is already open")),
                )
                .await;
        }
        if let Some(r) = self.ingress.config.calls_per_second {
            if let Err(wait) = self.call_budget.take(Instant::now(), r.rate, r.burst) {
                let what = format!(
                    "more than {} calls opened per second on this connection",
                    r.rate
                );
                return self
                    .refuse(&id, &GatewayError::rate_limited(r.burst, wait, &what))
                    .await;
            }
        }
        if self.calls.len() >= self.ingress.config.max_calls {
            return self
                .refuse(
                    &id,
                    &GatewayError::payload_too_large(
                        self.ingress.config.max_calls,
                        "websocket.max_calls",
                    )
                    .with_message(format!(
                        "at most {} calls may be open on one connection",
                        self.ingress.config.max_calls
                    )),
                )
                .await;
        }
        // A call opened after a config reload uses the new generation.
        let ingress = self.ingress.newest();
        // `pkg.Service/Method` names the same method as its path does, and
        // the path is normalized as every request path is.
        let method = if method.starts_with('/') {
            method
        } else {
            format!("/{method}")
        };
        let method = match crate::ingress::edge::path::normalize(&method) {
            Ok(normal) => normal.into_owned(),
            Err(err) => return self.refuse(&id, &err).await,
        };
        let Some(target) = ingress.routes.call_target(&method).cloned() else {
            return self
                .refuse(&id, &GatewayError::unknown_method(&method))
                .await;
        };
        // Per-call metadata joins the handshake's headers and goes through
        // the same edge; a deadline may be set per call.
        // Each entry becomes a field: more than the limit is over it
        // whatever the handshake held, and is refused before any is built
        // (a header map holds at most 32,768).
        if let Err(err) = crate::ingress::edge::framing::header_count(
            extra.len(),
            &ingress.limits,
            "the call (its open metadata and its handshake's headers)",
        ) {
            return self.refuse(&id, &err).await;
        }
        let mut headers = self.headers.clone();
        // A name given twice (`traceparent` and `TraceParent`) is two
        // fields, as two header lines would be on any other protocol.
        let mut named: std::collections::HashSet<HeaderName> =
            std::collections::HashSet::with_capacity(extra.len());
        for (k, v) in extra {
            match (
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                // HTTP drops the spaces and tabs around a field's value.
                HeaderValue::from_str(v.trim_matches([' ', '\t'])),
            ) {
                (Ok(name), Ok(value))
                    if (!is_framing(&name) || name == "grpc-timeout")
                        && !crate::ingress::edge::forwarded::is_forwarding(&name) =>
                {
                    if named.contains(&name) {
                        headers.append(name, value);
                    } else {
                        headers.insert(name.clone(), value);
                        named.insert(name);
                    }
                }
                (name, value) => {
                    let why = match (name, value) {
                        (Ok(name), Ok(_)) if crate::ingress::edge::forwarded::is_forwarding(&name) => {
                            "names a forwarding header: who the client is was read from the connection and its handshake, and a call cannot change it"
                        }
                        (Ok(_), Ok(_)) => {
                            "names a header of the connection's framing, which the gateway sets itself"
                        }
                        (Err(_), _) => "is not a valid header name",
                        (_, Err(_)) => "is not a valid header value",
                    };
                    return self
                        .refuse(
                            &id,
                            &GatewayError::invalid_field(format!("metadata.{k}"), why),
                        )
                        .await;
                }
            }
        }
        self.ignore_unusable_traceparent(&mut headers, &named);
        // The handshake's own fields passed the edge: a bad one here came
        // in the call's metadata, and is named as the client wrote it.
        if let Err(err) = crate::headers::check_deadline_fields(&headers, "metadata.")
            .and_then(|()| crate::headers::check_binary_fields(&headers, "metadata."))
        {
            return self.refuse(&id, &err).await;
        }
        // The backend gets the handshake's fields and the metadata together:
        // bounded as any request's header fields are, so no call's metadata
        // can be what a backend connection shared with other calls breaks on.
        if let Err(err) = crate::ingress::edge::framing::header_fields(
            &headers,
            &ingress.limits,
            "the call (its open metadata and its handshake's headers)",
        ) {
            return self.refuse(&id, &err).await;
        }
        let binding = ingress
            .routes
            .bindings()
            .iter()
            .find(|b| b.auto && Arc::ptr_eq(&b.target, &target))
            .cloned();
        let spec = Arc::new(CallSpec {
            target,
            binding,
            url: None,
        });
        // A bad first message refuses the whole `open`: no call exists
        // after an `error` frame, whatever in the frame was wrong.
        let first = match message.map(|body| encode(&spec, &ingress, None, body)) {
            Some(Err(err)) => return self.refuse(&id, &err).await,
            Some(Ok(encoded)) => Some(encoded),
            None => None,
        };
        self.start(ingress, id.clone(), spec, headers).await;
        if let Some(encoded) = first {
            self.enqueue(&id, encoded).await;
        }
    }

    /// A `traceparent` in a call's metadata that cannot be read (malformed,
    /// or given twice) is ignored as on every protocol; here that leaves
    /// the call what it is without one: a child of the session's trace.
    fn ignore_unusable_traceparent(
        &self,
        headers: &mut HeaderMap,
        named: &std::collections::HashSet<HeaderName>,
    ) {
        use crate::headers::{TRACEPARENT, TRACESTATE};
        if !named.contains(&TRACEPARENT) {
            return;
        }
        let mut given = headers.get_all(&TRACEPARENT).iter();
        let usable = match (given.next(), given.next()) {
            (Some(one), None) => one
                .to_str()
                .ok()
                .and_then(crate::observe::call_record::parse_traceparent)
                .is_some(),
            _ => false,
        };
        if !usable {
            for name in [&TRACEPARENT, &TRACESTATE] {
                headers.remove(name);
                for v in self.headers.get_all(name) {
                    headers.append(name.clone(), v.clone());
                }
            }
        } else if !named.contains(&TRACESTATE) {
            // The handshake's tracestate belongs to the session's trace,
            // not to the one this call names.
            headers.remove(&TRACESTATE);
        }
    }

    /// Starts a call's task. A call whose whole request comes from the URL
    /// (a GET-style binding of a unary or server-streaming method) starts at
    /// once; others wait for their first message.
    async fn start(
        &mut self,
        ingress: Arc<WebSocketIngress>,
        id: String,
        spec: Arc<CallSpec>,
        headers: HeaderMap,
    ) {
        let kind = spec.target.kind;
        let cfg = &self.ingress.config;
        let (tx, rx) = mpsc::channel(cfg.max_in_flight);
        let from_url = !kind.client_streams()
            && spec.url.is_some()
            && spec
                .binding
                .as_ref()
                .is_some_and(|b| matches!(b.body, crate::routes::BodyRule::None));
        let ended = Arc::new(AtomicBool::new(false));
        let settled = Arc::new(AtomicBool::new(false));
        let seq = self.next_seq;
        self.next_seq += 1;
        // Each call has its own request id: the one its metadata names, or
        // the session's with the call's number (the only call of a
        // single-call session keeps the session's).
        let mut headers = headers;
        {
            use crate::ingress::edge::request_id;
            let session_id = self.headers.get(request_id::HEADER);
            let mut given = headers.get_all(request_id::HEADER).iter();
            let own = match (given.next(), given.next()) {
                (Some(v), None) => Some(v),
                // Two ids name no one id: the call's own is made, as on
                // every protocol.
                _ => None,
            }
            .filter(|v| Some(*v) != session_id && request_id::acceptable(v))
            .cloned();
            let id = match own {
                Some(id) => crate::headers::never_indexed(id),
                None if self.single => session_id.cloned().unwrap_or_else(request_id::generate),
                None => request_id::for_call(session_id, seq),
            };
            headers.insert(request_id::HEADER, id);
        }
        let record = if self.record.active() {
            let path = spec.target.path.as_str();
            // A call whose metadata names its own parent is its child;
            // any other is the session's.
            let own_parent = headers.get(crate::headers::TRACEPARENT)
                != self.headers.get(crate::headers::TRACEPARENT);
            let record = crate::observe::call_record::CallRecord::websocket_call(
                &ingress.edge.sinks,
                path,
                &headers,
                &self.record,
                own_parent,
            );
            // Known before the pipeline: a call refused ahead of it (a bad
            // query, an oversized message) names its client too.
            record.client(ingress.edge.client_of(&self.headers, self.client));
            record.routed(&spec.target);
            if let Some(b) = &spec.binding {
                record.route(|| format!("{} {}", b.method, b.template_text));
            }
            self.record.session_call(&record);
            record
        } else {
            // Its own, not the shared one: a call the session cuts off
            // keeps its status for the metrics.
            crate::observe::call_record::CallRecord::unread()
        };
        // Every log line written while the call runs, from any policy,
        // carries its request id, as for a call on any other protocol.
        let call_id = headers
            .get(crate::ingress::edge::request_id::HEADER)
            .cloned()
            .unwrap_or_else(|| http::HeaderValue::from_static(""));
        // The URL's path variables and query: for a binding without a body
        // they are the request message; otherwise they fill the first
        // message when it comes, and are checked now, as a REST request's
        // are before its body is read. A bad query refuses the call (logged
        // like any refused call) instead of every message, so an upload
        // never ends "well" with none of its lines sent.
        let mut url_used = false;
        let first = match (&spec.url, &spec.binding) {
            (Some(url), Some(binding)) => {
                let segs = segments_of(url);
                let url = url_parts(url, &segs);
                let built = if from_url {
                    url_used = true;
                    request::build(binding, Some(url), &Bytes::new(), None).map(Some)
                } else {
                    request::check_url(binding, url).map(|()| None)
                };
                match built {
                    Ok(first) => first,
                    Err(e) => {
                        record.failed_finally(&e);
                        crate::observe::request_scope::scope(call_id, self.finish(&id, Err(e)))
                            .await;
                        let _ = self.done.send((id, u64::MAX));
                        return;
                    }
                }
            }
            _ => None,
        };
        let task = tokio::spawn(crate::observe::request_scope::scope(
            call_id.clone(),
            call_task(CallTask {
                record: record.clone(),
                seq,
                ended: ended.clone(),
                settled: settled.clone(),
                ingress: ingress.clone(),
                dialect: self.dialect,
                id: id.clone(),
                spec: spec.clone(),
                headers,
                client: self.client,
                client_cert: self.client_cert.clone(),
                over_tls: self.over_tls,
                input: Some(rx),
                first,
                out: self.out.clone(),
                done: self.done.clone(),
                single: self.single,
            }),
        ))
        .abort_handle();
        self.calls.insert(
            id,
            Call {
                seq,
                record,
                ingress,
                spec,
                input: if from_url { None } else { Some(tx) },
                ended,
                settled,
                url_used,
                single_message: !kind.client_streams(),
                request_id: call_id,
                task,
            },
        );
    }

    async fn deliver(&mut self, id: &str, body: Body) {
        let Some(call) = self.calls.get_mut(id) else {
            return self.refuse(id, &no_call(id, self.single)).await;
        };
        let encoded = if call.input.is_none() {
            // Say why there is no more input: the client ended it, or the
            // method takes one message and the call has it already.
            let why = if call.ended.load(Ordering::Acquire) || !call.single_message {
                "a message after the end of input".to_owned()
            } else {
                format!(
                    "{} takes one request message, and this call has it already",
                    call.spec.target.method.full_name()
                )
            };
            Err(GatewayError::invalid_field("", why))
        } else {
            let url = if call.url_used {
                None
            } else {
                call.spec.url.as_ref()
            };
            encode(&call.spec, &call.ingress, url, body)
        };
        let encoded = match encoded {
            Ok(e) => e,
            Err(err) => return self.refuse_input(Some(id), err).await,
        };
        self.enqueue(id, encoded).await;
    }

    /// A refused client frame: going on without it would leave a hole in
    /// the input of the call it was for, so that call, when it is still
    /// taking input, ends with the refusal (reset at the backend), as a
    /// bad message ends a call on every other protocol. A frame whose call
    /// cannot be told (`named` is `None`: not JSON, no readable `id`) ends
    /// every call still taking input, since any of them may have lost it.
    /// A refusal that ends no call is an `error` frame.
    async fn refuse_input(&mut self, named: Option<&str>, err: GatewayError) {
        let taking_input = |c: &Call| c.input.is_some() && !c.settled.load(Ordering::Acquire);
        let cut: Vec<String> = match named {
            Some(id) => self
                .calls
                .get(id)
                .filter(|c| taking_input(c))
                .map(|_| vec![id.to_owned()])
                .unwrap_or_default(),
            None => self
                .calls
                .iter()
                .filter(|(_, c)| taking_input(c))
                .map(|(id, _)| id.clone())
                .collect(),
        };
        if cut.is_empty() {
            let id = named.unwrap_or("");
            // A refusal that loses nothing (a message after `end`) is
            // still logged as its call's, under its request id.
            return match self.calls.get(id).map(|c| c.request_id.clone()) {
                Some(request_id) => {
                    crate::observe::request_scope::scope(request_id, self.refuse(id, &err)).await
                }
                None => self.refuse(id, &err).await,
            };
        }
        for id in cut {
            self.cut_off(&id, err.clone(), true).await;
        }
    }

    /// Hands an encoded message to its call.
    async fn enqueue(&mut self, id: &str, encoded: Bytes) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let Some(input) = call.input.clone() else {
            return;
        };
        call.url_used = true;
        if call.single_message {
            call.input = None;
        }
        if self.single {
            // One call: let a full queue slow the reading of the socket.
            let _ = input.send(encoded).await;
        } else if input.try_send(encoded).is_err() {
            let limit = self.ingress.config.max_in_flight;
            let err = GatewayError::payload_too_large(limit, "websocket.max_in_flight")
                .with_message(format!(
                    "more than {limit} messages in flight on call {id:?}"
                ));
            // Logged and counted as what the client is told, not as a
            // call the client abandoned.
            self.cut_off(id, err, true).await;
        }
    }

    /// Ends call `id` from the session's side (a cancel, a limit, the
    /// gateway closing the connection) with `err`, unless it is giving its
    /// own status already: its record keeps the failure, its task stops
    /// (which resets the backend's stream), and the client gets the
    /// status, logged under the call's request id. With `close`, a
    /// single-call session is closed after it.
    async fn cut_off(&mut self, id: &str, err: GatewayError, close: bool) {
        let Some(call) = self.calls.remove(id) else {
            return;
        };
        if call.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        call.record.cut_short(&err);
        call.task.abort();
        let closes = close && self.single;
        crate::observe::request_scope::scope(
            call.request_id.clone(),
            finish(&self.ingress, self.dialect, &self.out, id, Err(err), closes),
        )
        .await;
        let _ = self.done.send((id.to_owned(), call.seq));
    }

    /// Sends a call's final frame (and, for a single-call session, the close).
    async fn finish(&self, id: &str, result: Result<HeaderMap, GatewayError>) {
        finish(
            &self.ingress,
            self.dialect,
            &self.out,
            id,
            result,
            self.single,
        )
        .await;
    }
}

/// Why a frame for a call that is not open is refused. A single call's
/// frames name no call: one arriving after that call ended (a client that
/// sent its end while the gateway was ending the call) is said as that.
fn no_call(id: &str, single: bool) -> GatewayError {
    if single {
        return GatewayError::invalid_field(
            "",
            "the session's call has ended; this frame came after it",
        );
    }
    GatewayError::invalid_field("id", format!("no open call has id {id:?}"))
}

/// The close frame for a failed read, from the one table; `None` when the
/// connection itself is gone and nothing can be sent.
fn close_for(e: &tokio_tungstenite::tungstenite::Error) -> Option<WsClose> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Utf8(_) => Some(WsClose::InvalidPayload),
        Error::Capacity(_) => Some(WsClose::TooBig),
        // The client's TCP connection ended without a close frame: it is
        // gone, not misbehaving.
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        Error::Protocol(_) => Some(WsClose::ProtocolError),
        Error::WriteBufferFull(_) => Some(WsClose::PolicyViolation),
        Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_) => None,
        _ => Some(WsClose::InternalError),
    }
}

/// A client frame's message as the call's request message, encoded: a JSON
/// frame on a REST path is read as that binding's HTTP body (the URL's
/// path variables and query filling the first message), one on a gRPC
/// path or opened by name as the whole message.
fn encode(
    spec: &CallSpec,
    ingress: &WebSocketIngress,
    url: Option<&(Vec<String>, Option<String>)>,
    body: Body,
) -> Result<Bytes, GatewayError> {
    match body {
        // The URL fills the first binary message as it fills a JSON one.
        Body::Proto(bytes) => match (url, &spec.binding) {
            (Some(url), Some(binding)) => {
                let segs = segments_of(url);
                request::merge_url(binding, url_parts(url, &segs), &bytes)
            }
            _ => Ok(bytes),
        },
        Body::Json(json_bytes) => match &spec.binding {
            Some(binding) => {
                let segs = url.map(segments_of).unwrap_or_default();
                let parts = url.map(|url| url_parts(url, &segs));
                request::build_whole(binding, parts, &json_bytes)
            }
            None => request::message_from_json(
                &spec.target,
                &json_bytes,
                &ingress.routes.json_options(spec.target.route),
            ),
        },
    }
}

/// A call's URL (path segments, query) as the transcoder reads it; the
/// segments as `&str` come from [`segments_of`].
fn url_parts<'a>(url: &'a (Vec<String>, Option<String>), segments: &'a [&'a str]) -> UrlParts<'a> {
    UrlParts {
        segments,
        query: url.1.as_deref(),
    }
}

fn segments_of(url: &(Vec<String>, Option<String>)) -> Vec<&str> {
    url.0.iter().map(String::as_str).collect()
}

/// What an oversized text frame names, read without its message: its
/// `id` and whether it is an `open` (whose id may be empty: it starts
/// nothing). `None` when it is no JSON object or names no call, so may
/// hold any call's message.
fn frame_names(text: &str) -> Option<(String, bool)> {
    #[derive(serde::Deserialize)]
    struct Names {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        open: Option<serde::de::IgnoredAny>,
    }
    let names: Names = serde_json::from_str(text).ok()?;
    let id = names.id.unwrap_or_default();
    // A message frame without an id names no call: any may have lost it.
    (!id.is_empty() || names.open.is_some()).then_some((id, names.open.is_some()))
}
