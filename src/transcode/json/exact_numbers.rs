//! Numbers a JSON parser would change on their way into a message.
//!
//! The JSON parser holds a number that is not a plain 64-bit integer as a
//! double, and the message's integer fields then take the double: a value
//! past the field's range came out as the nearest end of it, and an
//! integer written with an exponent or past 2^53 lost digits. A float
//! field refused `3.4028235e38`, which is how `FLT_MAX` is written (by this
//! gateway among others) and which rounds to it.
//!
//! So before a body is read, any number that a double would change is
//! looked at against the field it fills: in an integer field it is written
//! out as its exact digits (`1e18` is `1000000000000000000`), or refused
//! when it is not an integer or not in the field's range; in a float field,
//! a value that rounds to the largest float is given as that float. Most
//! bodies have no such number, and for them this is one scan of the bytes.
//!
//! A number in quotes is looked at too where it fills a `float` or a
//! `double`: the parser reads one past the field's range (`"1e400"`, or
//! `"3.5e38"` for a float) as an infinity, which the client did not write.
//!
//! And when the parser refuses a body, [`diagnose`] walks it again looking
//! at every number, quoted or not, so the refusal says which value is
//! wrong for which field in words, not in the parser's own.

mod decimal;

use crate::error::GatewayError;
use decimal::{exact_integer, Exact};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// A number token a double would not carry as written: an integer past
/// 64 bits, a value with an exponent or a fraction that a double holds as
/// an integer (it might fill an integer field), or one just past the
/// largest float.
fn needs_a_look(token: &str) -> bool {
    let plain_integer = !token.contains(['.', 'e', 'E']);
    if plain_integer {
        return token.parse::<i64>().is_err() && token.parse::<u64>().is_err();
    }
    let Ok(v) = token.parse::<f64>() else {
        return false;
    };
    // Any double that is a whole number may fill an integer field: its
    // text says whether it is that number (`1e-400` reads as 0, and
    // `9007199254740993.5` as an integer). Doubles with a fraction are
    // refused by integer fields as they are.
    (v.is_finite() && v.fract() == 0.0) || (v.abs() > f64::from(f32::MAX) && (v as f32).is_finite())
}

/// A quoted value that may be a number past a float's range: one that
/// starts as a number does and has an exponent or 39 digits or more, and
/// reads as a double larger than the largest float. `"NaN"`, `"Infinity"`
/// and the like do not start so, and are what the client wrote.
fn quoted_needs_a_look(content: &[u8]) -> bool {
    matches!(content.first(), Some(b'-' | b'+' | b'.' | b'0'..=b'9'))
        && (content.len() >= 39 || content.iter().any(|b| matches!(b, b'e' | b'E')))
        && std::str::from_utf8(content)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|v| v.abs() > f64::from(f32::MAX))
}

/// The body with every such number made exact for its field, `None` when
/// it has none (or is not JSON the scan can follow: the parser then says
/// what is wrong with it). Refuses a number that no value of its integer
/// field is.
pub fn check(desc: &MessageDescriptor, json: &[u8]) -> Result<Checked, GatewayError> {
    check_as(&Expect::Message(desc.clone()), json)
}

/// [`check`] for a body that is one field's value (`body: "field"`).
pub fn check_field(field: &FieldDescriptor, json: &[u8]) -> Result<Checked, GatewayError> {
    let expect = if field.is_list() {
        Expect::List(field.clone())
    } else if field.is_map() {
        Expect::Map(field.clone())
    } else {
        Expect::Kind(field.kind())
    };
    check_as(&expect, json)
}

/// Why the parser refused `json` as `desc`, in words, when a number is at
/// fault: a value past its integer field's range or not an integer, quoted
/// or not, or a float past the largest. `None` when every number fits its
/// field (the fault is elsewhere). Walks the whole body: only for a body
/// already refused.
pub fn diagnose(desc: &MessageDescriptor, json: &[u8]) -> Option<GatewayError> {
    let mut walk = Walk {
        json,
        at: 0,
        edits: Vec::new(),
        path: String::new(),
        strict: true,
    };
    match walk.value(&Expect::Message(desc.clone()), 0) {
        Err(Stop::Refused(e)) => Some(e),
        _ => None,
    }
}

