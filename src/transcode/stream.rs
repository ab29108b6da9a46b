//! Stream formats over HTTP.
//!
//! Server streams are written as newline-delimited JSON by default:
//! every message is one line `{"result":<message>}`, and a failure ends the
//! stream with one line `{"error":<status>}`. Because every line is wrapped,
//! a message can never be mistaken for the error line.
//!
//! With `Accept: text/event-stream` they are Server-Sent Events: each message
//! is `id: <n>` + `data: <message>` (the default `message` event), a failure is
//! a named `error` event with the status as data, and a clean end is a named
//! `end` event, so an EventSource can close instead of reconnecting.
//!
//! Client streams are read as newline-delimited JSON: one bare message per line.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    Ndjson,
    Sse,
}

impl StreamFormat {
    /// SSE when the client's Accept names text/event-stream with a weight
    /// above 0 and no NDJSON or JSON range above it, else NDJSON
    /// (RFC 9110 section 12.5.1: `q=0` means "not acceptable").
    /// From the request's `Accept` fields, read as one list (RFC 9110
    /// section 5.3: repeating a field is listing its values in one).
    pub fn from_accept<'a>(fields: impl IntoIterator<Item = &'a str>) -> Self {
        let (mut sse, mut ndjson) = (0.0f32, 0.0f32);
        for range in fields.into_iter().flat_map(|f| f.split(',')) {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "text/event-stream" => sse = sse.max(q),
                "application/x-ndjson" | "application/json" => ndjson = ndjson.max(q),
                _ => {}
            }
        }
        if sse > 0.0 && sse >= ndjson {
            StreamFormat::Sse
        } else {
            StreamFormat::Ndjson
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Ndjson => "application/x-ndjson",
            StreamFormat::Sse => "text/event-stream",
        }
    }

    /// One message; `seq` counts from 1.
    pub fn message(self, seq: u64, json: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(json.len() + 32);
        match self {
            StreamFormat::Ndjson => {
                out.extend_from_slice(b"{\"result\":");
                out.extend_from_slice(json);
                out.extend_from_slice(b"}\n");
            }
            StreamFormat::Sse => {
                out.extend_from_slice(format!("id: {seq}\ndata: ").as_bytes());
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
            }
        }
        out.freeze()
    }

    /// The terminal error record.
    pub fn error(self, status_json: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(status_json.len() + 24);
        match self {
            StreamFormat::Ndjson => {
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(status_json);
                out.extend_from_slice(b"}\n");
            }
            StreamFormat::Sse => {
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(status_json);
                out.extend_from_slice(b"\n\n");
            }
        }
        out.freeze()
    }

    /// The record after the last message of a stream that ended well.
    pub fn end(self) -> Option<Bytes> {
        match self {
            StreamFormat::Ndjson => None,
            StreamFormat::Sse => Some(Bytes::from_static(b"event: end\ndata: {}\n\n")),
        }
    }
}

/// Splits a byte stream into lines as chunks arrive; blank lines are
/// skipped. Each line comes with its 1-based number in the whole stream,
/// blank ones counted, so an error can say where it is.
#[derive(Default)]
pub struct LineSplitter {
    buf: BytesMut,
    /// Lines ended so far.
    ended: usize,
}

impl LineSplitter {
    /// Adds a chunk; returns the complete lines it finished.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(usize, Bytes)> {
        self.buf.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            // A CRLF line end is a line end: its CR is not part of the line.
            let end = if i > 0 && self.buf[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            let line = self.buf.split_to(i + 1).freeze().slice(..end);
            self.ended += 1;
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push((self.ended, line));
            }
        }
        lines
    }

    /// The last line, if the input did not end with a newline.
    pub fn finish(&mut self) -> Option<(usize, Bytes)> {
        let rest = std::mem::take(&mut self.buf).freeze();
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some((self.ended + 1, rest))
    }

    /// Bytes waiting for their newline (a CR that may start a CRLF not counted).
    pub fn pending(&self) -> usize {
        self.buf.len() - usize::from(self.buf.last() == Some(&b'\r'))
    }
}

#[cfg(test)]
mod tests;
