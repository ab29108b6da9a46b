//! `[upstreams.NAME]`: where a backend's instances are, how calls are
//! spread over them, and how the gateway protects itself and them.

use crate::config::{file, ConfigError, Validator};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Grpc,
    /// JSON over HTTP/1.1, called by each method's google.api.http binding.
    Http,
}

/// One instance and its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightedAddr {
    /// `host:port`.
    pub address: String,
    pub weight: u32,
}

/// Where the endpoints come from; every source can change at run time
/// except the static list.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointSource {
    Static(Vec<WeightedAddr>),
    /// Every A/AAAA record of `host`, on `port`, re-resolved every `refresh`.
    Dns {
        host: String,
        port: u16,
        refresh: Duration,
    },
    /// A file of `host:port [weight]` lines, re-read when it changes.
    File {
        path: PathBuf,
        initial: Vec<WeightedAddr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum HashKey {
    Header(http::HeaderName),
    /// A field of the request message (path and query parameters land in
    /// fields too), by its dotted proto name.
    Field(String),
    Principal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    ConsistentHash(HashKey),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    /// Streams one HTTP/2 connection carries before another is opened.
    pub max_streams_per_connection: usize,
    pub max_connections_per_endpoint: usize,
    /// HTTP/2 pings to the backend while calls are open: none unless
    /// configured. Stock gRPC servers (grpc-core, grpc-go) answer pings
    /// more often than every 5 minutes on a connection without data with
    /// `GOAWAY` ("too many pings"), ending every quiet stream on it, so
    /// pinging is the operator's choice, made with the backend's permission.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub service: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    /// Below this share of available endpoints, all of them are used.
    pub panic_threshold_percent: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    pub max_retries: u32,
    pub retry_on: Vec<tonic::Code>,
    pub budget_percent: u32,
    pub min_retries_per_second: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub idempotent_methods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    pub max_requests: usize,
    pub max_pending: usize,
}

/// How the gateway's connections to an upstream are secured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamTls {
    /// CAs trusted besides the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// The gateway's own certificate chain and key, for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// SHA-256 of the files' contents when the config was read: a reload
    /// after a rotation (same paths, new certificates) sees a changed
    /// upstream and connects with the new files.
    pub files_sha256: [u8; 32],
}

