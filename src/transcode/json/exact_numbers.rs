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

use crate::error::GatewayError;
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

/// The body with every such number made exact for its field, `None` when
/// it has none (or is not JSON the scan can follow: the parser then says
/// what is wrong with it). Refuses a number that no value of its integer
/// field is.
pub fn check(desc: &MessageDescriptor, json: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
    check_as(&Expect::Message(desc.clone()), json)
}

/// [`check`] for a body that is one field's value (`body: "field"`).
pub fn check_field(field: &FieldDescriptor, json: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
    let expect = if field.is_list() {
        Expect::List(field.clone())
    } else if field.is_map() {
        Expect::Map(field.clone())
    } else {
        Expect::Kind(field.kind())
    };
    check_as(&expect, json)
}

fn check_as(expect: &Expect, json: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
    if !scan(json)? {
        return Ok(None);
    }
    let mut walk = Walk {
        json,
        at: 0,
        edits: Vec::new(),
        path: String::new(),
    };
    match walk.value(expect, 0) {
        Ok(()) => {}
        Err(Stop::Refused(e)) => return Err(e),
        Err(Stop::Unreadable) => return Ok(None),
    }
    if walk.edits.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(json.len() + 32);
    let mut from = 0;
    for (start, end, text) in walk.edits {
        out.extend_from_slice(&json[from..start]);
        out.extend_from_slice(text.as_bytes());
        from = end;
    }
    out.extend_from_slice(&json[from..]);
    Ok(Some(out))
}

