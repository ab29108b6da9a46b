//! Proto3 JSON mapping through prost-reflect, strict by default, with errors
//! that name the field at fault.

mod canonical;
pub mod config;
pub mod exact_numbers;
pub mod last_wins;
pub mod to_wire;
pub mod wire;

pub use canonical::Canonical;

use crate::config::JsonOptions;
use crate::error::GatewayError;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};

/// Serialize options for a route's JSON settings.
pub fn serialize_options(o: &JsonOptions) -> SerializeOptions {
    SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .use_enum_numbers(o.enums_as_numbers)
        .use_proto_field_name(o.use_proto_names)
        .skip_default_fields(!o.emit_unpopulated)
}

/// How a route writes reply messages as JSON: the general path's options,
/// and the direct path's style when the route's options allow it (default
/// fields skipped, as they are unless `json.emit_unpopulated` is set).
#[derive(Clone)]
pub struct JsonOutput {
    pub serialize: SerializeOptions,
    direct: Option<wire::Style>,
}

/// `direct`: whether the message type is one [`wire`] covers
/// ([`Target::reply_json_direct`](crate::envelope::Target)).
pub fn output(o: &JsonOptions, direct: bool) -> JsonOutput {
    JsonOutput {
        serialize: serialize_options(o),
        direct: (direct && !o.emit_unpopulated).then_some(wire::Style {
            proto_names: o.use_proto_names,
            enum_numbers: o.enums_as_numbers,
        }),
    }
}

impl JsonOutput {
    /// The JSON of an encoded message written straight from its bytes, when
    /// [`wire`] can; `None` sends the caller down the general path.
    pub fn direct(&self, desc: &MessageDescriptor, bytes: &[u8]) -> Option<Vec<u8>> {
        let style = self.direct?;
        let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
        wire::write(desc, bytes, style, &mut out).ok()?;
        Some(out)
    }
}

fn deserialize_options(o: &JsonOptions) -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(o.reject_unknown_fields)
}

/// Parses a JSON document as `desc`. Both lowerCamelCase and proto field
/// names are accepted.
pub fn decode(
    desc: &MessageDescriptor,
    json: &[u8],
    o: &JsonOptions,
) -> Result<DynamicMessage, GatewayError> {
    decode_at(desc, json, o, 1)
}

/// [`decode`] for a message that sits `depth` messages down in the request
/// (2 for a `body: "field"` binding's field), so the depth protobuf's
/// decoders count is the request's.
pub fn decode_at(
    desc: &MessageDescriptor,
    json: &[u8],
    o: &JsonOptions,
    depth: usize,
) -> Result<DynamicMessage, GatewayError> {
    // The protobuf JSON reader refuses any member of an Empty, unknown as
    // every member is; a route that drops unknown fields drops them here
    // too, as protobuf's own readers do when told to ignore unknown fields.
    if !o.reject_unknown_fields && desc.full_name() == "google.protobuf.Empty" {
        exact_numbers::check(desc, json)?;
        match serde_json::from_slice::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(_)) => return Ok(DynamicMessage::new(desc.clone())),
            Ok(_) => {}
            Err(e) => return Err(unreadable(&e)),
        }
    }
    let resolved = last_wins::resolve(desc, json);
    let json = resolved.as_deref().unwrap_or(json);
    let exact = exact_numbers::check(desc, json)?;
    let json = exact.body(json);
    let mut de = serde_json::Deserializer::from_slice(json);
    let parsed =
        DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &deserialize_options(o))
            .and_then(|m| de.end().map(|()| m));
    let msg = parsed.map_err(|e| {
        // prost's own limit, met inside a Struct or Value the reader
        // builds through it: the same refusal as a deep message's.
        if e.to_string().contains("recursion limit reached") {
            too_many_messages(String::new())
        } else {
            explain_failure(desc, json, o, "")
        }
    })?;
    if exact.nesting > shallow_enough(depth) {
        refuse_too_deep(&msg, "", depth)?;
    }
    Ok(msg)
}

/// The most messages protobuf's decoders take nested in one another (upb,
/// C++, Java and Go stop at 100, counting each map entry as a message): a
/// request nested deeper would be refused by the backend as a message it
/// cannot decode, so the gateway refuses it first, naming the field.
pub const MAX_MESSAGE_DEPTH: usize = 100;

