//! Aggregate endpoints resolved against the loaded schemas and routes: each
//! call's method becomes a [`Target`] (so it runs through its own route's
//! policies and upstream), and the paths go into a trie of their own.

pub mod config;

use super::binding::variable_value;
use super::template::{Segment, Template};
use super::trie::{Lookup, Trie};
use super::RouteTable;
use crate::config::{AggregateConfig, Config, ConfigError, JsonOptions, OnError};
use crate::envelope::{CallKind, Target};
use config::{Reference, Source, TextPart, ValueTemplate};
use http::Method;
use prost_reflect::{Kind, MessageDescriptor};
use std::sync::Arc;

/// One aggregate endpoint, ready to run.
#[derive(Debug)]
pub struct AggregatePlan {
    pub config: AggregateConfig,
    pub template: Template,
    /// Per call, in config order: the method and its route's JSON options.
    pub targets: Vec<(Arc<Target>, JsonOptions)>,
    /// Per call, in config order: request fields filled from a path
    /// variable or a query parameter (always text) whose field takes
    /// another JSON type, by their JSON pointer in the request.
    pub typed: Vec<Vec<(String, TextAs)>>,
}

/// How the text of a path variable or query parameter is read for its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextAs {
    /// `true` or `false` become a JSON bool.
    Bool,
    /// Digits (an enum given by number) become a JSON number.
    EnumNumber,
}

impl AggregatePlan {
    /// Gives text from the URL the JSON type its field takes; text that is
    /// not of that type is left as it is, for the request's decoding to
    /// refuse with the field's name.
    pub fn type_url_values(&self, call: usize, request: &mut serde_json::Value) {
        for (pointer, text_as) in &self.typed[call] {
            let Some(at) = request.pointer_mut(pointer) else {
                continue;
            };
            let serde_json::Value::String(text) = at else {
                continue;
            };
            let typed = match text_as {
                TextAs::Bool => match text.as_str() {
                    "true" => Some(serde_json::Value::Bool(true)),
                    "false" => Some(serde_json::Value::Bool(false)),
                    _ => None,
                },
                TextAs::EnumNumber => text.parse::<i32>().ok().map(serde_json::Value::from),
            };
            if let Some(typed) = typed {
                *at = typed;
            }
        }
    }
}