/// What [`check`] found: the body with its numbers written out exactly
/// (when one had to be), and how deep its arrays and objects nest.
pub struct Checked {
    pub rewritten: Option<Vec<u8>>,
    pub nesting: usize,
}

impl Checked {
    /// The body to parse: the rewritten one, or `json` as it came.
    pub fn body<'a>(&'a self, json: &'a [u8]) -> &'a [u8] {
        self.rewritten.as_deref().unwrap_or(json)
    }
}

fn check_as(expect: &Expect, json: &[u8]) -> Result<Checked, GatewayError> {
    let (look, nesting) = scan(json)?;
    let as_it_came = Checked {
        rewritten: None,
        nesting,
    };
    if !look {
        return Ok(as_it_came);
    }
    let mut walk = Walk {
        json,
        at: 0,
        edits: Vec::new(),
        path: String::new(),
        strict: false,
    };
    match walk.value(expect, 0) {
        Ok(()) => {}
        Err(Stop::Refused(e)) => return Err(e),
        Err(Stop::Unreadable) => return Ok(as_it_came),
    }
    if walk.edits.is_empty() {
        return Ok(as_it_came);
    }
    let mut out = Vec::with_capacity(json.len() + 32);
    let mut from = 0;
    for (start, end, text) in walk.edits {
        out.extend_from_slice(&json[from..start]);
        out.extend_from_slice(text.as_bytes());
        from = end;
    }
    out.extend_from_slice(&json[from..]);
    Ok(Checked {
        rewritten: Some(out),
        nesting,
    })
}

/// One pass over the bytes, strings skipped: whether a number needs a
/// look, and a refusal for nesting past [`super::MAX_NESTING`], which the
/// parser only counts in fields it reads (an unknown field that
/// `reject_unknown_fields = false` drops would otherwise nest without end).
fn scan(json: &[u8]) -> Result<(bool, usize), GatewayError> {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut look = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                let end = string_end(json, i).unwrap_or(json.len());
                look = look || (end > i + 1 && quoted_needs_a_look(&json[i + 1..end - 1]));
                i = end;
            }
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
                if depth > super::MAX_NESTING {
                    let line_start = json[..i]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                    let line = 1 + json[..i].iter().filter(|&&b| b == b'\n').count();
                    return Err(super::too_deep(line, i - line_start + 1));
                }
                i += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let end = number_end(json, i);
                look = look || std::str::from_utf8(&json[i..end]).is_ok_and(needs_a_look);
                i = end;
            }
            _ => i += 1,
        }
    }
    Ok((look, deepest))
}

/// The index just past the string that opens at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn number_end(json: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < json.len() && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
        i += 1;
    }
    i
}

/// What a JSON value is read as.
enum Expect {
    Message(MessageDescriptor),
    Kind(Kind),
    List(FieldDescriptor),
    Map(FieldDescriptor),
}

enum Stop {
    Refused(GatewayError),
    /// Not JSON the walk can follow; the parser will say why.
    Unreadable,
}

struct Walk<'a> {
    json: &'a [u8],
    at: usize,
    /// Replacements: the byte range of a number and its exact text.
    edits: Vec<(usize, usize, String)>,
    /// The field being read, as the client spelled it (`book.pages`).
    path: String,
    /// Every number looked at, not only those a double would change, and
    /// integers in quotes too: the walk of [`diagnose`].
    strict: bool,
}