/// JSON nested at most this deep, in a message `depth` down, makes at most
/// [`MAX_MESSAGE_DEPTH`] messages: one JSON object is at most three (a
/// `Struct`, its map entry and the entry's `Value`), and a `Value` holding
/// a number adds one.
fn shallow_enough(depth: usize) -> usize {
    (MAX_MESSAGE_DEPTH - depth) / 3
}

/// Refuses a message whose deepest field sits more than
/// [`MAX_MESSAGE_DEPTH`] messages down (the top one counted, as each map
/// entry is), naming that field under `prefix`; `msg` itself sits `depth`
/// messages down in the request (1: it is the request).
pub fn refuse_too_deep(
    msg: &DynamicMessage,
    prefix: &str,
    depth: usize,
) -> Result<(), GatewayError> {
    fn deepest(msg: &DynamicMessage, depth: usize, path: &mut String) -> bool {
        use prost_reflect::{MapKey, ReflectMessage, Value};
        // A Struct's, Value's or ListValue's own fields are no part of the
        // JSON the client wrote: only its keys and indexes are named.
        let transparent = matches!(
            msg.descriptor().full_name(),
            "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue"
        );
        for (field, value) in msg.fields() {
            let at = path.len();
            if !transparent {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(field.json_name());
            }
            let over = match value {
                Value::Message(m) => depth + 1 > MAX_MESSAGE_DEPTH || deepest(m, depth + 1, path),
                Value::List(items) => items.iter().enumerate().any(|(i, item)| {
                    let Value::Message(m) = item else {
                        return false;
                    };
                    let at = path.len();
                    path.push_str(&format!("[{i}]"));
                    let over = depth + 1 > MAX_MESSAGE_DEPTH || deepest(m, depth + 1, path);
                    if !over {
                        path.truncate(at);
                    }
                    over
                }),
                Value::Map(entries) => entries.iter().any(|(key, item)| {
                    // The entry is a message, and its value one more.
                    let Value::Message(m) = item else {
                        return depth + 1 > MAX_MESSAGE_DEPTH;
                    };
                    let at = path.len();
                    let key = match key {
                        MapKey::String(k) => k.clone(),
                        MapKey::Bool(k) => k.to_string(),
                        MapKey::I32(k) => k.to_string(),
                        MapKey::I64(k) => k.to_string(),
                        MapKey::U32(k) => k.to_string(),
                        MapKey::U64(k) => k.to_string(),
                    };
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key);
                    let over = depth + 2 > MAX_MESSAGE_DEPTH || deepest(m, depth + 2, path);
                    if !over {
                        path.truncate(at);
                    }
                    over
                }),
                _ => false,
            };
            if over {
                return true;
            }
            path.truncate(at);
        }
        false
    }
    let mut path = String::new();
    if deepest(msg, depth, &mut path) {
        return Err(too_many_messages(join(prefix, &path)));
    }
    Ok(())
}

/// A request nested deeper than protobuf decodes, at `field` (empty when
/// the reader could not say where).
fn too_many_messages(field: String) -> GatewayError {
    GatewayError::invalid_field(
        field,
        format!(
            "nests messages more than {MAX_MESSAGE_DEPTH} deep, which protobuf does not decode (in a google.protobuf.Struct, Value or ListValue each JSON object is three messages and each array two)"
        ),
    )
}

/// Parses a `serde_json::Value` as `desc`; `prefix` names where it sits in
/// the request (for a body field).
pub fn decode_value(
    desc: &MessageDescriptor,
    value: serde_json::Value,
    o: &JsonOptions,
    prefix: &str,
) -> Result<DynamicMessage, GatewayError> {
    let text = serde_json::to_vec(&value).unwrap_or_default();
    let msg =
        DynamicMessage::deserialize_with_options(desc.clone(), value, &deserialize_options(o))
            .map_err(|_| without_position(explain_failure(desc, &text, o, prefix)))?;
    // Values built from a body already held: rarer than whole bodies, so
    // walked whatever their depth. A body field's message (`prefix` names
    // it) sits one down in the request.
    let depth = if prefix.is_empty() { 1 } else { 2 };
    refuse_too_deep(&msg, prefix, depth)?;
    Ok(msg)
}

