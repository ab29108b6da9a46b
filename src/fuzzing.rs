//! Entry points for the fuzz targets (`fuzz/`) and for the tests that
//! replay their corpora and every crash input on stable. Each takes
//! arbitrary bytes, drives one parser the way a client's input reaches it,
//! and panics only on a bug: a panic inside the parser, or a round trip
//! that does not give back what it was given.

use crate::config::Config;
use crate::ingress::websocket::protocol::{self, Dialect};
use crate::routes::{MatchOutcome, RouteTable};
use crate::transcode::{framing, json, request};
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use std::sync::OnceLock;

/// The demo services' schemas and routes: real bindings with every field
/// kind, path templates, bodies and verbs.
struct Demo {
    pool: DescriptorPool,
    routes: RouteTable,
    messages: Vec<MessageDescriptor>,
}

const DEMO_ROUTES: &str = r#"
[server]
listen = "127.0.0.1:0"

[upstreams.demo]
endpoints = ["127.0.0.1:1"]

[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"

[[routes]]
grpc_service = "portico.demo.v1.Feed"
upstream = "demo"

[[routes]]
grpc_service = "portico.demo.v1.Chat"
upstream = "demo"

[[routes]]
grpc_service = "portico.demo.v1.Probe"
upstream = "demo"
"#;

fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let mut pool = crate::descriptors::builtin::pool();
        crate::descriptors::add_set(&mut pool, crate::demo::backends::DESCRIPTOR_SET, "demo")
            .expect("the demo's descriptor set loads");
        let config = Config::from_toml(DEMO_ROUTES).expect("the fuzzing config is valid");
        let routes = RouteTable::build(&config, &pool).expect("the demo routes build");
        let mut messages: Vec<MessageDescriptor> = pool
            .all_messages()
            .filter(|m| {
                m.package_name() == "portico.demo.v1" || m.package_name() == "google.protobuf"
            })
            .collect();
        messages.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        Demo {
            pool,
            routes,
            messages,
        }
    })
}

/// The first byte picks a message type of the demo's schemas; the rest is the input.
fn pick(data: &[u8]) -> Option<(MessageDescriptor, &[u8])> {
    let (first, rest) = data.split_first()?;
    let all = &demo().messages;
    Some((all[*first as usize % all.len()].clone(), rest))
}

/// A path template as a config's `google.api.http` rule gives it.
pub fn path_template(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = crate::routes::template::parse(text) {
            // Whatever parses has a well-formed shape.
            for v in &t.variables {
                assert!(
                    v.start <= v.end && v.end <= t.segments.len(),
                    "{text:?}: {t:?}"
                );
            }
        }
    }
}

/// A request line: the first byte picks the HTTP method, the rest is the
/// path and query. The path is normalized as the edge does, matched against
/// the demo's routes, and a match builds the request message from the
/// path's variables and the query string, as the REST adapter does.
pub fn route_match(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let Ok(target) = std::str::from_utf8(rest) else {
        return;
    };
    let method = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::PATCH,
        http::Method::DELETE,
    ][*first as usize % 5]
        .clone();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(normalized) = crate::ingress::edge::path::normalize(path) else {
        return;
    };
    assert!(
        !normalized.split('/').any(|s| s == ".." || s == "."),
        "{path:?} normalized to {normalized:?}"
    );
    if let MatchOutcome::Found(found) = demo().routes.find(&method, &normalized) {
        let url = request::UrlParts {
            segments: &found.segments,
            query,
        };
        let _ = request::build(found.binding, Some(url), &Bytes::new(), None);
    }
}

/// A query string applied to the request of `SearchBooks`, the demo method
/// with a field of every kind.
pub fn query_string(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let MatchOutcome::Found(found) = demo().routes.find(&http::Method::GET, "/v1/books:search") {
        let url = request::UrlParts {
            segments: &found.segments,
            query: Some(query),
        };
        let _ = request::build(found.binding, Some(url), &Bytes::new(), None);
    }
}

/// JSON to protobuf and back: a JSON document the gateway accepts is
/// written as JSON that it reads back to the same message.
pub fn json_roundtrip(data: &[u8]) {
    let Some((desc, json_text)) = pick(data) else {
        return;
    };
    let options = crate::config::JsonOptions::default();
    let Ok(msg) = json::decode(&desc, json_text, &options) else {
        return;
    };
    check_json_roundtrip(&desc, &msg, &options);
}

