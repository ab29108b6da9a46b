//! What is wrong with a PEM file the config names, said so that its owner
//! knows what to do: the parser's own words name byte values and variants.

use rustls::pki_types::pem::Error;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a file of certificates could not be read, after "FILE: ".
pub fn certificates(e: &Error) -> String {
    format!("not PEM certificates: {}", plain_reason(e))
}

/// Why a key file gave no key, after "FILE: "; `pem` is the file's text
/// when it could be read.
pub fn key(pem: Option<&[u8]>, e: &Error) -> String {
    let encrypted = pem.is_some_and(|p| {
        let text = String::from_utf8_lossy(p);
        text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED")
    });
    if encrypted {
        return "holds an encrypted private key, which the gateway cannot read: store it \
                decrypted (`openssl pkey -in KEY -out KEY.plain`) with permissions only the \
                gateway's user can read"
            .to_owned();
    }
    format!("holds no usable private key ({})", plain_reason(e))
}

/// Whether PEM text holds a private key section of any kind (`PRIVATE
/// KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`, encrypted or not).
pub fn holds_private_key(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem).lines().any(|line| {
        let line = line.trim();
        line.starts_with("-----BEGIN ") && line.ends_with("PRIVATE KEY-----")
    })
}

/// Where in a chain of certificates the key's own certificate is, when it
/// is there but not first: a chain written issuers first. The first must
/// be the holder's own, so the file, not the key, is what to mend.
pub fn key_certificate_out_of_place(
    certs: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Option<usize> {
    let signing_key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .ok()?;
    let fits = |cert: &CertificateDer<'static>| {
        rustls::sign::CertifiedKey::new(vec![cert.clone()], signing_key.clone())
            .keys_match()
            .is_ok()
    };
    // The first fits (the leaf written twice, say): in place already.
    if fits(certs.first()?) {
        return None;
    }
    (1..certs.len()).find(|&i| fits(&certs[i]))
}

/// Why a chain whose key belongs to its certificate `at` (counted from 0)
/// is refused, after "FILE: ".
pub fn chain_out_of_order(at: usize, count: usize, key_file: &str) -> String {
    format!(
        "the key in {key_file} is that of certificate {} of the {count} here, not the first: \
         put the gateway's own certificate first, then the certificates that issued it",
        at + 1
    )
}

fn plain_reason(e: &Error) -> String {
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a section has no end line `-----END {}-----` (is the file cut short?)",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "the line `{}` does not start a PEM section",
            String::from_utf8_lossy(line)
        ),
        Error::NoItemsFound => "no PEM section of that kind found".to_owned(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn a_cut_short_certificate_and_an_encrypted_key_are_said_plainly() {
        let cut = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        let e = CertificateDer::pem_slice_iter(cut)
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err();
        assert_eq!(
            certificates(&e),
            "not PEM certificates: a section has no end line `-----END CERTIFICATE-----` (is the file cut short?)"
        );
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = PrivateKeyDer::from_pem_slice(encrypted).unwrap_err();
        assert!(
            key(Some(encrypted), &e).starts_with("holds an encrypted private key"),
            "{}",
            key(Some(encrypted), &e)
        );
    }
}