impl UpstreamTls {
    /// The files named, with the digest of their contents now.
    pub fn new(ca_file: Option<PathBuf>, identity: Option<(PathBuf, PathBuf)>) -> UpstreamTls {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let files = ca_file
            .iter()
            .chain(identity.iter().flat_map(|(c, k)| [c, k]));
        for f in files {
            let contents = crate::config::read_file(f).unwrap_or_default();
            h.update((contents.len() as u64).to_le_bytes());
            h.update(contents);
        }
        UpstreamTls {
            ca_file,
            identity,
            files_sha256: h.finalize().into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub endpoints: EndpointSource,
    pub connect_timeout: Duration,
    /// TLS to the endpoints; `None` for plain text.
    pub tls: Option<UpstreamTls>,
    pub balance: Balance,
    pub connection: ConnectionConfig,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier: OutlierConfig,
    pub retry: RetryConfig,
    pub circuit_breaker: CircuitBreakerConfig,
    /// The most header bytes (name, value and 32 bytes each) a call's
    /// metadata may take to a backend: past what a backend accepts, HTTP/2
    /// servers refuse a header block by failing the whole connection, and
    /// with it every other call on it.
    pub max_request_header_bytes: usize,
    /// A JSON/HTTP upstream's connection carries the next call once a
    /// reply ends (HTTP/1.1 keep-alive); `false`: one call a connection.
    pub reuse_connections: bool,
}

/// `max_request_header_bytes` unless set: what common gRPC servers take
/// (tonic and hyper 16 KiB, grpc-java 8 KiB of metadata), in one HTTP/2
/// frame.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 16 * 1024;

impl UpstreamConfig {
    /// Addresses known at startup, for reflection and the reachability probe.
    pub fn seed_addresses(&self) -> Vec<String> {
        match &self.endpoints {
            EndpointSource::Static(list) | EndpointSource::File { initial: list, .. } => {
                list.iter().map(|e| e.address.clone()).collect()
            }
            EndpointSource::Dns { host, port, .. } => vec![format!("{host}:{port}")],
        }
    }

    /// The name a TLS backend's certificate is verified for (and sent as
    /// SNI) when it is not the host an endpoint's address is written with:
    /// a `dns` upstream connects to each address its name resolves to, but
    /// the backends' certificates name the name.
    pub fn tls_server_name(&self) -> Option<&str> {
        match &self.endpoints {
            EndpointSource::Dns { host, .. } => Some(host),
            _ => None,
        }
    }

    /// The `:authority` a gRPC call (the `Host` a JSON/HTTP call) to any
    /// endpoint carries when it is not the endpoint's own address: a `dns`
    /// upstream's name and port, as a client of that name sends it (and as
    /// a proxy or virtual host in front of the backends routes on, beside
    /// the SNI).
    pub fn authority(&self) -> Option<String> {
        match &self.endpoints {
            EndpointSource::Dns { host, port, .. } => Some(format!("{host}:{port}")),
            _ => None,
        }
    }
}

/// The names of gRPC codes as written in configs and the spec.
pub fn code_by_name(name: &str) -> Option<tonic::Code> {
    use tonic::Code::*;
    Some(match name.to_ascii_uppercase().as_str() {
        "CANCELLED" => Cancelled,
        "UNKNOWN" => Unknown,
        "INVALID_ARGUMENT" => InvalidArgument,
        "DEADLINE_EXCEEDED" => DeadlineExceeded,
        "NOT_FOUND" => NotFound,
        "ALREADY_EXISTS" => AlreadyExists,
        "PERMISSION_DENIED" => PermissionDenied,
        "RESOURCE_EXHAUSTED" => ResourceExhausted,
        "FAILED_PRECONDITION" => FailedPrecondition,
        "ABORTED" => Aborted,
        "OUT_OF_RANGE" => OutOfRange,
        "UNIMPLEMENTED" => Unimplemented,
        "INTERNAL" => Internal,
        "UNAVAILABLE" => Unavailable,
        "DATA_LOSS" => DataLoss,
        "UNAUTHENTICATED" => Unauthenticated,
        _ => return None,
    })
}

/// What `host:port` means, for errors.
const HOST_PORT: &str = "(a host name of letters, digits, '-', '_' and dots, no label of it beginning or ending with '-', its last label not all digits; an IPv4 address in four dotted numbers of 0-255; or a [bracketed] IPv6 one; a port 1-65535 without leading zeros)";

/// Parses `host:port`; the host may be a name or an IP (`[v6]` bracketed).
/// A name is what DNS and a URI take (letters, digits, `-`, `_` and dots
/// between labels); a port is written without leading zeros, so that one
/// endpoint has one spelling.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    if port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        // A host whose last label is all digits is read as an IPv4
        // address by URL parsers and resolvers: only the dotted quad is
        // taken, since the shorthand (`1.2.3`, which inet_aton reads as
        // 1.2.0.3) is ambiguous and `999.1.1.1` is none. A name's labels
        // neither begin nor end with `-` (RFC 1123).
        None if host
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) =>
        {
            host.parse::<std::net::Ipv4Addr>().is_ok()
        }
        None => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        }
    };
    host_ok.then(|| (host.to_owned(), port))
}

/// Where `address` is in `list` already (host names compare without case).
fn listed(list: &[WeightedAddr], address: &str) -> Option<usize> {
    list.iter()
        .position(|w| w.address.eq_ignore_ascii_case(address))
}

/// Reads an endpoints file: `host:port [weight]` per line, `#` comments.
pub fn parse_endpoints_file(text: &str) -> Result<Vec<WeightedAddr>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let address = words.next().unwrap_or_default();
        if parse_host_port(address).is_none() {
            return Err(format!(
                "line {}: {address:?} is not \"host:port\" {HOST_PORT}",
                n + 1
            ));
        }
        let weight = match words.next() {
            None => 1,
            Some(w) => match w.parse::<u32>() {
                Ok(w) if (1..=1000).contains(&w) => w,
                _ => return Err(format!("line {}: weight {w:?} is not 1..1000", n + 1)),
            },
        };
        if let Some(extra) = words.next() {
            return Err(format!(
                "line {}: {extra:?} after the weight; a line is \"host:port [weight]\"",
                n + 1
            ));
        }
        if listed(&out, address).is_some() {
            return Err(format!(
                "line {}: {address:?} is listed already; give it a weight for a larger share",
                n + 1
            ));
        }
        out.push(WeightedAddr {
            address: address.to_owned(),
            weight,
        });
    }
    // An upstream needs an endpoint, as `endpoints = []` is refused; an
    // empty file is more often one caught mid-write than a wish to stop
    // serving, so it changes nothing.
    if out.is_empty() {
        return Err("lists no endpoint (an upstream needs at least one)".to_owned());
    }
    Ok(out)
}