/// Protobuf to JSON and back: a backend's reply that decodes is written
/// as JSON that reads back to the same message.
pub fn proto_roundtrip(data: &[u8]) {
    let Some((desc, wire)) = pick(data) else {
        return;
    };
    // The cache keys on a client's bytes with their maps sorted: any bytes
    // at all, so never a panic.
    let sorted = crate::transcode::map_order::sorted(&desc, wire);
    let Ok(msg) = DynamicMessage::decode(desc.clone(), wire) else {
        return;
    };
    if let Some(sorted) = sorted {
        let again = DynamicMessage::decode(desc.clone(), &sorted[..]).unwrap_or_else(|e| {
            panic!(
                "{}: its maps sorted, it no longer decodes: {e}",
                desc.full_name()
            )
        });
        // The same message: entries moved, nothing else.
        let options = json::serialize_options(&crate::config::JsonOptions::default());
        if let (Ok(before), Ok(after)) =
            (json::encode(&msg, &options), json::encode(&again, &options))
        {
            assert_eq!(
                before,
                after,
                "{}: sorting changed the message",
                desc.full_name()
            );
        }
        assert_eq!(
            crate::transcode::map_order::sorted(&desc, &sorted),
            None,
            "{}: sorted twice",
            desc.full_name()
        );
    }
    check_json_roundtrip(&desc, &msg, &crate::config::JsonOptions::default());
}

/// A JSON body read directly into wire bytes ([`json::to_wire`]):
/// whenever that path reads it, the general path reads it too, into the
/// same bytes once both are in field-number order.
pub fn json_to_wire(data: &[u8]) {
    let Some((desc, json_text)) = pick(data) else {
        return;
    };
    let Ok(direct) = json::to_wire::encode(&desc, json_text) else {
        return;
    };
    let options = crate::config::JsonOptions::default();
    let general = json::decode(&desc, json_text, &options).unwrap_or_else(|e| {
        panic!(
            "{}: read directly, refused by the general path ({e:?}): {}",
            desc.full_name(),
            String::from_utf8_lossy(json_text)
        )
    });
    if let Err(e) = DynamicMessage::decode(desc.clone(), &direct[..]) {
        panic!("{}: the direct bytes do not decode: {e}", desc.full_name());
    }
    // Byte for byte once both are in field-number order: a -0.0 sent where
    // the general path sends nothing would show.
    assert_eq!(
        json::to_wire::canonical(&desc, &direct),
        json::to_wire::canonical(&desc, &general.encode_to_vec()),
        "{}: the two paths read {} as different messages",
        desc.full_name(),
        String::from_utf8_lossy(json_text)
    );
}

/// Reply bytes written as JSON directly from the wire
/// ([`json::wire`]): whenever that path writes, the general path (decode,
/// then serialize) reads the same bytes and writes the same JSON, byte for
/// byte, in each output style.
pub fn json_wire(data: &[u8]) {
    let Some((desc, wire)) = pick(data) else {
        return;
    };
    for (proto_names, enum_numbers) in [(false, false), (true, true)] {
        let options = crate::config::JsonOptions {
            use_proto_names: proto_names,
            enums_as_numbers: enum_numbers,
            ..Default::default()
        };
        let output = json::output(&options, true);
        let Some(direct) = output.direct(&desc, wire) else {
            continue;
        };
        let msg = DynamicMessage::decode(desc.clone(), wire).unwrap_or_else(|e| {
            panic!(
                "{}: written directly as {} but the general path refuses the bytes: {e}",
                desc.full_name(),
                String::from_utf8_lossy(&direct)
            )
        });
        let general = json::encode(&msg, &output.serialize).expect("a decoded message writes");
        assert_eq!(
            String::from_utf8_lossy(&direct),
            String::from_utf8_lossy(&general),
            "{}: the direct and general paths disagree",
            desc.full_name()
        );
    }
}

fn check_json_roundtrip(
    desc: &MessageDescriptor,
    msg: &DynamicMessage,
    options: &crate::config::JsonOptions,
) {
    // A FieldMask path that is not a field path (a comma, a space) has no
    // proto3 JSON form: written as is, it reads back as other paths.
    if has_unwritable_field_mask(msg) {
        return;
    }
    let ser: SerializeOptions = json::serialize_options(options);
    // Some messages have no JSON form (a Timestamp out of range, an Any of
    // an unknown type); the gateway answers those with an error.
    let Ok(first) = json::encode(msg, &ser) else {
        return;
    };
    let again = json::decode(desc, &first, options).unwrap_or_else(|e| {
        panic!(
            "{}: the gateway's own JSON does not read back: {} ({e:?})",
            desc.full_name(),
            String::from_utf8_lossy(&first)
        )
    });
    let second = json::encode(&again, &ser).expect("a message read from JSON writes again");
    // Byte for byte: a map's entries are written in key order, so one
    // message has one JSON text.
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second),
        "{}: JSON round trip",
        desc.full_name()
    );
    let _ = again.encode_to_vec();
}

