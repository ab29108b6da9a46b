//! Configuration: the TOML schema ([`file`]) and the validated, typed config
//! the rest of the gateway is built from. Every check that can be done
//! without loading schemas happens here, and every error names the file,
//! the key and the reason.

pub mod aggregate;
pub mod file;
pub mod upstream;

pub use aggregate::{AggregateCall, AggregateConfig, OnError};
pub use upstream::*;

use std::collections::HashSet;
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

/// Limits on what a client may send, all on by default. Defaults are at
/// least as strict as Envoy's edge-proxy advice.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// HTTP/2 streams a client may have open on one connection.
    pub max_concurrent_streams: u32,
    /// Time allowed to receive a request's headers (also the HTTP/1.1 keep-alive wait).
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Largest request body the gateway reads.
    pub max_request_body_bytes: usize,
    /// Largest gRPC message sent to or received from a backend.
    pub max_grpc_message_bytes: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Longest a unary call may take end to end.
    pub request_timeout: Duration,
    /// Client connections open at once; more wait in the accept queue.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent_streams: 100,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_request_body_bytes: 4 * 1024 * 1024,
            max_grpc_message_bytes: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub limits: Limits,
    /// On SIGTERM, how long requests in flight may take to finish before
    /// their connections are cut.
    pub drain_timeout: Duration,
    /// TLS on the main port, read and checked at load.
    pub tls: Option<ServerTls>,
    /// Reload when the config file or a file it names changes.
    pub watch_files: bool,
}

/// The main port's certificate chain and key, as PEM bytes.
#[derive(Clone, PartialEq)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// CAs whose client certificates are required (mutual TLS), as PEM.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for ServerTls {
    // Never print the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// What to do with a query parameter that names no field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownQueryParams {
    Reject,
    Ignore,
}

/// Proto3 JSON mapping options, global and per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonOptions {
    /// Write fields that hold their default value.
    pub emit_unpopulated: bool,
    /// Write `proto_field_name` instead of `lowerCamelCase`.
    pub use_proto_names: bool,
    /// Write enums as numbers instead of names.
    pub enums_as_numbers: bool,
    /// Reject unknown JSON fields and enum names (the default) instead of dropping them.
    pub reject_unknown_fields: bool,
    pub unknown_query_params: UnknownQueryParams,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            emit_unpopulated: false,
            use_proto_names: false,
            enums_as_numbers: false,
            reject_unknown_fields: true,
            unknown_query_params: UnknownQueryParams::Reject,
        }
    }
}

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
        }
    }
}

/// Where schemas come from; paths are already resolved against the config folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescriptorSources {
    pub sets: Vec<PathBuf>,
    pub proto_paths: Vec<PathBuf>,
    pub protos: Vec<String>,
    /// Upstreams (by name) whose server reflection is read at startup.
    pub reflect: Vec<String>,
}

/// Where a JWT authenticator's key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKey {
    Secret(Vec<u8>),
    /// PEM text of a public key, read at load.
    PublicPem(Vec<u8>),
    /// A JWK set, re-read when a token names a `kid` it does not hold.
    Jwks {
        source: JwksSource,
        min_refresh: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    File(PathBuf),
    /// An `http://` or `https://` URL; `ca_file` adds CAs to the built-in roots.
    Url {
        url: String,
        ca_file: Option<PathBuf>,
    },
}

/// A validated authenticator: how a credential is verified, and what of it
/// reaches the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatorConfig {
    pub name: String,
    pub method: AuthMethod,
    /// Verified claims copied into the call's metadata: (claim, header).
    pub forward_claims: Vec<(String, http::HeaderName)>,
    /// Remove the credential (authorization or the API key header) before the backend.
    pub strip_credential: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthMethod {
    Jwt(JwtConfig),
    ApiKey(ApiKeyConfig),
}

/// API keys: a header, and the SHA-256 of each consumer's key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyConfig {
    pub header: http::HeaderName,
    /// A query parameter that may carry the key; REST and WebSocket ingress
    /// move it into `header` (and out of the query) before the pipeline.
    pub query_param: Option<String>,
    pub consumers: Vec<(String, [u8; 32])>,
}

