//! A request's body as every adapter reads it, and the rule that its end
//! is real.
//!
//! Over HTTP/2, hyper reads a client's `RST_STREAM` with `NO_ERROR` as the
//! body's clean end (RFC 9113 section 8.1 gives that code to a server that
//! answered early; a client that sends it mid-upload has abandoned the
//! request). Handed on as such, a client's aborted upload would reach the
//! backend as complete. So an HTTP/2 body's end is reported only once the
//! stream is known not to have been reset: hyper looks for a reset after
//! each poll of the request's future that is pending, and before each poll
//! of the response body, and drops both when it finds one. The gateway
//! wraps both ([`Witness`]); an end seen by the body is confirmed by the
//! first such poll hyper makes after it, and turned into an error when hyper
//! drops them instead.

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// The body has not ended.
const OPEN: u8 = 0;
/// hyper reported the end; not yet known to be real.
const ENDED: u8 = 1;
/// The request's future was pending after the end was seen: hyper is
/// looking for a reset now, and the next poll knows there was none.
const CHECKED: u8 = 2;
/// A real end (`END_STREAM`).
const CONFIRMED: u8 = 3;
/// The stream was reset, or the request is over without a confirmed end.
const ABANDONED: u8 = 4;

/// Where one HTTP/2 request's body end waits to be confirmed.
#[derive(Default)]
pub struct EndGate {
    state: AtomicU8,
    /// The body's reader, waiting for the verdict.
    reader: AtomicWaker,
    /// The task hyper polls the request's future and response body in.
    witness: AtomicWaker,
}

impl EndGate {
    fn advance(&self, from: u8, to: u8) -> bool {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The verdict on an end hyper reported: `true` for a real one.
    fn poll_end(&self, cx: &mut Context<'_>) -> Poll<bool> {
        self.reader.register(cx.waker());
        if self.advance(OPEN, ENDED) {
            self.witness.wake();
        }
        match self.state.load(Ordering::Acquire) {
            CONFIRMED => Poll::Ready(true),
            ABANDONED => Poll::Ready(false),
            _ => Poll::Pending,
        }
    }

    fn confirm(&self, from: u8, waker: &std::task::Waker) {
        if self.advance(from, CONFIRMED) {
            // The reader is often this very task, polled right after.
            if let Some(reader) = self.reader.take() {
                if !reader.will_wake(waker) {
                    reader.wake();
                }
            }
        }
    }

    fn abandon(&self) {
        let mut state = self.state.load(Ordering::Acquire);
        while state != CONFIRMED && state != ABANDONED {
            match self
                .state
                .compare_exchange(state, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return self.reader.wake(),
                Err(now) => state = now,
            }
        }
    }
}

/// A request body: hyper's, with its end confirmed over HTTP/2.
pub struct RequestBody {
    /// Taken only by the drop of an unread HTTP/1.1 body (see [`drain`]).
    inner: Option<hyper::body::Incoming>,
    gate: Option<Arc<EndGate>>,
    /// Read to its end when dropped unread (HTTP/1.1 whose framing holds).
    drain: bool,
    /// Set when dropped with more left than is read past: the connection
    /// closes after the answer, which then says so (`Connection: close`).
    closes: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The client sent `Expect: 100-continue` and none of the body has
    /// been asked for: reading it would have hyper send `100 Continue`.
    awaits_continue: bool,
}

impl RequestBody {
    /// `gate` is the request's over HTTP/2; `None` over HTTP/1.1, where a
    /// client that leaves mid-body is already an error.
    pub fn new(inner: hyper::body::Incoming, gate: Option<Arc<EndGate>>) -> Self {
        let drain = gate.is_none();
        RequestBody {
            inner: Some(inner),
            gate,
            drain,
            closes: None,
            awaits_continue: false,
        }
    }

    /// The client waits for `100 Continue` before it sends the body: one
    /// dropped before any of it was asked for is not read past (that would
    /// invite the upload the answer refuses); its connection closes.
    pub fn awaiting_continue(mut self) -> Self {
        self.awaits_continue = true;
        self
    }

    /// Where an HTTP/1.1 body dropped with more left than is read past
    /// says that its connection will close.
    pub fn tell_closing(mut self, closes: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.closes = Some(closes);
        self
    }

