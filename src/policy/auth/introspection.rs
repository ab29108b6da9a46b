//! OAuth 2.0 token introspection (RFC 7662): an opaque bearer token is
//! sent to the authorization server, whose answer says whether it is
//! active and what it grants. Answers are cached by the token's SHA-256
//! (never the token itself): an active one until its `exp` (at most
//! `cache_ttl`), an inactive one for `negative_cache_ttl`. Concurrent
//! calls with one token share one introspection. An endpoint that does
//! not answer is a 503 / UNAVAILABLE, never a pass.

use super::jwt::unix_now;
use crate::config::{ClientAuth, IntrospectionConfig};
use crate::envelope::Principal;
use crate::error::GatewayError;
use crate::policy::outbound::Outbound;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Introspector {
    config: IntrospectionConfig,
    client: Outbound,
    /// Answers by (the cache's era, the token's digest).
    answers: moka::future::Cache<AnswerKey, Arc<Cached>>,
    /// Bumped by a reload: an answer asked for before it, still in flight,
    /// is kept under the old era, where no one looks.
    era: std::sync::atomic::AtomicU64,
    /// The `Authorization: Basic` value, made once.
    basic: http::HeaderValue,
}

/// What the authorization server said of a token.
#[derive(Debug)]
enum Verdict {
    Active(Arc<Principal>),
    /// Inactive, expired, or for someone else: why.
    Refused(String),
}

/// A verdict and how long it may be kept.
#[derive(Debug)]
struct Cached {
    verdict: Verdict,
    ttl: Duration,
}

/// Each answer stays cached for its own time to live.
struct AnswerExpiry;

type AnswerKey = (u64, [u8; 32]);

impl moka::Expiry<AnswerKey, Arc<Cached>> for AnswerExpiry {
    fn expire_after_create(
        &self,
        _key: &AnswerKey,
        value: &Arc<Cached>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl Introspector {
    pub fn new(config: &IntrospectionConfig) -> Result<Introspector, String> {
        use base64::Engine as _;
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&config.client_id),
            enc(&config.client_secret.0)
        ));
        Ok(Introspector {
            client: Outbound::new(config.ca_file.as_deref(), config.timeout)?,
            era: std::sync::atomic::AtomicU64::new(0),
            answers: moka::future::Cache::builder()
                .max_capacity(config.cache_max_entries)
                .expire_after(AnswerExpiry)
                .build(),
            basic: http::HeaderValue::from_str(&format!("Basic {basic}"))
                .map_err(|_| "the client id or secret makes no valid header".to_owned())?,
            config: config.clone(),
        })
    }

    /// Forgets every cached answer: a reload, whatever it finds, starts
    /// the cache empty (an operator's way to drop a revoked token).
    pub fn forget_answers(&self) {
        self.era.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.answers.invalidate_all();
    }

    /// The principal of an active token.
    pub async fn verify(self: &Arc<Self>, token: &str) -> Result<Arc<Principal>, GatewayError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let key = (self.era.load(std::sync::atomic::Ordering::Acquire), digest);
        let cached = match self.answers.get(&key).await {
            Some(cached) => cached,
            // Asked in a task of its own: an answer that comes after this
            // call's deadline is still kept for the calls after it. One
            // introspection per token at a time; failures are not cached.
            None => {
                let this = self.clone();
                let token = token.to_owned();
                tokio::spawn(async move {
                    this.answers
                        .try_get_with(key, async {
                            let (verdict, ttl) = this.introspect(&token).await?;
                            Ok::<_, GatewayError>(Arc::new(Cached { verdict, ttl }))
                        })
                        .await
                        .map_err(|e: Arc<GatewayError>| (*e).clone())
                })
                .await
                .map_err(|e| unavailable(format!("the question was not asked: {e}")))??
            }
        };
        match &cached.verdict {
            Verdict::Active(p) if !expired(p) => Ok(p.clone()),
            Verdict::Active(_) => Err(GatewayError::unauthenticated(
                false,
                "invalid token: the token has expired",
            )),
            Verdict::Refused(why) => Err(GatewayError::unauthenticated(
                false,
                format!("invalid token: {why}"),
            )),
        }
    }

    /// Asks the endpoint; the verdict and how long it may be kept.
    async fn introspect(&self, token: &str) -> Result<(Verdict, Duration), GatewayError> {
        let c = &self.config;
        let req = self
            .request(token)
            .map_err(|e| unavailable(e.to_string()))?;
        let answer = self.client.send(req).await.map_err(|e| unavailable(e.0))?;
        if !answer.status.is_success() {
            return Err(unavailable(format!(
                "the endpoint answered {}",
                answer.status
            )));
        }
        let claims: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| unavailable(format!("not a JSON answer: {e}")))?;
        // RFC 7662 section 2.2: the answer is a JSON object. `null` or an
        // array says nothing of the token: the endpoint is broken, not the
        // token inactive (which would be cached as such).
        if !claims.is_object() {
            return Err(unavailable(format!(
                "the answer is JSON but not an object: {}",
                crate::error::shortened(&claims.to_string(), 64)
            )));
        }
        let negative = |why: &str| Ok((Verdict::Refused(why.to_owned()), c.negative_cache_ttl));
        if claims.get("active") != Some(&Value::Bool(true)) {
            return negative("the token is not active");
        }
        let now = unix_now();
        // NumericDate: seconds, possibly with a fraction. A member of
        // another type (a string, null) refuses the token: read as absent,
        // an expired token would pass.
        let Ok(exp) = numeric_date(&claims, "exp") else {
            return negative("the answer's exp is not a NumericDate (a number of seconds)");
        };
        if exp.is_some_and(|e| e <= now) {
            return negative("the token has expired");
        }
        match numeric_date(&claims, "nbf") {
            Err(()) => {
                return negative("the answer's nbf is not a NumericDate (a number of seconds)")
            }
            Ok(Some(nbf)) if nbf > now => return negative("the token is not valid yet"),
            Ok(_) => {}
        }
        // An active refresh token is not an access token.
        if claims
            .get("token_type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.to_ascii_lowercase().contains("refresh"))
        {
            return negative("a refresh token is not an access token");
        }
        if let Some(iss) = &c.issuer {
            match claims.get("iss") {
                None | Some(Value::Null) => {
                    return negative("the answer names no issuer (iss), which is required")
                }
                Some(found) if found.as_str() != Some(iss) => {
                    return negative("the token is from another issuer")
                }
                Some(_) => {}
            }
        }
        if !c.audiences.is_empty() {
            if matches!(claims.get("aud"), None | Some(Value::Null)) {
                return negative("the answer names no audience (aud), which is required");
            }
            if !audience_matches(&claims, &c.audiences) {
                return negative("the token is for another audience");
            }
        }
        let ttl = match exp {
            // Past its exp the answer refuses the token (see `expired`):
            // kept that much longer, it spares the endpoint a pointless question.
            Some(e) => c
                .cache_ttl
                .min(Duration::from_secs(e - now) + c.negative_cache_ttl),
            None => c.cache_ttl,
        };
        let Some(subject) = ["sub", "username", "client_id"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
        else {
            return negative(
                "the introspection answer names no subject (sub, username or client_id)",
            );
        };
        // `sub` is the subject however it was found (a `sub` that is no
        // string was passed over), so `forward_claims` and
        // `authorize` see the principal the policies count.
        let mut claims = claims;
        if let Value::Object(map) = &mut claims {
            map.insert("sub".to_owned(), Value::String(subject.clone()));
        }
        Ok((
            Verdict::Active(Arc::new(Principal { subject, claims })),
            ttl,
        ))
    }
}

