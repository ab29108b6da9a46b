//! Authentication: a route with an authenticator only lets through calls
//! whose bearer token verifies; the verified claims become the call's
//! principal. Tokens, keys and cookies are read from the request's headers
//! as the request edge made them (the same for every protocol, with
//! credentials from a query or a WebSocket subprotocol already lifted), so
//! this layer never knows the protocol.

pub mod config;

use super::per_route::{Next, Policy};
use crate::config::{ApiKeyConfig, AuthMethod, AuthenticatorConfig, JwksSource, JwtConfig, JwtKey};
use crate::envelope::{Envelope, Principal, Reply};
use crate::error::GatewayError;
use futures_util::future::BoxFuture;
use jsonwebtoken::{DecodingKey, Validation};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use tower::Service;

/// One configured authenticator.
pub struct Authenticator {
    verifier: Verifier,
    forward_claims: Vec<(String, http::HeaderName)>,
    strip_credential: bool,
}

enum Verifier {
    Jwt {
        keys: Keys,
        validation: Box<Validation>,
        verified: VerifiedTokens,
        /// A cookie that may carry the token when no Authorization header does.
        cookie: Option<String>,
    },
    ApiKey(ApiKeyConfig),
}

/// Tokens that verified, so a client's next calls skip the signature check
/// (an RSA verification costs far more than the rest of a request). Kept
/// until the token's `exp` at the latest, and for at most five minutes, so
/// a rotated-out key stops being trusted soon after.
struct VerifiedTokens {
    cache: moka::sync::Cache<String, (Arc<Principal>, Instant)>,
}

impl VerifiedTokens {
    fn new() -> Self {
        VerifiedTokens {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        }
    }

    fn get(&self, token: &str) -> Option<Arc<Principal>> {
        match self.cache.get(token) {
            Some((p, expires)) if expires > Instant::now() => Some(p),
            Some(_) => {
                self.cache.invalidate(token);
                None
            }
            None => None,
        }
    }

    fn insert(&self, token: &str, principal: Arc<Principal>) {
        let exp = principal
            .claims
            .get("exp")
            .and_then(|e| e.as_u64())
            .unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        if exp > now {
            self.cache.insert(
                token.to_owned(),
                (principal, Instant::now() + Duration::from_secs(exp - now)),
            );
        }
    }
}

enum Keys {
    One(DecodingKey),
    /// Keys by `kid`, refreshed from their source on an unknown `kid`.
    Set(Box<Jwks>),
}

struct Jwks {
    source: JwksSource,
    min_refresh: Duration,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// When the set was last read; one refresh at a time, at most one per `min_refresh`.
    refreshed: tokio::sync::Mutex<Instant>,
}

impl Jwks {
    fn get(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .cloned()
    }

    /// Re-reads the set if the last read is old enough; a new `kid` (key
    /// rotation) is then found. Failures keep the keys already known.
    async fn refresh(&self) {
        let mut last = self.refreshed.lock().await;
        if last.elapsed() < self.min_refresh {
            return;
        }
        *last = Instant::now();
        match fetch(&self.source).await {
            Ok(keys) => *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys,
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the known keys"),
        }
    }
}

/// Reads a JWK set from a file or an http(s):// URL.
async fn fetch(source: &JwksSource) -> Result<HashMap<String, DecodingKey>, String> {
    let bytes = match source {
        JwksSource::File(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?
        }
        JwksSource::Url { url, ca_file } => {
            use http_body_util::BodyExt;
            let connector = crate::egress::tls::https_connector(ca_file.as_deref())?;
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
            let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let resp = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
                .await
                .map_err(|_| format!("{url}: timed out"))?
                .map_err(|e| format!("{url}: {}", crate::error::with_causes(&e)))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: {}", resp.status()));
            }
            let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            body.to_bytes().to_vec()
        }
    };
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        keys.insert(kid, key);
    }
    Ok(keys)
}

impl Authenticator {
    /// Builds the verifier; a JWK set is read now, so a bad one fails startup.
    pub async fn load(config: &AuthenticatorConfig) -> Result<Authenticator, String> {
        let verifier = match &config.method {
            AuthMethod::ApiKey(keys) => Verifier::ApiKey(keys.clone()),
            AuthMethod::Jwt(jwt) => Verifier::Jwt {
                keys: load_keys(jwt).await?,
                validation: Box::new(validation(jwt)),
                verified: VerifiedTokens::new(),
                cookie: jwt.cookie.clone(),
            },
        };
        Ok(Authenticator {
            verifier,
            forward_claims: config.forward_claims.clone(),
            strip_credential: config.strip_credential,
        })
    }

