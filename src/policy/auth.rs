//! Authentication: a route with authenticators only lets through calls
//! whose credential verifies; the verified identity becomes the call's
//! principal. Tokens, keys, cookies and the client certificate are read
//! from the request as the request edge made it (the same for every
//! protocol, with credentials from a query or a WebSocket subprotocol
//! already lifted), so this layer never knows the protocol.
//!
//! A route may list several authenticators: they are tried in the order
//! listed, and the first whose kind of credential the call carries
//! decides (see [`Authenticator::applies`]); a failure there is final.

pub mod client_cert;
pub mod config;
pub mod introspection;
pub mod jwt;

use super::per_route::{Next, Policy};
use crate::config::{ApiKeyConfig, AuthMethod, AuthenticatorConfig};
use crate::envelope::{Envelope, Principal, Reply};
use crate::error::GatewayError;
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tower::Service;

/// One configured authenticator.
pub struct Authenticator {
    verifier: Verifier,
    forward_claims: Vec<(String, http::HeaderName)>,
    strip_credential: bool,
}

enum Verifier {
    Jwt(jwt::JwtVerifier),
    ApiKey(ApiKeyConfig),
    Introspection(Arc<introspection::Introspector>),
    ClientCert(crate::config::ClientCertConfig),
}

impl Authenticator {
    /// Builds the verifier; a JWK set or an issuer's discovery document is
    /// read now, so a bad one fails startup. An error names the key of the
    /// authenticator's table at fault when there is one (`jwks_file`).
    pub async fn load(
        config: &AuthenticatorConfig,
    ) -> Result<Authenticator, (Option<&'static str>, String)> {
        let verifier = match &config.method {
            AuthMethod::ApiKey(keys) => Verifier::ApiKey(keys.clone()),
            AuthMethod::Jwt(jwt) => Verifier::Jwt(
                jwt::JwtVerifier::load(jwt)
                    .await
                    .map_err(|(key, e)| (Some(key), e))?,
            ),
            AuthMethod::Introspection(c) => Verifier::Introspection(Arc::new(
                introspection::Introspector::new(c).map_err(|e| (None, e))?,
            )),
            AuthMethod::ClientCert(c) => Verifier::ClientCert(c.clone()),
        };
        Ok(Authenticator {
            verifier,
            forward_claims: config.forward_claims.clone(),
            strip_credential: config.strip_credential,
        })
    }

    /// What a reload that changed no file does to the authenticator
    /// serving: takes the key set the reload read (`fresh`'s), when it
    /// differs from the one in use, and forgets cached introspection
    /// answers, as a new generation would start without them.
    pub async fn refresh_from(&self, fresh: &Authenticator) {
        match (&self.verifier, &fresh.verifier) {
            (Verifier::Jwt(ours), Verifier::Jwt(theirs)) => {
                ours.adopt_keys(theirs).await;
            }
            (Verifier::Introspection(ours), _) => ours.forget_answers(),
            _ => {}
        }
    }

    /// Whether the call carries the kind of credential this authenticator
    /// reads: a bearer token shaped like a JWT (or the JWT cookie), any
    /// bearer token (introspection), the API-key header, a client certificate.
    pub fn applies(&self, env: &Envelope) -> bool {
        match &self.verifier {
            // A JWT signed with another algorithm, or from another
            // issuer, is left to the route's next JWT authenticator.
            Verifier::Jwt(v) => match bearer(env) {
                Some(token) if jwt::looks_like_jwt(token) => v.meant_for(token),
                _ => v
                    .cookie
                    .as_deref()
                    .and_then(|c| cookie_value(env, c))
                    .is_some_and(|token| v.meant_for(&token)),
            },
            Verifier::Introspection(_) => bearer(env).is_some(),
            Verifier::ApiKey(c) => env.ctx.headers.contains_key(&c.header),
            Verifier::ClientCert(_) => env.ctx.client_cert.is_some(),
        }
    }

