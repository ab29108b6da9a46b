//! `[[routes]]`: a service routed to an upstream, with its policies, and
//! google.api.http rules given in the config.

use crate::config::{file, ConfigError, Validator};
use crate::ingress::cors::config::CorsPolicy;
use crate::policy::authorize::config::AuthorizeConfig;
use crate::policy::cache::config::CacheConfig;
use crate::policy::rate_limit::config::RateLimitConfig;
use crate::transcode::json::config::JsonOptions;
use std::time::Duration;

/// What a route's names resolve against, and the defaults it inherits.
pub(crate) struct RouteContext<'a> {
    pub upstreams: &'a [crate::config::UpstreamConfig],
    pub authenticators: &'a [crate::config::AuthenticatorConfig],
    pub ext_authz: &'a [crate::policy::ext_authz::config::ExtAuthzConfig],
    pub json: JsonOptions,
    pub cors: Option<std::sync::Arc<CorsPolicy>>,
    /// `server.limits.request_timeout`, the default unary deadline.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub grpc_service: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub methods: Option<Vec<String>>,
    /// Also serve every method as `POST /package.Service/Method`.
    pub auto_mapping: bool,
    pub timeout: Duration,
    pub json: JsonOptions,
    /// None: no cross-origin access.
    pub cors: Option<std::sync::Arc<CorsPolicy>>,
    /// Indexes into [`Config::authenticators`] of the authenticators a call
    /// on this route must pass, in the order they are tried; empty: none.
    pub auth: Vec<usize>,
    /// Index into [`Config::ext_authz`] of the service asked before each call.
    pub ext_authz: Option<usize>,
    pub authorize: Option<AuthorizeConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    pub cache: Option<CacheConfig>,
    /// Whether its calls write access-log lines (`access_log = false`: no).
    pub access_log: bool,
    /// Whether its methods are MCP tools at `/mcp` (`mcp = true`).
    pub mcp: bool,
    /// google.api.http rules from the config, by method name; they replace
    /// the schema's rule for that method.
    pub http_rules: std::collections::BTreeMap<String, crate::descriptors::http_rule::HttpRule>,
}

impl RouteConfig {
    /// Whether the route serves the method of this simple name: every
    /// method of its service, or those its `methods` list names.
    pub fn serves(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == method))
    }
}

