//! TLS on the main port: the certificate chain and key from the config,
//! rustls with ring, and ALPN offering HTTP/2 then HTTP/1.1, so gRPC
//! clients get h2 and browsers whichever they prefer. With a client CA,
//! only clients holding a certificate it signed complete the handshake.

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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| format!("client_ca_file: not PEM certificates: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca_file: {e}"))?;
            }
            if roots.is_empty() {
                return Err("client_ca_file holds no certificate".to_owned());
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
