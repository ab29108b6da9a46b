//! TLS for connections the gateway opens: rustls with ring, Mozilla's root
//! certificates built in (no system store needed), plus any CA the config
//! names for private PKIs, and a client certificate for upstreams that
//! require mutual TLS.

use crate::config::UpstreamTls;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A client config trusting the built-in roots and the PEM certificates in
/// `ca_file`, if given.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    Ok(builder(root_store(ca_file)?)?.with_no_client_auth())
}

/// The client config for an upstream: its CA on top of the built-in roots,
/// and its client certificate when the endpoints require mutual TLS.
pub fn upstream_config(tls: &UpstreamTls) -> Result<rustls::ClientConfig, String> {
    upstream_config_by_key(tls).map_err(|(_, e)| e)
}

/// As [`upstream_config`], the error with the upstream key at fault
/// (`tls_ca_file`, `tls_cert_file`, `tls_key_file`): what config
/// validation reports, so `check` refuses what `serve` would.
pub fn upstream_config_by_key(
    tls: &UpstreamTls,
) -> Result<rustls::ClientConfig, (&'static str, String)> {
    let roots = root_store(tls.ca_file.as_deref()).map_err(|e| ("tls_ca_file", e))?;
    let builder = builder(roots).map_err(|e| ("tls", e))?;
    match &tls.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_file, key_file)) => {
            let cert_pem = crate::config::read_file(cert_file).map_err(|e| {
                (
                    "tls_cert_file",
                    format!("cannot read {}: {e}", cert_file.display()),
                )
            })?;
            let certs = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    (
                        "tls_cert_file",
                        format!(
                            "{}: {}",
                            cert_file.display(),
                            crate::pem_problems::certificates(&e)
                        ),
                    )
                })?;
            if certs.is_empty() {
                return Err((
                    "tls_cert_file",
                    format!("{}: holds no certificate", cert_file.display()),
                ));
            }
            let key_pem = crate::config::read_file(key_file).map_err(|e| {
                (
                    "tls_key_file",
                    format!("cannot read {}: {e}", key_file.display()),
                )
            })?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                (
                    "tls_key_file",
                    format!(
                        "{}: {}",
                        key_file.display(),
                        crate::pem_problems::key(Some(&key_pem), &e)
                    ),
                )
            })?;
            if let Some(at) = crate::pem_problems::key_certificate_out_of_place(&certs, &key) {
                return Err((
                    "tls_cert_file",
                    format!(
                        "{}: {}",
                        cert_file.display(),
                        crate::pem_problems::chain_out_of_order(
                            at,
                            certs.len(),
                            &key_file.display().to_string()
                        )
                    ),
                ));
            }
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                (
                    "tls_key_file",
                    format!(
                        "{} is not the key of the certificate in {} ({e})",
                        key_file.display(),
                        cert_file.display()
                    ),
                )
            })
        }
    }
}

fn builder(
    roots: rustls::RootCertStore,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, String> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots))
}

/// Mozilla's roots plus the PEM certificates in `ca_file`.
fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let pem = crate::config::read_file(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                format!(
                    "{}: {}",
                    path.display(),
                    crate::pem_problems::certificates(&e)
                )
            })?;
        if certs.is_empty() {
            return Err(format!("{}: holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// TCP as every connection the gateway opens starts: any scheme (TLS is
/// layered on by the caller), TCP_NODELAY, the connect timeout.
pub(crate) fn tcp(connect_timeout: Option<Duration>) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    http
}

/// A connector for `http://` and `https://` URLs (HTTP/1.1 or HTTP/2 by ALPN).
pub fn https_connector(ca_file: Option<&Path>) -> Result<HttpsConnector<HttpConnector>, String> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_file)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp(None)))
}

/// A connector for gRPC over TLS to upstream endpoints: TCP with the
/// upstream's connect timeout, then TLS offering only `h2` by ALPN.
/// With `server_name`, certificates are verified for that name (and it is
/// sent as SNI) whatever host the address connected to has.
pub fn grpc_connector(
    tls: &UpstreamTls,
    connect_timeout: Duration,
    server_name: Option<&str>,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(upstream_config(tls)?)
        .https_only();
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(fixed_name(name)?),
        None => builder,
    };
    Ok(builder
        .enable_http2()
        .wrap_connector(tcp(Some(connect_timeout))))
}

fn fixed_name(name: &str) -> Result<hyper_rustls::FixedServerNameResolver, String> {
    let name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|e| format!("{name:?} cannot be a TLS server name: {e}"))?;
    Ok(hyper_rustls::FixedServerNameResolver::new(name))
}

/// A connector for an upstream's HTTP/1.1 endpoints and health checks: its
/// TLS settings when it has them (plain `http://` URLs work either way).
/// `server_name` as for [`grpc_connector`].
pub fn upstream_connector(
    tls: Option<&UpstreamTls>,
    connect_timeout: Duration,
    server_name: Option<&str>,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let config = match tls {
        Some(t) => upstream_config(t)?,
        None => client_config(None)?,
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(fixed_name(name)?),
        None => builder,
    };
    Ok(builder
        .enable_http1()
        .wrap_connector(tcp(Some(connect_timeout))))
}
