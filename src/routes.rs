//! The route table: which gRPC method serves a request. Built once at
//! startup from the config and the loaded schemas (google.api.http rules plus
//! the `POST /package.Service/Method` auto mapping); at request time it only
//! matches.

pub mod config;

pub mod aggregate;
pub mod binding;
pub mod gateway;
pub mod template;
pub mod trie;

pub use binding::{Binding, BodyRule, PathVar};

use crate::config::{Config, ConfigError, CorsPolicy, JsonOptions};
use crate::descriptors::http_rule::{self, HttpRule, Pattern};
use crate::envelope::{CallKind, Target, UpstreamId};
use http::uri::PathAndQuery;
use http::Method;
use prost_reflect::{DescriptorPool, MethodDescriptor};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use trie::{Lookup, Trie};

/// A successful match: the binding and the path split into raw segments.
pub struct RouteMatch<'a> {
    pub binding: &'a Arc<Binding>,
    pub segments: Vec<&'a str>,
}

pub enum MatchOutcome<'a> {
    Found(RouteMatch<'a>),
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    bindings: Vec<Arc<Binding>>,
    trie: Trie,
    /// Every routed method by its gRPC path, for gRPC ingress.
    targets: HashMap<String, Arc<Target>>,
    /// Per `[[routes]]` entry, its cross-origin policy.
    cors: Vec<Option<Arc<CorsPolicy>>>,
    /// Per `[[routes]]` entry, its JSON options.
    json: Vec<JsonOptions>,
    /// The top-level `[cors]` and `[json]`: the gateway's own services'.
    own_cors: Option<Arc<CorsPolicy>>,
    own_json: JsonOptions,
}

/// A config key naming a method its service lacks. The service's file is
/// named too: after a `.proto` edit dropped a method, that file, not the
/// config, is what changed.
fn no_method(service: &prost_reflect::ServiceDescriptor, name: &str) -> String {
    format!(
        "{} has no method {name} (the service is defined in {})",
        service.full_name(),
        service.parent_file().name()
    )
}

/// Whether a method list's entry names `method`: its simple name
/// (`Fail`), its full name (`pkg.Probe.Fail`) or its gRPC path form
/// (`pkg.Probe/Fail`, as aggregates name methods).
fn names_method(name: &str, method: &prost_reflect::MethodDescriptor) -> bool {
    if name == method.name() || name == method.full_name() {
        return true;
    }
    name.trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(service, m)| {
            m == method.name() && service == method.parent_service().full_name()
        })
}

impl RouteTable {
    /// Builds the table; a route naming an unknown service or method, a bad
    /// template or two colliding bindings is an error naming the config key.
    pub fn build(config: &Config, pool: &DescriptorPool) -> Result<RouteTable, ConfigError> {
        RouteTable::build_with_stats(config, pool, &|_, _| Arc::default())
    }

