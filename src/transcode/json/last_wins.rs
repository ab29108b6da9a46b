//! A field given twice in a JSON body, read last-wins: the earlier
//! occurrences are cut from the text before the parser sees it. The parser
//! alone would merge two objects given for one message field, keep a value
//! a later `null` should clear, and call one oneof member given twice "two
//! members". A field is the same whichever name it is given by (`in_print`
//! and `inPrint`), and so at any depth of messages, lists of messages and
//! map values; inside a well-known type (a `Struct`'s keys are data, an
//! `Any` names its own type) nothing is cut.
//!
//! One pass over the bytes, each object's members compared once: linear in
//! the body whatever it holds, so it may run before any policy.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use std::collections::HashMap;

/// The body with every field given twice kept at its last occurrence only,
/// or `None` when no object repeats a field (or the body is not JSON the
/// walk can follow: the parser then says what is wrong).
pub fn resolve(desc: &MessageDescriptor, json: &[u8]) -> Option<Vec<u8>> {
    let mut walk = Walk {
        json,
        at: 0,
        cuts: Vec::new(),
    };
    walk.value(Some(&Expect::Message(desc.clone())), 0).ok()?;
    walk.skip_space();
    if walk.at != json.len() || walk.cuts.is_empty() {
        return None;
    }
    walk.cuts.sort_unstable();
    let mut out = Vec::with_capacity(json.len());
    let mut from = 0;
    for (start, end) in walk.cuts {
        // A cut inside a member cut whole went with it.
        if start < from {
            continue;
        }
        out.extend_from_slice(&json[from..start]);
        from = end;
    }
    out.extend_from_slice(&json[from..]);
    Some(out)
}

/// Deeper than the parser reads: its refusal to make.
const MAX_DEPTH: usize = 130;

/// Objects with at most this many members are compared pairwise; larger
/// ones through a map, so no body costs more than linear time.
const PAIRWISE: usize = 16;

/// What a value holds that the walk looks into: messages, directly, in a
/// list or as a map's values. Anything else is stepped over.
enum Expect {
    Message(MessageDescriptor),
    List(MessageDescriptor),
    MapOf(MessageDescriptor),
}

fn expect_of(field: &FieldDescriptor) -> Option<Expect> {
    let Kind::Message(m) = field.kind() else {
        return None;
    };
    if field.is_map() {
        match m.map_entry_value_field().kind() {
            Kind::Message(v) => Some(Expect::MapOf(v)),
            _ => None,
        }
    } else if field.is_list() {
        Some(Expect::List(m))
    } else {
        Some(Expect::Message(m))
    }
}

/// What a key names in one object.
#[derive(PartialEq, Eq, Hash)]
enum Key {
    Field(u32),
    Unknown(String),
}

/// Not JSON the walk can follow.
struct Unreadable;

struct Walk<'a> {
    json: &'a [u8],
    at: usize,
    /// Byte ranges to leave out: earlier members of a field given again.
    cuts: Vec<(usize, usize)>,
}

