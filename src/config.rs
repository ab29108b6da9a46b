//! Configuration: the TOML schema ([`file`]) and the validated, typed config
//! the rest of the gateway is built from. Each module owns its part (its
//! types and their validation, in its `config` submodule: `ingress::server`,
//! `ingress::edge`, `policy::auth`, `egress::upstream`...); this module
//! reads the file, composes them in `Validator::validate`, and keeps the
//! names working as `config::X`. Every check that can be done without
//! loading schemas happens at load, and every error names the file, the key
//! and the reason.

pub mod file;

pub use crate::egress::upstream::config::*;
pub use crate::routes::aggregate::config::{AggregateCall, AggregateConfig, OnError};

// Each module owns its config and its validation; the whole is composed here.
pub use crate::descriptors::config::*;
pub use crate::ingress::cors::config::*;
pub use crate::ingress::edge::config::*;
pub use crate::ingress::server::config::*;
pub use crate::ingress::websocket::config::*;
pub use crate::policy::auth::config::*;
pub use crate::policy::authorize::config::*;
pub use crate::policy::cache::config::*;
pub use crate::policy::rate_limit::config::*;
pub use crate::routes::config::*;
pub use crate::transcode::json::config::*;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from, for error messages.
    pub source: String,
    pub server: ServerConfig,
    pub json: JsonOptions,
    pub metadata: MetadataConfig,
    pub websocket: WebSocketConfig,
    pub descriptors: DescriptorSources,
    pub upstreams: Vec<UpstreamConfig>,
    pub authenticators: Vec<AuthenticatorConfig>,
    pub ext_authz: Vec<crate::policy::ext_authz::config::ExtAuthzConfig>,
    /// `[cors]`: every route's policy unless it has its own, and the
    /// aggregates' (which belong to no route).
    pub cors: Option<std::sync::Arc<CorsPolicy>>,
    /// `[redis]`: what global limits and shared caches use.
    pub redis: Option<crate::fleet::config::RedisConfig>,
    /// `[access_log]`: one line per call, when configured.
    pub access_log: Option<crate::observe::access_log::AccessLogConfig>,
    /// `[tracing]` and the `OTEL_*` environment: `None` when spans are not exported.
    pub tracing: Option<crate::observe::traces::TracingConfig>,
    /// `[openapi]`: the description of the REST API and its docs page.
    pub openapi: crate::openapi::config::OpenApiConfig,
    pub routes: Vec<RouteConfig>,
    pub aggregates: Vec<AggregateConfig>,
    /// Every file and folder the config names (key files, certificates,
    /// descriptor sets, proto folders...), with the config file itself
    /// first when it came from one: what a reload watches.
    pub files: Vec<PathBuf>,
    /// SHA-256 of the config text, hex; with the named files' contents it
    /// makes a generation's digest.
    pub text_sha256: String,
    /// The config file, when it came from one: what a reload reads again.
    pub path: Option<PathBuf>,
    /// The config as written (TOML as JSON), secrets redacted, for the
    /// admin port's `GET /config`.
    pub redacted: serde_json::Value,
}

