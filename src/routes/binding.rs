//! A binding: one HTTP method and path template mapped to one gRPC method,
//! with every field reference resolved to a descriptor at load time.

use super::template::{Segment, Template, Variable};
use crate::config::JsonOptions;
use crate::envelope::Target;
use http::Method;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use std::borrow::Cow;
use std::sync::Arc;

pub const HTTP_BODY: &str = "google.api.HttpBody";
pub const FIELD_MASK: &str = "google.protobuf.FieldMask";

/// Where the HTTP body goes in the request message.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body; every unbound field comes from the query string.
    None,
    /// `body: "*"`: the body is the request message, less the path-bound fields.
    Whole,
    /// `body: "field"`: the body is that top-level field; others come from the query.
    Field(FieldDescriptor),
}

/// A path variable resolved to its field path.
#[derive(Debug, Clone)]
pub struct PathVar {
    pub fields: Vec<FieldDescriptor>,
    /// Dotted name as written in the template.
    pub name: String,
    pub start: usize,
    /// `None`: up to the end of the path (the variable holds `**`).
    pub end: Option<usize>,
    pub multi_segment: bool,
}

#[derive(Debug)]
pub struct Binding {
    pub target: Arc<Target>,
    pub method: Method,
    /// The template as written, for listings and errors.
    pub template_text: String,
    pub template: Template,
    pub path_vars: Vec<PathVar>,
    pub body: BodyRule,
    pub response_body: Option<FieldDescriptor>,
    pub json: JsonOptions,
    /// The `POST /package.Service/Method` mapping every method gets.
    pub auto: bool,
    /// PATCH whose body field is a message: the request's unset
    /// `update_mask` is filled from the JSON keys sent.
    pub update_mask: Option<FieldDescriptor>,
    /// The request (or its body field) is google.api.HttpBody: raw bytes.
    pub raw_request_body: bool,
    /// The reply (or its response_body field) is google.api.HttpBody.
    pub raw_response_body: bool,
}

impl Binding {
    /// Whether the template has a `*` or `**` that no variable holds: an
    /// upstream path built from it would have nothing to put there.
    pub fn has_unbound_wildcard(&self) -> bool {
        let len = self.template.segments.len();
        self.template
            .segments
            .iter()
            .enumerate()
            .any(|(i, segment)| {
                !matches!(segment, super::template::Segment::Literal(_))
                    && !self
                        .path_vars
                        .iter()
                        .any(|v| v.start <= i && i < v.end.unwrap_or(len))
            })
    }

    /// Builds a binding, checking every field the rule names.
    pub fn new(
        target: Arc<Target>,
        method: Method,
        template_text: &str,
        body: &str,
        response_body: &str,
        json: JsonOptions,
        auto: bool,
    ) -> Result<Binding, String> {
        let template = super::template::parse(template_text).map_err(|e| e.to_string())?;
        let input = target.method.input();
        let output = target.method.output();
        let path_vars = template
            .variables
            .iter()
            .map(|v| path_var(&input, v, &template.segments))
            .collect::<Result<Vec<_>, _>>()?;
        // Two members of one oneof cannot both be set: a path binding both
        // would refuse every request it matched.
        for (i, a) in path_vars.iter().enumerate() {
            for b in &path_vars[i + 1..] {
                // Where the two paths part, in one message: the fields there.
                let parted = a.fields.iter().zip(&b.fields).find(|(x, y)| x != y);
                let shared = parted.and_then(|(x, y)| {
                    let one = x.containing_oneof()?;
                    y.containing_oneof()
                        .is_some_and(|o| o == one)
                        .then_some(one)
                });
                if let Some(oneof) = shared {
                    return Err(format!(
                        "path variables {} and {} set two members of oneof {}, and a request sets one at most: no request could use this binding",
                        a.name,
                        b.name,
                        oneof.name()
                    ));
                }
            }
        }
        let body = match body {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            name => BodyRule::Field(top_level_field(&input, name, "body")?),
        };
        if let BodyRule::Field(f) = &body {
            if path_vars
                .iter()
                .any(|v| v.fields[0] == *f && v.fields.len() == 1)
            {
                return Err(format!(
                    "field {} is bound by both the path and the body",
                    f.name()
                ));
            }
        }
        let response_body = match response_body {
            "" => None,
            name => Some(top_level_field(&output, name, "response_body")?),
        };
        let update_mask = match (&method, &body) {
            (&Method::PATCH, BodyRule::Field(f)) if matches!(f.kind(), Kind::Message(_)) => {
                input.get_field_by_name("update_mask").filter(|m| {
                    matches!(m.kind(), Kind::Message(d) if d.full_name() == FIELD_MASK)
                        && !m.is_list()
                })
            }
            _ => None,
        };
        let raw_request_body = match &body {
            BodyRule::Whole => input.full_name() == HTTP_BODY,
            BodyRule::Field(f) => is_http_body(f),
            BodyRule::None => false,
        };
        let raw_response_body = match &response_body {
            None => output.full_name() == HTTP_BODY,
            Some(f) => is_http_body(f),
        };
        Ok(Binding {
            target,
            method,
            template_text: template_text.to_owned(),
            template,
            path_vars,
            body,
            response_body,
            json,
            auto,
            update_mask,
            raw_request_body,
            raw_response_body,
        })
    }

