//! The REST API as Portico serves it, described in OpenAPI 3.1 from the
//! loaded schemas and the active config: every google.api.http binding and
//! automatic `POST /package.Service/Method`, every aggregate, their
//! parameters and bodies under the JSON names the gateway writes, the errors
//! each route's policies can produce and their security schemes, with the
//! proto comments as descriptions. Generated once per generation, on the
//! first request for it; served at `/openapi.json` on both ports, rendered
//! at `/docs`, printed by `portico openapi`.

pub mod comments;
pub mod config;
pub mod docs;
pub mod schema;

use crate::config::{Config, RouteConfig};
use crate::policy::auth::config::AuthMethod;
use crate::routes::aggregate::config::{Reference, Source, TextPart, ValueTemplate};
use crate::routes::aggregate::{AggregatePlan, AggregateTable};
use crate::routes::template::{Segment, Template};
use crate::routes::{Binding, BodyRule, RouteTable};
use bytes::Bytes;
use comments::Comments;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use schema::{Naming, Schemas};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

pub const VERSION: &str = "3.1.0";
const COMPONENTS: &str = "#/components/schemas/";

/// What a description is made from.
pub struct Sources<'a> {
    pub config: &'a Config,
    pub routes: &'a RouteTable,
    pub aggregates: &'a AggregateTable,
    /// The generation's digest: the default `info.version`.
    pub digest: &'a str,
}

/// A generation's description, made on first use and kept.
pub struct ApiDescription {
    config: Config,
    routes: Arc<RouteTable>,
    aggregates: Arc<AggregateTable>,
    digest: String,
    json: OnceLock<Bytes>,
}

impl ApiDescription {
    pub fn new(
        config: Config,
        routes: Arc<RouteTable>,
        aggregates: Arc<AggregateTable>,
        digest: String,
    ) -> Self {
        ApiDescription {
            config,
            routes,
            aggregates,
            digest,
            json: OnceLock::new(),
        }
    }

    /// The description as JSON bytes.
    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| {
                let spec = generate(&Sources {
                    config: &self.config,
                    routes: &self.routes,
                    aggregates: &self.aggregates,
                    digest: &self.digest,
                });
                Bytes::from(serde_json::to_vec_pretty(&spec).unwrap_or_default())
            })
            .clone()
    }

    /// [`ApiDescription::json`] for a request handler: the first request
    /// of a generation builds it on a blocking thread, so no runtime worker
    /// waits; concurrent first requests wait for that one build.
    pub async fn json_async(self: &Arc<Self>) -> Bytes {
        if let Some(done) = self.json.get() {
            return done.clone();
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.json())
            .await
            .unwrap_or_default()
    }

    /// Whether the main port serves it (and `/docs`).
    pub fn served(&self) -> bool {
        self.config.openapi.serve
    }
}

