//! `routes[].cache`: a route's response cache.

use crate::config::{file, ConfigError, Validator};
use std::time::Duration;

/// A route's response cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub max_bytes: u64,
    pub vary: Vec<http::HeaderName>,
    pub methods: Vec<String>,
    /// Also keep replies in Redis, for every instance; the largest kept.
    pub shared: Option<u64>,
    /// Where a call carries a credential: the cache keys on their values,
    /// so a reply made for one credential is never another's.
    /// `authorization` and `cookie`, and the header of every API-key
    /// authenticator of the config (a backend may check keys itself on a
    /// route without `auth`).
    pub credential_headers: Vec<http::HeaderName>,
}

impl Validator<'_> {
    pub(crate) fn cache(&self, k: &str, c: &file::CacheFile) -> Result<CacheConfig, ConfigError> {
        let mut vary: Vec<http::HeaderName> = Vec::new();
        for (j, h) in c.vary.iter().enumerate() {
            // `*` varies on everything: no two requests would share a reply,
            // and no request has a header named `*` to key on.
            if h.trim() == "*" {
                return Err(self.err(
                    format!("{k}.vary[{j}]"),
                    "\"*\" would make every request its own entry, so nothing would be reused: name the headers replies depend on, or leave the route without a cache",
                ));
            }
            let name =
                http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                    self.err(
                        format!("{k}.vary[{j}]"),
                        format!("{h:?} is not a header name"),
                    )
                })?;
            // Names are case-blind: `X-A` and `x-a` are one header.
            if !vary.contains(&name) {
                vary.push(name);
            }
        }
        Ok(CacheConfig {
            credential_headers: vec![http::header::AUTHORIZATION, http::header::COOKIE],
            ttl: self.duration(&format!("{k}.ttl"), &Some(c.ttl.clone()), Duration::ZERO)?,
            max_bytes: match c.max_bytes {
                Some(0) => {
                    return Err(self.err(format!("{k}.max_bytes"), "must be greater than zero"))
                }
                Some(b) => b,
                None => 64 * 1024 * 1024,
            },
            vary,
            methods: c.methods.clone(),
            shared: match (c.shared.unwrap_or(false), c.shared_max_entry_bytes) {
                (false, Some(_)) => {
                    return Err(self.err(
                        format!("{k}.shared_max_entry_bytes"),
                        "only applies with shared = true",
                    ))
                }
                (false, None) => None,
                (true, Some(0)) => {
                    return Err(self.err(
                        format!("{k}.shared_max_entry_bytes"),
                        "must be greater than zero",
                    ))
                }
                (true, max) => Some(max.unwrap_or(1 << 20)),
            },
        })
    }
}
