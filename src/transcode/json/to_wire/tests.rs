use super::*;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};

fn pool() -> &'static DescriptorPool {
    super::super::kinds_pool()
}

/// `kinds.v1.Thing` has a field of every scalar kind (and maps and
/// well-known types, which the tests here leave out of their bodies).
fn thing() -> MessageDescriptor {
    pool().get_message_by_name("kinds.v1.Thing").unwrap()
}

/// What the general path makes of the body, if it reads it.
fn general(desc: &MessageDescriptor, json: &str) -> Option<DynamicMessage> {
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(desc.clone(), &mut de).ok()?;
    de.end().ok()?;
    Some(msg)
}

/// Read directly, the body must give the message the general path gives.
fn same(desc: &MessageDescriptor, json: &str) -> bool {
    match encode(desc, json.as_bytes()) {
        Ok(bytes) => {
            DynamicMessage::decode(desc.clone(), &bytes[..])
                .unwrap_or_else(|e| panic!("{json}: the direct bytes do not decode: {e}"));
            let general = general(desc, json)
                .unwrap_or_else(|| panic!("{json}: read directly, refused by the general path"));
            // Compared byte for byte once both are in field-number order:
            // a -0.0 written where the general path writes nothing shows.
            assert_eq!(
                canonical(desc, &bytes).unwrap(),
                canonical(desc, &general.encode_to_vec()).unwrap(),
                "{json}: the two paths encode different messages"
            );
            true
        }
        Err(Fallback) => false,
    }
}

#[test]
fn every_scalar_kind_reads_as_the_general_path_reads_it() {
    for json in [
        r#"{}"#,
        r#"{"name":"a \"quoted\"\nline, é and 😀 and \u0001","doubleValue":1.5,"floatValue":-0.25,
            "int32Value":-7,"int64Value":"-9007199254740993","uint32Value":4294967295,
            "uint64Value":"18446744073709551615","sint32Value":-2147483648,"sint64Value":"-9223372036854775808",
            "fixed32Value":4294967295,"fixed64Value":"18446744073709551615","sfixed32Value":-1,
            "sfixed64Value":"-9223372036854775807","boolValue":true,"bytesValue":"AAEC/w==","color":"RED",
            "tags":["x","","y"],"parent":{"name":"p","parent":{}},"person":"","note":""}"#,
        r#"{"int64_value":12,"uint64_value":0,"int32_value":"-3","double_value":2,"float_value":1e-3,"team":"t"}"#,
        r#"{"doubleValue":-0.0,"name":"","int32Value":0,"boolValue":false,"color":"COLOR_UNSPECIFIED","tags":[]}"#,
        r#"{"doubleValue":-0,"floatValue":-1e-50}"#,
        r#"{"parent":{"parent":{"parent":{"tags":["deep"],"sint64Value":"-1"}}}}"#,
        r#"  {"name" : "spaced" }  "#,
    ] {
        assert!(same(&thing(), json), "{json} is read directly");
    }
}

#[test]
fn repeated_enums_and_nested_lists_read_alike() {
    let list = pool()
        .get_message_by_name("kinds.v1.ListThingsRequest")
        .unwrap();
    assert!(same(
        &list,
        r#"{"pageSize":3,"colors":["BLUE","RED","BLUE"]}"#
    ));
    let response = pool()
        .get_message_by_name("kinds.v1.ListThingsResponse")
        .unwrap();
    // Things hold maps: not a covered type, but the reader handles the
    // fields the body has, and routes never send such types here.
    assert!(same(
        &response,
        r#"{"things":[{"name":"a"},{"name":"b","tags":["t"]}],"nextPageToken":"n"}"#
    ));
}

