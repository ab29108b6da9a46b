//! The TOML file as written by users: plain serde structs with defaults.
//! Nothing here is validated beyond its type; see [`super::Config::from_file`].

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub server: ServerFile,
    #[serde(default)]
    pub json: JsonFile,
    #[serde(default)]
    pub metadata: MetadataFile,
    pub cors: Option<CorsFile>,
    #[serde(default)]
    pub websocket: WebSocketFile,
    #[serde(default)]
    pub descriptors: DescriptorsFile,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    pub authenticators: BTreeMap<String, AuthenticatorFile>,
    #[serde(default)]
    pub ext_authz: BTreeMap<String, ExtAuthzFile>,
    /// The Redis deployment instances share limits and cached replies through.
    pub redis: Option<RedisFile>,
    /// One line per call.
    pub access_log: Option<AccessLogFile>,
    /// OpenTelemetry traces.
    pub tracing: Option<TracingFile>,
    /// The OpenAPI description and the docs page.
    pub openapi: Option<OpenApiFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub aggregates: Vec<AggregateFile>,
}

/// A REST endpoint that fans out to several methods and merges the replies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateFile {
    /// HTTP method; GET when absent.
    pub method: Option<String>,
    /// Path template, `{name}` variables as in google.api.http.
    pub path: String,
    /// Default per-call timeout.
    pub timeout: Option<String>,
    /// "fail" (default): any failed call fails the whole request;
    /// "partial": successful replies plus an `errors` object.
    pub on_error: Option<String>,
    pub calls: Vec<AggregateCallFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateCallFile {
    /// Key of this call's reply in the merged object.
    pub name: String,
    /// `package.Service/Method` (or `package.Service.Method`).
    pub method: String,
    /// The request message as JSON, with `{path.x}`, `{query.x}`,
    /// `{body.x}` and `{call.field}` references.
    #[serde(default)]
    pub request: Option<toml::Table>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: String,
    pub admin: Option<String>,
    pub tls: Option<TlsFile>,
    pub drain_timeout: Option<String>,
    pub watch_files: Option<bool>,
    pub trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    pub limits: LimitsFile,
}

