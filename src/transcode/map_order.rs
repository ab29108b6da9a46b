//! A message's map entries put in key order on the wire.
//!
//! Protobuf leaves the order of a map's entries to the writer, and
//! writers differ: prost-reflect holds a map in a `HashMap`, so the same
//! JSON object became different bytes from one call to the next, and Go's
//! `proto.Marshal` varies too unless asked to be deterministic. The
//! response cache keys on the request's bytes, so two equal requests would
//! miss each other. Entries are sorted as protobuf's deterministic
//! serialization and Go's protojson order them: integer keys by value,
//! string keys by their bytes, `false` before `true`. Each map's entries
//! take the places its entries held, so every other field keeps its
//! position, and entries with one key keep their order (the last still
//! wins).

use prost::encoding::{decode_varint, encode_varint};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor};

/// Below prost's recursion limit, as the JSON readers.
const MAX_DEPTH: u32 = 64;

/// Whether a message of `desc` can hold a map at any depth (a
/// `google.protobuf.Struct` or an `Any` included): only those are worth a
/// pass over their bytes.
pub fn can_hold_maps(desc: &MessageDescriptor) -> bool {
    crate::descriptors::reachable_messages(desc)
        .iter()
        .any(|m| m.full_name() == "google.protobuf.Any" || m.fields().any(|f| f.is_map()))
}

/// The bytes of a message of `desc` with every map's entries in key order,
/// at any depth; `None` when they already are, and for bytes that are no
/// message of `desc` (left for the backend to judge) or that would cost
/// more than [`Budget`] allows (left as they came).
pub fn sorted(desc: &MessageDescriptor, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut budget = Budget {
        records: MAX_RECORDS,
        bytes: bytes.len().saturating_mul(4).max(64 * 1024),
    };
    message(desc, bytes, 0, &mut budget).ok().flatten()
}

/// What one pass may spend. The cache keys on bytes a client sent, so a
/// message of a million tiny records, or maps unsorted at every level of
/// a deep nesting (each level copies what it holds), is left as it came
/// rather than costing memory or time out of proportion to its size: its
/// key is then its bytes, as before any sorting.
struct Budget {
    /// Records read, over every level.
    records: usize,
    /// Bytes written, over every level.
    bytes: usize,
}

const MAX_RECORDS: usize = 65_536;

/// A pass given up: bytes that are no message, or over the budget.
struct Stop;

/// The bytes of `bytes` sorted, or themselves when already in order.
pub fn sorted_or_same(desc: &MessageDescriptor, bytes: Vec<u8>) -> Vec<u8> {
    sorted(desc, &bytes).unwrap_or(bytes)
}

/// A request message the gateway built (from JSON, a URL, tool
/// arguments), encoded with its maps in key order when `target`'s request
/// type can hold any: one JSON object is then one byte string.
pub fn encode_request(target: &crate::envelope::Target, msg: &DynamicMessage) -> bytes::Bytes {
    let bytes = msg.encode_to_vec();
    if target.request_has_maps {
        sorted_or_same(&target.method.input(), bytes).into()
    } else {
        bytes.into()
    }
}

struct Record<'a> {
    number: u32,
    /// The whole record: key, length and value.
    whole: &'a [u8],
    /// A length-delimited record's value.
    value: Option<&'a [u8]>,
    /// Its value rewritten (a nested message's maps sorted).
    rewritten: Option<Vec<u8>>,
}

fn records<'a>(mut bytes: &'a [u8], budget: &mut Budget) -> Result<Vec<Record<'a>>, Stop> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        budget.records = budget.records.checked_sub(1).ok_or(Stop)?;
        let start = bytes;
        let key = decode_varint(&mut bytes).map_err(|_| Stop)?;
        let number = u32::try_from(key >> 3).map_err(|_| Stop)?;
        let value = match key & 7 {
            0 => {
                decode_varint(&mut bytes).map_err(|_| Stop)?;
                None
            }
            1 => {
                bytes = bytes.get(8..).ok_or(Stop)?;
                None
            }
            5 => {
                bytes = bytes.get(4..).ok_or(Stop)?;
                None
            }
            2 => {
                let len = decode_varint(&mut bytes).map_err(|_| Stop)?;
                let len = usize::try_from(len).map_err(|_| Stop)?;
                let value = bytes.get(..len).ok_or(Stop)?;
                bytes = &bytes[len..];
                Some(value)
            }
            _ => return Err(Stop),
        };
        let used = start.len() - bytes.len();
        out.push(Record {
            number,
            whole: &start[..used],
            value,
            rewritten: None,
        });
    }
    Ok(out)
}