impl Config {
    /// The policies a route's calls pass, in pipeline order, for `portico check`.
    pub fn policy_summary(&self, route: &RouteConfig) -> String {
        let mut parts = Vec::new();
        if !route.auth.is_empty() {
            let names: Vec<&str> = route
                .auth
                .iter()
                .map(|&i| self.authenticators[i].name.as_str())
                .collect();
            parts.push(format!("authenticate ({})", names.join(" or ")));
        }
        if let Some(a) = &route.authorize {
            let mut needs: Vec<String> = a.scopes.iter().map(|s| format!("scope {s}")).collect();
            needs.extend(a.claims.iter().map(|(k, v)| format!("{k}={v}")));
            if let Some(c) = &a.consumers {
                needs.push(format!("consumer in [{}]", c.join(", ")));
            }
            parts.push(format!("authorize ({})", needs.join(", ")));
        }
        if let Some(i) = route.ext_authz {
            parts.push(format!("ext_authz ({})", self.ext_authz[i].name));
        }
        if let Some(r) = &route.rate_limit {
            let key = match &r.key {
                RateLimitKey::ClientIp => "client ip".to_owned(),
                RateLimitKey::Principal => "principal".to_owned(),
                RateLimitKey::Route => "route".to_owned(),
                RateLimitKey::Header(h) => format!("header {h}"),
            };
            parts.push(format!(
                "rate limit ({}/s, burst {}, per {key}{})",
                rate_text(r.rate),
                r.burst,
                if r.global { ", global" } else { "" }
            ));
        }
        if let Some(c) = &route.cache {
            let shared = if c.shared.is_some() { ", shared" } else { "" };
            let vary = if c.vary.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = c.vary.iter().map(http::HeaderName::as_str).collect();
                format!(", vary {}", names.join(" "))
            };
            let methods = if c.methods.is_empty() {
                String::new()
            } else {
                format!(", methods {}", c.methods.join(" "))
            };
            parts.push(format!(
                "cache (ttl {}, {} bytes{shared}{vary}{methods})",
                humantime::format_duration(c.ttl),
                c.max_bytes
            ));
        }
        parts.push(format!(
            "timeout {}",
            humantime::format_duration(route.timeout)
        ));
        parts.join(" -> ")
    }

    /// Reads and validates a config file; relative paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = read_text(path).map_err(|e| ConfigError {
            file: source.clone(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut config = Config::from_str_in(&text, &source, &base)?;
        config.files.insert(0, path.to_path_buf());
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses a config from a string, resolving relative paths against the
    /// current folder; for tests and embedded configs.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_str_in(text, "<inline config>", Path::new(""))
    }

    pub fn from_str_in(text: &str, source: &str, base: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
            file: source.to_owned(),
            key: String::new(),
            reason: match e.span() {
                Some(span) => {
                    let (line, column) = line_and_column(text, span.start);
                    let message = e.message();
                    // The parser says only "duplicate key"; its span is the key.
                    match text.get(span).map(str::trim) {
                        Some(key) if message == "duplicate key" && !key.is_empty() => {
                            format!("line {line}, column {column}: duplicate key `{key}`")
                        }
                        _ => format!("line {line}, column {column}: {message}"),
                    }
                }
                None => e.message().to_owned(),
            },
        })?;
        let file: file::File = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().message();
            let at = e
                .inner()
                .span()
                .map(|span| line_and_column(text, span.start));
            // A missing key is named as the key, not as the table it is
            // missing from (at the top level, serde's path is ".").
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'));
            let (key, reason, at) = match missing {
                // The position would be the table's, not the missing key's.
                Some(field) if path == "." => (field.to_owned(), "is required".to_owned(), None),
                Some(field) => (format!("{path}.{field}"), "is required".to_owned(), None),
                None if path == "." => (String::new(), plain_types(message), at),
                None => (path, plain_types(message), at),
            };
            ConfigError {
                file: source.to_owned(),
                key,
                reason: match at {
                    Some((line, column)) => format!("line {line}, column {column}: {reason}"),
                    None => reason,
                },
            }
        })?;
        let validator = Validator {
            source,
            base,
            files: Default::default(),
        };
        let mut config = validator.validate(file)?;
        config.files = validator.files.into_inner();
        use sha2::Digest as _;
        config.text_sha256 = sha2::Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        config.redacted = toml::from_str::<serde_json::Value>(text)
            .map(redact_config)
            .unwrap_or_default();
        Ok(config)
    }
}

/// Keys whose values are secrets, wherever they appear in a config.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    matches!(k.as_str(), "secret" | "token" | "keys" | "authorization")
        || k.ends_with("_secret")
        || k.ends_with("_token")
        || k.ends_with("password")
        || k.ends_with("private_key")
        || k.ends_with("api_key")
        || k.ends_with("apikey")
}