    /// As [`RouteTable::build`], taking each method's counters from `stats`
    /// (by gRPC path), so a reloaded table keeps counting where the last one was.
    pub fn build_with_stats(
        config: &Config,
        pool: &DescriptorPool,
        stats: &dyn Fn(&str, &str) -> Arc<crate::observe::call_stats::CallStats>,
    ) -> Result<RouteTable, ConfigError> {
        let mut table = RouteTable {
            cors: config.routes.iter().map(|r| r.cors.clone()).collect(),
            json: config.routes.iter().map(|r| r.json).collect(),
            own_cors: config.cors.clone(),
            own_json: config.json,
            ..RouteTable::default()
        };
        for (i, route) in config.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let err = |key: String, reason: String| ConfigError {
                file: config.source.clone(),
                key,
                reason,
            };
            let service = pool
                .get_service_by_name(&route.grpc_service)
                .ok_or_else(|| {
                    let known: Vec<String> = pool
                        .services()
                        .map(|s| s.full_name().to_owned())
                        .filter(|n| !n.starts_with("grpc."))
                        .collect();
                    err(
                        format!("{key}.grpc_service"),
                        format!(
                            "service {} is not in the loaded schemas (loaded: {})",
                            route.grpc_service,
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    )
                })?;
            if gateway::SERVICES.contains(&service.full_name()) {
                tracing::warn!(
                    key = %format!("{key}.grpc_service"),
                    "{} is the gateway's own service: gRPC, gRPC-Web, Connect and WebSocket clients get the gateway's answers at its paths, not this route's upstream",
                    service.full_name()
                );
            }
            for name in route.http_rules.keys() {
                if !service.methods().any(|m| m.name() == name) {
                    return Err(err(
                        format!("{key}.http_rules.{name}"),
                        no_method(&service, name),
                    ));
                }
                // A rule for a method this route leaves out would bind nothing.
                if !route.serves(name) {
                    return Err(err(
                        format!("{key}.http_rules.{name}"),
                        format!(
                            "this route does not serve {}.{name} (its methods list leaves it out), so the rule would bind nothing; add {name} to methods or move the rule to the route that serves it",
                            service.full_name()
                        ),
                    ));
                }
            }
            if let Some(names) = &route.methods {
                for (j, name) in names.iter().enumerate() {
                    if !service.methods().any(|m| m.name() == name) {
                        return Err(err(
                            format!("{key}.methods[{j}]"),
                            no_method(&service, name),
                        ));
                    }
                }
            }
            if let Some(cache) = &route.cache {
                for (j, name) in cache.methods.iter().enumerate() {
                    let reason = match service.methods().find(|m| m.name() == name) {
                        None => no_method(&service, name),
                        Some(m) if CallKind::of(&m) != CallKind::Unary => {
                            format!("{} streams; only unary replies are cached", m.full_name())
                        }
                        // Another route's method: its calls never pass
                        // this route's cache.
                        Some(m) if !route.serves(m.name()) => {
                            format!(
                                "this route does not serve {} (its methods list leaves it out), so its cache never sees it",
                                m.full_name()
                            )
                        }
                        Some(_) => continue,
                    };
                    return Err(err(format!("{key}.cache.methods[{j}]"), reason));
                }
            }
            let upstream = &config.upstreams[route.upstream];
            for method in service.methods() {
                if !route.serves(method.name()) {
                    continue;
                }
                if upstream.protocol == crate::config::UpstreamProtocol::Http
                    && (method.is_client_streaming() || method.is_server_streaming())
                {
                    return Err(err(
                        format!("{key}.methods"),
                        format!(
                            "{} streams, and http upstreams serve unary methods only; list the unary methods to route",
                            method.full_name()
                        ),
                    ));
                }
                let path = format!("/{}/{}", service.full_name(), method.name());
                let target = Arc::new(Target {
                    path: PathAndQuery::from_maybe_shared(path.clone()).map_err(|e| {
                        err(
                            format!("{key}.grpc_service"),
                            format!("method {path} is not a valid path: {e}"),
                        )
                    })?,
                    kind: CallKind::of(&method),
                    reply_json_direct: crate::transcode::json::wire::covers(&method.output()),
                    request_json_direct: crate::transcode::json::wire::covers(&method.input()),
                    request_has_maps: crate::transcode::map_order::can_hold_maps(&method.input()),
                    upstream: UpstreamId(route.upstream),
                    route: i,
                    upstream_name: upstream.name.as_str().into(),
                    timeout: Some(route.timeout),
                    access_log: route.access_log,
                    cacheable: CallKind::of(&method) == CallKind::Unary
                        && (route
                            .cache
                            .as_ref()
                            .is_some_and(|c| c.methods.iter().any(|m| m == method.name()))
                            || has_no_side_effects(&method)
                            || route
                                .http_rules
                                .get(method.name())
                                .cloned()
                                .or_else(|| http_rule::of(&method))
                                .is_some_and(|r| binds_get(&r))),
                    idempotent: idempotency_declared(&method)
                        || upstream
                            .retry
                            .idempotent_methods
                            .iter()
                            .any(|m| names_method(m, &method)),
                    // A client stream's messages come after its endpoint
                    // is chosen: only a call of one request message has
                    // the field to hash.
                    hash_field: match &upstream.balance {
                        crate::config::Balance::ConsistentHash(crate::config::HashKey::Field(
                            f,
                        )) if !method.is_client_streaming() => {
                            crate::transcode::fields::resolve(&method.input(), f)
                        }
                        _ => None,
                    },
                    method: method.clone(),
                    stats: stats(&path, &upstream.name),
                });
                if table.targets.insert(path.clone(), target.clone()).is_some() {
                    return Err(err(
                        format!("{key}.grpc_service"),
                        format!(
                            "{} is routed twice: its method {} is in an earlier route too (split a service between routes with `methods` lists that share no method)",
                            service.full_name(),
                            method.name()
                        ),
                    ));
                }
                // A rule written in the config is named by its key; one
                // from the schema's annotation by the route and its method.
                let rule_key = if route.http_rules.contains_key(method.name()) {
                    format!("{key}.http_rules.{}", method.name())
                } else {
                    key.clone()
                };
                let calls_json = upstream.protocol == crate::config::UpstreamProtocol::Http;
                let mut add = |m: Method,
                               template: &str,
                               body: &str,
                               response_body: &str,
                               auto: bool,
                               builds_upstream_request: bool| {
                    let at = if auto { &key } else { &rule_key };
                    let binding = Binding::new(
                        target.clone(),
                        m,
                        template,
                        body,
                        response_body,
                        route.json,
                        auto,
                    )
                    .map_err(|reason| {
                        err(at.clone(), format!("{}: {reason}", method.full_name()))
                    })?;
                    if builds_upstream_request && binding.has_unbound_wildcard() {
                        return Err(err(
                            at.clone(),
                            format!(
                                "{}: the upstream is JSON/HTTP, so its request path is built from {template}, whose wildcard outside a variable no field fills; bind it to a field ({{name=...}})",
                                method.full_name()
                            ),
                        ));
                    }
                    table
                        .insert(binding)
                        .map_err(|reason| err(at.clone(), reason))
                };
                // A rule in the config replaces the schema's.
                let rule = route
                    .http_rules
                    .get(method.name())
                    .cloned()
                    .or_else(|| http_rule::of(&method));
                if let Some(rule) = rule {
                    // The first binding is the one a JSON/HTTP upstream's
                    // request is built from.
                    for (k, (m, template, body, response_body)) in rule_bindings(&method, &rule)
                        .map_err(|reason| err(rule_key.clone(), reason))?
                        .into_iter()
                        .enumerate()
                    {
                        add(
                            m,
                            &template,
                            &body,
                            &response_body,
                            false,
                            calls_json && k == 0,
                        )?;
                    }
                }
                if route.auto_mapping {
                    add(Method::POST, &path, "*", "", true, false)?;
                }
            }
            // A cache that can keep nothing is said, not silently ignored
            // (a warning: a config giving every route the same settings
            // still loads).
            if route.cache.is_some() && !table.targets.values().any(|t| t.route == i && t.cacheable)
            {
                tracing::warn!(
                    key = %format!("{key}.cache"),
                    "no method of {} is cached: only unary methods are, those bound to GET, marked NO_SIDE_EFFECTS or listed in cache.methods",
                    service.full_name()
                );
            }
        }
        // A name no routed method answers to would silently retry nothing.
        for (u, upstream) in config.upstreams.iter().enumerate() {
            for (j, name) in upstream.retry.idempotent_methods.iter().enumerate() {
                let routed = table
                    .targets
                    .values()
                    .any(|t| t.upstream.0 == u && names_method(name, &t.method));
                if !routed {
                    return Err(ConfigError {
                        file: config.source.clone(),
                        key: format!("upstreams.{}.retry.idempotent_methods[{j}]", upstream.name),
                        reason: format!(
                            "no method routed to upstream {} is named {name}",
                            upstream.name
                        ),
                    });
                }
            }
            // Hashing on a field no routed method has would balance every
            // call by least request: a typo, not a choice.
            if let crate::config::Balance::ConsistentHash(crate::config::HashKey::Field(f)) =
                &upstream.balance
            {
                let routed: Vec<&Arc<Target>> = table
                    .targets
                    .values()
                    .filter(|t| t.upstream.0 == u)
                    .collect();
                if !routed.is_empty() && routed.iter().all(|t| t.hash_field.is_none()) {
                    return Err(ConfigError {
                        file: config.source.clone(),
                        key: format!("upstreams.{}.hash_key", upstream.name),
                        reason: format!(
                            "no method routed to upstream {} whose request is one message \
                             (unary or server streaming) has a request field {f:?} (a field \
                             name, or a dotted path to a nested one; a client stream's calls \
                             are balanced before their messages arrive, so they never hash one)",
                            upstream.name
                        ),
                    });
                }
            }
        }
        Ok(table)
    }