impl AggregatePlan {
    /// The decoded path variables of a matched request, by name.
    pub fn path_values(&self, segments: &[&str]) -> Vec<(String, String)> {
        let t = &self.template;
        t.variables
            .iter()
            .map(|v| {
                let end = (t.segments[v.end - 1] != Segment::Multi).then_some(v.end);
                let value = variable_value(segments, v.start, end, v.is_multi_segment(&t.segments));
                (v.field_path.join("."), value.into_owned())
            })
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct AggregateTable {
    plans: Vec<Arc<AggregatePlan>>,
    trie: Trie,
    /// The `[cors]` policy: an aggregate belongs to no route.
    cors: Option<Arc<crate::config::CorsPolicy>>,
}

pub enum AggregateMatch<'a> {
    Found(&'a Arc<AggregatePlan>, Vec<&'a str>),
    NotFound,
}

impl AggregateTable {
    pub fn build(config: &Config, routes: &RouteTable) -> Result<AggregateTable, ConfigError> {
        let mut table = AggregateTable {
            cors: config.cors.clone(),
            ..AggregateTable::default()
        };
        for (i, a) in config.aggregates.iter().enumerate() {
            let key = format!("aggregates[{i}]");
            let err = |key: String, reason: String| ConfigError {
                file: config.source.clone(),
                key,
                reason,
            };
            let template = super::template::parse(&a.path)
                .map_err(|e| err(format!("{key}.path"), e.to_string()))?;
            let mut targets = Vec::new();
            let mut typed = Vec::new();
            for (j, call) in a.calls.iter().enumerate() {
                let ck = format!("{key}.calls[{j}]");
                let target = routes.target(&call.grpc_path).ok_or_else(|| {
                    err(
                        format!("{ck}.method"),
                        format!(
                            "{} is not served by any [[routes]] entry; aggregated calls take their route's upstream and policies",
                            call.grpc_path.trim_start_matches('/')
                        ),
                    )
                })?;
                if target.kind != CallKind::Unary {
                    return Err(err(
                        format!("{ck}.method"),
                        format!(
                            "{} streams; only unary methods can be aggregated",
                            target.method.full_name()
                        ),
                    ));
                }
                if let ValueTemplate::Object(fields) = &call.request {
                    let input = target.method.input();
                    for (name, _) in fields {
                        let known = input.get_field_by_name(name).is_some()
                            || input.get_field_by_json_name(name).is_some();
                        if !known {
                            return Err(err(
                                format!("{ck}.request.{name}"),
                                format!("{} has no field {name:?}", input.full_name()),
                            ));
                        }
                    }
                }
                // A reference into an earlier reply must name something
                // that reply's JSON can hold: a typo would otherwise leave
                // the field unset on every request.
                let mut refs = Vec::new();
                references(&call.request, format!("{ck}.request"), &mut refs);
                for (at, r) in refs {
                    let Source::Call(from) = r.source else {
                        continue;
                    };
                    let (earlier, options): &(Arc<Target>, JsonOptions) = &targets[from];
                    if let Err(why) =
                        walk_reply(&earlier.method.output(), &r.keys, options.use_proto_names)
                    {
                        let name = &a.calls[from].name;
                        return Err(err(at, format!("{{{name}.{}}}: {why}", r.keys.join("."))));
                    }
                }
                // Literal values are known now: one the method's request
                // cannot hold (a number for a string field) is a config
                // mistake, not a client's error on every request.
                if let Some(literals) = literals_only(&call.request) {
                    let options = routes.json_options(target.route);
                    if let Err(e) = crate::transcode::json::decode_value(
                        &target.method.input(),
                        literals,
                        &options,
                        "",
                    ) {
                        return Err(err(format!("{ck}.request"), e.message));
                    }
                }
                let mut fields = Vec::new();
                url_values_to_type(
                    &call.request,
                    &target.method.input(),
                    &mut Vec::new(),
                    &mut fields,
                );
                typed.push(fields);
                targets.push((target.clone(), routes.json_options(target.route)));
            }
            let id = table.plans.len();
            if table.trie.insert(&template, a.method.clone(), id).is_err() {
                return Err(err(
                    format!("{key}.path"),
                    format!("{} {} is already an aggregate", a.method, a.path),
                ));
            }
            table.plans.push(Arc::new(AggregatePlan {
                config: a.clone(),
                template,
                targets,
                typed,
            }));
        }
        Ok(table)
    }

    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }

