//! Request paths as the gateway matches them, whatever protocol carried
//! them: percent-encoded unreserved characters decoded (`%41` is `A`, `%2e`
//! is `.`), dot-segments removed as RFC 3986 section 5.2.4 says, and empty
//! segments merged (`//` is `/`, a trailing `/` is dropped). A path that
//! would climb above the root is refused. Everything else stays encoded, so
//! `%2F` keeps its google.api.http meaning: a single-segment variable
//! decodes it, a multi-segment one keeps it encoded. Matching therefore
//! never sees a `.`, `..` or empty segment; a single-segment variable's
//! value, decoded whole, may still hold `/` or `..` (it is a string).
//! A malformed escape, or escapes that do not decode to UTF-8, in the path
//! or the query are refused: no field is ever given replacement characters.
//! (A Connect GET's `message` with `encoding=proto` is bytes, not text: only
//! its escapes are checked.)

use crate::error::GatewayError;
use std::borrow::Cow;

/// The normalized path; borrowed when it needed no change, which is the
/// common case and costs one scan.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, GatewayError> {
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    // The asterisk form (`OPTIONS *`), which HTTP's parsers take, names no
    // resource here. (A CONNECT's authority form has no path at all: the
    // edge refuses it for what it asks.)
    if !path.is_empty() && !path.starts_with('/') {
        return Err(GatewayError::invalid_field(
            "path",
            format!(
                "{} is not a request path: it must start with /",
                shown(path)
            ),
        ));
    }
    check_escapes(path)
        .map_err(|why| GatewayError::invalid_field("path", format!("{} {why}", shown(path))))?;
    let mut out: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let segment = decode_unreserved(raw);
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(GatewayError::invalid_field(
                        "path",
                        format!("{} climbs above the root", shown(path)),
                    ));
                }
            }
            _ => out.push(segment),
        }
    }
    Ok(Cow::Owned(format!("/{}", out.join("/"))))
}

/// Nothing to do: no escape, no empty segment, no dot-segment. Split on
/// bytes, not chars: every request's path comes here.
fn is_normal(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    !rest.as_bytes().contains(&b'%')
        && rest
            .as_bytes()
            .split(|&b| b == b'/')
            .all(|segment| !matches!(segment, b"" | b"." | b".."))
}

/// A segment with its percent-encoded unreserved characters decoded (and
/// other escapes kept as the client wrote them: a multi-segment variable
/// passes `%2f` on as `%2f`, as google.api.http says).
fn decode_unreserved(segment: &str) -> String {
    // A URI path is ASCII; anything else is left as it is.
    if !segment.is_ascii() {
        return segment.to_owned();
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = &segment[i + 1..i + 3];
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b as char);
                } else {
                    out.push('%');
                    out.push_str(hex);
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// Refuses a query whose escapes are malformed or do not decode to UTF-8,
/// naming the parameter; costs nothing for a query without escapes.
///
/// `connect_get`: the request is a Connect unary GET, whose `message` with
/// `encoding=proto` is the message's bytes, percent-encoded (Connect
/// protocol, "Unary-Get-Request"): bytes, not text, so only its escapes
/// are checked. Every other protocol reads the query as text.
pub fn check_query(query: &str, connect_get: bool) -> Result<(), GatewayError> {
    if !query.contains('%') {
        return Ok(());
    }
    let binary_message = connect_get && query.split('&').any(|p| p == "encoding=proto");
    for pair in query.split('&') {
        let checked = if binary_message && pair.starts_with("message=") {
            check_escapes_only(pair)
        } else {
            check_escapes(pair)
        };
        if let Err(why) = checked {
            let sent = pair.split('=').next().unwrap_or_default();
            // A name whose escapes are no UTF-8 is named as sent
            // (`q%FFuery`), not with a replacement character in it.
            let name = percent_encoding::percent_decode_str(sent)
                .decode_utf8()
                .unwrap_or(std::borrow::Cow::Borrowed(sent));
            return Err(GatewayError::invalid_field(
                name.as_ref(),
                format!("query parameter {} {why}", shown(&name)),
            ));
        }
    }
    Ok(())
}

/// Every `%` starts two hex digits.
fn check_escapes_only(text: &str) -> Result<(), &'static str> {
    let bytes = text.as_bytes();
    let hex = |b: Option<&u8>| b.is_some_and(u8::is_ascii_hexdigit);
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'%') {
        if !(hex(bytes.get(i + 1)) && hex(bytes.get(i + 2))) {
            return Err("has a malformed percent-escape: % must be followed by two hex digits");
        }
    }
    Ok(())
}

