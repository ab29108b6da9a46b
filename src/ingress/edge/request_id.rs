//! The request id: `x-request-id` as the client sent it, when it is one
//! (1 to 128 visible ASCII characters), else one the gateway makes (32
//! lowercase hex digits, random). Assigned before anything else looks at
//! the request, so refusals carry it too; forwarded to the backend
//! whatever `metadata.forward` says, and returned to the client.

use crate::headers::never_indexed;
use http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

const MAX_LEN: usize = 128;

/// Whether a client's value can serve as the id (nothing a log line or a
/// header could be confused by).
pub fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A new id.
pub fn generate() -> HeaderValue {
    let mut hex = [0u8; 32];
    crate::observe::traces::hex_into(&fastrand::u128(..).to_be_bytes(), &mut hex);
    never_indexed(HeaderValue::from_bytes(&hex).expect("hex is a valid header value"))
}

/// Keeps the client's one acceptable id (or makes one) as the request's
/// only `x-request-id`, and returns it.
pub fn assign(headers: &mut HeaderMap) -> HeaderValue {
    let mut sent = headers.get_all(&HEADER).iter();
    let id = match (sent.next(), sent.next()) {
        (Some(v), None) if acceptable(v) => never_indexed(v.clone()),
        _ => generate(),
    };
    headers.insert(HEADER, id.clone());
    id
}

/// The id of a call of a WebSocket session that names none of its own:
/// the session's id and the call's number, whatever the session id's
/// length, so a client can always tell a call's id without a frame
/// saying it (a 128-character session id makes ids of up to 149).
pub fn for_call(session: Option<&HeaderValue>, seq: u64) -> HeaderValue {
    match session.and_then(|s| s.to_str().ok()) {
        Some(s) => {
            HeaderValue::from_str(&format!("{s}.{seq}")).map_or_else(|_| generate(), never_indexed)
        }
        None => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_id_is_kept_and_anything_else_replaced() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(assign(&mut h), "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let id = assign(&mut h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
            assert_eq!(h.get_all(HEADER).iter().count(), 1);
        }
        let mut two = HeaderMap::new();
        two.append(HEADER, HeaderValue::from_static("a"));
        two.append(HEADER, HeaderValue::from_static("b"));
        let id = assign(&mut two);
        assert_eq!(id.len(), 32, "two ids: neither is believed");
        assert_eq!(two.get_all(HEADER).iter().count(), 1);
        let mut none = HeaderMap::new();
        assert_ne!(assign(&mut none), assign(&mut HeaderMap::new()));
    }

    #[test]
    fn every_id_is_kept_out_of_http2_header_compression() {
        let mut kept = HeaderMap::new();
        kept.insert(HEADER, HeaderValue::from_static("abc-123"));
        let ids = [
            assign(&mut kept),
            assign(&mut HeaderMap::new()),
            for_call(Some(&HeaderValue::from_static("abc")), 7),
            for_call(None, 7),
        ];
        for id in &ids {
            assert!(id.is_sensitive(), "{:?} would be indexed", id.to_str());
        }
        assert!(kept.get(HEADER).unwrap().is_sensitive());
        assert_eq!(ids[2].to_str().unwrap(), "abc.7");
    }

    #[test]
    fn a_call_id_extends_the_longest_session_id() {
        let session = HeaderValue::from_str(&"s".repeat(MAX_LEN)).unwrap();
        let id = for_call(Some(&session), u64::MAX);
        assert_eq!(
            id.to_str().unwrap(),
            format!("{}.{}", "s".repeat(MAX_LEN), u64::MAX)
        );
    }
}
