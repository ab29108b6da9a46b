//! `routes[].rate_limit`: a token bucket per key.

use crate::config::{file, ConfigError, Validator};

/// What a rate limit counts by.
#[derive(Debug, Clone, PartialEq)]
pub enum RateLimitKey {
    ClientIp,
    /// The authenticated subject (the client IP when there is none).
    Principal,
    /// One bucket for the whole route.
    Route,
    /// A request header (for REST, one the metadata allow-list forwards).
    Header(http::HeaderName),
}

/// A token bucket per key: `burst` calls at once, refilled at `rate` per second.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub rate: f64,
    pub burst: u32,
    pub key: RateLimitKey,
    /// Enforced across every instance sharing `[redis]`, not per instance.
    pub global: bool,
}

impl Validator<'_> {
    pub(crate) fn rate_limit(
        &self,
        k: &str,
        rl: &file::RateLimitFile,
    ) -> Result<RateLimitConfig, ConfigError> {
        self.rate(&format!("{k}.requests_per_second"), rl.requests_per_second)?;
        let burst = rl
            .burst
            .unwrap_or(rl.requests_per_second.ceil().max(1.0) as u32);
        if burst == 0 {
            return Err(self.err(format!("{k}.burst"), "must be at least 1"));
        }
        let key = match rl.key.as_deref().unwrap_or("client_ip") {
            "client_ip" => RateLimitKey::ClientIp,
            "principal" => RateLimitKey::Principal,
            "route" => RateLimitKey::Route,
            other => match other
                .strip_prefix("header:")
                .map(|h| http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()))
            {
                Some(Ok(h)) => RateLimitKey::Header(h),
                _ => {
                    return Err(self.err(
                        format!("{k}.key"),
                        format!("{other:?} is not one of \"client_ip\", \"principal\", \"route\", \"header:NAME\""),
                    ))
                }
            },
        };
        let global = match rl.scope.as_deref().unwrap_or("local") {
            "local" => false,
            "global" => true,
            other => {
                return Err(self.err(
                    format!("{k}.scope"),
                    format!("{other:?} is not one of \"local\", \"global\""),
                ))
            }
        };
        Ok(RateLimitConfig {
            rate: rl.requests_per_second,
            burst,
            key,
            global,
        })
    }
}
