//! Authentication: a route with an authenticator only lets through calls
//! whose bearer token verifies; the verified claims become the call's
//! principal. Tokens come from the `authorization` metadata every ingress
//! fills the same way (REST and gRPC headers, a WebSocket's cookie, query
//! parameter or subprotocol token), so this layer never knows the protocol.

use crate::config::{AuthenticatorConfig, JwtKey};
use crate::envelope::{Envelope, Principal, Reply};
use crate::error::GatewayError;
use futures_util::future::BoxFuture;
use jsonwebtoken::{DecodingKey, Validation};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// One configured JWT verifier.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(config: &AuthenticatorConfig) -> Result<Authenticator, String> {
        use jsonwebtoken::Algorithm::*;
        let key = match (&config.key, config.algorithm) {
            (JwtKey::Secret(s), _) => Ok(DecodingKey::from_secret(s)),
            (JwtKey::PublicPem(pem), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
                DecodingKey::from_rsa_pem(pem)
            }
            (JwtKey::PublicPem(pem), ES256 | ES384) => DecodingKey::from_ec_pem(pem),
            (JwtKey::PublicPem(pem), EdDSA) => DecodingKey::from_ed_pem(pem),
            (JwtKey::PublicPem(_), alg) => {
                return Err(format!("{alg:?} takes a secret, not a public key"))
            }
        }
        .map_err(|e| format!("authenticators.{}: bad public key: {e}", config.name))?;
        // Only the configured algorithm is accepted, whatever the token says.
        let mut validation = Validation::new(config.algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        if config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audiences);
        }
        Ok(Authenticator { key, validation })
    }

    /// The principal of a valid token.
    pub fn verify(&self, token: &str) -> Result<Principal, GatewayError> {
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|e| GatewayError::unauthenticated(false, format!("invalid token: {e}")))?;
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
}

/// Authenticators by route index (`None`: the route is open).
#[derive(Clone)]
pub struct AuthLayer {
    by_route: Arc<Vec<Option<Arc<Authenticator>>>>,
}

impl AuthLayer {
    pub fn new(by_route: Vec<Option<Arc<Authenticator>>>) -> Self {
        AuthLayer {
            by_route: Arc::new(by_route),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            by_route: self.by_route.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    by_route: Arc<Vec<Option<Arc<Authenticator>>>>,
}

/// The token of `authorization: Bearer <token>`.
fn bearer(env: &Envelope) -> Option<&str> {
    let value = env
        .metadata
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<S> Service<Envelope> for Auth<S>
where
    S: Service<Envelope, Response = Reply, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Reply, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut env: Envelope) -> Self::Future {
        if let Some(Some(authenticator)) = self.by_route.get(env.target.route) {
            let verified = match bearer(&env) {
                None => Err(GatewayError::unauthenticated(
                    true,
                    "this route needs a bearer token",
                )),
                Some(token) => authenticator.verify(token),
            };
            match verified {
                Ok(principal) => env.ctx.principal = Some(Arc::new(principal)),
                // Refused before the backend is ever called.
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            }
        }
        Box::pin(self.inner.call(env))
    }
}