/// The limit on each gRPC, gRPC-Web and Connect request message (and each
/// line of a streamed REST request), as errors name it.
pub const MESSAGE_LIMIT: &str = "server.limits.max_grpc_message_bytes";
/// The limit on a REST or MCP request body read whole, as errors name it.
pub const REQUEST_BODY_LIMIT: &str = "server.limits.max_request_body_bytes";
/// The longest wait for the next piece of a body read whole, as errors name it.
pub const BODY_READ_TIMEOUT: &str = "server.limits.body_read_timeout";
/// The longest a stream may go without a message, either way, as errors name it.
pub const STREAM_IDLE_TIMEOUT: &str = "server.limits.stream_idle_timeout";
/// The longest wait for a backend's reply headers, as errors name it.
pub const UPSTREAM_HEADER_TIMEOUT: &str = "server.limits.upstream_header_timeout";

/// How large a gRPC backend's reply headers or trailers may be, in all.
/// HTTP/2's default of 16 KiB is passed by an ordinary error whose message
/// quotes a long field and whose `grpc-status-details-bin` repeats it; past
/// this the call fails as the backend's fault.
pub const BACKEND_HEADER_LIST_BYTES: u32 = 256 * 1024;

/// Top-level tables whose keys are names the user chose, not settings: an
/// authenticator named `keys` or `token` is not a secret, its settings may be.
const NAMED_TABLES: [&str; 3] = ["upstreams", "authenticators", "ext_authz"];

/// The whole config, redacted as [`redact`] does, the names in
/// [`NAMED_TABLES`] kept.
fn redact_config(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let Value::Object(top) = value else {
        return redact(value);
    };
    Value::Object(
        top.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Object(named) if NAMED_TABLES.contains(&k.as_str()) => Value::Object(
                        named
                            .into_iter()
                            .map(|(name, v)| (name, redact(v)))
                            .collect(),
                    ),
                    v => redact_entry(&k, v),
                };
                (k, v)
            })
            .collect(),
    )
}

/// A setting's value, redacted whole when the setting's name says secret.
fn redact_entry(key: &str, value: serde_json::Value) -> serde_json::Value {
    if is_secret_key(key) {
        serde_json::Value::String("[redacted]".into())
    } else {
        redact(value)
    }
}

/// The config with every secret value replaced, and passwords inside URLs
/// (`scheme://user:password@host`) masked.
fn redact(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = redact_entry(&k, v);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_text(&s)),
        other => other,
    }
}

/// Any text (an error message, a value) with the credentials of every URL
/// in it masked: `scheme://user:password@host` and `scheme://token@host`,
/// and the password of a URL too malformed to read as one
/// (`rediss//:password@host`, a mistyped scheme), so that an error about
/// the very URL does not print it.
pub fn redact_text(s: &str) -> String {
    redact_malformed(&redact_urls(s))
}

/// `user:password@` in any word that is not a URL `redact_urls` read:
/// the password after the word's last `:` before its `@`. An address
/// (`user@host`) has no `:` there and is left alone.
fn redact_malformed(s: &str) -> String {
    let word_start = |i: usize| {
        s[..i]
            .rfind(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '(' | '[' | '{' | '<' | ',')
            })
            .map_or(0, |p| p + 1)
    };
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    for (at, _) in s.match_indices('@') {
        if at < from {
            continue;
        }
        let start = word_start(at).max(from);
        let userinfo = &s[start..at];
        if userinfo.ends_with("[redacted]") {
            continue;
        }
        if let Some(colon) = userinfo.rfind(':') {
            out.push_str(&s[from..start + colon + 1]);
            out.push_str("[redacted]");
            from = at;
        }
    }
    out.push_str(&s[from..]);
    out
}

