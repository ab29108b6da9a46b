//! JSON Schemas (2020-12, as OpenAPI 3.1 uses them) for protobuf messages,
//! written under the JSON names and enum forms Portico actually writes.
//! One generator serves the OpenAPI components and the MCP tools' input
//! and output schemas.

use super::comments::Comments;
use crate::config::JsonOptions;
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// The largest `float` as proto3 JSON writes it (`3.4028235e38`): a
/// value up to it is that float.
const FLOAT_MAX_WRITTEN: f64 = 3.4028235e38;

/// What changes how a message looks in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Naming {
    pub proto_names: bool,
    pub enum_numbers: bool,
}

impl From<&JsonOptions> for Naming {
    fn from(o: &JsonOptions) -> Self {
        Naming {
            proto_names: o.use_proto_names,
            enum_numbers: o.enums_as_numbers,
        }
    }
}

impl Naming {
    /// Appended to a schema's name when the route writes JSON another way
    /// than the default (lowerCamelCase names, enum names).
    fn suffix(self) -> &'static str {
        match (self.proto_names, self.enum_numbers) {
            (false, false) => "",
            (true, false) => "_proto_names",
            (false, true) => "_enum_numbers",
            (true, true) => "_proto_names_enum_numbers",
        }
    }

    pub fn field_name(self, f: &FieldDescriptor) -> String {
        if self.proto_names {
            f.name().to_owned()
        } else {
            f.json_name().to_owned()
        }
    }
}

/// Builds schemas, collecting every named one it refers to.
pub struct Schemas<'c> {
    /// Where references point: `#/components/schemas/` or `#/$defs/`.
    prefix: &'static str,
    defs: BTreeMap<String, Value>,
    /// Which type, written which way (its suffix), each name is for.
    owners: HashMap<String, (String, &'static str)>,
    comments: &'c mut Comments,
}

impl<'c> Schemas<'c> {
    pub fn new(prefix: &'static str, comments: &'c mut Comments) -> Self {
        Schemas {
            prefix,
            defs: BTreeMap::new(),
            owners: HashMap::new(),
            comments,
        }
    }

    pub fn comments(&mut self) -> &mut Comments {
        self.comments
    }

    /// The named schemas referred to so far.
    pub fn into_defs(self) -> BTreeMap<String, Value> {
        self.defs
    }

    pub fn defs(&self) -> &BTreeMap<String, Value> {
        &self.defs
    }

    /// A reference to `m`'s schema (added to the definitions), or the
    /// well-known type's JSON form inline.
    pub fn message(&mut self, m: &MessageDescriptor, n: Naming) -> Value {
        if let Some(v) = well_known(m) {
            return v;
        }
        let name = self.name_of(m.parent_pool(), m.full_name(), n.suffix());
        if !self.defs.contains_key(&name) {
            // Claimed first, so a message that contains itself refers back.
            self.defs.insert(name.clone(), Value::Null);
            let body = self.message_body(m, n);
            self.defs.insert(name.clone(), body);
        }
        json!({ "$ref": format!("{}{}", self.prefix, name) })
    }

    /// The schema name of a type written a way (`suffix`): its full name
    /// with the suffix, unless that is the full name of another type (a
    /// message `n.Book_proto_names` beside `n.Book`), whose own schema it
    /// would be, or a name already made for another type or way (`Book`
    /// with `_proto_names_enum_numbers`, `Book_proto_names` with
    /// `_enum_numbers`); then with one more `_` before the suffix, until
    /// it is no one else's.
    fn name_of(
        &mut self,
        pool: &prost_reflect::DescriptorPool,
        full_name: &str,
        suffix: &'static str,
    ) -> String {
        let owner = (full_name.to_owned(), suffix);
        let mut name = format!("{full_name}{suffix}");
        loop {
            match self.owners.get(&name) {
                Some(o) if *o == owner => return name,
                Some(_) => {}
                None => {
                    let a_type = !suffix.is_empty()
                        && (pool.get_message_by_name(&name).is_some()
                            || pool.get_enum_by_name(&name).is_some());
                    if !a_type {
                        self.owners.insert(name.clone(), owner);
                        return name;
                    }
                }
            }
            name.insert(full_name.len(), '_');
        }
    }