    /// One block per aggregate, for `portico check`.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for p in &self.plans {
            let mode = match p.config.on_error {
                OnError::Fail => "fails whole",
                OnError::Partial => "partial results",
            };
            out.push_str(&format!(
                "{:<7} {:<48} -> aggregate of {} calls ({mode})\n",
                p.config.method.as_str(),
                p.config.path,
                p.config.calls.len()
            ));
            for (call, (target, _)) in p.config.calls.iter().zip(&p.targets) {
                let after: Vec<&str> = call
                    .depends_on
                    .iter()
                    .map(|&d| p.config.calls[d].name.as_str())
                    .collect();
                out.push_str(&format!(
                    "          {:<16} {} on {}, timeout {}{}\n",
                    call.name,
                    target.path,
                    target.upstream_name,
                    // What the call gets: its own timeout, or its route's
                    // when that is shorter.
                    humantime::format_duration(
                        target.timeout.map_or(call.timeout, |t| t.min(call.timeout))
                    ),
                    if after.is_empty() {
                        String::new()
                    } else {
                        format!(", after {}", after.join(", "))
                    }
                ));
            }
        }
        out
    }

    /// Matches a request path (raw, still percent-encoded).
    /// Every aggregate endpoint, in config order.
    pub fn plans(&self) -> &[Arc<AggregatePlan>] {
        &self.plans
    }

    /// What a `405` on `path` allows: the methods its bindings take
    /// (`bound`) and those its aggregates take, `HEAD` beside a `GET` that
    /// answers one; empty when neither serves the path.
    pub fn allowed_at(
        &self,
        routes: &super::RouteTable,
        path: &str,
        mut bound: Vec<Method>,
    ) -> Vec<Method> {
        let aggregated = self.methods_at(path);
        let aggregate_get = aggregated.contains(&Method::GET);
        for m in aggregated {
            if !bound.contains(&m) {
                bound.push(m);
            }
        }
        routes.allowed_with_head(path, bound, aggregate_get)
    }

    /// The methods aggregates take on `path` (none when no aggregate's
    /// template matches it): what a `405` on the path lists.
    pub fn methods_at(&self, path: &str) -> Vec<Method> {
        // A method no aggregate takes: a matching path answers with them all.
        let none = Method::from_bytes(b"PORTICO-ANY").expect("a valid token");
        match self.trie.match_path(&none, path) {
            (Lookup::MethodNotAllowed(allowed), _) => allowed,
            _ => Vec::new(),
        }
    }

    /// The cross-origin policy of the aggregate at `path`: the `[cors]`
    /// one, for any aggregate on the path whatever the method.
    pub fn cors_for(&self, path: &str) -> Option<&Arc<crate::config::CorsPolicy>> {
        let cors = self.cors.as_ref()?;
        match self.trie.match_path(&Method::GET, path) {
            (Lookup::Found { .. } | Lookup::MethodNotAllowed(_), _) => Some(cors),
            _ => None,
        }
    }

    pub fn find<'a>(&'a self, method: &Method, path: &'a str) -> AggregateMatch<'a> {
        match self.trie.match_path(method, path) {
            (Lookup::Found { id, .. }, segments) => {
                AggregateMatch::Found(&self.plans[id], segments)
            }
            _ => AggregateMatch::NotFound,
        }
    }
}

/// Every reference in a template, with the config key of the value it sits in.
fn references<'a>(t: &'a ValueTemplate, at: String, out: &mut Vec<(String, &'a Reference)>) {
    match t {
        ValueTemplate::Literal(_) => {}
        ValueTemplate::Ref(r) => out.push((at, r)),
        ValueTemplate::Text(parts) => out.extend(parts.iter().filter_map(|p| match p {
            TextPart::Ref(r) => Some((at.clone(), r)),
            TextPart::Literal(_) => None,
        })),
        ValueTemplate::Object(fields) => {
            for (name, t) in fields {
                references(t, format!("{at}.{name}"), out);
            }
        }
        ValueTemplate::List(items) => {
            for (i, t) in items.iter().enumerate() {
                references(t, format!("{at}[{i}]"), out);
            }
        }
    }
}

/// Checks that `keys` lead somewhere in the JSON of a `message` reply, as
/// a route writes it (`lowerCamelCase` names, or the proto names).
fn walk_reply(
    message: &MessageDescriptor,
    keys: &[String],
    proto_names: bool,
) -> Result<(), String> {
    enum At {
        Message(MessageDescriptor),
        /// Any JSON: google.protobuf.Struct, Value, ListValue, Any.
        Free,
        /// A JSON scalar: a scalar field, an enum, or a well-known type written as one.
        Scalar(String),
        List(Kind),
        Map(Kind),
    }
    fn of(kind: Kind) -> At {
        match kind {
            Kind::Message(m) => match m.full_name() {
                "google.protobuf.Struct"
                | "google.protobuf.Value"
                | "google.protobuf.ListValue"
                | "google.protobuf.Any" => At::Free,
                name if m.package_name() == "google.protobuf" => At::Scalar(name.to_owned()),
                _ => At::Message(m),
            },
            Kind::Enum(e) => At::Scalar(e.full_name().to_owned()),
            other => At::Scalar(format!("{other:?}").to_lowercase()),
        }
    }
    let mut at = At::Message(message.clone());
    for key in keys {
        at = match at {
            At::Free => return Ok(()),
            At::Message(m) => {
                let written = |f: &prost_reflect::FieldDescriptor| {
                    if proto_names {
                        f.name().to_owned()
                    } else {
                        f.json_name().to_owned()
                    }
                };
                let Some(field) = m.fields().find(|f| written(f) == *key) else {
                    let other = m
                        .fields()
                        .find(|f| f.name() == key || f.json_name() == key)
                        .map(|f| format!("; the reply writes it as {:?}", written(&f)))
                        .unwrap_or_default();
                    return Err(format!("{} has no field {key:?}{other}", m.full_name()));
                };
                if field.is_map() {
                    match field.kind() {
                        Kind::Message(entry) => At::Map(entry.map_entry_value_field().kind()),
                        _ => unreachable!("a map field's kind is its entry message"),
                    }
                } else if field.is_list() {
                    At::List(field.kind())
                } else {
                    of(field.kind())
                }
            }
            At::List(kind) => {
                if key.parse::<usize>().is_err() {
                    return Err(format!("{key:?} is not an index into a repeated field"));
                }
                of(kind)
            }
            At::Map(kind) => of(kind),
            At::Scalar(what) => {
                return Err(format!("{key:?} is inside a {what}, which has no fields"))
            }
        };
    }
    Ok(())
}

