//! The WebSocket framing protocols, as pure parse and render functions.
//! docs/websocket.md is the specification; this file follows it.
//!
//! - `portico.json.v1`: every frame is a JSON object with an optional `id`
//!   (the call it belongs to). Client: `open`, `message`, `end`, `cancel`.
//!   Server: `headers`, `result`, `status` (+ `trailers`), `error`.
//!   Messages are always nested under a key, so a message field can never
//!   be read as a control signal.
//! - `portico.proto.v1`: one call; each binary frame is one protobuf
//!   message; control signals are the JSON text frames above.
//! - plain (no subprotocol named): one call; client text frames are bare
//!   JSON messages and an empty text frame ends the input; the server sends
//!   `{"result":...}` frames and ends with a close frame whose code carries
//!   the status (1000 OK, 4000 + gRPC code otherwise), after an
//!   `{"error":...}` frame when the call failed.

use crate::error::GatewayError;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

pub const JSON_V1: &str = "portico.json.v1";
pub const PROTO_V1: &str = "portico.proto.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Json,
    Proto,
    Plain,
}

impl Dialect {
    /// The dialect for the subprotocols a client offered, in its order of preference.
    pub fn negotiate<'a>(offered: impl Iterator<Item = &'a str>) -> Dialect {
        for p in offered {
            match p {
                JSON_V1 => return Dialect::Json,
                PROTO_V1 => return Dialect::Proto,
                _ => {}
            }
        }
        Dialect::Plain
    }

    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Dialect::Json => Some(JSON_V1),
            Dialect::Proto => Some(PROTO_V1),
            Dialect::Plain => None,
        }
    }
}

/// A request message as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(Bytes),
    Proto(Bytes),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// Opens a call to a method (`/package.Service/Method`), optionally with its first message.
    Open {
        id: String,
        method: String,
        /// In the order written: a name given twice is two fields, as
        /// two header lines are.
        metadata: Vec<(String, String)>,
        message: Option<Body>,
    },
    Message {
        id: String,
        body: Body,
    },
    /// End of input: the client half-closes the call.
    End {
        id: String,
    },
    Cancel {
        id: String,
    },
}

impl ClientFrame {
    pub fn id(&self) -> &str {
        match self {
            ClientFrame::Open { id, .. }
            | ClientFrame::Message { id, .. }
            | ClientFrame::End { id }
            | ClientFrame::Cancel { id } => id,
        }
    }

    /// Carries data for the backend (ending or cancelling a call does not).
    pub fn carries_data(&self) -> bool {
        matches!(self, ClientFrame::Open { .. } | ClientFrame::Message { .. })
    }
}

/// A frame that could not be read, with the call it named, if any.
#[derive(Debug)]
pub struct BadFrame {
    pub id: Option<String>,
    /// Without an `id`: whether the frame may have held a message for a
    /// call (it has a `message`, or could not be read as a frame at all).
    /// Such a frame's loss leaves a hole in some call's input; an `open`,
    /// `end` or `cancel` without an id loses no one's.
    pub may_hold_message: bool,
    pub error: GatewayError,
}

