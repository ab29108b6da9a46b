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

/// The route's scopes the principal was not granted (`scope`, `scp` or
/// `scopes`, a space-separated string or a list).
fn lacked_scopes<'a>(rules: &'a AuthorizeConfig, principal: &Principal) -> Vec<&'a String> {
    let granted: Vec<&str> = ["scope", "scp", "scopes"]
        .iter()
        .filter_map(|k| principal.claims.get(*k))
        .flat_map(|v| match v {
            // Space-delimited (RFC 6749 section 3.3): a tab is part of a scope.
            Value::String(s) => s.split(' ').filter(|t| !t.is_empty()).collect::<Vec<_>>(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    rules
        .scopes
        .iter()
        .filter(|scope| !granted.contains(&scope.as_str()))
        .collect()
}

/// Why a principal does not satisfy the rules, if it does not.
pub fn check(rules: &AuthorizeConfig, principal: &Principal) -> Result<(), String> {
    // Everything missing is named at once: a client fixing one thing at a
    // time would be refused once per requirement.
    let mut missing: Vec<String> = Vec::new();
    if let Some(allowed) = &rules.consumers {
        if !allowed.contains(&principal.subject) {
            missing.push(format!(
                "{:?} is not an allowed consumer",
                principal.subject
            ));
        }
    }
    let lacked: Vec<String> = lacked_scopes(rules, principal)
        .into_iter()
        .map(|scope| format!("{scope:?}"))
        .collect();
    match lacked.len() {
        0 => {}
        1 => missing.push(format!("the caller lacks the scope {}", lacked[0])),
        _ => missing.push(format!("the caller lacks the scopes {}", lacked.join(", "))),
    }
    for (claim, wanted) in &rules.claims {
        let ok = match principal.claims.get(claim) {
            Some(Value::Array(items)) => items.iter().any(|i| claim_is(i, wanted)),
            Some(v) => claim_is(v, wanted),
            None => false,
        };
        if !ok {
            missing.push(format!("the claim {claim:?} is not {wanted:?}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Whether one claim value is the configured one: the same string, or a
/// boolean or number that reads as it (`true`, `3`, `3.0` for "3").
fn claim_is(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(s) => s == wanted,
        Value::Bool(b) => wanted == if *b { "true" } else { "false" },
        Value::Number(n) => match (n.as_f64(), wanted.parse::<f64>()) {
            (Some(n), Ok(w)) => n == w,
            _ => false,
        },
        _ => false,
    }
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
            Err(why) => {
                // A bearer token without the scopes: RFC 6750's challenge
                // says which the route needs.
                let bearer = env
                    .ctx
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .is_some_and(|v| {
                        v.as_bytes()
                            .get(..7)
                            .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "))
                    });
                let lacked = env
                    .ctx
                    .principal
                    .as_ref()
                    .is_some_and(|p| !lacked_scopes(&self.0, p).is_empty());
                // RFC 6750 scope tokens: printable ASCII but `"` and `\\`.
                let scope = (bearer && lacked)
                    .then(|| self.0.scopes.join(" "))
                    .filter(|s| {
                        s.bytes()
                            .all(|b| (b.is_ascii_graphic() || b == b' ') && b != b'"' && b != b'\\')
                    });
                Box::pin(std::future::ready(Err(GatewayError::new(
                    ErrorKind::Forbidden { scope },
                    Origin::Client,
                    format!("permission denied: {why}"),
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(scopes: &[&str], claims: &[(&str, &str)]) -> AuthorizeConfig {
        AuthorizeConfig {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            consumers: None,
        }
    }

    fn caller(claims: serde_json::Value) -> Principal {
        Principal {
            subject: "ada".into(),
            claims,
        }
    }

    #[test]
    fn a_claim_matches_whatever_json_type_spells_the_value() {
        let want = rules(&[], &[("tier", "3"), ("admin", "true")]);
        for claims in [
            json!({"tier": "3", "admin": "true"}),
            json!({"tier": 3, "admin": true}),
            json!({"tier": 3.0, "admin": [true]}),
            json!({"tier": [1, 3], "admin": ["false", true]}),
        ] {
            assert_eq!(check(&want, &caller(claims.clone())), Ok(()), "{claims}");
        }
        assert!(check(&want, &caller(json!({"tier": 4, "admin": true}))).is_err());
    }

    #[test]
    fn every_missing_requirement_is_named_at_once() {
        let want = rules(&["a.read", "b.read", "c.read"], &[("tier", "gold")]);
        let why = check(&want, &caller(json!({"scope": "b.read", "tier": "silver"}))).unwrap_err();
        assert_eq!(
            why,
            "the caller lacks the scopes \"a.read\", \"c.read\"; the claim \"tier\" is not \"gold\""
        );
        // A caller who is not on the consumers list is told the rest too.
        let want = AuthorizeConfig {
            consumers: Some(vec!["bob".into()]),
            ..want
        };
        let why = check(&want, &caller(json!({"scope": "b.read", "tier": "silver"}))).unwrap_err();
        assert_eq!(
            why,
            "\"ada\" is not an allowed consumer; the caller lacks the scopes \"a.read\", \"c.read\"; the claim \"tier\" is not \"gold\""
        );
    }
}