impl Introspector {
    /// The RFC 7662 request: the token, and the gateway's credentials.
    fn request(&self, token: &str) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let c = &self.config;
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token);
        form.append_pair("token_type_hint", "access_token");
        let mut req = http::Request::post(&c.url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        match c.client_auth {
            ClientAuth::Basic => req = req.header(http::header::AUTHORIZATION, self.basic.clone()),
            ClientAuth::Post => {
                form.append_pair("client_id", &c.client_id);
                form.append_pair("client_secret", &c.client_secret.0);
            }
        }
        req.body(Full::new(Bytes::from(form.finish())))
    }
}

fn expired(p: &Principal) -> bool {
    numeric_date(&p.claims, "exp").is_ok_and(|e| e.is_some_and(|e| e <= unix_now()))
}

/// A NumericDate member in whole seconds (a fraction is dropped): `None`
/// when absent, an error when it is there but not a number of seconds.
fn numeric_date(claims: &Value, name: &str) -> Result<Option<u64>, ()> {
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    // Seconds that fit in 64 bits, as a JWT's NumericDate must: `1e20`
    // would never expire, `-5` has long passed.
    v.as_u64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| (0.0..18_446_744_073_709_551_616.0).contains(f))
                .map(|f| f as u64)
        })
        .map(Some)
        .ok_or(())
}

fn audience_matches(claims: &Value, wanted: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(a)) => wanted.contains(a),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .any(|a| wanted.iter().any(|w| w == a)),
        _ => false,
    }
}

/// The endpoint gave no usable answer: the details (never the token)
/// go to the log, the client only learns the token could not be checked.
fn unavailable(why: String) -> GatewayError {
    tracing::warn!(error = %crate::config::redact_text(&why), "token introspection failed");
    GatewayError::policy_service_unavailable("the token introspection endpoint did not answer")
}
