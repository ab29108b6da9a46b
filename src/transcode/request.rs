//! HTTP request (path segments, query string, body) -> request message,
//! per a binding's google.api.http rule.

use super::{fields, json, map_order};
use crate::config::{JsonOptions, UnknownQueryParams};
use crate::envelope::Target;
use crate::error::GatewayError;
use crate::routes::{Binding, BodyRule};
use bytes::Bytes;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use std::collections::HashSet;

/// Whether a body with this content type is read as JSON. Besides JSON
/// types, an absent type, `text/plain` (what a browser's simple request
/// sends, avoiding a CORS preflight) and `application/x-www-form-urlencoded`
/// (what `curl -d` sends) are read as JSON too; anything else is a 415,
/// as is a type that is only parameters (`;;;`). A `charset` is not read:
/// JSON text is UTF-8 (RFC 8259 section 8.1), and a body that is not is
/// refused as malformed, whatever it was labelled (clients label ASCII
/// JSON `text/plain; charset=ISO-8859-1`).
pub fn is_json(content_type: Option<&str>) -> bool {
    match content_type {
        None => true,
        Some(ct) if ct.trim().is_empty() => true,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            let suffix = essence
                .len()
                .checked_sub(5)
                .map(|at| &essence.as_bytes()[at..]);
            [
                "application/json",
                "text/json",
                "text/plain",
                "application/x-www-form-urlencoded",
            ]
            .iter()
            .any(|t| essence.eq_ignore_ascii_case(t))
                || suffix.is_some_and(|s| s.eq_ignore_ascii_case(b"+json"))
        }
    }
}

/// What the URL contributes to a request message: the matched path segments
/// and the raw query string.
#[derive(Clone, Copy)]
pub struct UrlParts<'a> {
    pub segments: &'a [&'a str],
    pub query: Option<&'a str>,
}

/// Builds one encoded request message from the body and, for the first (or
/// only) message of a call, the URL's path variables and query parameters.
pub fn build(
    binding: &Binding,
    url: Option<UrlParts<'_>>,
    body: &Bytes,
    content_type: Option<&str>,
) -> Result<Bytes, GatewayError> {
    build_with(binding, url, body, content_type, true)
}

/// Checks what the URL alone would set (path variables, query parameters)
/// as a request would: what an upload is refused for before its first
/// line is read. A PATCH's body is not
/// there yet, so no update mask is asked of it.
pub fn check_url(binding: &Binding, url: UrlParts<'_>) -> Result<(), GatewayError> {
    build_with(binding, Some(url), &Bytes::new(), None, false).map(|_| ())
}

/// What a request with this URL and no body gets: [`check_url`], and a
/// PATCH that then names no field to update is refused as it would be.
/// What `check --explain` shows.
pub fn check_bodyless(binding: &Binding, url: UrlParts<'_>) -> Result<(), GatewayError> {
    build_with(binding, Some(url), &Bytes::new(), None, true).map(|_| ())
}

/// A binary request message (a `portico.proto.v1` WebSocket frame on a
/// REST path) with the URL's path variables and query parameters applied
/// over it, as they fill a JSON body's message.
pub fn merge_url(
    binding: &Binding,
    url: UrlParts<'_>,
    message: &Bytes,
) -> Result<Bytes, GatewayError> {
    if binding.path_vars.is_empty() && url.query.is_none_or(str::is_empty) {
        return Ok(message.clone());
    }
    let input = binding.target.method.input();
    let mut msg = DynamicMessage::decode(input.clone(), message.clone()).map_err(|e| {
        GatewayError::invalid_field(
            "",
            format!("the message is not a valid {}: {e}", input.full_name()),
        )
    })?;
    apply_url(&mut msg, binding, url, &binding.json)?;
    Ok(map_order::encode_request(&binding.target, &msg))
}

