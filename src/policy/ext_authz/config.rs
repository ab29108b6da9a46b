//! `[ext_authz.NAME]`: an external authorization service a route asks
//! before each call, over gRPC (Envoy's `Authorization/Check`) or HTTP
//! (forward-auth).

use crate::config::{file, ConfigError, Validator};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum ExtAuthzService {
    /// `envoy.service.auth.v3.Authorization/Check` at this `http(s)://` URI.
    Grpc(http::Uri),
    /// Forward-auth: a GET to this URL; 2xx allows.
    Http(http::Uri),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthzConfig {
    pub name: String,
    pub service: ExtAuthzService,
    /// Extra CA certificates for an https service.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// On a timeout or an unreachable service: let the call through (true)
    /// or refuse it with 503 / UNAVAILABLE (false, the default).
    pub fail_open: bool,
    /// Client headers (as the policy view holds them) sent to the service.
    pub include_headers: Vec<http::HeaderName>,
    /// Forward-auth: headers of an allowing answer copied to the backend.
    pub upstream_headers: Vec<http::HeaderName>,
    /// Decisions kept per principal and method; `None`: every call asks.
    pub cache_ttl: Option<Duration>,
    pub cache_max_entries: u64,
}

impl Validator<'_> {
    pub(crate) fn ext_authz(
        &self,
        name: &str,
        f: &file::ExtAuthzFile,
    ) -> Result<ExtAuthzConfig, ConfigError> {
        let key = format!("ext_authz.{name}");
        // What is wrong with a service URL, said of the text as written
        // (`written`, which for a gRPC address may lack the scheme the
        // parser was given).
        let url = |field: &str, u: &str, written: &str| -> Result<http::Uri, ConfigError> {
            let refuse = |why: String| Err(self.err(format!("{key}.{field}"), why));
            let not_url = |why: &str| format!("{written:?} is not {why}");
            let wanted = if field == "grpc" {
                "host:port or an http:// or https:// URL"
            } else {
                "an http:// or https:// URL"
            };
            let Ok(uri) = u.parse::<http::Uri>() else {
                return refuse(not_url(wanted));
            };
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                return refuse(not_url(wanted));
            }
            if let Some(problem) = crate::config::url_port_problem(&uri) {
                return refuse(format!("{written:?}: {problem}"));
            }
            // The parser drops a fragment, which no request carries: the
            // service would not be asked what the config seems to say.
            if u.contains('#') {
                return refuse(format!(
                    "{written:?} has a fragment (#...), which is never sent; remove it"
                ));
            }
            Ok(uri)
        };
        let service = match (&f.grpc, &f.http) {
            (Some(written), None) => {
                let g = if written.contains("://") {
                    written.clone()
                } else {
                    format!("http://{written}")
                };
                let uri = url("grpc", &g, written)?;
                if uri.port().is_none() {
                    return Err(self.err(
                        format!("{key}.grpc"),
                        format!("{written:?} names no port (host:port)"),
                    ));
                }
                // The service's method has a path of its own
                // (`/envoy.service.auth.v3.Authorization/Check`): a path
                // written here would be silently dropped.
                if !matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/" | "")) {
                    return Err(self.err(
                        format!("{key}.grpc"),
                        format!("{written:?} has a path, which a gRPC service address cannot take: give host:port, or a URL with only scheme, host and port"),
                    ));
                }
                ExtAuthzService::Grpc(uri)
            }
            (None, Some(h)) => ExtAuthzService::Http(url("http", h, h)?),
            (Some(_), Some(_)) => {
                return Err(self.err(format!("{key}.http"), "give grpc or http, not both"))
            }
            (None, None) => {
                return Err(self.err(
                    format!("{key}.grpc"),
                    "is required: the address of an Authorization/Check service (or http = \"URL\" for forward-auth)",
                ))
            }
        };
        let https = match &service {
            ExtAuthzService::Grpc(u) | ExtAuthzService::Http(u) => u.scheme_str() == Some("https"),
        };
        if f.ca_file.is_some() && !https {
            return Err(self.err(
                format!("{key}.ca_file"),
                "only applies to an https:// service",
            ));
        }
        let failure_mode = f.failure_mode.as_deref().unwrap_or("closed");
        let fail_open = match failure_mode {
            "closed" => false,
            "open" => true,
            other => {
                return Err(self.err(
                    format!("{key}.failure_mode"),
                    format!("{other:?} is not one of \"closed\", \"open\""),
                ))
            }
        };
        let headers = |field: &str, list: &Option<Vec<String>>| {
            list.iter()
                .flatten()
                .enumerate()
                .map(|(i, h)| {
                    http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                        self.err(
                            format!("{key}.{field}[{i}]"),
                            format!("{h:?} is not a header name"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let upstream_headers = headers("upstream_headers", &f.upstream_headers)?;
        if let Some(i) = upstream_headers
            .iter()
            .position(|h| !crate::headers::is_grpc_key(h))
        {
            return Err(self.err(
                format!("{key}.upstream_headers[{i}]"),
                crate::headers::not_a_grpc_key(upstream_headers[i].as_str()),
            ));
        }
        if !upstream_headers.is_empty() && matches!(service, ExtAuthzService::Grpc(_)) {
            return Err(self.err(
                format!("{key}.upstream_headers"),
                "only applies to forward-auth (http = \"...\"); a gRPC service adds headers in its OkHttpResponse",
            ));
        }
        if let Some(i) = upstream_headers
            .iter()
            .position(|h| *h == crate::ingress::edge::request_id::HEADER)
        {
            return Err(self.err(
                format!("{key}.upstream_headers[{i}]"),
                "x-request-id is the gateway's: the id the client gets back and the access log keeps",
            ));
        }
        // Zero, like no `cache_ttl`: every call is asked about.
        let cache_ttl = Some(self.duration_or_zero(
            &format!("{key}.cache_ttl"),
            &f.cache_ttl,
            Duration::ZERO,
        )?)
        .filter(|ttl| !ttl.is_zero());
        match (f.cache_max_entries, cache_ttl) {
            (Some(_), None) => {
                return Err(self.err(
                    format!("{key}.cache_max_entries"),
                    "only applies with a cache_ttl above zero (without one no answer is kept)",
                ))
            }
            (Some(0), Some(_)) => {
                return Err(self.err(
                    format!("{key}.cache_max_entries"),
                    "is 0, which keeps no answer: leave cache_ttl out instead",
                ))
            }
            _ => {}
        }
        let ca_file = f.ca_file.as_deref().map(|p| self.path(p));
        if let Some(ca) = &ca_file {
            // Read now, so `portico check` refuses what `serve` would.
            crate::egress::tls::client_config(Some(ca))
                .map_err(|e| self.err(format!("{key}.ca_file"), e))?;
        }
        Ok(ExtAuthzConfig {
            name: name.to_owned(),
            service,
            ca_file,
            timeout: self.duration(
                &format!("{key}.timeout"),
                &f.timeout,
                Duration::from_secs(1),
            )?,
            fail_open,
            include_headers: headers("include_headers", &f.include_headers)?,
            upstream_headers,
            cache_ttl,
            cache_max_entries: f.cache_max_entries.unwrap_or(10_000),
        })
    }
}
