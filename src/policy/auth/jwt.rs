//! JWT verification: one key, a JWK set (a file, a URL, or an OpenID
//! Connect issuer's), the configured algorithm only, and a cache of
//! tokens that verified.

use crate::config::{JwksSource, JwtConfig, JwtKey};
use crate::envelope::Principal;
use crate::error::GatewayError;
use crate::policy::outbound::Outbound;
use jsonwebtoken::{DecodingKey, Validation};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub struct JwtVerifier {
    keys: Keys,
    validation: Box<Validation>,
    verified: VerifiedTokens,
    /// A cookie that may carry the token when no Authorization header does.
    pub cookie: Option<String>,
}

impl JwtVerifier {
    /// Reads the key now, so a bad one (or an unreachable JWK set or
    /// issuer) fails startup; an error names the config key at fault.
    pub async fn load(config: &JwtConfig) -> Result<JwtVerifier, (&'static str, String)> {
        Ok(JwtVerifier {
            keys: load_keys(config).await?,
            validation: Box::new(validation(config)),
            verified: VerifiedTokens::new(),
            cookie: config.cookie.clone(),
        })
    }

    /// Whether `token` is meant for this authenticator, on a route that
    /// lists several: signed with its algorithm and, when it has an
    /// `issuer`, from that issuer (or naming none, which it then refuses).
    /// A token that cannot be read that far is this one's to refuse.
    pub fn meant_for(&self, token: &str) -> bool {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return true;
        };
        if !self.validation.algorithms.contains(&header.alg) {
            return false;
        }
        let Some(issuers) = &self.validation.iss else {
            return true;
        };
        match unverified_part(token, 1)
            .as_ref()
            .and_then(|c| c.get("iss"))
        {
            Some(serde_json::Value::String(iss)) => issuers.contains(iss),
            _ => true,
        }
    }

    /// Takes the key set `fresh` read (a reload's), when it differs from
    /// the one in use: a key the identity provider withdrew stops
    /// verifying at once, without a new generation. Whether it changed.
    pub async fn adopt_keys(&self, fresh: &JwtVerifier) -> bool {
        let (Keys::Set(ours), Keys::Set(theirs)) = (&self.keys, &fresh.keys) else {
            return false;
        };
        let read = theirs.last_read.lock().await;
        let keys = theirs
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ours.adopt(*read, keys).await
    }

    /// The principal of a valid token, from the cache when it verified before.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, GatewayError> {
        let epoch = match &self.keys {
            Keys::One(_) => 0,
            Keys::Set(jwks) => {
                jwks.read_again_if_old();
                jwks.epoch.load(Ordering::Acquire)
            }
        };
        if let Some(p) = self.verified.get(token, epoch) {
            return Ok(p);
        }
        let p = Arc::new(verify_jwt(&self.keys, &self.validation, token).await?);
        // The epoch from before the check: a token verified against a set
        // that changed meanwhile is checked again next time.
        self.verified.insert(token, p.clone(), epoch);
        Ok(p)
    }
}

/// Whether a bearer token has a JWT's shape (three base64url parts), so a
/// route that also takes opaque tokens knows which authenticator applies.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let three = parts.by_ref().take(3).filter(|p| !p.is_empty()).count() == 3;
    three
        && parts.next().is_none()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Tokens that verified, so a client's next calls skip the signature check
/// (an RSA verification costs far more than the rest of a request). Kept
/// until the token's `exp` at the latest, for at most five minutes, and
/// only while the JWK set they were checked against is unchanged, so a key
/// removed from the set stops being trusted with it.
struct VerifiedTokens {
    cache: moka::sync::Cache<String, (Arc<Principal>, Instant, u64)>,
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

    fn get(&self, token: &str, epoch: u64) -> Option<Arc<Principal>> {
        match self.cache.get(token) {
            Some((p, expires, seen)) if seen == epoch && expires > Instant::now() => Some(p),
            Some(_) => {
                self.cache.invalidate(token);
                None
            }
            None => None,
        }
    }

    fn insert(&self, token: &str, principal: Arc<Principal>, epoch: u64) {
        let exp = principal
            .claims
            .get("exp")
            .and_then(|e| e.as_u64())
            .unwrap_or(0);
        let now = unix_now();
        if exp > now {
            self.cache.insert(
                token.to_owned(),
                (
                    principal,
                    Instant::now() + Duration::from_secs(exp - now),
                    epoch,
                ),
            );
        }
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX)
}