/// The OpenAPI 3.1 document.
pub fn generate(s: &Sources<'_>) -> Value {
    let mut comments = Comments::default();
    let mut schemas = Schemas::new(COMPONENTS, &mut comments);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut operation_ids: HashMap<String, usize> = HashMap::new();
    let mut schemes_used: BTreeSet<usize> = BTreeSet::new();
    let mut shapes = PathShapes::default();

    let mcp = crate::ingress::mcp::served(s.config, s.routes);
    // An aggregate answers its method and template before any binding does.
    let aggregated: HashSet<(String, String)> = s
        .aggregates
        .plans()
        .iter()
        .map(|plan| {
            (
                shape_of(&plan.template),
                plan.config.method.as_str().to_owned(),
            )
        })
        .collect();
    let described: Vec<&Binding> = s
        .routes
        .bindings()
        .iter()
        .map(|b| &**b)
        .filter(|binding| {
            // A GET the gateway answers itself (its description, a file of
            // its docs page), anything on `/mcp` while it serves MCP, or a
            // request an aggregate takes, never reaches the binding: no
            // operation to describe.
            crate::ingress::dispatch::shadowed_by(binding, s.config.openapi.serve, mcp).is_none()
                && !aggregated.contains(&(
                    shape_of(&binding.template),
                    binding.method.as_str().to_owned(),
                ))
        })
        .collect();
    // A method's first binding takes its full name; the others a number
    // no other method's name takes (a method may be named `Get_2`).
    let mut operation_names: HashSet<String> = described
        .iter()
        .map(|b| b.target.method.full_name().to_owned())
        .collect();
    for binding in described {
        let route = &s.config.routes[binding.target.route];
        let method = &binding.target.method;
        let service = method.parent_service();
        tags.entry(service.full_name().to_owned())
            .or_insert_with(|| {
                schemas
                    .comments()
                    .get(&service.parent_file(), service.path())
                    .map(str::to_owned)
            });
        let (path, path_params) = shapes.path(&binding.template, |name| {
            binding
                .path_vars
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.fields.last().cloned())
        });
        let n = Naming::from(&binding.json);
        let mut parameters: Vec<Value> = path_params
            .into_iter()
            .map(|p| {
                let mut schema = match &p.field {
                    Some(f) => schema::closed_enum_in_url(&f.kind())
                        .unwrap_or_else(|| schemas.kind(&f.kind(), n)),
                    None => json!({ "type": "string" }),
                };
                if let Some(pattern) = &p.pattern {
                    schema = json!({ "type": "string", "pattern": pattern });
                }
                let mut param = json!({
                    "name": p.name, "in": "path", "required": true, "schema": schema,
                });
                if let Some(d) = p.description {
                    param["description"] = json!(d);
                }
                param
            })
            .collect();
        parameters.extend(query_params(&mut schemas, binding, n));

        let count = operation_ids
            .entry(method.full_name().to_owned())
            .or_insert(0);
        *count += 1;
        let operation_id = if *count == 1 {
            method.full_name().to_owned()
        } else {
            loop {
                let id = format!("{}_{}", method.full_name(), count);
                if operation_names.insert(id.clone()) {
                    break id;
                }
                *count += 1;
            }
        };
        let mut op = Map::new();
        op.insert("operationId".into(), json!(operation_id));
        op.insert("tags".into(), json!([service.full_name()]));
        let comment = schemas
            .comments()
            .get(&method.parent_file(), method.path())
            .map(str::to_owned);
        op.insert(
            "summary".into(),
            json!(comment
                .as_deref()
                .map(comments::summary)
                .unwrap_or_else(|| method.name().to_owned())),
        );
        let mut description = comment.unwrap_or_default();
        if binding.auto {
            description.push_str(
                "\n\nThe automatic mapping every routed method has: the body is the whole request message.",
            );
        }
        if binding.target.kind.client_streams() {
            description.push_str(
                "\n\nClient streaming: the body is newline-delimited JSON, one request message per line.",
            );
        }
        if binding.target.kind.server_streams() && binding.raw_response_body {
            description.push_str("\n\nServer streaming: one download, the bytes of every google.api.HttpBody reply in order, whatever `Accept` says.");
        } else if binding.target.kind.server_streams() {
            description.push_str("\n\nServer streaming: one JSON object per line (`Accept: application/x-ndjson`, the default) or one Server-Sent Event per reply (`Accept: text/event-stream`).");
        }
        let description = description.trim();
        if !description.is_empty() {
            op.insert("description".into(), json!(description));
        }
        if is_deprecated(method) {
            op.insert("deprecated".into(), json!(true));
        }
        op.insert("x-grpc-method".into(), json!(binding.target.path.as_str()));
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = request_body(&mut schemas, binding, n) {
            op.insert("requestBody".into(), body);
        }
        let mut responses = Map::new();
        responses.insert("200".into(), success_response(&mut schemas, binding, n));
        error_responses(&mut responses, Guards::of(s.config, route));
        op.insert("responses".into(), Value::Object(responses));
        if let Some(security) = security(s.config, route, &mut schemes_used) {
            op.insert("security".into(), security);
        }
        let verb = binding.method.as_str().to_ascii_lowercase();
        let key = if OPENAPI_METHODS.contains(&verb.as_str()) {
            verb
        } else {
            // A custom HTTP method has no place among OpenAPI's eight: it is
            // described under an extension key of the same path item.
            format!("x-method-{}", binding.method.as_str())
        };
        paths
            .entry(path)
            .or_default()
            .insert(key, Value::Object(op));
    }

    for plan in s.aggregates.plans() {
        if crate::ingress::dispatch::shadowed_at(
            &plan.config.method,
            &plan.config.path,
            s.config.openapi.serve,
            mcp,
        )
        .is_some()
        {
            continue;
        }
        aggregate(
            &mut schemas,
            s,
            plan,
            &mut shapes,
            &mut paths,
            &mut schemes_used,
        );
        tags.entry("aggregates".to_owned()).or_insert_with(|| {
            Some("Endpoints the gateway composes from several calls (`[[aggregates]]`).".to_owned())
        });
    }

    let mut components = Map::new();
    let mut defs = schemas.into_defs();
    defs.insert("google.rpc.Status".to_owned(), status_schema());
    components.insert("schemas".into(), json!(defs));
    components.insert("responses".into(), error_components());
    let schemes = security_schemes(s.config, &schemes_used);
    if !schemes.is_empty() {
        components.insert("securitySchemes".into(), Value::Object(schemes));
    }
    let o = &s.config.openapi;
    let version = o
        .version
        .clone()
        .unwrap_or_else(|| s.digest.chars().take(12).collect());
    let description = o.description.clone().unwrap_or_else(|| {
        "The REST API of the gRPC services behind this gateway, generated from their schemas. \
         Errors are google.rpc.Status objects whose `code` is the gRPC status code."
            .to_owned()
    });
    json!({
        "openapi": VERSION,
        "info": { "title": o.title, "version": version, "description": description },
        "servers": [{ "url": "/" }],
        "tags": tags.into_iter().map(|(name, d)| match d {
            Some(d) => json!({ "name": name, "description": d }),
            None => json!({ "name": name }),
        }).collect::<Vec<_>>(),
        "paths": paths,
        "components": components,
    })
}