impl Walk<'_> {
    fn skip_space(&mut self) {
        while self.at < self.json.len() && self.json[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.json.get(self.at).copied()
    }

    fn expect_byte(&mut self, b: u8) -> Result<(), Stop> {
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            Err(Stop::Unreadable)
        }
    }

    fn value(&mut self, expect: &Expect, depth: usize) -> Result<(), Stop> {
        if depth > super::MAX_NESTING {
            return Err(Stop::Unreadable);
        }
        match (expect, self.peek()) {
            (Expect::Message(desc), Some(b'{')) => self.message(desc, depth),
            (Expect::List(field), Some(b'[')) => {
                self.at += 1;
                let item = Expect::Kind(field.kind());
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(());
                }
                loop {
                    self.value(&item, depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(());
                        }
                        _ => return Err(Stop::Unreadable),
                    }
                }
            }
            (Expect::Map(field), Some(b'{')) => {
                let Kind::Message(entry) = field.kind() else {
                    return Err(Stop::Unreadable);
                };
                let value = entry.map_entry_value_field().kind();
                self.object(depth, |_| Some(Expect::Kind(value.clone())))
            }
            (Expect::Kind(Kind::Message(desc)), Some(_)) => match desc.full_name() {
                // Wrappers are written as their value.
                "google.protobuf.Int64Value"
                | "google.protobuf.UInt64Value"
                | "google.protobuf.Int32Value"
                | "google.protobuf.UInt32Value"
                | "google.protobuf.FloatValue"
                | "google.protobuf.DoubleValue" => {
                    let value = desc.get_field(1).ok_or(Stop::Unreadable)?;
                    self.value(&Expect::Kind(value.kind()), depth + 1)
                }
                // Any JSON at all, its numbers doubles; or an Any, whose
                // type is named inside it.
                "google.protobuf.Value"
                | "google.protobuf.Struct"
                | "google.protobuf.ListValue"
                | "google.protobuf.Any" => self.skip(),
                _ => self.value(&Expect::Message(desc.clone()), depth),
            },
            (Expect::Kind(kind), Some(b'-' | b'0'..=b'9')) => self.number(kind),
            (Expect::Kind(kind), Some(b'"')) => self.quoted(kind),
            (_, Some(_)) => self.skip(),
            (_, None) => Err(Stop::Unreadable),
        }
    }

    fn message(&mut self, desc: &MessageDescriptor, depth: usize) -> Result<(), Stop> {
        self.object(depth, |key| {
            let field = desc
                .get_field_by_json_name(key)
                .or_else(|| desc.get_field_by_name(key))?;
            Some(if field.is_list() {
                Expect::List(field)
            } else if field.is_map() {
                Expect::Map(field)
            } else {
                Expect::Kind(field.kind())
            })
        })
    }

    /// An object whose members are read as `member` says (a key it names
    /// no field for is skipped).
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&str) -> Option<Expect>,
    ) -> Result<(), Stop> {
        self.expect_byte(b'{')?;
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Stop::Unreadable);
            }
            let start = self.at;
            self.at = string_end(self.json, start).ok_or(Stop::Unreadable)?;
            let key: String =
                serde_json::from_slice(&self.json[start..self.at]).map_err(|_| Stop::Unreadable)?;
            self.expect_byte(b':')?;
            let outer = self.path.len();
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(&key);
            match member(&key) {
                Some(expect) => self.value(&expect, depth + 1)?,
                None => self.skip()?,
            }
            self.path.truncate(outer);
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Stop::Unreadable),
            }
        }
    }

    /// Past one value of any shape without looking into it: brackets are
    /// counted, not recursed into, so no nesting is too deep to skip.
    fn skip(&mut self) -> Result<(), Stop> {
        let mut open = 0usize;
        loop {
            match self.peek().ok_or(Stop::Unreadable)? {
                b'"' => self.at = string_end(self.json, self.at).ok_or(Stop::Unreadable)?,
                b'{' | b'[' => {
                    open += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    open = open.checked_sub(1).ok_or(Stop::Unreadable)?;
                    self.at += 1;
                }
                b',' | b':' if open > 0 => self.at += 1,
                b'-' | b'0'..=b'9' => self.at = number_end(self.json, self.at),
                b't' | b'f' | b'n' => {
                    while self.at < self.json.len() && self.json[self.at].is_ascii_alphabetic() {
                        self.at += 1;
                    }
                }
                _ => return Err(Stop::Unreadable),
            }
            if open == 0 {
                return Ok(());
            }
        }
    }

    /// A string where a scalar of `kind` goes: a float or double in quotes
    /// past the field's range is refused (the parser would read it as an
    /// infinity); in [`diagnose`]'s walk, an integer in quotes is checked
    /// as the parser reads one, plain decimal digits in the field's range.
    fn quoted(&mut self, kind: &Kind) -> Result<(), Stop> {
        let start = self.at;
        self.at = string_end(self.json, start).ok_or(Stop::Unreadable)?;
        let content = &self.json[start + 1..self.at - 1];
        let refuse =
            |path: &str, why: String| Err(Stop::Refused(GatewayError::invalid_field(path, why)));
        match kind {
            Kind::Float | Kind::Double => {
                if !quoted_needs_a_look(content) {
                    return Ok(());
                }
                let text = std::str::from_utf8(content).map_err(|_| Stop::Unreadable)?;
                let v: f64 = text.parse().map_err(|_| Stop::Unreadable)?;
                let (past, name) = match kind {
                    Kind::Float => ((v as f32).is_infinite(), "a float"),
                    _ => (v.is_infinite(), "a double"),
                };
                if past {
                    return refuse(&self.path, format!("{text:?} is out of range for {name}"));
                }
                Ok(())
            }
            _ if !self.strict => Ok(()),
            _ => {
                let Some((lo, hi, name)) = integer_range(kind) else {
                    return Ok(());
                };
                let text = std::str::from_utf8(content).map_err(|_| Stop::Unreadable)?;
                let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return refuse(
                        &self.path,
                        format!("{text:?} is not an integer: {name} in quotes is plain decimal digits, with an optional sign (no exponent or fraction: write it unquoted, or as its digits)"),
                    );
                }
                match text.parse::<i128>() {
                    Ok(v) if (lo..=hi).contains(&v) => Ok(()),
                    _ => refuse(&self.path, format!("{text:?} is out of range for {name}")),
                }
            }
        }
    }

    /// A number where a scalar of `kind` goes.
    fn number(&mut self, kind: &Kind) -> Result<(), Stop> {
        let start = self.at;
        self.at = number_end(self.json, start);
        let token =
            std::str::from_utf8(&self.json[start..self.at]).map_err(|_| Stop::Unreadable)?;
        if !self.strict && !needs_a_look(token) {
            return Ok(());
        }
        if *kind == Kind::Float && self.strict {
            let v: f64 = token.parse().map_err(|_| Stop::Unreadable)?;
            if (v as f32).is_infinite() {
                return Err(Stop::Refused(GatewayError::invalid_field(
                    self.path.clone(),
                    format!("{token} is out of range for a float"),
                )));
            }
        }
        if *kind == Kind::Float {
            let v: f64 = token.parse().map_err(|_| Stop::Unreadable)?;
            if v.abs() > f64::from(f32::MAX) && (v as f32).is_finite() {
                let max = f64::from(f32::MAX).copysign(v);
                self.edits.push((start, self.at, format!("{max:e}")));
            }
            return Ok(());
        }
        let Some((lo, hi, name)) = integer_range(kind) else {
            return Ok(());
        };
        let why = match exact_integer(token) {
            Exact::Integer(v) if (lo..=hi).contains(&v) => {
                self.edits.push((start, self.at, v.to_string()));
                return Ok(());
            }
            Exact::Integer(_) | Exact::TooLarge => format!("{token} is out of range for {name}"),
            Exact::Fraction => format!("{token} is not an integer, which {name} needs"),
            Exact::Unreadable => return Err(Stop::Unreadable),
        };
        Err(Stop::Refused(GatewayError::invalid_field(
            self.path.clone(),
            why,
        )))
    }
}

/// The values an integer field holds, and its type's name.
fn integer_range(kind: &Kind) -> Option<(i128, i128, &'static str)> {
    Some(match kind {
        Kind::Int32 => (i32::MIN.into(), i32::MAX.into(), "int32"),
        Kind::Sint32 => (i32::MIN.into(), i32::MAX.into(), "sint32"),
        Kind::Sfixed32 => (i32::MIN.into(), i32::MAX.into(), "sfixed32"),
        Kind::Uint32 => (0, u32::MAX.into(), "uint32"),
        Kind::Fixed32 => (0, u32::MAX.into(), "fixed32"),
        Kind::Int64 => (i64::MIN.into(), i64::MAX.into(), "int64"),
        Kind::Sint64 => (i64::MIN.into(), i64::MAX.into(), "sint64"),
        Kind::Sfixed64 => (i64::MIN.into(), i64::MAX.into(), "sfixed64"),
        Kind::Uint64 => (0, u64::MAX.into(), "uint64"),
        Kind::Fixed64 => (0, u64::MAX.into(), "fixed64"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
