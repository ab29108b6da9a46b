//! `[metadata]`: the request edge's forwarding rule and client deadlines.

use crate::config::{file, ConfigError, Validator};
use std::collections::HashSet;

/// Which request headers become gRPC metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct MetadataConfig {
    /// Exact header names (lowercase).
    pub forward: HashSet<String>,
    /// Name prefixes, from entries ending in `*`.
    pub forward_prefixes: Vec<String>,
    /// Honour a `grpc-timeout` request header (never above the route's timeout).
    pub honour_client_timeout: bool,
    /// Query parameters that carry a credential, and the header the
    /// authenticator reads it from: ingress moves them there.
    pub query_credentials: Vec<(String, http::HeaderName)>,
    /// Headers only the gateway writes (an authenticator's `forward_claims`
    /// and their `-bin` twins): a client's own value never reaches a
    /// backend, on any route.
    /// A list, not a set: it holds a name or two, and is compared with
    /// every header of every request.
    pub gateway_owned: Vec<http::HeaderName>,
    /// Whether a client header whose name holds `_` is dropped at the edge.
    pub drop_underscored: bool,
}

/// `metadata.forward` by default: `["*"]`, every header but the gateway's
/// own and the browser's context.
pub const DEFAULT_FORWARD_PREFIXES: &[&str] = &[""];

impl MetadataConfig {
    /// The one forwarding rule, the same for every protocol: a header named
    /// exactly is forwarded; a prefix (`"x-tenant-*"`, or `"*"` for every
    /// header) forwards what it matches except the browser's own context
    /// headers ([`is_browser_context`]), which are forwarded only when named.
    pub fn allows(&self, name: &str) -> bool {
        self.forward.contains(name)
            || (!is_browser_context(name)
                && self
                    .forward_prefixes
                    .iter()
                    .any(|p| name.starts_with(p.as_str())))
    }
}

/// Headers a browser adds about its own context (the page, its cookies, what
/// it accepts): meaningful to the gateway's policies, rarely to a backend,
/// so a wildcard in `metadata.forward` does not forward them.
pub fn is_browser_context(name: &str) -> bool {
    matches!(name, "cookie" | "origin" | "referer" | "accept" | "pragma")
        || name.starts_with("sec-")
        || name.starts_with("access-control-")
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            forward: HashSet::new(),
            forward_prefixes: DEFAULT_FORWARD_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            honour_client_timeout: true,
            query_credentials: Vec::new(),
            gateway_owned: Vec::new(),
            drop_underscored: true,
        }
    }
}

/// Why a config naming a header with `_` is refused while the edge drops
/// such headers: the setting would never see one.
pub fn dropped_underscored(name: &str) -> String {
    format!(
        "{name:?} holds `_`, and the gateway drops every client header whose name does \
         (metadata.headers_with_underscores = \"drop\"): name it with `-`, or set \
         headers_with_underscores = \"allow\""
    )
}

/// Why the gateway may not write a header named with `_` while the edge
/// drops such headers: a CGI or WSGI backend would read the client's `-`
/// spelling, which the edge passes, as the same header.
pub fn written_underscored(name: &str) -> String {
    format!(
        "{name:?} holds `_`: a CGI, WSGI, PHP or Rack backend reads it as its `-` spelling, \
         which a client may send and the gateway does not remove; name it with `-`"
    )
}

impl Validator<'_> {
    pub(crate) fn metadata(&self, m: &file::MetadataFile) -> Result<MetadataConfig, ConfigError> {
        let mut out = MetadataConfig::default();
        if let Some(list) = &m.forward {
            out.forward.clear();
            out.forward_prefixes.clear();
            for (i, name) in list.iter().enumerate() {
                let lower = name.to_ascii_lowercase();
                let bare = lower.strip_suffix('*').unwrap_or(&lower);
                let prefix = lower.ends_with('*');
                if (http::HeaderName::from_bytes(bare.as_bytes()).is_err() && !bare.is_empty())
                    || (bare.is_empty() && !prefix)
                {
                    return Err(self.err(
                        format!("metadata.forward[{i}]"),
                        format!("{name:?} is not a header name"),
                    ));
                }
                // gRPC metadata names are lowercase letters, digits, `_`,
                // `-` and `.`: another name would never be forwarded.
                let grpc_key = http::HeaderName::from_bytes(bare.as_bytes())
                    .map_or(bare.is_empty(), |h| crate::headers::is_grpc_key(&h));
                if !grpc_key {
                    return Err(self.err(
                        format!("metadata.forward[{i}]"),
                        crate::headers::not_a_grpc_key(name),
                    ));
                }
                if bare.starts_with("grpc-") || matches!(bare, "te" | "content-type" | "host") {
                    return Err(self.err(
                        format!("metadata.forward[{i}]"),
                        format!("{name:?} is set by the gateway itself and cannot be forwarded"),
                    ));
                }
                // Headers no rule forwards: naming one would promise what
                // the gateway never does.
                let never = match http::HeaderName::from_bytes(bare.as_bytes()) {
                    Ok(header) if !prefix => {
                        crate::headers::is_framing(&header)
                            || crate::headers::is_request_override(bare)
                    }
                    _ => false,
                } || crate::headers::is_protocol_own(bare);
                if never {
                    return Err(self.err(
                        format!("metadata.forward[{i}]"),
                        format!("{name:?} never reaches a backend (a header of the HTTP framing, a client protocol's own, or a method or path override; see the README's table of what the backend receives): leave it out"),
                    ));
                }
                if prefix {
                    out.forward_prefixes.push(bare.to_owned());
                } else {
                    out.forward.insert(lower);
                }
            }
        }
        if let Some(h) = m.honour_client_timeout {
            out.honour_client_timeout = h;
        }
        out.drop_underscored = match m.headers_with_underscores.as_deref() {
            None | Some("drop") => true,
            Some("allow") => false,
            Some(other) => {
                return Err(self.err(
                    "metadata.headers_with_underscores",
                    format!("{other:?} is not \"drop\" or \"allow\""),
                ))
            }
        };
        if out.drop_underscored {
            if let Some((i, name)) = m
                .forward
                .iter()
                .flatten()
                .enumerate()
                .find(|(_, n)| n.contains('_'))
            {
                return Err(self.err(format!("metadata.forward[{i}]"), dropped_underscored(name)));
            }
        }
        Ok(out)
    }
}