    fn insert(&mut self, binding: Binding) -> Result<(), String> {
        let id = self.bindings.len();
        if let Err(other) = self
            .trie
            .insert(&binding.template, binding.method.clone(), id)
        {
            let other = &self.bindings[other];
            // The automatic mapping is no rule anyone wrote: say so.
            let auto = |b: &Binding| {
                if b.auto {
                    " (the automatic POST /package.Service/Method mapping; routes[].auto_mapping = false turns it off)"
                } else {
                    ""
                }
            };
            return Err(format!(
                "{} {} of {}{} collides with {} {} of {}{}",
                binding.method,
                binding.template_text,
                binding.target.method.full_name(),
                auto(&binding),
                other.method,
                other.template_text,
                other.target.method.full_name(),
                auto(other)
            ));
        }
        self.bindings.push(Arc::new(binding));
        Ok(())
    }

    /// Matches a request; `path` is the raw (still percent-encoded) path.
    pub fn find<'a>(&'a self, method: &Method, path: &'a str) -> MatchOutcome<'a> {
        match self.trie.match_path(method, path) {
            (Lookup::Found { id, .. }, segments) => MatchOutcome::Found(RouteMatch {
                binding: &self.bindings[id],
                segments,
            }),
            (Lookup::MethodNotAllowed(allowed), _) => MatchOutcome::MethodNotAllowed(allowed),
            (Lookup::NotFound, _) => MatchOutcome::NotFound,
        }
    }

