//! Proto3 JSON written straight from a message's wire bytes, driven by its
//! descriptor, without building a `DynamicMessage` first: one pass over the
//! bytes, no allocation but the output.
//!
//! It covers what replies are mostly made of (scalars, enums, strings,
//! bytes, nested messages, repeated fields, oneofs) and writes exactly what
//! the general path ([`super::encode`]) writes for them, byte for byte;
//! `fuzz/fuzz_targets/json_wire.rs` holds it to that. Anything else gives
//! [`Fallback`] and the caller takes the general path: maps, the
//! `google.protobuf` well-known types (their JSON forms are special), fields
//! the descriptor does not know, groups, and wire order the general path
//! would reorder or merge (fields out of number order, a singular field or
//! a oneof written twice, a repeated field split in two runs). Encoders
//! write fields in number order, once each, so a reply from a real backend
//! rarely needs the fallback.

use base64::Engine as _;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// How the route writes JSON (`json.use_proto_names`,
/// `json.enums_as_numbers`); the direct path needs default fields skipped
/// and 64-bit integers as strings, as the route defaults are.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub proto_names: bool,
    pub enum_numbers: bool,
}

/// The message needs the general path.
#[derive(Debug, PartialEq, Eq)]
pub struct Fallback;

/// Below prost's recursion limit (100), so a reply the general path would
/// refuse for its depth is never written here.
const MAX_DEPTH: u32 = 64;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// Whether every message a reply of type `desc` can hold is within what
/// this writer covers: no maps, groups or well-known types at any depth.
/// Routes try the direct path only for such types, so a reply the writer
/// would give up on midway never pays for the attempt.
pub fn covers(desc: &MessageDescriptor) -> bool {
    crate::descriptors::reachable_messages(desc).iter().all(|m| {
        m.package_name() != "google.protobuf"
            && m.fields().all(|f| {
                !f.is_map()
                    && !f.is_group()
                    && !matches!(f.kind(), Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue")
            })
    })
}

/// Appends the JSON of the message `bytes` encode to `out`; on
/// [`Fallback`], `out` is as it was.
pub fn write(
    desc: &MessageDescriptor,
    bytes: &[u8],
    style: Style,
    out: &mut Vec<u8>,
) -> Result<(), Fallback> {
    // A well-known type's JSON form is its own (a Timestamp is a string).
    if desc.package_name() == "google.protobuf" {
        return Err(Fallback);
    }
    let start = out.len();
    let written = message(desc, bytes, style, out, 0);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

fn message(
    desc: &MessageDescriptor,
    mut bytes: &[u8],
    style: Style,
    out: &mut Vec<u8>,
    depth: u32,
) -> Result<(), Fallback> {
    if depth >= MAX_DEPTH {
        return Err(Fallback);
    }
    out.push(b'{');
    let mut empty = true;
    let mut last = 0u32;
    // The oneofs seen, by their first field's number.
    let mut oneofs = [0u32; 8];
    let mut oneofs_seen = 0;
    while !bytes.is_empty() {
        let (number, wire_type) = key(&mut bytes)?;
        if number <= last {
            return Err(Fallback);
        }
        last = number;
        let field = desc.get_field(number).ok_or(Fallback)?;
        let kind = field.kind();
        let repeated = field.cardinality() == prost_reflect::Cardinality::Repeated;
        // A map is a repeated field of entry messages; checked only there,
        // as the check costs a descriptor lookup.
        if field.is_group() || (repeated && matches!(&kind, Kind::Message(m) if m.is_map_entry())) {
            return Err(Fallback);
        }
        if let Some(oneof) = field.containing_oneof() {
            let id = oneof.fields().next().map_or(0, |f| f.number());
            if oneofs[..oneofs_seen].contains(&id) || oneofs_seen == oneofs.len() {
                return Err(Fallback);
            }
            oneofs[oneofs_seen] = id;
            oneofs_seen += 1;
        }
        let mark = out.len();
        if !empty {
            out.push(b',');
        }
        name(&field, style, out);
        let present = if repeated {
            out.push(b'[');
            let mut items = 0usize;
            let mut record_type = wire_type;
            loop {
                items += list_record(&kind, record_type, &mut bytes, items, style, out, depth)?;
                // The field's next record, if it follows at once.
                let mut ahead = bytes;
                match key(&mut ahead) {
                    Ok((n, wt)) if n == number => {
                        bytes = ahead;
                        record_type = wt;
                    }
                    _ => break,
                }
            }
            out.push(b']');
            items > 0
        } else {
            let set = value(&kind, wire_type, &mut bytes, style, out, depth)?;
            set || field.supports_presence()
        };
        if present {
            empty = false;
        } else {
            out.truncate(mark);
        }
    }
    out.push(b'}');
    Ok(())
}

fn name(field: &FieldDescriptor, style: Style, out: &mut Vec<u8>) {
    let name = if style.proto_names {
        field.name()
    } else {
        field.json_name()
    };
    string(name, out);
    out.push(b':');
}

/// One record of a repeated field: a packed run of scalars, or one element.
/// Returns how many elements it held.
fn list_record(
    kind: &Kind,
    wire_type: u8,
    bytes: &mut &[u8],
    before: usize,
    style: Style,
    out: &mut Vec<u8>,
    depth: u32,
) -> Result<usize, Fallback> {
    if wire_type == LEN && packable(kind) {
        let mut run = len_delimited(bytes)?;
        let scalar_type = scalar_wire_type(kind);
        let mut n = 0;
        while !run.is_empty() {
            if before + n > 0 {
                out.push(b',');
            }
            value(kind, scalar_type, &mut run, style, out, depth)?;
            n += 1;
        }
        return Ok(n);
    }
    if before > 0 {
        out.push(b',');
    }
    value(kind, wire_type, bytes, style, out, depth)?;
    Ok(1)
}

fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_))
}

