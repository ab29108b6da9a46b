//! The listening socket: accepts connections (TLS when configured), serves
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge, or h2 by ALPN) alike on one
//! port, and enforces the connection limits:
//! header read timeout and header size, HTTP/2 concurrent streams, idle
//! timeout, and the number of open connections. Drains on shutdown.

pub mod config;
mod side_wake;

use super::body::{Activity, ResponseBody};
use super::dispatch::Ingress;
use super::request_body::RequestBody;
use super::slot::ConnectionSlot;
use crate::config::Limits;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long an idle connection told to close may take to do so.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// What the listener serves: the newest generation's adapters and TLS
/// certificate, read per request and per connection, so a config reload
/// takes effect without touching the socket.
pub trait Serving: Send + Sync + 'static {
    fn ingress(&self) -> Arc<Ingress>;
    fn tls(&self) -> Option<TlsAcceptor>;
}

/// Serves `listener` until `shutdown` turns true, then lets open
/// connections finish their requests until `cut` turns true, when the
/// ones still open are dropped; the task ends once every connection's
/// task has.
pub fn spawn<S: Serving>(
    listener: TcpListener,
    serving: Arc<S>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    mut cut: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let per_ip = Arc::new(super::slot::PerIp::default());
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.changed() => break,
            };
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            // One address may not take every place: past its cap, its new
            // connection is closed at once, before anything is read.
            let Some(ip_place) = per_ip.admit(remote.ip(), limits.max_connections_per_ip) else {
                tracing::info!(%remote, limit = limits.max_connections_per_ip, "connection refused: server.limits.max_connections_per_ip");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let serving = serving.clone();
            let limits = limits.clone();
            let shutdown = shutdown.clone();
            let slot = ConnectionSlot::new(permit, ip_place);
            connections.spawn(async move {
                // A new connection gets the newest certificate; open ones keep theirs.
                match serving.tls() {
                    None => {
                        serve_connection(
                            stream,
                            remote,
                            None,
                            serving,
                            limits,
                            shutdown,
                            slot.clone(),
                        )
                        .await
                    }
                    // Boxed: a TLS session and its handshake would make
                    // every connection's task several KiB larger, plain
                    // ones included.
                    Some(acceptor) => {
                        let slot = slot.clone();
                        Box::pin(async move {
                            // The handshake gets the same bound as reading headers.
                            let handshake = tokio::time::timeout(
                                limits.header_read_timeout,
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                Ok(Ok(tls)) => {
                                    // Verified by the handshake; read once for
                                    // every request on the connection.
                                    let client_cert = tls
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|chain| chain.first())
                                        .and_then(|c| super::tls::client_certificate(c))
                                        .map(Arc::new);
                                    serve_connection(
                                        tls,
                                        remote,
                                        Some(TlsSession { client_cert }),
                                        serving,
                                        limits,
                                        shutdown,
                                        slot,
                                    )
                                    .await
                                }
                                // A connection closed before its handshake
                                // was through is what TCP health checks
                                // (a load balancer's, another gateway's
                                // readiness probe) do every few seconds:
                                // not worth a line at the usual level.
                                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                                    tracing::debug!(%remote, "connection closed before its TLS handshake was through")
                                }
                                Ok(Err(e)) => {
                                    tracing::info!(%remote, error = %e, "TLS handshake failed")
                                }
                                Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                            }
                        })
                        .await
                    }
                }
                // Released here unless an upgraded WebSocket session took it.
                slot.take();
            });
            // Reap finished connection tasks so the set does not grow.
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        loop {
            tokio::select! {
                next = connections.join_next() => if next.is_none() { break },
                // A gateway dropped without a shutdown never cuts.
                () = async {
                    if cut.wait_for(|cut| *cut).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {
                    // Aborted tasks are dropped when next run: joining them
                    // waits for that, and with it for their calls' records.
                    connections.abort_all();
                    while connections.join_next().await.is_some() {}
                    break;
                }
            }
        }
    })
}