/// One pass over the bytes, strings skipped: whether a number needs a
/// look, and a refusal for nesting past [`super::MAX_NESTING`], which the
/// parser only counts in fields it reads (an unknown field that
/// `reject_unknown_fields = false` drops would otherwise nest without end).
fn scan(json: &[u8]) -> Result<bool, GatewayError> {
    let mut depth = 0usize;
    let mut look = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => i = string_end(json, i).unwrap_or(json.len()),
            b'{' | b'[' => {
                depth += 1;
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
    Ok(look)
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
                | "google.protobuf.FloatValue" => {
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

    /// A number where a scalar of `kind` goes.
    fn number(&mut self, kind: &Kind) -> Result<(), Stop> {
        let start = self.at;
        self.at = number_end(self.json, start);
        let token =
            std::str::from_utf8(&self.json[start..self.at]).map_err(|_| Stop::Unreadable)?;
        if !needs_a_look(token) {
            return Ok(());
        }
        let (lo, hi, name) = match kind {
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
            Kind::Float => {
                let v: f64 = token.parse().map_err(|_| Stop::Unreadable)?;
                if v.abs() > f64::from(f32::MAX) && (v as f32).is_finite() {
                    let max = f64::from(f32::MAX).copysign(v);
                    self.edits.push((start, self.at, format!("{max:e}")));
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let (lo, hi): (i128, i128) = (lo, hi);
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

enum Exact {
    Integer(i128),
    /// Past 128 bits: past every integer field.
    TooLarge,
    Fraction,
    Unreadable,
}

/// A JSON number's exact value when it is an integer: its digits, fraction
/// and exponent taken as decimal text, not through a double.
fn exact_integer(token: &str) -> Exact {
    let (negative, unsigned) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Exact::Unreadable;
            }
            // An exponent past i64 is past any integer's digits: huge, or
            // a fraction, unless every digit is zero.
            let e = e.parse::<i64>().unwrap_or(if e.starts_with('-') {
                i64::MIN / 2
            } else {
                i64::MAX / 2
            });
            (m, e)
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Exact::Unreadable;
    }
    // Every digit as one integer, times ten to `exponent`.
    let mut digits = format!("{whole}{fraction}");
    let mut exponent = exponent.saturating_sub(fraction.len() as i64);
    while exponent < 0 && digits.ends_with('0') {
        digits.pop();
        exponent += 1;
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Exact::Integer(0);
    }
    if exponent < 0 {
        return Exact::Fraction;
    }
    if digits.len() as i64 + exponent > 39 {
        return Exact::TooLarge;
    }
    let Ok(mut v) = digits.parse::<i128>() else {
        return Exact::TooLarge;
    };
    for _ in 0..exponent {
        match v.checked_mul(10) {
            Some(next) => v = next,
            None => return Exact::TooLarge,
        }
    }
    Exact::Integer(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search_request() -> MessageDescriptor {
        crate::fuzzing::demo_pool()
            .get_message_by_name("portico.demo.v1.SearchBooksRequest")
            .unwrap()
    }

    fn checked(json: &str) -> Result<Option<String>, String> {
        check(&search_request(), json.as_bytes())
            .map(|o| o.map(|b| String::from_utf8(b).unwrap()))
            .map_err(|e| e.message)
    }

    #[test]
    fn exact_values_are_read_from_the_text_not_a_double() {
        let int = |t| match exact_integer(t) {
            Exact::Integer(v) => Some(v),
            _ => None,
        };
        assert_eq!(int("1e18"), Some(1_000_000_000_000_000_000));
        assert_eq!(int("9.223372036854775807e18"), Some(i64::MAX.into()));
        assert_eq!(int("-9223372036854775809"), Some(i128::from(i64::MIN) - 1));
        assert_eq!(int("12.500e1"), Some(125));
        assert_eq!(int("-0.0"), Some(0));
        assert!(matches!(
            exact_integer("9007199254740993.5"),
            Exact::Fraction
        ));
        assert!(matches!(exact_integer("1e400"), Exact::TooLarge));
        assert!(matches!(exact_integer("1.5e-3"), Exact::Fraction));
        assert!(matches!(exact_integer("1e-400"), Exact::Fraction));
        assert!(matches!(
            exact_integer("1e99999999999999999999"),
            Exact::TooLarge
        ));
        assert!(matches!(
            exact_integer("1e-99999999999999999999"),
            Exact::Fraction
        ));
        assert_eq!(int("0.0e99999999999999999999"), Some(0));
        assert_eq!(int("1E+2"), Some(100));
    }

    #[test]
    fn most_bodies_are_scanned_once_and_left_alone() {
        for body in [
            r#"{"query":"1e400 in a string","minPages":3,"minScore":1.5}"#,
            r#"{"minPages":9223372036854775807,"maxPages":"18446744073709551616"}"#,
            r#"{"minPages":100,"weight":3.4028234e38}"#,
            // A double takes any double, exponent or not.
            r#"{"minScore":1e300,"filter":{"language":"en"}}"#,
        ] {
            assert_eq!(checked(body), Ok(None), "{body}");
        }
    }

    #[test]
    fn an_integer_field_gets_the_exact_digits_or_a_refusal_naming_it() {
        assert_eq!(
            checked(r#"{"minPages": 1e18, "maxPages":9.223372036854775807e18}"#),
            Ok(Some(
                r#"{"minPages": 1000000000000000000, "maxPages":9223372036854775807}"#.into()
            ))
        );
        for (body, why) in [
            (r#"{"minPages":-9223372036854775809}"#, "invalid value for minPages: -9223372036854775809 is out of range for int64"),
            (r#"{"max_pages":18446744073709551616}"#, "invalid value for max_pages: 18446744073709551616 is out of range for uint64"),
            (r#"{"minPages":9.223372036854775808e18}"#, "out of range for int64"),
            (r#"{"minPages":9007199254740993.5}"#, "invalid value for minPages: 9007199254740993.5 is not an integer, which int64 needs"),
            (r#"{"pageSize":1e20}"#, "invalid value for pageSize: 1e20 is out of range for int32"),
            (r#"{"minPages":1e-400}"#, "1e-400 is not an integer"),
        ] {
            let refused = checked(body).unwrap_err();
            assert!(refused.contains(why), "{body}: {refused}");
        }
    }

    #[test]
    fn an_exponent_past_64_bits_is_read_too_not_skipped() {
        // A zero with any exponent is zero; its neighbour still gets its
        // exact digits rather than the double's nearest end of the range.
        assert_eq!(
            checked(r#"{"minPages":9.2233720368547758e18,"maxPages":0.0e99999999999999999999}"#),
            Ok(Some(
                r#"{"minPages":9223372036854775800,"maxPages":0}"#.into()
            ))
        );
        let refused = checked(r#"{"minPages":1e30}"#).unwrap_err();
        assert!(refused.contains("out of range for int64"), "{refused}");
    }

    #[test]
    fn a_float_just_past_its_largest_reads_as_the_largest() {
        assert_eq!(
            checked(r#"{"weight":-3.4028235e+38}"#),
            Ok(Some(r#"{"weight":-3.4028234663852886e38}"#.into()))
        );
        // Past what rounds to it: left for the parser to refuse.
        assert_eq!(checked(r#"{"weight":3.5e38}"#), Ok(None));
    }

    #[test]
    fn nesting_past_the_limit_is_refused_even_in_a_field_no_one_reads() {
        let nested = |n: usize| {
            format!(
                r#"{{"unknown":{}1{},"minPages":1e18}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let refused = checked(&nested(100_000)).unwrap_err();
        assert!(refused.contains("nests deeper than 127"), "{refused}");
        assert!(refused.contains("line 1 column 138"), "{refused}");
        // 127 levels are read (the object and 126 arrays); 128 are not.
        assert!(checked(&nested(126)).is_ok());
        assert!(checked(&nested(127)).is_err());
        let within = checked(&nested(100)).unwrap().unwrap();
        assert!(within.contains("1000000000000000000"), "{within}");
        // Not JSON: the parser will say so, not this.
        assert_eq!(checked(r#"{"minPages":1e18"#), Ok(None));
    }
}
