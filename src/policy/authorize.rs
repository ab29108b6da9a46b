//! Authorization: a route may require scopes and claim values of the
//! principal that authentication established. Runs after authentication,
//! so an unauthenticated caller is told 401, not 403.

use crate::config::AuthorizeConfig;
use crate::envelope::{Envelope, Principal, Reply};
use crate::error::{ErrorKind, GatewayError, Origin};
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Why a principal does not satisfy the rules, if it does not.
pub fn check(rules: &AuthorizeConfig, principal: &Principal) -> Result<(), String> {
    let granted: Vec<&str> = ["scope", "scp", "scopes"]
        .iter()
        .filter_map(|k| principal.claims.get(*k))
        .flat_map(|v| match v {
            Value::String(s) => s.split_whitespace().collect::<Vec<_>>(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    for scope in &rules.scopes {
        if !granted.contains(&scope.as_str()) {
            return Err(format!("the token lacks the scope {scope:?}"));
        }
    }
    for (claim, wanted) in &rules.claims {
        let ok = match principal.claims.get(claim) {
            Some(Value::String(s)) => s == wanted,
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(wanted.as_str())),
            Some(Value::Bool(b)) => wanted == if *b { "true" } else { "false" },
            Some(Value::Number(n)) => wanted.parse::<serde_json::Number>().is_ok_and(|w| w == *n),
            Some(_) => false,
            None => false,
        };
        if !ok {
            return Err(format!("the claim {claim:?} is not {wanted:?}"));
        }
    }
    Ok(())
}

/// Rules by route index (`None`: nothing beyond authentication).
#[derive(Clone)]
pub struct AuthorizeLayer {
    by_route: Arc<Vec<Option<AuthorizeConfig>>>,
}

impl AuthorizeLayer {
    pub fn new(by_route: Vec<Option<AuthorizeConfig>>) -> Self {
        AuthorizeLayer {
            by_route: Arc::new(by_route),
        }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            by_route: self.by_route.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    by_route: Arc<Vec<Option<AuthorizeConfig>>>,
}

impl<S> Service<Envelope> for Authorize<S>
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

    fn call(&mut self, env: Envelope) -> Self::Future {
        if let Some(Some(rules)) = self.by_route.get(env.target.route) {
            let verdict = match &env.ctx.principal {
                Some(p) => check(rules, p),
                None => Err("no authenticated principal".to_owned()),
            };
            if let Err(why) = verdict {
                let err = GatewayError::new(
                    ErrorKind::Forbidden,
                    Origin::Client,
                    format!("permission denied: {why}"),
                );
                return Box::pin(std::future::ready(Err(err)));
            }
        }
        Box::pin(self.inner.call(env))
    }
}
