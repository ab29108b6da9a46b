//! Cross-origin resource sharing for browser clients of every HTTP
//! protocol (REST, gRPC-Web, Connect). Without a policy on the route,
//! cross-origin requests get no CORS headers, so browsers refuse them.

pub mod config;

use crate::config::CorsPolicy;
use http::header::{self, HeaderMap, HeaderValue};

/// Request headers every policy allows: what gRPC-Web, Connect and JSON
/// clients send.
const BASE_ALLOWED_HEADERS: &str =
    "content-type, authorization, x-grpc-web, x-user-agent, grpc-timeout, \
connect-protocol-version, connect-timeout-ms, x-request-id, traceparent, \
mcp-protocol-version, mcp-session-id, last-event-id";

/// Response headers every policy exposes: the gRPC status of gRPC-Web
/// replies, the usual REST ones, and what the gateway itself adds to a
/// reply or a refusal (its request id, the cache result, a rate limit's
/// and an overload's wait, an authentication challenge), so a page reads
/// what curl would.
const BASE_EXPOSED_HEADERS: &str =
    "grpc-status, grpc-message, grpc-status-details-bin, location, etag, \
x-request-id, x-cache, age, x-aggregate-complete, retry-after, ratelimit-limit, \
ratelimit-remaining, ratelimit-reset, x-portico-overloaded, www-authenticate";

/// The host (and port) of a web page's `Origin`: an `http` or `https`
/// origin's, whichever (a TLS-terminating proxy in front of a plain-text
/// gateway changes the scheme); `None` for any other scheme or `null`.
/// Both same-origin checks (HTTP requests, WebSocket handshakes) read an
/// origin this one way.
pub fn web_origin_host(origin: &str) -> Option<&str> {
    let (scheme, host) = origin.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(host)
}

/// Whether `origin` is the gateway's own, by the one rule every protocol
/// uses (HTTP requests, WebSocket handshakes, `/mcp`): an `http` or `https`
/// origin (either, [`web_origin_host`]) whose host and port equal the
/// request's `Host` (HTTP/2: `authority`, its `:authority`) or, behind a
/// proxy, one of its `X-Forwarded-Host` values, the origin's scheme's
/// default port (`:80`, `:443`) written or not. A browser cannot set `X-Forwarded-Host`
/// on a cross-site request without a preflight (nor on a WebSocket
/// handshake at all), so trusting it opens nothing.
pub fn is_own_origin(origin: &str, headers: &HeaderMap, authority: Option<&str>) -> bool {
    let Some(origin_host) = web_origin_host(origin) else {
        return false;
    };
    // The origin's own scheme's default port, on either side.
    let default_port = match origin.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => ":443",
        _ => ":80",
    };
    let without_default_port =
        |host: &'_ str| -> String { host.strip_suffix(default_port).unwrap_or(host).to_owned() };
    let origin_host = without_default_port(origin_host);
    let text = |name: &header::HeaderName| {
        headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    let mut hosts = text(&header::HOST);
    if hosts.is_empty() {
        hosts.extend(authority);
    }
    hosts.extend(text(&header::HeaderName::from_static("x-forwarded-host")));
    hosts
        .iter()
        .flat_map(|h| h.split(','))
        .any(|h| without_default_port(h.trim()).eq_ignore_ascii_case(&origin_host))
}

/// Headers answering a preflight the policy allows; `None` when it does not.
pub fn preflight(policy: &CorsPolicy, origin: &str, methods: &'static str) -> Option<HeaderMap> {
    if !policy.allows_origin(origin) {
        return None;
    }
    let mut h = HeaderMap::new();
    allow_origin(policy, origin, &mut h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    let mut allowed = BASE_ALLOWED_HEADERS.to_owned();
    for extra in &policy.allowed_headers {
        allowed.push_str(", ");
        allowed.push_str(extra);
    }
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(policy.max_age.as_secs()),
    );
    Some(h)
}

/// Headers answering a preflight from the gateway's own origin on a path
/// whose policy (if any) does not name it: a browser never sends one, but
/// a tool that does gets what an allowed origin gets, with the built-in
/// header lists, since that origin's requests need no policy.
pub fn own_origin_preflight(origin: &str, methods: &'static str) -> HeaderMap {
    let own = CorsPolicy {
        allowed_origins: vec![origin.to_owned()],
        allowed_headers: Vec::new(),
        exposed_headers: Vec::new(),
        max_age: std::time::Duration::from_secs(600),
        allow_credentials: false,
    };
    preflight(&own, origin, methods).unwrap_or_default()
}

/// Adds the CORS headers of an actual (non-preflight) request's response.
pub fn decorate(policy: &CorsPolicy, origin: &str, headers: &mut HeaderMap) {
    if !policy.allows_origin(origin) {
        return;
    }
    allow_origin(policy, origin, headers);
    let mut exposed = BASE_EXPOSED_HEADERS.to_owned();
    for extra in &policy.exposed_headers {
        exposed.push_str(", ");
        exposed.push_str(extra);
    }
    if let Ok(v) = HeaderValue::from_str(&exposed) {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

fn allow_origin(policy: &CorsPolicy, origin: &str, h: &mut HeaderMap) {
    let any = policy.allowed_origins.iter().any(|o| o == "*") && !policy.allow_credentials;
    let value = if any {
        HeaderValue::from_static("*")
    } else {
        HeaderValue::from_str(origin).unwrap_or(HeaderValue::from_static("null"))
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    // Once: a backend may have said it already (or `*`).
    let varies = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !any && !varies {
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    if policy.allow_credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_own_origin_is_the_host_or_a_forwarded_host_under_either_scheme() {
        let host = headers(&[("host", "gw.example:8080")]);
        for (origin, own) in [
            ("http://gw.example:8080", true),
            ("https://GW.example:8080", true),
            ("http://gw.example", false),
            ("ws://gw.example:8080", false),
            ("null", false),
        ] {
            assert_eq!(is_own_origin(origin, &host, None), own, "{origin}");
        }
        // A default port written or not; HTTP/2's authority when no Host.
        let default = headers(&[("host", "gw.example:443")]);
        assert!(is_own_origin("https://gw.example", &default, None));
        let bare = headers(&[("host", "gw.example")]);
        assert!(is_own_origin("http://gw.example:80", &bare, None));
        let none = HeaderMap::new();
        assert!(is_own_origin(
            "https://gw.example",
            &none,
            Some("gw.example")
        ));
        assert!(!is_own_origin("https://gw.example", &none, None));
        // Any value of X-Forwarded-Host, in a list or in several fields.
        let proxied = headers(&[
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-host", "edge.internal, api.example"),
            ("x-forwarded-host", "other.example"),
        ]);
        for origin in [
            "https://api.example",
            "https://other.example",
            "http://10.0.0.5:8080",
        ] {
            assert!(is_own_origin(origin, &proxied, None), "{origin}");
        }
        assert!(!is_own_origin("https://evil.example", &proxied, None));
        // A default port is its own scheme's.
        assert!(!is_own_origin("https://gw.example:80", &default, None));
        assert!(!is_own_origin("http://gw.example", &default, None));
        // `:80` is a port, not the end of one.
        let other_port = headers(&[("host", "gw.example:8080")]);
        assert!(!is_own_origin("http://gw.example", &other_port, None));
    }
}