/// An error about a value built in memory (an aggregate's template, a
/// WebSocket frame's `message`, an MCP tool's arguments) without serde's
/// "at line 1 column N": the position is in a text the user never wrote.
pub fn without_position(mut err: GatewayError) -> GatewayError {
    fn cut(text: &mut String) {
        if let Some(at) = text.rfind(" at line ") {
            let rest = &text[at + " at line ".len()..];
            let looks = rest.split(" column ").count() == 2
                && rest
                    .split(" column ")
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if looks {
                text.truncate(at);
            }
        }
    }
    cut(&mut err.message);
    if let crate::error::ErrorKind::InvalidRequest { violations } = &mut err.kind {
        for v in violations {
            cut(&mut v.description);
        }
    }
    err
}

/// The most arrays and objects a request's JSON may nest, known fields or
/// not: the parser's own limit (serde_json refuses the 128th level).
pub const MAX_NESTING: usize = 127;

/// JSON nested past [`MAX_NESTING`], where the parser or the scan found it.
pub fn too_deep(line: usize, column: usize) -> GatewayError {
    GatewayError::invalid_field("", too_deep_words(line, column))
}

fn too_deep_words(line: usize, column: usize) -> String {
    format!(
        "the JSON nests deeper than {MAX_NESTING} arrays and objects, the most the gateway reads (line {line} column {column})"
    )
}

/// Why well-formed JSON text is past what the parser holds (a number no
/// double holds, nesting past the reader's depth), or `None` when the
/// parser refused it for another reason.
pub fn unheld(e: &serde_json::Error) -> Option<String> {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        Some(too_deep_words(e.line(), e.column()))
    } else if text.starts_with("number out of range") {
        Some(number_out_of_range(e))
    } else {
        None
    }
}

/// Parses again, tracking the path, to say which field was wrong. Only
/// taken on the error path, so the common path pays nothing for it.
fn explain_failure(
    desc: &MessageDescriptor,
    json: &[u8],
    o: &JsonOptions,
    prefix: &str,
) -> GatewayError {
    if let Some(why) = not_an_object(desc, json) {
        return GatewayError::invalid_field(prefix, why);
    }
    // Not JSON at all (`12abc`, `title=x`): said as such, before a field's
    // reader would take its first token for a value of the wrong type.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(json) {
        if is_syntax(&e) {
            return unreadable(&e);
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let result = DynamicMessage::deserialize_with_options(
        desc.clone(),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        &deserialize_options(o),
    );
    let reason = match result {
        // A number wrong for its field: said in words, not the parser's
        // ("invalid digit found in string").
        Err(e) if !is_syntax(&e) => match exact_numbers::diagnose(desc, json) {
            Some(refusal) => return prefix_refusal(refusal, prefix),
            // Only an Empty's reader says this.
            None if e.to_string().starts_with("unexpected value in map") => {
                "a google.protobuf.Empty has no fields, so it takes only {} \
                 (a route with json.reject_unknown_fields = false drops the members of a request that is an Empty)"
                    .to_owned()
            }
            None => in_words(e.to_string()),
        },
        // Well-formed JSON the parser will not hold: a number past any
        // double (`1e400`, a thousand digits), named at its field.
        Err(e) if e.to_string().starts_with("number out of range") => number_out_of_range(&e),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            return too_deep(e.line(), e.column())
        }
        // Not JSON at all: no field is at fault, whatever the parser was in.
        Err(e) => return malformed(&e),
        Ok(_) => match de.end() {
            Err(e) => return malformed(&e),
            Ok(()) => "invalid JSON".to_owned(),
        },
    };
    let mut path = track.path().to_string();
    if path == "." {
        path.clear();
    }
    // prost-reflect reports an unknown key or a second oneof member at the
    // enclosing object; name the member itself.
    for marker in [
        "unrecognized field name '",
        "multiple fields provided for oneof '",
    ] {
        if let Some(rest) = reason.strip_prefix(marker) {
            if let Some(name) = rest.split('\'').next() {
                path = join(&path, name);
            }
        }
    }
    let field = join(prefix, &path);
    GatewayError::invalid_field(field, reason)
}

