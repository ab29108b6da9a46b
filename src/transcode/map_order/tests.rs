use super::*;
use prost_reflect::DynamicMessage;

fn thing() -> MessageDescriptor {
    crate::transcode::json::kinds_pool()
        .get_message_by_name("kinds.v1.Thing")
        .unwrap()
}

/// An entry of `counts` (map<string, int32>, field 18).
fn count(key: &str, value: u8) -> Vec<u8> {
    let mut entry = vec![0x0a, key.len() as u8];
    entry.extend_from_slice(key.as_bytes());
    entry.extend_from_slice(&[0x10, value]);
    let mut out = vec![0x92, 0x01, entry.len() as u8];
    out.extend_from_slice(&entry);
    out
}

/// An entry of `children` (map<int64, Thing>, field 19) with a name.
fn child(key: i64, name: &str) -> Vec<u8> {
    let mut entry = vec![0x08];
    encode_varint(key as u64, &mut entry);
    let mut thing = vec![0x0a, name.len() as u8];
    thing.extend_from_slice(name.as_bytes());
    entry.push(0x12);
    entry.push(thing.len() as u8);
    entry.extend_from_slice(&thing);
    let mut out = vec![0x9a, 0x01, entry.len() as u8];
    out.extend_from_slice(&entry);
    out
}

#[test]
fn one_json_object_is_one_byte_string_however_often_it_is_encoded() {
    let json = r#"{"name":"n","counts":{"b":1,"a":2,"10":3,"9":4,"B":5,"c":6,"d":7},
        "children":{"10":{"name":"ten","counts":{"z":1,"y":2,"x":3}},"-3":{"name":"minus"},
                    "9":{"name":"nine"},"100":{}},
        "attributes":{"z":1,"a":{"y":1,"b":2},"m":[1,{"q":1,"p":2}]},
        "details":{"@type":"type.googleapis.com/google.protobuf.Struct",
                   "value":{"k":1,"j":2,"i":3,"h":4}}}"#;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let msg =
            crate::transcode::json::decode(&thing(), json.as_bytes(), &Default::default()).unwrap();
        let bytes = sorted_or_same(&thing(), msg.encode_to_vec());
        // The same message, entries moved only: the same JSON (an `Any`'s
        // bytes are compared as bytes, so not the messages themselves).
        let back = DynamicMessage::decode(thing(), bytes.as_slice()).unwrap();
        let options = crate::transcode::json::serialize_options(&Default::default());
        let json_of = |m: &DynamicMessage| crate::transcode::json::encode(m, &options).unwrap();
        assert_eq!(
            String::from_utf8(json_of(&back)).unwrap(),
            String::from_utf8(json_of(&msg)).unwrap()
        );
        seen.insert(bytes);
    }
    assert_eq!(seen.len(), 1, "{} encodings of one object", seen.len());
    // Sorted once is sorted.
    assert_eq!(sorted(&thing(), seen.iter().next().unwrap()), None);
}

#[test]
fn keys_sort_by_value_for_integers_and_by_bytes_for_strings_in_the_places_entries_held() {
    // name, then counts out of order around a tag, then children.
    let mut bytes = vec![0x0a, 0x01, b'n'];
    bytes.extend(count("b", 1));
    bytes.extend([0x20, 0x07]); // int32_value, between two entries
    bytes.extend(count("B", 2));
    bytes.extend(count("10", 3));
    bytes.extend(count("9", 4));
    bytes.extend(child(10, "ten"));
    bytes.extend(child(-3, "minus"));
    bytes.extend(child(9, "nine"));
    let mut expected = vec![0x0a, 0x01, b'n'];
    expected.extend(count("10", 3));
    expected.extend([0x20, 0x07]);
    expected.extend(count("9", 4));
    expected.extend(count("B", 2));
    expected.extend(count("b", 1));
    expected.extend(child(-3, "minus"));
    expected.extend(child(9, "nine"));
    expected.extend(child(10, "ten"));
    assert_eq!(sorted(&thing(), &bytes), Some(expected));
}

#[test]
fn entries_with_one_key_keep_their_order_so_the_last_still_wins() {
    let mut bytes = count("b", 1);
    bytes.extend(count("a", 2));
    bytes.extend(count("b", 3));
    let mut expected = count("a", 2);
    expected.extend(count("b", 1));
    expected.extend(count("b", 3));
    assert_eq!(sorted(&thing(), &bytes), Some(expected.clone()));
    let msg = DynamicMessage::decode(thing(), expected.as_slice()).unwrap();
    let counts = msg.get_field_by_name("counts").unwrap();
    let b = counts.as_map().unwrap()[&prost_reflect::MapKey::String("b".into())].clone();
    assert_eq!(b, prost_reflect::Value::I32(3));
}