fn redact_urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let (authority, after) = tail.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:[redacted]@{host}")),
                None => out.push_str(&format!("[redacted]@{host}")),
            },
            None => out.push_str(authority),
        }
        // The rest of the URL (path, query, fragment) ends where the word
        // does, less the punctuation of the sentence around it (`URL: why`,
        // `(URL)`); the query's secret parameters lose their values.
        let word_end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(after.len());
        let url_end = after[..word_end]
            .trim_end_matches([':', ',', ';', '.', ')', ']', '}'])
            .len();
        let (url, tail) = after.split_at(url_end);
        match url.split_once('?') {
            Some((path, query)) => {
                let (query, fragment) = match query.find('#') {
                    Some(i) => query.split_at(i),
                    None => (query, ""),
                };
                out.push_str(path);
                out.push('?');
                out.push_str(&redact_query(query));
                out.push_str(fragment);
            }
            None => out.push_str(url),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// A query with the values of its credential parameters masked: a name
/// [`is_secret_key`] takes for a secret, or one signed and keyed URLs
/// carry (`key`, `sig`, `auth`, and names ending in `signature`,
/// `credential`, `credentials`, `_sig` or `_key`: `X-Amz-Signature`,
/// `subscription-key`).
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() => {
                let k = name
                    .to_ascii_lowercase()
                    .replace("%5f", "_")
                    .replace('-', "_");
                let secret = is_secret_key(&k)
                    || matches!(k.as_str(), "key" | "sig" | "auth")
                    || ["signature", "credential", "credentials", "_sig", "_key"]
                        .iter()
                        .any(|end| k.ends_with(end));
                if secret {
                    format!("{name}=[redacted]")
                } else {
                    pair.to_owned()
                }
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A rate as written in a summary: `{}` writes every digit of a double
/// (`1e300` as 301 of them), so a huge one is written with its exponent.
fn rate_text(rate: f64) -> String {
    if rate >= 1e15 {
        format!("{rate:e}")
    } else {
        rate.to_string()
    }
}

/// A type error with Rust's type names said as the config's reader knows
/// them: "expected usize" is "expected a whole number that is not negative", a
/// struct is a table and a sequence a list.
fn plain_types(message: &str) -> String {
    // A number past TOML's 64 bits is read as i128 and said so.
    let mut out = message
        .replace(" as i128", "")
        .replace(
            "data did not match any variant of untagged enum OneOrMany",
            "expected a string or a list of strings",
        )
        .replace("invalid type: sequence", "invalid type: list")
        .replace("invalid type: map", "invalid type: table")
        .replace("expected a sequence", "expected a list")
        .replace("expected a map", "expected a table");
    // serde names the struct a table was to fill: `expected struct CorsFile`.
    while let Some(at) = out.find("expected struct ") {
        let name_start = at + "expected struct ".len();
        let name_end = out[name_start..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(out.len(), |n| name_start + n);
        out.replace_range(at..name_end, "expected a table");
    }
    for (rust, plain) in [
        (
            "expected usize",
            "expected a whole number that is not negative (at most 18446744073709551615)",
        ),
        (
            "expected u64",
            "expected a whole number that is not negative (at most 18446744073709551615)",
        ),
        (
            "expected u32",
            "expected a whole number that is not negative (at most 4294967295)",
        ),
        (
            "expected u16",
            "expected a whole number that is not negative (at most 65535)",
        ),
        (
            "expected u8",
            "expected a whole number that is not negative (at most 255)",
        ),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
    ] {
        if let Some(at) = out.find(rust) {
            // Only the whole word: `expected u32` is not `expected u3`.
            let end = at + rust.len();
            if !out[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                out.replace_range(at..end, plain);
            }
        }
    }
    out
}

/// Whether a duration humantime refused as an overflow reads once every
/// fractional part (`.5` in `"0.5ns"`) is left out: then the fraction was
/// what its unit could not hold, not the size.
fn parses_without_fractions(text: &str) -> bool {
    let mut whole = String::with_capacity(text.len());
    let mut in_fraction = false;
    for c in text.chars() {
        match c {
            '.' => in_fraction = true,
            '0'..='9' if in_fraction => {}
            c => {
                in_fraction = false;
                whole.push(c);
            }
        }
    }
    humantime::parse_duration(&whole).is_ok_and(|d| d <= MAX_DURATION)
}

/// 1-based line and column of a byte offset, for syntax errors.
pub(crate) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

pub(crate) struct Validator<'a> {
    source: &'a str,
    base: &'a Path,
    /// Every path the config names, as resolved.
    files: std::cell::RefCell<Vec<PathBuf>>,
}

#[cfg(test)]
impl<'a> Validator<'a> {
    /// A validator for one section's unit tests.
    pub(crate) fn for_tests(source: &'a str) -> Validator<'a> {
        Validator {
            source,
            base: Path::new("."),
            files: Default::default(),
        }
    }
}

/// The longest duration any key takes: a year as humantime reads `"1y"`
/// (365.25 days).
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

impl Validator<'_> {
    pub(crate) fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn duration(
        &self,
        key: &str,
        text: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration_or_zero(key, text, default)?;
        if d.is_zero() {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(d)
    }

    /// A duration where zero means "none" (a JWT leeway, a cache that
    /// keeps nothing, a drain that does not wait).
    pub(crate) fn duration_or_zero(
        &self,
        key: &str,
        text: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(t) = text else {
            return Ok(default);
        };
        const NEEDS_UNIT: &str = "the number needs a unit (ns, us, ms, s, m, h, d, w, M or y)";
        // humantime takes a bare "0"; the README says a number needs its unit.
        let bare_number = !t.trim().is_empty() && t.trim().bytes().all(|b| b.is_ascii_digit());
        let parsed = if bare_number {
            Err(humantime::DurationError::UnknownUnit {
                start: t.len(),
                end: t.len(),
                unit: String::new(),
                value: 0,
            })
        } else {
            humantime::parse_duration(t)
        };
        let d = parsed.map_err(|e| {
            let why = match e {
                _ if t.trim_start().starts_with('-') => "it is negative".to_owned(),
                humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                    NEEDS_UNIT.to_owned()
                }
                // humantime says "overflow" for a fraction finer than its
                // unit can hold too: without the fraction, it parses.
                humantime::DurationError::NumberOverflow
                    if parses_without_fractions(t)
                        && matches!(last_unit(t), "ns" | "nsec" | "nanos") =>
                {
                    "a duration is whole nanoseconds, and no unit is smaller than ns".to_owned()
                }
                humantime::DurationError::NumberOverflow if parses_without_fractions(t) => {
                    "its fraction is finer than its unit takes (a fraction of ns, us, ms, s or m must come to whole nanoseconds, of h, d, w, M or y to whole seconds): write it in a smaller unit (for example, \"1.001h\" as \"3603600ms\")".to_owned()
                }
                humantime::DurationError::NumberOverflow => {
                    "it is longer than the most allowed, a year (\"1y\")".to_owned()
                }
                other => other.to_string(),
            };
            self.err(
                key,
                format!("{t:?} is not a duration like \"5s\" or \"250ms\": {why}"),
            )
        })?;
        // Deadlines are instants and grpc-timeout values: a far-off one
        // overflows both, so no duration may pass a year.
        if d > MAX_DURATION {
            return Err(self.err(
                key,
                format!("{t:?} is longer than the most allowed, a year (\"1y\")"),
            ));
        }
        Ok(d)
    }

    /// A name the user gives an upstream, authenticator or ext_authz
    /// service: it is printed in log lines, metric labels and `/usage`,
    /// where an empty one or a line break would read as something else.
    fn table_name(&self, table: &str, name: &str) -> Result<(), ConfigError> {
        let why = if name.trim().is_empty() {
            "a name may not be empty or only spaces"
        } else if name.chars().any(char::is_control) {
            "a name may not hold a control character (a line break, a tab): it is printed in log lines, metric labels and /usage"
        } else {
            return Ok(());
        };
        Err(self.err(format!("{table}.{name:?}"), why))
    }

    pub(crate) fn addr(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.err(
                key,
                format!("{text:?} is not an address like \"127.0.0.1:8080\""),
            )
        })
    }

    pub(crate) fn path(&self, p: &str) -> PathBuf {
        let resolved = self.output_path(p);
        let mut files = self.files.borrow_mut();
        if !files.contains(&resolved) {
            files.push(resolved.clone());
        }
        resolved
    }

    /// A path the gateway writes (a log), resolved like [`Validator::path`]
    /// but not watched: writing it must not trigger a reload.
    pub(crate) fn output_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// While the edge drops client headers named with `_`, a policy
    /// reading one would never find it (a rate limit keyed on it would put
    /// every caller in one bucket), and a header the gateway writes under
    /// such a name is one a CGI or WSGI backend reads as the `-` spelling,
    /// which the edge does not drop: the client's value would sit beside it.
    fn no_underscored_header_names(
        &self,
        routes: &[crate::routes::config::RouteConfig],
        upstreams: &[crate::egress::upstream::config::UpstreamConfig],
        authenticators: &[AuthenticatorConfig],
        ext_authz: &[crate::policy::ext_authz::config::ExtAuthzConfig],
    ) -> Result<(), ConfigError> {
        use crate::egress::upstream::config::{Balance, HashKey};
        use crate::ingress::edge::config::{dropped_underscored, written_underscored};
        use crate::policy::rate_limit::config::RateLimitKey;
        type Why = fn(&str) -> String;
        // Every header name a setting reads or writes: its key, the name,
        // and why `_` in it is refused.
        let mut named: Vec<(String, &http::HeaderName, Why)> = Vec::new();
        for a in authenticators {
            if let AuthMethod::ApiKey(ApiKeyConfig { header, .. }) = &a.method {
                named.push((
                    format!("authenticators.{}.header", a.name),
                    header,
                    dropped_underscored,
                ));
            }
            for (claim, header) in &a.forward_claims {
                let key = format!("authenticators.{}.forward_claims.{claim}", a.name);
                named.push((key, header, written_underscored));
            }
        }
        for x in ext_authz {
            for (i, h) in x.include_headers.iter().enumerate() {
                let key = format!("ext_authz.{}.include_headers[{i}]", x.name);
                named.push((key, h, dropped_underscored));
            }
            for (i, h) in x.upstream_headers.iter().enumerate() {
                let key = format!("ext_authz.{}.upstream_headers[{i}]", x.name);
                named.push((key, h, written_underscored));
            }
        }
        for u in upstreams {
            if let Balance::ConsistentHash(HashKey::Header(h)) = &u.balance {
                named.push((
                    format!("upstreams.{}.hash_key", u.name),
                    h,
                    dropped_underscored,
                ));
            }
        }
        for (i, r) in routes.iter().enumerate() {
            if let Some(RateLimitKey::Header(h)) = r.rate_limit.as_ref().map(|l| &l.key) {
                named.push((
                    format!("routes[{i}].rate_limit.key"),
                    h,
                    dropped_underscored,
                ));
            }
            for (at, h) in r.cache.iter().flat_map(|c| c.vary.iter().enumerate()) {
                named.push((
                    format!("routes[{i}].cache.vary[{at}]"),
                    h,
                    dropped_underscored,
                ));
            }
        }
        match named.into_iter().find(|(_, h, _)| h.as_str().contains('_')) {
            Some((key, h, why)) => Err(self.err(key, why(h.as_str()))),
            None => Ok(()),
        }
    }

    fn validate(&self, f: file::File) -> Result<Config, ConfigError> {
        let server = self.server(&f.server)?;
        let json = self.json("json", &f.json, JsonOptions::default())?;
        let metadata = self.metadata(&f.metadata)?;
        let websocket = self.websocket(&f.websocket)?;
        let cors = f
            .cors
            .as_ref()
            .map(|c| self.cors("cors", c))
            .transpose()?
            .map(std::sync::Arc::new);

        let mut upstreams = Vec::new();
        for (name, u) in &f.upstreams {
            self.table_name("upstreams", name)?;
            upstreams.push(self.upstream(name, u)?);
        }
        let descriptors = self.descriptors(&f.descriptors, &upstreams)?;

        let mut authenticators = Vec::new();
        for (name, a) in &f.authenticators {
            self.table_name("authenticators", name)?;
            authenticators.push(self.authenticator(name, a)?);
        }
        // A claim forwarded in another authenticator's credential header
        // would be stripped from the client's request as a forwarded
        // header, and that authenticator would never see a credential.
        for a in &authenticators {
            for (claim, header) in &a.forward_claims {
                let owner = authenticators.iter().find(|o| match &o.method {
                    AuthMethod::ApiKey(k) => k.header == *header,
                    _ => false,
                });
                if let Some(owner) = owner {
                    return Err(self.err(
                        format!("authenticators.{}.forward_claims.{claim}", a.name),
                        format!(
                            "{header:?} is where authenticator {:?} reads its API keys: a claim forwarded there would hide every key; name another header",
                            owner.name
                        ),
                    ));
                }
            }
        }
        for a in &authenticators {
            let client_ca = server
                .tls
                .as_ref()
                .is_some_and(|t| t.client_ca_pem.is_some());
            if matches!(a.method, AuthMethod::ClientCert(_)) && !client_ca {
                return Err(self.err(
                    format!("authenticators.{}.kind", a.name),
                    "\"client_cert\" needs mutual TLS on the main port: server.tls.client_ca_file",
                ));
            }
        }
        // The query parameter an API-key authenticator also reads: the edge
        // lifts it into the header the authenticator reads.
        let mut metadata = metadata;
        for a in &authenticators {
            if let AuthMethod::ApiKey(ApiKeyConfig {
                header,
                query_param: Some(param),
                ..
            }) = &a.method
            {
                // The WebSocket handshake's token parameter carries a bearer
                // token: read as an API key too, every token would be an
                // unknown key.
                if websocket.token_query_param.as_deref() == Some(param.as_str()) {
                    return Err(self.err(
                        format!("authenticators.{}.query_param", a.name),
                        format!("{param:?} is websocket.token_query_param, which carries a bearer token; name another parameter"),
                    ));
                }
                metadata
                    .query_credentials
                    .push((param.clone(), header.clone()));
            }
        }
        let mut ext_authz = Vec::new();
        for (name, a) in &f.ext_authz {
            self.table_name("ext_authz", name)?;
            ext_authz.push(self.ext_authz(name, a)?);
        }
        // The headers authenticators write are the gateway's own on every
        // route, not only where authentication runs: a backend trusting
        // `x-user-id` never sees a client's. (A forward-auth service's
        // `upstream_headers` are its own only where it runs: they may name
        // `authorization`, which other routes pass on from the client.)
        // So are the binary twins of the headers credentials come in
        // (`authorization-bin`, an API key header's): the gateway checks
        // neither, so a backend that read one would trust what no policy saw.
        let mut owned: Vec<http::HeaderName> =
            vec![crate::headers::binary_twin(&http::header::AUTHORIZATION)];
        for a in &authenticators {
            for (_, header) in &a.forward_claims {
                owned.extend([header.clone(), crate::headers::binary_twin(header)]);
            }
            if let AuthMethod::ApiKey(ApiKeyConfig { header, .. }) = &a.method {
                owned.push(crate::headers::binary_twin(header));
            }
        }
        for name in owned {
            if !metadata.gateway_owned.contains(&name) {
                metadata.gateway_owned.push(name);
            }
        }
        let context = crate::routes::config::RouteContext {
            upstreams: &upstreams,
            authenticators: &authenticators,
            ext_authz: &ext_authz,
            json,
            cors: cors.clone(),
            timeout: server.limits.request_timeout,
        };
        let routes = f
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(&format!("routes[{i}]"), r, &context))
            .collect::<Result<Vec<_>, _>>()?;
        if routes.is_empty() {
            return Err(self.err("routes", "no [[routes]]: the gateway would serve nothing"));
        }
        let redis = f.redis.as_ref().map(|r| self.redis(r)).transpose()?;
        let access_log = f
            .access_log
            .as_ref()
            .map(|a| self.access_log(a))
            .transpose()?;
        let openapi = self.openapi(f.openapi.as_ref())?;
        let tracing = self.tracing(
            f.tracing.as_ref(),
            &crate::observe::traces::config::ProcessEnvironment,
        )?;
        if redis.is_none() {
            for (i, r) in routes.iter().enumerate() {
                if r.rate_limit.as_ref().is_some_and(|l| l.global) {
                    return Err(self.err(
                        format!("routes[{i}].rate_limit.scope"),
                        "\"global\" needs a [redis] section: the instances share limits through it",
                    ));
                }
                if r.cache.as_ref().is_some_and(|c| c.shared.is_some()) {
                    return Err(self.err(
                        format!("routes[{i}].cache.shared"),
                        "needs a [redis] section: the instances share replies through it",
                    ));
                }
            }
        }
        let aggregates = f
            .aggregates
            .iter()
            .enumerate()
            .map(|(i, a)| {
                self.aggregate(
                    &format!("aggregates[{i}]"),
                    a,
                    server.limits.request_timeout,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;

        if metadata.drop_underscored {
            self.no_underscored_header_names(&routes, &upstreams, &authenticators, &ext_authz)?;
        }
        Ok(Config {
            source: self.source.to_owned(),
            server,
            json,
            metadata,
            websocket,
            descriptors,
            upstreams,
            authenticators,
            ext_authz,
            cors,
            redis,
            access_log,
            tracing,
            openapi,
            routes,
            aggregates,
            files: Vec::new(),
            text_sha256: String::new(),
            path: None,
            redacted: serde_json::Value::Null,
        })
    }
}

impl Validator<'_> {
    /// The position of the upstream `name`, or an error listing the known ones.
    pub(crate) fn upstream_index(
        &self,
        key: &str,
        name: &str,
        upstreams: &[UpstreamConfig],
    ) -> Result<usize, ConfigError> {
        upstreams
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                self.err(
                    key,
                    format!(
                        "no upstream named {name:?} (known: {})",
                        list_or_none(&known)
                    ),
                )
            })
    }
}

