//! Header rules shared by ingress and egress adapters: deadlines from `grpc-timeout`, and
//! which headers are the gateway's own (never forwarded either way), and values HTTP/2
//! compression must not index.

use crate::envelope::CallKind;
use http::{HeaderName, HeaderValue};
use std::time::Duration;

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    // Digits only: `parse` would also take a sign (`+1S`).
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A binary metadata field (`*-bin`) whose value is not base64: a `400` /
/// `INVALID_ARGUMENT` naming it, on every protocol, rather than bytes the
/// backend's gRPC library would fail to decode, or pass on as they are.
/// Padded and unpadded values are both base64 (the gRPC spec), and one
/// field may carry several, comma-separated.
pub fn check_binary_fields(
    headers: &http::HeaderMap,
    prefix: &str,
) -> Result<(), crate::error::GatewayError> {
    for (name, value) in headers {
        if !name.as_str().ends_with("-bin") {
            continue;
        }
        if !is_binary_value(value) {
            return Err(crate::error::GatewayError::invalid_field(
                format!("{prefix}{name}"),
                "is not base64: a field whose name ends in -bin carries binary data as base64",
            ));
        }
    }
    Ok(())
}

/// Whether a `-bin` field's value is base64 as gRPC reads it: standard
/// alphabet, padded or not, possibly several comma-separated.
pub fn is_binary_value(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',')
            .all(|part| is_one_binary_value(part.trim().as_bytes()))
    })
}

/// Whether `bytes` are one base64 value as gRPC writes `-bin` fields:
/// standard alphabet, padded or not.
pub fn is_one_binary_value(bytes: &[u8]) -> bool {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(bytes).is_ok()
}

/// `connect-timeout-ms`: a positive integer of at most 10 digits.
pub fn parse_connect_timeout(v: &str) -> Option<Duration> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u64>().ok().map(Duration::from_millis)
}

/// A deadline header the client sent that is not well-formed: a
/// `400` / `INVALID_ARGUMENT` naming it, on every protocol, rather than
/// a call that silently runs without the deadline its client asked for.
pub fn check_deadline_headers(headers: &http::HeaderMap) -> Result<(), crate::error::GatewayError> {
    check_deadline_fields(headers, "")
}

/// The header values every protocol checks before a call: the deadlines
/// and binary (`-bin`) fields. Not framing: the body can still be read, so
/// MCP answers these refusals with the request's JSON-RPC id.
pub fn check_values(headers: &http::HeaderMap) -> Result<(), crate::error::GatewayError> {
    check_deadline_headers(headers)?;
    check_one_value(headers, http::header::CONTENT_TYPE)?;
    check_content_type_text(headers)?;
    check_binary_fields(headers, "")
}

/// A media type is ASCII (RFC 9110 section 8.3.1): a `Content-Type` with
/// another byte is no type at all, and would pass for an absent one (read
/// as JSON) wherever a type is read as text.
fn check_content_type_text(headers: &http::HeaderMap) -> Result<(), crate::error::GatewayError> {
    match headers.get(http::header::CONTENT_TYPE) {
        Some(v) if v.to_str().is_err() => Err(crate::error::GatewayError::unreadable_content_type(
            &v.as_bytes().escape_ascii().to_string(),
        )),
        _ => Ok(()),
    }
}

/// A body has one type (RFC 9110 section 8.3), a request one origin (RFC
/// 6454 section 7.3): two different fields leave the answer to whoever
/// reads which (the cross-origin check one, the backend another).
pub fn check_one_value(
    headers: &http::HeaderMap,
    name: http::HeaderName,
) -> Result<(), crate::error::GatewayError> {
    if values_differ(headers, &name) {
        return Err(crate::error::GatewayError::invalid_field(
            name.as_str(),
            "was sent more than once, with different values; send one",
        ));
    }
    Ok(())
}

/// A `Host` is a host name or address and an optional port (RFC 9110
/// section 7.2, RFC 3986 section 3.2.2), never empty: nothing else reaches the
/// forwarding headers or the own-origin check. Names keep to letters,
/// digits, `-`, `.`, `_`, `~` and percent-escapes, stricter than RFC 3986's
/// reg-name (its sub-delimiters, `!$&'()*+,;=`, name no real host, and
/// IPvFuture literals are refused); a port is at most 65535.
pub fn check_host(headers: &http::HeaderMap) -> Result<(), crate::error::GatewayError> {
    let Some(host) = headers.get(http::header::HOST) else {
        return Ok(());
    };
    // Two counts the map keeps say when no field came twice, without
    // another lookup.
    if headers.len() != headers.keys_len() && headers.get_all(http::header::HOST).iter().count() > 1
    {
        // HTTP/1.1's framing check refuses it first; HTTP/2 comes here.
        return Err(crate::error::GatewayError::invalid_field(
            "host",
            "was sent more than once; send one",
        ));
    }
    if is_host(host.as_bytes()) {
        return Ok(());
    }
    Err(crate::error::GatewayError::invalid_field(
        "host",
        format!(
            "{:?} is not a valid Host: a host name or address and an optional port",
            String::from_utf8_lossy(host.as_bytes())
        ),
    ))
}

