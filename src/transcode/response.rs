//! Response message -> HTTP body, per a binding's `response_body` and the
//! route's JSON options.

use super::json;
use super::json::JsonOutput;
use crate::error::{ErrorKind, GatewayError, Origin};
use crate::routes::Binding;
use bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};

/// The body of a unary HTTP reply.
pub enum HttpReplyBody {
    Json(Vec<u8>),
    /// google.api.HttpBody: bytes with their own content type.
    Raw {
        content_type: String,
        data: Bytes,
    },
}

pub fn bad_reply(what: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(
        ErrorKind::BadBackendReply,
        Origin::Backend,
        format!("the backend's reply could not be read: {what}"),
    )
}

/// Decodes a response message.
pub fn decode(desc: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage, GatewayError> {
    DynamicMessage::decode(desc.clone(), bytes).map_err(bad_reply)
}

/// One response message as JSON (used for each message of a stream too).
pub fn message_json(
    desc: &MessageDescriptor,
    bytes: &[u8],
    output: &JsonOutput,
) -> Result<Vec<u8>, GatewayError> {
    if let Some(json) = output.direct(desc, bytes) {
        return Ok(json);
    }
    json::encode(&decode(desc, bytes)?, &output.serialize).map_err(bad_reply)
}

/// One message of a stream as JSON, per its binding: the `response_body`
/// field alone when the binding names one (as a unary reply is written;
/// a `google.api.HttpBody` field, raw bytes to a REST client, is that
/// message's JSON here), else the whole message.
pub fn stream_message_json(
    binding: &Binding,
    bytes: &[u8],
    output: &JsonOutput,
) -> Result<Vec<u8>, GatewayError> {
    if binding.response_body.is_none() {
        return message_json(&binding.target.method.output(), bytes, output);
    }
    match reply_part(binding, bytes, &output.serialize)? {
        ReplyPart::Message(part) => json::encode(&part, &output.serialize).map_err(bad_reply),
        ReplyPart::Json(json) => Ok(json),
    }
}

/// What of a reply message its binding's `response_body` sends.
enum ReplyPart {
    /// The whole message, or the message field `response_body` names.
    Message(DynamicMessage),
    /// A scalar or repeated `response_body` field: its JSON value alone.
    Json(Vec<u8>),
}

fn reply_part(
    binding: &Binding,
    bytes: &[u8],
    options: &prost_reflect::SerializeOptions,
) -> Result<ReplyPart, GatewayError> {
    let msg = decode(&binding.target.method.output(), bytes)?;
    let Some(field) = &binding.response_body else {
        return Ok(ReplyPart::Message(msg));
    };
    match msg.get_field(field).into_owned() {
        Value::Message(inner) if !field.is_list() => Ok(ReplyPart::Message(inner)),
        value => {
            // The field alone in a message of its own, set even when it
            // holds its default: a field with presence (proto3 `optional`,
            // proto2) left unset is missing from a message's JSON even when
            // defaults are written, and its default is what the binding sends.
            let mut only = DynamicMessage::new(binding.target.method.output());
            only.set_field(field, value);
            let json = json::encode(&only, &options.clone().skip_default_fields(false))
                .map_err(bad_reply)?;
            let value: serde_json::Value = serde_json::from_slice(&json).map_err(bad_reply)?;
            let key = if binding.json.use_proto_names {
                field.name()
            } else {
                field.json_name()
            };
            let part = value.get(key).cloned().unwrap_or(serde_json::Value::Null);
            serde_json::to_vec(&part)
                .map(ReplyPart::Json)
                .map_err(bad_reply)
        }
    }
}

/// The HTTP body of a unary reply.
pub fn unary(binding: &Binding, bytes: &[u8]) -> Result<HttpReplyBody, GatewayError> {
    if binding.response_body.is_none() && !binding.raw_response_body {
        if let Some(json) = json::output(&binding.json, binding.target.reply_json_direct)
            .direct(&binding.target.method.output(), bytes)
        {
            return Ok(HttpReplyBody::Json(json));
        }
    }
    let options = json::serialize_options(&binding.json);
    let part = match reply_part(binding, bytes, &options)? {
        ReplyPart::Message(part) => part,
        ReplyPart::Json(json) => return Ok(HttpReplyBody::Json(json)),
    };
    if binding.raw_response_body {
        let content_type = match part.get_field_by_name("content_type").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let data = match part.get_field_by_name("data").as_deref() {
            Some(Value::Bytes(b)) => b.clone(),
            _ => Bytes::new(),
        };
        return Ok(HttpReplyBody::Raw { content_type, data });
    }
    json::encode(&part, &options)
        .map(HttpReplyBody::Json)
        .map_err(bad_reply)
}
