//! Authorization: a route may require scopes and claim values of the
//! principal that authentication established. Runs after authentication,
//! so an unauthenticated caller is told 401, not 403.

pub mod config;

use super::per_route::{Next, Policy};
use crate::config::AuthorizeConfig;
use crate::envelope::{Envelope, Principal, Reply};
use crate::error::{ErrorKind, GatewayError, Origin};
use futures_util::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use tower::Service;

/// Why a principal does not satisfy the rules, if it does not.
pub fn check(rules: &AuthorizeConfig, principal: &Principal) -> Result<(), String> {
    if let Some(allowed) = &rules.consumers {
        if !allowed.contains(&principal.subject) {
            return Err(format!(
                "{:?} is not an allowed consumer",
                principal.subject
            ));
        }
    }
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

/// A route's authorization rules, as a pipeline policy.
pub struct Rules(pub AuthorizeConfig);

impl Policy for Rules {
    fn call(
        self: Arc<Self>,
        env: Envelope,
        mut next: Next,
    ) -> BoxFuture<'static, Result<Reply, GatewayError>> {
        let verdict = match &env.ctx.principal {
            Some(p) => check(&self.0, p),
            None => Err("no authenticated principal".to_owned()),
        };
        match verdict {
            Ok(()) => Box::pin(async move { next.call(env).await }),
            Err(why) => Box::pin(std::future::ready(Err(GatewayError::new(
                ErrorKind::Forbidden,
                Origin::Client,
                format!("permission denied: {why}"),
            )))),
        }
    }
}
