//! Reverse transcoding: a request message -> an HTTP/JSON request, per a
//! method's google.api.http binding, for upstreams that speak JSON over
//! HTTP; and their JSON replies -> response messages.

use super::json;
use crate::config::JsonOptions;
use crate::error::GatewayError;
use crate::routes::template::Segment;
use crate::routes::{Binding, BodyRule};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use serde_json::{Map, Value};

/// An HTTP request built from a message.
#[derive(Debug)]
pub struct OutboundRequest {
    pub method: http::Method,
    /// Path and query, percent-encoded.
    pub path_and_query: String,
    /// JSON body, if the binding has one.
    pub body: Option<Vec<u8>>,
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
const MULTI_SEGMENT: &percent_encoding::AsciiSet = &SEGMENT.remove(b'/');

/// Builds the request for `message` (encoded) by the binding's template.
pub fn request(binding: &Binding, message: &[u8]) -> Result<OutboundRequest, GatewayError> {
    let input = binding.target.method.input();
    let msg = DynamicMessage::decode(input, message)
        .map_err(|e| GatewayError::invalid_field("", format!("bad request message: {e}")))?;
    let options = json::serialize_options(&JsonOptions::default());
    let mut fields = match serde_json::to_value(SerializeWith(&msg, &options)) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };

    let mut path = String::new();
    let mut i = 0;
    let segments = &binding.template.segments;
    while i < segments.len() {
        if let Some(var) = binding.path_vars.iter().find(|v| v.start == i) {
            let keys: Vec<&str> = var.fields.iter().map(|f| f.json_name()).collect();
            let value = take(&mut fields, &keys).ok_or_else(|| {
                GatewayError::invalid_field(
                    var.name.clone(),
                    "is needed to build the upstream path",
                )
            })?;
            let end = var.end.unwrap_or(segments.len());
            // `.` and `..` are not escaped (they are unreserved), and a
            // backend removing dot-segments would serve another path: as
            // inbound, no variable ever stands for one.
            let dot_segment = if var.multi_segment {
                value.split('/').any(is_dot_segment)
            } else {
                is_dot_segment(&value)
            };
            if dot_segment {
                return Err(GatewayError::invalid_field(
                    var.name.clone(),
                    format!(
                        "{value:?} holds a dot-segment (\".\" or \"..\"), which would name another upstream path"
                    ),
                ));
            }
            if var.multi_segment && !fits(&value, &segments[i..end]) {
                // The upstream's path would name another resource than the
                // template allows (`other/1` for `{parent=shelves/*}`).
                return Err(GatewayError::invalid_field(
                    var.name.clone(),
                    format!(
                        "{value:?} does not match the template's {}",
                        pattern_text(&segments[i..end])
                    ),
                ));
            }
            let set = if var.multi_segment {
                MULTI_SEGMENT
            } else {
                SEGMENT
            };
            path.push('/');
            path.push_str(&percent_encoding::utf8_percent_encode(&value, set).to_string());
            i = var.end.unwrap_or(segments.len());
            continue;
        }
        match &segments[i] {
            Segment::Literal(l) => {
                path.push('/');
                path.push_str(l);
            }
            _ => {
                return Err(GatewayError::internal(
                    "a wildcard outside a variable cannot be expanded",
                ))
            }
        }
        i += 1;
    }
    if let Some(verb) = &binding.template.verb {
        path.push(':');
        path.push_str(verb);
    }