fn message(
    desc: &MessageDescriptor,
    bytes: &[u8],
    depth: u32,
    budget: &mut Budget,
) -> Result<Option<Vec<u8>>, Stop> {
    if depth > MAX_DEPTH {
        return Err(Stop);
    }
    let mut records = records(bytes, budget)?;
    let mut changed = false;
    // Nested messages first: a map's value may hold maps of its own.
    let any = desc.full_name() == "google.protobuf.Any";
    let any_type = any
        .then(|| {
            records
                .iter()
                .rev()
                .find(|r| r.number == 1)
                .and_then(|r| r.value)
                .and_then(|url| std::str::from_utf8(url).ok())
                .and_then(|url| url.rsplit('/').next())
                .and_then(|name| desc.parent_pool().get_message_by_name(name))
        })
        .flatten();
    for r in &mut records {
        let Some(value) = r.value else { continue };
        let nested = if any && r.number == 2 {
            any_type.clone()
        } else {
            match desc.get_field(r.number).map(|f| f.kind()) {
                Some(Kind::Message(m)) => Some(m),
                _ => None,
            }
        };
        if let Some(nested) = nested {
            r.rewritten = message(&nested, value, depth + 1, budget)?;
            changed |= r.rewritten.is_some();
        }
    }
    // Then each map's entries, into the places its entries held.
    let mut order: Vec<usize> = (0..records.len()).collect();
    for field in desc.fields().filter(|f| f.is_map()) {
        let Kind::Message(entry) = field.kind() else {
            continue;
        };
        let Some(key_kind) = entry.get_field(1).map(|k| k.kind()) else {
            continue;
        };
        let places: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].number == field.number() && records[i].value.is_some())
            .collect();
        if places.len() < 2 {
            continue;
        }
        let keys: Vec<MapKey> = places
            .iter()
            .map(|&i| {
                let r = &records[i];
                map_key(
                    r.rewritten.as_deref().or(r.value).unwrap_or_default(),
                    &key_kind,
                    budget,
                )
            })
            .collect::<Result<_, Stop>>()?;
        let mut by_key: Vec<usize> = (0..places.len()).collect();
        // Stable: entries with one key keep their order.
        by_key.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        if by_key.iter().enumerate().any(|(k, &j)| k != j) {
            changed = true;
            for (slot, &j) in places.iter().zip(&by_key) {
                order[*slot] = places[j];
            }
        }
    }
    if !changed {
        return Ok(None);
    }
    budget.bytes = budget.bytes.checked_sub(bytes.len()).ok_or(Stop)?;
    let mut out = Vec::with_capacity(bytes.len());
    for i in order {
        let r = &records[i];
        match &r.rewritten {
            Some(value) => {
                encode_varint((u64::from(r.number) << 3) | 2, &mut out);
                encode_varint(value.len() as u64, &mut out);
                out.extend_from_slice(value);
            }
            None => out.extend_from_slice(r.whole),
        }
    }
    Ok(Some(out))
}

/// A map entry's key, in the order protobuf's deterministic writers use.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum MapKey<'a> {
    Signed(i64),
    Unsigned(u64),
    Bytes(&'a [u8]),
}

/// The key of an encoded map entry (field 1, the last one given; absent,
/// its kind's default), read as the decoder reads it: an `int32` from the
/// low 32 bits of its varint, a `bool` as zero or not, so two entries the
/// backend reads as one key keep their order (the last still wins).
fn map_key<'a>(entry: &'a [u8], kind: &Kind, budget: &mut Budget) -> Result<MapKey<'a>, Stop> {
    let mut key = None;
    for r in records(entry, budget)? {
        if r.number == 1 {
            key = Some(r.whole);
        }
    }
    let Some(mut field) = key else {
        return Ok(match kind {
            Kind::String => MapKey::Bytes(b""),
            Kind::Int32
            | Kind::Int64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Sfixed32
            | Kind::Sfixed64 => MapKey::Signed(0),
            _ => MapKey::Unsigned(0),
        });
    };
    decode_varint(&mut field).map_err(|_| Stop)?;
    let fixed = |field: &[u8], n: usize| -> Result<u64, Stop> {
        let b = field.get(..n).ok_or(Stop)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    };
    let varint = |field: &mut &[u8]| decode_varint(field).map_err(|_| Stop);
    Ok(match kind {
        Kind::String => {
            let len = usize::try_from(varint(&mut field)?).map_err(|_| Stop)?;
            MapKey::Bytes(field.get(..len).ok_or(Stop)?)
        }
        Kind::Int32 => MapKey::Signed(i64::from(varint(&mut field)? as i32)),
        Kind::Int64 => MapKey::Signed(varint(&mut field)? as i64),
        Kind::Sint32 => {
            let v = varint(&mut field)? as u32;
            MapKey::Signed(i64::from(((v >> 1) as i32) ^ -((v & 1) as i32)))
        }
        Kind::Sint64 => {
            let v = varint(&mut field)?;
            MapKey::Signed(((v >> 1) as i64) ^ -((v & 1) as i64))
        }
        Kind::Sfixed32 => MapKey::Signed(i64::from(fixed(field, 4)? as u32 as i32)),
        Kind::Sfixed64 => MapKey::Signed(fixed(field, 8)? as i64),
        Kind::Fixed32 => MapKey::Unsigned(fixed(field, 4)?),
        Kind::Fixed64 => MapKey::Unsigned(fixed(field, 8)?),
        Kind::Uint32 => MapKey::Unsigned(u64::from(varint(&mut field)? as u32)),
        Kind::Bool => MapKey::Unsigned(u64::from(varint(&mut field)? != 0)),
        _ => MapKey::Unsigned(varint(&mut field)?),
    })
}

#[cfg(test)]
mod tests;
