use super::*;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

fn pool() -> &'static DescriptorPool {
    super::super::kinds_pool()
}

fn thing() -> MessageDescriptor {
    pool().get_message_by_name("kinds.v1.Thing").unwrap()
}

const STYLES: [Style; 3] = [
    Style {
        proto_names: false,
        enum_numbers: false,
    },
    Style {
        proto_names: true,
        enum_numbers: false,
    },
    Style {
        proto_names: false,
        enum_numbers: true,
    },
];

fn general(desc: &MessageDescriptor, bytes: &[u8], style: Style) -> String {
    let msg = DynamicMessage::decode(desc.clone(), bytes).unwrap();
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .use_proto_field_name(style.proto_names)
        .use_enum_numbers(style.enum_numbers);
    String::from_utf8(super::super::encode(&msg, &options).unwrap()).unwrap()
}

fn direct(desc: &MessageDescriptor, bytes: &[u8], style: Style) -> Result<String, Fallback> {
    let mut out = b"before".to_vec();
    let written = write(desc, bytes, style, &mut out);
    if written.is_err() {
        assert_eq!(out, b"before", "a fallback leaves the output as it was");
    }
    written.map(|()| String::from_utf8(out[6..].to_vec()).unwrap())
}

fn encoded(json: &str) -> Vec<u8> {
    let mut de = serde_json::Deserializer::from_str(json);
    DynamicMessage::deserialize(thing(), &mut de)
        .unwrap_or_else(|e| panic!("{json}: {e}"))
        .encode_to_vec()
}

#[test]
fn every_scalar_kind_is_written_as_the_general_path_writes_it() {
    for json in [
        r#"{}"#,
        r#"{"name":"a \"quoted\"\nline, é and 😀 and \u0001","doubleValue":1.5,"floatValue":-0.25,
            "int32Value":-7,"int64Value":"-9007199254740993","uint32Value":4294967295,
            "uint64Value":"18446744073709551615","sint32Value":-2147483648,"sint64Value":"-9223372036854775808",
            "fixed32Value":4294967295,"fixed64Value":"18446744073709551615","sfixed32Value":-1,
            "sfixed64Value":"-9223372036854775807","boolValue":true,"bytesValue":"AAEC/w==","color":"RED",
            "tags":["x","","y"],"parent":{"name":"p","parent":{}},"person":"","note":""}"#,
        r#"{"doubleValue":"NaN","floatValue":"-Infinity","int32Value":2147483647,"color":7}"#,
        r#"{"doubleValue":1e300,"floatValue":3.4e38,"team":"t","bytesValue":"AQ=="}"#,
        r#"{"doubleValue":-0.0,"name":"","int32Value":0,"boolValue":false,"color":"COLOR_UNSPECIFIED"}"#,
        r#"{"parent":{"parent":{"parent":{"tags":["deep"]}}}}"#,
    ] {
        let bytes = encoded(json);
        for style in STYLES {
            assert_eq!(
                direct(&thing(), &bytes, style).unwrap(),
                general(&thing(), &bytes, style),
                "{json} {style:?}"
            );
        }
    }
}

#[test]
fn repeated_scalars_packed_or_not_read_alike() {
    let list = pool()
        .get_message_by_name("kinds.v1.ListThingsRequest")
        .unwrap();
    let colors = list.get_field_by_name("colors").unwrap().number() as u8;
    let packed = [colors << 3 | LEN, 3, 1, 2, 9];
    let unpacked = [colors << 3, 1, colors << 3, 2, colors << 3, 9];
    let mixed = [colors << 3 | LEN, 2, 1, 2, colors << 3, 9];
    for bytes in [&packed[..], &unpacked, &mixed] {
        for style in STYLES {
            assert_eq!(
                direct(&list, bytes, style).unwrap(),
                general(&list, bytes, style)
            );
        }
    }
    assert_eq!(
        direct(&list, &packed, STYLES[0]).unwrap(),
        r#"{"colors":["BLUE","RED",9]}"#
    );
    // An empty packed run is no element: the field is not written.
    assert_eq!(
        direct(&list, &[colors << 3 | LEN, 0], STYLES[0]).unwrap(),
        general(&list, &[colors << 3 | LEN, 0], STYLES[0])
    );
}