/// The most retries one call may make (`retry.max_retries`).
pub const MAX_RETRIES: u32 = 10;

impl Validator<'_> {
    pub(crate) fn upstream(
        &self,
        name: &str,
        u: &file::UpstreamFile,
    ) -> Result<UpstreamConfig, ConfigError> {
        let key = format!("upstreams.{name}");
        let protocol = match u.protocol.as_str() {
            "grpc" => UpstreamProtocol::Grpc,
            "http" => UpstreamProtocol::Http,
            other => {
                return Err(self.err(
                    format!("{key}.protocol"),
                    format!("{other:?} is not one of \"grpc\", \"http\""),
                ))
            }
        };
        let endpoints = self.endpoint_source(&key, u)?;
        let dur =
            |k: &str, v: &Option<String>, d: Duration| self.duration(&format!("{key}.{k}"), v, d);
        let positive = |k: &str, v: Option<usize>, d: usize| match v {
            Some(0) => Err(self.err(format!("{key}.{k}"), "must be greater than zero")),
            Some(v) => Ok(v),
            None => Ok(d),
        };
        let balance = match (u.balance.as_deref(), &u.hash_key) {
            (None | Some("round_robin"), None) => Balance::RoundRobin,
            (Some("least_request"), None) => Balance::LeastRequest,
            (Some("consistent_hash"), Some(k)) => Balance::ConsistentHash(self.hash_key(&key, k)?),
            (Some("consistent_hash"), None) => {
                return Err(self.err(
                    format!("{key}.hash_key"),
                    "consistent_hash needs a hash_key: \"header:NAME\", \"field:NAME\" or \"principal\"",
                ))
            }
            (None | Some("round_robin" | "least_request"), Some(_)) => {
                return Err(self.err(
                    format!("{key}.hash_key"),
                    "only applies with balance = \"consistent_hash\"",
                ))
            }
            (Some(other), _) => {
                return Err(self.err(
                    format!("{key}.balance"),
                    format!("{other:?} is not one of \"round_robin\", \"least_request\", \"consistent_hash\""),
                ))
            }
        };
        let connection = ConnectionConfig {
            max_streams_per_connection: positive(
                "max_streams_per_connection",
                u.max_streams_per_connection,
                100,
            )?,
            max_connections_per_endpoint: positive(
                "max_connections_per_endpoint",
                u.max_connections_per_endpoint,
                4,
            )?,
            keepalive_interval: match (&u.keepalive_interval, &u.keepalive_timeout) {
                // Pings' answers are waited on only when pings are sent.
                (None, Some(_)) => {
                    return Err(self.err(
                        format!("{key}.keepalive_timeout"),
                        "only applies with keepalive_interval (no pings are sent without it)",
                    ))
                }
                (None, None) => None,
                (some, _) => Some(dur("keepalive_interval", some, Duration::ZERO)?),
            },
            keepalive_timeout: dur(
                "keepalive_timeout",
                &u.keepalive_timeout,
                Duration::from_secs(10),
            )?,
        };
        let health_check = match &u.health_check {
            None => None,
            Some(h) => {
                let k = format!("{key}.health_check");
                let threshold = |name: &str, v: Option<u32>| match v {
                    Some(0) => Err(self.err(format!("{k}.{name}"), "must be at least 1")),
                    Some(v) => Ok(v),
                    None => Ok(2),
                };
                let path = h.path.clone().unwrap_or_else(|| "/healthz".to_owned());
                if !path.starts_with('/') {
                    return Err(self.err(format!("{k}.path"), "must start with '/'"));
                }
                // Said here, not by every failed check at run time, which
                // would take each endpoint out of rotation.
                if let Some(why) = not_a_request_target(&path) {
                    return Err(self.err(
                        format!("{k}.path"),
                        format!("{path:?} is not a path to GET: {why}"),
                    ));
                }
                if protocol == UpstreamProtocol::Grpc && h.path.is_some() {
                    return Err(self.err(
                        format!("{k}.path"),
                        "gRPC upstreams are checked with grpc.health.v1; name a `service` instead",
                    ));
                }
                if protocol == UpstreamProtocol::Http && h.service.is_some() {
                    return Err(self.err(
                        format!("{k}.service"),
                        "JSON/HTTP upstreams are checked with a GET of a `path`; name a `path` instead",
                    ));
                }
                let interval = self.duration(
                    &format!("{k}.interval"),
                    &h.interval,
                    Duration::from_secs(5),
                )?;
                let timeout =
                    self.duration(&format!("{k}.timeout"), &h.timeout, Duration::from_secs(1))?;
                // A check still waiting when the next is due would pile up.
                if timeout > interval {
                    // A value not written is the default's: said so, with
                    // the way out, since the file has no such key to fix.
                    let written = humantime::format_duration(timeout);
                    let (subject, fix) = match h.timeout {
                        Some(_) => (written.to_string(), ""),
                        None => (
                            format!("the default timeout, {written},"),
                            "; set timeout to at most the interval",
                        ),
                    };
                    let interval_is = if h.interval.is_some() {
                        "the interval"
                    } else {
                        "the default interval"
                    };
                    return Err(self.err(
                        format!("{k}.timeout"),
                        format!(
                            "{subject} is longer than {interval_is} ({}): a check must end before the next starts{fix}",
                            humantime::format_duration(interval)
                        ),
                    ));
                }
                Some(HealthCheckConfig {
                    interval,
                    timeout,
                    healthy_threshold: threshold("healthy_threshold", h.healthy_threshold)?,
                    unhealthy_threshold: threshold("unhealthy_threshold", h.unhealthy_threshold)?,
                    service: h.service.clone().unwrap_or_default(),
                    path,
                })
            }
        };
        let o = u.outlier_detection.as_ref();
        let percent = |k: &str, v: Option<u32>, d: u32| match v {
            Some(p) if p > 100 => Err(self.err(format!("{key}.{k}"), "is a percentage, 0..100")),
            Some(p) => Ok(p),
            None => Ok(d),
        };
        let outlier = OutlierConfig {
            consecutive_failures: match o.and_then(|o| o.consecutive_failures) {
                Some(0) => {
                    return Err(self.err(
                        format!("{key}.outlier_detection.consecutive_failures"),
                        "must be at least 1",
                    ))
                }
                Some(n) => n,
                None => 5,
            },
            base_ejection_time: dur(
                "outlier_detection.base_ejection_time",
                &o.and_then(|o| o.base_ejection_time.clone()),
                Duration::from_secs(30),
            )?,
            max_ejection_percent: percent(
                "outlier_detection.max_ejection_percent",
                o.and_then(|o| o.max_ejection_percent),
                50,
            )?,
            panic_threshold_percent: percent(
                "outlier_detection.panic_threshold_percent",
                o.and_then(|o| o.panic_threshold_percent),
                50,
            )?,
        };
        let r = u.retry.as_ref();
        let mut retry_on = Vec::new();
        for (i, c) in r
            .and_then(|r| r.retry_on.clone())
            .unwrap_or_else(|| vec!["UNAVAILABLE".to_owned()])
            .iter()
            .enumerate()
        {
            retry_on.push(code_by_name(c).ok_or_else(|| {
                // OK is a code, but no failure to retry.
                let why = if c.eq_ignore_ascii_case("ok") {
                    format!("{c:?} is a success, not a failure to retry: name a failing code like \"UNAVAILABLE\"")
                } else {
                    format!("{c:?} is not a gRPC code name like \"UNAVAILABLE\"")
                };
                self.err(format!("{key}.retry.retry_on[{i}]"), why)
            })?);
        }
        let max_retries = r.and_then(|r| r.max_retries).unwrap_or(2);
        // Retries of one call beyond this only lengthen a failure: each
        // goes to another endpoint, and there are rarely more to try.
        if max_retries > MAX_RETRIES {
            return Err(self.err(
                format!("{key}.retry.max_retries"),
                format!("{max_retries} is more than {MAX_RETRIES}"),
            ));
        }
        let retry = RetryConfig {
            // Checked below, once both are read.
            max_retries,
            retry_on,
            budget_percent: percent("retry.budget_percent", r.and_then(|r| r.budget_percent), 20)?,
            min_retries_per_second: r.and_then(|r| r.min_retries_per_second).unwrap_or(10),
            // Zero: retries go at once.
            backoff_base: self.duration_or_zero(
                &format!("{key}.retry.backoff_base"),
                &r.and_then(|r| r.backoff_base.clone()),
                Duration::from_millis(25),
            )?,
            backoff_max: self.duration_or_zero(
                &format!("{key}.retry.backoff_max"),
                &r.and_then(|r| r.backoff_max.clone()),
                Duration::from_millis(250),
            )?,
            idempotent_methods: r.map(|r| r.idempotent_methods.clone()).unwrap_or_default(),
        };
        if retry.backoff_base > retry.backoff_max {
            let written = |f: fn(&crate::config::file::RetryFile) -> bool| r.is_some_and(f);
            let base = humantime::format_duration(retry.backoff_base);
            let subject = if written(|r| r.backoff_base.is_some()) {
                base.to_string()
            } else {
                format!("the default backoff_base, {base},")
            };
            let max_is = if written(|r| r.backoff_max.is_some()) {
                ""
            } else {
                "the default "
            };
            return Err(self.err(
                format!("{key}.retry.backoff_base"),
                format!(
                    "{subject} is longer than {max_is}backoff_max ({}): the first wait would already be over the longest",
                    humantime::format_duration(retry.backoff_max)
                ),
            ));
        }
        let c = u.circuit_breaker.as_ref();
        let circuit_breaker = CircuitBreakerConfig {
            max_requests: positive(
                "circuit_breaker.max_requests",
                c.and_then(|c| c.max_requests),
                10_000,
            )?,
            max_pending: positive(
                "circuit_breaker.max_pending",
                c.and_then(|c| c.max_pending),
                1_000,
            )?,
        };
        let readable = |k: &str, f: &str| {
            let path = self.path(f);
            std::fs::metadata(&path).map(|_| path.clone()).map_err(|e| {
                self.err(
                    format!("{key}.{k}"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })
        };
        let ca_file = u
            .tls_ca_file
            .as_deref()
            .map(|f| readable("tls_ca_file", f))
            .transpose()?;
        let identity = match (&u.tls_cert_file, &u.tls_key_file) {
            (Some(c), Some(k)) => {
                Some((readable("tls_cert_file", c)?, readable("tls_key_file", k)?))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err(
                    format!("{key}.tls_key_file"),
                    "is needed with tls_cert_file",
                ))
            }
            (None, Some(_)) => {
                return Err(self.err(
                    format!("{key}.tls_cert_file"),
                    "is needed with tls_key_file",
                ))
            }
        };
        let implied = ca_file.is_some() || identity.is_some();
        let tls = match (u.tls, implied) {
            (Some(false), true) => {
                return Err(self.err(format!("{key}.tls"), "is false, but TLS files are given"))
            }
            (Some(true), _) | (None, true) => Some(UpstreamTls::new(ca_file, identity)),
            (Some(false) | None, false) => None,
        };
        // The files are read as the egress will read them: what `serve`
        // would refuse, the config refuses, naming the key.
        if let Some(tls) = &tls {
            crate::egress::tls::upstream_config_by_key(tls)
                .map_err(|(k, e)| self.err(format!("{key}.{k}"), e))?;
        }
        Ok(UpstreamConfig {
            tls,
            name: name.to_owned(),
            protocol,
            endpoints,
            connect_timeout: dur(
                "connect_timeout",
                &u.connect_timeout,
                Duration::from_secs(2),
            )?,
            balance,
            connection,
            health_check,
            outlier,
            retry,
            circuit_breaker,
            reuse_connections: match (u.reuse_connections, protocol) {
                (Some(_), UpstreamProtocol::Grpc) => {
                    return Err(self.err(
                        format!("{key}.reuse_connections"),
                        "is for protocol = \"http\" upstreams: a gRPC upstream's HTTP/2 connections carry each call on its own stream",
                    ))
                }
                (reuse, _) => reuse.unwrap_or(true),
            },
            max_request_header_bytes: match u.max_request_header_bytes {
                Some(n) if n < 1024 => {
                    return Err(self.err(
                        format!("{key}.max_request_header_bytes"),
                        format!("is {n}; it must be at least 1024"),
                    ))
                }
                Some(n) => n,
                None => DEFAULT_MAX_REQUEST_HEADER_BYTES,
            },
        })
    }

    fn endpoint_source(
        &self,
        key: &str,
        u: &file::UpstreamFile,
    ) -> Result<EndpointSource, ConfigError> {
        match (&u.endpoints, &u.dns, &u.endpoints_file) {
            (Some(list), None, None) => {
                if list.is_empty() {
                    return Err(self.err(
                        format!("{key}.endpoints"),
                        "needs at least one \"host:port\"",
                    ));
                }
                let mut out = Vec::new();
                for (i, e) in list.iter().enumerate() {
                    let (address, weight) = match e {
                        file::EndpointFile::Address(a) => (a, 1),
                        file::EndpointFile::Weighted { address, weight } => (address, *weight),
                    };
                    if parse_host_port(address).is_none() {
                        return Err(self.err(
                            format!("{key}.endpoints[{i}]"),
                            format!("{address:?} is not \"host:port\" {HOST_PORT}"),
                        ));
                    }
                    if !(1..=1000).contains(&weight) {
                        return Err(
                            self.err(format!("{key}.endpoints[{i}].weight"), "must be 1..1000")
                        );
                    }
                    // Listed twice it would still be one endpoint, with one
                    // share: a weight says what a repeat would have meant.
                    if let Some(first) = listed(&out, address) {
                        return Err(self.err(
                            format!("{key}.endpoints[{i}]"),
                            format!("{address:?} is listed already (endpoints[{first}]); give it a weight for a larger share"),
                        ));
                    }
                    out.push(WeightedAddr {
                        address: address.clone(),
                        weight,
                    });
                }
                if u.dns_refresh.is_some() {
                    return Err(self.err(format!("{key}.dns_refresh"), "only applies with dns"));
                }
                Ok(EndpointSource::Static(out))
            }
            (None, Some(name), None) => {
                let (host, port) = parse_host_port(name).ok_or_else(|| {
                    self.err(
                        format!("{key}.dns"),
                        format!("{name:?} is not \"host:port\" {HOST_PORT}"),
                    )
                })?;
                Ok(EndpointSource::Dns {
                    host,
                    port,
                    refresh: self.duration(
                        &format!("{key}.dns_refresh"),
                        &u.dns_refresh,
                        Duration::from_secs(5),
                    )?,
                })
            }
            (None, None, Some(f)) => {
                // The file is watched, not resolved: a refresh period
                // would suggest it is polled at that pace.
                if u.dns_refresh.is_some() {
                    return Err(self.err(format!("{key}.dns_refresh"), "only applies with dns"));
                }
                let path = self.path(f);
                let text = crate::config::read_text(&path).map_err(|e| {
                    self.err(
                        format!("{key}.endpoints_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let initial = parse_endpoints_file(&text).map_err(|e| {
                    self.err(
                        format!("{key}.endpoints_file"),
                        format!("{}: {e}", path.display()),
                    )
                })?;
                Ok(EndpointSource::File { path, initial })
            }
            (None, None, None) => Err(self.err(
                format!("{key}.endpoints"),
                "needs endpoints, dns or endpoints_file",
            )),
            _ => Err(self.err(
                format!("{key}.endpoints"),
                "give exactly one of endpoints, dns, endpoints_file",
            )),
        }
    }

    fn hash_key(&self, key: &str, text: &str) -> Result<HashKey, ConfigError> {
        if text == "principal" {
            return Ok(HashKey::Principal);
        }
        if let Some(h) = text.strip_prefix("header:") {
            return http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| {
                    self.err(
                        format!("{key}.hash_key"),
                        format!("{h:?} is not a header name"),
                    )
                });
        }
        if let Some(f) = text.strip_prefix("field:") {
            if !f.is_empty() {
                return Ok(HashKey::Field(f.to_owned()));
            }
        }
        Err(self.err(
            format!("{key}.hash_key"),
            format!("{text:?} is not \"header:NAME\", \"field:NAME\" or \"principal\""),
        ))
    }
}

/// Why `path` cannot be sent as written on a request line, if it cannot:
/// only visible ASCII, no fragment, every `%` an escape.
fn not_a_request_target(path: &str) -> Option<&'static str> {
    let bytes = path.as_bytes();
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Some("it holds a space, a control or a non-ASCII character (percent-encode it: a space is %20)");
    }
    if path.contains('#') {
        return Some("a fragment (`#...`) is never sent to a server");
    }
    let bad_escape = bytes.iter().enumerate().any(|(i, b)| {
        *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Some("a `%` that is not followed by two hex digits");
    }
    None
}
