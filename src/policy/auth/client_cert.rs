//! Client certificates as principals: with mutual TLS on the main port,
//! the certificate the handshake verified names the caller. The principal
//! is the first of the configured identities the certificate has; its
//! claims hold every name the certificate carries, for authorization
//! rules, rate-limit keys and `forward_claims`.

use crate::config::{CertIdentity, ClientCertConfig};
use crate::envelope::{ClientCertificate, Principal};
use crate::error::GatewayError;
use serde_json::json;

/// The claims a certificate's principal has, every one of them always: a
/// `forward_claims` entry naming another could never forward anything.
pub const CLAIMS: [&str; 8] = [
    "sub",
    "subject_dn",
    "common_name",
    "san_uri",
    "san_dns",
    "san_email",
    "serial",
    "x5t#S256",
];

/// The principal a certificate names, or why it names none.
pub fn principal(
    config: &ClientCertConfig,
    cert: Option<&ClientCertificate>,
) -> Result<Principal, GatewayError> {
    let cert = cert.ok_or_else(|| {
        GatewayError::unauthenticated(true, "this route needs a client certificate (mutual TLS)")
    })?;
    let subject = config
        .identity
        .iter()
        .find_map(|id| match id {
            CertIdentity::Uri => cert.uris.first().cloned(),
            CertIdentity::Dns => cert.dns_names.first().cloned(),
            CertIdentity::Email => cert.emails.first().cloned(),
            CertIdentity::CommonName => cert.common_name.clone(),
            CertIdentity::Subject => Some(cert.subject.clone()).filter(|s| !s.is_empty()),
        })
        .ok_or_else(|| {
            GatewayError::unauthenticated(
                false,
                "the client certificate has none of the identities this route reads",
            )
        })?;
    Ok(Principal {
        claims: json!({
            "sub": subject,
            "subject_dn": cert.subject,
            "common_name": cert.common_name,
            "san_uri": cert.uris,
            "san_dns": cert.dns_names,
            "san_email": cert.emails,
            "serial": cert.serial,
            "x5t#S256": cert.sha256,
        }),
        subject,
    })
}

#[cfg(test)]
mod tests {
    /// `forward_claims` is checked against [`super::CLAIMS`]: it must be the
    /// claims a principal has.
    #[test]
    fn the_claims_listed_are_the_claims_a_principal_has() {
        let cert = crate::envelope::ClientCertificate {
            subject: "CN=orders".into(),
            ..Default::default()
        };
        let config = crate::config::ClientCertConfig {
            identity: vec![crate::config::CertIdentity::Subject],
        };
        let claims = match super::principal(&config, Some(&cert)) {
            Ok(p) => p.claims,
            Err(_) => panic!("a subject is an identity"),
        };
        let mut have: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        have.sort_unstable();
        let mut listed = super::CLAIMS.to_vec();
        listed.sort_unstable();
        assert_eq!(have, listed);
    }
}
