//! A backend's reply as tonic reads it, mended where tonic would misread
//! what the gRPC spec allows or would panic:
//! - a `grpc-status-details-bin` that is not base64 makes tonic panic, and
//!   a `grpc-message` that is not UTF-8 once percent-decoded makes it throw
//!   the backend's code away for `UNKNOWN`. The spec says a client must not
//!   throw the message away, so both are mended before tonic sees them:
//!   the message's bad bytes become U+FFFD, and details that cannot be
//!   decoded are dropped (the code and message still reach the client);
//! - a `grpc-encoding` header names the coding of the messages flagged
//!   compressed, and a message whose flag is 0 is plain whatever it says
//!   (the spec's "Compressed-Flag"). tonic refuses the whole reply for a
//!   coding it does not read: the header is taken off, and the first
//!   message flagged compressed is refused as tonic would have refused it.

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use percent_encoding::{percent_decode, AsciiSet, CONTROLS};
use std::pin::Pin;
use std::task::{Context, Poll};

/// What the gRPC spec percent-encodes in `grpc-message`: everything
/// outside printable ASCII (control characters here, the rest always),
/// and `%` itself.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

use crate::headers::{GRPC_ENCODING, GRPC_MESSAGE, GRPC_STATUS_DETAILS};

/// Mends the status fields of a reply's headers or trailers in place.
pub fn mend(headers: &mut HeaderMap) {
    if headers
        .get(&GRPC_STATUS_DETAILS)
        // One value: tonic decodes the field whole (a comma is no base64).
        .is_some_and(|v| !crate::headers::is_one_binary_value(v.as_bytes()))
    {
        tracing::debug!("a backend's grpc-status-details-bin is not base64: dropped");
        headers.remove(&GRPC_STATUS_DETAILS);
    }
    let Some(message) = headers.get(&GRPC_MESSAGE) else {
        return;
    };
    // Most messages are printable ASCII without escapes: nothing to
    // decode. A byte past ASCII may come raw (HPACK takes any), and is
    // mended as a bad escape is.
    if message
        .as_bytes()
        .iter()
        .all(|&b| b.is_ascii() && b != b'%')
    {
        return;
    }
    let bytes: Vec<u8> = percent_decode(message.as_bytes()).collect();
    if std::str::from_utf8(&bytes).is_err() {
        let text = String::from_utf8_lossy(&bytes);
        // Bytes past ASCII are always escaped by the crate.
        let escaped = percent_encoding::utf8_percent_encode(&text, MESSAGE_ESCAPES).to_string();
        if let Ok(v) = HeaderValue::from_str(&escaped) {
            headers.insert(&GRPC_MESSAGE, v);
        }
    }
}

/// Mends a trailers-only reply's headers: its status as [`mend`] does, and
/// a `grpc-encoding` taken off, since no message follows for it to name a
/// coding of (tonic would refuse the reply for it before reading the status).
pub fn mend_trailers_only(headers: &mut HeaderMap) {
    headers.remove(&GRPC_ENCODING);
    mend(headers);
}

/// A reply body whose trailers are mended as they pass, and whose
/// messages are watched for a compressed flag when the reply's headers
/// named a coding ([`MendedReply::new`] takes the header off).
pub struct MendedReply {
    body: tonic::body::Body,
    compressed: Option<CompressedFlagWatch>,
}

impl MendedReply {
    /// The reply body of `headers`, whose `grpc-encoding` (other than
    /// `identity`) is taken off and watched for instead.
    pub fn new(headers: &mut HeaderMap, body: tonic::body::Body) -> MendedReply {
        let compressed = headers
            .remove(&GRPC_ENCODING)
            .filter(|coding| coding.as_bytes() != b"identity")
            .map(CompressedFlagWatch::new);
        MendedReply { body, compressed }
    }
}