    /// The binding a request is served by, and the method it was found
    /// under: HEAD is answered by a binding made for HEAD (a `custom` rule)
    /// if the path has one, else as GET without the body (RFC 9110
    /// section 9.3.2).
    pub fn find_request<'a>(
        &'a self,
        method: &Method,
        path: &'a str,
    ) -> (MatchOutcome<'a>, Method) {
        if method == Method::HEAD {
            if let found @ MatchOutcome::Found(_) = self.find(method, path) {
                return (found, Method::HEAD);
            }
            return (self.find(&Method::GET, path), Method::GET);
        }
        (self.find(method, path), method.clone())
    }

    pub fn bindings(&self) -> &[Arc<Binding>] {
        &self.bindings
    }

    /// A routed method by its gRPC path (`/package.Service/Method`).
    pub fn target(&self, grpc_path: &str) -> Option<&Arc<Target>> {
        self.targets.get(grpc_path)
    }

    /// The method a client calls by its gRPC path (gRPC, gRPC-Web, Connect,
    /// WebSocket): a routed one, or one of the gateway's own services,
    /// which come first, as they always have for gRPC clients.
    pub fn call_target(&self, grpc_path: &str) -> Option<&Arc<Target>> {
        if grpc_path.starts_with("/grpc.") {
            if let Some(own) = gateway::target(grpc_path) {
                return Some(own);
            }
        }
        self.targets.get(grpc_path)
    }

    /// How to call each method on a JSON/HTTP upstream: its first
    /// google.api.http binding, else its `POST /package.Service/Method`.
    pub fn outbound_bindings(&self) -> HashMap<String, Arc<Binding>> {
        let mut out: HashMap<String, Arc<Binding>> = HashMap::new();
        for b in &self.bindings {
            let key = b.target.path.as_str().to_owned();
            match out.get(&key) {
                Some(existing) if !existing.auto => {}
                Some(_) if b.auto => {}
                _ => {
                    out.insert(key, b.clone());
                }
            }
        }
        out
    }

    /// The method an RPC protocol (gRPC, gRPC-Web, Connect) names by its
    /// path, or the UNIMPLEMENTED error such clients expect.
    pub fn rpc_target(&self, grpc_path: &str) -> Result<Arc<Target>, crate::error::GatewayError> {
        self.call_target(grpc_path)
            .cloned()
            .ok_or_else(|| crate::error::GatewayError::unknown_method(grpc_path))
    }

    /// Every routed method.
    pub fn targets(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.targets.values()
    }

    /// The JSON options of a `[[routes]]` entry.
    pub fn json_options(&self, route: usize) -> JsonOptions {
        self.json.get(route).copied().unwrap_or(self.own_json)
    }

    /// The cross-origin policy of a `[[routes]]` entry, if any.
    pub fn route_cors(&self, route: usize) -> Option<&Arc<CorsPolicy>> {
        self.cors.get(route)?.as_ref()
    }

    /// The cross-origin policy of the route serving `method path` (as REST
    /// or at its gRPC path), if any.
    pub fn cors_for(&self, method: &Method, path: &str) -> Option<&Arc<CorsPolicy>> {
        let route = match self.find_request(method, path).0 {
            MatchOutcome::Found(m) => m.binding.target.route,
            // A method the path does not serve (a plain OPTIONS, say) is
            // judged by the path's route, so an allowed origin gets the
            // 405 it would get from its own site, not an origin refusal.
            MatchOutcome::MethodNotAllowed(allowed) => {
                match allowed.first().map(|m| self.find_request(m, path).0) {
                    Some(MatchOutcome::Found(m)) => m.binding.target.route,
                    _ => self.call_target(path)?.route,
                }
            }
            _ => self.call_target(path)?.route,
        };
        match self.cors.get(route) {
            Some(policy) => policy.as_ref(),
            // The gateway's own services: the top-level policy.
            None => self.own_cors.as_ref(),
        }
    }

    /// The table as `portico check` prints it.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for b in &self.bindings {
            let _ = writeln!(
                out,
                "{:<7} {:<48} -> {} -> {}{}",
                b.method.as_str(),
                b.template_text,
                b.target.path,
                b.target.upstream_name,
                if b.auto { "  (auto)" } else { "" }
            );
        }
        out
    }

    /// Says which binding serves `method path?query` and what fills each
    /// field, or why nothing does.
    pub fn explain(&self, method: &Method, path_and_query: &str) -> String {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut out = String::new();
        match self.find(method, path) {
            MatchOutcome::Found(m) => {
                let b = m.binding;
                let _ = writeln!(
                    out,
                    "{method} {path} matches {} {}",
                    b.method, b.template_text
                );
                let _ = writeln!(
                    out,
                    "  calls   {} ({:?}) on upstream {}",
                    b.target.path, b.target.kind, b.target.upstream_name
                );
                for (var, value) in b.path_values(&m.segments) {
                    let _ = writeln!(out, "  path    {} = {:?}", var.name, value);
                }
                match &b.body {
                    BodyRule::None => {
                        let _ = writeln!(out, "  body    none (not read)");
                    }
                    BodyRule::Whole => {
                        let _ = writeln!(
                            out,
                            "  body    the whole request message {}",
                            b.target.method.input().full_name()
                        );
                    }
                    BodyRule::Field(f) => {
                        let _ = writeln!(out, "  body    field {}", f.name());
                    }
                }
                let ignores =
                    b.json.unknown_query_params == crate::config::UnknownQueryParams::Ignore;
                let mut refused = false;
                for (k, v) in form_urlencoded::parse(query.as_bytes()) {
                    match crate::transcode::request::query_fields(b, &k) {
                        Ok(fields) => {
                            let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
                            let _ = writeln!(out, "  query   {k} = {v:?} sets {}", names.join("."));
                        }
                        Err(reason) if ignores => {
                            let _ = writeln!(out, "  query   {k} = {v:?} ignored: it {reason}");
                        }
                        Err(reason) => {
                            refused = true;
                            let _ = writeln!(out, "  query   {k} = {v:?} refused: it {reason}");
                        }
                    }
                }
                // Said of a request the gateway would take, not one it refuses.
                if !refused && !matches!(b.body, BodyRule::Whole) {
                    let _ = writeln!(out, "  other fields may be set from the query string");
                }
                // What the gateway would make of the path and query, as a
                // request without a body: a value that does not fit its
                // field is refused here as it would be there.
                let url = crate::transcode::request::UrlParts {
                    segments: &m.segments,
                    query: (!query.is_empty()).then_some(query),
                };
                // What the URL alone is refused for; else what a request
                // with no body still is (a PATCH naming nothing to update).
                let (refused, when) = match crate::transcode::request::check_url(b, url) {
                    Err(e) => (Some(e), ""),
                    Ok(()) => (
                        crate::transcode::request::check_bodyless(b, url).err(),
                        "without a body: ",
                    ),
                };
                if let Some(e) = refused {
                    let _ = writeln!(
                        out,
                        "  {when}refused {} / {:?}: {}",
                        e.http_status().as_u16(),
                        e.grpc_code(),
                        e.message
                    );
                }
            }
            MatchOutcome::MethodNotAllowed(allowed) => {
                let allowed = self.allowed_with_head(path, allowed, false);
                let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                let _ = writeln!(
                    out,
                    "{method} {path}: the path matches, but only for {}: refused, 405 (Allow: {})",
                    list.join(", "),
                    list.join(", ")
                );
            }
            MatchOutcome::NotFound => {
                let _ = writeln!(
                    out,
                    "{method} {path}: no binding matches. Nearest templates:"
                );
                for b in self.nearest(path, 3) {
                    let _ = writeln!(
                        out,
                        "  {} {} -> {}",
                        b.method, b.template_text, b.target.path
                    );
                }
            }
        }
        out
    }

    /// The methods a path allows, with `HEAD` after `GET` where a `HEAD`
    /// is answered (a unary `GET` or an aggregate; not a stream, whose
    /// `HEAD` is refused), as `Allow` should list them (RFC 9110 section
    /// 10.2.1).
    pub fn allowed_with_head(
        &self,
        path: &str,
        mut allowed: Vec<Method>,
        aggregate: bool,
    ) -> Vec<Method> {
        let Some(get) = allowed.iter().position(|m| m == Method::GET) else {
            return allowed;
        };
        if allowed.contains(&Method::HEAD) {
            return allowed;
        }
        let answered = aggregate
            || matches!(self.find(&Method::GET, path),
                MatchOutcome::Found(m) if !m.binding.target.kind.server_streams());
        if answered {
            allowed.insert(get + 1, Method::HEAD);
        }
        allowed
    }

    /// Bindings whose templates share the longest literal prefix with `path`.
    fn nearest(&self, path: &str, n: usize) -> Vec<&Binding> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let score = |b: &Binding| {
            b.template
                .segments
                .iter()
                .zip(&segments)
                .take_while(|(t, s)| match t {
                    template::Segment::Literal(l) => l == *s,
                    _ => true,
                })
                .count()
        };
        let mut scored: Vec<(usize, &Binding)> = self
            .bindings
            .iter()
            .map(|b| (score(b), b.as_ref()))
            .collect();
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        scored.into_iter().take(n).map(|(_, b)| b).collect()
    }
}