/// [`build`]; `whole_request`: the body is all the request has (a PATCH
/// that names nothing to update is refused).
fn build_with(
    binding: &Binding,
    url: Option<UrlParts<'_>>,
    body: &Bytes,
    content_type: Option<&str>,
    whole_request: bool,
) -> Result<Bytes, GatewayError> {
    if matches!(binding.body, BodyRule::Whole) && !binding.raw_request_body && is_json(content_type)
    {
        if let Some(encoded) = direct(binding, url, body) {
            return Ok(encoded);
        }
    }
    let input = binding.target.method.input();
    let opts = &binding.json;
    let mut mask_paths = None;
    let mut msg = match &binding.body {
        BodyRule::None => DynamicMessage::new(input.clone()),
        BodyRule::Whole if binding.raw_request_body => http_body(&input, body, content_type),
        BodyRule::Whole => {
            if body.is_empty() {
                DynamicMessage::new(input.clone())
            } else {
                require_json(content_type)?;
                json::decode(&input, body, opts)?
            }
        }
        BodyRule::Field(field) => {
            let mut msg = DynamicMessage::new(input.clone());
            if binding.raw_request_body {
                let Kind::Message(hb) = field.kind() else {
                    unreachable!("checked at load")
                };
                msg.set_field(field, Value::Message(http_body(&hb, body, content_type)));
            } else if !body.is_empty() {
                require_json(content_type)?;
                let (value, paths) = body_field(field, body, opts, binding.update_mask.is_some())?;
                mask_paths = paths.map(|mut paths| {
                    let bound = bound_in_body(binding, field);
                    paths.retain(|p| !bound.contains(p));
                    paths
                });
                if let Some(value) = value {
                    msg.set_field(field, value);
                }
            }
            msg
        }
    };
    if let Some(url) = url {
        apply_url(&mut msg, binding, url, opts)?;
    }
    if let (Some(mask_field), BodyRule::Field(body_field)) = (&binding.update_mask, &binding.body) {
        if !mask_names_a_field(&msg, mask_field) && masks_by_keys(binding, body_field) {
            match mask_paths {
                Some(paths) if !paths.is_empty() => set_mask(&mut msg, mask_field, paths),
                // No mask and no field to take one from: sent on, most
                // backends would read it as "replace the whole resource".
                _ if whole_request => return Err(nothing_to_update(body_field)),
                _ => {}
            }
        }
    }
    Ok(map_order::encode_request(&binding.target, &msg))
}

/// Whether a PATCH's update mask is made from the JSON keys of its body
/// field: a plain message, not raw bytes (`HttpBody`), a map, a list or a
/// type whose JSON is a scalar (a wrapper, a `Timestamp`).
fn masks_by_keys(binding: &Binding, body_field: &FieldDescriptor) -> bool {
    !binding.raw_request_body
        && !body_field.is_list()
        && !body_field.is_map()
        && matches!(body_field.kind(), Kind::Message(m) if !fields::is_scalar_like(&m))
}

/// A PATCH that names no field to change and gives no `update_mask`.
fn nothing_to_update(body_field: &FieldDescriptor) -> GatewayError {
    GatewayError::invalid_field(
        body_field.json_name(),
        format!(
            "names no field to update: send the fields of {} to change, or an update_mask naming the fields to reset",
            body_field.json_name()
        ),
    )
}

/// Builds a request message from a JSON WebSocket frame on a REST path:
/// the frame is what an HTTP body would be, so a binding with a body field
/// (`body: "book"`) reads it as that field and a PATCH fills its
/// `update_mask`, exactly as REST; with `body: "*"` or no body it is the
/// whole message. The URL's path variables and query parameters fill it too
/// when given.
pub fn build_whole(
    binding: &Binding,
    url: Option<UrlParts<'_>>,
    json_body: &Bytes,
) -> Result<Bytes, GatewayError> {
    if matches!(binding.body, BodyRule::Field(_)) && !binding.raw_request_body {
        return build_with(binding, url, json_body, Some("application/json"), true);
    }
    if let Some(encoded) = direct(binding, url, json_body) {
        return Ok(encoded);
    }
    let input = binding.target.method.input();
    let mut msg = if json_body.iter().all(u8::is_ascii_whitespace) {
        DynamicMessage::new(input)
    } else {
        json::decode(&input, json_body, &binding.json)?
    };
    if let Some(url) = url {
        apply_url(&mut msg, binding, url, &binding.json)?;
    }
    Ok(map_order::encode_request(&binding.target, &msg))
}