/// JWT verification. The accepted algorithm is the configured one, never
/// the token's: no `alg: none`, no RS/HS confusion.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    /// A cookie that may carry the token (browsers), after `authorization`.
    pub cookie: Option<String>,
    pub algorithm: jsonwebtoken::Algorithm,
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// What a route's principal must hold, checked after authentication.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthorizeConfig {
    pub scopes: Vec<String>,
    pub claims: Vec<(String, String)>,
    /// An allow-list of principals (the consumer of an API key, the `sub`
    /// of a token); `None` allows any.
    pub consumers: Option<Vec<String>>,
}

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
}

/// A route's response cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub max_bytes: u64,
    pub vary: Vec<http::HeaderName>,
    pub methods: Vec<String>,
}

/// WebSocket sessions: keepalive, limits, browser origins and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketConfig {
    /// The gateway pings every connection this often.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Largest message a client may send in one frame.
    pub max_message_bytes: usize,
    /// Client messages queued for one call before the backend takes them.
    pub max_in_flight: usize,
    /// Calls open at once on one connection.
    pub max_calls: usize,
    /// Origins allowed besides the gateway's own; `*` for any. Browsers'
    /// cross-origin pages are refused unless listed.
    pub allowed_origins: Vec<String>,
    /// Query parameter that carries a bearer token.
    pub token_query_param: Option<String>,
    /// Calls a connection may open per second (a bucket of one second's worth).
    pub calls_per_second: Option<ConnectionRate>,
    /// Messages (frames with data) a connection may send per second.
    pub messages_per_second: Option<ConnectionRate>,
}

/// A per-connection token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionRate {
    pub rate: f64,
    pub burst: u32,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_message_bytes: 1024 * 1024,
            max_in_flight: 32,
            max_calls: 100,
            allowed_origins: Vec::new(),
            token_query_param: None,
            calls_per_second: None,
            messages_per_second: None,
        }
    }
}

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub grpc_service: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub methods: Option<Vec<String>>,
    /// Also serve every method as `POST /package.Service/Method`.
    pub auto_mapping: bool,
    pub timeout: Duration,
    pub json: JsonOptions,
    /// None: no cross-origin access.
    pub cors: Option<std::sync::Arc<CorsPolicy>>,
    /// Index into [`Config::authenticators`] of the authenticator every
    /// call on this route must pass.
    pub auth: Option<usize>,
    pub authorize: Option<AuthorizeConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    pub cache: Option<CacheConfig>,
    /// google.api.http rules from the config, by method name; they replace
    /// the schema's rule for that method.
    pub http_rules: std::collections::BTreeMap<String, crate::descriptors::http_rule::HttpRule>,
}

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
        if let Some(i) = route.auth {
            parts.push(format!("authenticate ({})", self.authenticators[i].name));
        }
        if let Some(a) = &route.authorize {
            let mut needs: Vec<String> = a.scopes.iter().map(|s| format!("scope {s}")).collect();
            needs.extend(a.claims.iter().map(|(k, v)| format!("{k}={v}")));
            if let Some(c) = &a.consumers {
                needs.push(format!("consumer in [{}]", c.join(", ")));
            }
            parts.push(format!("authorize ({})", needs.join(", ")));
        }
        if let Some(r) = &route.rate_limit {
            let key = match &r.key {
                RateLimitKey::ClientIp => "client ip".to_owned(),
                RateLimitKey::Principal => "principal".to_owned(),
                RateLimitKey::Route => "route".to_owned(),
                RateLimitKey::Header(h) => format!("header {h}"),
            };
            parts.push(format!(
                "rate limit ({}/s, burst {}, per {key})",
                r.rate, r.burst
            ));
        }
        if let Some(c) = &route.cache {
            parts.push(format!(
                "cache (ttl {}, {} bytes)",
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
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
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
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            },
        })?;
        let file: file::File = serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
            file: source.to_owned(),
            key: e.path().to_string(),
            reason: e.inner().message().to_owned(),
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
            .map(redact)
            .unwrap_or_default();
        Ok(config)
    }
}