/// The reason phrase of a status HTTP names none for: nginx's for 499
/// (which the gateway answers a call its backend cancelled with), else
/// its class's name.
fn reason_phrase(status: http::StatusCode) -> hyper::ext::ReasonPhrase {
    use hyper::ext::ReasonPhrase;
    match status.as_u16() {
        499 => ReasonPhrase::from_static(b"Client Closed Request"),
        100..=199 => ReasonPhrase::from_static(b"Informational"),
        200..=299 => ReasonPhrase::from_static(b"Success"),
        300..=399 => ReasonPhrase::from_static(b"Redirection"),
        400..=499 => ReasonPhrase::from_static(b"Client Error"),
        _ => ReasonPhrase::from_static(b"Server Error"),
    }
}

/// What a TLS connection's handshake said of it.
struct TlsSession {
    client_cert: Option<Arc<crate::envelope::ClientCertificate>>,
}

/// The reason the gateway's HTTP/2 library ended a connection with a
/// GOAWAY of its own (a malformed header block, a flood), when it did:
/// the client's fault, not the network's.
fn client_broke_http2(e: &(dyn std::error::Error + 'static)) -> Option<h2::Reason> {
    let h2 = crate::error::error_in_chain::<h2::Error>(e)?;
    (h2.is_go_away() && h2.is_library())
        .then(|| h2.reason())
        .flatten()
}

async fn serve_connection<Io, S: Serving>(
    stream: Io,
    remote: std::net::SocketAddr,
    tls: Option<TlsSession>,
    serving: Arc<S>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    slot: ConnectionSlot,
) where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = activity.clone();
        service_fn(move |req: http::Request<hyper::body::Incoming>| {
            // Each request takes the newest generation and keeps it.
            let ingress = serving.ingress();
            let guard = activity.start();
            // Over HTTP/2 a body's end counts once the stream is known not
            // to have been reset (see `request_body`).
            let gate = (req.version() == http::Version::HTTP_2)
                .then(|| Arc::new(super::request_body::EndGate::default()));
            let witness = gate.clone().map(super::request_body::Witness::new);
            let (mut parts, body) = req.into_parts();
            parts.extensions.insert(slot.clone());
            if let Some(tls) = &tls {
                parts.extensions.insert(super::edge::OverTls);
                if let Some(cert) = &tls.client_cert {
                    parts.extensions.insert(cert.clone());
                }
            }
            // Over HTTP/1.1 an answer says when its connection will close
            // because the body left unread is too long to read past.
            // Only a body declared longer than that may be: most requests
            // pay nothing.
            // (hyper knows a declared length: no header is looked up.)
            let hint = http_body::Body::size_hint(&body);
            let long = hint.lower() > super::request_body::DRAIN_BYTES as u64;
            // A client waiting for `100 Continue` is not sent one for a
            // body refused before it was read (only a body with content
            // pays for the header's lookup).
            let awaits_continue = gate.is_none()
                && hint.upper() != Some(0)
                && parts
                    .headers
                    .get(http::header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            // A body of no declared length (chunked) may break its framing
            // mid-way, which ends the connection too.
            let closes = (gate.is_none() && (long || awaits_continue || hint.exact().is_none()))
                .then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
            let mut body = RequestBody::new(body, gate);
            if let Some(closes) = &closes {
                body = body.tell_closing(closes.clone());
            }
            if awaits_continue {
                body = body.awaiting_continue();
            }
            let req = http::Request::from_parts(parts, body);
            let handled = super::request_body::Witnessed {
                future: Box::pin(ingress.handle(req, Some(remote))),
                witness,
            };
            async move {
                let (mut resp, witness) = handled.await;
                // HTTP/1.1 writes a reason phrase; one HTTP names none for
                // (499, a status an authorization service or a backend
                // chose) would go out as hyper's `<none>`.
                if resp.status().canonical_reason().is_none() {
                    let reason = reason_phrase(resp.status());
                    resp.extensions_mut().insert(reason);
                }
                if closes.is_some_and(|c| c.load(std::sync::atomic::Ordering::Acquire)) {
                    resp.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(
                    resp.map(|b: ResponseBody| b.with_guard(guard).with_witness(witness)),
                )
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The edge answers a head over max_header_bytes in the request's
        // protocol; hyper's bare 431 only stops one far over it.
        .max_buf_size(limits.max_header_bytes.saturating_mul(2).max(8192))
        // The edge counts fields and answers with a JSON error; hyper's own
        // bare 431 only stops a request far over the limit.
        .max_headers(limits.max_header_count.saturating_mul(2))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        .max_pending_accept_reset_streams(limits.http2_max_pending_resets)
        .max_local_error_reset_streams(limits.http2_max_error_resets)
        .initial_stream_window_size(limits.http2_stream_window_bytes)
        .initial_connection_window_size(limits.http2_connection_window_bytes)
        .max_send_buf_size(limits.http2_max_send_buffer_bytes)
        .max_frame_size(16 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);

    // Until its first request, a connection gets header_read_timeout to
    // start one: a client that connects and sends nothing is not kept for
    // the whole idle timeout.
    let tick = (limits.idle_timeout.min(limits.header_read_timeout) / 4)
        .clamp(Duration::from_millis(25), Duration::from_secs(5));
    let mut idle_check = tokio::time::interval(tick);
    let mut seen_events = activity.events();
    let mut idle_since = Instant::now();
    let mut closing = false;
    // An idle connection is told to go (HTTP/2: GOAWAY), then dropped if
    // the client has not gone by this time: an HTTP/2 client that never
    // acknowledges would otherwise hold it until the keepalive ping fails.
    let hard_close = tokio::time::sleep(Duration::MAX);
    tokio::pin!(hard_close);
    let mut idle_closing = false;
    let mut shutdown_changed = std::pin::pin!(shutdown.changed());
    // The connection is polled on every wake-up; the rest only when one of
    // them woke the task (see `side_wake`).
    let (side, side_waker) = side_wake::SideWake::new();
    enum Event<E> {
        Ended(Result<(), E>),
        HardClose,
        Shutdown,
        IdleTick,
    }
    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(result));
            }
            if !side.take_due(cx) {
                return Poll::Pending;
            }
            let mut side_cx = std::task::Context::from_waker(&side_waker);
            if idle_closing && hard_close.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(Event::HardClose);
            }
            if !closing && shutdown_changed.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            if !closing && idle_check.poll_tick(&mut side_cx).is_ready() {
                return Poll::Ready(Event::IdleTick);
            }
            Poll::Pending
        })
        .await;
        // An interval that just ticked or a sleep just reset waits on nothing
        // until polled again, and the futures after the one that finished
        // were not polled this turn: all are polled on the next.
        side.set_due();
        match event {
            Event::Ended(result) => {
                if let Err(e) = result {
                    match client_broke_http2(&*e) {
                        // The calls still open on it were cut with it, and
                        // are logged as cancelled: this line says why.
                        Some(reason) => tracing::info!(
                            %remote,
                            ?reason,
                            "connection ended: the client broke HTTP/2, and the HTTP/2 library ended the whole connection (GOAWAY) and any call still open on it"
                        ),
                        None => {
                            tracing::debug!(%remote, error = %e, "connection ended with an error")
                        }
                    }
                }
                return;
            }
            Event::HardClose => {
                // A request the client sent before it saw the GOAWAY is
                // served: the connection is dropped only once a whole
                // grace period passed with nothing running or started.
                let events = activity.events();
                if activity.in_flight() == 0 && events == seen_events {
                    tracing::debug!(%remote, "dropping an idle connection that did not close");
                    return;
                }
                seen_events = events;
                hard_close
                    .as_mut()
                    .reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
            }
            Event::Shutdown => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            Event::IdleTick => {
                let events = activity.events();
                if events != seen_events || activity.in_flight() > 0 {
                    seen_events = events;
                    idle_since = Instant::now();
                } else if idle_since.elapsed()
                    >= if events == 0 {
                        limits.header_read_timeout
                    } else {
                        limits.idle_timeout
                    }
                {
                    tracing::debug!(%remote, "closing idle connection");
                    closing = true;
                    idle_closing = true;
                    hard_close
                        .as_mut()
                        .reset(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