fn is_host(v: &[u8]) -> bool {
    // An `http` or `https` authority names a host (RFC 9110 section 4.2).
    let (host_ok, port) = match v.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let port = match &rest[end + 1..] {
                [] => &[][..],
                [b':', port @ ..] => port,
                _ => return false,
            };
            (is_ip_literal(&rest[..end]), port)
        }
        None => match v.iter().rposition(|&b| b == b':') {
            Some(at) => (is_reg_name(&v[..at]), &v[at + 1..]),
            None => (is_reg_name(v), &[][..]),
        },
    };
    host_ok && is_port(port)
}

/// What may stand between `[` and `]`: an IPv6 or future address, with a
/// zone.
fn is_ip_literal(literal: &[u8]) -> bool {
    !literal.is_empty()
        && literal
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'%' | b'-' | b'_'))
}

/// A name or IPv4 address, percent-escapes whole.
fn is_reg_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~')
                || (b == b'%'
                    && name.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && name.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        })
}

/// Digits up to 65535, or none (`host:` names the scheme's default port).
fn is_port(port: &[u8]) -> bool {
    port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// Whether `name` was sent more than once with different values (the same
/// value twice is one).
pub fn values_differ(headers: &http::HeaderMap, name: &http::HeaderName) -> bool {
    // Nearly always no field is sent twice: said by two counts the map
    // keeps, without hashing the name.
    if headers.len() == headers.keys_len() {
        return false;
    }
    let mut values = headers.get_all(name).iter();
    values
        .next()
        .is_some_and(|first| values.any(|v| v != first))
}

/// Every cookie in `cookie` headers, in the order sent, as its name and
/// (when it has an `=`) its value. A name is read as lenient servers read
/// it, trimmed (`session =v` is the cookie `session`), so no backend finds
/// a copy the gateway missed; so is a value. A header that is not visible
/// ASCII text holds no cookie the gateway reads.
pub fn cookie_pairs(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter(|c| !c.trim().is_empty())
        .map(|c| match c.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (c.trim(), None),
        })
}

/// Every value of the cookie `name` in `cookie` headers, in the order sent
/// (names read as [`cookie_pairs`] reads them).
pub fn cookie_values<'a>(
    headers: &'a http::HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    cookie_pairs(headers).filter_map(move |(k, v)| v.filter(|_| k == name))
}

/// The token of an `Authorization: Bearer` header (the scheme in any
/// case), if it holds one.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// [`check_deadline_headers`] for fields that came in under another name:
/// a WebSocket call's `metadata` object names them `metadata.grpc-timeout`.
pub fn check_deadline_fields(
    headers: &http::HeaderMap,
    prefix: &str,
) -> Result<(), crate::error::GatewayError> {
    // Two values of one deadline header: which one the client meant is
    // anyone's guess, as with a comma-separated list in one.
    type Parse = fn(&str) -> Option<Duration>;
    let deadlines: [(&http::HeaderName, Parse, &str); 2] = [
        (
            &GRPC_TIMEOUT,
            parse_grpc_timeout,
            "is not a gRPC timeout: up to 8 digits and a unit (H, M, S, m, u or n), as in \"500m\"",
        ),
        (
            &CONNECT_TIMEOUT_MS,
            parse_connect_timeout,
            "is not a timeout: a number of milliseconds, up to 10 digits",
        ),
    ];
    let mut sent = [None, None];
    for ((name, _, _), first) in deadlines.iter().zip(&mut sent) {
        let mut values = headers.get_all(*name).iter();
        *first = values.next();
        if values.next().is_some() {
            return Err(crate::error::GatewayError::invalid_field(
                format!("{prefix}{name}"),
                format!("{name} was sent more than once; send one deadline"),
            ));
        }
    }
    for ((name, parse, why), value) in deadlines.iter().zip(sent) {
        let Some(value) = value else {
            continue;
        };
        if value.to_str().ok().and_then(parse).is_none() {
            return Err(crate::error::GatewayError::invalid_field(
                format!("{prefix}{name}"),
                format!("{value:?} {why}"),
            ));
        }
    }
    Ok(())
}

/// gRPC's deadline, as a client sends it and as the gateway sends it on.
pub const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
/// A gRPC reply's status fields and its messages' coding.
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");
pub const GRPC_STATUS_DETAILS: http::HeaderName =
    http::HeaderName::from_static("grpc-status-details-bin");