impl Walk<'_> {
    fn skip_space(&mut self) {
        while self.json.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Result<u8, Unreadable> {
        self.skip_space();
        self.json.get(self.at).copied().ok_or(Unreadable)
    }

    fn eat(&mut self, b: u8) -> Result<(), Unreadable> {
        if self.peek()? == b {
            self.at += 1;
            Ok(())
        } else {
            Err(Unreadable)
        }
    }

    fn value(&mut self, expect: Option<&Expect>, depth: usize) -> Result<(), Unreadable> {
        if depth > MAX_DEPTH {
            return Err(Unreadable);
        }
        match (self.peek()?, expect) {
            (b'{', Some(Expect::Message(desc))) if desc.package_name() != "google.protobuf" => {
                self.message(desc, depth)
            }
            (b'{', Some(Expect::MapOf(desc))) => self
                .object(depth, |_| Some(Expect::Message(desc.clone())))
                .map(|_| ()),
            (b'{', _) => self.object(depth, |_| None).map(|_| ()),
            (b'[', Some(Expect::List(desc))) => {
                let item = Expect::Message(desc.clone());
                self.array(Some(&item), depth)
            }
            (b'[', _) => self.array(None, depth),
            (b'"', _) => self.string().map(|_| ()),
            _ => self.scalar(),
        }
    }

    fn message(&mut self, desc: &MessageDescriptor, depth: usize) -> Result<(), Unreadable> {
        let mut keys: Vec<Key> = Vec::new();
        let members = self.object(depth, |key| {
            let field = desc
                .get_field_by_json_name(key)
                .or_else(|| desc.get_field_by_name(key));
            let named = match &field {
                Some(f) => Key::Field(f.number()),
                None => Key::Unknown(key.to_owned()),
            };
            keys.push(named);
            field.as_ref().and_then(expect_of)
        })?;
        // The index of each key's last occurrence; every earlier one is cut.
        let last: Vec<usize> = if keys.len() <= PAIRWISE {
            (0..keys.len())
                .map(|i| {
                    (i + 1..keys.len())
                        .rev()
                        .find(|&j| keys[j] == keys[i])
                        .unwrap_or(i)
                })
                .collect()
        } else {
            let mut by_key: HashMap<&Key, usize> = HashMap::with_capacity(keys.len());
            for (i, k) in keys.iter().enumerate() {
                by_key.insert(k, i);
            }
            keys.iter().map(|k| by_key[k]).collect()
        };
        for (i, range) in members.into_iter().enumerate() {
            if last[i] != i {
                self.cuts.push(range);
            }
        }
        Ok(())
    }

    /// Steps over an object, looking into each member's value as `expect`
    /// says for its key; the byte range of each member, each but the last
    /// with the comma after it.
    fn object(
        &mut self,
        depth: usize,
        mut expect: impl FnMut(&str) -> Option<Expect>,
    ) -> Result<Vec<(usize, usize)>, Unreadable> {
        self.eat(b'{')?;
        let mut members = Vec::new();
        if self.peek()? == b'}' {
            self.at += 1;
            return Ok(members);
        }
        let mut start = self.at;
        loop {
            self.skip_space();
            let (from, to) = self.string()?;
            let raw = &self.json[from + 1..to - 1];
            let key = if raw.contains(&b'\\') {
                serde_json::from_slice::<String>(&self.json[from..to]).map_err(|_| Unreadable)?
            } else {
                String::from_utf8(raw.to_vec()).map_err(|_| Unreadable)?
            };
            self.eat(b':')?;
            let inside = expect(&key);
            self.value(inside.as_ref(), depth + 1)?;
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    members.push((start, self.at));
                    start = self.at;
                }
                b'}' => {
                    members.push((start, self.at));
                    self.at += 1;
                    return Ok(members);
                }
                _ => return Err(Unreadable),
            }
        }
    }

    fn array(&mut self, item: Option<&Expect>, depth: usize) -> Result<(), Unreadable> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.value(item, depth + 1)?;
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Unreadable),
            }
        }
    }

    /// The range of a string, its quotes included.
    fn string(&mut self) -> Result<(usize, usize), Unreadable> {
        if self.peek()? != b'"' {
            return Err(Unreadable);
        }
        let from = self.at;
        let mut i = from + 1;
        while let Some(&b) = self.json.get(i) {
            match b {
                b'\\' => i += 2,
                b'"' => {
                    self.at = i + 1;
                    return Ok((from, self.at));
                }
                _ => i += 1,
            }
        }
        Err(Unreadable)
    }

    /// A number, `true`, `false` or `null`: the parser judges which.
    fn scalar(&mut self) -> Result<(), Unreadable> {
        let from = self.at;
        while self
            .json
            .get(self.at)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
        {
            self.at += 1;
        }
        if self.at == from {
            Err(Unreadable)
        } else {
            Ok(())
        }
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
        assert_eq!(
            resolved(r#"{"na\u006de":"a","name":"b"}"#).as_deref(),
            Some(r#"{"name":"b"}"#)
        );
        // Unknown keys repeat as themselves; the parser judges what is left.
        assert_eq!(resolved(r#"{"x":1,"x":2}"#).as_deref(), Some(r#"{"x":2}"#));
        // Not JSON: left to the parser's error.
        assert_eq!(resolved(r#"{"name":"a","name":"#), None);
        assert_eq!(resolved(r#"{"name":"a","name":"b"} x"#), None);
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
        // A member cut whole takes what was cut inside it along.
        assert_eq!(
            resolved(r#"{"parent":{"name":"a","name":"b"},"parent":{"name":"c"}}"#).as_deref(),
            Some(r#"{"parent":{"name":"c"}}"#)
        );
        // A Struct's keys are data, not fields.
        assert_eq!(resolved(r#"{"attributes":{"a":1,"a":2}}"#), None);
    }

    #[test]
    fn many_distinct_keys_cost_one_pass() {
        let many: Vec<String> = (0..50_000).map(|i| format!("\"k{i}\":0")).collect();
        let body = format!("{{{},\"k7\":1}}", many.join(","));
        let out = resolved(&body).unwrap();
        assert!(!out.contains("\"k7\":0"));
        assert!(out.contains("\"k7\":1") && out.contains("\"k49999\":0"));
    }
}
