//! `[[aggregates]]`: REST endpoints that fan out to several methods. This
//! module checks what can be checked without schemas (names, templates,
//! references between calls); the route table resolves the methods.

use crate::config::{file, ConfigError, Validator};
use std::time::Duration;

/// What a failed call does to the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The whole request fails with the first failure; other calls are cancelled.
    Fail,
    /// The reply holds what succeeded, plus an `errors` object.
    Partial,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregateConfig {
    pub method: http::Method,
    pub path: String,
    pub on_error: OnError,
    pub calls: Vec<AggregateCall>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregateCall {
    pub name: String,
    /// `/package.Service/Method`.
    pub grpc_path: String,
    pub request: ValueTemplate,
    pub timeout: Duration,
    /// Indices of earlier calls whose replies this call's request uses.
    pub depends_on: Vec<usize>,
}

/// A JSON value with references to fill in per request.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    Literal(serde_json::Value),
    /// A string that is exactly one reference: takes the referenced value
    /// with its JSON type (a number stays a number, an object an object).
    Ref(Reference),
    /// A string mixing text and references: always a string.
    Text(Vec<TextPart>),
    Object(Vec<(String, ValueTemplate)>),
    List(Vec<ValueTemplate>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TextPart {
    Literal(String),
    Ref(Reference),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub source: Source,
    /// Keys to walk into the source's JSON value (body and replies).
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A variable of the aggregate's path template.
    Path(String),
    /// A query parameter (its first value).
    Query(String),
    /// The JSON request body.
    Body,
    /// The reply of an earlier call, by index.
    Call(usize),
}

const RESERVED: [&str; 4] = ["path", "query", "body", "errors"];

impl Validator<'_> {
    pub(crate) fn aggregate(
        &self,
        key: &str,
        a: &file::AggregateFile,
        default_timeout: Duration,
    ) -> Result<AggregateConfig, ConfigError> {
        let method = match &a.method {
            None => http::Method::GET,
            // The methods OpenAPI names and a client sends with a body or
            // none; HEAD is served with every GET, OPTIONS is CORS's, and
            // CONNECT and custom methods have no place in a REST API's
            // description.
            Some(m) => match m.to_ascii_uppercase().as_str() {
                "GET" => http::Method::GET,
                "POST" => http::Method::POST,
                "PUT" => http::Method::PUT,
                "DELETE" => http::Method::DELETE,
                "PATCH" => http::Method::PATCH,
                _ => {
                    return Err(self.err(
                        format!("{key}.method"),
                        format!(
                            "{m:?} is not a method an aggregate takes: GET (the default), POST, PUT, DELETE or PATCH (a HEAD is answered as its GET)"
                        ),
                    ))
                }
            },
        };
        let template = crate::routes::template::parse(&a.path)
            .map_err(|e| self.err(format!("{key}.path"), e.to_string()))?;
        let path_vars: Vec<String> = template
            .variables
            .iter()
            .map(|v| v.field_path.join("."))
            .collect();
        let on_error = match a.on_error.as_deref() {
            None | Some("fail") => OnError::Fail,
            Some("partial") => OnError::Partial,
            Some(other) => {
                return Err(self.err(
                    format!("{key}.on_error"),
                    format!("{other:?} is not \"fail\" or \"partial\""),
                ))
            }
        };
        let timeout = self.duration(&format!("{key}.timeout"), &a.timeout, default_timeout)?;
        if a.calls.is_empty() {
            return Err(self.err(format!("{key}.calls"), "needs at least one call"));
        }
        let mut calls: Vec<AggregateCall> = Vec::new();
        for (i, c) in a.calls.iter().enumerate() {
            let ck = format!("{key}.calls[{i}]");
            if c.name.is_empty() || c.name.contains(['.', '{', '}']) {
                return Err(self.err(
                    format!("{ck}.name"),
                    "must be a non-empty name without '.', '{' or '}'",
                ));
            }
            if RESERVED.contains(&c.name.as_str()) {
                return Err(self.err(
                    format!("{ck}.name"),
                    format!("{:?} is reserved (path, query, body, errors)", c.name),
                ));
            }
            if calls.iter().any(|p| p.name == c.name) {
                return Err(self.err(
                    format!("{ck}.name"),
                    format!("another call is already named {:?}", c.name),
                ));
            }
            let grpc_path = grpc_path(&c.method).ok_or_else(|| {
                self.err(
                    format!("{ck}.method"),
                    format!("{:?} is not a method like \"pkg.Service/Method\"", c.method),
                )
            })?;
            let scope = Scope {
                path_vars: &path_vars,
                earlier: &calls,
            };
            let mut depends_on = Vec::new();
            let request = match &c.request {
                None => ValueTemplate::Literal(serde_json::Value::Object(Default::default())),
                Some(table) => scope
                    .value(&toml::Value::Table(table.clone()), &mut depends_on)
                    .map_err(|reason| self.err(format!("{ck}.request"), reason))?,
            };
            depends_on.sort_unstable();
            depends_on.dedup();
            calls.push(AggregateCall {
                name: c.name.clone(),
                grpc_path,
                request,
                timeout: self.duration(&format!("{ck}.timeout"), &c.timeout, timeout)?,
                depends_on,
            });
        }
        Ok(AggregateConfig {
            method,
            path: a.path.clone(),
            on_error,
            calls,
        })
    }
}

/// `pkg.Svc/Method` or `pkg.Svc.Method` as `/pkg.Svc/Method`.
fn grpc_path(text: &str) -> Option<String> {
    let text = text.trim_start_matches('/');
    let (service, method) = match text.split_once('/') {
        Some(parts) => parts,
        None => text.rsplit_once('.')?,
    };
    (!service.is_empty() && !method.is_empty() && !method.contains(['/', '.']))
        .then(|| format!("/{service}/{method}"))
}

/// What a call's request may refer to.
struct Scope<'a> {
    path_vars: &'a [String],
    earlier: &'a [AggregateCall],
}