/// `google.protobuf.MethodOptions.idempotency_level == NO_SIDE_EFFECTS`.
pub fn has_no_side_effects(method: &MethodDescriptor) -> bool {
    matches!(
        method
            .options()
            .get_field_by_name("idempotency_level")
            .as_deref(),
        Some(prost_reflect::Value::EnumNumber(1))
    )
}

/// Whether the schema says a call may be repeated: `idempotency_level` is
/// `NO_SIDE_EFFECTS` (1) or `IDEMPOTENT` (2).
pub fn idempotency_declared(method: &MethodDescriptor) -> bool {
    matches!(
        method
            .options()
            .get_field_by_name("idempotency_level")
            .as_deref(),
        Some(prost_reflect::Value::EnumNumber(1 | 2))
    )
}

/// Whether a rule (or one of its additional bindings) is a GET.
fn binds_get(rule: &HttpRule) -> bool {
    matches!(rule.pattern, Some(Pattern::Get(_)))
        || rule
            .additional_bindings
            .iter()
            .any(|b| matches!(b.pattern, Some(Pattern::Get(_))))
}

/// The methods RFC 9110 defines, and PATCH (RFC 5789).
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The (method, template, body, response_body) of a rule and its
/// additional bindings.
fn rule_bindings(
    method: &MethodDescriptor,
    rule: &HttpRule,
) -> Result<Vec<(Method, String, String, String)>, String> {
    let mut out = Vec::new();
    let one = |r: &HttpRule| -> Result<Option<(Method, String, String, String)>, String> {
        let (m, path) = match &r.pattern {
            // A rule that says how to read a body but not where: a mistake,
            // not a rule to skip in silence.
            None if !r.body.is_empty() || !r.response_body.is_empty() => {
                return Err(format!(
                    "{}: a google.api.http rule with body or response_body but no pattern (get, put, post, delete, patch or custom): a rule needs one",
                    method.full_name()
                ))
            }
            None => return Ok(None),
            Some(Pattern::Get(p)) => (Method::GET, p.clone()),
            Some(Pattern::Put(p)) => (Method::PUT, p.clone()),
            Some(Pattern::Post(p)) => (Method::POST, p.clone()),
            Some(Pattern::Delete(p)) => (Method::DELETE, p.clone()),
            Some(Pattern::Patch(p)) => (Method::PATCH, p.clone()),
            Some(Pattern::Custom(c)) if c.kind == "*" => {
                // Some gateways read "*" as any method; a binding here is one
                // method, so that reading is refused rather than taken as a
                // method literally named "*".
                return Err(format!(
                    "{}: custom kind \"*\" (any method) is not supported; bind each method, e.g. with additional_bindings",
                    method.full_name()
                ));
            }
            Some(Pattern::Custom(c)) if c.kind == "HEAD" && method.is_server_streaming() => {
                return Err(format!(
                    "{}: custom kind \"HEAD\" on a server-streaming method: a HEAD reply has no body, so the stream would be started only to be dropped",
                    method.full_name()
                ));
            }
            Some(Pattern::Custom(c)) if c.kind.eq_ignore_ascii_case("CONNECT") => {
                return Err(format!(
                    "{}: custom kind {:?} is not supported: a CONNECT request asks for a tunnel, and its reply cannot carry a call's",
                    method.full_name(),
                    c.kind
                ));
            }
            Some(Pattern::Custom(c))
                if STANDARD_METHODS
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&c.kind) && *m != c.kind) =>
            {
                // Methods are case-sensitive: "get" would be served only for
                // a request whose method is literally "get".
                return Err(format!(
                    "{}: custom kind {:?} is not {:?}: HTTP methods are case-sensitive, so write it in capitals",
                    method.full_name(),
                    c.kind,
                    c.kind.to_ascii_uppercase()
                ));
            }
            Some(Pattern::Custom(c)) => {
                let m = Method::from_bytes(c.kind.as_bytes()).map_err(|_| {
                    format!(
                        "{}: custom verb {:?} is not an HTTP method",
                        method.full_name(),
                        c.kind
                    )
                })?;
                (m, c.path.clone())
            }
        };
        if method.is_client_streaming() && r.body.is_empty() {
            return Err(format!(
                "{}: {m} {path} has no body, but the method is client-streaming: its messages are the body's lines, so the rule needs body = \"*\"",
                method.full_name()
            ));
        }
        if method.is_client_streaming() && r.body != "*" {
            return Err(format!(
                "{}: {m} {path} has body = {:?}, but the method is client-streaming: its messages are the body's lines, each a whole request, so the rule needs body = \"*\"",
                method.full_name(),
                r.body
            ));
        }
        Ok(Some((m, path, r.body.clone(), r.response_body.clone())))
    };
    if let Some(b) = one(rule)? {
        out.push(b);
    }
    for extra in &rule.additional_bindings {
        if !extra.additional_bindings.is_empty() {
            return Err(format!(
                "{}: additional_bindings must not nest",
                method.full_name()
            ));
        }
        if let Some(b) = one(extra)? {
            out.push(b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
