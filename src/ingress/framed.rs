//! Request bodies shared by the adapters that read framed or whole bodies
//! (gRPC, gRPC-Web, Connect): a size-limited read, and a stream that cuts
//! a body into length-prefixed messages as it arrives.

use super::request_body::BodyError;
use crate::envelope::MessageStream;
use crate::error::GatewayError;
use crate::transcode::framing::Deframer;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::time::Duration;

pub use crate::config::{BODY_READ_TIMEOUT, STREAM_IDLE_TIMEOUT};

/// Reads a whole body, refusing one over `limit` bytes with a 413, and one
/// that stalls for `idle` between two pieces with a 408
/// (`server.limits.body_read_timeout`).
pub async fn read_limited(
    mut body: super::request_body::RequestBody,
    limit: usize,
    limit_key: &'static str,
    idle: Duration,
) -> Result<Bytes, GatewayError> {
    let mut out = bytes::BytesMut::new();
    loop {
        let frame = tokio::time::timeout(idle, body.frame())
            .await
            .map_err(|_| GatewayError::client_timeout(BODY_READ_TIMEOUT, idle))?;
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

/// The body's length-prefixed messages, each passed through `decode`, as
/// they arrive. The stream ends after the first error; a client that sends
/// nothing for `idle` is one, named by `idle_key` (the client stream's
/// `server.limits.stream_idle_timeout`, or a unary body's `body_read_timeout`).
pub fn messages<F>(
    body: super::request_body::RequestBody,
    limit: usize,
    (idle, idle_key): (Duration, &'static str),
    decode: F,
) -> MessageStream
where
    F: Fn(Bytes) -> Result<Bytes, GatewayError> + Send + Sync + 'static,
{
    let state = (body, Deframer::new(limit), false, false);
    let decode = std::sync::Arc::new(decode);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut body, mut deframer, mut ended, failed)| {
            let decode = decode.clone();
            async move {
                if failed {
                    return None;
                }
                loop {
                    let next = match deframer.next_message() {
                        Ok(Some(m)) => Some(decode(m)),
                        Ok(None) if ended => deframer.finish().err().map(|e| Err(e.into())),
                        Ok(None) => None,
                        Err(e) => Some(Err(e.into())),
                    };
                    if let Some(item) = next {
                        let failed = item.is_err();
                        return Some((item, (body, deframer, ended, failed)));
                    }
                    if ended {
                        return None;
                    }
                    let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
                        let err = GatewayError::client_timeout(idle_key, idle);
                        return Some((Err(err), (body, deframer, true, true)));
                    };
                    match frame {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                deframer.push(&data);
                            }
                        }
                        Some(Err(e)) => {
                            let err = body_error(&e, "could not read the request stream");
                            return Some((Err(err), (body, deframer, true, true)));
                        }
                        None => ended = true,
                    }
                }
            }
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
        GatewayError::invalid_field("", format!("{what}: {e}"))
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
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.is_reset() || h2.is_io() || h2.is_go_away();
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            );
        }
        source = s.source();
    }
    false
}

/// The one request message of a unary or server-streaming call. None, or a
/// second one, is refused; the second is refused as soon as it is read, so
/// a client cannot make the gateway buffer more than one message.
pub async fn exactly_one(mut messages: MessageStream) -> Result<Bytes, GatewayError> {
    use futures_util::StreamExt;
    let refuse = |got: &str| {
        GatewayError::invalid_field(
            "",
            format!(
                "a unary or server-streaming call takes exactly one request message, got {got}"
            ),
        )
    };
    let Some(message) = messages.next().await.transpose()? else {
        return Err(refuse("0"));
    };
    if messages.next().await.transpose()?.is_some() {
        return Err(refuse("more than 1"));
    }
    Ok(message)
}
