//! Parser for google.api.http path templates:
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{var}` is `{var=*}`. A `**` may only be the last segment. Variables do not nest.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Single,
    /// `**`: zero or more segments, always last.
    Multi,
}

/// A `{field.path=...}` capture, as a range of template segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub field_path: Vec<String>,
    pub start: usize,
    /// One past the last template segment; a variable ending in `**` takes
    /// every request segment from `start` on.
    pub end: usize,
}

impl Variable {
    /// Whether the variable spans more than one segment; such values keep
    /// `%2F` encoded, single-segment ones decode it (per the spec).
    pub fn is_multi_segment(&self, segments: &[Segment]) -> bool {
        self.end - self.start > 1 || segments[self.start..self.end].contains(&Segment::Multi)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub template: String,
    pub position: usize,
    pub reason: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad path template {:?} at byte {}: {}",
            self.template, self.position, self.reason
        )
    }
}

impl std::error::Error for TemplateError {}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
}

/// A request path's escapes of unreserved characters are decoded before it
/// is matched (`%41` is `A`), while a reserved character's stay as sent
/// (`%3A`, the only way to write a `:` in a literal): so a template's
/// escape of an unreserved character, or a `%` that is no escape, matches
/// no request.
const NO_ESCAPE: &str = "an escape of an unreserved character (a letter, a digit, `-`, `.`, `_`, `~`), or a `%` without two hex digits, never matches: request paths have those decoded before they are matched, so write the character itself";

/// Where `text` has an escape no request path keeps (see [`NO_ESCAPE`]).
fn dead_escape(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().find_map(|(i, b)| {
        if *b != b'%' {
            return None;
        }
        let decoded = text
            .get(i + 1..i + 3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(c) if !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')) => {
                None
            }
            _ => Some(i),
        }
    })
}

fn is_literal_char(c: char) -> bool {
    !matches!(c, '/' | '{' | '}' | ':' | '*' | '=' | '?' | '#')
        && !c.is_whitespace()
        && !c.is_control()
}

impl<'a> Parser<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, TemplateError> {
        Err(TemplateError {
            template: self.text.to_owned(),
            position: self.pos,
            reason: reason.into(),
        })
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.text[start..self.pos]
    }

    /// Segments until `}` (inside a variable) or `:`/end (at top level).
    fn segments(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        loop {
            self.segment(in_variable)?;
            if !self.eat('/') {
                return Ok(());
            }
        }
    }

    fn segment(&mut self, in_variable: bool) -> Result<(), TemplateError> {
        if self.segments.last() == Some(&Segment::Multi) {
            return self.fail("`**` must be the last segment");
        }
        match self.peek() {
            Some('*') => {
                self.pos += 1;
                if self.eat('*') {
                    self.segments.push(Segment::Multi);
                } else {
                    self.segments.push(Segment::Single);
                }
                Ok(())
            }
            Some('{') => {
                if in_variable {
                    return self.fail("variables cannot nest");
                }
                self.variable()
            }
            _ => {
                let lit = self.take_while(is_literal_char);
                if lit.is_empty() {
                    return self.fail("expected a segment: a literal, `*`, `**` or `{variable}`");
                }
                if let Some(at) = dead_escape(lit) {
                    self.pos -= lit.len() - at;
                    return self.fail(NO_ESCAPE);
                }
                if lit == "." || lit == ".." {
                    self.pos -= lit.len();
                    return self.fail(format!(
                        "a `{lit}` segment never matches: request paths are normalized first, and their dot-segments removed"
                    ));
                }
                self.segments.push(Segment::Literal(lit.to_owned()));
                Ok(())
            }
        }
    }

    fn variable(&mut self) -> Result<(), TemplateError> {
        self.pos += 1; // '{'
        let mut field_path = Vec::new();
        loop {
            let ident = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            if ident.is_empty() || ident.starts_with(|c: char| c.is_ascii_digit()) {
                return self.fail("expected a field name");
            }
            field_path.push(ident.to_owned());
            if !self.eat('.') {
                break;
            }
        }
        let start = self.segments.len();
        if self.eat('=') {
            self.segments(true)?;
        } else {
            self.segments.push(Segment::Single);
        }
        if !self.eat('}') {
            return self.fail("expected `}` to close the variable");
        }
        if self.variables.iter().any(|v| v.field_path == field_path) {
            return self.fail(format!("field {} is bound twice", field_path.join(".")));
        }
        self.variables.push(Variable {
            field_path,
            start,
            end: self.segments.len(),
        });
        Ok(())
    }
}

/// Parses a template such as `/v1/{name=shelves/*/books/*}:archive`.
pub fn parse(text: &str) -> Result<Template, TemplateError> {
    let mut p = Parser {
        text,
        pos: 0,
        segments: Vec::new(),
        variables: Vec::new(),
    };
    if !p.eat('/') {
        return p.fail("a template starts with `/`");
    }
    p.segments(false)?;
    let verb = if p.eat(':') {
        let v = p.take_while(is_literal_char);
        if v.is_empty() {
            return p.fail("expected a verb after `:`");
        }
        if let Some(at) = dead_escape(v) {
            p.pos -= v.len() - at;
            return p.fail(NO_ESCAPE);
        }
        Some(v.to_owned())
    } else {
        None
    };
    if p.pos != text.len() {
        return p.fail(format!("unexpected {:?}", p.peek().unwrap_or(' ')));
    }
    Ok(Template {
        segments: p.segments,
        variables: p.variables,
        verb,
    })
}

impl fmt::Display for Template {
    /// The template's shape, variables replaced by what they match; two
    /// templates with the same shape match the same paths.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.segments {
            match s {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Single => f.write_str("/*")?,
                Segment::Multi => f.write_str("/**")?,
            }
        }
        if let Some(v) = &self.verb {
            write!(f, ":{v}")?;
        }
        Ok(())
    }
}