enum Keys {
    One(DecodingKey),
    /// Keys by `kid`, read again from their source on an unknown `kid` and
    /// when the set is older than its `max_age`.
    Set(Arc<Jwks>),
}

struct Jwks {
    source: JwksSource,
    client: Option<Outbound>,
    /// The authenticator's algorithm: a key meant for another is not used.
    algorithm: jsonwebtoken::Algorithm,
    min_refresh: Duration,
    max_age: Duration,
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// The fingerprint of the set last read; held while a read is under
    /// way, so there is one at a time.
    last_read: tokio::sync::Mutex<u64>,
    /// When the set was last read, and when a read was last tried, in
    /// milliseconds since `born`: the age check on every token reads only these.
    read_at_ms: AtomicU64,
    tried_at_ms: AtomicU64,
    born: Instant,
    /// Bumped whenever a read finds a different set: tokens verified
    /// against an older one are checked again.
    epoch: AtomicU64,
    /// A read started by age is under way.
    reading: AtomicBool,
}

impl Jwks {
    fn new(
        source: JwksSource,
        client: Option<Outbound>,
        algorithm: jsonwebtoken::Algorithm,
        read: KeySet,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Jwks {
        Jwks {
            source,
            client,
            algorithm,
            min_refresh,
            max_age,
            keys: RwLock::new(read.keys),
            last_read: tokio::sync::Mutex::new(read.fingerprint),
            read_at_ms: AtomicU64::new(0),
            tried_at_ms: AtomicU64::new(0),
            born: Instant::now(),
            epoch: AtomicU64::new(0),
            reading: AtomicBool::new(false),
        }
    }

    fn get(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(kid)
            .cloned()
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn since(&self, at: &AtomicU64) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(at.load(Ordering::Relaxed)))
    }

    /// Uses `keys` (read elsewhere, with `fingerprint`) from now on, unless
    /// they are the set in use; tokens verified against the old set are
    /// checked again. Whether the set changed.
    async fn adopt(&self, fingerprint: u64, keys: HashMap<String, DecodingKey>) -> bool {
        let mut ours = self.last_read.lock().await;
        if *ours == fingerprint {
            return false;
        }
        *ours = fingerprint;
        self.read_at_ms.store(self.now_ms(), Ordering::Relaxed);
        self.install(keys);
        true
    }

    /// Where the set is read from, for log lines: two authenticators'
    /// sets are told apart.
    fn source_name(&self) -> String {
        source_name(&self.source)
    }

    /// Verifies with `keys` from now on (the caller holds `last_read`,
    /// updated): the one place a change of set is logged, naming where the
    /// set is read from, so two authenticators' sets are told apart.
    fn install(&self, keys: HashMap<String, DecodingKey>) {
        let mut kids: Vec<&String> = keys.keys().collect();
        kids.sort();
        tracing::info!(kids = ?kids, jwks = %self.source_name(), "the JWK set changed; tokens are checked against its keys from now on");
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts reading the set again in the background when it is older than
    /// `max_age`; calls meanwhile use the keys already known rather than
    /// wait on the identity provider.
    fn read_again_if_old(self: &Arc<Self>) {
        if self.since(&self.read_at_ms) < self.max_age
            || self.since(&self.tried_at_ms) < self.min_refresh
            || self.reading.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let jwks = self.clone();
        tokio::spawn(async move {
            jwks.read_again().await;
            jwks.reading.store(false, Ordering::Release);
        });
    }

    /// Reads the set again unless a read was tried less than `min_refresh`
    /// ago: a new `kid` (key rotation) is then found, and a removed one is
    /// gone. A failed read keeps the keys already known.
    async fn read_again(&self) {
        let mut fingerprint = self.last_read.lock().await;
        if self.since(&self.tried_at_ms) < self.min_refresh {
            return;
        }
        let started = self.now_ms();
        self.tried_at_ms.store(started, Ordering::Relaxed);
        match fetch(&self.source, self.client.as_ref(), self.algorithm).await {
            Ok(read) => {
                self.read_at_ms.store(started, Ordering::Relaxed);
                if read.fingerprint != *fingerprint {
                    *fingerprint = read.fingerprint;
                    self.install(read.keys);
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::config::redact_text(&e.to_string()), jwks = %self.source_name(), "JWKS refresh failed; keeping the known keys")
            }
        }
    }
}

/// A JWK set as read: the keys the gateway can use, and a fingerprint of
/// them to tell whether a later read changed anything.
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    fingerprint: u64,
}