pub const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");
/// Connect's deadline, as a client sends it.
pub const CONNECT_TIMEOUT_MS: http::HeaderName =
    http::HeaderName::from_static("connect-timeout-ms");
/// The Connect protocol's version, as a client sends it.
pub const CONNECT_PROTOCOL_VERSION: http::HeaderName =
    http::HeaderName::from_static("connect-protocol-version");
/// W3C Trace Context's parent, as a client sends it and the gateway sends
/// it on.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// W3C Trace Context's vendor state, beside [`TRACEPARENT`].
pub const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The backend's deadline: a unary call gets the route's timeout, shortened
/// by the client's; a stream only gets the client's.
pub fn deadline(
    kind: CallKind,
    client: Option<Duration>,
    route: Option<Duration>,
) -> Option<Duration> {
    let route = if kind == CallKind::Unary { route } else { None };
    match (client, route) {
        (Some(c), Some(r)) => Some(c.min(r)),
        (c, r) => c.or(r),
    }
}

/// Whether a header name can be a gRPC metadata key: lowercase letters,
/// digits, `_`, `-` and `.` (the gRPC over HTTP/2 spec). HTTP allows more
/// (`x!y`), and a gRPC library that checks names fails the call over one.
pub fn is_grpc_key(name: &HeaderName) -> bool {
    name.as_str()
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'))
}

/// Why `name` is refused where a config names a header for a backend:
/// gRPC metadata cannot carry it ([`is_grpc_key`]).
pub fn not_a_grpc_key(name: &str) -> String {
    format!("{name:?} is no name gRPC metadata can carry (lowercase letters, digits, `_`, `-` and `.`): a gRPC backend would refuse the call, so the gateway never forwards it")
}

/// Whether a value can be an ASCII gRPC metadata value (printable ASCII,
/// 0x20 to 0x7E, as the gRPC over HTTP/2 spec defines it).
pub fn is_grpc_ascii(value: &[u8]) -> bool {
    value.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// Whether a value the gateway writes reaches the other side exactly as
/// written in a text header: printable ASCII with no space at either end,
/// which an HTTP/1.1 parser trims and HTTP/2 forbids (RFC 9113 section
/// 8.2.1). Anything else goes base64 in a `-bin` header.
pub fn carries_as_written(value: &[u8]) -> bool {
    is_grpc_ascii(value) && !value.starts_with(b" ") && !value.ends_with(b" ")
}

/// The header names a message's `Connection` fields list: for the hop
/// that carried it alone (RFC 9110 section 7.6.1), never passed on.
pub fn connection_named(headers: &http::HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// The HTTP status a backend asked a REST client's reply to have, with
/// its `x-http-status` metadata (the first value, read as a number
/// whatever its range; `None` when absent or not a number).
pub fn asked_http_status(metadata: &http::HeaderMap) -> Option<u16> {
    metadata
        .get(crate::ingress::rest::HTTP_STATUS_METADATA)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Headers of the HTTP or gRPC framing, the gateway's own: never copied
/// from a request to the backend's metadata, nor from the backend's
/// metadata to a response.
pub fn is_framing(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("grpc-")
        || matches!(
            n,
            "content-type"
                | "content-length"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "proxy-authorization"
                | "proxy-authenticate"
                | "upgrade"
                | "host"
                | "date"
                | "server"
                | "user-agent"
                | "accept-encoding"
                | "content-encoding"
                | "x-grpc-web"
                | "x-user-agent"
        )
}

/// Moves credential query parameters (an API key in `?api_key=`) out of
/// `pairs` into `metadata`, under the header their authenticator reads, so
/// the policy sees one place whatever the client used. A header the client
/// sent itself wins. Returns whether anything was taken.
pub fn lift_credentials(
    pairs: &mut Vec<(String, String)>,
    params: &[(String, HeaderName)],
    metadata: &mut http::HeaderMap,
) -> bool {
    let before = pairs.len();
    for (param, header) in params {
        while let Some(i) = pairs.iter().position(|(k, _)| k == param) {
            let (_, value) = pairs.remove(i);
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                // A header the client sent too: both are kept, so the
                // authenticator sees two credentials and refuses the call.
                if metadata.get(header) != Some(&v) {
                    metadata.append(header.clone(), v);
                }
            }
        }
    }
    pairs.len() != before
}

/// [`lift_credentials`] on a raw query string: the query without the
/// credentials (borrowed when there were none).
pub fn lift_query_credentials<'a>(
    query: Option<&'a str>,
    params: &[(String, HeaderName)],
    metadata: &mut http::HeaderMap,
) -> Option<std::borrow::Cow<'a, str>> {
    let q = query?;
    // A name written with escapes (`api%5Fkey`) is that name too; only a
    // query that names one is parsed and written again.
    let named = |p: &(String, HeaderName)| {
        q.split('&').any(|kv| {
            let raw = kv.split('=').next().unwrap_or_default();
            raw == p.0
                || raw.contains(['%', '+'])
                    && form_urlencoded::parse(raw.as_bytes())
                        .next()
                        .is_some_and(|(k, _)| k == p.0.as_str())
        })
    };
    if !params.iter().any(named) {
        return Some(std::borrow::Cow::Borrowed(q));
    }
    let mut pairs: Vec<(String, String)> =
        form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    lift_credentials(&mut pairs, params, metadata);
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.extend_pairs(pairs.iter());
    Some(std::borrow::Cow::Owned(out.finish()))
}

