//! TLS on the main port: the certificate chain and key from the config,
//! rustls with ring, and ALPN offering HTTP/2 then HTTP/1.1, so gRPC
//! clients get h2 and browsers whichever they prefer.

use crate::config::ServerTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

pub fn acceptor(tls: &ServerTls) -> Result<TlsAcceptor, String> {
    let file = tls.cert_file.display();
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{file}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file}: holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|e| format!("the key file holds no usable private key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