impl Body for MendedReply {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(match frame.into_trailers() {
                Ok(mut trailers) => {
                    mend(&mut trailers);
                    Ok(Frame::trailers(trailers))
                }
                Err(frame) => match (&mut this.compressed, frame.data_ref()) {
                    (Some(watch), Some(data)) => watch.check(data).map(|()| frame),
                    _ => Ok(frame),
                },
            })),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Follows the gRPC message framing (a flag byte, a 4-byte length, the
/// message) across data frames, to find a message flagged compressed.
struct CompressedFlagWatch {
    coding: HeaderValue,
    /// Bytes of the current message still to pass.
    message_left: u64,
    /// The prefix read so far of the next message (flag and length).
    prefix: [u8; 5],
    prefix_len: usize,
}

impl CompressedFlagWatch {
    fn new(coding: HeaderValue) -> CompressedFlagWatch {
        CompressedFlagWatch {
            coding,
            message_left: 0,
            prefix: [0; 5],
            prefix_len: 0,
        }
    }

    /// Refuses a message flagged compressed as tonic refuses a reply in a
    /// coding it does not read (what `backend_error` names).
    fn check(&mut self, data: &Bytes) -> Result<(), tonic::Status> {
        let mut data = data.clone();
        while data.has_remaining() {
            if self.message_left > 0 {
                let skip = self.message_left.min(data.remaining() as u64);
                data.advance(skip as usize);
                self.message_left -= skip;
                continue;
            }
            self.prefix[self.prefix_len] = data.get_u8();
            self.prefix_len += 1;
            // 1 is compressed; another flag is no valid message, and
            // tonic's decoder refuses it as such.
            if self.prefix_len == 1 && self.prefix[0] == 1 {
                let coding = String::from_utf8_lossy(self.coding.as_bytes());
                let mut refused = tonic::Status::unimplemented(format!(
                    "Content is compressed with `{coding}` which isn't supported"
                ));
                refused
                    .metadata_mut()
                    .insert("grpc-accept-encoding", "identity".parse().expect("ASCII"));
                return Err(refused);
            }
            if self.prefix_len == 5 {
                let length = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.message_left = u64::from(length);
                self.prefix_len = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mended(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        mend(&mut h);
        h
    }

    #[test]
    fn details_that_are_not_base64_are_dropped_and_the_status_kept() {
        let h = mended(&[
            ("grpc-status", "5"),
            ("grpc-message", "gone"),
            ("grpc-status-details-bin", "!!notbase64"),
        ]);
        assert_eq!(h.get("grpc-status-details-bin"), None);
        let status = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::NotFound, "gone")
        );
    }

    #[test]
    fn details_in_base64_padded_or_not_pass_as_they_are() {
        for v in ["CAU=", "CAU"] {
            let h = mended(&[("grpc-status", "5"), ("grpc-status-details-bin", v)]);
            assert_eq!(h["grpc-status-details-bin"], v);
        }
    }

    #[test]
    fn a_message_cut_inside_a_character_keeps_its_code() {
        let h = mended(&[
            ("grpc-status", "5"),
            ("grpc-message", "caf%C3%A9 %E2%82 100%25"),
        ]);
        let status = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "café \u{fffd} 100%");
        // A message that decodes is not touched.
        let h = mended(&[("grpc-message", "caf%C3%A9")]);
        assert_eq!(h["grpc-message"], "caf%C3%A9");
        // A byte past ASCII sent raw, not escaped (Latin-1 `é`).
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("5"));
        h.insert("grpc-message", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        mend(&mut h);
        let status = tonic::Status::from_header_map(&h).unwrap();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "caf\u{fffd}");
    }

    #[test]
    fn a_message_is_refused_for_its_compressed_flag_not_for_the_header() {
        let frame = |flag: u8, message: &[u8]| {
            let mut out = vec![flag];
            out.extend_from_slice(&(message.len() as u32).to_be_bytes());
            out.extend_from_slice(message);
            out
        };
        // Plain messages under `grpc-encoding: gzip`, split anywhere.
        let mut plain = frame(0, b"hello");
        plain.extend(frame(0, b""));
        plain.extend(frame(0, &[1; 300]));
        for cut in 0..plain.len() {
            let mut watch = CompressedFlagWatch::new(HeaderValue::from_static("gzip"));
            watch.check(&Bytes::copy_from_slice(&plain[..cut])).unwrap();
            watch.check(&Bytes::copy_from_slice(&plain[cut..])).unwrap();
        }
        // A second message flagged compressed, its flag in a later frame.
        let mut mixed = frame(0, b"plain");
        let at = mixed.len();
        mixed.extend(frame(1, b"\x1f\x8b"));
        let mut watch = CompressedFlagWatch::new(HeaderValue::from_static("gzip"));
        watch.check(&Bytes::copy_from_slice(&mixed[..at])).unwrap();
        let refused = watch
            .check(&Bytes::copy_from_slice(&mixed[at..]))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert_eq!(
            refused.message(),
            "Content is compressed with `gzip` which isn't supported"
        );
    }

    #[test]
    fn the_coding_header_is_taken_off_unless_it_is_identity() {
        for (coding, watched) in [("gzip", true), ("identity", false)] {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-encoding", HeaderValue::from_static(coding));
            let reply = MendedReply::new(&mut headers, tonic::body::Body::empty());
            assert!(headers.get("grpc-encoding").is_none(), "{coding}");
            assert_eq!(reply.compressed.is_some(), watched, "{coding}");
        }
    }
}
