//! Strict HTTP/1.1 framing (RFC 9112), checked before any adapter reads a
//! request: exactly one `Host`, no `Transfer-Encoding` but `chunked`, a
//! request target within `server.limits.max_request_target_bytes`, and no
//! more header fields than `max_header_count` (on HTTP/2 too). hyper
//! itself refuses obsolete line folding, invalid header bytes and a head
//! with far more fields (twice the limit) before the request reaches the
//! gateway, and reads a request with both `Content-Length` and
//! `Transfer-Encoding: chunked` by the chunked framing alone (dropping the
//! length, as RFC 9112 section 6.3 says): since the gateway re-frames every
//! body for the backend, no backend can read it another way.

use crate::config::Limits;
use crate::error::{ErrorKind, GatewayError, Origin};
use http::header::{CONTENT_ENCODING, HOST, TRANSFER_ENCODING};
use http::{Request, Version};

/// Whether a request target (path and query) is within
/// `max_request_target_bytes`.
pub fn target_length(target: &str, limits: &Limits) -> Result<(), GatewayError> {
    if target.len() > limits.max_request_target_bytes {
        return Err(GatewayError::new(
            ErrorKind::RequestTargetTooLong {
                limit: limits.max_request_target_bytes,
            },
            Origin::Client,
            format!(
                "the request target is {} bytes, over server.limits.max_request_target_bytes ({})",
                target.len(),
                limits.max_request_target_bytes
            ),
        ));
    }
    Ok(())
}

/// Whether a request may be read at all.
pub fn check<B>(req: &Request<B>, limits: &Limits) -> Result<(), GatewayError> {
    target_length(
        req.uri().path_and_query().map_or("", |pq| pq.as_str()),
        limits,
    )?;
    header_fields(req.headers(), limits, "the request")?;
    // A compressed body would reach a backend as if it were plain: refused,
    // whatever the protocol (gRPC compresses per message, with its own
    // header, and is refused by the message reader).
    let encodings: Vec<String> = codings(req.headers(), CONTENT_ENCODING)
        .into_iter()
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if !encodings.is_empty() {
        return Err(GatewayError::new(
            ErrorKind::UnsupportedEncoding,
            Origin::Client,
            format!(
                "request bodies with Content-Encoding {:?} are not supported: send them uncompressed",
                encodings.join(", ")
            ),
        ));
    }
    if req.version() >= Version::HTTP_2 {
        return Ok(());
    }
    let hosts = req.headers().get_all(HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == Version::HTTP_11) {
        return Err(GatewayError::invalid_field(
            "host",
            format!("an HTTP/1.1 request carries exactly one Host header; this one has {hosts}"),
        ));
    }
    let codings = codings(req.headers(), TRANSFER_ENCODING);
    if !codings.is_empty() && codings != ["chunked"] {
        return Err(GatewayError::new(
            ErrorKind::UnsupportedTransferEncoding,
            Origin::Client,
            format!(
                "Transfer-Encoding {:?} is not supported: only \"chunked\"",
                codings.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Whether an HTTP/1.1 request's `Host` count or `Transfer-Encoding`
/// leaves where its body ends (or whose request it is) to a guess.
pub fn leaves_framing_unsound(req: &Request<impl Sized>) -> bool {
    if req.version() >= Version::HTTP_2 {
        return false;
    }
    let hosts = req.headers().get_all(HOST).iter().count();
    let codings = codings(req.headers(), TRANSFER_ENCODING);
    hosts > 1
        || (hosts == 0 && req.version() == Version::HTTP_11)
        || (!codings.is_empty() && codings != ["chunked"])
}

/// Whether a request's header fields are within `max_header_count` and
/// `max_header_bytes`; `what` names whose they are in the refusal ("the
/// request", or a WebSocket call with its handshake's headers).
/// `fields` header fields against `server.limits.max_header_count`.
pub fn header_count(fields: usize, limits: &Limits, what: &str) -> Result<(), GatewayError> {
    if fields > limits.max_header_count {
        return Err(GatewayError::new(
            ErrorKind::TooManyHeaderFields {
                limit: limits.max_header_count,
            },
            Origin::Client,
            format!(
                "{what} has {fields} header fields, over server.limits.max_header_count ({})",
                limits.max_header_count
            ),
        ));
    }
    Ok(())
}

pub fn header_fields(
    headers: &http::HeaderMap,
    limits: &Limits,
    what: &str,
) -> Result<(), GatewayError> {
    // Every field counts, each cookie crumb of HTTP/2 included.
    header_count(headers.len(), limits, what)?;
    // Sized as HTTP/2 sizes a header list (RFC 7541 section 4.1), on every
    // protocol. The parsers' own bounds are twice this, so that a request
    // between the two gets this answer in its protocol's terms rather than
    // a bare 431 that gRPC and Connect clients cannot read.
    let bytes = crate::headers::header_list_bytes(headers);
    if bytes > limits.max_header_bytes {
        return Err(GatewayError::new(
            ErrorKind::HeaderBytesTooLarge {
                limit: limits.max_header_bytes,
            },
            Origin::Client,
            format!(
                "the header fields of {what} are {bytes} bytes (name, value and 32 bytes each), over server.limits.max_header_bytes ({})",
                limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// The codings a header lists, lowercased, over all its fields.
fn codings(headers: &http::HeaderMap, name: http::header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect()
}