/// Whether a JSON frame that is not a readable frame may hold a call's
/// message: it has a `message` and is not an `open` (whose message is for
/// a call it would have started), or it is not an object at all. A key
/// that is `null` is left out, as the frame reader takes it.
fn may_hold_message(frame: Option<&serde_json::Value>) -> bool {
    match frame.and_then(serde_json::Value::as_object) {
        Some(keys) => {
            let has = |key: &str| keys.get(key).is_some_and(|v| !v.is_null());
            keys.contains_key("message") && !has("open")
        }
        None => true,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFrame<'a> {
    /// `Some(None)`: the key is there, `null`.
    #[serde(default, deserialize_with = "present_value")]
    id: Option<Option<String>>,
    #[serde(default)]
    open: Option<String>,
    #[serde(default)]
    /// A value that is not a string is refused naming its entry rather
    /// than failing the whole frame.
    metadata: Option<Metadata>,
    /// `null` is kept (as raw `null`), so a message frame that holds one
    /// can be told from a frame with no `message` at all.
    #[serde(borrow, default, deserialize_with = "present")]
    message: Option<&'a RawValue>,
    #[serde(default)]
    end: Option<bool>,
    #[serde(default)]
    cancel: Option<bool>,
}

/// An `open` frame's metadata as written: every entry in order (a JSON
/// object read into a map would sort its names and keep one of a name
/// given twice), each a string or what it is instead. A value that is not
/// a string is skipped over without being built, however deep it nests.
struct Metadata(Vec<(String, Result<String, String>)>);

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Metadata;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Metadata, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let MetadataValue(value) = map.next_value()?;
                    entries.push((name, value));
                }
                Ok(Metadata(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

struct MetadataValue(Result<String, String>);

impl<'de> Deserialize<'de> for MetadataValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Held as written: a value that is not a string is only skipped
        // over (however deep it nests, whatever number it holds) and
        // named by its kind.
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        let kind = match text.as_bytes().first() {
            Some(b'"') => {
                return serde_json::from_str::<String>(text)
                    .map(|s| MetadataValue(Ok(s)))
                    .map_err(serde::de::Error::custom)
            }
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        Ok(MetadataValue(Err(kind.to_owned())))
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as Deserialize>::deserialize(d).map(Some)
}

fn present_value<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// What is wrong with a frame that is JSON but not a frame's shape, said
/// in the protocol's words: the key at fault and what it holds (serde's
/// own text names the Rust type, or no key).
fn misshapen(v: &serde_json::Value) -> Option<(&'static str, String)> {
    use serde_json::Value;
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let Value::Object(frame) = v else {
        return Some((
            "",
            format!(
                "a frame is a JSON object (such as {{\"id\": \"1\", \"message\": {{}}}}), not {}",
                kind(v)
            ),
        ));
    };
    // `null` stands for a key left out.
    type Expected = (&'static str, &'static str, fn(&Value) -> bool);
    let expected: [Expected; 5] = [
        ("id", "a string", Value::is_string),
        ("open", "a string (the method's path)", Value::is_string),
        ("metadata", "an object of strings", Value::is_object),
        ("end", "true", Value::is_boolean),
        ("cancel", "true", Value::is_boolean),
    ];
    expected.iter().find_map(|(key, want, fits)| {
        let got = frame.get(*key).filter(|v| !v.is_null())?;
        (!fits(got)).then(|| (*key, format!("{key} must be {want}, not {}", kind(got))))
    })
}

fn bad(id: Option<String>, reason: impl Into<String>) -> BadFrame {
    BadFrame {
        id,
        may_hold_message: true,
        error: GatewayError::invalid_field("", reason),
    }
}

/// What a portico.proto.v1 client's text frames may be: that dialect's
/// sessions are one call, opened by the path, so there is no `open`.
const PROTO_CONTROL_FRAMES: &str =
    "a portico.proto.v1 control frame is {\"end\":true} or {\"cancel\":true} (messages are binary frames)";

/// Reads a client text frame.
pub fn parse_text(dialect: Dialect, text: &str) -> Result<ClientFrame, BadFrame> {
    if dialect == Dialect::Plain {
        // Only a frame of no bytes ends the input: a blank line is a bad
        // message, refused as such, not a silent end of the upload.
        if text.is_empty() {
            return Ok(ClientFrame::End { id: String::new() });
        }
        if text.trim_ascii().is_empty() {
            return Err(bad(
                None,
                "the frame is only whitespace, not a JSON message (an empty frame ends the input)",
            ));
        }
        return Ok(ClientFrame::Message {
            id: String::new(),
            body: Body::Json(Bytes::copy_from_slice(text.as_bytes())),
        });
    }
    let frame: JsonFrame = serde_json::from_str(text).map_err(|e| {
        // Name the call if the id can still be read.
        let value = serde_json::from_str::<serde_json::Value>(text).ok();
        let id = value
            .as_ref()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
        let what = if dialect == Dialect::Proto {
            "control frame"
        } else {
            "frame"
        };
        let name = if dialect == Dialect::Proto {
            PROTO_V1
        } else {
            JSON_V1
        };
        // serde lists the JSON dialect's keys, `message` among them, which
        // a portico.proto.v1 control frame may not hold.
        let may_hold_message = may_hold_message(value.as_ref());
        if let Some((field, why)) = value.as_ref().and_then(misshapen) {
            return BadFrame {
                id,
                may_hold_message,
                error: GatewayError::invalid_field(field, format!("not a {name} {what}: {why}")),
            };
        }
        let text = e.to_string();
        // A key given twice: JSON readers disagree on which one counts, so
        // neither does. Two `id`s leave the frame's call untold.
        let twice = text
            .strip_prefix("duplicate field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field);
        if let Some(field) = twice {
            return BadFrame {
                id: id.filter(|_| field != "id"),
                may_hold_message,
                error: GatewayError::invalid_field(
                    field,
                    format!(
                        "not a {name} {what}: the key is given more than once{}",
                        if field == "id" {
                            ", so the frame's call cannot be told"
                        } else {
                            ""
                        }
                    ),
                ),
            };
        }
        let unknown = text
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field);
        let refused = match (dialect, unknown) {
            (Dialect::Proto, Some(field)) => bad(
                id,
                format!("not a {name} {what}: unknown field `{field}`; {PROTO_CONTROL_FRAMES}"),
            ),
            _ => bad(
                id,
                format!(
                    "not a {name} {what}: {}",
                    crate::transcode::json::parser_words(&e)
                ),
            ),
        };
        BadFrame {
            may_hold_message,
            ..refused
        }
    })?;
    // An id names a call or is left out: an empty or null one names none,
    // and would pass for the one call of a session opened by its path.
    let id = match frame.id {
        None => String::new(),
        Some(Some(id)) if !id.is_empty() => id,
        Some(_) => {
            return Err(BadFrame {
                may_hold_message: frame.message.is_some() && frame.open.is_none(),
                ..bad(
                    None,
                    "`id` is empty or null: a multiplexed session's frames name their call by a non-empty id, and a single-call session's frames carry no `id` at all",
                )
            })
        }
    };
    let null = frame.message.is_some_and(|m| m.get() == "null");
    if null && frame.open.is_none() && dialect == Dialect::Json {
        return Err(bad(
            Some(id),
            "`message` is null, which is no message: send `{}` for a message with every field at its default",
        ));
    }
    // On an open frame, `"message": null` is the same as leaving it out.
    let message = frame
        .message
        .filter(|_| !null)
        .map(|m| Body::Json(Bytes::copy_from_slice(m.get().as_bytes())));
    if dialect == Dialect::Proto && message.is_some() {
        return Err(bad(
            Some(id),
            "with portico.proto.v1, messages are binary frames",
        ));
    }
    let entries = frame.metadata.map(|m| m.0).unwrap_or_default();
    // A key given twice: JSON readers disagree on which one counts, so
    // neither does (two spellings of a name are two fields).
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    if let Some((name, _)) = entries.iter().find(|(name, _)| !seen.insert(name.as_str())) {
        return Err(BadFrame {
            id: Some(id),
            may_hold_message: true,
            error: GatewayError::invalid_field(
                format!("metadata.{name}"),
                "the key is given more than once in this object; give it once (a name sent as two fields is two spellings of it, \"x-tag\" and \"X-Tag\")",
            ),
        });
    }
    let mut metadata = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        match value {
            Ok(v) => metadata.push((name, v)),
            Err(other) => {
                return Err(BadFrame {
                    id: Some(id),
                    may_hold_message: true,
                    error: GatewayError::invalid_field(
                        format!("metadata.{name}"),
                        format!("is {other}: a metadata value is a string"),
                    ),
                })
            }
        }
    }
    match (frame.open, message, frame.end, frame.cancel) {
        (Some(method), message, None, None) => Ok(ClientFrame::Open {
            id,
            method,
            metadata,
            message,
        }),
        (None, Some(body), None, None) => Ok(ClientFrame::Message { id, body }),
        (None, None, Some(true), None) => Ok(ClientFrame::End { id }),
        (None, None, None, Some(true)) => Ok(ClientFrame::Cancel { id }),
        _ if dialect == Dialect::Proto => Err(bad(Some(id), PROTO_CONTROL_FRAMES)),
        _ => Err(bad(
            Some(id),
            "a frame holds exactly one of open, message, end: true, cancel: true",
        )),
    }
}

/// Reads a client binary frame.
pub fn parse_binary(dialect: Dialect, bytes: Bytes) -> Result<ClientFrame, BadFrame> {
    match dialect {
        Dialect::Proto => Ok(ClientFrame::Message {
            id: String::new(),
            body: Body::Proto(bytes),
        }),
        _ => Err(bad(
            None,
            "binary frames carry messages only with portico.proto.v1",
        )),
    }
}

/// What the server sends about a call.
pub enum ServerFrame<'a> {
    Headers(&'a serde_json::Map<String, serde_json::Value>),
    /// A response message: JSON text, or protobuf bytes with portico.proto.v1.
    Message(Bytes),
    /// The call's end: its status (`{"code","message","details"}`) and trailers.
    Status {
        status: &'a serde_json::Value,
        trailers: &'a serde_json::Map<String, serde_json::Value>,
    },
    /// A client frame was refused; the call goes on.
    Error(&'a serde_json::Value),
}

/// An outgoing WebSocket message: text or binary.
#[derive(Debug, PartialEq)]
pub enum Out {
    Text(String),
    Binary(Bytes),
}

/// Renders a server frame for a call (`id` empty for a session's only call).
pub fn render(dialect: Dialect, id: &str, frame: ServerFrame<'_>) -> Option<Out> {
    let with_id = |key: &str, value: &str| -> String {
        if id.is_empty() || dialect != Dialect::Json {
            format!("{{\"{key}\":{value}}}")
        } else {
            format!(
                "{{\"id\":{},\"{key}\":{value}}}",
                serde_json::Value::String(id.to_owned())
            )
        }
    };
    match (dialect, frame) {
        (Dialect::Plain, ServerFrame::Headers(_)) => None,
        (_, ServerFrame::Headers(h)) => Some(Out::Text(with_id(
            "headers",
            &serde_json::Value::Object(h.clone()).to_string(),
        ))),
        (Dialect::Proto, ServerFrame::Message(bytes)) => Some(Out::Binary(bytes)),
        (_, ServerFrame::Message(json)) => Some(Out::Text(result_frame(dialect, id, &json))),
        (Dialect::Plain, ServerFrame::Status { status, .. }) => {
            // Plain clients learn an OK end from the close code alone.
            (status["code"].as_i64() != Some(0))
                .then(|| Out::Text(format!("{{\"error\":{status}}}")))
        }
        (_, ServerFrame::Status { status, trailers }) => {
            let body = format!(
                "{status},\"trailers\":{}",
                serde_json::Value::Object(trailers.clone())
            );
            Some(Out::Text(with_id("status", &body)))
        }
        (_, ServerFrame::Error(e)) => Some(Out::Text(with_id("error", &e.to_string()))),
    }
}

/// `{"result":MESSAGE}` (with the call's id in the JSON dialect), built in
/// one buffer: this runs for every message of every stream.
fn result_frame(dialect: Dialect, id: &str, json: &[u8]) -> String {
    let mut out = Vec::with_capacity(json.len() + id.len() + 20);
    out.push(b'{');
    if !id.is_empty() && dialect == Dialect::Json {
        out.extend_from_slice(b"\"id\":");
        let _ = serde_json::to_writer(&mut out, id);
        out.push(b',');
    }
    out.extend_from_slice(b"\"result\":");
    out.extend_from_slice(json);
    out.push(b'}');
    // The message is the gateway's own JSON, so this never loses anything.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A close reason within the 123 bytes a close frame allows: a longer
/// message is cut after a whole word where one ends near the limit, and
/// ends with `…` so a reader knows it was cut (the `{"error"}` frame before
/// the close carries it whole).
pub fn close_reason(message: &str) -> String {
    const MAX: usize = 123;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    // A word ends before whitespace, or after punctuation.
    let bytes = message.as_bytes();
    let at_word_end = bytes[end].is_ascii_whitespace() || bytes[end - 1].is_ascii_punctuation();
    if let Some(space) = message[..end]
        .rfind(|c: char| c.is_ascii_whitespace())
        .filter(|&s| !at_word_end && s + 24 >= end)
    {
        end = space;
    }
    format!("{}…", message[..end].trim_end_matches([' ', ',', ':', ';']))
}

#[cfg(test)]
mod tests;