    /// The kind of header credential this authenticator reads, if any:
    /// a call carrying two kinds on one route is refused.
    fn credential_present(&self, env: &Envelope) -> Option<String> {
        match &self.verifier {
            Verifier::Jwt(v) => match &v.cookie {
                _ if bearer(env).is_some() => Some("a bearer token".to_owned()),
                Some(c) if cookie_value(env, c).is_some() => {
                    Some(format!("the session cookie {c}"))
                }
                _ => None,
            },
            Verifier::Introspection(_) => bearer(env).map(|_| "a bearer token".to_owned()),
            Verifier::ApiKey(c) => env
                .ctx
                .headers
                .contains_key(&c.header)
                .then(|| format!("an API key in {}", c.header)),
            Verifier::ClientCert(_) => None,
        }
    }

    /// The request headers (and cookie) this authenticator reads its
    /// credential from.
    fn reads(&self) -> Vec<CredentialPlace> {
        match &self.verifier {
            Verifier::Jwt(v) => {
                let mut places = vec![CredentialPlace::Header(http::header::AUTHORIZATION)];
                if let Some(name) = &v.cookie {
                    places.push(CredentialPlace::Cookie(name.clone()));
                }
                places
            }
            Verifier::Introspection(_) => {
                vec![CredentialPlace::Header(http::header::AUTHORIZATION)]
            }
            Verifier::ApiKey(c) => vec![CredentialPlace::Header(c.header.clone())],
            Verifier::ClientCert(_) => Vec::new(),
        }
    }

    /// Whether the call carries this authenticator's session cookie.
    fn carries_session_cookie(&self, env: &Envelope) -> bool {
        match &self.verifier {
            Verifier::Jwt(v) => v
                .cookie
                .as_deref()
                .is_some_and(|c| cookie_value(env, c).is_some()),
            _ => false,
        }
    }

    /// Whether this authenticator reads bearer tokens.
    fn reads_bearer(&self) -> bool {
        matches!(self.verifier, Verifier::Jwt(_) | Verifier::Introspection(_))
    }

    /// What this authenticator needs, for the error of a call with no credential.
    /// What a call may carry for this authenticator, each a way of its own
    /// (so a route's list names a bearer token once however many read one).
    fn needs(&self) -> Vec<String> {
        match &self.verifier {
            Verifier::Jwt(v) => match &v.cookie {
                Some(c) => vec![
                    "a bearer token".to_owned(),
                    format!("the session cookie {c}"),
                ],
                None => vec!["a bearer token".to_owned()],
            },
            Verifier::Introspection(_) => vec!["a bearer token".to_owned()],
            Verifier::ApiKey(c) => vec![format!("an API key in {}", c.header)],
            Verifier::ClientCert(_) => vec!["a client certificate (mutual TLS)".to_owned()],
        }
    }

