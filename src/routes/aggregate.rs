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
use config::ValueTemplate;
use http::Method;
use std::sync::Arc;

/// One aggregate endpoint, ready to run.
#[derive(Debug)]
pub struct AggregatePlan {
    pub config: AggregateConfig,
    pub template: Template,
    /// Per call, in config order: the method and its route's JSON options.
    pub targets: Vec<(Arc<Target>, JsonOptions)>,
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