/// Marks a value that differs on every request (a request id, a
/// `traceparent`) as one HTTP/2's header compression must not remember:
/// indexed, each would push a reusable entry out of the connection's table
/// and lengthen the encoder's search for every later header of that name.
pub fn never_indexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// Headers some web frameworks read as the request's real method or path
/// (method overrides; IIS's and older Symfony's `X-Original-URL` and
/// `X-Rewrite-URL`): the gateway authorized the method and path it
/// routed, so a backend must never be told to run another.
pub fn is_request_override(name: &str) -> bool {
    matches!(
        name,
        "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-method"
            | "x-envoy-original-path"
    )
}

/// Headers that belong to one client protocol's framing (Connect's, the
/// WebSocket handshake's, MCP's), never metadata.
pub fn is_protocol_own(name: &str) -> bool {
    name.starts_with("connect-") || name.starts_with("sec-websocket-") || name.starts_with("mcp-")
}

/// `x-user` -> `x-user-bin`: where gRPC metadata carries a value that is
/// not printable ASCII (a forwarded claim, say), as base64.
pub fn binary_twin(header: &HeaderName) -> HeaderName {
    HeaderName::from_bytes(format!("{}-bin", header.as_str()).as_bytes())
        .unwrap_or_else(|_| header.clone())
}

/// A header map of `pairs`, repeats kept, for tests.
#[cfg(test)]
pub(crate) fn map_of(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_differs_only_when_sent_twice_with_two_values() {
        let table: [(&[(&str, &str)], bool); 5] = [
            (&[], false),
            (&[("origin", "a")], false),
            (&[("origin", "a"), ("origin", "a")], false),
            (
                &[("origin", "a"), ("x-other", "1"), ("x-other", "2")],
                false,
            ),
            (&[("origin", "a"), ("origin", "b")], true),
        ];
        for (fields, differ) in table {
            assert_eq!(
                values_differ(&map_of(fields), &http::header::ORIGIN),
                differ,
                "{fields:?}"
            );
        }
    }

    #[test]
    fn a_query_credential_is_lifted_by_its_name_escaped_or_not_and_nothing_else_is_rewritten() {
        let params = [("api_key".to_owned(), HeaderName::from_static("x-api-key"))];
        // No credential: the query as it came, escapes and all.
        let mut headers = http::HeaderMap::new();
        let q = lift_query_credentials(Some("x=%FF&y=a+b"), &params, &mut headers);
        assert_eq!(q.as_deref(), Some("x=%FF&y=a+b"));
        assert!(matches!(q, Some(std::borrow::Cow::Borrowed(_))));
        assert!(headers.is_empty());
        // The name escaped is the name.
        let q = lift_query_credentials(Some("api%5Fkey=k1&page=2"), &params, &mut headers);
        assert_eq!(q.as_deref(), Some("page=2"));
        assert_eq!(headers["x-api-key"], "k1");
    }
}

#[cfg(test)]
mod host_tests {
    #[test]
    fn a_host_is_a_name_or_address_and_an_optional_port() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:25000",
            "[::1]",
            "[::1]:8080",
            "[fe80::1%25eth0]",
            "under_score.example",
            "localhost:",
            "[::1]:",
        ] {
            assert!(super::is_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "evil.example/path",
            "a@b.example",
            "ex ample",
            "evil.example, other",
            "[::1",
            "[::1]x",
            "127.0.0.1:25000#frag",
            "evil.example:99999",
            "evil.example:80:80",
            "host:port",
            "evil%",
            "evil%zz.example",
            "",
            ":80",
            "[]",
            "[]:80",
            "[::1]:99999",
            "[::1]:x",
        ] {
            assert!(!super::is_host(bad.as_bytes()), "{bad}");
        }
    }
}

/// A header list's size as HTTP/2 counts it (RFC 7541 section 4.1): each
/// field's name, value and 32 bytes. The one measure of every header
/// bound: the client's, what the gateway sends a backend, and a backend's
/// reply.
pub fn header_list_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}
