//! Errors as JSON bodies in the google.rpc.Status shape:
//! `{"code": <gRPC code>, "message": "...", "details": [<Any as JSON>...]}`.
//! A backend's `grpc-status-details-bin` details are rendered with the
//! loaded schemas; the gateway's own 400s carry a google.rpc.BadRequest.

use crate::error::{ErrorKind, GatewayError};
use base64::Engine as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions, Value};
use serde_json::{json, Value as Json};

/// Renders errors; holds the google.rpc.Status descriptor of the gateway's pool.
#[derive(Clone, Debug)]
pub struct StatusRenderer {
    status: MessageDescriptor,
}

impl StatusRenderer {
    pub fn new(pool: &DescriptorPool) -> Self {
        StatusRenderer {
            status: pool
                .get_message_by_name("google.rpc.Status")
                .expect("google.rpc.Status is built in"),
        }
    }

    /// The JSON object for an error.
    pub fn to_json(&self, err: &GatewayError) -> Json {
        let details = match &err.kind {
            ErrorKind::InvalidRequest { violations } => vec![json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": violations
                    .iter()
                    .map(|v| json!({"field": v.field, "description": v.description}))
                    .collect::<Vec<_>>(),
            })],
            ErrorKind::Backend(b) if !b.details.is_empty() => self.backend_details(&b.details),
            _ => Vec::new(),
        };
        json!({
            "code": err.grpc_code() as i32,
            "message": err.message,
            "details": details,
        })
    }

    pub fn to_vec(&self, err: &GatewayError) -> Vec<u8> {
        serde_json::to_vec(&self.to_json(err)).unwrap_or_else(|_| b"{\"code\":13}".to_vec())
    }

    /// The error's details as (type URL, encoded value) pairs: a backend's
    /// own, or a google.rpc.BadRequest for the gateway's 400s.
    pub fn detail_anys(&self, err: &GatewayError) -> Vec<(String, Vec<u8>)> {
        match &err.kind {
            ErrorKind::Backend(b) if !b.details.is_empty() => {
                let Ok(status) = DynamicMessage::decode(self.status.clone(), b.details.as_ref())
                else {
                    return Vec::new();
                };
                let Some(Value::List(anys)) =
                    status.get_field_by_name("details").map(|v| v.into_owned())
                else {
                    return Vec::new();
                };
                anys.into_iter()
                    .filter_map(|any| {
                        let Value::Message(m) = any else { return None };
                        let url = match m.get_field_by_name("type_url").as_deref() {
                            Some(Value::String(s)) => s.clone(),
                            _ => return None,
                        };
                        let value = match m.get_field_by_name("value").as_deref() {
                            Some(Value::Bytes(b)) => b.to_vec(),
                            _ => Vec::new(),
                        };
                        Some((url, value))
                    })
                    .collect()
            }
            ErrorKind::InvalidRequest { violations } if !violations.is_empty() => {
                let Some(desc) = self
                    .status
                    .parent_pool()
                    .get_message_by_name("google.rpc.BadRequest")
                else {
                    return Vec::new();
                };
                let json = serde_json::json!({
                    "fieldViolations": violations
                        .iter()
                        .map(|v| serde_json::json!({"field": v.field, "description": v.description}))
                        .collect::<Vec<_>>()
                });
                match DynamicMessage::deserialize(desc, json) {
                    Ok(m) => vec![(
                        "type.googleapis.com/google.rpc.BadRequest".to_owned(),
                        prost::Message::encode_to_vec(&m),
                    )],
                    Err(_) => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    /// Each Any of an encoded google.rpc.Status as JSON; an Any whose type
    /// is not in the loaded schemas is shown as `{"@type", "value": base64}`.
    fn backend_details(&self, bytes: &[u8]) -> Vec<Json> {
        let Ok(status) = DynamicMessage::decode(self.status.clone(), bytes) else {
            return Vec::new();
        };
        let Some(Value::List(anys)) = status.get_field_by_name("details").map(|v| v.into_owned())
        else {
            return Vec::new();
        };
        anys.into_iter()
            .filter_map(|any| match any {
                Value::Message(m) => Some(self.any_json(&m)),
                _ => None,
            })
            .collect()
    }

    fn any_json(&self, any: &DynamicMessage) -> Json {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        if any
            .serialize_with_options(
                crate::transcode::json::Canonical(&mut ser),
                &SerializeOptions::new(),
            )
            .is_ok()
        {
            if let Ok(v) = serde_json::from_slice(&out) {
                return v;
            }
        }
        let type_url = match any.get_field_by_name("type_url").as_deref() {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let value = match any.get_field_by_name("value").as_deref() {
            Some(Value::Bytes(b)) => base64::engine::general_purpose::STANDARD.encode(b),
            _ => String::new(),
        };
        json!({"@type": type_url, "value": value})
    }
}
