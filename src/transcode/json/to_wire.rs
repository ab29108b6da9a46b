//! A JSON request body read straight into protobuf wire bytes, driven by
//! the message descriptor, without building a `DynamicMessage`: the other
//! direction of [`super::wire`].
//!
//! It reads what the general path ([`super::decode`]) reads the same way
//! and nothing else: field names (lowerCamelCase or as declared), numbers,
//! 64-bit integers as numbers or decimal strings, enums by name, booleans,
//! strings, standard base64 bytes, nested objects and arrays, for the types
//! [`super::wire::covers`] accepts. Anything else (a `null`, an enum
//! number, a float given to an integer field, `"NaN"`, an unknown or
//! repeated key, a second member of a oneof, bad JSON) gives [`Fallback`]
//! and the general path reads the body, so its answer and its error
//! messages stay the only ones clients see. Encoded fields follow the
//! body's key order rather than field-number order; the message is the
//! same (`fuzz/fuzz_targets/json_to_wire.rs` puts both in field-number
//! order with [`canonical`] and compares them byte for byte).

use base64::Engine as _;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// The body needs the general path.
#[derive(Debug, PartialEq, Eq)]
pub struct Fallback;

/// As [`super::wire`]'s, below prost's recursion limit.
const MAX_DEPTH: u32 = 64;

/// The wire bytes of the message the JSON document `json` describes.
pub fn encode(desc: &MessageDescriptor, json: &[u8]) -> Result<Vec<u8>, Fallback> {
    // A well-known type's JSON form is its own (a Timestamp is a string).
    if desc.package_name() == "google.protobuf" {
        return Err(Fallback);
    }
    let mut out = Vec::with_capacity(json.len());
    let mut de = serde_json::Deserializer::from_slice(json);
    MessageSeed {
        desc,
        out: &mut out,
        depth: 0,
    }
    .deserialize(&mut de)
    .map_err(|_| Fallback)?;
    de.end().map_err(|_| Fallback)?;
    Ok(out)
}

/// The error that sends the body down the general path; its text is never
/// shown.
fn fallback<E: de::Error>() -> E {
    E::custom("")
}

struct MessageSeed<'a> {
    desc: &'a MessageDescriptor,
    out: &'a mut Vec<u8>,
    depth: u32,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(fallback());
        }
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Fields and oneofs seen, to leave duplicates to the general path.
        let mut seen: Vec<u32> = Vec::new();
        let mut oneofs: Vec<u32> = Vec::new();
        while let Some(field) = map.next_key_seed(KeySeed(self.desc))? {
            let number = field.number();
            if seen.contains(&number) {
                return Err(fallback());
            }
            seen.push(number);
            if let Some(oneof) = field.containing_oneof() {
                let id = oneof.fields().next().map_or(0, |f| f.number());
                if oneofs.contains(&id) {
                    return Err(fallback());
                }
                oneofs.push(id);
            }
            map.next_value_seed(FieldSeed {
                field: &field,
                out: &mut *self.out,
                depth: self.depth,
            })?;
        }
        Ok(())
    }
}

/// A key: the field it names, by JSON name or declared name.
struct KeySeed<'a>(&'a MessageDescriptor);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = FieldDescriptor;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FieldDescriptor, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = FieldDescriptor;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<FieldDescriptor, E> {
        self.0
            .get_field_by_json_name(key)
            .or_else(|| self.0.get_field_by_name(key))
            .ok_or_else(fallback)
    }
}

/// One field's value: a scalar, an object or an array.
struct FieldSeed<'a> {
    field: &'a FieldDescriptor,
    out: &'a mut Vec<u8>,
    depth: u32,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let kind = self.field.kind();
        // Maps and the well-known types have JSON forms of their own.
        let special = match &kind {
            Kind::Message(m) => m.package_name() == "google.protobuf",
            Kind::Enum(e) => e.full_name() == "google.protobuf.NullValue",
            _ => false,
        };
        if special || self.field.is_map() || self.field.is_group() {
            return Err(fallback());
        }
        if self.field.is_list() {
            return d.deserialize_seq(ListSeed {
                field: self.field,
                kind,
                out: self.out,
                depth: self.depth,
            });
        }
        let number = self.field.number();
        let presence = self.field.supports_presence();
        if let Kind::Message(m) = &kind {
            let mut inner = Vec::new();
            MessageSeed {
                desc: m,
                out: &mut inner,
                depth: self.depth + 1,
            }
            .deserialize(d)?;
            encode_key(number, WireType::LengthDelimited, self.out);
            encode_varint(inner.len() as u64, self.out);
            self.out.extend_from_slice(&inner);
            return Ok(());
        }
        let value = d.deserialize_any(ScalarSeed { kind: &kind })?;
        if presence || !value.is_default(&kind) {
            value.write_field(number, self.out);
        }
        Ok(())
    }
}