/// A reader's failure in the gateway's words where it would otherwise be
/// Rust's own parsing error, which names no type or range: an enum number
/// past `int32` (`2147483648`), `"-0"` or a map key `"-1"` for an unsigned
/// integer, `"abc"` for a double, a map key `"yes"` for a bool.
fn in_words(reason: String) -> String {
    const PLAIN: [(&str, &str); 6] = [
        (
            "out of range integral type conversion attempted",
            "a number out of the range of the field's type",
        ),
        (
            "invalid digit found in string",
            "not an integer the field's type can hold (digits, signed only for a signed type)",
        ),
        (
            "invalid float literal",
            "not a number (a JSON number, a number in a string, or \"NaN\", \"Infinity\", \"-Infinity\")",
        ),
        (
            "provided string was not `true` or `false`",
            "not a boolean (true or false)",
        ),
        (
            "number too large to fit in target type",
            "a number past the largest the field's type holds",
        ),
        (
            "number too small to fit in target type",
            "a number below the smallest the field's type holds",
        ),
    ];
    match PLAIN.iter().find(|(rust, _)| reason.contains(rust)) {
        Some((rust, plain)) => reason.replace(rust, plain),
        None => reason,
    }
}

/// A refusal of a field inside the body, named from the request's root.
fn prefix_refusal(e: GatewayError, prefix: &str) -> GatewayError {
    if prefix.is_empty() {
        return e;
    }
    match &e.kind {
        crate::error::ErrorKind::InvalidRequest { violations } if violations.len() == 1 => {
            let v = &violations[0];
            GatewayError::invalid_field(join(prefix, &v.field), v.description.clone())
        }
        _ => e,
    }
}

fn is_syntax(e: &serde_json::Error) -> bool {
    matches!(
        e.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    )
}

/// A body that is not JSON the gateway reads, refused as a binding's body
/// is: too deep, or malformed.
pub fn unreadable(e: &serde_json::Error) -> GatewayError {
    match unheld(e) {
        Some(why) => GatewayError::invalid_field("", why),
        None => malformed(e),
    }
}

/// Well-formed JSON (`1e400`, a thousand digits) that no double holds: not
/// malformed, but past what the parser reads.
fn number_out_of_range(e: &serde_json::Error) -> String {
    format!(
        "the number at line {} column {} is out of range",
        e.line(),
        e.column()
    )
}

/// A body whose very shape is wrong, said as such: a byte order mark
/// (which JSON text may not start with, RFC 8259 section 8.1), or a JSON
/// value that is not the object a message is written as (the parser would
/// say "expected a map at line 1 column 0").
fn not_an_object(desc: &MessageDescriptor, json: &[u8]) -> Option<String> {
    if json.starts_with(b"\xEF\xBB\xBF") {
        return Some(
            "the body starts with a byte order mark (EF BB BF), which JSON text may not: send it without one"
                .to_owned(),
        );
    }
    // Well-known types have JSON forms of their own (a Timestamp is a
    // string, a Value anything).
    if desc.package_name() == "google.protobuf" {
        return None;
    }
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    let what = match first {
        b'[' => "an array",
        b'"' => "a string",
        b'-' | b'0'..=b'9' => "a number",
        b't' | b'f' => "a boolean",
        _ => return None,
    };
    // Named by its first byte only when it is that JSON value: `title=x`
    // (a form body) or `12abc` is malformed JSON, said as such.
    serde_json::from_slice::<serde::de::IgnoredAny>(json).ok()?;
    Some(format!(
        "the body is {what}, but a {} is written as a JSON object ({{...}})",
        desc.full_name()
    ))
}

fn malformed(e: &serde_json::Error) -> GatewayError {
    GatewayError::invalid_field("", format!("the JSON is malformed: {}", parser_words(e)))
}

/// The parser's reason, in words a client can act on where its own are
/// misleading: a `\\uD800` with no low half after it is reported as an
/// "unexpected end of hex escape".
pub fn parser_words(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("unexpected end of hex escape")
        || text.starts_with("lone leading surrogate in hex escape")
    {
        return format!(
            "a \\u escape before line {} column {} is half of a UTF-16 surrogate pair without its other half \
             (a \\uD800-\\uDBFF escape is followed by a \\uDC00-\\uDFFF one): a lone surrogate is no character",
            e.line(),
            e.column()
        );
    }
    text
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}.{b}"),
    }
}

/// Writes a message as JSON.
pub fn encode(
    msg: &DynamicMessage,
    options: &SerializeOptions,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    msg.serialize_with_options(Canonical(&mut ser), options)?;
    Ok(out)
}