    /// Nothing more is read from it, even if it is dropped unread: its
    /// framing cannot be trusted, and its connection is closed.
    pub fn close_unread(&mut self) {
        self.drain = false;
    }
}

/// How much of an HTTP/1.1 body refused before it was read is still read,
/// and for how long: enough for any request a refusal answers early (an
/// unknown method, a codec or encoding not spoken, a message over the 4 MiB
/// default limits, whose client is still sending the rest), so the client
/// reads the answer and its connection serves the next request. Reading and
/// dropping costs little; closing while the client sends loses it the
/// answer (its next write fails, and the kernel discards what it had).
pub const DRAIN_BYTES: usize = 8 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

impl Drop for RequestBody {
    fn drop(&mut self) {
        // An HTTP/1.1 client may send its body after its headers, and a
        // refusal may come before it: hyper closes a connection whose body
        // was left unread, and the client, still sending, is reset before
        // it reads the answer (or the next request on the connection
        // fails). Read to the end in the background, as nginx's discarding
        // of a request body does; past the bound the connection closes.
        if !self.drain || self.inner.as_ref().is_none_or(|b| b.is_end_stream()) {
            return;
        }
        let left = self.inner.as_ref().map_or(0, |b| b.size_hint().lower());
        if left > DRAIN_BYTES as u64 || self.awaits_continue {
            // Known too long to read past, or never to be sent unless
            // asked for: hyper closes the connection.
            if let Some(closes) = &self.closes {
                closes.store(true, Ordering::Release);
            }
            return;
        }
        let (Some(body), Ok(runtime)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(drain(body));
    }
}

/// Reads `body` to its end, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn drain(mut body: hyper::body::Incoming) {
    use http_body_util::BodyExt as _;
    let read = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    Read(hyper::Error),
    /// The client reset its HTTP/2 stream before the body's end.
    Reset,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Read(e) => e.fmt(f),
            BodyError::Reset => f.write_str("the client reset the stream before the body's end"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Read(e) => Some(e),
            BodyError::Reset => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // Asked for: hyper sends `100 Continue`, and the client the body.
        this.awaits_continue = false;
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Err(e)) => {
                // A body whose framing broke (a bad chunk size) ends its
                // HTTP/1.1 connection: the answer says so.
                if let Some(closes) = &this.closes {
                    closes.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Err(BodyError::Read(e))))
            }
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            None => match &this.gate {
                None => Poll::Ready(None),
                Some(gate) => match ready!(gate.poll_end(cx)) {
                    true => Poll::Ready(None),
                    false => Poll::Ready(Some(Err(BodyError::Reset))),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
            && self
                .gate
                .as_ref()
                .is_none_or(|g| g.state.load(Ordering::Acquire) == CONFIRMED)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// What hyper polls for one HTTP/2 request (its future, then its response
/// body), telling the request's [`EndGate`] when hyper has looked for a
/// reset since the body's end, and when it dropped them for one.
pub struct Witness {
    gate: Arc<EndGate>,
    /// Handed from the future to the response body: this one's drop is no
    /// longer the request's end.
    handed_over: bool,
}

impl Witness {
    pub fn new(gate: Arc<EndGate>) -> Self {
        Witness {
            gate,
            handed_over: false,
        }
    }

    /// Before the request's future is polled: an end that a pending poll
    /// saw is confirmed, hyper having found no reset after it.
    pub fn before_future_poll(&self, cx: &Context<'_>) {
        self.gate.witness.register(cx.waker());
        self.gate.confirm(CHECKED, cx.waker());
    }

    /// After the request's future was polled and is pending: hyper now
    /// looks for a reset, and the next poll (asked for here) knows.
    pub fn after_pending_future(&self, cx: &Context<'_>) {
        if self.gate.advance(ENDED, CHECKED) {
            cx.waker().wake_by_ref();
        }
    }

    /// Before the response body is polled: hyper has just looked for a
    /// reset, so any end seen so far is real.
    pub fn before_body_poll(&self, cx: &Context<'_>) {
        self.gate.witness.register(cx.waker());
        self.gate.confirm(ENDED, cx.waker());
        self.gate.confirm(CHECKED, cx.waker());
    }

    /// The same gate, for the response body once the future is done.
    pub fn hand_over(mut self) -> Witness {
        self.handed_over = true;
        Witness::new(self.gate.clone())
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        if !self.handed_over {
            self.gate.abandon();
        }
    }
}

/// The request's future, watched by its [`Witness`].
pub struct Witnessed<F> {
    pub future: Pin<Box<F>>,
    pub witness: Option<Witness>,
}

impl<F: Future> Future for Witnessed<F> {
    type Output = (F::Output, Option<Witness>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(w) = &this.witness {
            w.before_future_poll(cx);
        }
        match this.future.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready((out, this.witness.take().map(Witness::hand_over))),
            Poll::Pending => {
                if let Some(w) = &this.witness {
                    w.after_pending_future(cx);
                }
                Poll::Pending
            }
        }
    }
}
