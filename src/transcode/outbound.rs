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
    /// The body, if the binding has one: JSON, or an `HttpBody`'s bytes.
    pub body: Option<Vec<u8>>,
    /// The body's content type: JSON's, or the one an `HttpBody` names.
    pub content_type: &'static str,
    /// An `HttpBody`'s own content type, when it names one.
    pub raw_content_type: Option<String>,
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
    // The JSON writer spells a FieldMask path it cannot give back
    // (`foo_`) as another path (`foo`): the backend would act on a field
    // the client never named. The walk is over the fields set, as the
    // writing is.
    if let Some(path) = unspellable_mask_path(&msg) {
        return Err(GatewayError::invalid_field(
            "",
            format!(
                "the request cannot be written as JSON for the backend: the FieldMask path {path:?} has no lowerCamelCase form (a path is snake_case: lowercase letters, digits and `_` each before a lowercase letter, in segments joined by `.`)"
            ),
        ));
    }
    let options = json::serialize_options(&JsonOptions::default());
    // A value JSON cannot hold (an `Any` of a type the schemas lack, a
    // NaN `Value`, a Timestamp past year 9999) refuses the call: leaving
    // the message out would send the backend an empty request.
    // A request whose JSON is no object (a wrapper, a Timestamp, a Value)
    // has no fields to place: with `body: "*"` it is the body as it is,
    // and under any other rule it is refused, never sent as nothing.
    let mut whole = None;
    let mut fields = match serde_json::to_value(SerializeWith(&msg, &options)) {
        Ok(Value::Object(m)) => m,
        Ok(other) if matches!(binding.body, BodyRule::Whole) => {
            whole = Some(other);
            Map::new()
        }
        Ok(_) => {
            return Err(GatewayError::invalid_field(
                "",
                format!(
                    "the request, a {}, is written in JSON as a single value, which only a binding with body: \"*\" can send the backend",
                    binding.target.method.input().full_name()
                ),
            ))
        }
        Err(e) => {
            return Err(GatewayError::invalid_field(
                "",
                format!("the request cannot be written as JSON for the backend: {e}"),
            ))
        }
    };

    let mut path = String::new();
    let mut i = 0;
    let segments = &binding.template.segments;
    while i < segments.len() {
        if let Some(var) = binding.path_vars.iter().find(|v| v.start == i) {
            let keys: Vec<&str> = var.fields.iter().map(|f| f.json_name()).collect();
            // A field at its default (0, false, the first enum value) is
            // left out of the JSON, but is a value for the path all the
            // same: the text JSON would give it.
            let value = take(&mut fields, &keys)
                .or_else(|| default_text(&msg, &var.fields))
                .ok_or_else(|| {
                    GatewayError::invalid_field(
                        var.name.clone(),
                        "is needed to build the upstream path",
                    )
                })?;
            let end = var.end.unwrap_or(segments.len());
            let pattern = &segments[i..end];
            // An empty value names no segment: only a variable that may
            // stand for none (`{path=**}`) takes it, and then the path
            // has none.
            if value.is_empty() {
                if matches!(pattern, [Segment::Multi]) {
                    i = end;
                    continue;
                }
                return Err(GatewayError::invalid_field(
                    var.name.clone(),
                    format!(
                        "is empty, and the upstream path {} needs a segment for it",
                        binding.template_text
                    ),
                ));
            }
            // `.` and `..` are not escaped (they are unreserved), and a
            // backend removing dot-segments would serve another path: as
            // inbound, no variable ever stands for one. A one-segment
            // variable's `/` is escaped, but a backend that unescapes `%2F`
            // before it removes dot-segments would still climb, and one that
            // takes `\` for `/` (as WHATWG URLs and Windows paths do) too.
            if value.split(['/', '\\']).any(is_dot_segment) {
                return Err(GatewayError::invalid_field(
                    var.name.clone(),
                    format!(
                        "{value:?} holds a dot-segment (\".\" or \"..\"), which would name another upstream path"
                    ),
                ));
            }
            // A single-segment variable is checked against its pattern
            // only when that is a literal (`{id=lit}`): `*` takes any value,
            // escaped into one segment.
            let checked = var.multi_segment || matches!(pattern, [Segment::Literal(_)]);
            if checked && !fits(&value, pattern) {
                // The upstream's path would name another resource than the
                // template allows (`other/1` for `{parent=shelves/*}`).
                return Err(GatewayError::invalid_field(
                    var.name.clone(),
                    format!(
                        "{value:?} does not match the template's {}{}",
                        pattern_text(pattern),
                        if var.multi_segment {
                            " (each of its segments non-empty)"
                        } else {
                            ""
                        }
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

    let mut raw_content_type = None;
    let body = match &binding.body {
        // The request is an HttpBody: its bytes are the body.
        BodyRule::Whole if binding.raw_request_body => {
            fields.clear();
            let (content_type, data) = http_body_parts(&msg);
            raw_content_type = Some(content_type);
            Some(data)
        }
        BodyRule::Whole => Some(
            serde_json::to_vec(
                &whole
                    .take()
                    .unwrap_or_else(|| Value::Object(std::mem::take(&mut fields))),
            )
            .unwrap_or_default(),
        ),
        BodyRule::Field(f) if binding.raw_request_body => {
            fields.shift_remove(f.json_name());
            let part = msg.get_field(f);
            let (content_type, data) = match part.as_message() {
                Some(part) => http_body_parts(part),
                None => (String::new(), Vec::new()),
            };
            raw_content_type = Some(content_type);
            Some(data)
        }
        BodyRule::Field(f) => {
            let value = fields
                .shift_remove(f.json_name())
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
        content_type: if binding.raw_request_body {
            "application/octet-stream"
        } else {
            "application/json"
        },
        raw_content_type: raw_content_type.filter(|c| !c.is_empty()),
    })
}

/// An `HttpBody` message's content type and bytes.
fn http_body_parts(body: &DynamicMessage) -> (String, Vec<u8>) {
    let content_type = match body.get_field_by_name("content_type").as_deref() {
        Some(prost_reflect::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let data = match body.get_field_by_name("data").as_deref() {
        Some(prost_reflect::Value::Bytes(b)) => b.to_vec(),
        _ => Vec::new(),
    };
    (content_type, data)
}

/// The text JSON gives a path field's value that JSON left out because it
/// holds its default (`0`, `false`). `None` for a field the message does
/// not have at all: one with presence (`optional`, a oneof member, a field
/// of a message) that was never set names no resource.
fn default_text(msg: &DynamicMessage, path: &[prost_reflect::FieldDescriptor]) -> Option<String> {
    use base64::Engine as _;
    use prost_reflect::{Kind, Value as V};
    let (last, parents) = path.split_last()?;
    let mut current = std::borrow::Cow::Borrowed(msg);
    for f in parents {
        if !current.has_field(f) {
            return None;
        }
        let next = current.get_field(f).as_message()?.clone();
        current = std::borrow::Cow::Owned(next);
    }
    if last.supports_presence() && !current.has_field(last) {
        return None;
    }
    let value = current.get_field(last);
    Some(match (value.as_ref(), last.kind()) {
        (V::Bool(b), _) => b.to_string(),
        (V::I32(n), _) => n.to_string(),
        (V::I64(n), _) => n.to_string(),
        (V::U32(n), _) => n.to_string(),
        (V::U64(n), _) => n.to_string(),
        (V::F32(n), _) => n.to_string(),
        (V::F64(n), _) => n.to_string(),
        (V::String(s), _) => s.clone(),
        (V::Bytes(b), _) => base64::engine::general_purpose::STANDARD.encode(b),
        (V::EnumNumber(n), Kind::Enum(e)) => e
            .get_value(*n)
            .map_or_else(|| n.to_string(), |v| v.name().to_owned()),
        _ => return None,
    })
}

fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// Whether a variable's value has the shape of its pattern (a
/// multi-segment one's, or a literal's, `{id=lit}`): literals as written,
/// `*` one non-empty segment, `**` the rest, none of it empty.
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
                // `**` stands for whole segments: an empty one (`a//b`, a
                // leading or trailing `/`) is a path the template never
                // describes.
                if parts[at..parts.len() - after].iter().any(|p| p.is_empty()) {
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
/// fields the message does not have are dropped) and encodes it; a reply
/// that is an `HttpBody` (or whose `response_body` field is one) takes
/// the body's bytes as they are, with `content_type`.
pub fn response(
    binding: &Binding,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<u8>, GatewayError> {
    let output: MessageDescriptor = binding.target.method.output();
    if binding.raw_response_body {
        let part_desc = match &binding.response_body {
            Some(field) => match field.kind() {
                prost_reflect::Kind::Message(m) => m,
                _ => output.clone(),
            },
            None => output.clone(),
        };
        let mut part = DynamicMessage::new(part_desc);
        part.set_field_by_name(
            "content_type",
            prost_reflect::Value::String(content_type.unwrap_or("").to_owned()),
        );
        part.set_field_by_name(
            "data",
            prost_reflect::Value::Bytes(bytes::Bytes::copy_from_slice(body)),
        );
        let msg = match &binding.response_body {
            Some(field) => {
                let mut msg = DynamicMessage::new(output);
                msg.set_field(field, prost_reflect::Value::Message(part));
                msg
            }
            None => part,
        };
        return Ok(msg.encode_to_vec());
    }
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

/// The first FieldMask path in `msg`, at any depth, that lowerCamelCase
/// cannot spell so it reads back as itself (proto3's JSON mapping).
fn unspellable_mask_path(msg: &DynamicMessage) -> Option<String> {
    use prost_reflect::Value as V;
    fn in_value(value: &V) -> Option<String> {
        match value {
            V::Message(m) => unspellable_mask_path(m),
            V::List(items) => items.iter().find_map(in_value),
            V::Map(entries) => entries.values().find_map(in_value),
            _ => None,
        }
    }
    if prost_reflect::ReflectMessage::descriptor(msg).full_name() == "google.protobuf.FieldMask" {
        let paths = msg.get_field_by_number(1)?;
        return paths
            .as_list()?
            .iter()
            .filter_map(V::as_str)
            .find(|p| !spells_in_camel_case(p))
            .map(str::to_owned);
    }
    msg.fields().find_map(|(_, value)| in_value(value))
}

/// Whether a FieldMask path survives lowerCamelCase and back: each `.`
/// separated segment of lowercase letters, digits and `_`, every `_`
/// followed by a lowercase letter.
fn spells_in_camel_case(path: &str) -> bool {
    path.split('.').all(|segment| {
        let bytes = segment.as_bytes();
        bytes.iter().enumerate().all(|(i, b)| match b {
            b'a'..=b'z' | b'0'..=b'9' => true,
            b'_' => bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase),
            _ => false,
        })
    })
}

/// Removes the value at a path of JSON keys and returns it as text.
fn take(fields: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    let (last, parents) = keys.split_last()?;
    let mut current = fields;
    for k in parents {
        current = current.get_mut(*k)?.as_object_mut()?;
    }
    match current.shift_remove(*last)? {
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
            .serialize_with_options(crate::transcode::json::Canonical(s), self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Target;
    use prost_reflect::ReflectMessage as _;
    use std::sync::Arc;

    /// The demo Library method `name` bound to `template` with `method`
    /// and `body` (a body rule).
    fn binding(name: &str, method: http::Method, template: &str, body: &str) -> Binding {
        let method_desc = crate::fuzzing::demo_pool()
            .get_service_by_name("portico.demo.v1.Library")
            .unwrap()
            .methods()
            .find(|m| m.name() == name)
            .unwrap();
        Binding::new(
            Arc::new(Target::for_method(method_desc)),
            method,
            template,
            body,
            "",
            JsonOptions::default(),
            false,
        )
        .unwrap()
    }

    /// The request for `json` (the method's request message as JSON).
    fn built(b: &Binding, json: &str) -> Result<OutboundRequest, GatewayError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let msg = DynamicMessage::deserialize(b.target.method.input(), &mut de).unwrap();
        request(b, &msg.encode_to_vec())
    }

    fn path_of(b: &Binding, json: &str) -> String {
        built(b, json).unwrap().path_and_query
    }

    fn refusal(b: &Binding, json: &str) -> String {
        built(b, json).unwrap_err().message
    }

    /// A request whose JSON is one value (kinds.v1.Things' `Stamp` takes a
    /// Timestamp) is the body itself under `body: "*"`, and refused under
    /// another rule rather than sent as nothing.
    #[test]
    fn a_request_written_as_one_json_value_is_the_body_or_refused() {
        let stamp = crate::transcode::json::kinds_pool()
            .get_service_by_name("kinds.v1.Things")
            .unwrap()
            .methods()
            .find(|m| m.name() == "Stamp")
            .unwrap();
        let bound = |method: http::Method, body: &str| {
            Binding::new(
                Arc::new(Target::for_method(stamp.clone())),
                method,
                "/v1/stamp",
                body,
                "",
                JsonOptions::default(),
                false,
            )
            .unwrap()
        };
        let second = [0x08, 0x01];
        let sent = request(&bound(http::Method::POST, "*"), &second).unwrap();
        assert_eq!(sent.body.as_deref(), Some(&b"\"1970-01-01T00:00:01Z\""[..]));
        assert_eq!(sent.path_and_query, "/v1/stamp");
        let refused = request(&bound(http::Method::GET, ""), &second).unwrap_err();
        assert!(
            refused.message.contains("only a binding with body"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_field_at_its_default_is_a_value_for_the_path() {
        let b = binding(
            "ListBooks",
            http::Method::GET,
            "/v1/{page_size}/{genre}/{parent=shelves/*}",
            "",
        );
        assert_eq!(
            path_of(&b, r#"{"parent":"shelves/1"}"#),
            "/v1/0/GENRE_UNSPECIFIED/shelves/1"
        );
        assert_eq!(
            path_of(
                &b,
                r#"{"parent":"shelves/1","pageSize":5,"genre":"GENRE_FICTION"}"#
            ),
            "/v1/5/GENRE_FICTION/shelves/1"
        );
        let search = binding("SearchBooks", http::Method::GET, "/v1/{in_print}", "");
        assert_eq!(path_of(&search, "{}"), "/v1/false");
    }

    #[test]
    fn an_empty_value_fills_only_a_variable_that_may_stand_for_no_segment() {
        let shelf = binding("GetShelf", http::Method::GET, "/v1/shelves/{shelf}", "");
        assert!(
            refusal(&shelf, r#"{"shelf":""}"#).contains("is empty, and the upstream path"),
            "{}",
            refusal(&shelf, r#"{"shelf":""}"#)
        );
        // A field under a message the request never set names nothing.
        let update = binding(
            "UpdateBook",
            http::Method::PATCH,
            "/v1/{book.name=shelves/*/books/*}",
            "book",
        );
        assert!(refusal(&update, "{}").contains("is needed to build the upstream path"));
        let file = binding("GetFile", http::Method::GET, "/v1/files/{path=**}", "");
        assert_eq!(path_of(&file, r#"{"path":""}"#), "/v1/files");
        assert_eq!(path_of(&file, r#"{"path":"a/b"}"#), "/v1/files/a/b");
        for empty_segment in ["a//b", "/abs", "a/"] {
            let json = format!(r#"{{"path":"{empty_segment}"}}"#);
            assert!(
                refusal(&file, &json).contains("does not match"),
                "{empty_segment}: {}",
                refusal(&file, &json)
            );
        }
    }

    /// What the path takes leaves the rest in field-number order, in the
    /// body and in the query alike.
    #[test]
    fn fields_the_path_takes_leave_the_rest_in_field_number_order() {
        let update = binding(
            "UpdateBook",
            http::Method::PATCH,
            "/v1/{book.name=shelves/*/books/*}",
            "book",
        );
        let out = built(
            &update,
            r#"{"book":{"name":"shelves/1/books/2","title":"t","author":"a","pages":"3"}}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out.body.unwrap()).unwrap(),
            r#"{"title":"t","author":"a","pages":"3"}"#
        );
        let list = binding(
            "ListBooks",
            http::Method::GET,
            "/v1/{parent=shelves/*}/books",
            "",
        );
        assert_eq!(
            path_of(
                &list,
                r#"{"parent":"shelves/1","pageSize":5,"genre":"GENRE_FICTION"}"#
            ),
            "/v1/shelves/1/books?pageSize=5&genre=GENRE_FICTION"
        );
    }

    /// A FieldMask path JSON would spell as another (`foo_` as `foo`) is
    /// refused, not sent as the other.
    #[test]
    fn a_field_mask_path_lower_camel_case_cannot_spell_is_refused() {
        let update = binding(
            "UpdateBook",
            http::Method::PATCH,
            "/v1/{book.name=shelves/*/books/*}",
            "book",
        );
        let with_mask = |paths: &[&str]| {
            let input = update.target.method.input();
            let mut de = serde_json::Deserializer::from_str(
                r#"{"book":{"name":"shelves/1/books/2","title":"t"}}"#,
            );
            let mut msg = DynamicMessage::deserialize(input.clone(), &mut de).unwrap();
            let mask_field = input.get_field_by_name("update_mask").unwrap();
            let mut mask = DynamicMessage::new(mask_field.kind().as_message().unwrap().clone());
            mask.set_field_by_number(
                1,
                prost_reflect::Value::List(
                    paths
                        .iter()
                        .map(|p| prost_reflect::Value::String((*p).to_owned()))
                        .collect(),
                ),
            );
            msg.set_field(&mask_field, prost_reflect::Value::Message(mask));
            request(&update, &msg.encode_to_vec())
        };
        for bad in ["foo_", "foo__bar", "foo_1", "fooBar", "a.b_"] {
            let err = with_mask(&["title", bad]).unwrap_err();
            assert!(
                err.message.contains(&format!(
                    "the FieldMask path {bad:?} has no lowerCamelCase form"
                )),
                "{bad}: {}",
                err.message
            );
        }
        let out = with_mask(&["title", "published.seconds", "page_size2"]).unwrap();
        assert_eq!(
            out.path_and_query,
            "/v1/shelves/1/books/2?updateMask=title%2Cpublished.seconds%2CpageSize2"
        );
    }

    #[test]
    fn a_single_segment_literal_pattern_is_checked() {
        let b = binding("GetShelf", http::Method::GET, "/v1/b/{shelf=lit}", "");
        assert_eq!(path_of(&b, r#"{"shelf":"lit"}"#), "/v1/b/lit");
        for other in ["lit/x", "anything"] {
            let json = format!(r#"{{"shelf":"{other}"}}"#);
            assert!(refusal(&b, &json).contains("does not match"), "{other}");
        }
    }

    #[test]
    fn an_http_body_goes_as_its_bytes_and_comes_back_as_them() {
        let put = binding(
            "PutCover",
            http::Method::PUT,
            "/v1/{name=shelves/*/books/*}/cover",
            "cover",
        );
        let out = built(
            &put,
            r#"{"name":"shelves/1/books/2","cover":{"contentType":"image/png","data":"iVBORw=="}}"#,
        )
        .unwrap();
        assert_eq!(out.path_and_query, "/v1/shelves/1/books/2/cover");
        assert_eq!(out.body.as_deref(), Some(&[0x89, b'P', b'N', b'G'][..]));
        assert_eq!(out.raw_content_type.as_deref(), Some("image/png"));
        let get = binding(
            "GetCover",
            http::Method::GET,
            "/v1/{name=shelves/*/books/*}/cover",
            "",
        );
        let reply = response(&get, b"\x89PNG", Some("image/png")).unwrap();
        let body = DynamicMessage::decode(get.target.method.output(), reply.as_slice()).unwrap();
        assert_eq!(body.descriptor().full_name(), "google.api.HttpBody");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"contentType": "image/png", "data": "iVBORw=="})
        );
    }
}