const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn is_deprecated(method: &MethodDescriptor) -> bool {
    let service = method.parent_service();
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .is_some_and(|o| o.deprecated())
        || service
            .service_descriptor_proto()
            .options
            .as_ref()
            .is_some_and(|o| o.deprecated())
}

/// A path parameter of a template.
struct PathParam {
    name: String,
    /// The field it sets, when it sets one.
    field: Option<FieldDescriptor>,
    /// For a variable spanning several segments or literals.
    pattern: Option<String>,
    description: Option<String>,
}

/// The path items written so far, by the shape of their templates.
///
/// OpenAPI forbids two templated paths that differ only in their
/// placeholders' names, as one URL would match both; yet `/t/g/{name}` and
/// `/t/{name=g/*}` (written `/t/g/{g_id}`) are one resource under two verbs.
/// A template whose shape is already written takes that path's names, so
/// both verbs are operations of one path item.
#[derive(Default)]
struct PathShapes {
    names: HashMap<String, Vec<String>>,
}

impl PathShapes {
    fn path(
        &mut self,
        template: &Template,
        field: impl Fn(&str) -> Option<FieldDescriptor>,
    ) -> (String, Vec<PathParam>) {
        let (path, params) = openapi_path(template, &field, &[]);
        let names: Vec<String> = params.iter().map(|p| p.name.clone()).collect();
        let shape = shape_of(template);
        match self.names.get(&shape) {
            Some(written) if *written != names => openapi_path(template, &field, written),
            Some(_) => (path, params),
            None => {
                self.names.insert(shape, names);
                (path, params)
            }
        }
    }
}

/// The URLs a template matches, as text: its segments with the variables
/// left out, and its verb (`/t/{name=g/*}` and `/t/g/{id}` are both
/// `t/g/*`; `*` and `**` stay apart, as they match different URLs).
fn shape_of(template: &Template) -> String {
    let mut shape: Vec<String> = template.segments.iter().map(segment_text).collect();
    if let Some(verb) = &template.verb {
        shape.push(format!(":{verb}"));
    }
    shape.join("/")
}

