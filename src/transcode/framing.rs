//! gRPC message framing: a flags byte, a 4-byte big-endian length, then the
//! message. gRPC-Web uses the same frames and marks its trailers frame with
//! flag 0x80. Messages are sliced out of the received buffers, not copied.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const COMPRESSED: u8 = 0x01;
pub const TRAILERS: u8 = 0x80;

/// What the deframer found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    TooLarge {
        len: usize,
        limit: usize,
    },
    Compressed,
    /// Flag bits no client message carries: gRPC-Web's trailers (0x80),
    /// Connect's end of stream (0x02), or none defined at all.
    ReservedFlags(u8),
    /// The input ended inside a frame.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { len, limit } => {
                write!(f, "message of {len} bytes is over the limit of {limit}")
            }
            FrameError::Compressed => {
                f.write_str("compressed messages are not supported; send them uncompressed (grpc-encoding, connect-content-encoding or content-encoding identity)")
            }
            FrameError::ReservedFlags(flags) => write!(
                f,
                "a message frame with flags 0x{flags:02x}: a client's frames carry 0x00 (or 0x01, compressed) only"
            ),
            FrameError::Truncated => f.write_str("the request ended inside a message frame"),
        }
    }
}

impl From<FrameError> for crate::error::GatewayError {
    fn from(e: FrameError) -> Self {
        use crate::error::{ErrorKind, GatewayError, Origin};
        match e {
            FrameError::TooLarge { limit, .. } => {
                GatewayError::payload_too_large(limit, crate::config::MESSAGE_LIMIT)
            }
            FrameError::Compressed => GatewayError::new(
                ErrorKind::UnsupportedEncoding,
                Origin::Client,
                e.to_string(),
            ),
            FrameError::Truncated | FrameError::ReservedFlags(_) => {
                GatewayError::invalid_field("", e.to_string())
            }
        }
    }
}

/// Splits a byte stream into messages as chunks arrive. A chunk that
/// holds whole messages (a unary call's one DATA frame, most often) is
/// sliced, not copied; only a message split across chunks is gathered
/// into a buffer of its own.
pub struct Deframer {
    /// The received chunk not yet read, while nothing is gathered.
    chunk: Bytes,
    /// A frame gathered across chunks.
    buf: BytesMut,
    limit: usize,
}

impl Deframer {
    pub fn new(limit: usize) -> Self {
        Deframer {
            chunk: Bytes::new(),
            buf: BytesMut::new(),
            limit,
        }
    }

    pub fn push(&mut self, chunk: Bytes) {
        if self.buf.is_empty() && self.chunk.is_empty() {
            self.chunk = chunk;
        } else {
            self.gather();
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Moves what is left of the held chunk into the buffer.
    fn gather(&mut self) {
        if !self.chunk.is_empty() {
            self.buf.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
    }

    /// The next complete message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if !self.chunk.is_empty() {
            match self.frame_len(&self.chunk)? {
                Some(len) if self.chunk.len() >= 5 + len => {
                    let mut message = self.chunk.split_to(5 + len);
                    message.advance(5);
                    return Ok(Some(message));
                }
                _ => self.gather(),
            }
        }
        let Some(len) = self.frame_len(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The length of the frame `bytes` starts with, judged from its prefix
    /// alone (a length over the limit is refused before its bytes come);
    /// `None` until the prefix is in.
    fn frame_len(&self, bytes: &[u8]) -> Result<Option<usize>, FrameError> {
        let [flags, a, b, c, d, ..] = *bytes else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if flags & !COMPRESSED != 0 {
            return Err(FrameError::ReservedFlags(flags));
        }
        if flags & COMPRESSED != 0 {
            return Err(FrameError::Compressed);
        }
        Ok(Some(len))
    }

    /// Called at the end of input: anything left is a truncated frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() && self.chunk.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// One frame: header and message. Small messages are copied into one
/// buffer; large ones are sent as two chunks to avoid the copy.
pub fn frame(flags: u8, message: Bytes) -> (Bytes, Option<Bytes>) {
    let mut header = BytesMut::with_capacity(
        5 + if message.len() <= 8192 {
            message.len()
        } else {
            0
        },
    );
    header.put_u8(flags);
    header.put_u32(message.len() as u32);
    if message.len() <= 8192 {
        header.extend_from_slice(&message);
        (header.freeze(), None)
    } else {
        (header.freeze(), Some(message))
    }
}

/// The gRPC-Web trailers frame: `name: value\r\n` lines under flag 0x80.
pub fn web_trailers(trailers: &http::HeaderMap) -> Bytes {
    let mut text = BytesMut::new();
    for (name, value) in trailers {
        text.extend_from_slice(name.as_str().as_bytes());
        text.extend_from_slice(b": ");
        text.extend_from_slice(value.as_bytes());
        text.extend_from_slice(b"\r\n");
    }
    let mut out = BytesMut::with_capacity(5 + text.len());
    out.put_u8(TRAILERS);
    out.put_u32(text.len() as u32);
    out.extend_from_slice(&text);
    out.freeze()
}