/// Sets what the URL names: its path variables, then its query parameters.
fn apply_url(
    msg: &mut DynamicMessage,
    binding: &Binding,
    url: UrlParts<'_>,
    opts: &JsonOptions,
) -> Result<(), GatewayError> {
    for (var, value) in binding.path_values(url.segments) {
        fields::set(msg, &var.fields, &value, &var.name)?;
    }
    if let Some(q) = url.query {
        apply_query_to(msg, binding, q, opts)?;
        // A dotted parameter builds messages as deep as its path is long:
        // past what protobuf decodes, the request is refused here, as a
        // body that deep is, rather than sent to a backend that cannot
        // read it. Only a query with a path that long is walked.
        if may_nest_too_deep(q) {
            json::refuse_too_deep(msg, "", 1)?;
        }
    }
    Ok(())
}

/// Whether a query's keys could nest messages near protobuf's depth limit:
/// a key with that many dots (written or escaped) in it.
fn may_nest_too_deep(query: &str) -> bool {
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or_default();
        key.bytes().filter(|b| matches!(b, b'.' | b'%')).count() + 5 >= json::MAX_MESSAGE_DEPTH
    })
}

/// A JSON document that is a whole request message of `target`'s method,
/// encoded: read directly into wire bytes when the type allows it and the
/// document reads exactly as the general path would read it, else through
/// the general path.
pub fn message_from_json(
    target: &Target,
    json: &[u8],
    options: &JsonOptions,
) -> Result<Bytes, GatewayError> {
    let input = target.method.input();
    if target.request_json_direct {
        if let Ok(encoded) = json::to_wire::encode(&input, json) {
            return Ok(encoded.into());
        }
    }
    Ok(map_order::encode_request(
        target,
        &json::decode(&input, json, options)?,
    ))
}

/// The message read straight from a JSON body that is all of it
/// ([`json::to_wire`]), when nothing else fills it (no path variables, no
/// query, no update mask) and the body reads exactly as the general path
/// would read it; `None` leaves the call to the general path.
fn direct(binding: &Binding, url: Option<UrlParts<'_>>, body: &Bytes) -> Option<Bytes> {
    let url_fills = url
        .is_some_and(|u| !binding.path_vars.is_empty() || u.query.is_some_and(|q| !q.is_empty()));
    if !binding.target.request_json_direct
        || url_fills
        || binding.update_mask.is_some()
        || body.iter().all(u8::is_ascii_whitespace)
    {
        return None;
    }
    json::to_wire::encode(&binding.target.method.input(), body)
        .ok()
        .map(Bytes::from)
}

fn require_json(content_type: Option<&str>) -> Result<(), GatewayError> {
    if is_json(content_type) {
        Ok(())
    } else {
        Err(GatewayError::unsupported_media_type(
            content_type.unwrap_or(""),
        ))
    }
}

fn http_body(desc: &MessageDescriptor, body: &Bytes, content_type: Option<&str>) -> DynamicMessage {
    let mut msg = DynamicMessage::new(desc.clone());
    msg.set_field_by_name(
        "content_type",
        Value::String(content_type.unwrap_or("").to_owned()),
    );
    msg.set_field_by_name("data", Value::Bytes(body.clone()));
    msg
}