    /// Verifies the call's credential; on success the envelope carries the
    /// principal, the forwarded claims, and (if so configured) no credential.
    pub async fn authenticate(&self, env: &mut Envelope) -> Result<(), GatewayError> {
        let principal = match &self.verifier {
            Verifier::Jwt(v) => {
                let cookie = v.cookie.as_deref();
                let from_header = bearer(env).map(str::to_owned);
                let token = from_header
                    .or_else(|| cookie.and_then(|name| cookie_value(env, name)))
                    .ok_or_else(|| {
                        GatewayError::unauthenticated(
                            true,
                            format!(
                                "{}this route needs {}",
                                other_scheme(env),
                                self.needs().join(" or ")
                            ),
                        )
                    })?;
                let principal = v.verify(&token).await?;
                if self.strip_credential {
                    env.metadata.remove(http::header::AUTHORIZATION);
                    if let Some(name) = cookie {
                        strip_cookie(&mut env.metadata, name);
                    }
                }
                principal
            }
            Verifier::Introspection(v) => {
                let token = bearer(env).map(str::to_owned).ok_or_else(|| {
                    GatewayError::unauthenticated(
                        true,
                        format!("{}this route needs a bearer token", other_scheme(env)),
                    )
                })?;
                let principal = v.verify(&token).await?;
                if self.strip_credential {
                    env.metadata.remove(http::header::AUTHORIZATION);
                }
                principal
            }
            Verifier::ApiKey(config) => {
                let principal = api_key(config, env)?;
                if self.strip_credential {
                    env.metadata.remove(&config.header);
                }
                principal
            }
            Verifier::ClientCert(config) => Arc::new(client_cert::principal(
                config,
                env.ctx.client_cert.as_deref(),
            )?),
        };
        for (claim, header) in &self.forward_claims {
            let value = match principal.claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => continue,
                // Nothing to forward: no header, rather than an empty one a
                // backend might read as present.
                Some(serde_json::Value::Array(items)) if items.is_empty() => continue,
                Some(serde_json::Value::Array(items)) => {
                    items.iter().map(list_item).collect::<Vec<_>>().join(",")
                }
                Some(other) => other.to_string(),
            };
            // gRPC metadata carries printable ASCII; anything else goes, as
            // the gRPC spec says, base64 in the `-bin` header of that name,
            // and so does a value a header would not carry exactly (a space
            // at either end).
            let (name, v) = if crate::headers::carries_as_written(value.as_bytes()) {
                (header.clone(), http::HeaderValue::from_str(&value).ok())
            } else {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&value);
                (
                    crate::headers::binary_twin(header),
                    http::HeaderValue::from_str(&encoded).ok(),
                )
            };
            if let Some(v) = v {
                // The policies after this one (a rate limit or a cache keyed
                // on the header, a balancer hashing it) see the verified
                // value too, never the one a client may have sent.
                Arc::make_mut(&mut env.ctx.headers).insert(name.clone(), v.clone());
                env.metadata.insert(name, v);
            }
        }
        env.ctx
            .record
            .principal(&env.target, env.ctx.aggregate_call, &principal);
        env.ctx.principal = Some(principal);
        Ok(())
    }
}

/// An array claim's item as its forwarded header lists it: a string as
/// it is, anything else as its JSON text, with `%`, `,`, space and tab
/// percent-encoded so that a backend splitting the header on commas (and
/// trimming each piece, as HTTP lists are read) gets each item back whole:
/// `["a", "b,admin"]` or `["a", " admin"]` must never read as a role
/// `admin` the token did not grant.
fn list_item(item: &serde_json::Value) -> String {
    let text = match item {
        serde_json::Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            ',' => out.push_str("%2C"),
            ' ' => out.push_str("%20"),
            '\t' => out.push_str("%09"),
            c => out.push(c),
        }
    }
    out
}

/// Removes the cookie `name` from the backend's `cookie` metadata (when
/// `metadata.forward` lets cookies through), keeping the others; no
/// `cookie` header is left when nothing else was in it.
fn strip_cookie(metadata: &mut http::HeaderMap, name: &str) {
    let kept: Vec<String> = crate::headers::cookie_pairs(metadata)
        .filter(|(k, _)| *k != name)
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.to_owned(),
        })
        .collect();
    metadata.remove(http::header::COOKIE);
    if kept.is_empty() {
        return;
    }
    if let Ok(v) = http::HeaderValue::from_str(&kept.join("; ")) {
        metadata.insert(http::header::COOKIE, v);
    }
}

/// The consumer whose key the call carries.
fn api_key(config: &ApiKeyConfig, env: &Envelope) -> Result<Arc<Principal>, GatewayError> {
    // Two different keys were refused by the pipeline's first policy
    // (policy::one_credential): the first value is the one.
    let sent = env.ctx.headers.get(&config.header).ok_or_else(|| {
        GatewayError::unauthenticated(
            true,
            format!("this route needs an API key in {}", config.header),
        )
    })?;
    // No key is stored that is not visible ASCII text.
    let key = sent.to_str().map_err(|_| {
        GatewayError::unauthenticated(
            true,
            format!(
                "unknown API key: the {} header holds bytes that are not visible ASCII text, as every key is",
                config.header
            ),
        )
    })?;
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let consumer = config
        .consumers
        .iter()
        .find(|(_, stored)| *stored == digest)
        .map(|(name, _)| name.clone())
        // Not a bearer token's failure: on a route that also takes tokens,
        // the challenge asks for one without calling this key a bad token.
        .ok_or_else(|| GatewayError::unauthenticated(true, "unknown API key"))?;
    Ok(Arc::new(Principal {
        // The claims of API_KEY_CLAIMS, which config checks rules against.
        claims: serde_json::json!({"sub": consumer, "consumer": consumer}),
        subject: consumer,
    }))
}