fn has_unwritable_field_mask(msg: &DynamicMessage) -> bool {
    use prost_reflect::{ReflectMessage, Value};
    fn value(v: &Value) -> bool {
        match v {
            Value::Message(m) => has_unwritable_field_mask(m),
            Value::List(items) => items.iter().any(value),
            Value::Map(entries) => entries.values().any(value),
            _ => false,
        }
    }
    if msg.descriptor().full_name() == "google.protobuf.FieldMask" {
        let path_ok = |p: &str| {
            !p.is_empty()
                && p.split('.').all(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
        };
        return match msg.get_field_by_name("paths").as_deref() {
            Some(Value::List(paths)) => paths
                .iter()
                .any(|p| !matches!(p, Value::String(s) if path_ok(s))),
            _ => false,
        };
    }
    msg.fields().any(|(_, v)| value(v))
}

/// A gRPC or gRPC-Web request body: the first byte picks binary or text
/// (base64) and the size of the chunks it arrives in.
pub fn grpc_frames(data: &[u8]) {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let chunk = 1 + (*first as usize & 0x3f);
    let body: Bytes = if first & 0x80 != 0 {
        let whole = whole_web_text(body);
        // Decoded as it arrives, piece by piece, the text says the same as
        // a plain reading of the whole.
        let mut text = crate::ingress::framed::WebText::default();
        let mut pieces = Vec::new();
        let chunked = body
            .chunks(chunk)
            .try_for_each(|c| text.push(c).map(|b| pieces.extend_from_slice(&b)))
            .and_then(|()| text.finish().map(|b| pieces.extend_from_slice(&b)));
        match (whole, chunked) {
            (Ok(b), Ok(())) => {
                assert_eq!(b, pieces, "chunked and whole text decode alike");
                b
            }
            (Err(_), Err(_)) => return,
            (whole, chunked) => panic!("whole {whole:?}, chunked {chunked:?}"),
        }
    } else {
        Bytes::copy_from_slice(body)
    };
    let mut deframer = framing::Deframer::new(64 * 1024);
    let mut total = 0;
    for start in (0..body.len()).step_by(chunk) {
        deframer.push(body.slice(start..body.len().min(start + chunk)));
        loop {
            match deframer.next_message() {
                Ok(Some(m)) => total += m.len() + 5,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    if deframer.finish().is_ok() {
        assert_eq!(total, body.len(), "every byte belongs to a frame");
    }
}

/// gRPC-Web text read whole, the plain way: whitespace dropped, four
/// characters at a time, padding optional at the end, one leftover
/// character refused. The reference the streaming decoder is held to.
fn whole_web_text(body: &[u8]) -> Result<Bytes, ()> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if clean.len() % 4 == 1 {
        return Err(());
    }
    let mut out = Vec::new();
    for quad in clean.chunks(4) {
        out.extend_from_slice(&LENIENT.decode(quad).map_err(|_| ())?);
    }
    Ok(out.into())
}

/// A WebSocket session frame: the first byte picks the dialect and whether
/// the frame is text or binary.
pub fn websocket_frame(data: &[u8]) {
    let Some((first, frame)) = data.split_first() else {
        return;
    };
    let dialect = [Dialect::Json, Dialect::Proto, Dialect::Plain][*first as usize % 3];
    if first & 0x80 != 0 {
        let _ = protocol::parse_binary(dialect, Bytes::copy_from_slice(frame));
    } else if let Ok(text) = std::str::from_utf8(frame) {
        let _ = protocol::parse_text(dialect, text);
    }
}

/// The query string of a Connect GET (`encoding`, `message`, `base64`).
pub fn connect_get(data: &[u8]) {
    if let Ok(query) = std::str::from_utf8(data) {
        let _ = crate::ingress::connect::get_message(query);
    }
}

/// A config file: loading it either succeeds or fails with an error that
/// names a key, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A config may name files the gateway reads at load; a device or a
    // kernel file would make a fuzz run hang or fill memory, which says
    // nothing about the parser. Strings are checked as TOML reads them, so
    // an escaped `\u002F` counts as a `/`.
    fn names_special_file(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => ["/dev", "/proc", "/sys"].iter().any(|d| s.contains(d)),
            toml::Value::Array(a) => a.iter().any(names_special_file),
            toml::Value::Table(t) => t.values().any(names_special_file),
            _ => false,
        }
    }
    match text.parse::<toml::Table>() {
        Ok(table) if table.values().any(names_special_file) => return,
        _ => {}
    }
    if let Err(e) = Config::from_toml(text) {
        assert!(!e.to_string().is_empty());
    }
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay tests.
pub const TARGETS: [(&str, Target); 11] = [
    ("path_template", path_template),
    ("route_match", route_match),
    ("query_string", query_string),
    ("json_roundtrip", json_roundtrip),
    ("proto_roundtrip", proto_roundtrip),
    ("json_wire", json_wire),
    ("json_to_wire", json_to_wire),
    ("grpc_frames", grpc_frames),
    ("websocket_frame", websocket_frame),
    ("connect_get", connect_get),
    ("config", config),
];

/// The demo's schemas, for seeding corpora.
pub fn demo_pool() -> &'static DescriptorPool {
    &demo().pool
}
