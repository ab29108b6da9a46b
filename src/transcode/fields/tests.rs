use super::*;

#[test]
fn a_query_parameter_inside_a_oneof_member_never_clears_its_sibling() {
    let desc = crate::transcode::json::kinds_pool()
        .get_message_by_name("kinds.v1.Choice")
        .unwrap();
    let plain = resolve(&desc, "plain").unwrap();
    let inside = resolve(&desc, "filtered.text").unwrap();
    // Either order: the second is refused, the first kept.
    let mut msg = DynamicMessage::new(desc.clone());
    set(&mut msg, &plain, "p", "plain").unwrap();
    let err = set(&mut msg, &inside, "q", "filtered.text").unwrap_err();
    assert!(
        err.message.contains("another member of oneof pick"),
        "{}",
        err.message
    );
    assert_eq!(msg.get_field_by_name("plain").unwrap().as_str(), Some("p"));
    let mut msg = DynamicMessage::new(desc.clone());
    set(&mut msg, &inside, "q", "filtered.text").unwrap();
    let err = set(&mut msg, &plain, "p", "plain").unwrap_err();
    assert!(
        err.message.contains("another member of oneof pick"),
        "{}",
        err.message
    );
    // The same member twice is no conflict.
    let nested = resolve(&desc, "filtered.nested.text").unwrap();
    set(&mut msg, &nested, "r", "filtered.nested.text").unwrap();
}

#[test]
fn a_value_takes_finite_numbers_only() {
    let value = crate::transcode::json::kinds_pool()
        .get_message_by_name("google.protobuf.Value")
        .unwrap();
    let number = resolve(&value, "numberValue").unwrap();
    let mut msg = DynamicMessage::new(value.clone());
    set(&mut msg, &number, "1.5", "v.numberValue").unwrap();
    for not_finite in ["NaN", "Infinity", "-Infinity"] {
        let err = set(&mut msg, &number, not_finite, "v.numberValue").unwrap_err();
        assert!(
            err.message.contains("not a finite number"),
            "{}",
            err.message
        );
    }
}

#[test]
fn fields_the_query_cannot_reach_are_named_with_the_reason() {
    let pool = crate::transcode::json::kinds_pool();
    let thing = pool.get_message_by_name("kinds.v1.Thing").unwrap();
    let list = pool
        .get_message_by_name("kinds.v1.ListThingsResponse")
        .unwrap();
    for (desc, key, says) in [
        (
            &list,
            "things.name",
            "goes through things, a list of messages (kinds.v1.Thing)",
        ),
        (&thing, "counts.a", "goes through counts, a map field"),
        (
            &thing,
            "attributes.a",
            "goes through attributes, a google.protobuf.Struct",
        ),
        (
            &thing,
            "parent.children.x",
            "goes through parent.children, a map field",
        ),
    ] {
        assert!(resolve(desc, key).is_none(), "{key}");
        let why = unreachable_through(desc, key).unwrap_or_default();
        assert!(why.starts_with(says), "{key}: {why}");
    }
    assert_eq!(unreachable_through(&thing, "nothing.a"), None);
    for (desc, key, says) in [
        (
            &list,
            "things",
            "is a list of messages (kinds.v1.Thing), which cannot be set",
        ),
        (
            &thing,
            "attributes",
            "is a google.protobuf.Struct, which cannot be set",
        ),
        (
            &thing,
            "list",
            "is a google.protobuf.ListValue, which cannot be set",
        ),
    ] {
        let fields = resolve(desc, key).unwrap();
        let mut msg = DynamicMessage::new(desc.clone());
        let err = set(&mut msg, &fields, "x", key).unwrap_err();
        assert!(err.message.contains(says), "{key}: {}", err.message);
    }
}

#[test]
fn a_null_value_parameter_takes_its_one_value_only() {
    let desc = crate::transcode::json::kinds_pool()
        .get_message_by_name("kinds.v1.ListThingsRequest")
        .unwrap();
    let nothing = resolve(&desc, "nothing").unwrap();
    let mut msg = DynamicMessage::new(desc.clone());
    set(&mut msg, &nothing, "NULL_VALUE", "nothing").unwrap();
    set(&mut msg, &nothing, "0", "nothing").unwrap();
    for other in ["1", "-1", "2147483647"] {
        let err = set(&mut msg, &nothing, other, "nothing").unwrap_err();
        assert!(
            err.message
                .contains("is not a value of enum google.protobuf.NullValue"),
            "{other}: {}",
            err.message
        );
    }
}

#[test]
fn a_key_that_names_no_field_is_said_of_the_message_where_it_stops() {
    let pool = crate::fuzzing::demo_pool();
    let search = pool
        .get_message_by_name("portico.demo.v1.SearchBooksRequest")
        .unwrap();
    assert_eq!(
        not_a_field(&search, "colour"),
        "is not a field of portico.demo.v1.SearchBooksRequest"
    );
    assert_eq!(
        not_a_field(&search, "filter.nope"),
        "is not a field: filter is a portico.demo.v1.SearchFilter, which has no field nope"
    );
    assert_eq!(
        not_a_field(&search, "query.x"),
        "is not a field: query is a string, which has no fields"
    );
    assert_eq!(
        not_a_field(&search, "publishedAfter.seconds"),
        "is not a field: publishedAfter is a google.protobuf.Timestamp, set as a whole (publishedAfter=...)"
    );
    // grpc-gateway's form for a map entry, named for the map it meant.
    let create = pool
        .get_message_by_name("portico.demo.v1.CreateBookRequest")
        .unwrap();
    assert_eq!(
        not_a_field(&create, "book.labels[shelf]"),
        "is not a field: book.labels is a map field, which cannot be set from the query string (book.labels[key]=value is not read)"
    );
}

#[test]
fn a_value_from_the_query_is_set_by_one_of_its_kinds() {
    let thing = crate::transcode::json::kinds_pool()
        .get_message_by_name("kinds.v1.Thing")
        .unwrap();
    let whole = resolve(&thing, "extra").unwrap();
    let err = set(
        &mut DynamicMessage::new(thing.clone()),
        &whole,
        "1",
        "extra",
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("set one of its kinds, as NAME.stringValue="),
        "{}",
        err.message
    );
    let kind = resolve(&thing, "extra.stringValue").unwrap();
    let mut msg = DynamicMessage::new(thing.clone());
    set(&mut msg, &kind, "a", "extra.stringValue").unwrap();
}
