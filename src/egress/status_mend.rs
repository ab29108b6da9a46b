//! A backend's status as tonic reads it: a `grpc-status-details-bin` that
//! is not base64 makes tonic panic, and a `grpc-message` that is not UTF-8
//! once percent-decoded makes it throw the backend's code away for
//! `UNKNOWN`. The gRPC spec says a client must not throw the message away,
//! so both are mended before tonic sees them: the message's bad bytes
//! become U+FFFD, and details that cannot be decoded are dropped (the code
//! and message still reach the client).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use percent_encoding::{percent_decode, AsciiSet, CONTROLS};
use std::pin::Pin;
use std::task::{Context, Poll};

/// What the gRPC spec percent-encodes in `grpc-message`: everything
/// outside printable ASCII (control characters here, the rest always),
/// and `%` itself.
const MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Mends the status fields of a reply's headers or trailers in place.
pub fn mend(headers: &mut HeaderMap) {
    if headers
        .get("grpc-status-details-bin")
        // One value: tonic decodes the field whole (a comma is no base64).
        .is_some_and(|v| !crate::headers::is_one_binary_value(v.as_bytes()))
    {
        tracing::debug!("a backend's grpc-status-details-bin is not base64: dropped");
        headers.remove("grpc-status-details-bin");
    }
    let Some(message) = headers.get("grpc-message") else {
        return;
    };
    let bytes: Vec<u8> = percent_decode(message.as_bytes()).collect();
    if std::str::from_utf8(&bytes).is_err() {
        let text = String::from_utf8_lossy(&bytes);
        // Bytes past ASCII are always escaped by the crate.
        let escaped = percent_encoding::utf8_percent_encode(&text, MESSAGE_ESCAPES).to_string();
        if let Ok(v) = HeaderValue::from_str(&escaped) {
            headers.insert("grpc-message", v);
        }
    }
}

/// A reply body whose trailers are mended as they pass.
pub struct MendedTrailers(pub tonic::body::Body);

impl Body for MendedTrailers {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        match Pin::new(&mut self.get_mut().0).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    mend(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
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
    }
}