fn scalar_wire_type(kind: &Kind) -> u8 {
    match kind {
        Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => I64,
        Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => I32,
        _ => VARINT,
    }
}

/// Writes one value; returns whether it differs from the type's default
/// (what decides, for a field without presence, whether it is written).
fn value(
    kind: &Kind,
    wire_type: u8,
    bytes: &mut &[u8],
    style: Style,
    out: &mut Vec<u8>,
    depth: u32,
) -> Result<bool, Fallback> {
    let expected = match kind {
        Kind::String | Kind::Bytes | Kind::Message(_) => LEN,
        other => scalar_wire_type(other),
    };
    if wire_type != expected {
        return Err(Fallback);
    }
    Ok(match kind {
        Kind::Double => {
            let v = f64::from_bits(fixed64(bytes)?);
            float(v, super::canonical::DOUBLE_EXACT, out);
            v != 0.0
        }
        Kind::Float => {
            let v = f32::from_bits(fixed32(bytes)?);
            float(v, super::canonical::FLOAT_EXACT, out);
            v != 0.0
        }
        Kind::Int32 => number(varint(bytes)? as i32, out),
        Kind::Sint32 => {
            let v = varint(bytes)? as u32;
            number(((v >> 1) as i32) ^ -((v & 1) as i32), out)
        }
        Kind::Sfixed32 => number(fixed32(bytes)? as i32, out),
        Kind::Uint32 => number(varint(bytes)? as u32, out),
        Kind::Fixed32 => number(fixed32(bytes)?, out),
        Kind::Int64 => quoted(varint(bytes)? as i64, out),
        Kind::Sint64 => {
            let v = varint(bytes)?;
            quoted(((v >> 1) as i64) ^ -((v & 1) as i64), out)
        }
        Kind::Sfixed64 => quoted(fixed64(bytes)? as i64, out),
        Kind::Uint64 => quoted(varint(bytes)?, out),
        Kind::Fixed64 => quoted(fixed64(bytes)?, out),
        Kind::Bool => {
            let v = varint(bytes)? != 0;
            out.extend_from_slice(if v { b"true" } else { b"false" });
            v
        }
        Kind::Enum(e) => {
            let n = varint(bytes)? as i32;
            if e.full_name() == "google.protobuf.NullValue" {
                return Err(Fallback);
            }
            match e.get_value(n) {
                Some(v) if !style.enum_numbers => string(v.name(), out),
                _ => {
                    number(n, out);
                }
            }
            n != 0
        }
        Kind::String => {
            let raw = len_delimited(bytes)?;
            let text = std::str::from_utf8(raw).map_err(|_| Fallback)?;
            string(text, out);
            !text.is_empty()
        }
        Kind::Bytes => {
            let raw = len_delimited(bytes)?;
            out.push(b'"');
            let at = out.len();
            out.resize(
                at + base64::encoded_len(raw.len(), true).ok_or(Fallback)?,
                0,
            );
            base64::engine::general_purpose::STANDARD
                .encode_slice(raw, &mut out[at..])
                .map_err(|_| Fallback)?;
            out.push(b'"');
            !raw.is_empty()
        }
        Kind::Message(m) => {
            if m.package_name() == "google.protobuf" {
                return Err(Fallback);
            }
            let raw = len_delimited(bytes)?;
            message(m, raw, style, out, depth + 1)?;
            true
        }
    })
}

