//! TLS on the main port: the certificate chain and key from the config,
//! rustls with ring, and ALPN offering HTTP/2 then HTTP/1.1, so gRPC
//! clients get h2 and browsers whichever they prefer. With a client CA,
//! only clients holding a certificate it signed complete the handshake.

use crate::config::ServerTls;
use crate::envelope::ClientCertificate;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Says so in the log when the served certificate has expired or is not
/// valid yet: the gateway serves it (a renewal may be on its way, and a
/// reload takes it), but every client that checks it will refuse it.
fn warn_if_out_of_date(file: &str, leaf: &CertificateDer<'_>) {
    use x509_cert::der::Decode;
    let Ok(cert) = x509_cert::Certificate::from_der(leaf) else {
        return;
    };
    let validity = &cert.tbs_certificate.validity;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (from, until) = (
        validity.not_before.to_unix_duration(),
        validity.not_after.to_unix_duration(),
    );
    if now > until {
        tracing::warn!(
            cert_file = file,
            not_after = %validity.not_after,
            "server.tls.cert_file: the certificate has expired; clients that verify it will refuse the connection"
        );
    } else if now < from {
        tracing::warn!(
            cert_file = file,
            not_before = %validity.not_before,
            "server.tls.cert_file: the certificate is not valid yet; clients that verify it will refuse the connection"
        );
    }
}

/// The acceptor for the main port; an error names the `server.tls` key
/// at fault (`cert_file`, `key_file`, `client_ca_file`) and why.
pub fn acceptor(tls: &ServerTls) -> Result<TlsAcceptor, (&'static str, String)> {
    let file = tls.cert_file.display();
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                "cert_file",
                format!("{file}: {}", crate::pem_problems::certificates(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(("cert_file", format!("{file}: holds no certificate")));
    }
    warn_if_out_of_date(&file.to_string(), &certs[0]);
    let key_file = tls.key_file.display();
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| {
        (
            "key_file",
            format!(
                "{key_file}: {}",
                crate::pem_problems::key(Some(&tls.key_pem), &e)
            ),
        )
    })?;
    let ca_file = tls
        .client_ca_file
        .as_ref()
        .map_or_else(String::new, |f| format!("{}: ", f.display()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("cert_file", format!("TLS setup: {e}")))?;
    let builder = match &tls.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    (
                        "client_ca_file",
                        format!("{ca_file}{}", crate::pem_problems::certificates(&e)),
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    (
                        "client_ca_file",
                        format!("{ca_file}an unusable certificate: {e}"),
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(("client_ca_file", format!("{ca_file}holds no certificate")));
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if tls.client_cert_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| ("client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let out_of_place = crate::pem_problems::key_certificate_out_of_place(&certs, &key);
    if let Some(at) = out_of_place {
        return Err((
            "cert_file",
            format!(
                "{file}: {}",
                crate::pem_problems::chain_out_of_order(at, certs.len(), &key_file.to_string())
            ),
        ));
    }
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        (
            "key_file",
            format!(
                "{key_file}: is not the key of the certificate in {file}{}",
                // rustls names this case with a bare variant name.
                if e.to_string().contains("KeyMismatch") {
                    String::new()
                } else {
                    format!(" ({e})")
                }
            ),
        )
    })?;
    if tls.client_ca_pem.is_some() {
        // A resumed session skips the client's certificate: a certificate
        // that has expired, or whose CA the config no longer trusts, would
        // go on opening connections for as long as its session lived.
        // With client certificates, every connection shows one afresh.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What a verified client certificate says of its holder. `None` when the
/// DER does not parse (the handshake verified it, so this does not happen
/// with a well-formed chain).
pub fn client_certificate(der: &[u8]) -> Option<ClientCertificate> {
    use sha2::Digest;
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = &cert.tbs_certificate;
    let common_name = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == x509_cert::der::oid::db::rfc4519::CN)
        .and_then(|atv| attribute_text(&atv.value));
    let mut out = ClientCertificate {
        subject: tbs.subject.to_string(),
        common_name,
        serial: crate::app::generation::hex(tbs.serial_number.as_bytes()),
        sha256: crate::app::generation::hex(&sha2::Sha256::digest(der)),
        ..ClientCertificate::default()
    };
    if let Ok(Some((_, SubjectAltName(names)))) = tbs.get::<SubjectAltName>() {
        for name in names {
            match name {
                GeneralName::UniformResourceIdentifier(s) => out.uris.push(s.to_string()),
                GeneralName::DnsName(s) => out.dns_names.push(s.to_string()),
                GeneralName::Rfc822Name(s) => out.emails.push(s.to_string()),
                _ => {}
            }
        }
    }
    Some(out)
}

/// A directory string's text, whichever string type the CA chose.
fn attribute_text(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    if let Ok(s) = Utf8StringRef::try_from(value) {
        return Some(s.as_str().to_owned());
    }
    if let Ok(s) = PrintableStringRef::try_from(value) {
        return Some(s.as_str().to_owned());
    }
    Ia5StringRef::try_from(value)
        .ok()
        .map(|s| s.as_str().to_owned())
}