    /// Verifies the call's credential; on success the envelope carries the
    /// principal, the forwarded claims, and (if so configured) no credential.
    pub async fn authenticate(&self, env: &mut Envelope) -> Result<(), GatewayError> {
        let principal = match &self.verifier {
            Verifier::Jwt {
                keys,
                validation,
                verified,
                cookie,
            } => {
                one_credential(env, cookie.as_deref())?;
                let from_header = bearer(env).map(str::to_owned);
                let token = from_header
                    .or_else(|| cookie.as_deref().and_then(|name| cookie_value(env, name)))
                    .ok_or_else(|| {
                        GatewayError::unauthenticated(true, "this route needs a bearer token")
                    })?;
                let token = token.as_str();
                let principal = match verified.get(token) {
                    Some(p) => p,
                    None => {
                        let p = Arc::new(verify_jwt(keys, validation, token).await?);
                        verified.insert(token, p.clone());
                        p
                    }
                };
                if self.strip_credential {
                    env.metadata.remove(http::header::AUTHORIZATION);
                }
                principal
            }
            Verifier::ApiKey(config) => {
                if env.ctx.headers.get_all(&config.header).iter().count() > 1 {
                    return Err(two_credentials(config.header.as_str()));
                }
                let key = env
                    .ctx
                    .headers
                    .get(&config.header)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        GatewayError::unauthenticated(
                            true,
                            format!("this route needs an API key in {}", config.header),
                        )
                    })?;
                let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
                let consumer = config
                    .consumers
                    .iter()
                    .find(|(_, stored)| *stored == digest)
                    .map(|(name, _)| name.clone())
                    .ok_or_else(|| GatewayError::unauthenticated(false, "unknown API key"))?;
                if self.strip_credential {
                    env.metadata.remove(&config.header);
                }
                Arc::new(Principal {
                    claims: serde_json::json!({"sub": consumer, "consumer": consumer}),
                    subject: consumer,
                })
            }
        };
        for (claim, header) in &self.forward_claims {
            let value = match principal.claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => continue,
                Some(other) => other.to_string(),
            };
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                // The policies after this one (a rate limit or a cache keyed
                // on the header, a balancer hashing it) see the verified
                // value too, never the one a client may have sent.
                Arc::make_mut(&mut env.ctx.headers).insert(header.clone(), v.clone());
                env.metadata.insert(header.clone(), v);
            }
        }
        env.ctx.principal = Some(principal);
        Ok(())
    }
}

async fn load_keys(config: &JwtConfig) -> Result<Keys, String> {
    use jsonwebtoken::Algorithm::*;
    Ok(match (&config.key, config.algorithm) {
        (JwtKey::Secret(s), _) => Keys::One(DecodingKey::from_secret(s)),
        (JwtKey::PublicPem(pem), alg) => {
            let key = match alg {
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
                ES256 | ES384 => DecodingKey::from_ec_pem(pem),
                EdDSA => DecodingKey::from_ed_pem(pem),
                alg => return Err(format!("{alg:?} takes a secret, not a public key")),
            };
            Keys::One(key.map_err(|e| format!("bad public key: {e}"))?)
        }
        (
            JwtKey::Jwks {
                source,
                min_refresh,
            },
            _,
        ) => Keys::Set(Box::new(Jwks {
            keys: RwLock::new(fetch(source).await?),
            source: source.clone(),
            min_refresh: *min_refresh,
            refreshed: tokio::sync::Mutex::new(Instant::now()),
        })),
    })
}

/// Only the configured algorithm is accepted, whatever the token says.
fn validation(config: &JwtConfig) -> Validation {
    let mut validation = Validation::new(config.algorithm);
    validation.leeway = config.leeway.as_secs();
    validation.validate_nbf = true;
    // A token for no audience must not pass a route that names its audiences.
    if config.audiences.is_empty() {
        validation.set_required_spec_claims(&["exp"]);
    } else {
        validation.set_required_spec_claims(&["exp", "aud"]);
    }
    if let Some(iss) = &config.issuer {
        validation.set_issuer(&[iss]);
    }
    if config.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&config.audiences);
    }
    validation
}

/// The principal of a valid token.
async fn verify_jwt(
    keys: &Keys,
    validation: &Validation,
    token: &str,
) -> Result<Principal, GatewayError> {
    let invalid =
        |why: String| GatewayError::unauthenticated(false, format!("invalid token: {why}"));
    let set_key;
    let key = match keys {
        Keys::One(k) => k,
        Keys::Set(jwks) => {
            let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
            let kid = header
                .kid
                .ok_or_else(|| invalid("no kid in the header".to_owned()))?;
            set_key = match jwks.get(&kid) {
                Some(k) => k,
                None => {
                    jwks.refresh().await;
                    jwks.get(&kid)
                        .ok_or_else(|| invalid(format!("unknown key id {kid:?}")))?
                }
            };
            &set_key
        }
    };
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, validation)
        .map_err(|e| invalid(e.to_string()))?;
    let subject = data
        .claims
        .get("sub")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_owned();
    Ok(Principal {
        subject,
        claims: data.claims,
    })
}

impl Policy for Authenticator {
    fn call(
        self: Arc<Self>,
        mut env: Envelope,
        mut next: Next,
    ) -> BoxFuture<'static, Result<Reply, GatewayError>> {
        Box::pin(async move {
            // Refused before the backend is ever called.
            self.authenticate(&mut env).await?;
            next.call(env).await
        })
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(env: &Envelope) -> Option<&str> {
    let value = env
        .ctx
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// A cookie's value from the call's `cookie` metadata.
fn cookie_value(env: &Envelope, name: &str) -> Option<String> {
    env.ctx
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(name)?
                .strip_prefix('=')
                .map(str::to_owned)
        })
}

/// More than one credential in a request is refused, whatever their
/// places (two `Authorization` fields, a header and a query token, a
/// header and a different session cookie): a gateway and a backend must
/// never each believe a different one.
fn one_credential(env: &Envelope, cookie: Option<&str>) -> Result<(), GatewayError> {
    let headers = &env.ctx.headers;
    let fields = headers.get_all(http::header::AUTHORIZATION).iter().count();
    if fields > 1 {
        return Err(two_credentials("authorization"));
    }
    if let (Some(name), Some(token)) = (cookie, bearer(env)) {
        if cookie_value(env, name).is_some_and(|c| c != token) {
            return Err(two_credentials("authorization and the session cookie"));
        }
    }
    Ok(())
}

fn two_credentials(where_: &str) -> GatewayError {
    GatewayError::invalid_field(
        "authorization",
        format!("the request carries more than one credential ({where_}); send one"),
    )
}