/// The claims an API key's consumer has: a rule on another can never be met.
pub const API_KEY_CLAIMS: [&str; 2] = ["sub", "consumer"];

/// Where a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CredentialPlace {
    Header(http::HeaderName),
    Cookie(String),
}

/// A route's authenticators, in the order they are tried, and the headers
/// they write (every one's `forward_claims`, with `-bin` twins).
pub struct RouteAuth {
    authenticators: Vec<Arc<Authenticator>>,
    claim_headers: Arc<[http::HeaderName]>,
}

impl RouteAuth {
    pub fn new(authenticators: Vec<Arc<Authenticator>>) -> RouteAuth {
        let mut claim_headers = Vec::new();
        for a in &authenticators {
            for (_, header) in &a.forward_claims {
                for name in [header.clone(), crate::headers::binary_twin(header)] {
                    if !claim_headers.contains(&name) {
                        claim_headers.push(name);
                    }
                }
            }
        }
        RouteAuth {
            authenticators,
            claim_headers: claim_headers.into(),
        }
    }

    /// Authenticates with the first authenticator that applies. With none
    /// applying: a call with no credential at all is told what the route
    /// takes; one with an `Authorization` header none applies to gets the
    /// verdict of the first authenticator that reads bearer tokens.
    pub async fn authenticate(&self, env: &mut Envelope) -> Result<(), GatewayError> {
        // The headers authenticators write are the gateway's alone: a value
        // the client sent never reaches the backend or a later policy,
        // whichever authenticator decides and whatever claims it has.
        for name in self.claim_headers.iter() {
            if env.ctx.headers.contains_key(name) {
                Arc::make_mut(&mut env.ctx.headers).remove(name);
            }
            env.metadata.remove(name);
        }
        env.ctx.claim_headers = Some(self.claim_headers.clone());
        // Two kinds of credential are two credentials: whichever decides,
        // a backend or a later policy could believe the other. (Two of one
        // kind, a session cookie beside a different token among them, the
        // pipeline's first policy refused: policy::one_credential.)
        if self.authenticators.len() > 1 {
            let mut kinds: Vec<String> = self
                .authenticators
                .iter()
                .filter_map(|a| a.credential_present(env))
                .collect();
            kinds.dedup();
            if kinds.len() > 1 {
                // Named by the header at fault when a bearer token is one
                // of them; otherwise by no one field.
                let field = if kinds.iter().any(|k| k == "a bearer token") {
                    "authorization"
                } else {
                    ""
                };
                return Err(crate::policy::one_credential::two_credentials(
                    field,
                    &kinds.join(" and "),
                ));
            }
        }
        let result = self.authenticate_with_one(env).await;
        if result.is_ok() && self.authenticators.len() > 1 {
            self.drop_unverified(env);
        }
        if self.authenticators.iter().any(|a| a.reads_bearer()) {
            result
        } else {
            result.map_err(GatewayError::without_bearer_challenge)
        }
    }