/// Parses the body as one field's value (`None`: the JSON leaves it unset,
/// as `null` does); with `want_mask`, also returns the field paths the JSON
/// set, for an update_mask.
fn body_field(
    field: &FieldDescriptor,
    body: &Bytes,
    opts: &JsonOptions,
    want_mask: bool,
) -> Result<(Option<Value>, Option<Vec<String>>), GatewayError> {
    match field.kind() {
        // A wrapper or other well-known type written as a JSON scalar reads
        // as a scalar body does: `null` leaves it unset.
        Kind::Message(desc)
            if !field.is_list() && !field.is_map() && !fields::is_scalar_like(&desc) =>
        {
            if want_mask {
                // The mask names what the body sets as the message reads it:
                // a field given twice, its last occurrence.
                let resolved = json::last_wins::resolve(&desc, body);
                let body = resolved.as_deref().unwrap_or(body);
                let exact = json::exact_numbers::check(&desc, body)
                    .map_err(|e| prefix_field(e, field.name()))?;
                let body = exact.body(body);
                let value: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|e| GatewayError::invalid_field(field.name(), e.to_string()))?;
                let mut paths = Vec::new();
                mask_paths(&desc, &value, "", &mut paths);
                let msg = json::decode_value(&desc, value, opts, field.name())?;
                Ok((Some(Value::Message(msg)), Some(paths)))
            } else {
                let msg = json::decode_at(&desc, body, opts, 2)
                    .map_err(|e| prefix_field(e, field.name()))?;
                Ok((Some(Value::Message(msg)), None))
            }
        }
        _ => {
            // A scalar or repeated body: parse it as the field of its parent.
            let exact = json::exact_numbers::check_field(field, body)
                .map_err(|e| prefix_field(e, field.name()))?;
            let body = exact.body(body);
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| GatewayError::invalid_field(field.name(), e.to_string()))?;
            let parent = &field.parent_message();
            let mut wrapper = serde_json::Map::new();
            wrapper.insert(field.name().to_owned(), value);
            let msg = json::decode_value(parent, serde_json::Value::Object(wrapper), opts, "")?;
            let value = msg
                .has_field(field)
                .then(|| msg.get_field(field).into_owned());
            Ok((value, None))
        }
    }
}

/// Re-roots a body field's violation under the field's own name.
fn prefix_field(e: GatewayError, prefix: &str) -> GatewayError {
    match e.kind {
        crate::error::ErrorKind::InvalidRequest { violations } if violations.len() == 1 => {
            let v = &violations[0];
            let field = if v.field.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", v.field)
            };
            GatewayError::invalid_field(field, v.description.clone())
        }
        _ => e,
    }
}

/// An encoded request whose `update_mask` is unset gets the paths of the
/// keys `arguments` (the whole message's JSON) set under the PATCH
/// binding's body field, less those its path binds (they name the
/// resource), as a REST PATCH fills it; with a mask given the message is
/// returned as it was, and with no field to take a mask from it is
/// refused, as a REST PATCH is.
pub fn fill_update_mask(
    message: Bytes,
    arguments: &serde_json::Value,
    patch: &Binding,
) -> Result<Bytes, GatewayError> {
    let (BodyRule::Field(body_field), Some(mask_field)) = (&patch.body, &patch.update_mask) else {
        return Ok(message);
    };
    let Kind::Message(body_desc) = body_field.kind() else {
        return Ok(message);
    };
    if !masks_by_keys(patch, body_field) {
        return Ok(message);
    }
    let input = body_field.parent_message().clone();
    let mut msg = DynamicMessage::decode(input, message.clone())
        .map_err(|e| GatewayError::internal(format!("re-reading a request it built: {e}")))?;
    if mask_names_a_field(&msg, mask_field) {
        return Ok(message);
    }
    let mut paths = Vec::new();
    if let Some(body) = arguments
        .get(body_field.json_name())
        .or_else(|| arguments.get(body_field.name()))
        .filter(|v| v.is_object())
    {
        mask_paths(&body_desc, body, "", &mut paths);
    }
    let bound = bound_in_body(patch, body_field);
    paths.retain(|p| !bound.contains(p));
    if paths.is_empty() {
        return Err(nothing_to_update(body_field));
    }
    set_mask(&mut msg, mask_field, paths);
    Ok(map_order::encode_request(&patch.target, &msg))
}