/// The JWK key type (`kty`) that verifies `algorithm`'s signatures.
fn key_type(algorithm: jsonwebtoken::Algorithm) -> Option<&'static str> {
    use jsonwebtoken::Algorithm::*;
    Some(match algorithm {
        HS256 | HS384 | HS512 => "oct",
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => "RSA",
        ES256 | ES384 => "EC",
        EdDSA => "OKP",
        _ => return None,
    })
}

/// The config key that names where a set is read from.
fn source_key(source: &JwksSource) -> &'static str {
    match source {
        JwksSource::File(_) => "jwks_file",
        JwksSource::Url { .. } => "jwks_url",
        JwksSource::Discovery { .. } => "issuer",
    }
}

/// Where a set is read from, for log lines.
fn source_name(source: &JwksSource) -> String {
    match source {
        JwksSource::File(path) => path.display().to_string(),
        // Logged: never a credential the URL carries.
        JwksSource::Url { url, .. } => crate::config::redact_text(url),
        JwksSource::Discovery { issuer, .. } => crate::config::redact_text(issuer),
    }
}

/// The client for a JWK set fetched over HTTP (a URL or an issuer's).
fn client_for(source: &JwksSource) -> Result<Option<Outbound>, String> {
    match source {
        JwksSource::File(_) => Ok(None),
        JwksSource::Url { ca_file, .. } | JwksSource::Discovery { ca_file, .. } => {
            Outbound::new(ca_file.as_deref(), Duration::from_secs(5))
                .map(Some)
                .map_err(|e| e.to_string())
        }
    }
}

/// Reads a JWK set from a file, a URL, or the `jwks_uri` an OpenID Connect
/// issuer's discovery document names, keeping the keys that can verify
/// `algorithm`'s signatures.
async fn fetch(
    source: &JwksSource,
    client: Option<&Outbound>,
    algorithm: jsonwebtoken::Algorithm,
) -> Result<KeySet, String> {
    use std::hash::{Hash, Hasher};
    let set = match (source, client) {
        (JwksSource::File(path), _) => {
            // Off the runtime's threads: a refresh must not stall calls.
            let owned = path.clone();
            let bytes = tokio::task::spawn_blocking(move || crate::config::read_file(&owned))
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("{}: not a JWK set: {e}", path.display()))?
        }
        (JwksSource::Url { url, .. }, Some(client)) => client.get_json(url).await?,
        (JwksSource::Discovery { issuer, .. }, Some(client)) => {
            let jwks_uri = discover(client, issuer).await?;
            client.get_json(&jwks_uri).await?
        }
        (_, None) => return Err("no HTTP client for the JWK set".to_owned()),
    };
    let entries = set
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| format!("{}: not a JWK set: no \"keys\" array", source_name(source)))?;
    let mut keys = HashMap::new();
    let mut fingerprint = std::collections::hash_map::DefaultHasher::new();
    let wanted = serde_json::to_value(algorithm).unwrap_or_default();
    // A key this gateway cannot use (another key type or curve, an
    // encryption key, one whose `alg` or `key_ops` say it is for something
    // else, RFC 7517 section 4) is skipped, not fatal: identity providers
    // publish them.
    for entry in entries {
        if entry.get("use").and_then(|u| u.as_str()) == Some("enc") {
            continue;
        }
        if entry.get("alg").is_some_and(|a| *a != wanted) {
            continue;
        }
        if key_type(algorithm).is_some_and(|t| entry.get("kty").and_then(|k| k.as_str()) != Some(t))
        {
            continue;
        }
        if entry
            .get("key_ops")
            .and_then(|o| o.as_array())
            .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
        {
            continue;
        }
        let parsed = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(entry.clone())
            .map_err(|e| e.to_string())
            .and_then(|jwk| {
                let kid = jwk.common.key_id.clone().ok_or("no kid")?;
                DecodingKey::from_jwk(&jwk)
                    .map(|k| (kid, k))
                    .map_err(|e| e.to_string())
            });
        match parsed {
            // Two usable keys under one id: the set's first is the one
            // used, and the set is told to be at fault.
            Ok((kid, _)) if keys.contains_key(&kid) => {
                tracing::warn!(kid, jwks = %source_name(source), "the JWK set has two keys with this kid; the first is used");
            }
            Ok((kid, key)) => {
                entry.to_string().hash(&mut fingerprint);
                keys.insert(kid, key);
            }
            Err(e) => {
                let kid = entry.get("kid").and_then(|k| k.as_str()).unwrap_or("?");
                tracing::debug!(kid, error = %e, "skipping a JWK this gateway cannot use");
            }
        }
    }
    if keys.is_empty() {
        tracing::warn!(
            algorithm = ?algorithm,
            keys = entries.len(),
            jwks = %source_name(source),
            "the JWK set holds no key that verifies this algorithm's signatures; every token is refused (unknown key id) until it does"
        );
    }
    Ok(KeySet {
        keys,
        fingerprint: fingerprint.finish(),
    })
}

