//! `[authenticators.NAME]`: JWT (a secret, a public key, a JWK set, or an
//! OpenID Connect issuer), API keys, OAuth 2.0 token introspection, and
//! client certificates.

use crate::config::{file, ConfigError, Validator};
use std::path::PathBuf;
use std::time::Duration;

/// The most clock skew a JWT authenticator may allow on `exp` and `nbf`.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Where a JWT authenticator's key comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKey {
    Secret(Vec<u8>),
    /// PEM text of a public key, read at load.
    PublicPem(Vec<u8>),
    /// A JWK set, re-read when a token names a `kid` it does not hold and
    /// when it is older than `max_age`.
    Jwks {
        source: JwksSource,
        min_refresh: Duration,
        max_age: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    File(PathBuf),
    /// An `http://` or `https://` URL; `ca_file` adds CAs to the built-in roots.
    Url {
        url: String,
        ca_file: Option<PathBuf>,
    },
    /// An OpenID Connect issuer: its discovery document names the JWK set.
    Discovery {
        issuer: String,
        ca_file: Option<PathBuf>,
    },
}

/// A validated authenticator: how a credential is verified, and what of it
/// reaches the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatorConfig {
    pub name: String,
    pub method: AuthMethod,
    /// Verified claims copied into the call's metadata: (claim, header).
    pub forward_claims: Vec<(String, http::HeaderName)>,
    /// Remove the credential (authorization or the API key header) before the backend.
    pub strip_credential: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthMethod {
    Jwt(JwtConfig),
    ApiKey(ApiKeyConfig),
    Introspection(IntrospectionConfig),
    ClientCert(ClientCertConfig),
}

impl AuthMethod {
    pub fn kind(&self) -> &'static str {
        match self {
            AuthMethod::Jwt(_) => "jwt",
            AuthMethod::ApiKey(_) => "api_key",
            AuthMethod::Introspection(_) => "introspection",
            AuthMethod::ClientCert(_) => "client_cert",
        }
    }
}

/// A secret from the config, never printed.
#[derive(Clone, PartialEq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How the gateway authenticates to an introspection endpoint (RFC 6749 2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` with the form-encoded id and secret.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// OAuth 2.0 token introspection (RFC 7662): opaque bearer tokens vouched
/// for by the authorization server.
#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionConfig {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_auth: ClientAuth,
    pub timeout: Duration,
    /// Longest an active answer is kept; never past the token's `exp`.
    pub cache_ttl: Duration,
    /// How long an inactive answer is kept.
    pub negative_cache_ttl: Duration,
    pub cache_max_entries: u64,
    /// When set, the answer's `iss` must be this.
    pub issuer: Option<String>,
    /// When set, the answer's `aud` must hold one of these.
    pub audiences: Vec<String>,
}

/// Where a client certificate's principal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdentity {
    /// The first URI subject alternative name (SPIFFE IDs live here).
    Uri,
    /// The first DNS subject alternative name.
    Dns,
    /// The first email (rfc822Name) subject alternative name.
    Email,
    /// The subject's common name.
    CommonName,
    /// The whole subject, RFC 4514 (`CN=ada,O=Example`).
    Subject,
}

/// Client certificates (mutual TLS) as principals.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCertConfig {
    /// Tried in order; the first the certificate has is the principal.
    pub identity: Vec<CertIdentity>,
}

/// API keys: a header, and the SHA-256 of each consumer's key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyConfig {
    pub header: http::HeaderName,
    /// A query parameter that may carry the key; REST and WebSocket ingress
    /// move it into `header` (and out of the query) before the pipeline.
    pub query_param: Option<String>,
    pub consumers: Vec<(String, [u8; 32])>,
}

/// JWT verification. The accepted algorithm is the configured one, never
/// the token's: no `alg: none`, no RS/HS confusion.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    /// A cookie that may carry the token (browsers), after `authorization`.
    pub cookie: Option<String>,
    pub algorithm: jsonwebtoken::Algorithm,
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