pub(crate) fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// The unit a duration's text ends with (`"1.5mins"` gives `mins`).
fn last_unit(text: &str) -> &str {
    let text = text.trim_end();
    &text[text
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .len()..]
}

/// What is wrong with the port a URL's authority writes, if anything: a
/// port out of 1-65535, one with leading zeros, or an empty one. The
/// URL parser takes these, and a client would then connect somewhere
/// other than meant, or nowhere, on every call.
pub(crate) fn url_port_problem(uri: &http::Uri) -> Option<String> {
    let authority = uri.authority()?.as_str();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    // An IPv6 host's colons are inside its brackets.
    let after_host = host_port
        .rsplit_once(']')
        .map_or(host_port, |(_, rest)| rest);
    let (_, port) = after_host.rsplit_once(':')?;
    let fine = !port.starts_with('0')
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    (!fine).then(|| {
        format!("its port {port:?} is not a port from 1 to 65535 written without leading zeros")
    })
}

/// Reads a file the config names (the config itself, a key file, a
/// certificate, a descriptor set...), refusing what is not a regular file
/// (a symlink counts as what it points to): opening a named pipe waits for
/// a writer that may never come, and reading a device such as
/// `/dev/zero` never ends; either would hang a start, a `check` or a
/// reload, and the shutdown behind it.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a pipe, socket, device or folder)",
        ));
    }
    std::fs::read(path)
}

/// [`read_file`], as UTF-8 text.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read_file(path)?)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests;