    let body = match &binding.body {
        BodyRule::Whole => Some(
            serde_json::to_vec(&Value::Object(std::mem::take(&mut fields))).unwrap_or_default(),
        ),
        BodyRule::Field(f) => {
            let value = fields
                .remove(f.json_name())
                .unwrap_or(Value::Object(Map::new()));
            Some(serde_json::to_vec(&value).unwrap_or_default())
        }
        BodyRule::None => None,
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    flatten("", &Value::Object(fields), &mut query);
    let query = query.finish();
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    Ok(OutboundRequest {
        method: binding.method.clone(),
        path_and_query: path,
        body,
    })
}

fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// Whether a multi-segment variable's value has the shape of its pattern:
/// literals as written, `*` one non-empty segment, `**` the rest.
fn fits(value: &str, pattern: &[Segment]) -> bool {
    let parts: Vec<&str> = value.split('/').collect();
    let mut at = 0;
    for (k, segment) in pattern.iter().enumerate() {
        match segment {
            Segment::Literal(l) => {
                if parts.get(at) != Some(&l.as_str()) {
                    return false;
                }
                at += 1;
            }
            Segment::Single => {
                if parts.get(at).is_none_or(|p| p.is_empty()) {
                    return false;
                }
                at += 1;
            }
            Segment::Multi => {
                let after = pattern.len() - k - 1;
                if parts.len() < at + after {
                    return false;
                }
                at = parts.len() - after;
            }
        }
    }
    at == parts.len()
}

/// A variable's pattern as written (`shelves/*`).
fn pattern_text(pattern: &[Segment]) -> String {
    pattern
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => l.as_str(),
            Segment::Single => "*",
            Segment::Multi => "**",
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Parses an upstream's JSON reply as the response message (leniently:
/// fields the message does not have are dropped) and encodes it.
pub fn response(binding: &Binding, body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let output: MessageDescriptor = binding.target.method.output();
    let lenient = JsonOptions {
        reject_unknown_fields: false,
        ..JsonOptions::default()
    };
    // `Empty` has no field to keep: whatever the backend says about a
    // DELETE (`{"deleted":true}`) is dropped, as any unknown field is; but
    // it must be a JSON object, or an HTML error page would pass for
    // success.
    let msg = if body.iter().all(u8::is_ascii_whitespace) {
        DynamicMessage::new(output)
    } else if output.full_name() == "google.protobuf.Empty" {
        let value: Value = serde_json::from_slice(body).map_err(super::response::bad_reply)?;
        if !value.is_object() {
            return Err(super::response::bad_reply(format!(
                "expected a JSON object for google.protobuf.Empty, got {}",
                match value {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            )));
        }
        DynamicMessage::new(output)
    } else if let Some(field) = &binding.response_body {
        let value: Value = serde_json::from_slice(body).map_err(super::response::bad_reply)?;
        let mut wrapper = Map::new();
        wrapper.insert(field.json_name().to_owned(), value);
        json::decode_value(&output, Value::Object(wrapper), &lenient, "").map_err(unreadable)?
    } else {
        json::decode(&output, body, &lenient).map_err(unreadable)?
    };
    Ok(msg.encode_to_vec())
}

/// A reply that does not fit the response message, said of the reply (the
/// decoder words it as a request's fault).
fn unreadable(e: GatewayError) -> GatewayError {
    let what = match &e.kind {
        crate::error::ErrorKind::InvalidRequest { violations } if violations.len() == 1 => {
            let v = &violations[0];
            if v.field.is_empty() {
                v.description.clone()
            } else {
                format!("{}: {}", v.field, v.description)
            }
        }
        _ => e.message,
    };
    super::response::bad_reply(what)
}

/// Removes the value at a path of JSON keys and returns it as text.
fn take(fields: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    let (last, parents) = keys.split_last()?;
    let mut current = fields;
    for k in parents {
        current = current.get_mut(*k)?.as_object_mut()?;
    }
    match current.remove(*last)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Nested objects become dotted keys, arrays repeated keys.
fn flatten(prefix: &str, value: &Value, out: &mut form_urlencoded::Serializer<'_, String>) {
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                flatten(prefix, v, out);
            }
        }
        Value::String(s) => {
            out.append_pair(prefix, s);
        }
        Value::Number(n) => {
            out.append_pair(prefix, &n.to_string());
        }
        Value::Bool(b) => {
            out.append_pair(prefix, if *b { "true" } else { "false" });
        }
        Value::Null => {}
    }
}

/// Lets serde_json build a `Value` from a message with options.
struct SerializeWith<'a>(&'a DynamicMessage, &'a prost_reflect::SerializeOptions);

impl serde::Serialize for SerializeWith<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0
            .serialize_with_options(crate::transcode::json::NonFinite(s), self.1)
    }
}