impl Validator<'_> {
    pub(crate) fn authenticator(
        &self,
        name: &str,
        a: &file::AuthenticatorFile,
    ) -> Result<AuthenticatorConfig, ConfigError> {
        let key = format!("authenticators.{name}");
        // A key of another kind is a mistake, not something to ignore.
        let set: [(&str, bool, &[&str]); 28] = [
            ("algorithm", a.algorithm.is_some(), &["jwt"]),
            ("cookie", a.cookie.is_some(), &["jwt"]),
            ("secret", a.secret.is_some(), &["jwt"]),
            ("public_key_file", a.public_key_file.is_some(), &["jwt"]),
            ("public_key", a.public_key.is_some(), &["jwt"]),
            ("jwks_file", a.jwks_file.is_some(), &["jwt"]),
            ("jwks_url", a.jwks_url.is_some(), &["jwt"]),
            ("jwks_ca_file", a.jwks_ca_file.is_some(), &["jwt"]),
            ("jwks_min_refresh", a.jwks_min_refresh.is_some(), &["jwt"]),
            ("jwks_max_age", a.jwks_max_age.is_some(), &["jwt"]),
            ("leeway", a.leeway.is_some(), &["jwt"]),
            ("issuer", a.issuer.is_some(), &["jwt", "introspection"]),
            (
                "audiences",
                a.audiences.is_some(),
                &["jwt", "introspection"],
            ),
            ("header", a.header.is_some(), &["api_key"]),
            ("query_param", a.query_param.is_some(), &["api_key"]),
            ("keys_file", a.keys_file.is_some(), &["api_key"]),
            (
                "introspection_url",
                a.introspection_url.is_some(),
                &["introspection"],
            ),
            (
                "introspection_ca_file",
                a.introspection_ca_file.is_some(),
                &["introspection"],
            ),
            ("client_id", a.client_id.is_some(), &["introspection"]),
            (
                "client_secret",
                a.client_secret.is_some(),
                &["introspection"],
            ),
            (
                "client_secret_file",
                a.client_secret_file.is_some(),
                &["introspection"],
            ),
            (
                "client_secret_env",
                a.client_secret_env.is_some(),
                &["introspection"],
            ),
            ("client_auth", a.client_auth.is_some(), &["introspection"]),
            ("timeout", a.timeout.is_some(), &["introspection"]),
            ("identity", a.identity.is_some(), &["client_cert"]),
            ("cache_ttl", a.cache_ttl.is_some(), &["introspection"]),
            (
                "negative_cache_ttl",
                a.negative_cache_ttl.is_some(),
                &["introspection"],
            ),
            (
                "cache_max_entries",
                a.cache_max_entries.is_some(),
                &["introspection"],
            ),
        ];
        // Given but empty, each would quietly mean something else: an
        // issuer no token has, an audience check that checks nothing.
        if a.issuer.as_deref() == Some("") {
            return Err(self.err(
                format!("{key}.issuer"),
                "is empty: name the tokens' issuer, or leave issuer out to accept any",
            ));
        }
        if let Some(audiences) = &a.audiences {
            if audiences.is_empty() {
                return Err(self.err(
                    format!("{key}.audiences"),
                    "is an empty list: name at least one audience, or leave audiences out to accept any",
                ));
            }
            if let Some(i) = audiences.iter().position(String::is_empty) {
                return Err(self.err(format!("{key}.audiences[{i}]"), "is empty"));
            }
        }
        let known = ["jwt", "api_key", "introspection", "client_cert"];
        if known.contains(&a.kind.as_str()) {
            if let Some((field, _, kinds)) = set
                .iter()
                .find(|(_, present, kinds)| *present && !kinds.contains(&a.kind.as_str()))
            {
                return Err(self.err(
                    format!("{key}.{field}"),
                    format!(
                        "does not apply to kind = {:?} authenticators (only to {})",
                        a.kind,
                        kinds.join(", ")
                    ),
                ));
            }
        }
        let method = match a.kind.as_str() {
            "jwt" => AuthMethod::Jwt(self.jwt(&key, a)?),
            "api_key" => AuthMethod::ApiKey(self.api_keys(&key, a)?),
            "introspection" => AuthMethod::Introspection(self.introspection(&key, a)?),
            "client_cert" => AuthMethod::ClientCert(self.client_cert(&key, a)?),
            other => {
                return Err(self.err(
                    format!("{key}.kind"),
                    format!("{other:?} is not one of \"jwt\", \"api_key\", \"introspection\", \"client_cert\""),
                ))
            }
        };
        if let AuthMethod::ClientCert(_) = method {
            // Nothing in a request is the certificate's to strip.
            if a.strip_credential.is_some() {
                return Err(self.err(
                    format!("{key}.strip_credential"),
                    "a client certificate is part of the TLS connection, not a header: there is nothing to strip",
                ));
            }
            let known = &super::client_cert::CLAIMS;
            for claim in a.forward_claims.iter().flatten().map(|(c, _)| c) {
                if !known.contains(&claim.as_str()) {
                    return Err(self.err(
                        format!("{key}.forward_claims.{claim}"),
                        format!(
                            "a client certificate's principal has no claim {claim:?}; it has {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        let mut forward_claims = Vec::new();
        for (claim, header) in a.forward_claims.iter().flatten() {
            let name = http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                .map_err(|_| {
                    self.err(
                        format!("{key}.forward_claims.{claim}"),
                        format!("{header:?} is not a header name"),
                    )
                })?;
            if !crate::headers::is_grpc_key(&name) {
                return Err(self.err(
                    format!("{key}.forward_claims.{claim}"),
                    crate::headers::not_a_grpc_key(header),
                ));
            }
            // A claim must not pass for a credential, the request id, or
            // a header of a protocol's framing.
            let reserved = matches!(
                name.as_str(),
                "authorization" | "cookie" | "x-request-id" | "host" | "traceparent" | "tracestate"
            ) || crate::headers::is_framing(&name)
                || name.as_str().starts_with("grpc-")
                || name.as_str().starts_with("x-forwarded-")
                || matches!(name.as_str(), "forwarded" | "x-real-ip")
                || crate::headers::is_request_override(name.as_str());
            if reserved || crate::headers::is_protocol_own(name.as_str()) {
                return Err(self.err(
                    format!("{key}.forward_claims.{claim}"),
                    format!(
                        "{header:?} is a header the gateway itself sets or reads (credentials, the request id, forwarding, a method or path override, a client protocol's framing); name another"
                    ),
                ));
            }
            // A `-bin` header carries base64: the gateway picks it itself,
            // for a claim that is not printable ASCII.
            if name.as_str().ends_with("-bin") {
                return Err(self.err(
                    format!("{key}.forward_claims.{claim}"),
                    format!(
                        "{header:?} ends in -bin, which gRPC reserves for base64 values; name the plain header (a claim that is not printable ASCII goes base64 in its -bin twin by itself)"
                    ),
                ));
            }
            // One header, one claim: the backend would get whichever was
            // set last, or both values, and not know which is which.
            if let Some((other, _)) = forward_claims.iter().find(|(_, n)| *n == name) {
                return Err(self.err(
                    format!("{key}.forward_claims.{claim}"),
                    format!("{header:?} already carries the claim {other:?}; give each claim its own header"),
                ));
            }
            forward_claims.push((claim.clone(), name));
        }
        Ok(AuthenticatorConfig {
            name: name.to_owned(),
            method,
            forward_claims,
            strip_credential: a.strip_credential.unwrap_or(false),
        })
    }

    pub(crate) fn api_keys(
        &self,
        key: &str,
        a: &file::AuthenticatorFile,
    ) -> Result<ApiKeyConfig, ConfigError> {
        let header = a.header.as_deref().unwrap_or("x-api-key");
        let header =
            http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()).map_err(|_| {
                self.err(
                    format!("{key}.header"),
                    format!("{header:?} is not a header name"),
                )
            })?;
        // Bearer tokens and cookies have their own readers: a key there
        // would make every token two credentials.
        if header == http::header::AUTHORIZATION
            || header == http::header::COOKIE
            || crate::headers::is_framing(&header)
            || crate::headers::is_protocol_own(header.as_str())
        {
            return Err(self.err(
                format!("{key}.header"),
                format!("{:?} is a header the gateway reads for another purpose (bearer tokens, cookies, a protocol's framing); name another, such as x-api-key", header.as_str()),
            ));
        }
        let file = a.keys_file.as_ref().ok_or_else(|| {
            self.err(
                format!("{key}.keys_file"),
                "is required for an api_key authenticator",
            )
        })?;
        let path = self.path(file);
        let text = crate::config::read_text(&path).map_err(|e| {
            self.err(
                format!("{key}.keys_file"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let table: std::collections::BTreeMap<String, String> =
            toml::from_str(&text).map_err(|e| {
                let at = e
                    .span()
                    .map(|s| {
                        let (line, column) = crate::config::line_and_column(&text, s.start);
                        format!("line {line}, column {column}: ")
                    })
                    .unwrap_or_default();
                self.err(
                    format!("{key}.keys_file"),
                    format!("{}: {at}{}", path.display(), e.message()),
                )
            })?;
        let mut consumers = Vec::new();
        for (consumer, hex) in table {
            let digest = decode_sha256_hex(&hex).ok_or_else(|| {
                self.err(
                    format!("{key}.keys_file"),
                    format!(
                        "{}: {consumer}: not the 64 hex digits of a SHA-256",
                        path.display()
                    ),
                )
            })?;
            // One key, two consumers: which one a caller is would be an
            // accident of the file's order.
            if let Some((first, _)) = consumers.iter().find(|(_, d)| *d == digest) {
                return Err(self.err(
                    format!("{key}.keys_file"),
                    format!(
                        "{}: {first} and {consumer} have the same key; give each consumer its own",
                        path.display()
                    ),
                ));
            }
            consumers.push((consumer, digest));
        }
        if a.query_param.as_deref() == Some("") {
            return Err(self.err(format!("{key}.query_param"), "must not be empty"));
        }
        // The edge takes the parameter out of every query: one another
        // protocol reads would be taken from it.
        if let Some(p) = a.query_param.as_deref().filter(|p| {
            matches!(
                *p,
                "method" | "connect" | "encoding" | "message" | "base64" | "compression"
            )
        }) {
            return Err(self.err(
                format!("{key}.query_param"),
                format!(
                    "{p:?} cannot carry an API key: the gateway reads it itself (\"method\" picks a WebSocket handshake's REST binding; \"connect\", \"encoding\", \"message\", \"base64\" and \"compression\" are a Connect GET's); name a parameter of its own, such as \"api_key\""
                ),
            ));
        }
        Ok(ApiKeyConfig {
            header,
            query_param: a.query_param.clone(),
            consumers,
        })
    }

    pub(crate) fn jwt(
        &self,
        key: &str,
        a: &file::AuthenticatorFile,
    ) -> Result<JwtConfig, ConfigError> {
        use jsonwebtoken::Algorithm::*;
        // Only an issuer URL, no key: OpenID Connect discovery finds the keys.
        let discovery = match &a.issuer {
            Some(iss)
                if a.secret.is_none()
                    && a.public_key.is_none()
                    && a.public_key_file.is_none()
                    && a.jwks_file.is_none()
                    && a.jwks_url.is_none() =>
            {
                if !(iss.starts_with("https://") || iss.starts_with("http://"))
                    || iss.parse::<http::Uri>().is_err()
                {
                    return Err(self.err(
                        format!("{key}.issuer"),
                        format!("{iss:?} is not an http(s) URL to discover keys from; give a key (secret, public_key_file, jwks_file, jwks_url) or the issuer's URL"),
                    ));
                }
                Some(JwksSource::Discovery {
                    issuer: iss.clone(),
                    ca_file: a.jwks_ca_file.as_deref().map(|f| self.path(f)),
                })
            }
            _ => None,
        };
        let algorithm_name = match (a.algorithm.as_deref(), &discovery) {
            (Some(name), _) => name,
            // What identity providers sign ID and access tokens with.
            (None, Some(_)) => "RS256",
            (None, None) => {
                return Err(self.err(
                    format!("{key}.algorithm"),
                    "is required for a jwt authenticator",
                ))
            }
        };
        let algorithm: jsonwebtoken::Algorithm = algorithm_name.parse().map_err(|_| {
            self.err(
                format!("{key}.algorithm"),
                format!("{algorithm_name:?} is not one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"),
            )
        })?;
        let hmac = matches!(algorithm, HS256 | HS384 | HS512);
        if hmac && discovery.is_some() {
            return Err(self.err(
                format!("{key}.algorithm"),
                format!("{algorithm_name} takes a shared secret, which an issuer does not publish; discovery needs a public-key algorithm (RS256 when absent)"),
            ));
        }
        let jwks = match (&a.jwks_file, &a.jwks_url) {
            _ if discovery.is_some() => discovery,
            (Some(_), Some(_)) => {
                return Err(self.err(
                    format!("{key}.jwks_url"),
                    "give jwks_file or jwks_url, not both",
                ))
            }
            (_, None) if a.jwks_ca_file.is_some() => {
                return Err(self.err(
                    format!("{key}.jwks_ca_file"),
                    "only applies with jwks_url or an issuer to discover",
                ))
            }
            (Some(f), None) => Some(JwksSource::File(self.path(f))),
            (None, Some(u))
                if u.starts_with("https://")
                    || (u.starts_with("http://") && a.jwks_ca_file.is_none()) =>
            {
                if u.parse::<http::Uri>().is_err() {
                    return Err(self.err(format!("{key}.jwks_url"), format!("{u:?} is not a URL")));
                }
                Some(JwksSource::Url {
                    url: u.clone(),
                    ca_file: a.jwks_ca_file.as_deref().map(|f| self.path(f)),
                })
            }
            (None, Some(u)) if u.starts_with("http://") => {
                return Err(self.err(
                    format!("{key}.jwks_ca_file"),
                    format!("only applies to an https:// jwks_url, not {u:?}"),
                ))
            }
            (None, Some(u)) => {
                return Err(self.err(
                    format!("{key}.jwks_url"),
                    format!("{u:?} is not an http:// or https:// URL"),
                ))
            }
            (None, None) => None,
        };
        if jwks.is_none() {
            for (at, given) in [
                ("jwks_min_refresh", a.jwks_min_refresh.is_some()),
                ("jwks_max_age", a.jwks_max_age.is_some()),
            ] {
                if given {
                    return Err(self.err(
                        format!("{key}.{at}"),
                        "only applies with a JWK set: jwks_file, jwks_url or an issuer to discover",
                    ));
                }
            }
        }
        let public_pem = match (&a.public_key_file, &a.public_key) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    format!("{key}.public_key"),
                    "give public_key_file or public_key, not both",
                ))
            }
            (Some(file), None) => {
                let path = self.path(file);
                Some(crate::config::read_file(&path).map_err(|e| {
                    self.err(
                        format!("{key}.public_key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?)
            }
            (None, Some(pem)) if pem.contains("-----BEGIN") => Some(pem.as_bytes().to_vec()),
            (None, Some(_)) => {
                return Err(self.err(
                    format!("{key}.public_key"),
                    "is not PEM text (-----BEGIN PUBLIC KEY----- ...)",
                ))
            }
            (None, None) => None,
        };
        // A private key loads as a key (the library reads its public half's
        // numbers from it) but verifies no token: refuse it, and keep
        // private keys off a host that only verifies.
        if let Some(pem) = &public_pem {
            if crate::pem_problems::holds_private_key(pem) {
                let (at, what) = match &a.public_key_file {
                    Some(file) => (
                        "public_key_file",
                        format!("{} holds a private key", self.path(file).display()),
                    ),
                    None => ("public_key", "is a private key".to_owned()),
                };
                return Err(self.err(
                    format!("{key}.{at}"),
                    format!(
                        "{what}; give the public key (`openssl pkey -in KEY -pubout` prints it): the gateway only verifies tokens"
                    ),
                ));
            }
        }
        let key_source = match (hmac, &a.secret, public_pem) {
            (_, None, None) if jwks.is_some() => {
                let min_refresh = self.duration(
                    &format!("{key}.jwks_min_refresh"),
                    &a.jwks_min_refresh,
                    Duration::from_secs(30),
                )?;
                let max_age = self.duration(
                    &format!("{key}.jwks_max_age"),
                    &a.jwks_max_age,
                    Duration::from_secs(300),
                )?;
                if max_age < min_refresh {
                    return Err(self.err(
                        format!("{key}.jwks_max_age"),
                        format!("{} is shorter than jwks_min_refresh ({}), the least time between two reads of the set", humantime::format_duration(max_age), humantime::format_duration(min_refresh)),
                    ));
                }
                JwtKey::Jwks {
                    source: jwks.expect("checked above"),
                    min_refresh,
                    max_age,
                }
            }
            (true, Some(secret), None) if !secret.is_empty() && jwks.is_none() => {
                // RFC 7518, section 3.2: an HMAC key at least as long as
                // the hash, or the signature is only as strong as a guess.
                let least = match algorithm {
                    HS384 => 48,
                    HS512 => 64,
                    _ => 32,
                };
                if secret.len() < least {
                    return Err(self.err(
                        format!("{key}.secret"),
                        format!(
                            "is {} bytes; {algorithm_name} needs a secret of at least {least} bytes (RFC 7518, section 3.2)",
                            secret.len()
                        ),
                    ));
                }
                JwtKey::Secret(secret.as_bytes().to_vec())
            }
            (false, None, Some(pem)) if jwks.is_none() => {
                if let Err(why) = super::jwt::public_key(&pem, algorithm) {
                    return Err(match &a.public_key_file {
                        Some(file) => self.err(
                            format!("{key}.public_key_file"),
                            format!("{} {why}", self.path(file).display()),
                        ),
                        None => self.err(format!("{key}.public_key"), why),
                    });
                }
                JwtKey::PublicPem(pem)
            }
            (hmac, secret, pem) => {
                // Name the key that conflicts, not only the one expected.
                let jwks_key = if a.jwks_file.is_some() {
                    "jwks_file"
                } else {
                    "jwks_url"
                };
                let pem_key = if a.public_key_file.is_some() {
                    "public_key_file"
                } else {
                    "public_key"
                };
                let (at, why) = match (hmac, secret, pem, jwks.is_some()) {
                    (true, Some(_), _, true) => (
                        jwks_key,
                        "is given beside secret: an authenticator takes one key source, the secret or a JWK set".to_owned(),
                    ),
                    (true, secret, Some(_), _) => (
                        pem_key,
                        format!(
                            "is a public key, but {algorithm_name} verifies with a shared secret: {}",
                            if secret.is_some() { "remove it" } else { "give secret instead" }
                        ),
                    ),
                    (true, _, _, _) => (
                        "secret",
                        format!("{algorithm_name} needs a non-empty secret (or a JWK set: jwks_file or jwks_url)"),
                    ),
                    (false, Some(_), _, _) => (
                        "secret",
                        format!("is a shared secret, but {algorithm_name} verifies with a public key: give one of public_key_file, public_key, jwks_file, jwks_url instead"),
                    ),
                    (false, None, Some(_), true) => (
                        jwks_key,
                        format!("is given beside {pem_key}: an authenticator takes one key source"),
                    ),
                    (false, None, _, _) => (
                        "public_key_file",
                        format!("{algorithm_name} needs one of public_key_file, public_key, jwks_file, jwks_url"),
                    ),
                };
                return Err(self.err(format!("{key}.{at}"), why));
            }
        };
        if let Some(cookie) = &a.cookie {
            // RFC 6265's cookie-name: a token, which no browser sends empty.
            let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
            if cookie.is_empty() || !cookie.chars().all(token) {
                return Err(self.err(
                    format!("{key}.cookie"),
                    format!("{cookie:?} is no cookie name a client can send: one or more visible ASCII characters, none of ()<>@,;:\\\"/[]?={{}}"),
                ));
            }
        }
        Ok(JwtConfig {
            cookie: a.cookie.clone(),
            algorithm,
            key: key_source,
            issuer: a.issuer.clone(),
            audiences: a.audiences.clone().unwrap_or_default(),
            leeway: match &a.leeway {
                Some(written) => {
                    let leeway =
                        self.duration_or_zero(&format!("{key}.leeway"), &a.leeway, Duration::ZERO)?;
                    if leeway > MAX_LEEWAY {
                        return Err(self.err(
                            format!("{key}.leeway"),
                            format!("{written:?} is longer than {}: a leeway is for clocks that disagree by seconds, not for keeping expired tokens valid", humantime::format_duration(MAX_LEEWAY)),
                        ));
                    }
                    leeway
                }
                None => Duration::from_secs(30),
            },
        })
    }
}

impl Validator<'_> {
    pub(crate) fn introspection(
        &self,
        key: &str,
        a: &file::AuthenticatorFile,
    ) -> Result<IntrospectionConfig, ConfigError> {
        let url = a.introspection_url.as_deref().ok_or_else(|| {
            self.err(
                format!("{key}.introspection_url"),
                "is required for an introspection authenticator",
            )
        })?;
        let https = url.starts_with("https://");
        if !(https || url.starts_with("http://")) || url.parse::<http::Uri>().is_err() {
            return Err(self.err(
                format!("{key}.introspection_url"),
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        if a.introspection_ca_file.is_some() && !https {
            return Err(self.err(
                format!("{key}.introspection_ca_file"),
                "only applies to an https:// introspection_url",
            ));
        }
        let client_id = a.client_id.clone().ok_or_else(|| {
            self.err(
                format!("{key}.client_id"),
                "is required: the gateway's client id at the authorization server",
            )
        })?;
        let secret = match (
            &a.client_secret,
            &a.client_secret_file,
            &a.client_secret_env,
        ) {
            (Some(s), None, None) => s.clone(),
            (None, Some(f), None) => {
                let path = self.path(f);
                crate::config::read_text(&path)
                    .map_err(|e| {
                        self.err(
                            format!("{key}.client_secret_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?
                    .trim()
                    .to_owned()
            }
            (None, None, Some(var)) => std::env::var(var).map_err(|_| {
                self.err(
                    format!("{key}.client_secret_env"),
                    format!("the environment variable {var} is not set"),
                )
            })?,
            (None, None, None) => {
                return Err(self.err(
                    format!("{key}.client_secret"),
                    "is required (or client_secret_file, or client_secret_env)",
                ))
            }
            _ => {
                return Err(self.err(
                    format!("{key}.client_secret"),
                    "give one of client_secret, client_secret_file, client_secret_env",
                ))
            }
        };
        if secret.is_empty() {
            // Named where the empty value came from: the file or the
            // variable is what to fix.
            let (at, why) = match (&a.client_secret_file, &a.client_secret_env) {
                (Some(f), _) => (
                    "client_secret_file",
                    format!("{} is empty (or only whitespace)", self.path(f).display()),
                ),
                (_, Some(var)) => (
                    "client_secret_env",
                    format!("the environment variable {var} is empty"),
                ),
                _ => ("client_secret", "is empty".to_owned()),
            };
            return Err(self.err(format!("{key}.{at}"), why));
        }
        let client_auth = match a.client_auth.as_deref().unwrap_or("basic") {
            "basic" => ClientAuth::Basic,
            "post" => ClientAuth::Post,
            other => {
                return Err(self.err(
                    format!("{key}.client_auth"),
                    format!("{other:?} is not one of \"basic\", \"post\""),
                ))
            }
        };
        let ca_file = a.introspection_ca_file.as_deref().map(|f| self.path(f));
        if let Some(ca) = &ca_file {
            // Read now, naming the key, so `portico check` refuses what `serve` would.
            crate::egress::tls::client_config(Some(ca))
                .map_err(|e| self.err(format!("{key}.introspection_ca_file"), e))?;
        }
        Ok(IntrospectionConfig {
            url: url.to_owned(),
            ca_file,
            client_id,
            client_secret: Secret(secret),
            client_auth,
            timeout: self.duration(
                &format!("{key}.timeout"),
                &a.timeout,
                Duration::from_secs(2),
            )?,
            // Zero: that kind of answer is not kept (concurrent calls with
            // one token still share one question).
            cache_ttl: self.duration_or_zero(
                &format!("{key}.cache_ttl"),
                &a.cache_ttl,
                Duration::from_secs(300),
            )?,
            negative_cache_ttl: self.duration_or_zero(
                &format!("{key}.negative_cache_ttl"),
                &a.negative_cache_ttl,
                Duration::from_secs(10),
            )?,
            cache_max_entries: a.cache_max_entries.unwrap_or(10_000),
            issuer: a.issuer.clone(),
            audiences: a.audiences.clone().unwrap_or_default(),
        })
    }

    pub(crate) fn client_cert(
        &self,
        key: &str,
        a: &file::AuthenticatorFile,
    ) -> Result<ClientCertConfig, ConfigError> {
        let names = a
            .identity
            .clone()
            .unwrap_or_else(|| vec!["uri".to_owned(), "dns".to_owned(), "subject".to_owned()]);
        if names.is_empty() {
            return Err(self.err(format!("{key}.identity"), "names no identity"));
        }
        let identity = names
            .iter()
            .enumerate()
            .map(|(i, n)| match n.as_str() {
                "uri" => Ok(CertIdentity::Uri),
                "dns" => Ok(CertIdentity::Dns),
                "email" => Ok(CertIdentity::Email),
                "common_name" => Ok(CertIdentity::CommonName),
                "subject" => Ok(CertIdentity::Subject),
                other => Err(self.err(
                    format!("{key}.identity[{i}]"),
                    format!("{other:?} is not one of \"uri\", \"dns\", \"email\", \"common_name\", \"subject\""),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientCertConfig { identity })
    }
}

fn decode_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