/// Keys whose values are secrets, wherever they appear in a config.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "secret"
        || k == "token"
        || k == "keys"
        || k.ends_with("_secret")
        || k.ends_with("password")
        || k.ends_with("private_key")
}

/// The config with every secret value replaced, and passwords inside URLs
/// (`scheme://user:password@host`) masked.
fn redact(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(&k) {
                        Value::String("[redacted]".into())
                    } else {
                        redact(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_url_password(&s)),
        other => other,
    }
}

fn redact_url_password(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:[redacted]@{host}{path}")
        }
        _ => s.to_owned(),
    }
}

/// 1-based line and column of a byte offset, for syntax errors.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

struct Validator<'a> {
    source: &'a str,
    base: &'a Path,
    /// Every path the config names, as resolved.
    files: std::cell::RefCell<Vec<PathBuf>>,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.source.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        text: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match text {
            None => Ok(default),
            Some(t) => {
                let d = humantime::parse_duration(t).map_err(|e| {
                    self.err(
                        key,
                        format!("{t:?} is not a duration like \"5s\" or \"250ms\": {e}"),
                    )
                })?;
                if d.is_zero() {
                    return Err(self.err(key, "must be greater than zero"));
                }
                Ok(d)
            }
        }
    }

    fn addr(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.err(
                key,
                format!("{text:?} is not an address like \"127.0.0.1:8080\""),
            )
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        let resolved = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        };
        let mut files = self.files.borrow_mut();
        if !files.contains(&resolved) {
            files.push(resolved.clone());
        }
        resolved
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
            upstreams.push(self.upstream(name, u)?);
        }
        let upstream_index = |key: &str, name: &str| -> Result<usize, ConfigError> {
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
        };

        let descriptors = DescriptorSources {
            sets: f.descriptors.sets.iter().map(|s| self.path(s)).collect(),
            proto_paths: f
                .descriptors
                .proto_paths
                .iter()
                .map(|s| self.path(s))
                .collect(),
            protos: f.descriptors.protos.clone(),
            reflect: f.descriptors.reflect.clone(),
        };
        for (i, name) in descriptors.reflect.iter().enumerate() {
            let u = upstream_index(&format!("descriptors.reflect[{i}]"), name)?;
            if upstreams[u].protocol != UpstreamProtocol::Grpc {
                return Err(self.err(
                    format!("descriptors.reflect[{i}]"),
                    format!("upstream {name} speaks HTTP, not gRPC reflection"),
                ));
            }
        }
        if !descriptors.protos.is_empty() && descriptors.proto_paths.is_empty() {
            return Err(self.err(
                "descriptors.proto_paths",
                "is needed to find descriptors.protos",
            ));
        }

        let mut authenticators = Vec::new();
        for (name, a) in &f.authenticators {
            authenticators.push(self.authenticator(name, a)?);
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
                metadata
                    .query_credentials
                    .push((param.clone(), header.clone()));
            }
        }
        let mut routes = Vec::new();
        for (i, r) in f.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if r.grpc_service.is_empty() {
                return Err(self.err(
                    format!("{key}.grpc_service"),
                    "must name a service, e.g. \"foo.v1.Foo\"",
                ));
            }
            let upstream = upstream_index(&format!("{key}.upstream"), &r.upstream)?;
            let route_json = match &r.json {
                Some(j) => self.json(&format!("{key}.json"), j, json)?,
                None => json,
            };
            let auth = match &r.auth {
                None => None,
                Some(name) => Some(
                    authenticators
                        .iter()
                        .position(|a| &a.name == name)
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                authenticators.iter().map(|a| a.name.as_str()).collect();
                            self.err(
                                format!("{key}.auth"),
                                format!(
                                    "no authenticator named {name:?} (known: {})",
                                    list_or_none(&known)
                                ),
                            )
                        })?,
                ),
            };
            let authorize =
                match (&r.authorize, auth) {
                    (None, _) => None,
                    (Some(_), None) => {
                        return Err(self.err(
                            format!("{key}.authorize"),
                            "needs an authenticator on the route (auth = \"...\")",
                        ))
                    }
                    (Some(a), Some(_)) => Some(AuthorizeConfig {
                        consumers: match &a.consumers {
                            Some(list) if list.is_empty() => return Err(self.err(
                                format!("{key}.authorize.consumers"),
                                "an empty list would refuse everyone; leave it out to allow any",
                            )),
                            other => other.clone(),
                        },
                        scopes: a.scopes.clone(),
                        claims: a
                            .claims
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    }),
                };
            let rate_limit = match &r.rate_limit {
                None => None,
                Some(rl) => {
                    let k = format!("{key}.rate_limit");
                    if !(rl.requests_per_second > 0.0 && rl.requests_per_second.is_finite()) {
                        return Err(self.err(
                            format!("{k}.requests_per_second"),
                            "must be a number greater than zero",
                        ));
                    }
                    let burst = rl
                        .burst
                        .unwrap_or(rl.requests_per_second.ceil().max(1.0) as u32);
                    if burst == 0 {
                        return Err(self.err(format!("{k}.burst"), "must be at least 1"));
                    }
                    let key_kind = match rl.key.as_deref().unwrap_or("client_ip") {
                        "client_ip" => RateLimitKey::ClientIp,
                        "principal" => RateLimitKey::Principal,
                        "route" => RateLimitKey::Route,
                        other => match other.strip_prefix("header:").map(|h| http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())) {
                            Some(Ok(h)) => RateLimitKey::Header(h),
                            _ => {
                                return Err(self.err(
                                    format!("{k}.key"),
                                    format!("{other:?} is not one of \"client_ip\", \"principal\", \"route\", \"header:NAME\""),
                                ))
                            }
                        },
                    };
                    Some(RateLimitConfig {
                        rate: rl.requests_per_second,
                        burst,
                        key: key_kind,
                    })
                }
            };
            let cache = match &r.cache {
                None => None,
                Some(c) => {
                    let k = format!("{key}.cache");
                    let mut vary = Vec::new();
                    for (j, h) in c.vary.iter().enumerate() {
                        vary.push(
                            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                                .map_err(|_| {
                                    self.err(
                                        format!("{k}.vary[{j}]"),
                                        format!("{h:?} is not a header name"),
                                    )
                                })?,
                        );
                    }
                    Some(CacheConfig {
                        ttl: self.duration(
                            &format!("{k}.ttl"),
                            &Some(c.ttl.clone()),
                            Duration::ZERO,
                        )?,
                        max_bytes: match c.max_bytes {
                            Some(0) => {
                                return Err(
                                    self.err(format!("{k}.max_bytes"), "must be greater than zero")
                                )
                            }
                            Some(b) => b,
                            None => 64 * 1024 * 1024,
                        },
                        vary,
                        methods: c.methods.clone(),
                    })
                }
            };
            routes.push(RouteConfig {
                cache,
                rate_limit,
                auth,
                authorize,
                grpc_service: r.grpc_service.clone(),
                upstream,
                methods: r.methods.clone(),
                auto_mapping: r.auto_mapping.unwrap_or(true),
                timeout: self.duration(
                    &format!("{key}.timeout"),
                    &r.timeout,
                    server.limits.request_timeout,
                )?,
                json: route_json,
                http_rules: match &r.http_rules {
                    Some(rules) => rules
                        .iter()
                        .map(|(method, rule)| {
                            Ok((
                                method.clone(),
                                self.http_rule(&format!("{key}.http_rules.{method}"), rule, true)?,
                            ))
                        })
                        .collect::<Result<_, ConfigError>>()?,
                    None => Default::default(),
                },
                cors: match &r.cors {
                    Some(c) => Some(std::sync::Arc::new(self.cors(&format!("{key}.cors"), c)?)),
                    None => cors.clone(),
                },
            });
        }
        if routes.is_empty() {
            return Err(self.err("routes", "no [[routes]]: the gateway would serve nothing"));
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

        Ok(Config {
            source: self.source.to_owned(),
            server,
            json,
            metadata,
            websocket,
            descriptors,
            upstreams,
            authenticators,
            routes,
            aggregates,
            files: Vec::new(),
            text_sha256: String::new(),
            path: None,
            redacted: serde_json::Value::Null,
        })
    }

    fn server(&self, s: &file::ServerFile) -> Result<ServerConfig, ConfigError> {
        let d = Limits::default();
        let l = &s.limits;
        let positive =
            |key: &str, v: Option<usize>, default: usize| -> Result<usize, ConfigError> {
                match v {
                    Some(0) => {
                        Err(self.err(format!("server.limits.{key}"), "must be greater than zero"))
                    }
                    Some(v) => Ok(v),
                    None => Ok(default),
                }
            };
        let limits = Limits {
            max_concurrent_streams: match l.max_concurrent_streams {
                Some(0) => {
                    return Err(self.err(
                        "server.limits.max_concurrent_streams",
                        "must be greater than zero",
                    ))
                }
                Some(v) => v,
                None => d.max_concurrent_streams,
            },
            header_read_timeout: self.duration(
                "server.limits.header_read_timeout",
                &l.header_read_timeout,
                d.header_read_timeout,
            )?,
            max_header_bytes: positive("max_header_bytes", l.max_header_bytes, d.max_header_bytes)?,
            max_request_body_bytes: positive(
                "max_request_body_bytes",
                l.max_request_body_bytes,
                d.max_request_body_bytes,
            )?,
            max_grpc_message_bytes: positive(
                "max_grpc_message_bytes",
                l.max_grpc_message_bytes,
                d.max_grpc_message_bytes,
            )?,
            idle_timeout: self.duration(
                "server.limits.idle_timeout",
                &l.idle_timeout,
                d.idle_timeout,
            )?,
            request_timeout: self.duration(
                "server.limits.request_timeout",
                &l.request_timeout,
                d.request_timeout,
            )?,
            max_connections: positive("max_connections", l.max_connections, d.max_connections)?,
        };
        if limits.max_header_bytes < 8192 {
            return Err(self.err("server.limits.max_header_bytes", "must be at least 8192"));
        }
        let tls = match &s.tls {
            None => None,
            Some(t) => {
                let read = |key: &str, file: &str| {
                    let path = self.path(file);
                    std::fs::read(&path).map_err(|e| {
                        self.err(
                            format!("server.tls.{key}"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })
                };
                Some(ServerTls {
                    cert_file: self.path(&t.cert_file),
                    cert_pem: read("cert_file", &t.cert_file)?,
                    key_pem: read("key_file", &t.key_file)?,
                    client_ca_pem: t
                        .client_ca_file
                        .as_deref()
                        .map(|f| read("client_ca_file", f))
                        .transpose()?,
                })
            }
        };
        Ok(ServerConfig {
            tls,
            watch_files: s.watch_files.unwrap_or(true),
            drain_timeout: self.duration(
                "server.drain_timeout",
                &s.drain_timeout,
                Duration::from_secs(30),
            )?,
            listen: self.addr("server.listen", &s.listen)?,
            admin: s
                .admin
                .as_deref()
                .map(|a| self.addr("server.admin", a))
                .transpose()?,
            limits,
        })
    }

    fn json(
        &self,
        key: &str,
        j: &file::JsonFile,
        base: JsonOptions,
    ) -> Result<JsonOptions, ConfigError> {
        let unknown_query_params = match j.unknown_query_params.as_deref() {
            None => base.unknown_query_params,
            Some("reject") => UnknownQueryParams::Reject,
            Some("ignore") => UnknownQueryParams::Ignore,
            Some(other) => {
                return Err(self.err(
                    format!("{key}.unknown_query_params"),
                    format!("{other:?} is not one of \"reject\", \"ignore\""),
                ))
            }
        };
        Ok(JsonOptions {
            emit_unpopulated: j.emit_unpopulated.unwrap_or(base.emit_unpopulated),
            use_proto_names: j.use_proto_names.unwrap_or(base.use_proto_names),
            enums_as_numbers: j.enums_as_numbers.unwrap_or(base.enums_as_numbers),
            reject_unknown_fields: j
                .reject_unknown_fields
                .unwrap_or(base.reject_unknown_fields),
            unknown_query_params,
        })
    }

    fn http_rule(
        &self,
        key: &str,
        r: &file::HttpRuleFile,
        top: bool,
    ) -> Result<crate::descriptors::http_rule::HttpRule, ConfigError> {
        use crate::descriptors::http_rule::{pb::CustomHttpPattern, HttpRule, Pattern};
        let mut patterns = Vec::new();
        for (p, make) in [
            (&r.get, Pattern::Get as fn(String) -> Pattern),
            (&r.put, Pattern::Put),
            (&r.post, Pattern::Post),
            (&r.delete, Pattern::Delete),
            (&r.patch, Pattern::Patch),
        ] {
            if let Some(path) = p {
                patterns.push(make(path.clone()));
            }
        }
        if let Some(c) = &r.custom {
            patterns.push(Pattern::Custom(CustomHttpPattern {
                kind: c.kind.clone(),
                path: c.path.clone(),
            }));
        }
        if patterns.len() != 1 {
            return Err(self.err(
                key,
                "needs exactly one of get, put, post, delete, patch, custom",
            ));
        }
        if !top && !r.additional_bindings.is_empty() {
            return Err(self.err(
                format!("{key}.additional_bindings"),
                "additional bindings do not nest",
            ));
        }
        let additional_bindings = r
            .additional_bindings
            .iter()
            .enumerate()
            .map(|(i, b)| self.http_rule(&format!("{key}.additional_bindings[{i}]"), b, false))
            .collect::<Result<_, _>>()?;
        Ok(HttpRule {
            selector: String::new(),
            pattern: patterns.pop(),
            body: r.body.clone(),
            response_body: r.response_body.clone(),
            additional_bindings,
        })
    }

    fn authenticator(
        &self,
        name: &str,
        a: &file::AuthenticatorFile,
    ) -> Result<AuthenticatorConfig, ConfigError> {
        let key = format!("authenticators.{name}");
        let method = match a.kind.as_str() {
            "jwt" => AuthMethod::Jwt(self.jwt(&key, a)?),
            "api_key" => AuthMethod::ApiKey(self.api_keys(&key, a)?),
            other => {
                return Err(self.err(
                    format!("{key}.kind"),
                    format!("{other:?} is not one of \"jwt\", \"api_key\""),
                ))
            }
        };
        let mut forward_claims = Vec::new();
        for (claim, header) in a.forward_claims.iter().flatten() {
            let name = http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    self.err(
                        format!("{key}.forward_claims.{claim}"),
                        format!("{header:?} is not a header name"),
                    )
                })?;
            forward_claims.push((claim.clone(), name));
        }
        Ok(AuthenticatorConfig {
            name: name.to_owned(),
            method,
            forward_claims,
            strip_credential: a.strip_credential.unwrap_or(false),
        })
    }

    fn api_keys(
        &self,
        key: &str,
        a: &file::AuthenticatorFile,
    ) -> Result<ApiKeyConfig, ConfigError> {
        let header = a.header.as_deref().unwrap_or("x-api-key");
        let header =
            http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()).map_err(|_| {
                self.err(
                    format!("{key}.header"),
                    format!("{header:?} is not a header name"),
                )
            })?;
        let file = a.keys_file.as_ref().ok_or_else(|| {
            self.err(
                format!("{key}.keys_file"),
                "is required for an api_key authenticator",
            )
        })?;
        let path = self.path(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                format!("{key}.keys_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let table: std::collections::BTreeMap<String, String> =
            toml::from_str(&text).map_err(|e| {
                self.err(
                    format!("{key}.keys_file"),
                    format!("{}: {}", path.display(), e.message()),
                )
            })?;
        let mut consumers = Vec::new();
        for (consumer, hex) in table {
            let digest = decode_sha256_hex(&hex).ok_or_else(|| {
                self.err(
                    format!("{key}.keys_file"),
                    format!(
                        "{}: {consumer}: not the 64 hex digits of a SHA-256",
                        path.display()
                    ),
                )
            })?;
            consumers.push((consumer, digest));
        }
        if a.query_param.as_deref() == Some("") {
            return Err(self.err(format!("{key}.query_param"), "must not be empty"));
        }
        Ok(ApiKeyConfig {
            header,
            query_param: a.query_param.clone(),
            consumers,
        })
    }

    fn jwt(&self, key: &str, a: &file::AuthenticatorFile) -> Result<JwtConfig, ConfigError> {
        use jsonwebtoken::Algorithm::*;
        let algorithm_name = a.algorithm.as_deref().ok_or_else(|| {
            self.err(
                format!("{key}.algorithm"),
                "is required for a jwt authenticator",
            )
        })?;
        let algorithm: jsonwebtoken::Algorithm = algorithm_name.parse().map_err(|_| {
            self.err(
                format!("{key}.algorithm"),
                format!("{:?} is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA", a.algorithm),
            )
        })?;
        let hmac = matches!(algorithm, HS256 | HS384 | HS512);
        let jwks = match (&a.jwks_file, &a.jwks_url) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    format!("{key}.jwks_url"),
                    "give jwks_file or jwks_url, not both",
                ))
            }
            (_, None) if a.jwks_ca_file.is_some() => {
                return Err(self.err(format!("{key}.jwks_ca_file"), "only applies with jwks_url"))
            }
            (Some(f), None) => Some(JwksSource::File(self.path(f))),
            (None, Some(u))
                if u.starts_with("https://")
                    || (u.starts_with("http://") && a.jwks_ca_file.is_none()) =>
            {
                if u.parse::<http::Uri>().is_err() {
                    return Err(self.err(format!("{key}.jwks_url"), format!("{u:?} is not a URL")));
                }
                Some(JwksSource::Url {
                    url: u.clone(),
                    ca_file: a.jwks_ca_file.as_deref().map(|f| self.path(f)),
                })
            }
            (None, Some(u)) if u.starts_with("http://") => {
                return Err(self.err(
                    format!("{key}.jwks_ca_file"),
                    format!("only applies to an https:// jwks_url, not {u:?}"),
                ))
            }
            (None, Some(u)) => {
                return Err(self.err(
                    format!("{key}.jwks_url"),
                    format!("{u:?} is not an http:// or https:// URL"),
                ))
            }
            (None, None) => None,
        };
        let public_pem = match (&a.public_key_file, &a.public_key) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    format!("{key}.public_key"),
                    "give public_key_file or public_key, not both",
                ))
            }
            (Some(file), None) => {
                let path = self.path(file);
                Some(std::fs::read(&path).map_err(|e| {
                    self.err(
                        format!("{key}.public_key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?)
            }
            (None, Some(pem)) if pem.contains("-----BEGIN") => Some(pem.as_bytes().to_vec()),
            (None, Some(_)) => {
                return Err(self.err(
                    format!("{key}.public_key"),
                    "is not PEM text (-----BEGIN PUBLIC KEY----- ...)",
                ))
            }
            (None, None) => None,
        };
        let key_source = match (hmac, &a.secret, public_pem) {
            (_, None, None) if jwks.is_some() => JwtKey::Jwks {
                source: jwks.expect("checked above"),
                min_refresh: self.duration(
                    &format!("{key}.jwks_min_refresh"),
                    &a.jwks_min_refresh,
                    Duration::from_secs(30),
                )?,
            },
            (true, Some(secret), None) if !secret.is_empty() && jwks.is_none() => {
                JwtKey::Secret(secret.as_bytes().to_vec())
            }
            (false, None, Some(pem)) if jwks.is_none() => JwtKey::PublicPem(pem),
            (true, _, _) => {
                return Err(self.err(
                    format!("{key}.secret"),
                    format!(
                        "{} needs a non-empty secret and no public_key_file",
                        algorithm_name
                    ),
                ))
            }
            (false, _, _) => {
                return Err(self.err(
                    format!("{key}.public_key_file"),
                    format!(
                    "{} needs exactly one of public_key_file, public_key, jwks_file, jwks_url, and no secret",
                    algorithm_name
                ),
                ))
            }
        };
        Ok(JwtConfig {
            cookie: a.cookie.clone(),
            algorithm,
            key: key_source,
            issuer: a.issuer.clone(),
            audiences: a.audiences.clone().unwrap_or_default(),
            leeway: match &a.leeway {
                Some(_) => self.duration(&format!("{key}.leeway"), &a.leeway, Duration::ZERO)?,
                None => Duration::from_secs(30),
            },
        })
    }

    fn websocket(&self, w: &file::WebSocketFile) -> Result<WebSocketConfig, ConfigError> {
        let d = WebSocketConfig::default();
        let positive = |key: &str,
                        v: Option<usize>,
                        default: usize|
         -> Result<usize, ConfigError> {
            match v {
                Some(0) => Err(self.err(format!("websocket.{key}"), "must be greater than zero")),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        if w.token_cookie.is_some() {
            return Err(self.err(
                "websocket.token_cookie",
                "was replaced by the authenticator's `cookie` option, which reads the cookie for every protocol",
            ));
        }
        let allowed_origins = w.allowed_origins.clone().unwrap_or_default();
        for (i, o) in allowed_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(self.err(
                    format!("websocket.allowed_origins[{i}]"),
                    format!("{o:?} is not an origin like \"https://app.example.com\" or \"*\""),
                ));
            }
        }
        Ok(WebSocketConfig {
            ping_interval: self.duration(
                "websocket.ping_interval",
                &w.ping_interval,
                d.ping_interval,
            )?,
            idle_timeout: self.duration(
                "websocket.idle_timeout",
                &w.idle_timeout,
                d.idle_timeout,
            )?,
            max_message_bytes: positive(
                "max_message_bytes",
                w.max_message_bytes,
                d.max_message_bytes,
            )?,
            max_in_flight: positive("max_in_flight", w.max_in_flight, d.max_in_flight)?,
            max_calls: positive("max_calls", w.max_calls, d.max_calls)?,
            allowed_origins,
            token_query_param: w.token_query_param.clone(),
            calls_per_second: self.connection_rate("calls_per_second", w.calls_per_second)?,
            messages_per_second: self
                .connection_rate("messages_per_second", w.messages_per_second)?,
        })
    }

    fn connection_rate(
        &self,
        key: &str,
        rate: Option<f64>,
    ) -> Result<Option<ConnectionRate>, ConfigError> {
        match rate {
            None => Ok(None),
            Some(r) if r > 0.0 && r.is_finite() => Ok(Some(ConnectionRate {
                rate: r,
                burst: r.ceil().max(1.0) as u32,
            })),
            Some(_) => Err(self.err(
                format!("websocket.{key}"),
                "must be a number greater than zero",
            )),
        }
    }

    fn cors(&self, key: &str, c: &file::CorsFile) -> Result<CorsPolicy, ConfigError> {
        if c.allowed_origins.is_empty() {
            return Err(self.err(
                format!("{key}.allowed_origins"),
                "needs at least one origin, or \"*\"",
            ));
        }
        for (i, o) in c.allowed_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(self.err(
                    format!("{key}.allowed_origins[{i}]"),
                    format!("{o:?} is not an origin like \"https://app.example.com\" or \"*\""),
                ));
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
            max_age: self.duration(
                &format!("{key}.max_age"),
                &c.max_age,
                Duration::from_secs(600),
            )?,
            allow_credentials,
        })
    }

    fn metadata(&self, m: &file::MetadataFile) -> Result<MetadataConfig, ConfigError> {
        let mut out = MetadataConfig::default();
        if let Some(list) = &m.forward {
            out.forward.clear();
            out.forward_prefixes.clear();
            for (i, name) in list.iter().enumerate() {
                let lower = name.to_ascii_lowercase();
                let bare = lower.strip_suffix('*').unwrap_or(&lower);
                if http::HeaderName::from_bytes(bare.as_bytes()).is_err() && !bare.is_empty() {
                    return Err(self.err(
                        format!("metadata.forward[{i}]"),
                        format!("{name:?} is not a header name"),
                    ));
                }
                if bare.starts_with("grpc-")
                    || bare == "te"
                    || bare == "content-type"
                    || bare == "host"
                {
                    return Err(self.err(
                        format!("metadata.forward[{i}]"),
                        format!("{name:?} is set by the gateway itself and cannot be forwarded"),
                    ));
                }
                if lower.ends_with('*') {
                    out.forward_prefixes.push(bare.to_owned());
                } else {
                    out.forward.insert(lower);
                }
            }
        }
        if let Some(h) = m.honour_client_timeout {
            out.honour_client_timeout = h;
        }
        Ok(out)
    }
}

fn decode_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests;
