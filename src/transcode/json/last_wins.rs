//! A field given twice in a JSON body, read last-wins: the earlier
//! occurrences are cut from the text before the parser sees it. The parser
//! alone would merge two objects given for one message field, keep a value
//! a later `null` should clear, and call one oneof member given twice "two
//! members". A field is the same whichever name it is given by (`in_print`
//! and `inPrint`), and so at any depth of messages, lists of messages and
//! map values. Only the general path runs this: the direct one hands any
//! body with a repeated key to it.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The body with every field given twice kept at its last occurrence only,
/// or `None` when no object repeats a field (or the body is not JSON the
/// walk can follow: the parser then says what is wrong).
pub fn resolve(desc: &MessageDescriptor, json: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(json).ok()?;
    let mut cuts = Vec::new();
    message(desc, text, text, &mut cuts, 0)?;
    if cuts.is_empty() {
        return None;
    }
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(json.len());
    let mut from = 0;
    for (start, end) in cuts {
        out.extend_from_slice(&json[from..start]);
        from = end;
    }
    out.extend_from_slice(&json[from..]);
    Some(out)
}

/// As deep as the parser reads: deeper is its refusal to make.
const MAX_DEPTH: usize = 100;

/// What a key names in one object.
#[derive(PartialEq, Eq)]
enum Key {
    Field(u32),
    Unknown(String),
}

/// Collects the cuts for the object `raw` (a slice of `body`) read as
/// `desc`, and for the messages inside the members it keeps.
fn message(
    desc: &MessageDescriptor,
    body: &str,
    raw: &str,
    cuts: &mut Vec<(usize, usize)>,
    depth: usize,
) -> Option<()> {
    if depth > MAX_DEPTH || !raw.trim_start().starts_with('{') {
        return Some(());
    }
    // A well-known type's JSON is its own (a Struct's keys are data).
    if desc.package_name() == "google.protobuf" {
        return Some(());
    }
    let members = serde_json::from_str::<Members>(raw).ok()?.0;
    let keys: Vec<(Key, Option<FieldDescriptor>)> = members
        .iter()
        .map(|(name, _)| {
            match desc
                .get_field_by_json_name(name)
                .or_else(|| desc.get_field_by_name(name))
            {
                Some(f) => (Key::Field(f.number()), Some(f)),
                None => (Key::Unknown(name.clone()), None),
            }
        })
        .collect();
    let mut after_brace = offset(body, raw) + raw.find('{')? + 1;
    for (i, (_, value)) in members.iter().enumerate() {
        let value_end = offset(body, value.get()) + value.get().len();
        // Past the comma after this value: where the next member starts.
        let rest = &body[value_end..];
        let next_start = value_end + rest.find(',').map_or(rest.len(), |c| c + 1);
        let later = keys[i + 1..].iter().any(|(k, _)| *k == keys[i].0);
        if later {
            // Never the last member, so a comma follows it.
            cuts.push((after_brace, next_start));
        } else if let Some(field) = &keys[i].1 {
            inside(field, body, value.get(), cuts, depth)?;
        }
        after_brace = next_start;
    }
    Some(())
}

/// The messages a kept field's value holds.
fn inside(
    field: &FieldDescriptor,
    body: &str,
    raw: &str,
    cuts: &mut Vec<(usize, usize)>,
    depth: usize,
) -> Option<()> {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Some(());
        };
        let Kind::Message(value) = entry.map_entry_value_field().kind() else {
            return Some(());
        };
        if !raw.trim_start().starts_with('{') {
            return Some(());
        }
        for (_, v) in serde_json::from_str::<Members>(raw).ok()?.0 {
            message(&value, body, v.get(), cuts, depth + 2)?;
        }
        return Some(());
    }
    let Kind::Message(m) = field.kind() else {
        return Some(());
    };
    if field.is_list() {
        if !raw.trim_start().starts_with('[') {
            return Some(());
        }
        for item in serde_json::from_str::<Vec<&RawValue>>(raw).ok()? {
            message(&m, body, item.get(), cuts, depth + 1)?;
        }
        return Some(());
    }
    message(&m, body, raw, cuts, depth + 1)
}

/// Where `part`, a slice of `body`, starts in it.
fn offset(body: &str, part: &str) -> usize {
    part.as_ptr() as usize - body.as_ptr() as usize
}

/// An object's members in order, duplicates included, values unparsed.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    out.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Members<'a>, A::Error> {
                Err(serde::de::Error::custom("not an object"))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    fn resolved(json: &str) -> Option<String> {
        let thing = super::super::kinds_pool()
            .get_message_by_name("kinds.v1.Thing")
            .expect("kinds.v1.Thing");
        resolve(&thing, json.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn the_last_occurrence_of_a_field_is_kept_by_either_name() {
        assert_eq!(resolved(r#"{"name":"a","int32Value":1}"#), None);
        assert_eq!(
            resolved(r#"{"name":"a", "int32Value":1 ,"name":null}"#).as_deref(),
            Some(r#"{ "int32Value":1 ,"name":null}"#)
        );
        assert_eq!(
            resolved(r#"{"boolValue":true,"bool_value":false}"#).as_deref(),
            Some(r#"{"bool_value":false}"#)
        );
        // Unknown keys repeat as themselves; the parser judges what is left.
        assert_eq!(resolved(r#"{"x":1,"x":2}"#).as_deref(), Some(r#"{"x":2}"#));
        // Not JSON: left to the parser's error.
        assert_eq!(resolved(r#"{"name":"a","name":"#), None);
    }

    #[test]
    fn messages_inside_kept_fields_are_resolved_too() {
        assert_eq!(
            resolved(r#"{"parent":{"name":"a","name":"b"}}"#).as_deref(),
            Some(r#"{"parent":{"name":"b"}}"#)
        );
        assert_eq!(
            resolved(r#"{"children":{"1":{"name":"a","name":"b"}}}"#).as_deref(),
            Some(r#"{"children":{"1":{"name":"b"}}}"#)
        );
        // A member cut whole is not looked into.
        assert_eq!(
            resolved(r#"{"parent":{"name":"a","name":"b"},"parent":{"name":"c"}}"#).as_deref(),
            Some(r#"{"parent":{"name":"c"}}"#)
        );
    }
}