/// TLS on the main port: a certificate chain and its private key (PEM).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_file: String,
    pub key_file: String,
    /// When set, clients must present a certificate signed by these CAs.
    pub client_ca_file: Option<String>,
    /// "required" (default with a client CA) or "optional": a client without
    /// a certificate is served, and routes decide (a `client_cert` authenticator).
    pub client_cert: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_concurrent_streams: Option<u32>,
    pub header_read_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub max_request_body_bytes: Option<usize>,
    pub max_grpc_message_bytes: Option<usize>,
    pub idle_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_request_target_bytes: Option<usize>,
    pub max_header_count: Option<usize>,
    pub body_read_timeout: Option<String>,
    pub upstream_header_timeout: Option<String>,
    pub stream_idle_timeout: Option<String>,
    pub http2_max_pending_resets: Option<usize>,
    pub http2_max_error_resets: Option<usize>,
    pub http2_stream_window_bytes: Option<i64>,
    pub http2_connection_window_bytes: Option<i64>,
    pub http2_max_send_buffer_bytes: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFile {
    pub emit_unpopulated: Option<bool>,
    pub use_proto_names: Option<bool>,
    pub enums_as_numbers: Option<bool>,
    pub reject_unknown_fields: Option<bool>,
    pub unknown_query_params: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataFile {
    pub forward: Option<Vec<String>>,
    pub honour_client_timeout: Option<bool>,
    /// "drop" (default) or "allow".
    pub headers_with_underscores: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorsFile {
    #[serde(default)]
    pub sets: Vec<String>,
    #[serde(default)]
    pub proto_paths: Vec<String>,
    #[serde(default)]
    pub protos: Vec<String>,
    #[serde(default)]
    pub reflect: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Static endpoints: "host:port" or { address, weight }.
    pub endpoints: Option<Vec<EndpointFile>>,
    /// A DNS name ("host:port") whose A/AAAA records are the endpoints.
    pub dns: Option<String>,
    pub dns_refresh: Option<String>,
    /// A file listing endpoints, one "host:port [weight]" per line, re-read when it changes.
    pub endpoints_file: Option<String>,
    pub connect_timeout: Option<String>,
    /// TLS to every endpoint, verified against the built-in roots.
    pub tls: Option<bool>,
    /// Extra CA certificates (PEM) for the endpoints' certificates; implies `tls`.
    pub tls_ca_file: Option<String>,
    /// A client certificate chain and key (PEM) for endpoints that require
    /// mutual TLS; implies `tls`.
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// "round_robin" (default), "least_request" or "consistent_hash".
    pub balance: Option<String>,
    /// For consistent_hash: "header:NAME", "field:path.in.request" or "principal".
    pub hash_key: Option<String>,
    pub max_streams_per_connection: Option<usize>,
    pub max_connections_per_endpoint: Option<usize>,
    pub keepalive_interval: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub health_check: Option<HealthCheckFile>,
    pub outlier_detection: Option<OutlierFile>,
    pub retry: Option<RetryFile>,
    pub circuit_breaker: Option<CircuitBreakerFile>,
    /// The most header bytes a call sends the backend (name, value and 32
    /// bytes each).
    pub max_request_header_bytes: Option<usize>,
    /// JSON/HTTP upstreams: keep a connection open for the next call.
    pub reuse_connections: Option<bool>,
}

#[derive(Debug, Clone)]
pub enum EndpointFile {
    Address(String),
    Weighted { address: String, weight: u32 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedEndpointFile {
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

/// An endpoint's weight when none is given.
fn one() -> u32 {
    1
}

/// By hand rather than `untagged`, so that a mistake inside a table (a
/// misspelt key, a weight in quotes) is named as such instead of "matched
/// no variant".
impl<'de> Deserialize<'de> for EndpointFile {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = EndpointFile;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"host:port\" or a table { address = \"host:port\", weight = N }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EndpointFile, E> {
                Ok(EndpointFile::Address(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EndpointFile, A::Error> {
                let w = WeightedEndpointFile::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(EndpointFile::Weighted {
                    address: w.address,
                    weight: w.weight,
                })
            }
        }
        d.deserialize_any(Shape)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    /// gRPC upstreams: the service name asked of grpc.health.v1 ("" = the server).
    pub service: Option<String>,
    /// HTTP upstreams: the path that must answer 2xx.
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierFile {
    pub consecutive_failures: Option<u32>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_percent: Option<u32>,
    pub panic_threshold_percent: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub max_retries: Option<u32>,
    /// gRPC code names, e.g. ["UNAVAILABLE", "RESOURCE_EXHAUSTED"].
    pub retry_on: Option<Vec<String>>,
    pub budget_percent: Option<u32>,
    pub min_retries_per_second: Option<u32>,
    pub backoff_base: Option<String>,
    pub backoff_max: Option<String>,
    /// Methods (simple or full names) to treat as idempotent besides those
    /// marked in the schema.
    #[serde(default)]
    pub idempotent_methods: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerFile {
    pub max_requests: Option<usize>,
    pub max_pending: Option<usize>,
}

fn default_protocol() -> String {
    "grpc".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub grpc_service: String,
    pub upstream: String,
    /// Only these methods of the service (simple names); all when absent.
    pub methods: Option<Vec<String>>,
    pub auto_mapping: Option<bool>,
    pub timeout: Option<String>,
    pub json: Option<JsonFile>,
    pub cors: Option<CorsFile>,
    /// google.api.http rules by method name, replacing the schema's.
    pub http_rules: Option<BTreeMap<String, HttpRuleFile>>,
    /// The authenticator(s) a call on this route must pass: one name, or a
    /// list tried in order (the first whose credential the call carries decides).
    pub auth: Option<OneOrMany>,
    /// An external authorization service asked before each call.
    pub ext_authz: Option<String>,
    /// What the authenticated principal must hold.
    pub authorize: Option<AuthorizeFile>,
    pub rate_limit: Option<RateLimitFile>,
    pub cache: Option<CacheFile>,
    /// `false`: this route's calls write no access-log line.
    pub access_log: Option<bool>,
    /// `true`: its methods are Model Context Protocol tools at `/mcp`.
    pub mcp: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheFile {
    pub ttl: String,
    pub max_bytes: Option<u64>,
    /// Request headers (forwarded metadata) that make replies differ.
    #[serde(default)]
    pub vary: Vec<String>,
    /// Methods to cache besides GET-bound and NO_SIDE_EFFECTS ones.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Also keep replies in Redis, shared by every instance.
    pub shared: Option<bool>,
    /// Largest reply kept in Redis (default 1 MiB).
    pub shared_max_entry_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub requests_per_second: f64,
    /// Read as any whole number, so that 0 and -1 get the same message as
    /// 2^32 (`1 to 4294967295`), not a type error about another range.
    pub burst: Option<i64>,
    /// "client_ip" (default), "principal", "route" or "header:NAME".
    pub key: Option<String>,
    /// "local" (default: per instance) or "global" (the fleet, through Redis).
    pub scope: Option<String>,
}

/// `[redis]`: standalone (`url`) or a cluster (`cluster`, seed nodes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisFile {
    pub url: Option<String>,
    pub cluster: Option<Vec<String>>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    /// rediss://: trust only the CAs in this PEM file (a private PKI).
    pub tls_ca_file: Option<String>,
    pub connect_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub key_prefix: Option<String>,
    /// Instances assumed before any heartbeat is read.
    pub fleet_size: Option<u32>,
    pub heartbeat_interval: Option<String>,
    /// "strict" (default: no Redis, no start) or "degraded".
    pub on_start_failure: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeFile {
    /// Scopes the token must carry (in `scope`, `scp` or `scopes`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claims that must equal the value (or, for array claims, contain it).
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// Only these principals (API-key consumers or token subjects) pass.
    pub consumers: Option<Vec<String>>,
}

/// A JWT authenticator: one key, its algorithm, and the claims to check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorFile {
    #[serde(default = "default_auth_kind")]
    pub kind: String,
    /// JWT: the one algorithm accepted.
    pub algorithm: Option<String>,
    /// API keys: the header that carries the key.
    pub header: Option<String>,
    /// API keys: a query parameter that may carry the key instead.
    pub query_param: Option<String>,
    /// API keys: a TOML file of `consumer = "sha256 hex of the key"`.
    pub keys_file: Option<String>,
    /// Claims copied to the backend as metadata: `{ sub = "x-user-id" }`.
    pub forward_claims: Option<BTreeMap<String, String>>,
    /// Remove the credential before the call reaches the backend.
    pub strip_credential: Option<bool>,
    /// JWT: a cookie that may carry the token when no Authorization header does.
    pub cookie: Option<String>,
    /// Shared secret, for HS256/384/512.
    pub secret: Option<String>,
    /// Public key file (PEM), for RS*, PS*, ES* and EdDSA.
    pub public_key_file: Option<String>,
    /// The same, inline: PEM text in the config.
    pub public_key: Option<String>,
    /// A JWKS file: keys chosen by the token's `kid`.
    pub jwks_file: Option<String>,
    /// A JWKS URL (http), fetched at startup and again for an unknown `kid`.
    pub jwks_url: Option<String>,
    /// Extra CA certificates (PEM) to trust for an https `jwks_url`.
    pub jwks_ca_file: Option<String>,
    /// Least time between two refreshes of a JWKS (default 30s).
    pub jwks_min_refresh: Option<String>,
    /// Longest time a JWKS is used before it is read again (default 5m).
    pub jwks_max_age: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub leeway: Option<String>,
    /// Introspection: the RFC 7662 endpoint.
    pub introspection_url: Option<String>,
    /// Introspection: extra CA certificates (PEM) for an https endpoint.
    pub introspection_ca_file: Option<String>,
    /// Introspection: the gateway's client credentials.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<String>,
    pub client_secret_env: Option<String>,
    /// Introspection: "basic" (HTTP Basic, default) or "post" (form body).
    pub client_auth: Option<String>,
    /// Introspection: how long the endpoint may take.
    pub timeout: Option<String>,
    /// Introspection: longest time an active answer is kept (capped by `exp`).
    pub cache_ttl: Option<String>,
    /// Introspection: how long an inactive answer is kept.
    pub negative_cache_ttl: Option<String>,
    /// Introspection: most tokens kept in the cache.
    pub cache_max_entries: Option<u64>,
    /// Client certificates: where the principal comes from, first present wins.
    pub identity: Option<Vec<String>>,
}

/// A key that takes one string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[ext_authz.NAME]`: an external authorization service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzFile {
    /// Envoy's `envoy.service.auth.v3.Authorization/Check` at this address
    /// (`host:port`, or `http://` / `https://` URL of a gRPC server).
    pub grpc: Option<String>,
    /// Forward-auth: an HTTP(S) URL answering 2xx to allow.
    pub http: Option<String>,
    /// Extra CA certificates (PEM) for an https service.
    pub ca_file: Option<String>,
    pub timeout: Option<String>,
    /// "closed" (default: refuse with 503) or "open" (let the call through).
    pub failure_mode: Option<String>,
    /// Client headers sent to the service (besides the gateway's own).
    pub include_headers: Option<Vec<String>>,
    /// Forward-auth: headers of an allowing answer copied to the backend.
    pub upstream_headers: Option<Vec<String>>,
    /// Keep decisions per principal and method this long (off when absent).
    pub cache_ttl: Option<String>,
    pub cache_max_entries: Option<u64>,
}

fn default_auth_kind() -> String {
    "jwt".to_owned()
}

/// A google.api.http rule written in the config, for methods whose schema
/// has none (or to override it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRuleFile {
    pub get: Option<String>,
    pub put: Option<String>,
    pub post: Option<String>,
    pub delete: Option<String>,
    pub patch: Option<String>,
    /// A custom HTTP method: `custom = { kind = "HEAD", path = "/v1/x" }`.
    pub custom: Option<CustomPatternFile>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub response_body: String,
    #[serde(default)]
    pub additional_bindings: Vec<HttpRuleFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPatternFile {
    pub kind: String,
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    pub max_age: Option<String>,
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketFile {
    pub ping_interval: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_message_bytes: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub max_calls: Option<usize>,
    pub allowed_origins: Option<Vec<String>>,
    /// Replaced by the authenticator's `cookie`; kept to say so at load.
    pub token_cookie: Option<String>,
    pub token_query_param: Option<String>,
    pub calls_per_second: Option<f64>,
    pub messages_per_second: Option<f64>,
}

/// `[openapi]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenApiFile {
    pub serve: Option<bool>,
    pub title: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
}

/// `[access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    pub format: Option<String>,
    pub path: Option<String>,
    pub sample: Option<f64>,
}

/// `[tracing]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingFile {
    pub enabled: Option<bool>,
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    pub service_name: Option<String>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    pub sampler: Option<String>,
    pub sampler_arg: Option<f64>,
    pub queue_size: Option<usize>,
    pub batch_size: Option<usize>,
    pub export_timeout: Option<String>,
}