/// Every `%` starts two hex digits, and what they encode is UTF-8.
pub(crate) fn check_escapes(text: &str) -> Result<(), &'static str> {
    check_escapes_only(text)?;
    match percent_encoding::percent_decode_str(text).decode_utf8() {
        Ok(_) => Ok(()),
        Err(_) => Err("has percent-escapes that do not decode to UTF-8 text"),
    }
}

/// A path for an error message: bounded, and printable.
fn shown(path: &str) -> String {
    let cut: String = path.chars().take(200).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, String> {
        normalize(p).map(|c| c.into_owned()).map_err(|e| e.message)
    }

    #[test]
    fn a_plain_path_is_left_alone_without_a_copy() {
        for p in ["/", "/v1/shelves/1", "/portico.demo.v1.Library/GetShelf"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn only_a_path_without_empty_dot_or_escaped_segments_is_normal() {
        let normal = [
            "/", "/a", "/a/b", "/.a", "/a./b", "/a..b/c", "/...", "/a:verb",
        ];
        let not = [
            "", "a/b", "//", "/a/", "/a//b", "/.", "/a/.", "/a/./b", "/..", "/a/..", "/a%20",
            "/%2e",
        ];
        for p in normal {
            assert!(is_normal(p), "{p:?} is normal");
        }
        for p in not {
            assert!(!is_normal(p), "{p:?} is not normal");
        }
    }

    #[test]
    fn dot_segments_are_removed_and_encoded_dots_are_dots() {
        assert_eq!(norm("/v1/files/a/./b/../c").unwrap(), "/v1/files/a/c");
        assert_eq!(norm("/v1/files/%2e%2E/x").unwrap(), "/v1/x");
        assert_eq!(norm("/v1/files/.%2E/y").unwrap(), "/v1/y");
        assert_eq!(norm("/v1/%76%31/x").unwrap(), "/v1/v1/x");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for p in [
            "/..",
            "/v1/../../x",
            "/v1/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/v1/files/.%2E/.%2e/.%2E/etc/passwd",
        ] {
            let err = norm(p).unwrap_err();
            assert!(err.contains("climbs above the root"), "{p}: {err}");
        }
        // Climbing out of a route's prefix, but not above the root, is
        // just another path: it matches what it names, nothing bound.
        for p in [
            "/v1/files/../../etc/passwd",
            "/v1/files/a/../../../etc/passwd",
        ] {
            assert_eq!(norm(p).unwrap(), "/etc/passwd");
        }
    }

    #[test]
    fn empty_segments_merge_and_other_escapes_stay_encoded() {
        assert_eq!(
            norm("/v1/files//etc/passwd").unwrap(),
            "/v1/files/etc/passwd"
        );
        assert_eq!(norm("/v1/shelves/1/").unwrap(), "/v1/shelves/1");
        assert_eq!(norm("/v1/files/a%2fb/.").unwrap(), "/v1/files/a%2fb");
        assert_eq!(norm("/v1/files/a%2Fb/.").unwrap(), "/v1/files/a%2Fb");
        assert_eq!(norm("/v1/files/a%20b%7e").unwrap(), "/v1/files/a%20b~");
    }
}