/// A JSON string, escaped as serde_json escapes it.
fn string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn number<T: itoa::Integer + Default + PartialEq>(v: T, out: &mut Vec<u8>) -> bool {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    v != T::default()
}

fn quoted<T: itoa::Integer + Default + PartialEq>(v: T, out: &mut Vec<u8>) -> bool {
    out.push(b'"');
    number(v, out);
    out.push(b'"');
    v != T::default()
}

/// A float as the canonical writer puts it (a whole number as an
/// integer), or proto3 JSON's string for a non-finite one.
fn float<T: Into<f64> + serde::Serialize + Copy>(v: T, exact: f64, out: &mut Vec<u8>) {
    let wide: f64 = v.into();
    if wide.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if wide == f64::INFINITY {
        out.extend_from_slice(b"\"Infinity\"");
    } else if wide == f64::NEG_INFINITY {
        out.extend_from_slice(b"\"-Infinity\"");
    } else if let Some(whole) = super::canonical::whole_number(wide, exact) {
        let _ = number(whole, out);
    } else {
        let _ = serde_json::to_writer(&mut *out, &v);
    }
}

fn key(bytes: &mut &[u8]) -> Result<(u32, u8), Fallback> {
    let k = varint(bytes)?;
    let number = k >> 3;
    if number == 0 || number > u64::from(u32::MAX >> 3) {
        return Err(Fallback);
    }
    Ok((number as u32, (k & 7) as u8))
}

fn varint(bytes: &mut &[u8]) -> Result<u64, Fallback> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first().ok_or(Fallback)?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            // A tenth byte may carry only the top bit.
            if i == 9 && b > 1 {
                return Err(Fallback);
            }
            return Ok(v);
        }
    }
    Err(Fallback)
}

fn fixed64(bytes: &mut &[u8]) -> Result<u64, Fallback> {
    let (head, rest) = bytes.split_first_chunk::<8>().ok_or(Fallback)?;
    *bytes = rest;
    Ok(u64::from_le_bytes(*head))
}

fn fixed32(bytes: &mut &[u8]) -> Result<u32, Fallback> {
    let (head, rest) = bytes.split_first_chunk::<4>().ok_or(Fallback)?;
    *bytes = rest;
    Ok(u32::from_le_bytes(*head))
}

fn len_delimited<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], Fallback> {
    let len = usize::try_from(varint(bytes)?).map_err(|_| Fallback)?;
    if len > bytes.len() {
        return Err(Fallback);
    }
    let (head, rest) = bytes.split_at(len);
    *bytes = rest;
    Ok(head)
}

#[cfg(test)]
mod tests;
