//! Request bodies shared by the adapters that read framed or whole bodies
//! (gRPC, gRPC-Web, Connect): a size-limited read, and a stream that cuts
//! a body into length-prefixed messages as it arrives.

use super::request_body::BodyError;
use crate::envelope::MessageStream;
use crate::error::GatewayError;
use crate::transcode::framing::Deframer;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};

pub use crate::config::{BODY_READ_TIMEOUT, STREAM_IDLE_TIMEOUT};

/// Reads a whole body, refusing one over `limit` bytes with a 413, one
/// that stalls for `idle` between two pieces with a 408
/// (`server.limits.body_read_timeout`), and one still arriving at
/// `deadline` (the call's, when the body is its request) with a 504.
pub async fn read_limited(
    mut body: super::request_body::RequestBody,
    limit: usize,
    limit_key: &'static str,
    idle: Duration,
    deadline: Option<Instant>,
) -> Result<Bytes, GatewayError> {
    // A declared length over the limit is refused before any of it is
    // read, so a client waiting on `Expect: 100-continue` is never invited
    // to send a body that would be refused.
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(GatewayError::payload_too_large(limit, limit_key));
    }
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = next_frame(&mut body, (idle, BODY_READ_TIMEOUT), deadline).await?;
        match frame {
            None => return Ok(out.freeze()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > limit {
                        return Err(GatewayError::payload_too_large(limit, limit_key));
                    }
                    out.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => return Err(body_error(&e, "could not read the request")),
        }
    }
}

/// A body's next piece, waited for up to `idle` (named by `idle_key`) and
/// never past `deadline`: one timer for both, and the error names the one
/// that came first.
pub(super) async fn next_frame(
    body: &mut super::request_body::RequestBody,
    (idle, idle_key): (Duration, &'static str),
    deadline: Option<Instant>,
) -> Result<Option<Result<http_body::Frame<Bytes>, BodyError>>, GatewayError> {
    // The runtime's clock, as every other timer here reads it.
    let idle_ends = tokio::time::Instant::now().checked_add(idle);
    let deadline = deadline.map(tokio::time::Instant::from_std);
    let (until, by_deadline) = match (idle_ends, deadline) {
        (Some(i), Some(d)) if d < i => (Some(d), true),
        (None, Some(d)) => (Some(d), true),
        (i, _) => (i, false),
    };
    let Some(until) = until else {
        return Ok(body.frame().await);
    };
    tokio::time::timeout_at(until, body.frame())
        .await
        .map_err(|_| match by_deadline {
            true => GatewayError::deadline_passed_reading_request(),
            false => GatewayError::client_timeout(idle_key, idle),
        })
}

/// How a framed body's bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Binary,
    /// gRPC-Web text: base64 over the whole body, decoded as it arrives.
    Base64,
}

/// gRPC-Web text decoded piece by piece: a body may be several base64
/// chunks, each padded, one after the other, and its last chunk may leave
/// out its padding (as `-bin` metadata and a Connect GET's message may).
/// Four characters at a time handle both; whitespace is skipped.
#[derive(Default)]
pub struct WebText {
    /// Characters of a group of four not yet complete.
    pending: Vec<u8>,
}

impl WebText {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );

    fn not_base64() -> GatewayError {
        GatewayError::invalid_field("", "grpc-web-text body is not base64")
    }

    /// The bytes of every whole group of four in `data` and what was left.
    pub fn push(&mut self, data: &[u8]) -> Result<Bytes, GatewayError> {
        use base64::Engine as _;
        self.pending
            .extend(data.iter().copied().filter(|b| !b.is_ascii_whitespace()));
        let whole = self.pending.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        // Decoded in runs, each ending at a padded group (which ends a
        // chunk of base64) or at the last whole group: one call per run,
        // not per group.
        let mut start = 0;
        for end in (4..=whole).step_by(4) {
            if end == whole || self.pending[end - 2] == b'=' || self.pending[end - 1] == b'=' {
                Self::LENIENT
                    .decode_vec(&self.pending[start..end], &mut out)
                    .map_err(|_| Self::not_base64())?;
                start = end;
            }
        }
        self.pending.drain(..whole);
        Ok(out.into())
    }

    /// The bytes of an unpadded last group; one leftover character is
    /// never base64.
    pub fn finish(&mut self) -> Result<Bytes, GatewayError> {
        use base64::Engine as _;
        let rest = std::mem::take(&mut self.pending);
        match rest.len() {
            0 => Ok(Bytes::new()),
            1 => Err(Self::not_base64()),
            _ => Ok(Self::LENIENT
                .decode(&rest)
                .map_err(|_| Self::not_base64())?
                .into()),
        }
    }
}

/// A body read as length-prefixed messages.
struct Framed {
    body: super::request_body::RequestBody,
    /// gRPC-Web text: decoded before it is deframed.
    text: Option<WebText>,
    deframer: Deframer,
    ended: bool,
    failed: bool,
    idle: Duration,
    idle_key: &'static str,
    /// The call's deadline, when the body is a unary call's request.
    deadline: Option<Instant>,
}