/// A google.api.http template as an OpenAPI path. `{name}` is one
/// parameter. A variable that spans segments (`{name=shelves/*/books/*}`)
/// is written out: its literals stay in the path and each `*` is a
/// parameter of its own (`shelves/{shelves_id}/books/{books_id}`), as
/// OpenAPI path parameters cannot hold a `/`; the method receives the
/// whole value, `shelves/1/books/2`. A trailing `**` is one parameter for
/// the rest of the path. `names`, when given, are the placeholders' names
/// in order, in place of those made from the template.
fn openapi_path(
    template: &Template,
    field: impl Fn(&str) -> Option<FieldDescriptor>,
    names: &[String],
) -> (String, Vec<PathParam>) {
    let mut path = String::new();
    let mut params: Vec<PathParam> = Vec::new();
    let mut taken = std::collections::HashSet::new();
    let mut given = names.iter();
    let mut unique = |base: String| -> String {
        if let Some(name) = given.next() {
            return name.clone();
        }
        let mut name = base.clone();
        let mut n = 1;
        while !taken.insert(name.clone()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        name
    };
    let mut i = 0;
    let mut unnamed = 0;
    while i < template.segments.len() {
        if let Some(v) = template.variables.iter().find(|v| v.start == i) {
            let field_path = v.field_path.join(".");
            let segments = &template.segments[v.start..v.end];
            if segments == [Segment::Single] {
                // A placeholder's name only: dots, which URI-template tools
                // read as member access, become underscores.
                let name = unique(field_path.replace('.', "_"));
                path.push_str(&format!("/{{{name}}}"));
                params.push(PathParam {
                    description: (name != field_path)
                        .then(|| format!("Sets the field `{field_path}`.")),
                    field: field(&field_path),
                    name,
                    pattern: None,
                });
            } else {
                let shape: Vec<String> = segments.iter().map(segment_text).collect();
                let mut written = Vec::new();
                let mut parts = Vec::new();
                for (k, seg) in segments.iter().enumerate() {
                    match seg {
                        Segment::Literal(l) => written.push(l.clone()),
                        wildcard => {
                            let base = match k.checked_sub(1).map(|p| &segments[p]) {
                                Some(Segment::Literal(l)) if *wildcard == Segment::Single => {
                                    format!("{l}_id")
                                }
                                _ if *wildcard == Segment::Multi => {
                                    format!("{}_rest", field_path.replace('.', "_"))
                                }
                                _ => format!("{}_{}", field_path.replace('.', "_"), k + 1),
                            };
                            let name = unique(base);
                            written.push(format!("{{{name}}}"));
                            parts.push((name, segment_pattern(wildcard)));
                        }
                    }
                }
                path.push('/');
                path.push_str(&written.join("/"));
                let whole = written.join("/");
                for (name, pattern) in parts {
                    let multi = pattern == ".*";
                    params.push(PathParam {
                        description: Some(format!(
                            "Part of the field `{field_path}`, which the method receives whole: `{whole}` (the template's `{}`).{}",
                            shape.join("/"),
                            if multi { " The rest of the path: its slashes are sent as they are." } else { "" }
                        )),
                        field: None,
                        name,
                        pattern: Some(format!("^{pattern}$")),
                    });
                }
            }
            i = v.end;
            continue;
        }
        path.push('/');
        match &template.segments[i] {
            Segment::Literal(l) => path.push_str(l),
            wildcard => {
                unnamed += 1;
                let name = unique(format!("segment{unnamed}"));
                path.push_str(&format!("{{{name}}}"));
                params.push(PathParam {
                    name,
                    field: None,
                    pattern: Some(format!("^{}$", segment_pattern(wildcard))),
                    description: Some(
                        "A wildcard of the path template; the method does not receive it."
                            .to_owned(),
                    ),
                });
            }
        }
        i += 1;
    }
    if template.segments.is_empty() {
        path.push('/');
    }
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(verb);
    }
    (path, params)
}

fn segment_pattern(s: &Segment) -> String {
    match s {
        Segment::Literal(l) => regex_escape(l),
        Segment::Single => "[^/]+".to_owned(),
        Segment::Multi => ".*".to_owned(),
    }
}

