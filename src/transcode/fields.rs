//! Setting fields from strings: path variables and query parameters.
//! Covers every scalar kind, enums by name or number, repeated fields, and
//! the well-known types a query string can carry (Timestamp, Duration,
//! FieldMask, wrappers).

use crate::error::GatewayError;
use base64::Engine as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};

/// The field `part` names in `message`, by its proto or its JSON name, as
/// a query key may name it.
fn field_named(message: &MessageDescriptor, part: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(part)
        .or_else(|| message.get_field_by_json_name(part))
}

/// Resolves a dotted query key (`filter.language`) to its field path,
/// accepting proto and JSON names. `None` when any part names no field.
pub fn resolve(desc: &MessageDescriptor, key: &str) -> Option<Vec<FieldDescriptor>> {
    let mut fields = Vec::new();
    let mut message = desc.clone();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = field_named(&message, part)?;
        if parts.peek().is_some() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !is_scalar_like(&m) => message = m,
                _ => return None,
            }
        }
        fields.push(field);
    }
    Some(fields)
}

/// Why a dotted query key that [`resolve`] cannot follow names no field:
/// a part before the last is a map or a list of messages.
pub fn unreachable_through(desc: &MessageDescriptor, key: &str) -> Option<String> {
    let mut message = desc.clone();
    let mut parts = key.split('.').peekable();
    let mut path = String::new();
    while let Some(part) = parts.next() {
        let field = field_named(&message, part)?;
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        parts.peek()?;
        match field.kind() {
            _ if field.is_map() => {
                return Some(format!(
                    "goes through {path}, a map field, which cannot be set from the query string"
                ))
            }
            Kind::Message(m) if field.is_list() => {
                return Some(format!(
                    "goes through {path}, a list of messages ({}), which cannot be set from the query string",
                    m.full_name()
                ))
            }
            Kind::Message(m) if m.full_name() == "google.protobuf.Struct" => {
                return Some(format!(
                    "goes through {path}, a google.protobuf.Struct, which cannot be set from the query string"
                ))
            }
            Kind::Message(m) => message = m,
            _ => return None,
        }
    }
    None
}

/// Why a query key [`resolve`] and [`unreachable_through`] give nothing
/// for names no field, said of the message where the path stops: the
/// nested message that lacks the field, or the scalar that has none.
pub fn not_a_field(desc: &MessageDescriptor, key: &str) -> String {
    let mut message = desc.clone();
    let mut path = String::new();
    for part in key.split('.') {
        let Some(field) = field_named(&message, part) else {
            // grpc-gateway's `labels[key]=value`: said of the map meant.
            let map = part.split_once('[').and_then(|(name, _)| {
                let field = field_named(&message, name)?;
                field.is_map().then_some(name)
            });
            if let Some(name) = map {
                let dot = if path.is_empty() { "" } else { "." };
                return format!(
                    "is not a field: {path}{dot}{name} is a map field, which cannot be set from the query string ({path}{dot}{name}[key]=value is not read)"
                );
            }
            return if path.is_empty() {
                format!("is not a field of {}", message.full_name())
            } else {
                format!(
                    "is not a field: {path} is a {}, which has no field {part}",
                    message.full_name()
                )
            };
        };
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(part);
        match field.kind() {
            // Written as one JSON value (a Timestamp, a wrapper): set whole.
            Kind::Message(m) if is_scalar_like(&m) => {
                return format!(
                    "is not a field: {path} is a {}, set as a whole ({path}=...)",
                    m.full_name()
                )
            }
            Kind::Message(m) => message = m,
            other => {
                let what = match other {
                    Kind::String => "a string".to_owned(),
                    Kind::Bytes => "bytes".to_owned(),
                    Kind::Bool => "a bool".to_owned(),
                    Kind::Enum(e) => format!("an enum ({})", e.full_name()),
                    _ => "a number".to_owned(),
                };
                return format!("is not a field: {path} is {what}, which has no fields");
            }
        }
    }
    format!("is not a field of {}", desc.full_name())
}

/// Sets (or, for repeated fields, appends) `value` at the field path.
pub fn set(
    msg: &mut DynamicMessage,
    fields: &[FieldDescriptor],
    value: &str,
    name: &str,
) -> Result<(), GatewayError> {
    let (last, parents) = fields.split_last().expect("a field path is never empty");
    let mut current = msg;
    for f in parents {
        // Stepping into a oneof member sets it: refused when a sibling is
        // set already, as setting the member itself is (below), rather than
        // clearing the sibling the path or an earlier parameter gave.
        refuse_second_oneof_member(current, f, name)?;
        current = match current.get_field_mut(f) {
            Value::Message(m) => m,
            _ => return Err(GatewayError::invalid_field(name, "is not a message")),
        };
    }
    if last.is_map() {
        return Err(GatewayError::invalid_field(
            name,
            "is a map field, which cannot be set from the query string",
        ));
    }
    if let (true, Kind::Message(m)) = (last.is_list(), last.kind()) {
        if !is_scalar_like(&m) {
            return Err(GatewayError::invalid_field(
                name,
                format!(
                    "is a list of messages ({}), which cannot be set from the query string",
                    m.full_name()
                ),
            ));
        }
    }
    let parsed =
        parse(&last.kind(), value).map_err(|reason| GatewayError::invalid_field(name, reason))?;
    // A Value is JSON, which has no NaN or Infinity: one could be sent on
    // but never written back.
    if last.full_name() == "google.protobuf.Value.number_value"
        && matches!(parsed, Value::F64(v) if !v.is_finite())
    {
        return Err(GatewayError::invalid_field(
            name,
            format!(
                "{value:?} is not a finite number, the only kind a google.protobuf.Value holds"
            ),
        ));
    }
    if last.is_list() {
        if let Value::List(items) = current.get_field_mut(last) {
            items.push(parsed);
        }
    } else {
        refuse_second_oneof_member(current, last, name)?;
        current.set_field(last, parsed);
    }
    Ok(())
}