impl Framed {
    fn new(
        body: super::request_body::RequestBody,
        encoding: BodyEncoding,
        limit: usize,
        (idle, idle_key): (Duration, &'static str),
        deadline: Option<Instant>,
    ) -> Framed {
        Framed {
            body,
            text: (encoding == BodyEncoding::Base64).then(WebText::default),
            deframer: Deframer::new(limit),
            ended: false,
            failed: false,
            idle,
            idle_key,
            deadline,
        }
    }

    /// The next message, the failure that ends the body, or `None` at its
    /// clean end (and after a failure).
    async fn next(&mut self) -> Option<Result<Bytes, GatewayError>> {
        if self.failed {
            return None;
        }
        loop {
            let next = match self.deframer.next_message() {
                Ok(Some(m)) => Some(Ok(m)),
                Ok(None) if self.ended => self.deframer.finish().err().map(|e| Err(e.into())),
                Ok(None) => None,
                Err(e) => Some(Err(e.into())),
            };
            if let Some(item) = next {
                self.failed = item.is_err();
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let frame =
                match next_frame(&mut self.body, (self.idle, self.idle_key), self.deadline).await {
                    Ok(frame) => frame,
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                };
            let decoded = match frame {
                Some(Ok(frame)) => match (frame.into_data(), &mut self.text) {
                    (Ok(data), Some(text)) => text.push(&data),
                    (Ok(data), None) => Ok(data),
                    (Err(_), _) => Ok(Bytes::new()),
                },
                Some(Err(e)) => Err(body_error(&e, "could not read the request stream")),
                None => {
                    self.ended = true;
                    self.text.as_mut().map_or(Ok(Bytes::new()), WebText::finish)
                }
            };
            match decoded {
                Ok(data) if !data.is_empty() => self.deframer.push(data),
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The body's length-prefixed messages, each passed through `decode`, as
/// they arrive. The stream ends after the first error; a client that sends
/// nothing for `idle` is one, named by `idle_key` (the client stream's
/// `server.limits.stream_idle_timeout`, or a unary body's `body_read_timeout`).
pub fn messages<F>(
    body: super::request_body::RequestBody,
    encoding: BodyEncoding,
    limit: usize,
    idle: (Duration, &'static str),
    decode: F,
) -> MessageStream
where
    F: Fn(Bytes) -> Result<Bytes, GatewayError> + Send + Sync + 'static,
{
    let framed = Framed::new(body, encoding, limit, idle, None);
    Box::pin(futures_util::stream::unfold(
        (framed, decode),
        |(mut framed, decode)| async move {
            let item = framed.next().await?.and_then(&decode);
            // A message that does not decode ends the stream as a bad frame does.
            framed.failed |= item.is_err();
            Some((item, (framed, decode)))
        },
    ))
}

/// Why reading a request body failed: the client went away (closed the
/// connection mid-body, reset its HTTP/2 stream), which is a call it
/// abandoned, or else a body the gateway could not read.
pub fn body_error(e: &BodyError, what: &str) -> GatewayError {
    if client_left(e) {
        GatewayError::client_left(e)
    } else {
        // With its causes: hyper's own words ("invalid chunk size") say
        // what was wrong with the framing.
        GatewayError::invalid_field("", format!("{what}: {}", crate::error::with_causes(e)))
    }
}

fn client_left(e: &BodyError) -> bool {
    let e = match e {
        BodyError::Reset => return true,
        BodyError::Read(e) => e,
    };
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    use crate::error::error_in_chain;
    if let Some(h2) = error_in_chain::<h2::Error>(e) {
        return h2.is_reset() || h2.is_io() || h2.is_go_away();
    }
    error_in_chain::<std::io::Error>(e).is_some_and(|io| {
        use std::io::ErrorKind::*;
        matches!(
            io.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
        )
    })
}

/// The one request message of a unary or server-streaming call, read
/// from its body and passed through `decode` as [`messages`] reads it. None, or a second one, is
/// refused; the second is refused as soon as it is read, so a client
/// cannot make the gateway buffer more than one message.
pub async fn one(
    body: super::request_body::RequestBody,
    encoding: BodyEncoding,
    limit: usize,
    idle: (Duration, &'static str),
    deadline: Option<Instant>,
    decode: impl Fn(Bytes) -> Result<Bytes, GatewayError>,
) -> Result<Bytes, GatewayError> {
    let mut framed = Framed::new(body, encoding, limit, idle, deadline);
    // Each message is decoded as it is read, as in [`messages`]: a bad
    // first message is refused before the rest of the body is waited for.
    let Some(message) = framed.next().await.transpose()?.map(&decode).transpose()? else {
        return Err(not_one("0"));
    };
    if let Some(second) = framed.next().await.transpose()? {
        decode(second)?;
        return Err(not_one("more than 1"));
    }
    Ok(message)
}

fn not_one(got: &str) -> GatewayError {
    GatewayError::invalid_field(
        "",
        format!("a unary or server-streaming call takes exactly one request message, got {got}"),
    )
}
