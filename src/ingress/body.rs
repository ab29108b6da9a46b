//! The response body of every HTTP reply: a whole buffer, or frames written
//! as they are produced (flushed per message for streams). It also holds the
//! connection's activity guard, so a connection counts as busy until the
//! body is fully sent or dropped.

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Body frames as produced: data, and for gRPC a final trailers frame.
pub type FrameStream = Pin<Box<dyn Stream<Item = Frame<Bytes>> + Send>>;

/// Frames of a reply that may have to be cut short: an `Err` aborts the
/// reply (HTTP/2: the stream is reset; HTTP/1.1: the connection closes
/// without the last chunk), so the client cannot take it as complete.
pub type FallibleFrameStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Aborted>> + Send>>;

/// A reply cut short: what a client of a raw byte stream, which has no
/// place for an error, learns of a failure after the first byte.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the reply was cut short: the backend's stream failed")
    }
}

impl std::error::Error for Aborted {}

/// Any other body (a tonic service's reply, for instance).
pub type BoxedBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Counts requests in flight on one connection, for the idle timeout.
#[derive(Default, Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Bumped on every request start and end; the watchdog sees progress.
    events: AtomicUsize,
}

impl Activity {
    pub fn start(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        ActivityGuard(self.clone())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn events(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

enum Content {
    Full(Option<Bytes>),
    Stream(FrameStream),
    Fallible(FallibleFrameStream),
    Boxed(BoxedBody),
}

pub struct ResponseBody {
    content: Content,
    guard: Option<ActivityGuard>,
    /// Tells an HTTP/2 request's body that hyper found no reset.
    witness: Option<super::request_body::Witness>,
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ResponseBody {
            content: Content::Full((!bytes.is_empty()).then_some(bytes)),
            guard: None,
            witness: None,
        }
    }

    pub fn empty() -> Self {
        ResponseBody {
            content: Content::Full(None),
            guard: None,
            witness: None,
        }
    }

    pub fn stream(frames: FrameStream) -> Self {
        ResponseBody {
            content: Content::Stream(frames),
            guard: None,
            witness: None,
        }
    }

    /// A stream that may end in an abort (see [`FallibleFrameStream`]).
    pub fn fallible_stream(frames: FallibleFrameStream) -> Self {
        ResponseBody {
            content: Content::Fallible(frames),
            guard: None,
            witness: None,
        }
    }

    pub fn boxed(body: BoxedBody) -> Self {
        ResponseBody {
            content: Content::Boxed(body),
            guard: None,
            witness: None,
        }
    }

    pub fn with_guard(mut self, guard: ActivityGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    pub fn with_witness(mut self, witness: Option<super::request_body::Witness>) -> Self {
        self.witness = witness;
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        if let Some(witness) = &self.witness {
            witness.before_body_poll(cx);
        }
        let frame = match &mut self.content {
            Content::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Content::Stream(s) => s.as_mut().poll_next(cx).map(|o| o.map(Ok)),
            Content::Fallible(s) => s.as_mut().poll_next(cx),
            // A failing inner body aborts ours (ended normally, an HTTP/1.1
            // reply would close with its last chunk and pass as complete).
            Content::Boxed(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "inner response body failed");
                    Poll::Ready(Some(Err(Aborted)))
                }
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        };
        if let Poll::Ready(None) = frame {
            self.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Full(b) => b.is_none(),
            Content::Stream(_) | Content::Fallible(_) => false,
            Content::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Content::Full(None) => SizeHint::with_exact(0),
            Content::Stream(_) | Content::Fallible(_) => SizeHint::default(),
            Content::Boxed(b) => b.size_hint(),
        }
    }
}
