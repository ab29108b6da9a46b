//! A segment trie over path templates. Matching walks it once, preferring a
//! literal segment, then `*`, then `**`, so literals win over variables and
//! the cost does not grow with the number of routes.

use super::template::{Segment, Template};
use http::Method;
use std::collections::HashMap;

/// A node's literal children, looked up for each segment of every request
/// path: a seeded fast hash rather than SipHash.
type Literals = HashMap<Box<str>, Node, foldhash::fast::RandomState>;

/// Index of a binding in the route table.
pub type BindingId = usize;

#[derive(Debug, Default)]
struct Leaf {
    /// (custom verb, HTTP method, binding).
    entries: Vec<(Option<Box<str>>, Method, BindingId)>,
}

#[derive(Debug, Default)]
struct Node {
    literals: Literals,
    single: Option<Box<Node>>,
    /// Bindings whose template ends here.
    end: Leaf,
    /// Bindings whose template has `**` here (matches the rest of the path).
    rest: Leaf,
}

#[derive(Debug, Default)]
pub struct Trie {
    root: Node,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// `verb_split`: the last segment's `:verb` was taken as the verb.
    Found {
        id: BindingId,
        verb_split: bool,
    },
    /// The path matched, but not with this method.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

impl Trie {
    /// Adds a binding; returns the binding it collides with, if any.
    pub fn insert(
        &mut self,
        template: &Template,
        method: Method,
        id: BindingId,
    ) -> Result<(), BindingId> {
        let mut node = &mut self.root;
        let mut leaf = None;
        for segment in &template.segments {
            match segment {
                Segment::Literal(l) => {
                    node = node
                        .literals
                        .entry(upper_hex(l).as_ref().into())
                        .or_default()
                }
                Segment::Single => node = node.single.get_or_insert_with(Default::default),
                Segment::Multi => leaf = Some(&mut node.rest),
            }
            if leaf.is_some() {
                break;
            }
        }
        let leaf = match leaf {
            Some(l) => l,
            None => &mut node.end,
        };
        let verb: Option<Box<str>> = template.verb.as_deref().map(Into::into);
        if let Some((_, _, other)) = leaf
            .entries
            .iter()
            .find(|(v, m, _)| *v == verb && *m == method)
        {
            return Err(*other);
        }
        leaf.entries.push((verb, method, id));
        Ok(())
    }

    /// Matches a raw request path (`/a/b:verb`): the entry and the path's
    /// segments, with a matched `:verb` taken off the last one.
    pub fn match_path<'a>(&self, method: &Method, path: &'a str) -> (Lookup, Vec<&'a str>) {
        let Some(trimmed) = path.strip_prefix('/') else {
            return (Lookup::NotFound, Vec::new());
        };
        let mut segments: Vec<&str> = trimmed.split('/').collect();
        let found = self.lookup(method, &segments);
        if let Lookup::Found {
            verb_split: true, ..
        } = found
        {
            if let Some(last) = segments.last_mut() {
                *last = last.rsplit_once(':').map_or(*last, |(head, _)| head);
            }
            // `/a/b/:verb`: the empty segment before the verb is a trailing
            // `/`, dropped as normalization drops one (see `lookup`).
            if segments.len() > 1 && segments.last() == Some(&"") {
                segments.pop();
            }
        }
        (found, segments)
    }

    /// Finds the binding for a request path, given as its raw segments.
    pub fn lookup(&self, method: &Method, segments: &[&str]) -> Lookup {
        let mut allowed = Vec::new();
        // A trailing ":verb" on the last segment is tried as a verb first,
        // then as part of the segment.
        if let Some((last, rest)) = segments.split_last() {
            if let Some((head, verb)) = last.rsplit_once(':') {
                let mut split: Vec<&str> = rest.to_vec();
                // An empty segment before the verb (`/a/b/:verb`) is a
                // trailing `/`: dropped, so that a `**` never receives one.
                if !head.is_empty() || rest.is_empty() {
                    split.push(head);
                }
                if let Some(id) = walk(&self.root, &split, 0, Some(verb), method, &mut allowed) {
                    return Lookup::Found {
                        id,
                        verb_split: true,
                    };
                }
            }
        }
        if let Some(id) = walk(&self.root, segments, 0, None, method, &mut allowed) {
            return Lookup::Found {
                id,
                verb_split: false,
            };
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            allowed.dedup();
            Lookup::MethodNotAllowed(allowed)
        }
    }
}

fn pick(
    leaf: &Leaf,
    verb: Option<&str>,
    method: &Method,
    allowed: &mut Vec<Method>,
) -> Option<BindingId> {
    let mut found = None;
    for (v, m, id) in &leaf.entries {
        if v.as_deref() != verb {
            continue;
        }
        if m == method {
            found = Some(*id);
        } else if !allowed.contains(m) {
            allowed.push(m.clone());
        }
    }
    found
}

fn walk(
    node: &Node,
    segments: &[&str],
    i: usize,
    verb: Option<&str>,
    method: &Method,
    allowed: &mut Vec<Method>,
) -> Option<BindingId> {
    if i == segments.len() {
        if let Some(id) = pick(&node.end, verb, method, allowed) {
            return Some(id);
        }
        return pick(&node.rest, verb, method, allowed);
    }
    let segment = segments[i];
    if let Some(child) = node.literals.get(segment) {
        if let Some(id) = walk(child, segments, i + 1, verb, method, allowed) {
            return Some(id);
        }
    } else if segment.contains('%') {
        // A literal may be written with an escape (`%3A`, in any case of
        // hex, which RFC 3986 makes the same octet) or as the character.
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        let upper = upper_hex(segment);
        for candidate in [decoded.as_ref(), upper.as_ref()] {
            if let Some(child) = node.literals.get(candidate) {
                if let Some(id) = walk(child, segments, i + 1, verb, method, allowed) {
                    return Some(id);
                }
            }
        }
    }
    if !segment.is_empty() {
        if let Some(child) = &node.single {
            if let Some(id) = walk(child, segments, i + 1, verb, method, allowed) {
                return Some(id);
            }
        }
    }
    pick(&node.rest, verb, method, allowed)
}

/// `text` with the hex digits of its escapes in upper case (`%3a` is `%3A`),
/// borrowed when it has none in lower case.
fn upper_hex(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes = text.as_bytes();
    let lower_at = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_lowercase);
    let needs = (0..bytes.len()).any(|i| bytes[i] == b'%' && (lower_at(i + 1) || lower_at(i + 2)));
    if !needs {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = bytes.to_vec();
    for i in 0..out.len() {
        if out[i] == b'%' {
            for j in i + 1..(i + 3).min(out.len()) {
                out[j] = out[j].to_ascii_uppercase();
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| text.to_owned()))
}