/// A repeated field's array.
struct ListSeed<'a> {
    field: &'a FieldDescriptor,
    kind: Kind,
    out: &'a mut Vec<u8>,
    depth: u32,
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let number = self.field.number();
        if let Kind::Message(m) = &self.kind {
            loop {
                let mut inner = Vec::new();
                let seed = MessageSeed {
                    desc: m,
                    out: &mut inner,
                    depth: self.depth + 1,
                };
                if seq.next_element_seed(seed)?.is_none() {
                    return Ok(());
                }
                encode_key(number, WireType::LengthDelimited, self.out);
                encode_varint(inner.len() as u64, self.out);
                self.out.extend_from_slice(&inner);
            }
        }
        if self.field.is_packed() {
            let mut run = Vec::new();
            while let Some(v) = seq.next_element_seed(ScalarSeed { kind: &self.kind })? {
                v.write_bare(&mut run);
            }
            if !run.is_empty() {
                encode_key(number, WireType::LengthDelimited, self.out);
                encode_varint(run.len() as u64, self.out);
                self.out.extend_from_slice(&run);
            }
            return Ok(());
        }
        while let Some(v) = seq.next_element_seed(ScalarSeed { kind: &self.kind })? {
            v.write_field(number, self.out);
        }
        Ok(())
    }
}

/// A scalar value, read as its field's kind.
enum Scalar<'de> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Text(std::borrow::Cow<'de, str>),
    Bytes(Vec<u8>),
}

impl Scalar<'_> {
    /// Whether the general path would leave the value out of a field
    /// without presence: it compares values, so -0.0 counts as 0.
    fn is_default(&self, kind: &Kind) -> bool {
        match (self, kind) {
            (Scalar::Fixed64(v), Kind::Double) => f64::from_bits(*v) == 0.0,
            (Scalar::Fixed32(v), Kind::Float) => f32::from_bits(*v) == 0.0,
            (Scalar::Varint(v) | Scalar::Fixed64(v), _) => *v == 0,
            (Scalar::Fixed32(v), _) => *v == 0,
            (Scalar::Text(s), _) => s.is_empty(),
            (Scalar::Bytes(b), _) => b.is_empty(),
        }
    }

    fn write_field(&self, number: u32, out: &mut Vec<u8>) {
        let wire_type = match self {
            Scalar::Varint(_) => WireType::Varint,
            Scalar::Fixed64(_) => WireType::SixtyFourBit,
            Scalar::Fixed32(_) => WireType::ThirtyTwoBit,
            Scalar::Text(_) | Scalar::Bytes(_) => WireType::LengthDelimited,
        };
        encode_key(number, wire_type, out);
        self.write_bare(out);
    }

    fn write_bare(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Varint(v) => encode_varint(*v, out),
            Scalar::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Text(s) => {
                encode_varint(s.len() as u64, out);
                out.extend_from_slice(s.as_bytes());
            }
            Scalar::Bytes(b) => {
                encode_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
        }
    }
}