/// The `jwks_uri` of an issuer's OpenID Connect discovery document, after
/// checking that the document is the issuer's own (OpenID Connect
/// Discovery 1.0, section 4.3: its `issuer` must equal the URL asked).
async fn discover(client: &Outbound, issuer: &str) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = client.get_json(&url).await?;
    if !doc.is_object() {
        return Err(format!(
            "{url}: the discovery document is not a JSON object"
        ));
    }
    let stated = match doc.get("issuer") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        None => return Err(format!("{url}: the discovery document has no issuer")),
        Some(_) => {
            return Err(format!(
                "{url}: the discovery document's issuer is not a string"
            ))
        }
    };
    if stated != issuer {
        return Err(format!(
            "{url}: the document's issuer {stated:?} is not {issuer:?}"
        ));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{url}: no jwks_uri"))?;
    // Keys for an https issuer come over https too.
    let secure = jwks_uri.starts_with("https://");
    if !(secure || jwks_uri.starts_with("http://") && !issuer.starts_with("https://")) {
        return Err(format!(
            "{url}: jwks_uri {jwks_uri:?} is not an https:// URL (or http:// for an http:// issuer)"
        ));
    }
    Ok(jwks_uri.to_owned())
}

/// The key a PEM public key is for `algorithm`, or why it is not one.
pub fn public_key(pem: &[u8], algorithm: jsonwebtoken::Algorithm) -> Result<DecodingKey, String> {
    use jsonwebtoken::Algorithm::*;
    let (key, kind) = match algorithm {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => (DecodingKey::from_rsa_pem(pem), "RSA"),
        ES256 | ES384 => (DecodingKey::from_ec_pem(pem), "EC"),
        EdDSA => (DecodingKey::from_ed_pem(pem), "Ed25519"),
        alg => return Err(format!("{alg:?} takes a secret, not a public key")),
    };
    key.map_err(|e| {
        // The library's words are a variant's name (`InvalidKeyFormat`):
        // said once, in parentheses, after the plain reason.
        format!("is not a PEM {kind} public key, which {algorithm:?} needs ({e})")
    })
}

async fn load_keys(config: &JwtConfig) -> Result<Keys, (&'static str, String)> {
    Ok(match (&config.key, config.algorithm) {
        (JwtKey::Secret(s), _) => Keys::One(DecodingKey::from_secret(s)),
        // The config read it already, where the file's name is known.
        (JwtKey::PublicPem(pem), alg) => {
            Keys::One(public_key(pem, alg).map_err(|e| ("public_key", e))?)
        }
        (
            JwtKey::Jwks {
                source,
                min_refresh,
                max_age,
            },
            _,
        ) => {
            let client = client_for(source).map_err(|e| ("jwks_ca_file", e))?;
            let read = fetch(source, client.as_ref(), config.algorithm)
                .await
                .map_err(|e| (source_key(source), e))?;
            Keys::Set(Arc::new(Jwks::new(
                source.clone(),
                client,
                config.algorithm,
                read,
                *min_refresh,
                *max_age,
            )))
        }
    })
}