/// The fields of the body field that the path binds, as mask paths: they
/// name the resource, so an update never lists them.
fn bound_in_body(binding: &Binding, body_field: &FieldDescriptor) -> Vec<String> {
    binding
        .path_vars
        .iter()
        .filter(|v| v.fields.first() == Some(body_field))
        .map(|v| {
            v.fields[1..]
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect()
}

/// Sets the FieldMask `mask_field` to `paths` (its callers have found
/// the request's own mask names nothing: see [`mask_names_a_field`]).
fn set_mask(msg: &mut DynamicMessage, mask_field: &FieldDescriptor, paths: Vec<String>) {
    if let Kind::Message(fm) = mask_field.kind() {
        let mut mask = DynamicMessage::new(fm);
        mask.set_field_by_name(
            "paths",
            Value::List(paths.into_iter().map(Value::String).collect()),
        );
        msg.set_field(mask_field, Value::Message(mask));
    }
}

/// Whether the request's update mask names at least one path. An empty
/// mask (`?updateMask=`, `"updateMask": ""`, only commas or spaces) is no
/// mask: sent on, most backends would read it as "replace the whole
/// resource", as they would no mask at all.
fn mask_names_a_field(msg: &DynamicMessage, mask_field: &FieldDescriptor) -> bool {
    msg.has_field(mask_field)
        && match msg.get_field(mask_field).as_message() {
            Some(mask) => mask.get_field_by_name("paths").is_some_and(|p| {
                p.as_list().is_some_and(|l| {
                    l.iter()
                        .any(|path| path.as_str().is_some_and(|s| !s.trim().is_empty()))
                })
            }),
            None => true,
        }
}

/// The update_mask paths of a PATCH body: every key sent, nested objects of
/// plain message fields expanded, in proto field names. An empty object
/// is the path of its key: the client asked for that message to be reset.
fn mask_paths(
    desc: &MessageDescriptor,
    value: &serde_json::Value,
    prefix: &str,
    out: &mut Vec<String>,
) {
    let serde_json::Value::Object(map) = value else {
        return;
    };
    for (key, v) in map {
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            continue;
        };
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        match field.kind() {
            Kind::Message(m)
                if v.as_object().is_some_and(|o| !o.is_empty())
                    && !field.is_map()
                    && !field.is_list()
                    && !m.full_name().starts_with("google.protobuf.") =>
            {
                mask_paths(&m, v, &path, out)
            }
            // With `reject_unknown_fields = false` an enum name the schema
            // does not know is dropped, as an unknown field is: masked, the
            // field would be reset rather than left as it was.
            _ if holds_unknown_enum_name(&field, v) => {}
            _ => out.push(path),
        }
    }
}

/// Whether a body value of `field` names an enum value its enum does not
/// have (a repeated or map field: in any entry).
fn holds_unknown_enum_name(field: &FieldDescriptor, v: &serde_json::Value) -> bool {
    let unknown = |e: &prost_reflect::EnumDescriptor, v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|name| e.get_value_by_name(name).is_none())
    };
    match field.kind() {
        Kind::Enum(e) if field.is_list() => v
            .as_array()
            .is_some_and(|items| items.iter().any(|i| unknown(&e, i))),
        Kind::Enum(e) => unknown(&e, v),
        Kind::Message(entry) if field.is_map() => match entry.map_entry_value_field().kind() {
            Kind::Enum(e) => v
                .as_object()
                .is_some_and(|m| m.values().any(|i| unknown(&e, i))),
            _ => false,
        },
        _ => false,
    }
}

/// The field (and the fields leading to it) a query parameter of a REST
/// request sets, or why the binding takes no such parameter.
pub fn query_fields(binding: &Binding, key: &str) -> Result<Vec<FieldDescriptor>, String> {
    let input = binding.target.method.input();
    match (fields::resolve(&input, key), &binding.body) {
        (None, _) => Err(fields::unreachable_through(&input, key)
            .unwrap_or_else(|| fields::not_a_field(&input, key))),
        (Some(fs), _) if binding.path_binds(&fs) => Err("is already bound by the path".to_owned()),
        (_, BodyRule::Whole) => {
            Err("is not accepted: the body carries the whole request".to_owned())
        }
        (Some(fs), BodyRule::Field(b)) if fs[0] == *b => {
            Err(format!("is part of the body field {}", b.name()))
        }
        (Some(fs), _) => Ok(fs),
    }
}