    /// Removes from the backend's metadata a credential another of the
    /// route's authenticators reads but the deciding one did not verify (a
    /// bearer token beside the client certificate that decided): a backend
    /// behind an authenticating route may trust what reaches it.
    fn drop_unverified(&self, env: &mut Envelope) {
        let verified = self.authenticators[env.ctx.authenticated_by].reads();
        for other in &self.authenticators {
            for place in other.reads() {
                if verified.contains(&place) {
                    continue;
                }
                // Gone for the backend and for the policies after this one
                // (an authorization service's `include_headers`, a key).
                match place {
                    CredentialPlace::Header(name) => {
                        env.metadata.remove(&name);
                        if env.ctx.headers.contains_key(&name) {
                            env.ctx.policy_headers_mut().remove(&name);
                        }
                    }
                    CredentialPlace::Cookie(name) => {
                        strip_cookie(&mut env.metadata, &name);
                        if env.ctx.headers.contains_key(http::header::COOKIE) {
                            strip_cookie(env.ctx.policy_headers_mut(), &name);
                        }
                    }
                }
            }
        }
    }

    /// Picks the authenticator that applies and lets it decide.
    async fn authenticate_with_one(&self, env: &mut Envelope) -> Result<(), GatewayError> {
        // By its place in the route's list, which the cache keys on.
        let chosen = match self.authenticators.as_slice() {
            [_] => 0,
            all => match all.iter().position(|a| a.applies(env)) {
                Some(i) => i,
                // A bearer token no authenticator applies to: the verdict
                // of the first that reads bearer tokens ("invalid token").
                None if bearer(env).is_some() => {
                    all.iter().position(|a| a.reads_bearer()).unwrap_or(0)
                }
                None => match all.iter().position(|a| a.carries_session_cookie(env)) {
                    // A session cookie whose token no authenticator applies
                    // to (another issuer's): the verdict of the first whose
                    // cookie it is, as for a bearer token.
                    Some(i) => i,
                    // Another scheme (`Basic`) is told everything the route
                    // takes, as a call with no credential is.
                    None => {
                        let mut needs: Vec<String> = Vec::new();
                        for need in all.iter().flat_map(|a| a.needs()) {
                            if !needs.contains(&need) {
                                needs.push(need);
                            }
                        }
                        return Err(GatewayError::unauthenticated(
                            true,
                            format!(
                                "{}this route needs {}",
                                other_scheme(env),
                                needs.join(" or ")
                            ),
                        ));
                    }
                },
            },
        };
        env.ctx.authenticated_by = chosen;
        self.authenticators[chosen].authenticate(env).await
    }
}

impl Policy for RouteAuth {
    fn call(
        self: Arc<Self>,
        mut env: Envelope,
        mut next: Next,
    ) -> BoxFuture<'static, Result<Reply, GatewayError>> {
        Box::pin(async move {
            // Refused before the backend is ever called; an identity
            // service (introspection, a JWK set read for a new key id) is
            // waited on no longer than the call has left.
            let deadline = env.deadline();
            super::within_deadline(
                deadline,
                "its credential was verified (the identity service had not answered; the backend was not called)",
                self.authenticate(&mut env),
            )
            .await??;
            next.call(env).await
        })
    }
}

/// Said before "this route needs ..." when the call's `Authorization`
/// uses another scheme (`Basic`): otherwise it reads as if no credential
/// were sent. `Bearer` with no token is no credential, not another scheme.
fn other_scheme(env: &Envelope) -> &'static str {
    let Some(value) = env.ctx.headers.get(http::header::AUTHORIZATION) else {
        return "";
    };
    let names_bearer = value
        .as_bytes()
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer"));
    if !names_bearer {
        "the Authorization header is not a bearer token; "
    } else if bearer(env).is_none() {
        // Seen and refused, not missing: `Bearer` alone, or a tab for the space.
        "the Authorization header names Bearer but carries no token after it (write \"Bearer\", one space, the token); "
    } else {
        ""
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(env: &Envelope) -> Option<&str> {
    crate::headers::bearer_token(&env.ctx.headers)
}

/// A cookie's value from the call's `cookie` metadata (every value of its
/// name is the same one: the pipeline's first policy refused two).
fn cookie_value(env: &Envelope, name: &str) -> Option<String> {
    crate::headers::cookie_values(&env.ctx.headers, name)
        .next()
        .map(str::to_owned)
}