fn segment_text(s: &Segment) -> String {
    match s {
        Segment::Literal(l) => l.clone(),
        Segment::Single => "*".to_owned(),
        Segment::Multi => "**".to_owned(),
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The query parameters a binding takes: every field the path and body do
/// not carry, nested ones as `a.b` (three levels deep at most).
fn query_params(schemas: &mut Schemas<'_>, binding: &Binding, n: Naming) -> Vec<Value> {
    if matches!(binding.body, BodyRule::Whole) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let input = binding.target.method.input();
    let mut stack = vec![input.full_name().to_owned()];
    walk_query(schemas, binding, n, &input, "", &[], &mut stack, &mut out);
    out
}

#[allow(clippy::too_many_arguments)]
fn walk_query(
    schemas: &mut Schemas<'_>,
    binding: &Binding,
    n: Naming,
    message: &MessageDescriptor,
    prefix: &str,
    parents: &[FieldDescriptor],
    stack: &mut Vec<String>,
    out: &mut Vec<Value>,
) {
    for f in message.fields() {
        let mut path = parents.to_vec();
        path.push(f.clone());
        if binding.path_binds(&path)
            || f.is_map()
            || binding.path_sets_other_oneof_member(parents, &f)
        {
            continue;
        }
        if parents.is_empty() {
            if let BodyRule::Field(b) = &binding.body {
                if *b == f {
                    continue;
                }
            }
        }
        let name = format!("{prefix}{}", n.field_name(&f));
        match f.kind() {
            // Messages one query value can hold (Timestamp, a wrapper...) are
            // parameters themselves, as the transcoder reads them.
            Kind::Message(m) if !crate::transcode::fields::is_scalar_like(&m) => {
                if f.is_list() || stack.len() >= 3 {
                    continue;
                }
                stack.push(m.full_name().to_owned());
                walk_query(
                    schemas,
                    binding,
                    n,
                    &m,
                    &format!("{name}."),
                    &path,
                    stack,
                    out,
                );
                stack.pop();
            }
            _ => {
                // JSON's `null` cannot be written in a query: a NullValue
                // is given by its name (or number), as the query reads it.
                let null_value = matches!(f.kind(), Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue");
                let schema = if null_value {
                    json!({ "type": "string", "enum": ["NULL_VALUE"] })
                } else if f.full_name() == "google.protobuf.Value.number_value" {
                    json!({ "type": "number", "format": "double" })
                } else if let Some(closed) = schema::closed_enum_in_url(&f.kind()) {
                    match f.is_list() {
                        true => json!({ "type": "array", "items": closed }),
                        false => closed,
                    }
                } else {
                    schemas.field(&f, n)
                };
                // Nor can a query send a wrapper's `null`: an absent
                // parameter is the unset wrapper.
                let mut schema = schema::without_null(schema);
                let description = schema.as_object_mut().and_then(|o| o.remove("description"));
                let mut param = json!({ "name": name, "in": "query", "schema": schema });
                if f.is_list() {
                    param["style"] = json!("form");
                    param["explode"] = json!(true);
                }
                if let Some(d) = description {
                    param["description"] = d;
                }
                out.push(param);
            }
        }
    }
}

fn raw_content() -> Value {
    json!({ "*/*": { "schema": { "type": "string", "format": "binary" } } })
}

fn request_body(schemas: &mut Schemas<'_>, binding: &Binding, n: Naming) -> Option<Value> {
    let input = binding.target.method.input();
    let (content, description) = match &binding.body {
        BodyRule::None => return None,
        _ if binding.raw_request_body => (
            raw_content(),
            "Raw bytes, passed to the method as google.api.HttpBody with the request's content type.",
        ),
        BodyRule::Whole if binding.target.kind.client_streams() => (
            json!({ "application/x-ndjson": { "schema": schemas.message(&input, n) } }),
            "One request message per line.",
        ),
        BodyRule::Whole => (
            json!({ "application/json": { "schema": schemas.message(&input, n) } }),
            "The request message; fields bound by the path are taken from the path.",
        ),
        BodyRule::Field(f) => (
            json!({ "application/json": { "schema": schemas.field(f, n) } }),
            "The request's body field; the other fields come from the path and query.",
        ),
    };
    // An empty body is the empty message (or no field, or no bytes): the
    // body may be left out, whatever a method then makes of that.
    Some(json!({ "required": false, "description": description, "content": content }))
}

fn success_response(schemas: &mut Schemas<'_>, binding: &Binding, n: Naming) -> Value {
    // A HEAD reply has a GET's headers and never a body.
    if binding.method == http::Method::HEAD {
        return json!({ "description": "The reply's headers; a HEAD reply carries no body." });
    }
    let output = binding.target.method.output();
    if binding.target.kind.server_streams() && binding.raw_response_body {
        return json!({
            "description": "A download: the bytes of each google.api.HttpBody the stream carries, in order, under the first one's content type. A failure after the first byte cuts the reply short (it never ends as complete).",
            "content": raw_content(),
        });
    }
    if binding.target.kind.server_streams() {
        // Each line holds a reply under `result` (its response_body field
        // alone when the binding names one), or the error that ended the
        // stream under `error`.
        let reply = match (&binding.response_body, binding.raw_response_body) {
            (Some(field), false) => schemas.field(field, n),
            _ => schemas.message(&output, n),
        };
        let line = json!({
            "type": "object",
            "properties": {
                "result": reply.clone(),
                "error": { "$ref": format!("{COMPONENTS}google.rpc.Status") },
            },
            "oneOf": [{ "required": ["result"] }, { "required": ["error"] }],
        });
        return json!({
            "description": "A stream of replies: one JSON object per line, `{\"result\": <reply>}`, or `{\"error\": <Status>}` as the last line when the stream fails. With `Accept: text/event-stream`, one Server-Sent Event per reply (`data:` the reply), then an `end` event (`data: {}`) when the stream ends cleanly or an `error` event when it fails.",
            "content": {
                "application/x-ndjson": { "schema": line },
                "text/event-stream": { "schema": {
                    "type": "object",
                    "description": "One event per reply (`data`: the reply's JSON); last, an `end` event (`data`: `{}`) when the stream ends cleanly, or an `error` event (`data`: a google.rpc.Status) when it fails.",
                    "properties": {
                        "id": { "type": "string" },
                        "event": { "type": "string" },
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": reply,
                        },
                    },
                } },
            }
        });
    }
    if binding.raw_response_body {
        return json!({
            "description": "The reply's google.api.HttpBody: its bytes, with its content type.",
            "content": raw_content(),
        });
    }
    let schema = match &binding.response_body {
        Some(f) => schemas.field(f, n),
        None => schemas.message(&output, n),
    };
    json!({
        "description": "The reply. A backend may choose another 2xx or 3xx status with the `x-http-status` metadata.",
        "content": { "application/json": { "schema": schema } }
    })
}

/// Which policies stand before a method, for the errors they add.
#[derive(Default, Clone, Copy)]
struct Guards {
    authenticated: bool,
    /// An authenticator takes bearer tokens, so a `401` names the scheme.
    challenged: bool,
    authorized: bool,
    limited: bool,
}

impl Guards {
    fn of(config: &Config, route: &RouteConfig) -> Guards {
        Guards {
            authenticated: !route.auth.is_empty(),
            challenged: route.auth.iter().any(|&i| {
                matches!(
                    config.authenticators[i].method,
                    AuthMethod::Jwt(_) | AuthMethod::Introspection(_)
                )
            }),
            authorized: !route.auth.is_empty()
                || route.ext_authz.is_some()
                || route.authorize.is_some(),
            limited: route.rate_limit.is_some(),
        }
    }

    fn or(self, other: Guards) -> Guards {
        Guards {
            authenticated: self.authenticated || other.authenticated,
            challenged: self.challenged || other.challenged,
            authorized: self.authorized || other.authorized,
            limited: self.limited || other.limited,
        }
    }
}

/// The errors a method can answer with, by HTTP status.
fn error_responses(responses: &mut Map<String, Value>, guards: Guards) {
    let reference = |name: &str| json!({ "$ref": format!("#/components/responses/{name}") });
    responses.insert("400".into(), reference("InvalidArgument"));
    if guards.challenged {
        responses.insert("401".into(), reference("Unauthenticated"));
    } else if guards.authenticated {
        // API keys and client certificates have no scheme to name.
        responses.insert("401".into(), reference("UnauthenticatedNoChallenge"));
    }
    if guards.authorized {
        responses.insert("403".into(), reference("PermissionDenied"));
    }
    if guards.limited {
        responses.insert("429".into(), reference("RateLimited"));
    }
    responses.insert("default".into(), reference("Error"));
}

fn error_components() -> Value {
    let status = json!({ "application/json": { "schema": { "$ref": format!("{COMPONENTS}google.rpc.Status") } } });
    json!({
        "InvalidArgument": {
            "description": "The request does not fit the method (gRPC INVALID_ARGUMENT): a bad path, query or body value, or an unknown field.",
            "content": status,
        },
        "Unauthenticated": {
            "description": "No credential, or one that does not verify (gRPC UNAUTHENTICATED).",
            "headers": { "WWW-Authenticate": { "schema": { "type": "string" }, "description": "The bearer challenge (RFC 6750)." } },
            "content": status,
        },
        "UnauthenticatedNoChallenge": {
            "description": "No credential, or one that does not verify (gRPC UNAUTHENTICATED). The method takes only API keys or client certificates, so no WWW-Authenticate challenge is sent.",
            "content": status,
        },
        "PermissionDenied": {
            "description": "The caller may not call this method (gRPC PERMISSION_DENIED). An external authorization service's refusal is passed on as it wrote it.",
            "content": status,
        },
        "RateLimited": {
            "description": "Over the route's rate limit (gRPC RESOURCE_EXHAUSTED).",
            "headers": {
                "Retry-After": { "schema": { "type": "integer" }, "description": "Seconds until a call may pass." },
                "RateLimit-Limit": { "schema": { "type": "integer" } },
                "RateLimit-Remaining": { "schema": { "type": "integer" } },
                "RateLimit-Reset": { "schema": { "type": "integer" } },
            },
            "content": status,
        },
        "Error": {
            "description": "Any other failure, from the gateway or the backend, with the HTTP status of its gRPC code (404 NOT_FOUND, 409 ALREADY_EXISTS/ABORTED, 413, 415, 500, 502, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED...).",
            "content": status,
        },
    })
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "title": "Status",
        "description": "The error body of every failed call (google.rpc.Status).",
        "properties": {
            "code": { "type": "integer", "format": "int32", "description": "The gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, 16 UNAUTHENTICATED...)." },
            "message": { "type": "string", "description": "What went wrong, for a developer." },
            "details": {
                "type": "array",
                "description": "google.rpc error details (BadRequest, ErrorInfo, RetryInfo...), each with its `@type`.",
                "items": {
                    "type": "object",
                    "properties": { "@type": { "type": "string" } },
                    "required": ["@type"],
                    "additionalProperties": true,
                },
            },
        },
        "required": ["code", "message"],
    })
}