#[test]
fn what_the_general_path_would_reorder_merge_or_refuse_falls_back() {
    let thing = thing();
    let field = |name: &str, s: &str| {
        let n = thing.get_field_by_name(name).unwrap().number();
        let mut v = Vec::new();
        prost::encoding::encode_key(n, prost::encoding::WireType::LengthDelimited, &mut v);
        v.push(s.len() as u8);
        v.extend_from_slice(s.as_bytes());
        v
    };
    let style = STYLES[0];
    let ordered = [field("name", "a"), field("tags", "b"), field("tags", "c")].concat();
    assert_eq!(
        direct(&thing, &ordered, style).unwrap(),
        r#"{"name":"a","tags":["b","c"]}"#
    );
    for (what, bytes) in [
        (
            "out of order",
            [field("tags", "b"), field("name", "a")].concat(),
        ),
        (
            "a singular field twice",
            [field("name", "a"), field("name", "b")].concat(),
        ),
        (
            "a repeated field in two runs",
            [field("tags", "a"), field("person", "p"), field("tags", "b")].concat(),
        ),
        (
            "two members of a oneof",
            [field("person", "a"), field("team", "b")].concat(),
        ),
        ("a map", field("counts", "")),
        ("a well-known type", field("create_time", "")),
        ("invalid UTF-8", vec![1 << 3 | LEN, 1, 0xff]),
        ("a truncated record", vec![1 << 3 | LEN, 5, b'a']),
        ("the wrong wire type", vec![1 << 3 | I32, 0, 0, 0, 0]),
        ("an unknown field", vec![120, 1, 1]),
        ("a group", vec![1 << 3 | 3, 1 << 3 | 4]),
        (
            "an overlong varint",
            vec![
                4 << 3,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0x7f,
            ],
        ),
    ] {
        assert_eq!(direct(&thing, &bytes, style), Err(Fallback), "{what}");
    }
}

#[test]
fn a_well_known_type_as_the_whole_message_falls_back() {
    let timestamp = pool()
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    assert_eq!(direct(&timestamp, &[8, 1], STYLES[0]), Err(Fallback));
    let empty = pool().get_message_by_name("google.protobuf.Empty").unwrap();
    assert_eq!(direct(&empty, &[], STYLES[0]), Err(Fallback));
}

#[test]
fn nesting_past_the_limit_falls_back() {
    let thing = thing();
    let parent = thing.get_field_by_name("parent").unwrap().number() as u8;
    let mut bytes = Vec::new();
    for _ in 0..MAX_DEPTH + 1 {
        let mut outer = vec![parent << 3 | LEN];
        prost::encoding::encode_varint(bytes.len() as u64, &mut outer);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    assert_eq!(direct(&thing, &bytes, STYLES[0]), Err(Fallback));
}

#[test]
fn types_with_maps_or_well_known_types_anywhere_are_not_covered() {
    let p = pool();
    let covered = |name: &str| covers(&p.get_message_by_name(name).unwrap());
    assert!(
        covered("kinds.v1.Filter"),
        "scalars and a recursive message"
    );
    assert!(covered("kinds.v1.GetThingRequest"));
    assert!(!covered("kinds.v1.Thing"), "maps and well-known types");
    assert!(!covered("kinds.v1.ListThingsResponse"), "a Thing inside");
    assert!(!covered("google.protobuf.Empty"));
}

/// Mutated encodings (bytes flipped, cut, spliced): whatever the direct
/// writer accepts, the general path decodes and writes identically. The
/// `json_wire` fuzz target does the same with coverage guidance.
#[test]
fn whatever_is_written_directly_matches_the_general_path_under_mutation() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"name":"n","doubleValue":2.5,"int32Value":-3,"int64Value":"12","uint32Value":7,"sint32Value":-1,"sint64Value":"5","fixed32Value":3,"fixed64Value":"9","sfixed32Value":-4,"sfixed64Value":"-8","boolValue":true,"bytesValue":"AAE=","color":"BLUE","tags":["a","b"],"parent":{"name":"p","tags":["c"]},"person":"x","note":"y"}"#,
        r#"{"floatValue":1.25,"parent":{"parent":{"int64Value":"-1"}},"team":"t"}"#,
    ]
    .iter()
    .map(|j| encoded(j))
    .collect();
    let list = pool()
        .get_message_by_name("kinds.v1.ListThingsRequest")
        .unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut written = 0;
    for round in 0..20_000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..=(next() % 3) {
            let at = (next() as usize) % bytes.len().max(1);
            match next() % 4 {
                0 if !bytes.is_empty() => bytes[at] = next() as u8,
                1 => bytes.truncate(at),
                2 => bytes.insert(at.min(bytes.len()), next() as u8),
                _ => {
                    let other = &seeds[(next() as usize) % seeds.len()];
                    let from = (next() as usize) % other.len();
                    bytes.extend_from_slice(&other[from..]);
                }
            }
        }
        for desc in [thing(), list.clone()] {
            for style in STYLES {
                if let Ok(json) = direct(&desc, &bytes, style) {
                    let msg = DynamicMessage::decode(desc.clone(), &bytes[..]).unwrap_or_else(|e| {
                        panic!("{bytes:?} written directly as {json}, refused by the general path: {e}")
                    });
                    let options = SerializeOptions::new()
                        .stringify_64_bit_integers(true)
                        .use_proto_field_name(style.proto_names)
                        .use_enum_numbers(style.enum_numbers);
                    let general = super::super::encode(&msg, &options).unwrap();
                    assert_eq!(json, String::from_utf8(general).unwrap(), "{bytes:?}");
                    written += 1;
                }
            }
        }
    }
    assert!(
        written > 1000,
        "the mutations mostly stay writable ({written})"
    );
}
