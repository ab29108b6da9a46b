//! TLS for connections the gateway opens: rustls with ring, Mozilla's root
//! certificates built in (no system store needed), plus any CA the config
//! names for private PKIs.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// A client config trusting the built-in roots and the PEM certificates in
/// `ca_file`, if given.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    client_config_trusting(ca_file.into_iter())
}

/// As [`client_config`], trusting every CA file given.
pub fn client_config_trusting<'a>(
    ca_files: impl Iterator<Item = &'a Path>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in ca_files {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: holds no certificate", path.display()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A connector for `http://` and `https://` URLs (HTTP/1.1 or HTTP/2 by ALPN).
pub fn https_connector(ca_file: Option<&Path>) -> Result<HttpsConnector<HttpConnector>, String> {
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_file)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build())
}

/// A connector for gRPC over TLS to upstream endpoints: TCP with the
/// upstream's connect timeout, then TLS offering only `h2` by ALPN.
pub fn grpc_connector(
    ca_file: Option<&Path>,
    connect_timeout: std::time::Duration,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_file)?)
        .https_only()
        .enable_http2()
        .wrap_connector(http))
}
