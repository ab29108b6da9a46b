//! `[redis]`: the Redis deployment a fleet of instances shares rate limits
//! and cached replies through. Passwords come from the URL, an environment
//! variable or a file, and are never printed.

use crate::config::{file, ConfigError, Secret, Validator};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum RedisTopology {
    /// One server (or a proxy in front of several).
    Standalone(String),
    /// Redis Cluster: seed nodes; the slot map is read from them.
    Cluster(Vec<String>),
}

impl RedisTopology {
    /// Where Redis is, for error messages (the URLs hold no credentials).
    pub fn describe(&self) -> String {
        match self {
            RedisTopology::Standalone(url) => url.clone(),
            RedisTopology::Cluster(urls) => format!("the cluster of {}", urls.join(", ")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// URLs without their credentials (those are in `username`/`password`).
    pub topology: RedisTopology,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM CAs a `rediss://` server's certificate must chain to, instead
    /// of the system's and Mozilla's roots.
    pub tls_ca_pem: Option<Vec<u8>>,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Every key Portico writes starts with this.
    pub key_prefix: String,
    pub fleet_size: u32,
    pub heartbeat_interval: Duration,
    /// Start without Redis (limits fall back per instance) instead of failing.
    pub start_degraded: bool,
}

impl Validator<'_> {
    pub(crate) fn redis(&self, r: &file::RedisFile) -> Result<RedisConfig, ConfigError> {
        let mut username = r.username.clone();
        let mut password = None;
        // Credentials in a URL are taken out of it, so the URL can be logged.
        let mut strip = |key: &str, u: &str| -> Result<String, ConfigError> {
            let uri: http::Uri = u
                .parse()
                .map_err(|_| self.err(key, format!("{:?} is not a URL", redact(u))))?;
            match uri.scheme_str() {
                Some("redis" | "rediss") => {}
                _ => {
                    return Err(self.err(
                        key,
                        format!("{:?} is not a redis:// or rediss:// URL", redact(u)),
                    ))
                }
            }
            if let Some(problem) = crate::config::url_port_problem(&uri) {
                return Err(self.err(key, format!("{:?}: {problem}", redact(u))));
            }
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
            let Some((userinfo, host)) = authority.rsplit_once('@') else {
                return Ok(u.to_owned());
            };
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let (user, pass) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() && username.is_none() {
                username = Some(decode(user));
            }
            if let Some(p) = pass.filter(|p| !p.is_empty()) {
                password = Some(Secret(decode(p)));
            }
            let _ = host;
            Ok(u.replacen(&format!("{userinfo}@"), "", 1))
        };
        let topology = match (&r.url, &r.cluster) {
            (Some(u), None) => RedisTopology::Standalone(strip("redis.url", u)?),
            (None, Some(seeds)) if !seeds.is_empty() => RedisTopology::Cluster(
                seeds
                    .iter()
                    .enumerate()
                    .map(|(i, s)| strip(&format!("redis.cluster[{i}]"), s))
                    .collect::<Result<_, _>>()?,
            ),
            (None, Some(_)) => return Err(self.err("redis.cluster", "names no node")),
            (Some(_), Some(_)) => {
                return Err(self.err("redis.cluster", "give url or cluster, not both"))
            }
            (None, None) => {
                return Err(self.err(
                    "redis.url",
                    "is required (or cluster = [...] for Redis Cluster)",
                ))
            }
        };
        match (&r.password_env, &r.password_file) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "redis.password_file",
                    "give password_env or password_file, not both",
                ))
            }
            (Some(var), None) => {
                let value = std::env::var(var).map_err(|_| {
                    self.err(
                        "redis.password_env",
                        format!("the environment variable {var} is not set"),
                    )
                })?;
                if value.is_empty() {
                    return Err(self.err(
                        "redis.password_env",
                        format!("the environment variable {var} is empty"),
                    ));
                }
                password = Some(Secret(value))
            }
            (None, Some(f)) => {
                let path = self.path(f);
                let text = crate::config::read_text(&path).map_err(|e| {
                    self.err(
                        "redis.password_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                password = Some(Secret(text.trim().to_owned()));
            }
            (None, None) => {}
        }
        let fleet_size = r.fleet_size.unwrap_or(1);
        if fleet_size == 0 {
            return Err(self.err("redis.fleet_size", "must be at least 1"));
        }
        let start_degraded = match r.on_start_failure.as_deref().unwrap_or("strict") {
            "strict" => false,
            "degraded" => true,
            other => {
                return Err(self.err(
                    "redis.on_start_failure",
                    format!("{other:?} is not one of \"strict\", \"degraded\""),
                ))
            }
        };
        let key_prefix = r.key_prefix.clone().unwrap_or_else(|| "portico".to_owned());
        if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
            return Err(self.err(
                "redis.key_prefix",
                "must be non-empty and hold no { or } (they mark cluster hash tags)",
            ));
        }
        let tls_ca_pem = match &r.tls_ca_file {
            None => None,
            Some(f) => {
                let tls = match &topology {
                    RedisTopology::Standalone(u) => u.starts_with("rediss://"),
                    RedisTopology::Cluster(seeds) => {
                        seeds.iter().all(|s| s.starts_with("rediss://"))
                    }
                };
                if !tls {
                    return Err(self.err("redis.tls_ca_file", "only applies to rediss:// URLs"));
                }
                let path = self.path(f);
                let pem = crate::config::read_file(&path).map_err(|e| {
                    self.err(
                        "redis.tls_ca_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(self.err(
                        "redis.tls_ca_file",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                Some(pem)
            }
        };
        Ok(RedisConfig {
            topology,
            username,
            password,
            tls_ca_pem,
            connect_timeout: self.duration(
                "redis.connect_timeout",
                &r.connect_timeout,
                Duration::from_secs(2),
            )?,
            command_timeout: self.duration(
                "redis.command_timeout",
                &r.command_timeout,
                Duration::from_millis(250),
            )?,
            key_prefix,
            fleet_size,
            heartbeat_interval: self.duration(
                "redis.heartbeat_interval",
                &r.heartbeat_interval,
                Duration::from_secs(2),
            )?,
            start_degraded,
        })
    }
}

/// A URL with its password masked, for error messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