#[test]
fn bytes_that_are_no_message_are_left_alone_and_nothing_panics() {
    let mut deep = Vec::new();
    for _ in 0..200 {
        // parent = 20, nested as deep as it goes.
        let mut outer = vec![0xa2, 0x01];
        encode_varint(deep.len() as u64, &mut outer);
        outer.extend_from_slice(&deep);
        deep = outer;
    }
    for bytes in [
        &b"\x92\x01\x7f"[..],         // a length past the end
        &b"\x0b"[..],                 // a group's start
        &b"\x92\x01\x02\x0a\x05"[..], // an entry whose key runs off its end
        &deep[..],
        &[][..],
    ] {
        assert_eq!(sorted(&thing(), bytes), None, "{bytes:?}");
    }
    // A message with no map, whatever its bytes, needs no pass.
    let kinds = crate::transcode::json::kinds_pool();
    let timestamp = kinds
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    assert!(!can_hold_maps(&timestamp));
    assert!(can_hold_maps(&thing()));
}

/// A message with maps keyed by `bool` and `int32`, compiled here.
fn keyed() -> MessageDescriptor {
    let dir = crate::scratch::ScratchDir::new("map-order");
    std::fs::write(
        dir.join("keyed.proto"),
        "syntax = \"proto3\";\npackage keyed;\nmessage Keyed {\n  map<bool, string> flags = 1;\n  map<int32, string> small = 2;\n}\n",
    )
    .unwrap();
    let set = crate::descriptors::compile_protos(&[&dir], &["keyed.proto".to_owned()]).unwrap();
    let mut pool = prost_reflect::DescriptorPool::new();
    crate::descriptors::add_set(&mut pool, &set, "keyed.proto").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    pool.get_message_by_name("keyed.Keyed").unwrap()
}

/// An entry of field `number` with a varint key written as `key` (raw,
/// any width) and a one-letter value.
fn entry(number: u8, key: &[u8], value: u8) -> Vec<u8> {
    let mut e = vec![0x08];
    e.extend_from_slice(key);
    e.extend_from_slice(&[0x12, 0x01, value]);
    let mut out = vec![(number << 3) | 2, e.len() as u8];
    out.extend(e);
    out
}

/// Keys are compared as the backend's decoder reads them: a `bool` of 2
/// is `true`, an `int32` of 2^32 - 1 in five bytes is -1. Two entries it
/// reads as one key keep their order, so the same one still wins.
#[test]
fn keys_the_decoder_reads_as_one_keep_their_order() {
    let desc = keyed();
    // true (as 2), then true (as 1): one key, already in order.
    let mut flags = entry(1, &[0x02], b'a');
    flags.extend(entry(1, &[0x01], b'b'));
    assert_eq!(sorted(&desc, &flags), None);
    // -1 as five bytes, then -1 as ten: one key.
    let mut small = entry(2, &[0xff, 0xff, 0xff, 0xff, 0x0f], b'a');
    small.extend(entry(
        2,
        &[0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>(),
        b'b',
    ));
    assert_eq!(sorted(&desc, &small), None);
    // And a real order: 5 before -1 becomes -1 first.
    let mut two = entry(2, &[0x05], b'a');
    two.extend(entry(2, &[0xff, 0xff, 0xff, 0xff, 0x0f], b'b'));
    let mut expected = entry(2, &[0xff, 0xff, 0xff, 0xff, 0x0f], b'b');
    expected.extend(entry(2, &[0x05], b'a'));
    assert_eq!(sorted(&desc, &two), Some(expected));
}

/// Bytes a client sent are sorted only within a budget: a message of more
/// records than it allows is left as it came (its cache key its bytes).
#[test]
fn a_message_past_the_budget_is_left_as_it_came() {
    let desc = keyed();
    let mut many = Vec::new();
    for i in 0..(MAX_RECORDS as u32 / 2 + 10) {
        // Descending keys, each entry counting three records.
        let mut key = Vec::new();
        encode_varint(u64::from(1_000_000 - i), &mut key);
        many.extend(entry(2, &key, b'x'));
    }
    assert_eq!(sorted(&desc, &many), None);
    let few: Vec<u8> = (0..100u8)
        .rev()
        .flat_map(|k| entry(2, &[k], b'x'))
        .collect();
    assert!(sorted(&desc, &few).is_some(), "within the budget, sorted");
}