impl Validator<'_> {
    /// One `[[routes]]` entry, its names resolved against the rest of the config.
    pub(crate) fn route(
        &self,
        key: &str,
        r: &file::RouteFile,
        ctx: &RouteContext<'_>,
    ) -> Result<RouteConfig, ConfigError> {
        if r.grpc_service.is_empty() {
            return Err(self.err(
                format!("{key}.grpc_service"),
                "must name a service, e.g. \"foo.v1.Foo\"",
            ));
        }
        let upstream =
            self.upstream_index(&format!("{key}.upstream"), &r.upstream, ctx.upstreams)?;
        let route_json = match &r.json {
            Some(j) => self.json(&format!("{key}.json"), j, ctx.json)?,
            None => ctx.json,
        };
        let names = r
            .auth
            .as_ref()
            .map(file::OneOrMany::to_vec)
            .unwrap_or_default();
        if r.auth.is_some() && names.is_empty() {
            return Err(self.err(format!("{key}.auth"), "names no authenticator"));
        }
        let mut auth = Vec::with_capacity(names.len());
        for name in &names {
            let i = ctx
                .authenticators
                .iter()
                .position(|a| &a.name == name)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        ctx.authenticators.iter().map(|a| a.name.as_str()).collect();
                    self.err(
                        format!("{key}.auth"),
                        format!(
                            "no authenticator named {name:?} (known: {})",
                            crate::config::list_or_none(&known)
                        ),
                    )
                })?;
            if auth.contains(&i) {
                return Err(self.err(format!("{key}.auth"), format!("names {name:?} twice")));
            }
            auth.push(i);
        }
        let ext_authz = match &r.ext_authz {
            None => None,
            Some(name) => Some(
                ctx.ext_authz
                    .iter()
                    .position(|a| &a.name == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> =
                            ctx.ext_authz.iter().map(|a| a.name.as_str()).collect();
                        self.err(
                            format!("{key}.ext_authz"),
                            format!(
                                "no [ext_authz.{name}] (known: {})",
                                crate::config::list_or_none(&known)
                            ),
                        )
                    })?,
            ),
        };
        // One header, one writer on a route: the backend would get the
        // service's value over the verified claim, or none at all when the
        // service's answer lacks it.
        if let Some(e) = ext_authz.map(|i| &ctx.ext_authz[i]) {
            for (i, header) in e.upstream_headers.iter().enumerate() {
                for a in auth.iter().map(|&a| &ctx.authenticators[a]) {
                    // A claim that is not printable ASCII goes in the `-bin` twin.
                    let written = |h: &http::HeaderName| {
                        h == header || crate::headers::binary_twin(h) == header
                    };
                    if let Some((claim, _)) = a.forward_claims.iter().find(|(_, h)| written(h)) {
                        return Err(self.err(
                            format!("{key}.ext_authz"),
                            format!(
                                "{header:?} is written both by ext_authz.{}.upstream_headers[{i}] and by authenticators.{}.forward_claims.{claim}; give each its own header",
                                e.name, a.name
                            ),
                        ));
                    }
                }
            }
        }
        let authorize = match (&r.authorize, auth.first()) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(self.err(
                    format!("{key}.authorize"),
                    "needs an authenticator on the route (auth = \"...\")",
                ))
            }
            (Some(a), Some(_)) => {
                let rules = self.authorize(&format!("{key}.authorize"), a)?;
                // Only tokens carry scopes: a route whose callers are all
                // API keys' consumers or client certificates would refuse
                // every one of them.
                let no_tokens = auth.iter().all(|&i| {
                    matches!(
                        ctx.authenticators[i].method,
                        crate::config::AuthMethod::ApiKey(_)
                            | crate::config::AuthMethod::ClientCert(_)
                    )
                });
                if no_tokens && !rules.scopes.is_empty() {
                    return Err(self.err(
                        format!("{key}.authorize.scopes"),
                        "the route's authenticators are API keys or client certificates, whose principals hold no scopes, so every call would be refused; name consumers instead, or add a token authenticator",
                    ));
                }
                // An API key's consumer and a certificate have fixed sets
                // of claims: a rule on another would refuse every caller of
                // a route that only they authenticate.
                if no_tokens {
                    let mut known: Vec<&str> = Vec::new();
                    for &i in &auth {
                        let claims: &[&str] = match ctx.authenticators[i].method {
                            crate::config::AuthMethod::ClientCert(_) => {
                                &crate::policy::auth::client_cert::CLAIMS
                            }
                            _ => &crate::policy::auth::API_KEY_CLAIMS,
                        };
                        for claim in claims {
                            if !known.contains(claim) {
                                known.push(claim);
                            }
                        }
                    }
                    for (claim, _) in &rules.claims {
                        let top = claim.split('.').next().unwrap_or(claim);
                        if !known.contains(&top) {
                            return Err(self.err(
                                format!("{key}.authorize.claims.{claim}"),
                                format!(
                                    "the route's authenticators are API keys or client certificates, whose principals have no claim {claim:?}, so every call would be refused; they have {}",
                                    known.join(", ")
                                ),
                            ));
                        }
                    }
                }
                Some(rules)
            }
        };
        let rate_limit = r
            .rate_limit
            .as_ref()
            .map(|rl| self.rate_limit(&format!("{key}.rate_limit"), rl))
            .transpose()?;
        let mut cache = r
            .cache
            .as_ref()
            .map(|c| self.cache(&format!("{key}.cache"), c))
            .transpose()?;
        if let Some(cache) = &mut cache {
            for a in ctx.authenticators {
                if let crate::config::AuthMethod::ApiKey(k) = &a.method {
                    if !cache.credential_headers.contains(&k.header) {
                        cache.credential_headers.push(k.header.clone());
                    }
                }
            }
        }
        if r.methods.as_ref().is_some_and(|m| m.is_empty()) {
            return Err(self.err(
                format!("{key}.methods"),
                "is empty, so the route would serve nothing; leave it out to serve every method of the service",
            ));
        }
        Ok(RouteConfig {
            cache,
            access_log: r.access_log.unwrap_or(true),
            mcp: r.mcp.unwrap_or(false),
            rate_limit,
            auth,
            ext_authz,
            authorize,
            grpc_service: r.grpc_service.clone(),
            upstream,
            methods: r.methods.clone(),
            auto_mapping: r.auto_mapping.unwrap_or(true),
            timeout: self.duration(&format!("{key}.timeout"), &r.timeout, ctx.timeout)?,
            json: route_json,
            http_rules: match &r.http_rules {
                Some(rules) => rules
                    .iter()
                    .map(|(method, rule)| {
                        Ok((
                            method.clone(),
                            self.http_rule(&format!("{key}.http_rules.{method}"), rule, true)?,
                        ))
                    })
                    .collect::<Result<_, ConfigError>>()?,
                None => Default::default(),
            },
            cors: match &r.cors {
                Some(c) => Some(std::sync::Arc::new(self.cors(&format!("{key}.cors"), c)?)),
                None => ctx.cors.clone(),
            },
        })
    }

    pub(crate) fn http_rule(
        &self,
        key: &str,
        r: &file::HttpRuleFile,
        top: bool,
    ) -> Result<crate::descriptors::http_rule::HttpRule, ConfigError> {
        use crate::descriptors::http_rule::{pb::CustomHttpPattern, HttpRule, Pattern};
        let mut patterns = Vec::new();
        for (p, make) in [
            (&r.get, Pattern::Get as fn(String) -> Pattern),
            (&r.put, Pattern::Put),
            (&r.post, Pattern::Post),
            (&r.delete, Pattern::Delete),
            (&r.patch, Pattern::Patch),
        ] {
            if let Some(path) = p {
                patterns.push(make(path.clone()));
            }
        }
        if let Some(c) = &r.custom {
            patterns.push(Pattern::Custom(CustomHttpPattern {
                kind: c.kind.clone(),
                path: c.path.clone(),
            }));
        }
        if patterns.len() != 1 {
            return Err(self.err(
                key,
                "needs exactly one of get, put, post, delete, patch, custom",
            ));
        }
        if !top && !r.additional_bindings.is_empty() {
            return Err(self.err(
                format!("{key}.additional_bindings"),
                "additional bindings do not nest",
            ));
        }
        let additional_bindings = r
            .additional_bindings
            .iter()
            .enumerate()
            .map(|(i, b)| self.http_rule(&format!("{key}.additional_bindings[{i}]"), b, false))
            .collect::<Result<_, _>>()?;
        Ok(HttpRule {
            selector: String::new(),
            pattern: patterns.pop(),
            body: r.body.clone(),
            response_body: r.response_body.clone(),
            additional_bindings,
        })
    }
}
