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
        // The default, the rate rounded up, stops at the largest burst.
        let burst = match rl.burst {
            None => rl.requests_per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
            Some(b) => u32::try_from(b).ok().filter(|b| *b >= 1).ok_or_else(|| {
                self.err(
                    format!("{k}.burst"),
                    format!("{b} is not a whole number from 1 to 4294967295 (calls let through at once)"),
                )
            })?,
        };
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