/// The template with every value that comes from a reference left out:
/// what is fixed in the config, to check against the request's type.
fn literals_only(t: &ValueTemplate) -> Option<serde_json::Value> {
    match t {
        ValueTemplate::Literal(v) => Some(v.clone()),
        ValueTemplate::Ref(_) | ValueTemplate::Text(_) => None,
        // An `Any` whose type comes from a reference cannot be checked
        // without it.
        ValueTemplate::Object(fields)
            if fields
                .iter()
                .any(|(k, v)| k == "@type" && !matches!(v, ValueTemplate::Literal(_))) =>
        {
            None
        }
        ValueTemplate::Object(fields) => Some(serde_json::Value::Object(
            fields
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), literals_only(v)?)))
                .collect(),
        )),
        ValueTemplate::List(items) => Some(serde_json::Value::Array(
            items.iter().filter_map(literals_only).collect(),
        )),
    }
}

/// The request fields that a path variable or query parameter fills and
/// that take a bool or an enum: their text needs a JSON type. The items of
/// a repeated field written as a list are typed one by one.
fn url_values_to_type(
    t: &ValueTemplate,
    message: &MessageDescriptor,
    keys: &mut Vec<String>,
    out: &mut Vec<(String, TextAs)>,
) {
    let ValueTemplate::Object(fields) = t else {
        return;
    };
    for (name, value) in fields {
        let Some(field) = message
            .get_field_by_name(name)
            .or_else(|| message.get_field_by_json_name(name))
        else {
            continue;
        };
        if field.is_map() {
            continue;
        }
        keys.push(name.clone());
        match value {
            ValueTemplate::List(items) if field.is_list() => {
                for (i, item) in items.iter().enumerate() {
                    keys.push(i.to_string());
                    type_value(item, field.kind(), keys, out);
                    keys.pop();
                }
            }
            _ if field.is_list() => {}
            _ => type_value(value, field.kind(), keys, out),
        }
        keys.pop();
    }
}

/// [`url_values_to_type`] for one value of a field of `kind`, at `keys`.
fn type_value(
    value: &ValueTemplate,
    kind: Kind,
    keys: &mut Vec<String>,
    out: &mut Vec<(String, TextAs)>,
) {
    let pointer: String = keys
        .iter()
        .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
        .collect();
    match (value, kind) {
        (ValueTemplate::Ref(r), Kind::Bool)
            if matches!(r.source, Source::Path(_) | Source::Query(_)) =>
        {
            out.push((pointer, TextAs::Bool))
        }
        (ValueTemplate::Ref(r), Kind::Enum(_))
            if matches!(r.source, Source::Path(_) | Source::Query(_)) =>
        {
            out.push((pointer, TextAs::EnumNumber))
        }
        (ValueTemplate::Object(_), Kind::Message(inner)) => {
            url_values_to_type(value, &inner, keys, out)
        }
        _ => {}
    }
}