struct ScalarSeed<'a> {
    kind: &'a Kind,
}

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_> {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

/// An integer of the field's kind, from a JSON integer or a decimal string,
/// encoded as the wire has it (zigzag for the `sint` kinds, two's
/// complement otherwise).
fn integer<E: de::Error>(kind: &Kind, v: i128) -> Result<Scalar<'static>, E> {
    let (lo, hi) = match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (i32::MIN.into(), i32::MAX.into()),
        Kind::Uint32 | Kind::Fixed32 => (0, u32::MAX.into()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => (i64::MIN.into(), i64::MAX.into()),
        Kind::Uint64 | Kind::Fixed64 => (0, u64::MAX.into()),
        Kind::Double | Kind::Float => (i128::MIN, i128::MAX),
        _ => return Err(fallback()),
    };
    if !(lo..=hi).contains(&v) {
        return Err(fallback());
    }
    Ok(match kind {
        Kind::Int32 | Kind::Int64 => Scalar::Varint(v as i64 as u64),
        Kind::Uint32 | Kind::Uint64 => Scalar::Varint(v as u64),
        Kind::Sint32 => Scalar::Varint(u64::from((((v as i32) << 1) ^ ((v as i32) >> 31)) as u32)),
        Kind::Sint64 => Scalar::Varint((((v as i64) << 1) ^ ((v as i64) >> 63)) as u64),
        Kind::Sfixed32 => Scalar::Fixed32(v as i32 as u32),
        Kind::Fixed32 => Scalar::Fixed32(v as u32),
        Kind::Sfixed64 => Scalar::Fixed64(v as i64 as u64),
        Kind::Fixed64 => Scalar::Fixed64(v as u64),
        Kind::Double => Scalar::Fixed64((v as f64).to_bits()),
        _ => Scalar::Fixed32((v as f32).to_bits()),
    })
}

/// A decimal integer as proto3 JSON writes it in a string: an optional
/// minus and digits without leading zeros, nothing else.
fn decimal(s: &str) -> Option<i128> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.len() <= 20
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if !canonical {
        return None;
    }
    s.parse().ok()
}

impl<'de> Visitor<'de> for ScalarSeed<'_> {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
        match self.kind {
            Kind::Bool => Ok(Scalar::Varint(u64::from(v))),
            _ => Err(fallback()),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        integer(self.kind, i128::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        integer(self.kind, i128::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        match self.kind {
            Kind::Double if v.is_finite() => Ok(Scalar::Fixed64(v.to_bits())),
            Kind::Float if v.is_finite() && v.abs() <= f64::from(f32::MAX) => {
                Ok(Scalar::Fixed32((v as f32).to_bits()))
            }
            _ => Err(fallback()),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        match self.kind {
            Kind::String => Ok(Scalar::Text(v.into())),
            _ => self.visit_str(v),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        match self.kind {
            Kind::String => Ok(Scalar::Text(v.to_owned().into())),
            Kind::Bytes => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map(Scalar::Bytes)
                .map_err(|_| fallback()),
            Kind::Enum(e) => e
                .get_value_by_name(v)
                .map(|value| Scalar::Varint(value.number() as i64 as u64))
                .ok_or_else(fallback),
            Kind::Double | Kind::Float | Kind::Bool | Kind::Message(_) => Err(fallback()),
            _ => integer(self.kind, decimal(v).ok_or_else(fallback)?),
        }
    }
}

/// The message's fields in field-number order, nested messages likewise,
/// each record's bytes kept as they are (a float's sign bit included):
/// how the tests and the fuzz target compare the direct reader's bytes,
/// written in the body's key order, with the general path's. `None` for
/// bytes that are not a message of `desc`.
pub fn canonical(desc: &MessageDescriptor, mut bytes: &[u8]) -> Option<Vec<u8>> {
    let mut records: Vec<(u32, Vec<u8>)> = Vec::new();
    while !bytes.is_empty() {
        let key = prost::encoding::decode_varint(&mut bytes).ok()?;
        let number = u32::try_from(key >> 3).ok()?;
        let wire_type = key & 7;
        let mut record = Vec::new();
        encode_varint(key, &mut record);
        match wire_type {
            0 => encode_varint(
                prost::encoding::decode_varint(&mut bytes).ok()?,
                &mut record,
            ),
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                record.extend_from_slice(bytes.get(..n)?);
                bytes = &bytes[n..];
            }
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut bytes).ok()?).ok()?;
                let value = bytes.get(..len)?;
                bytes = &bytes[len..];
                let nested = match desc.get_field(number).map(|f| f.kind()) {
                    Some(Kind::Message(m)) => canonical(&m, value)?,
                    _ => value.to_vec(),
                };
                encode_varint(nested.len() as u64, &mut record);
                record.extend_from_slice(&nested);
            }
            _ => return None,
        }
        records.push((number, record));
    }
    records.sort_by_key(|(number, _)| *number);
    Some(records.into_iter().flat_map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests;