    /// `m`'s object schema itself, not a reference.
    pub fn message_body(&mut self, m: &MessageDescriptor, n: Naming) -> Value {
        if let Some(v) = well_known(m) {
            return v;
        }
        let mut schema = Map::new();
        schema.insert("type".into(), json!("object"));
        schema.insert("title".into(), json!(m.name()));
        if let Some(text) = self.comments.get(&m.parent_file(), m.path()) {
            schema.insert("description".into(), json!(text));
        }
        if m.descriptor_proto()
            .options
            .as_ref()
            .is_some_and(|o| o.deprecated())
        {
            schema.insert("deprecated".into(), json!(true));
        }
        let mut properties = Map::new();
        for f in m.fields() {
            properties.insert(n.field_name(&f), self.field(&f, n));
        }
        // A proto2 extension of the message, as the JSON mapping names it:
        // `[package.name]`, whatever the naming options.
        for x in m.extensions() {
            let value = without_null(self.kind(&x.kind(), n));
            let mut schema = match x.is_list() {
                true => json!({ "type": "array", "items": value }),
                false => value,
            };
            if let Some(text) = self.comments.get(&x.parent_file(), x.path()) {
                schema["description"] = json!(text);
            }
            properties.insert(x.json_name().to_owned(), schema);
        }
        schema.insert("properties".into(), Value::Object(properties));
        // At most one member of each oneof: exactly one branch holds, the
        // one naming the member that is set, or the last when none is.
        let groups: Vec<Value> = m
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| {
                let members: Vec<Value> = o
                    .fields()
                    .map(|f| json!({ "required": [n.field_name(&f)] }))
                    .collect();
                let mut branches = members.clone();
                branches.push(json!({ "not": { "anyOf": members } }));
                json!({ "oneOf": branches, "x-oneof": o.name() })
            })
            .collect();
        match groups.len() {
            0 => {}
            1 => {
                let mut g = groups.into_iter().next().expect("one group");
                schema.insert("oneOf".into(), g["oneOf"].take());
                schema.insert("x-oneof".into(), g["x-oneof"].take());
            }
            _ => {
                schema.insert("allOf".into(), Value::Array(groups));
            }
        }
        Value::Object(schema)
    }

    /// A field's schema: repeated and map fields wrap the value's.
    pub fn field(&mut self, f: &FieldDescriptor, n: Naming) -> Value {
        let mut schema = if f.is_map() {
            let Kind::Message(entry) = f.kind() else {
                unreachable!("a map field's kind is its entry message")
            };
            let key = entry.map_entry_key_field();
            let value = entry.map_entry_value_field();
            let mut s = json!({
                "type": "object",
                "additionalProperties": without_null(self.kind(&value.kind(), n)),
            });
            let names = match key.kind() {
                Kind::Bool => Some(json!({ "enum": ["true", "false"] })),
                Kind::String => None,
                Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => {
                    Some(json!({ "pattern": "^[0-9]+$" }))
                }
                _ => Some(json!({ "pattern": "^-?[0-9]+$" })),
            };
            if let Some(names) = names {
                s["propertyNames"] = names;
            }
            s
        } else if f.is_list() {
            json!({ "type": "array", "items": without_null(self.kind(&f.kind(), n)) })
        } else {
            self.kind(&f.kind(), n)
        };
        if let Some(text) = self.comments.get(&f.parent_file(), f.path()) {
            schema["description"] = json!(text);
        }
        if f.field_descriptor_proto()
            .options
            .as_ref()
            .is_some_and(|o| o.deprecated())
        {
            schema["deprecated"] = json!(true);
        }
        schema
    }

    /// One value of a kind (an element, for repeated fields).
    pub fn kind(&mut self, k: &Kind, n: Naming) -> Value {
        match k {
            Kind::Double => json!({ "anyOf": [
                { "type": "number", "format": "double" },
                { "type": "string", "enum": ["NaN", "Infinity", "-Infinity"] }
            ] }),
            // A finite number past the largest float is refused, so the
            // schema says where that is (the largest float as written).
            Kind::Float => json!({ "anyOf": [
                { "type": "number", "format": "float",
                  "minimum": -FLOAT_MAX_WRITTEN, "maximum": FLOAT_MAX_WRITTEN },
                { "type": "string", "enum": ["NaN", "Infinity", "-Infinity"] }
            ] }),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({
                "type": "integer", "format": "int32",
                "minimum": i32::MIN, "maximum": i32::MAX
            }),
            Kind::Uint32 | Kind::Fixed32 => json!({
                "type": "integer", "format": "uint32",
                "minimum": 0, "maximum": u32::MAX
            }),
            // proto3 JSON writes 64-bit integers as strings (a double
            // cannot hold them); numbers are accepted on the way in.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({
                "type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$"
            }),
            Kind::Uint64 | Kind::Fixed64 => json!({
                "type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$"
            }),
            Kind::Bool => json!({ "type": "boolean" }),
            Kind::String => json!({ "type": "string" }),
            Kind::Bytes => json!({
                "type": "string", "format": "byte", "contentEncoding": "base64"
            }),
            Kind::Message(m) => self.message(m, n),
            Kind::Enum(e) => self.enumeration(e, n),
        }
    }

    fn enumeration(&mut self, e: &EnumDescriptor, n: Naming) -> Value {
        if e.full_name() == "google.protobuf.NullValue" {
            return json!({ "type": "null" });
        }
        let suffix = if n.enum_numbers { "_numbers" } else { "" };
        let name = self.name_of(e.parent_pool(), e.full_name(), suffix);
        if !self.defs.contains_key(&name) {
            // A value the schema does not know (a backend built with a newer
            // enum) is written as its number, and numbers are accepted.
            let mut schema = if n.enum_numbers {
                let known: serde_json::Map<String, Value> = e
                    .values()
                    .map(|v| (v.number().to_string(), json!(v.name())))
                    .collect();
                json!({ "type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX, "x-enum-names": known })
            } else {
                let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
                json!({ "anyOf": [
                    { "type": "string", "enum": names },
                    { "type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX },
                ] })
            };
            schema["title"] = json!(e.name());
            let mut text = self
                .comments
                .get(&e.parent_file(), e.path())
                .map(str::to_owned)
                .unwrap_or_default();
            // Each value's comment, as a list under the enum's.
            for v in e.values() {
                if let Some(c) = self.comments.get(&v.parent_file(), v.path()) {
                    let c = c.replace('\n', " ");
                    text.push_str(&format!("\n- `{}` ({}): {c}", v.name(), v.number()));
                }
            }
            let text = text.trim();
            if !text.is_empty() {
                schema["description"] = json!(text);
            }
            self.defs.insert(name.clone(), schema);
        }
        json!({ "$ref": format!("{}{}", self.prefix, name) })
    }
}

/// The schema of a closed (proto2) enum's value in a path or a query,
/// where only its declared names and numbers are taken (a JSON body, as
/// the protobuf JSON reader reads it, takes any number: the enum's named
/// schema says so). `None` for any other kind.
pub fn closed_enum_in_url(k: &Kind) -> Option<Value> {
    let Kind::Enum(e) = k else {
        return None;
    };
    if e.parent_file().syntax() != prost_reflect::Syntax::Proto2 {
        return None;
    }
    let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
    let mut numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    Some(json!({
        "title": e.name(),
        "anyOf": [
            { "type": "string", "enum": names },
            { "type": "integer", "format": "int32", "enum": numbers },
        ],
        "description": format!("A value of the closed (proto2) enum {}: a declared name or number.", e.full_name()),
    }))
}

/// A schema that does not take `null`: a wrapper's null unsets a singular
/// field, but an element of a list or a map's value has no unset state, and
/// the gateway refuses a `null` there (as a query cannot send one).
pub fn without_null(mut schema: Value) -> Value {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema["type"] = only;
        }
    }
    if let Some(any) = schema.get_mut("anyOf").and_then(Value::as_array_mut) {
        any.retain(|s| s != &json!({ "type": "null" }));
    }
    schema
}