/// An error when `field` is a oneof member and another member of its oneof
/// is set in `msg`.
fn refuse_second_oneof_member(
    msg: &DynamicMessage,
    field: &FieldDescriptor,
    name: &str,
) -> Result<(), GatewayError> {
    let Some(oneof) = field.containing_oneof() else {
        return Ok(());
    };
    if oneof.fields().any(|f| f != *field && msg.has_field(&f)) {
        return Err(GatewayError::invalid_field(
            name,
            format!("another member of oneof {} is already set", oneof.name()),
        ));
    }
    Ok(())
}

/// Messages that a single string can hold (a query value, a path variable).
pub fn is_scalar_like(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
    ) || wrapper_inner(m).is_some()
}

fn wrapper_inner(m: &MessageDescriptor) -> Option<FieldDescriptor> {
    let wrapper = matches!(
        m.full_name(),
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    );
    if wrapper {
        m.get_field_by_name("value")
    } else {
        None
    }
}

/// A number, or one of proto3 JSON's three spellings of a non-finite one.
/// Rust's own `inf`, `nan` and numbers too large for a double (which it
/// reads as infinite) are refused.
fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) if s.bytes().any(|b| b.is_ascii_digit()) => {
                Err(format!("{s:?} is out of range for a double"))
            }
            _ => Err(format!(
                "{s:?} is not a number (non-finite values are \"NaN\", \"Infinity\" and \"-Infinity\")"
            )),
        },
    }
}

fn int<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse::<T>()
        .map_err(|_| format!("{s:?} is not a valid {what}"))
}

/// Parses one string as a value of `kind`.
pub fn parse(kind: &Kind, s: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Double => Value::F64(parse_float(s)?),
        Kind::Float => {
            let v = parse_float(s)?;
            // Out of range only when it does not round to a finite float:
            // `3.4028235e38`, as the largest float is written, is that float.
            if v.is_finite() && !(v as f32).is_finite() {
                return Err(format!("{s:?} is out of range for a float"));
            }
            Value::F32(v as f32)
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(int(s, "32-bit integer")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int(s, "64-bit integer")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(int(s, "unsigned 32-bit integer")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(int(s, "unsigned 64-bit integer")?),
        Kind::Bool => Value::Bool(match s {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{s:?} is not true, false, 1 or 0")),
        }),
        Kind::String => Value::String(s.to_owned()),
        Kind::Bytes => Value::Bytes(decode_base64(s)?.into()),
        Kind::Enum(e) => {
            let number = match e.get_value_by_name(s) {
                Some(v) => v.number(),
                None => {
                    let n: i32 = s
                        .parse()
                        .map_err(|_| format!("{s:?} is not a value of enum {}", e.full_name()))?;
                    // proto3 enums are open: an undeclared number is kept,
                    // as a JSON body keeps it. proto2's are closed.
                    // NullValue has one value, whose JSON is `null`: any
                    // other number is no value a body could carry either.
                    let closed = e.parent_file().syntax() == prost_reflect::Syntax::Proto2
                        || e.full_name() == "google.protobuf.NullValue";
                    if closed && e.get_value(n).is_none() {
                        return Err(format!("{n} is not a value of enum {}", e.full_name()));
                    }
                    n
                }
            };
            Value::EnumNumber(number)
        }
        Kind::Message(m) => {
            if let Some(inner) = wrapper_inner(m) {
                let mut msg = DynamicMessage::new(m.clone());
                msg.set_field(&inner, parse(&inner.kind(), s)?);
                Value::Message(msg)
            } else if is_scalar_like(m) {
                let msg =
                    DynamicMessage::deserialize(m.clone(), serde_json::Value::String(s.to_owned()))
                        .map_err(|e| {
                            // A mask names fields by their JSON names, as
                            // its JSON form says; a proto name is the usual slip.
                            let hint = if m.full_name() == "google.protobuf.FieldMask" {
                                " (paths are comma-separated lowerCamelCase JSON names: publishedDate, not published_date)"
                            } else {
                                ""
                            };
                            format!("{s:?} is not a valid {}: {e}{hint}", m.full_name())
                        })?;
                Value::Message(msg)
            } else if matches!(
                m.full_name(),
                "google.protobuf.Struct" | "google.protobuf.ListValue" | "google.protobuf.Empty"
            ) {
                return Err(format!(
                    "is a {}, which cannot be set from the query string",
                    m.full_name()
                ));
            } else if m.full_name() == "google.protobuf.Value" {
                return Err(
                    "is a google.protobuf.Value, which takes no value of its own: set one of its kinds, as NAME.stringValue=..., NAME.numberValue=... or NAME.boolValue=..."
                        .to_owned(),
                );
            } else {
                return Err(format!(
                    "names a message ({}), which takes no value of its own: set its fields, as NAME.FIELD=value",
                    m.full_name()
                ));
            }
        }
    })
}

/// Accepts standard and URL-safe base64, padded or not.
fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .ok_or_else(|| format!("{s:?} is not base64"))
}

#[cfg(test)]
mod tests;