/// `kinds.proto` (a message with a field of every kind, maps and
/// well-known types), for the direct paths' tests.
#[cfg(test)]
pub(crate) fn kinds_pool() -> &'static prost_reflect::DescriptorPool {
    use std::path::Path;
    use std::sync::OnceLock;
    static POOL: OnceLock<prost_reflect::DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openapi");
        let set = crate::descriptors::compile_protos(&[&dir], &["kinds.proto".to_owned()])
            .expect("kinds.proto compiles");
        let mut pool = crate::descriptors::builtin::pool();
        crate::descriptors::add_set(&mut pool, &set, "kinds.proto").expect("adds");
        pool
    })
}

#[cfg(test)]
mod tests {
    /// Map entries come out in key order (integers by value, strings by
    /// their bytes) at any depth, a float in a map keeps its exact text,
    /// and a message's fields stay in field-number order.
    #[test]
    fn maps_are_written_in_key_order_and_messages_in_field_order() {
        let thing = super::kinds_pool()
            .get_message_by_name("kinds.v1.Thing")
            .unwrap();
        let input = r#"{"name":"n","doubleValue":2,"counts":{"b":1,"a":2,"10":3,"9":4,"B":5},
            "children":{"10":{"name":"ten","floatValue":0.1,"counts":{"z":1,"y":2}},
                        "-3":{"name":"minus"},"9":{"name":"nine"},"100":{}},
            "attributes":{"z":1,"a":{"y":1,"b":2}},
            "details":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"}}"#;
        let options = super::serialize_options(&Default::default());
        let mut written = std::collections::HashSet::new();
        for _ in 0..5 {
            let msg = super::decode(&thing, input.as_bytes(), &Default::default()).unwrap();
            let json = String::from_utf8(super::encode(&msg, &options).unwrap()).unwrap();
            written.insert(json);
        }
        assert_eq!(written.len(), 1, "one rendering: {written:?}");
        let json = written.into_iter().next().unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"name":"n","doubleValue":2,"counts":{"10":3,"9":4,"B":5,"a":2,"b":1},"#,
                r#""children":{"-3":{"name":"minus"},"9":{"name":"nine"},"#,
                r#""10":{"name":"ten","floatValue":0.1,"counts":{"y":2,"z":1}},"100":{}},"#,
                r#""attributes":{"a":{"b":2,"y":1},"z":1},"#,
                r#""details":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"}}"#
            )
        );
    }

    /// A number the field's type cannot hold is refused in words that say
    /// so, not in Rust's number-parsing errors.
    #[test]
    fn a_number_a_field_cannot_hold_is_said_in_words() {
        let thing = super::kinds_pool()
            .get_message_by_name("kinds.v1.Thing")
            .unwrap();
        for (body, field, says) in [
            (
                r#"{"color": 2147483648}"#,
                "color",
                "out of the range of the field's type",
            ),
            (
                r#"{"uint64Value": "-0"}"#,
                "uint64Value",
                "not an integer the field's type can hold",
            ),
            (
                r#"{"children": {"x": {}}}"#,
                "children",
                "not an integer the field's type can hold",
            ),
            (r#"{"doubleValue": "abc"}"#, "doubleValue", "not a number"),
        ] {
            let err = super::decode(&thing, body.as_bytes(), &Default::default()).unwrap_err();
            let text = format!("{err:?}");
            assert!(err.message.contains(says), "{body}: {}", err.message);
            assert!(
                err.message.contains(field) || text.contains(field),
                "{body}: {text}"
            );
            for rust in ["integral type conversion", "invalid digit", "float literal"] {
                assert!(!err.message.contains(rust), "{body}: {}", err.message);
            }
        }
    }

    #[test]
    fn json_nested_past_the_parsers_limit_is_named_as_such() {
        let thing = super::kinds_pool()
            .get_message_by_name("kinds.v1.Thing")
            .unwrap();
        let deep = format!("{}{}", "{\"parent\":".repeat(200), "}".repeat(200));
        let err = super::decode(&thing, deep.as_bytes(), &Default::default()).unwrap_err();
        assert!(
            err.message.contains("nests deeper than 127"),
            "{}",
            err.message
        );
        let shallow = format!(
            "{}{}",
            "{\"parent\":".repeat(20),
            "{}".to_owned() + &"}".repeat(20)
        );
        assert!(super::decode(&thing, shallow.as_bytes(), &Default::default()).is_ok());
        // The parser's limit, exactly: 128 levels of JSON refused as such.
        let levels = |n: usize| {
            format!(
                "{}{}",
                "{\"parent\":".repeat(n - 1),
                "{}".to_owned() + &"}".repeat(n - 1)
            )
        };
        let err = super::decode(&thing, levels(128).as_bytes(), &Default::default()).unwrap_err();
        assert!(
            err.message.contains("nests deeper than 127"),
            "{}",
            err.message
        );
    }

    /// What protobuf's decoders take (upb, C++, Java, Go: 100 messages
    /// nested, each map entry one): a deeper request is refused naming its
    /// deepest field, before a backend would fail to decode it.
    #[test]
    fn a_request_nested_past_protobufs_depth_is_refused_naming_the_field() {
        let thing = super::kinds_pool()
            .get_message_by_name("kinds.v1.Thing")
            .unwrap();
        let o = Default::default();
        let nest = |open: &str, inner: &str, close: &str, n: usize| {
            format!("{}{inner}{}", open.repeat(n), close.repeat(n))
        };
        // A message in itself: one message per level, the top included.
        let parents = |n: usize| nest("{\"parent\":", "{}", "}", n - 1);
        assert!(super::decode(&thing, parents(100).as_bytes(), &o).is_ok());
        let err = super::decode(&thing, parents(101).as_bytes(), &o).unwrap_err();
        assert!(
            err.message.contains("more than 100 deep"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("parent.parent.parent"),
            "{}",
            err.message
        );
        // A Struct: each object three messages (Struct, entry, Value), so
        // 33 objects in `attributes` pass and 34 do not, as upb decodes.
        let attributes = |n: usize| format!("{{\"attributes\":{}}}", nest("{\"a\":", "1", "}", n));
        assert!(super::decode(&thing, attributes(33).as_bytes(), &o).is_ok());
        let err = super::decode(&thing, attributes(34).as_bytes(), &o).unwrap_err();
        assert!(err.message.contains("attributes.a.a"), "{}", err.message);
        // A ListValue: each array two (ListValue, Value).
        let list = |n: usize| format!("{{\"list\":{}}}", nest("[", "1", "]", n));
        assert!(super::decode(&thing, list(49).as_bytes(), &o).is_ok());
        let err = super::decode(&thing, list(50).as_bytes(), &o).unwrap_err();
        assert!(err.message.contains("list"), "{}", err.message);
        // A map of messages: the entry and its value.
        let children = |n: usize| nest("{\"children\":{\"7\":", "{}", "}}", n);
        assert!(super::decode(&thing, children(49).as_bytes(), &o).is_ok());
        let err = super::decode(&thing, children(50).as_bytes(), &o).unwrap_err();
        assert!(
            err.message.contains("children.7.children.7"),
            "{}",
            err.message
        );
        // Deeper still, prost's own limit inside the Struct reader says it
        // first: the same refusal.
        let err = super::decode(&thing, attributes(70).as_bytes(), &o).unwrap_err();
        assert!(
            err.message.contains("more than 100 deep"),
            "{}",
            err.message
        );
        // A body field's message sits one down: one level fewer fits.
        assert!(super::decode_at(&thing, parents(99).as_bytes(), &o, 2).is_ok());
        assert!(super::decode_at(&thing, parents(100).as_bytes(), &o, 2).is_err());
    }

    #[test]
    fn a_request_that_is_an_empty_drops_its_members_only_when_unknown_fields_are_dropped() {
        let empty = super::kinds_pool()
            .get_message_by_name("google.protobuf.Empty")
            .unwrap();
        let strict = crate::config::JsonOptions::default();
        let lenient = crate::config::JsonOptions {
            reject_unknown_fields: false,
            ..strict
        };
        let member = br#"{"x":1,"y":{"z":[1]}}"#;
        let err = super::decode(&empty, member, &strict).unwrap_err();
        assert!(
            err.message
                .contains("a google.protobuf.Empty has no fields, so it takes only {}"),
            "{}",
            err.message
        );
        let msg = super::decode(&empty, member, &lenient).unwrap();
        assert_eq!(msg, prost_reflect::DynamicMessage::new(empty.clone()));
        // Not an object, or not JSON: refused either way.
        for bad in [&b"[]"[..], b"1", b"{\"x\":"] {
            assert!(super::decode(&empty, bad, &lenient).is_err());
        }
    }
}
