//! `[cors]` and `routes[].cors`: cross-origin rules for browsers.

use crate::config::{file, ConfigError, Validator};
use std::time::Duration;

/// Cross-origin rules for browsers (REST, gRPC-Web and Connect alike).
#[derive(Debug, Clone, PartialEq)]
pub struct CorsPolicy {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    pub allowed_origins: Vec<String>,
    /// Request headers allowed beyond the built-in list.
    pub allowed_headers: Vec<String>,
    /// Response headers exposed beyond the built-in list.
    pub exposed_headers: Vec<String>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

impl CorsPolicy {
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }

    /// This policy and `others` as one, for a path several routes answer
    /// (`/mcp`): the origins, allowed and exposed headers of all, the
    /// shortest `max_age`, and credentials when any allows them (each
    /// route still checks its own calls).
    pub fn merged<'a>(&self, others: impl Iterator<Item = &'a CorsPolicy>) -> CorsPolicy {
        let mut all = self.clone();
        for p in others {
            for (into, from) in [
                (&mut all.allowed_origins, &p.allowed_origins),
                (&mut all.allowed_headers, &p.allowed_headers),
                (&mut all.exposed_headers, &p.exposed_headers),
            ] {
                for v in from {
                    if !into.iter().any(|have| have.eq_ignore_ascii_case(v)) {
                        into.push(v.clone());
                    }
                }
            }
            all.max_age = all.max_age.min(p.max_age);
            all.allow_credentials |= p.allow_credentials;
        }
        all
    }
}

/// An IPv6 address as a browser writes it in `Origin` (the URL
/// standard's serializer: RFC 5952's compressed lowercase hex, an
/// IPv4-mapped address in hex too, `::ffff:7f00:1`).
fn browser_form(addr: std::net::Ipv6Addr) -> String {
    match addr.to_ipv4_mapped() {
        Some(_) => {
            let s = addr.segments();
            format!("::ffff:{:x}:{:x}", s[6], s[7])
        }
        None => addr.to_string(),
    }
}

impl Validator<'_> {
    /// An origin as a browser sends it: scheme, host and optional port,
    /// nothing after (a trailing `/` would never match). Origins are
    /// compared as text, so one that no browser sends (a wildcard host, a
    /// port past 65535) would match nothing: each is refused saying why.
    pub(crate) fn origin(&self, key: &str, o: &str) -> Result<(), ConfigError> {
        // Origins are compared with their scheme and host in any case.
        let after = |scheme: &str| {
            o.get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &o[scheme.len()..])
        };
        let (authority, default_port) = match after("http://") {
            Some(a) => (Some(a), 80),
            None => (after("https://"), 443),
        };
        let Some(authority) = authority else {
            return Err(self.err(
                key,
                format!("{o:?} is not an origin like \"https://app.example.com\" or \"*\""),
            ));
        };
        let not_an_origin = |why: String| {
            self.err(
                key,
                format!("{o:?} is not an origin: {why}; an origin is a scheme, a host and an optional port, like \"https://app.example.com\" or \"http://localhost:3000\""),
            )
        };
        if let Some(end) = authority.find(['/', '?', '#']) {
            let bare = &o[..o.len() - authority.len() + end];
            return Err(not_an_origin(format!(
                "a browser's Origin header never carries a path or ends in \"/\": write {bare:?}"
            )));
        }
        if authority.contains('*') {
            return Err(not_an_origin(
                "wildcards inside an origin are not supported: list each origin, or give \"*\" alone for any".to_owned(),
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((v6, tail)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => {
                    let canonical = browser_form(v6.parse().expect("parsed above"));
                    if !v6.eq_ignore_ascii_case(&canonical) {
                        return Err(not_an_origin(format!(
                            "browsers send the address [{v6}] as [{canonical}]: write that"
                        )));
                    }
                    let port = match tail {
                        "" => None,
                        // Anything else after `]` reads as a port, and fails as one.
                        tail => Some(tail.strip_prefix(':').unwrap_or(tail)),
                    };
                    (&authority[..v6.len() + 2], port)
                }
                _ => {
                    return Err(not_an_origin(
                        "its IPv6 address in [] does not read".to_owned(),
                    ))
                }
            },
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let host_name = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        if !host.starts_with('[') && !host_name(host) {
            return Err(not_an_origin(if host.is_ascii() {
                format!("{host:?} is not a host name (letters, digits, '-', '_' and '.')")
            } else {
                format!("{host:?} is not ASCII, and browsers send such a host name in its punycode form (\"xn--...\"): write that form")
            }));
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                // Browsers write the port without leading zeros.
                Ok(n) if n > 0 && p.starts_with('0') => {
                    return Err(not_an_origin(format!(
                        "browsers send the port {p:?} as {n}: write that"
                    )))
                }
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => {
                    return Err(not_an_origin(format!(
                        "its port {p:?} is not a number from 1 to 65535"
                    )))
                }
            },
        };
        // Browsers leave the scheme's own port out of `Origin`.
        if port == Some(default_port) {
            let bare = o.rsplit_once(':').map_or(o, |(bare, _)| bare);
            return Err(self.err(
                key,
                format!(
                    "{o:?} names its scheme's default port, which a browser's Origin header never carries: write {bare:?}"
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn cors(&self, key: &str, c: &file::CorsFile) -> Result<CorsPolicy, ConfigError> {
        if c.allowed_origins.is_empty() {
            return Err(self.err(
                format!("{key}.allowed_origins"),
                "needs at least one origin, or \"*\"",
            ));
        }
        for (i, o) in c.allowed_origins.iter().enumerate() {
            if o != "*" {
                self.origin(&format!("{key}.allowed_origins[{i}]"), o)?;
            }
        }
        let allow_credentials = c.allow_credentials.unwrap_or(false);
        if allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
            return Err(self.err(
                format!("{key}.allow_credentials"),
                "cannot be used with the origin \"*\"; list the origins",
            ));
        }
        for (what, list) in [
            ("allowed_headers", &c.allowed_headers),
            ("exposed_headers", &c.exposed_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(self.err(
                        format!("{key}.{what}[{i}]"),
                        format!("{h:?} is not a header name"),
                    ));
                }
            }
        }
        Ok(CorsPolicy {
            allowed_origins: c.allowed_origins.clone(),
            allowed_headers: c
                .allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            exposed_headers: c
                .exposed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            // Zero: `Access-Control-Max-Age: 0`, a preflight per request.
            max_age: self.duration_or_zero(
                &format!("{key}.max_age"),
                &c.max_age,
                Duration::from_secs(600),
            )?,
            allow_credentials,
        })
    }
}
