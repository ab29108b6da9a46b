//! `[server]`: the listening sockets, their limits, TLS on the main port,
//! and how long a shutdown drains.

use crate::config::{file, ConfigError, Validator};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Client connections open at once from one IP address; more are closed.
    pub max_connections_per_ip: usize,
    /// Longest request target (path and query) of an HTTP/1.1 request.
    pub max_request_target_bytes: usize,
    /// Most header fields in an HTTP/1.1 request.
    pub max_header_count: usize,
    /// Longest wait for the next piece of a request body being read whole.
    pub body_read_timeout: Duration,
    /// Longest wait for a backend's response headers once a call is sent.
    pub upstream_header_timeout: Duration,
    /// Longest a stream may go without a message, in either direction.
    pub stream_idle_timeout: Duration,
    /// HTTP/2: streams a client may open and reset before the gateway
    /// accepts them; past it the connection is closed (rapid reset).
    pub http2_max_pending_resets: usize,
    /// HTTP/2: streams the gateway may reset for a client's stream errors
    /// before it closes the connection.
    pub http2_max_error_resets: usize,
    /// HTTP/2: initial flow-control window of each stream.
    pub http2_stream_window_bytes: u32,
    /// HTTP/2: initial flow-control window of a whole connection.
    pub http2_connection_window_bytes: u32,
    /// HTTP/2: reply bytes buffered per stream for a client that reads slowly.
    pub http2_max_send_buffer_bytes: usize,
}

/// The largest flow-control window HTTP/2 allows (RFC 9113 section 6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// The most `server.limits.max_connections` may be: past it a limit
/// limits nothing a process could hold open.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// The most `server.limits.max_header_count` may be: hyper sizes each
/// HTTP/1.1 request's header table by it.
pub const MAX_HEADER_COUNT: usize = 10_000;

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
            max_connections_per_ip: 1_000,
            max_request_target_bytes: 8 * 1024,
            max_header_count: 100,
            body_read_timeout: Duration::from_secs(30),
            upstream_header_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(300),
            http2_max_pending_resets: 20,
            http2_max_error_resets: 1024,
            http2_stream_window_bytes: 1 << 20,
            http2_connection_window_bytes: 1 << 20,
            http2_max_send_buffer_bytes: 400 * 1024,
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
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<crate::ingress::edge::forwarded::Cidr>,
}

/// The main port's certificate chain and key, as PEM bytes.
#[derive(Clone, PartialEq)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub cert_pem: Vec<u8>,
    /// Named in errors about the key.
    pub key_file: PathBuf,
    pub key_pem: Vec<u8>,
    /// Named in errors about the client CAs.
    pub client_ca_file: Option<PathBuf>,
    /// CAs whose client certificates are required (mutual TLS), as PEM.
    pub client_ca_pem: Option<Vec<u8>>,
    /// With a client CA: whether a client may connect without a certificate.
    pub client_cert_optional: bool,
}

impl fmt::Debug for ServerTls {
    // Never print the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

impl Validator<'_> {
    fn window(&self, key: &str, v: Option<i64>, default: u32) -> Result<u32, ConfigError> {
        match v {
            None => Ok(default),
            // Read as any TOML integer so a negative value or one past `u32`
            // gets this reason too, not the reader's "expected u32".
            Some(v) if (65_535..=i64::from(MAX_WINDOW)).contains(&v) => Ok(v as u32),
            Some(_) => Err(self.err(
                format!("server.limits.{key}"),
                format!("must be between 65535 and {MAX_WINDOW} (RFC 9113)"),
            )),
        }
    }