    /// The decoded value of each path variable, from the matched raw segments.
    pub fn path_values<'a>(
        &'a self,
        segments: &[&'a str],
    ) -> impl Iterator<Item = (&'a PathVar, Cow<'a, str>)> + 'a {
        let segments = segments.to_vec();
        self.path_vars.iter().map(move |v| {
            (
                v,
                variable_value(&segments, v.start, v.end, v.multi_segment),
            )
        })
    }

    /// Whether `fields` (a top-level field path) is bound by the path.
    pub fn path_binds(&self, fields: &[FieldDescriptor]) -> bool {
        self.path_vars.iter().any(|v| v.fields == fields)
    }

    /// Whether the path sets another member of the oneof `field` (under
    /// `parents`) belongs to, or a field inside one: a query parameter for
    /// `field` would then always be refused.
    pub fn path_sets_other_oneof_member(
        &self,
        parents: &[FieldDescriptor],
        field: &FieldDescriptor,
    ) -> bool {
        let Some(oneof) = field.containing_oneof() else {
            return false;
        };
        self.path_vars.iter().any(|v| {
            v.fields.len() > parents.len()
                && v.fields[..parents.len()] == *parents
                && v.fields[parents.len()] != *field
                && v.fields[parents.len()].containing_oneof().as_ref() == Some(&oneof)
        })
    }
}

fn is_http_body(f: &FieldDescriptor) -> bool {
    matches!(f.kind(), Kind::Message(m) if m.full_name() == HTTP_BODY) && !f.is_list()
}

/// Percent-decodes a segment of a multi-segment variable, leaving `%2F` as is.
/// A path variable's decoded value from the raw segments `start..end`
/// (`None`: to the end of the path). A single segment decodes fully; a
/// multi-segment value keeps `%2F` encoded, per the google.api.http spec.
pub fn variable_value<'a>(
    segments: &[&'a str],
    start: usize,
    end: Option<usize>,
    multi_segment: bool,
) -> Cow<'a, str> {
    let end = end.unwrap_or(segments.len()).min(segments.len());
    let start = start.min(end);
    if multi_segment || start == end {
        Cow::Owned(
            segments[start..end]
                .iter()
                .map(|s| decode_keeping_slashes(s))
                .collect::<Vec<_>>()
                .join("/"),
        )
    } else {
        percent_encoding::percent_decode_str(segments[start]).decode_utf8_lossy()
    }
}

/// Percent-decodes a segment of a multi-segment variable, except `%2F`,
/// which stays encoded (google.api.http). Decoding works on bytes, so a
/// character encoded as several escapes (`%D1%97`) comes out whole and a
/// stray `%` next to a multi-byte character is kept as it is.
fn decode_keeping_slashes(segment: &str) -> Cow<'_, str> {
    if !segment.contains('%') {
        return Cow::Borrowed(segment);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((0x2, 0xf)) => {
                out.extend_from_slice(&bytes[i..i + 3]);
                i += 3;
            }
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn top_level_field(
    message: &MessageDescriptor,
    name: &str,
    what: &str,
) -> Result<FieldDescriptor, String> {
    message.get_field_by_name(name).ok_or_else(|| {
        if name.contains('.') {
            // google.api.http takes a top-level field only, though some
            // gateways read a path there.
            format!(
                "{what} names {name:?}, a field path: it must name a top-level field of {}",
                message.full_name()
            )
        } else {
            format!(
                "{what} names field {name:?}, which {} does not have",
                message.full_name()
            )
        }
    })
}

fn path_var(
    input: &MessageDescriptor,
    v: &Variable,
    segments: &[Segment],
) -> Result<PathVar, String> {
    let name = v.field_path.join(".");
    let mut fields = Vec::with_capacity(v.field_path.len());
    let mut message = input.clone();
    for (i, ident) in v.field_path.iter().enumerate() {
        let field = message.get_field_by_name(ident).ok_or_else(|| {
            format!(
                "path variable {{{name}}}: {} has no field {ident:?}",
                message.full_name()
            )
        })?;
        if field.is_list() || field.is_map() {
            let what = if field.is_map() { "a map" } else { "repeated" };
            return Err(format!(
                "path variable {{{name}}}: field {ident} is {what}: a path variable names one singular field"
            ));
        }
        let last = i + 1 == v.field_path.len();
        match field.kind() {
            Kind::Message(m) if !last => message = m,
            Kind::Message(m) => {
                return Err(format!(
                    "path variable {{{name}}}: field {ident} is a message ({})",
                    m.full_name()
                ))
            }
            _ if !last => {
                return Err(format!(
                    "path variable {{{name}}}: field {ident} is not a message"
                ))
            }
            _ => {}
        }
        fields.push(field);
    }
    let to_end = segments[v.start..v.end].contains(&Segment::Multi);
    Ok(PathVar {
        fields,
        multi_segment: v.is_multi_segment(segments),
        name,
        start: v.start,
        end: if to_end { None } else { Some(v.end) },
    })
}