/// The security requirement of a route: any one of its authenticators.
fn security(config: &Config, route: &RouteConfig, used: &mut BTreeSet<usize>) -> Option<Value> {
    if route.auth.is_empty() {
        return None;
    }
    let mut alternatives = Vec::new();
    for &i in &route.auth {
        used.insert(i);
        for name in scheme_names(&config.authenticators[i]) {
            alternatives.push(json!({ name: [] }));
        }
    }
    Some(Value::Array(alternatives))
}

/// The security requirement of an aggregate: each of its calls goes
/// through its own route's authentication, so the request must satisfy
/// every one of those routes. Authenticators every such route takes are
/// alternatives, each enough alone; when the routes share none, a
/// credential for one authenticator of each route is needed together.
fn aggregate_security(
    config: &Config,
    routes: &[&RouteConfig],
    used: &mut BTreeSet<usize>,
) -> Option<Value> {
    let first = routes.first()?;
    let shared: Vec<usize> = first
        .auth
        .iter()
        .copied()
        .filter(|i| routes.iter().all(|r| r.auth.contains(i)))
        .collect();
    if !shared.is_empty() {
        let mut alternatives = Vec::new();
        for i in shared {
            used.insert(i);
            for name in scheme_names(&config.authenticators[i]) {
                alternatives.push(json!({ name: [] }));
            }
        }
        return Some(Value::Array(alternatives));
    }
    // Routes with the same authenticators ask the same thing once.
    let mut sets: Vec<&[usize]> = Vec::new();
    for r in routes {
        if !sets.contains(&r.auth.as_slice()) {
            sets.push(&r.auth);
        }
    }
    // Every way to pick one scheme per set, as one requirement object each
    // (OpenAPI: the schemes of one object are all required).
    let mut combos: Vec<Map<String, Value>> = vec![Map::new()];
    for set in sets {
        let names: Vec<String> = set
            .iter()
            .flat_map(|&i| {
                used.insert(i);
                scheme_names(&config.authenticators[i])
            })
            .collect();
        let mut next = Vec::new();
        for combo in &combos {
            for name in &names {
                let mut c = combo.clone();
                c.insert(name.clone(), json!([]));
                if !next.contains(&c) {
                    next.push(c);
                }
            }
        }
        combos = next;
        if combos.len() > MAX_SECURITY_ALTERNATIVES {
            combos.truncate(MAX_SECURITY_ALTERNATIVES);
        }
    }
    Some(Value::Array(
        combos.into_iter().map(Value::Object).collect(),
    ))
}