    pub(crate) fn server(&self, s: &file::ServerFile) -> Result<ServerConfig, ConfigError> {
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
        let at_most = |key: &str, v: usize, max: usize, why: &str| {
            if v > max {
                return Err(self.err(
                    format!("server.limits.{key}"),
                    format!("{v} is over the most allowed, {max}: {why}"),
                ));
            }
            Ok(v)
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
            max_grpc_message_bytes: match positive(
                "max_grpc_message_bytes",
                l.max_grpc_message_bytes,
                d.max_grpc_message_bytes,
            )? {
                // A message's length prefix is 32 bits: a larger bound
                // would promise what no gRPC frame can carry.
                v if v as u64 > u64::from(u32::MAX) => {
                    return Err(self.err(
                        "server.limits.max_grpc_message_bytes",
                        format!("{v} is more than a gRPC message's 32-bit length prefix can say (at most 4294967295)"),
                    ))
                }
                v => v,
            },
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
            max_connections: at_most(
                "max_connections",
                positive("max_connections", l.max_connections, d.max_connections)?,
                MAX_CONNECTIONS,
                "more connections than a process has file descriptors for",
            )?,
            max_connections_per_ip: positive(
                "max_connections_per_ip",
                l.max_connections_per_ip,
                d.max_connections_per_ip,
            )?,
            max_request_target_bytes: positive(
                "max_request_target_bytes",
                l.max_request_target_bytes,
                d.max_request_target_bytes,
            )?,
            max_header_count: at_most(
                "max_header_count",
                positive("max_header_count", l.max_header_count, d.max_header_count)?,
                MAX_HEADER_COUNT,
                "each HTTP/1.1 request's header table is sized by it",
            )?,
            body_read_timeout: self.duration(
                crate::config::BODY_READ_TIMEOUT,
                &l.body_read_timeout,
                d.body_read_timeout,
            )?,
            upstream_header_timeout: self.duration(
                crate::config::UPSTREAM_HEADER_TIMEOUT,
                &l.upstream_header_timeout,
                d.upstream_header_timeout,
            )?,
            stream_idle_timeout: self.duration(
                crate::config::STREAM_IDLE_TIMEOUT,
                &l.stream_idle_timeout,
                d.stream_idle_timeout,
            )?,
            http2_max_pending_resets: positive(
                "http2_max_pending_resets",
                l.http2_max_pending_resets,
                d.http2_max_pending_resets,
            )?,
            http2_max_error_resets: positive(
                "http2_max_error_resets",
                l.http2_max_error_resets,
                d.http2_max_error_resets,
            )?,
            http2_stream_window_bytes: self.window(
                "http2_stream_window_bytes",
                l.http2_stream_window_bytes,
                d.http2_stream_window_bytes,
            )?,
            http2_connection_window_bytes: self.window(
                "http2_connection_window_bytes",
                l.http2_connection_window_bytes,
                d.http2_connection_window_bytes,
            )?,
            http2_max_send_buffer_bytes: positive(
                "http2_max_send_buffer_bytes",
                l.http2_max_send_buffer_bytes,
                d.http2_max_send_buffer_bytes,
            )?,
        };
        if limits.http2_max_send_buffer_bytes > u32::MAX as usize {
            return Err(self.err(
                "server.limits.http2_max_send_buffer_bytes",
                format!("must be at most {}", u32::MAX),
            ));
        }
        if limits.max_header_bytes < 8192 {
            return Err(self.err("server.limits.max_header_bytes", "must be at least 8192"));
        }
        // Below 256 bytes common method paths no longer fit, and their
        // calls would all be 414s; past 65534 the HTTP library refuses
        // the request before the gateway sees it, whatever the limit says.
        if !(256..=65534).contains(&limits.max_request_target_bytes) {
            return Err(self.err(
                "server.limits.max_request_target_bytes",
                format!(
                    "{} is out of range: from 256 (a method's path must fit) to 65534 (a longer target never reaches the gateway)",
                    limits.max_request_target_bytes
                ),
            ));
        }
        let tls = match &s.tls {
            None => None,
            Some(t) => {
                let read = |key: &str, file: &str| {
                    let path = self.path(file);
                    crate::config::read_file(&path).map_err(|e| {
                        self.err(
                            format!("server.tls.{key}"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })
                };
                let client_cert_optional = match (t.client_cert.as_deref(), &t.client_ca_file) {
                    (None | Some("required"), _) => false,
                    (Some("optional"), Some(_)) => true,
                    (Some("optional"), None) => {
                        return Err(self.err(
                            "server.tls.client_cert",
                            "needs client_ca_file: the CAs that sign the client certificates",
                        ))
                    }
                    (Some(other), _) => {
                        return Err(self.err(
                            "server.tls.client_cert",
                            format!("{other:?} is not one of \"required\", \"optional\""),
                        ))
                    }
                };
                Some(ServerTls {
                    client_cert_optional,
                    cert_file: self.path(&t.cert_file),
                    cert_pem: read("cert_file", &t.cert_file)?,
                    key_file: self.path(&t.key_file),
                    key_pem: read("key_file", &t.key_file)?,
                    client_ca_file: t.client_ca_file.as_deref().map(|f| self.path(f)),
                    client_ca_pem: t
                        .client_ca_file
                        .as_deref()
                        .map(|f| read("client_ca_file", f))
                        .transpose()?,
                })
            }
        };
        let listen = self.addr("server.listen", &s.listen)?;
        let admin = s
            .admin
            .as_deref()
            .map(|a| self.addr("server.admin", a))
            .transpose()?;
        // Caught here so that `check` refuses it too; a port in use by
        // another process is found only by `serve`, when it binds.
        let overlaps =
            |a: SocketAddr| a.port() != 0 && a.port() == listen.port() && same_socket(a, listen);
        if let Some(a) = admin.filter(|a| overlaps(*a)) {
            return Err(self.err(
                "server.admin",
                format!(
                    "{a} is the port server.listen ({listen}) takes; the admin port needs its own"
                ),
            ));
        }
        Ok(ServerConfig {
            tls,
            watch_files: s.watch_files.unwrap_or(true),
            trusted_proxies: s
                .trusted_proxies
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| {
                    crate::ingress::edge::forwarded::Cidr::parse(c)
                        .map_err(|e| self.err(format!("server.trusted_proxies[{i}]"), e))
                })
                .collect::<Result<_, _>>()?,
            // Zero: connections are cut at once.
            drain_timeout: self.duration_or_zero(
                "server.drain_timeout",
                &s.drain_timeout,
                Duration::from_secs(30),
            )?,
            listen,
            admin,
            limits,
        })
    }
}

/// Whether two addresses on one port would take the same socket: the same
/// address, `0.0.0.0` and any IPv4 address, or `[::]` (which on Linux
/// takes IPv4 too, unless the host sets `bindv6only`) and anything.
/// `0.0.0.0` and an IPv6 address are two sockets. An IPv4-mapped address
/// (`[::ffff:127.0.0.1]`) takes the IPv4 address's socket.
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |s: SocketAddr| SocketAddr::new(s.ip().to_canonical(), s.port());
    let (a, b) = (canonical(a), canonical(b));
    let v6_any = |s: SocketAddr| s.is_ipv6() && s.ip().is_unspecified();
    let v4_any_with_v4 =
        |x: SocketAddr, y: SocketAddr| x.is_ipv4() && x.ip().is_unspecified() && y.is_ipv4();
    a.ip() == b.ip() || v6_any(a) || v6_any(b) || v4_any_with_v4(a, b) || v4_any_with_v4(b, a)
}

#[cfg(test)]
mod overlap_tests {
    use super::same_socket;

    #[test]
    fn an_admin_port_overlaps_the_listener_only_where_one_socket_would_take_both() {
        let s = |t: &str| t.parse().unwrap();
        for (a, b, same) in [
            ("127.0.0.1:80", "127.0.0.1:80", true),
            ("0.0.0.0:80", "127.0.0.1:80", true),
            ("[::]:80", "127.0.0.1:80", true),
            ("[::]:80", "[::1]:80", true),
            ("0.0.0.0:80", "[::1]:80", false),
            ("127.0.0.1:80", "[::1]:80", false),
            ("127.0.0.1:80", "127.0.0.2:80", false),
            ("[::ffff:127.0.0.1]:80", "127.0.0.1:80", true),
            ("[::ffff:0.0.0.0]:80", "127.0.0.1:80", true),
            ("[::ffff:127.0.0.1]:80", "[::1]:80", false),
        ] {
            assert_eq!(same_socket(s(a), s(b)), same, "{a} {b}");
            assert_eq!(same_socket(s(b), s(a)), same, "{b} {a}");
        }
    }
}