impl Scope<'_> {
    fn value(&self, v: &toml::Value, deps: &mut Vec<usize>) -> Result<ValueTemplate, String> {
        Ok(match v {
            toml::Value::String(s) => self.text(s, deps)?,
            toml::Value::Table(t) => ValueTemplate::Object(
                t.iter()
                    .map(|(k, v)| Ok((k.clone(), self.value(v, deps)?)))
                    .collect::<Result<_, String>>()?,
            ),
            toml::Value::Array(items) => ValueTemplate::List(
                items
                    .iter()
                    .map(|v| self.value(v, deps))
                    .collect::<Result<_, String>>()?,
            ),
            other => ValueTemplate::Literal(
                serde_json::to_value(other).map_err(|e| format!("{other} cannot be JSON: {e}"))?,
            ),
        })
    }

    fn text(&self, s: &str, deps: &mut Vec<usize>) -> Result<ValueTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TextPart::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{s:?}: '{{' without a closing '}}'"))?;
            let reference = self.reference(&rest[open + 1..open + close], deps)?;
            parts.push(TextPart::Ref(reference));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TextPart::Literal(rest.to_owned()));
        }
        Ok(match parts.as_slice() {
            [] => ValueTemplate::Literal(serde_json::Value::String(String::new())),
            [TextPart::Literal(l)] => ValueTemplate::Literal(serde_json::Value::String(l.clone())),
            [TextPart::Ref(r)] => ValueTemplate::Ref(r.clone()),
            _ => ValueTemplate::Text(parts),
        })
    }

    fn reference(&self, text: &str, deps: &mut Vec<usize>) -> Result<Reference, String> {
        let (head, tail) = match text.split_once('.') {
            Some((h, t)) => (h, Some(t)),
            None => (text, None),
        };
        let keys = |t: Option<&str>| -> Vec<String> {
            t.map(|t| t.split('.').map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let source = match (head, tail) {
            ("path", Some(name)) => {
                if !self.path_vars.iter().any(|v| v == name) {
                    return Err(format!(
                        "{{{text}}}: the path has no variable {name:?} (it has: {})",
                        crate::config::list_or_none(
                            &self.path_vars.iter().map(String::as_str).collect::<Vec<_>>()
                        )
                    ));
                }
                return Ok(Reference {
                    source: Source::Path(name.to_owned()),
                    keys: Vec::new(),
                });
            }
            ("query", Some(name)) => {
                return Ok(Reference {
                    source: Source::Query(name.to_owned()),
                    keys: Vec::new(),
                })
            }
            ("path" | "query", None) => {
                return Err(format!("{{{text}}}: name the {head} parameter, as {{{head}.name}}"))
            }
            ("body", _) => Source::Body,
            (call, _) => match self.earlier.iter().position(|c| c.name == call) {
                Some(i) => {
                    deps.push(i);
                    Source::Call(i)
                }
                None => {
                    return Err(format!(
                        "{{{text}}}: {call:?} is not path, query, body or a call listed before this one"
                    ))
                }
            },
        };
        Ok(Reference {
            source,
            keys: keys(tail),
        })
    }
}