/// Only the configured algorithm is accepted, whatever the token says.
fn validation(config: &JwtConfig) -> Validation {
    let mut validation = Validation::new(config.algorithm);
    validation.leeway = config.leeway.as_secs();
    validation.validate_nbf = true;
    // A token for no audience (or from no issuer) must not pass a route
    // that names its audiences (or issuer).
    let mut required = vec!["exp"];
    if !config.audiences.is_empty() {
        required.push("aud");
    }
    if config.issuer.is_some() {
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
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

/// What was wrong with a token, in words a client can act on (the
/// library's own text for most of these is its variant's name).
fn reason(e: &jsonwebtoken::errors::Error, token: &str) -> String {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        // An `alg` the library has no name for (`none`, a typo): the
        // algorithm's refusal, not the parser's list of variants.
        Json(_) if header_alg_unknown(token) => {
            "it is signed with an algorithm this route does not accept".to_owned()
        }
        Json(e) => format!("its header or claims are not what a JWT holds: {e}"),
        InvalidToken | Base64(_) | Utf8(_) => {
            "it is not a JWT (three base64url parts: a JSON header, JSON claims, a signature)"
                .to_owned()
        }
        InvalidSignature => "its signature does not verify".to_owned(),
        ExpiredSignature => "it has expired (exp)".to_owned(),
        ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
        InvalidIssuer => "it is from another issuer (iss)".to_owned(),
        InvalidAudience => "it is for another audience (aud)".to_owned(),
        InvalidSubject => "its subject (sub) is not accepted".to_owned(),
        InvalidAlgorithm | InvalidAlgorithmName | UnsupportedAlgorithm | MissingAlgorithm => {
            "it is signed with an algorithm this route does not accept".to_owned()
        }
        // The library says "missing" of a claim it could not read as well.
        MissingRequiredClaim(claim) if has_claim(token, claim) => {
            format!("its {claim} claim has the wrong type")
        }
        MissingRequiredClaim(claim) => format!("it has no {claim} claim, which is required"),
        InvalidClaimFormat(claim) => format!("its {claim} claim has the wrong type"),
        _ => "its key does not fit the configured algorithm".to_owned(),
    }
}

/// Part `n` of a token (0 the header, 1 the claims) as JSON, read without
/// verifying anything: only to choose an authenticator or word an error.
fn unverified_part(token: &str, n: usize) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let part = token.split('.').nth(n)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether the token's claims have a member named `claim`.
fn has_claim(token: &str, claim: &str) -> bool {
    unverified_part(token, 1).is_some_and(|c| c.get(claim).is_some())
}

/// Whether the token's header names, as a string, an `alg` that is not a
/// JWS algorithm the library knows (`none` among them).
fn header_alg_unknown(token: &str) -> bool {
    unverified_part(token, 0)
        .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned))
        .is_some_and(|a| a.parse::<jsonwebtoken::Algorithm>().is_err())
}

/// Whether the token's header has a `crit` member.
fn header_has_crit(token: &str) -> bool {
    unverified_part(token, 0).is_some_and(|h| h.get("crit").is_some())
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
            let header =
                jsonwebtoken::decode_header(token).map_err(|e| invalid(reason(&e, token)))?;
            let kid = header
                .kid
                .ok_or_else(|| invalid("no kid in the header".to_owned()))?;
            set_key = match jwks.get(&kid) {
                Some(k) => k,
                None => {
                    // In a task of its own: a call that stops waiting (its
                    // deadline passed) leaves the read to finish for the
                    // calls after it.
                    let reading = jwks.clone();
                    let _ = tokio::spawn(async move { reading.read_again().await }).await;
                    jwks.get(&kid)
                        .ok_or_else(|| invalid(format!("unknown key id {kid:?}")))?
                }
            };
            &set_key
        }
    };
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, validation)
        .map_err(|e| invalid(reason(&e, token)))?;
    // RFC 7515 section 4.1.11: extensions marked critical must be
    // understood, and the gateway understands none.
    if header_has_crit(token) {
        return Err(invalid(
            "its header lists critical extensions (crit) the gateway does not understand"
                .to_owned(),
        ));
    }
    // RFC 7519 section 4.1.1: `iss` is one StringOrURI. The library also
    // takes a list, and passes one holding the issuer: an issuer that
    // signs for others (`["them", "us"]`) would speak for this one.
    if let Some(iss) = data.claims.get("iss") {
        if !iss.is_string() {
            return Err(invalid("its iss claim has the wrong type".to_owned()));
        }
    }
    // The subject is who the call is for (rate limits, usage, `consumers`):
    // tokens without one would all be one and the same caller.
    let subject = data
        .claims
        .get("sub")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("it has no subject: `sub` must be a non-empty string".to_owned()))?
        .to_owned();
    Ok(Principal {
        subject,
        claims: data.claims,
    })
}