/// The JSON form of the well-known types that are not plain objects.
pub fn well_known(m: &MessageDescriptor) -> Option<Value> {
    let wrapped = |inner: Value| -> Value {
        let mut v = inner;
        if let Some(t) = v.get("type").cloned() {
            v["type"] = json!([t, "null"]);
        } else if let Some(any) = v.get_mut("anyOf").and_then(Value::as_array_mut) {
            any.push(json!({ "type": "null" }));
        }
        v
    };
    let scalar = |k: Kind| -> Value {
        // Wrappers hold scalars only: no definitions are needed.
        let mut none = Comments::default();
        Schemas::new("", &mut none).kind(&k, Naming::default())
    };
    Some(match m.full_name() {
        "google.protobuf.Timestamp" => json!({
            "type": "string", "format": "date-time",
            "description": "RFC 3339, UTC (`Z`), with up to nine fractional digits"
        }),
        "google.protobuf.Duration" => json!({
            "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "Seconds with up to nine fractional digits and an `s`, e.g. `1.5s`"
        }),
        "google.protobuf.FieldMask" => json!({
            "type": "string",
            "description": "Field paths in lowerCamelCase, separated by commas, e.g. `title,author.name`"
        }),
        "google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
        "google.protobuf.Value" => json!({ "description": "Any JSON value" }),
        "google.protobuf.ListValue" => json!({ "type": "array", "items": {} }),
        "google.protobuf.Empty" => json!({ "type": "object", "additionalProperties": false }),
        "google.protobuf.Any" => json!({
            "type": "object",
            // A type URL: anything up to a last `/`, then the full name.
            "properties": { "@type": { "type": "string", "pattern": "/[A-Za-z_][A-Za-z0-9_.]*$" } },
            "required": ["@type"],
            "additionalProperties": true,
            "description": "A message of the type named by `@type` (its fields beside it; `value` for well-known types)"
        }),
        "google.protobuf.DoubleValue" => wrapped(scalar(Kind::Double)),
        "google.protobuf.FloatValue" => wrapped(scalar(Kind::Float)),
        "google.protobuf.Int64Value" => wrapped(scalar(Kind::Int64)),
        "google.protobuf.UInt64Value" => wrapped(scalar(Kind::Uint64)),
        "google.protobuf.Int32Value" => wrapped(scalar(Kind::Int32)),
        "google.protobuf.UInt32Value" => wrapped(scalar(Kind::Uint32)),
        "google.protobuf.BoolValue" => wrapped(scalar(Kind::Bool)),
        "google.protobuf.StringValue" => wrapped(scalar(Kind::String)),
        "google.protobuf.BytesValue" => wrapped(scalar(Kind::Bytes)),
        _ => return None,
    })
}
