//! `routes[].authorize`: what a route's principal must hold.

use crate::config::{file, ConfigError, Validator};

/// What a route's principal must hold, checked after authentication.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthorizeConfig {
    pub scopes: Vec<String>,
    pub claims: Vec<(String, String)>,
    /// An allow-list of principals (the consumer of an API key, the `sub`
    /// of a token); `None` allows any.
    pub consumers: Option<Vec<String>>,
}

impl Validator<'_> {
    pub(crate) fn authorize(
        &self,
        k: &str,
        a: &file::AuthorizeFile,
    ) -> Result<AuthorizeConfig, ConfigError> {
        if a.consumers.is_none() && a.scopes.is_empty() && a.claims.is_empty() {
            return Err(self.err(
                k,
                "names no rule (consumers, scopes or claims): it would allow everyone; leave it out, or say what to require",
            ));
        }
        Ok(AuthorizeConfig {
            consumers: match &a.consumers {
                Some(list) if list.is_empty() => {
                    return Err(self.err(
                        format!("{k}.consumers"),
                        "an empty list would refuse everyone; leave it out to allow any",
                    ))
                }
                other => other.clone(),
            },
            scopes: {
                for (i, scope) in a.scopes.iter().enumerate() {
                    // RFC 6749's scope-token: a token's `scope` is split at
                    // spaces, so a scope holding one is no scope.
                    if scope.is_empty() || scope.contains(' ') {
                        return Err(self.err(
                            format!("{k}.scopes[{i}]"),
                            format!("{scope:?} is not one scope: a token's scopes are one string split at spaces, so each entry is one non-empty scope without spaces (list several scopes as several entries, all of which are required)"),
                        ));
                    }
                }
                a.scopes.clone()
            },
            claims: a
                .claims
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}