#[test]
fn what_the_general_path_reads_differently_or_refuses_falls_back() {
    for (what, json) in [
        ("a null", r#"{"name":null}"#),
        ("an enum number", r#"{"color":1}"#),
        ("an unknown enum name", r#"{"color":"GREEN"}"#),
        ("a float for an integer", r#"{"int32Value":1.0}"#),
        ("an integer out of range", r#"{"int32Value":2147483648}"#),
        ("a negative unsigned", r#"{"uint32Value":-1}"#),
        ("a leading zero", r#"{"int64Value":"007"}"#),
        ("an exponent in a string", r#"{"int64Value":"1e3"}"#),
        ("a float string", r#"{"doubleValue":"NaN"}"#),
        ("a float out of range", r#"{"floatValue":1e39}"#),
        ("URL-safe base64", r#"{"bytesValue":"-_8="}"#),
        ("unpadded base64", r#"{"bytesValue":"AQ"}"#),
        ("an unknown key", r#"{"nope":1}"#),
        ("a key twice", r#"{"name":"a","name":"b"}"#),
        (
            "both names of a field",
            r#"{"int32Value":1,"int32_value":2}"#,
        ),
        ("two members of a oneof", r#"{"person":"a","team":"b"}"#),
        ("a string for a bool", r#"{"boolValue":"true"}"#),
        ("a number for a string", r#"{"name":1}"#),
        ("an object for a list", r#"{"tags":{}}"#),
        ("trailing garbage", r#"{"name":"a"} x"#),
        ("not JSON", r#"{"name":"#),
        ("an array at the top", r#"[]"#),
        ("a map", r#"{"counts":{"a":1}}"#),
        (
            "a well-known type",
            r#"{"createTime":"2024-01-01T00:00:00Z"}"#,
        ),
        ("a Struct", r#"{"attributes":{"fields":{}}}"#),
    ] {
        assert_eq!(encode(&thing(), json.as_bytes()), Err(Fallback), "{what}");
    }
}

#[test]
fn a_well_known_type_as_the_whole_message_falls_back() {
    for name in [
        "google.protobuf.Timestamp",
        "google.protobuf.Empty",
        "google.protobuf.Struct",
    ] {
        let desc = pool().get_message_by_name(name).unwrap();
        assert_eq!(encode(&desc, b" {} "), Err(Fallback), "{name}");
    }
}

#[test]
fn nesting_past_the_limit_falls_back() {
    let levels = MAX_DEPTH as usize + 1;
    let deep = format!(
        "{}{{}}{}",
        r#"{"parent":"#.repeat(levels),
        "}".repeat(levels)
    );
    assert_eq!(encode(&thing(), deep.as_bytes()), Err(Fallback));
    let levels = MAX_DEPTH as usize - 2;
    let shallow = format!(
        "{}{{}}{}",
        r#"{"parent":"#.repeat(levels),
        "}".repeat(levels)
    );
    assert!(same(&thing(), &shallow));
}

/// Mutated bodies (characters flipped, cut, spliced): whatever is read
/// directly, the general path reads as the same message. The
/// `json_to_wire` fuzz target does the same with coverage guidance.
#[test]
fn whatever_is_read_directly_matches_the_general_path_under_mutation() {
    let seeds = [
        r#"{"name":"n","doubleValue":2.5,"int32Value":-3,"int64Value":"12","uint32Value":7,"sint32Value":-1,"sint64Value":"5","fixed32Value":3,"fixed64Value":"9","sfixed32Value":-4,"sfixed64Value":"-8","boolValue":true,"bytesValue":"AAE=","color":"BLUE","tags":["a","b"],"parent":{"name":"p","tags":["c"]},"person":"x","note":"y"}"#.as_bytes(),
        br#"{"floatValue":1.25,"parent":{"parent":{"int64Value":-1}},"team":"t","uint64Value":"18446744073709551615"}"#,
    ];
    let alphabet = b"{}[]\":,-0123456789.eE aAnulltrufs\\";
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut read = 0;
    for round in 0..20_000 {
        let mut body = seeds[round % seeds.len()].to_vec();
        for _ in 0..=(next() % 2) {
            let at = (next() as usize) % body.len().max(1);
            let c = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 if !body.is_empty() => body[at] = c,
                1 => body.insert(at.min(body.len()), c),
                _ => {
                    body.remove(at.min(body.len().saturating_sub(1)));
                }
            }
        }
        let Ok(text) = std::str::from_utf8(&body) else {
            continue;
        };
        if same(&thing(), text) {
            read += 1;
        }
    }
    assert!(read > 500, "many mutations stay readable ({read})");
}