/// Past this many, an aggregate's combined requirements are cut: a reader
/// learns the shape from the first ones.
const MAX_SECURITY_ALTERNATIVES: usize = 64;

/// The security schemes an authenticator accepts credentials through.
fn scheme_names(a: &crate::config::AuthenticatorConfig) -> Vec<String> {
    let mut names = vec![a.name.clone()];
    match &a.method {
        AuthMethod::Jwt(j) if j.cookie.is_some() => names.push(format!("{}_cookie", a.name)),
        AuthMethod::ApiKey(k) if k.query_param.is_some() => names.push(format!("{}_query", a.name)),
        _ => {}
    }
    names
}

fn security_schemes(config: &Config, used: &BTreeSet<usize>) -> Map<String, Value> {
    let mut out = Map::new();
    for &i in used {
        let a = &config.authenticators[i];
        match &a.method {
            AuthMethod::Jwt(j) => {
                out.insert(
                    a.name.clone(),
                    json!({ "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                            "description": format!("A JWT signed with {:?}.", j.algorithm) }),
                );
                if let Some(cookie) = &j.cookie {
                    out.insert(
                        format!("{}_cookie", a.name),
                        json!({ "type": "apiKey", "in": "cookie", "name": cookie,
                                "description": "The same JWT, in a cookie." }),
                    );
                }
            }
            AuthMethod::ApiKey(k) => {
                out.insert(
                    a.name.clone(),
                    json!({ "type": "apiKey", "in": "header", "name": k.header.as_str() }),
                );
                if let Some(q) = &k.query_param {
                    out.insert(
                        format!("{}_query", a.name),
                        json!({ "type": "apiKey", "in": "query", "name": q }),
                    );
                }
            }
            AuthMethod::Introspection(_) => {
                out.insert(
                    a.name.clone(),
                    json!({ "type": "http", "scheme": "bearer",
                            "description": "An OAuth 2.0 access token, checked by introspection." }),
                );
            }
            AuthMethod::ClientCert(_) => {
                out.insert(
                    a.name.clone(),
                    json!({ "type": "mutualTLS", "description": "A client certificate the gateway trusts." }),
                );
            }
        }
    }
    out
}

fn aggregate(
    schemas: &mut Schemas<'_>,
    s: &Sources<'_>,
    plan: &AggregatePlan,
    shapes: &mut PathShapes,
    paths: &mut BTreeMap<String, Map<String, Value>>,
    schemes_used: &mut BTreeSet<usize>,
) {
    let (path, path_params) = shapes.path(&plan.template, |_| None);
    let mut parameters: Vec<Value> = path_params
        .into_iter()
        .map(|p| {
            let mut schema = json!({ "type": "string" });
            if let Some(pattern) = p.pattern {
                schema["pattern"] = json!(pattern);
            }
            json!({ "name": p.name, "in": "path", "required": true, "schema": schema })
        })
        .collect();
    let mut query = BTreeSet::new();
    let mut body = false;
    for call in &plan.config.calls {
        references(&call.request, &mut |r| match &r.source {
            Source::Query(q) => {
                query.insert(q.clone());
            }
            Source::Body => body = true,
            _ => {}
        });
    }
    for q in query {
        parameters.push(json!({ "name": q, "in": "query", "schema": { "type": "string" } }));
    }
    let mut properties = Map::new();
    let mut auth_routes: Vec<&RouteConfig> = Vec::new();
    let mut guards = Guards::default();
    for (call, (target, json_options)) in plan.config.calls.iter().zip(&plan.targets) {
        properties.insert(
            call.name.clone(),
            schemas.message(&target.method.output(), Naming::from(json_options)),
        );
        let route = &s.config.routes[target.route];
        if !route.auth.is_empty() {
            auth_routes.push(route);
        }
        guards = guards.or(Guards::of(s.config, route));
    }
    let partial = plan.config.on_error == crate::config::OnError::Partial;
    if partial {
        properties.insert(
            "errors".into(),
            json!({ "type": "object", "description": "The calls that failed, by name.",
                    "additionalProperties": { "$ref": format!("{COMPONENTS}google.rpc.Status") } }),
        );
    }
    let mut op = json!({
        "operationId": format!("aggregate {} {}", plan.config.method, plan.config.path),
        "tags": ["aggregates"],
        "summary": format!("Calls {}", plan.config.calls.iter().map(|c| c.grpc_path.trim_start_matches('/')).collect::<Vec<_>>().join(", ")),
        "description": if partial {
            "One object with each call's reply under its name. A failed call leaves its name out and adds its error under `errors`; the `x-aggregate-complete` header says whether every call succeeded."
        } else {
            "One object with each call's reply under its name; the first failure fails the request."
        },
        "responses": {
            "200": {
                "description": "The merged replies.",
                "headers": { "x-aggregate-complete": { "schema": { "type": "string", "enum": ["true", "false"] } } },
                "content": { "application/json": { "schema": { "type": "object", "properties": properties } } },
            }
        },
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if body {
        op["requestBody"] = json!({ "required": false, "content": { "application/json": { "schema": { "type": "object" } } } });
    }
    let mut responses = op["responses"].as_object().cloned().unwrap_or_default();
    error_responses(&mut responses, guards);
    op["responses"] = Value::Object(responses);
    if let Some(sec) = aggregate_security(s.config, &auth_routes, schemes_used) {
        op["security"] = sec;
    }
    let verb = plan.config.method.as_str().to_ascii_lowercase();
    paths.entry(path).or_default().insert(verb, op);
}

fn references(t: &ValueTemplate, f: &mut dyn FnMut(&Reference)) {
    match t {
        ValueTemplate::Literal(_) => {}
        ValueTemplate::Ref(r) => f(r),
        ValueTemplate::Text(parts) => {
            for p in parts {
                if let TextPart::Ref(r) = p {
                    f(r)
                }
            }
        }
        ValueTemplate::Object(fields) => {
            for (_, v) in fields {
                references(v, f)
            }
        }
        ValueTemplate::List(items) => {
            for v in items {
                references(v, f)
            }
        }
    }
}

#[cfg(test)]
mod tests;