/// Sets the fields a query string names; see [`query_fields`].
fn apply_query_to(
    msg: &mut DynamicMessage,
    binding: &Binding,
    query: &str,
    opts: &JsonOptions,
) -> Result<(), GatewayError> {
    let mut seen_singular: HashSet<String> = HashSet::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let fs = match query_fields(binding, &key) {
            Ok(fs) => fs,
            Err(reason) => {
                if opts.unknown_query_params == UnknownQueryParams::Reject {
                    let named = if key.is_empty() {
                        "a query parameter with an empty name".to_owned()
                    } else {
                        format!("query parameter {key}")
                    };
                    return Err(GatewayError::invalid_field(
                        key.as_ref(),
                        format!("{named} {reason}"),
                    ));
                }
                continue;
            }
        };
        let last = fs.last().expect("non-empty");
        // By the field, not the spelling: `page_size` and `pageSize` are one.
        if !last.is_list()
            && !seen_singular.insert(fs.iter().map(|f| f.name()).collect::<Vec<_>>().join("."))
        {
            return Err(GatewayError::invalid_field(
                key.as_ref(),
                format!("query parameter {key} is given more than once but is not repeated"),
            ));
        }
        fields::set(msg, &fs, &value, &key).map_err(|e| {
            // Looked for only once a value is refused.
            if query.contains('+') {
                plus_as_space(e, last, &value)
            } else {
                e
            }
        })?;
    }
    Ok(())
}

/// A query value refused with a space in it, for a field whose text never
/// has one (a number, a time, base64), in a query that holds a `+`: most
/// likely a `+` the query's form decoding turned into a space, which the
/// refusal then says.
fn plus_as_space(mut e: GatewayError, field: &FieldDescriptor, value: &str) -> GatewayError {
    let spaceless = match field.kind() {
        Kind::String | Kind::Bool | Kind::Enum(_) => false,
        Kind::Message(m) => matches!(
            m.full_name(),
            "google.protobuf.Timestamp"
                | "google.protobuf.Duration"
                | "google.protobuf.Int64Value"
                | "google.protobuf.UInt64Value"
                | "google.protobuf.Int32Value"
                | "google.protobuf.UInt32Value"
                | "google.protobuf.DoubleValue"
                | "google.protobuf.FloatValue"
                | "google.protobuf.BytesValue"
        ),
        _ => true,
    };
    if spaceless && value.contains(' ') {
        const HINT: &str = " (in a query string `+` is a space: write a plus sign as %2B)";
        e.message.push_str(HINT);
        if let crate::error::ErrorKind::InvalidRequest { violations } = &mut e.kind {
            for v in violations {
                v.description.push_str(HINT);
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::mask_paths;

    /// A dotted query parameter nests a message per step: past the 100
    /// protobuf decodes, the request is refused naming the field, as a
    /// JSON body that deep is, and never encoded for the backend.
    #[test]
    fn a_query_parameter_nesting_past_protobufs_depth_is_refused() {
        use crate::routes::Binding;
        let method = crate::transcode::json::kinds_pool()
            .get_service_by_name("kinds.v1.Things")
            .unwrap()
            .methods()
            .find(|m| m.name() == "ListThings")
            .unwrap();
        let binding = Binding::new(
            std::sync::Arc::new(crate::envelope::Target::for_method(method)),
            http::Method::GET,
            "/v1/things",
            "",
            "",
            crate::config::JsonOptions::default(),
            false,
        )
        .unwrap();
        let built = |nested: usize| {
            let query = format!("filter{}.text=x", ".nested".repeat(nested));
            super::build(
                &binding,
                Some(super::UrlParts {
                    segments: &["v1", "things"],
                    query: Some(&query),
                }),
                &bytes::Bytes::new(),
                None,
            )
        };
        // The request, `filter` and 98 `nested`: the text's message is the 100th.
        assert!(built(98).is_ok());
        let refused = built(99).unwrap_err();
        assert!(
            refused
                .message
                .contains("nests messages more than 100 deep"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_patch_mask_names_each_key_sent_and_an_empty_object_as_its_key() {
        let filter = crate::transcode::json::kinds_pool()
            .get_message_by_name("kinds.v1.ListThingsRequest")
            .unwrap();
        let paths = |json: &str| {
            let mut out = Vec::new();
            mask_paths(&filter, &serde_json::from_str(json).unwrap(), "", &mut out);
            out
        };
        assert_eq!(paths(r#"{"filter":{}}"#), ["filter"]);
        assert_eq!(paths(r#"{"filter":null}"#), ["filter"]);
        assert_eq!(paths(r#"{"filter":{"nested":{}}}"#), ["filter.nested"]);
        assert!(paths("{}").is_empty());
    }
}
