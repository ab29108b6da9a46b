use super::*;

#[test]
fn json_v1_frames_parse_to_exactly_one_signal() {
    let f = parse_text(
        Dialect::Json,
        r#"{"id":"a","message":{"end":true,"open":"x"}}"#,
    )
    .unwrap();
    // A message whose fields are named like signals stays a message.
    assert!(
        matches!(f, ClientFrame::Message { ref id, body: Body::Json(ref b) } if id == "a" && &b[..] == br#"{"end":true,"open":"x"}"#)
    );
    assert_eq!(
        parse_text(Dialect::Json, r#"{"id":"a","end":true}"#).unwrap(),
        ClientFrame::End { id: "a".into() }
    );
    assert_eq!(
        parse_text(Dialect::Json, r#"{"cancel":true}"#).unwrap(),
        ClientFrame::Cancel { id: String::new() }
    );
    let open = parse_text(
        Dialect::Json,
        r#"{"id":"s","open":"/p.S/M","metadata":{"x-a":"1"}}"#,
    )
    .unwrap();
    assert!(
        matches!(open, ClientFrame::Open { ref method, ref metadata, message: None, .. } if method == "/p.S/M" && metadata == &[("x-a".to_owned(), "1".to_owned())])
    );
}

#[test]
fn ambiguous_or_malformed_json_v1_frames_are_refused_naming_the_call() {
    let e = parse_text(Dialect::Json, r#"{"id":"b","message":{},"end":true}"#).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("b"));
    let e = parse_text(Dialect::Json, r#"{"id":"c","seq":1}"#).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("c"));
    assert!(parse_text(Dialect::Json, "{not json")
        .unwrap_err()
        .id
        .is_none());
}

#[test]
fn a_null_message_opens_a_call_without_one_and_is_refused_as_a_message() {
    let open = parse_text(
        Dialect::Json,
        r#"{"id":"n","open":"/p.S/M","message":null}"#,
    )
    .unwrap();
    assert!(
        matches!(open, ClientFrame::Open { message: None, .. }),
        "{open:?}"
    );
    let e = parse_text(Dialect::Json, r#"{"id":"n","message":null}"#).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("n"));
    assert!(
        e.error.message.contains("`message` is null") && e.error.message.contains("`{}`"),
        "{}",
        e.error.message
    );
    // An empty message is a message.
    let empty = parse_text(Dialect::Json, r#"{"id":"n","message":{}}"#).unwrap();
    assert!(
        matches!(empty, ClientFrame::Message { body: Body::Json(ref b), .. } if &b[..] == b"{}")
    );
}

#[test]
fn a_metadata_value_that_is_not_a_string_is_refused_naming_its_entry() {
    let e = parse_text(
        Dialect::Json,
        r#"{"id":"m","open":"/a.B/C","metadata":{"x-num":5}}"#,
    )
    .unwrap_err();
    assert_eq!(e.id.as_deref(), Some("m"));
    assert!(
        e.error.message.contains("metadata.x-num") && e.error.message.contains("string"),
        "{}",
        e.error.message
    );
}

#[test]
fn metadata_is_read_in_the_order_written_and_a_deep_value_is_named_not_built() {
    let open = parse_text(
        Dialect::Json,
        r#"{"id":"o","open":"/a.B/C","metadata":{"x-b":"1","X-B":"2","a":"3","X-b":"4"}}"#,
    )
    .unwrap();
    let ClientFrame::Open { metadata, .. } = open else {
        panic!("{open:?}")
    };
    let names: Vec<_> = metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(names, ["x-b=1", "X-B=2", "a=3", "X-b=4"]);
    // One spelling twice: JSON readers differ on which counts.
    let e = parse_text(
        Dialect::Json,
        r#"{"id":"t","open":"/a.B/C","metadata":{"x-b":"1","x-b":"2"}}"#,
    )
    .unwrap_err();
    assert_eq!(e.id.as_deref(), Some("t"));
    assert!(
        e.error
            .message
            .contains("metadata.x-b: the key is given more than once"),
        "{}",
        e.error.message
    );
    // A number is named by its kind, whatever its size.
    for number in ["1e400", "1e300", "-0.5", "18446744073709551616"] {
        let frame = format!(r#"{{"id":"n","open":"/a.B/C","metadata":{{"x-n":{number}}}}}"#);
        let e = parse_text(Dialect::Json, &frame).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("n"), "{number}");
        assert_eq!(
            e.error.message,
            "invalid value for metadata.x-n: is a number: a metadata value is a string",
            "{number}"
        );
    }
    let deep = format!(
        r#"{{"id":"d","open":"/a.B/C","metadata":{{"x-deep":{}1{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let e = parse_text(Dialect::Json, &deep).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("d"));
    assert_eq!(
        e.error.message,
        "invalid value for metadata.x-deep: is an array: a metadata value is a string",
        "{}",
        e.error.message
    );
}

#[test]
fn plain_frames_are_bare_messages_and_an_empty_frame_ends_input() {
    assert_eq!(
        parse_text(Dialect::Plain, "").unwrap(),
        ClientFrame::End { id: String::new() }
    );
    // A blank line is neither an end nor the empty message: it is refused.
    let blank = parse_text(Dialect::Plain, " \n ").unwrap_err();
    assert!(
        blank.error.message.contains("only whitespace"),
        "{}",
        blank.error.message
    );
    assert!(matches!(
        parse_text(Dialect::Plain, r#"{"seq":1}"#).unwrap(),
        ClientFrame::Message { .. }
    ));
}

#[test]
fn server_frames_wrap_messages_and_carry_the_id() {
    let out = render(
        Dialect::Json,
        "q",
        ServerFrame::Message(bytes::Bytes::from_static(b"{\"a\":1}")),
    )
    .unwrap();
    assert_eq!(out, Out::Text(r#"{"id":"q","result":{"a":1}}"#.into()));
    let quoted = render(
        Dialect::Json,
        "a\"b",
        ServerFrame::Message(bytes::Bytes::from_static(b"[]")),
    );
    assert_eq!(
        quoted,
        Some(Out::Text(r#"{"id":"a\"b","result":[]}"#.into()))
    );
    let plain = render(
        Dialect::Plain,
        "q",
        ServerFrame::Message(bytes::Bytes::from_static(b"{}")),
    );
    assert_eq!(plain, Some(Out::Text(r#"{"result":{}}"#.into())));
    let status = serde_json::json!({"code": 0, "message": "", "details": []});
    let trailers = serde_json::Map::new();
    let out = render(
        Dialect::Json,
        "",
        ServerFrame::Status {
            status: &status,
            trailers: &trailers,
        },
    )
    .unwrap();
    assert_eq!(
        out,
        Out::Text(r#"{"status":{"code":0,"message":"","details":[]},"trailers":{}}"#.into())
    );
    assert_eq!(
        render(
            Dialect::Plain,
            "",
            ServerFrame::Status {
                status: &status,
                trailers: &trailers
            }
        ),
        None
    );
    use crate::error::WsClose;
    assert_eq!(WsClose::CallEnded(tonic::Code::Ok).code(), 1000);
    assert_eq!(WsClose::CallEnded(tonic::Code::NotFound).code(), 4005);
    let cut = close_reason(&"é".repeat(100));
    assert!(cut.len() <= 123 && cut.ends_with('…'), "{cut}");
    let short = "no such shelf: 9";
    assert_eq!(close_reason(short), short);
    let words = "the backend said that the shelf you asked for is not one it has, and that it will not have it later either, whatever you ask";
    let cut = close_reason(words);
    assert!(cut.len() <= 123, "{cut}");
    let kept = cut.trim_end_matches('…');
    assert!(words.starts_with(kept), "{cut}");
    assert_eq!(
        words.as_bytes()[kept.len()],
        b' ',
        "cut after a whole word: {cut}"
    );
    let unbroken = "x".repeat(200);
    assert_eq!(close_reason(&unbroken), format!("{}…", "x".repeat(120)));
}

#[test]
fn a_bad_proto_v1_control_frame_names_its_own_keys_not_the_json_dialects() {
    let e = parse_text(Dialect::Proto, r#"{"id":"p","opn":"/a.B/C"}"#).unwrap_err();
    assert_eq!(e.id.as_deref(), Some("p"));
    let said = e.error.to_string();
    assert!(said.contains("unknown field `opn`"), "{said}");
    // Its sessions are one call opened by the path: no `open`, no `message`.
    let keys = r#"control frame is {"end":true} or {"cancel":true}"#;
    assert!(said.contains(keys), "{said}");
    assert!(
        !said.contains("`message`") && !said.contains("open"),
        "{said}"
    );
    let e = parse_text(Dialect::Proto, r#"{"id":"q"}"#).unwrap_err();
    let said = e.error.to_string();
    assert!(said.contains(keys), "{said}");
    // The JSON dialect's own message still lists its keys.
    let e = parse_text(Dialect::Json, r#"{"id":"j","opn":"/a.B/C"}"#).unwrap_err();
    assert!(e.error.to_string().contains("`message`"));
}

#[test]
fn an_empty_or_null_id_names_no_call_and_is_refused() {
    // Whether the frame may have held some call's message decides whether
    // the calls taking input end with it.
    for (text, may_hold_message) in [
        (r#"{"id":"","message":{"user":"a"}}"#, true),
        (r#"{"id":null,"message":{"user":"a"}}"#, true),
        (r#"{"id":"","end":true}"#, false),
        (r#"{"id":null,"open":"/a.B/C","message":{}}"#, false),
    ] {
        let e = parse_text(Dialect::Json, text).unwrap_err();
        assert!(
            e.error.message.contains("`id` is empty or null"),
            "{text}: {}",
            e.error.message
        );
        assert_eq!(e.id, None, "{text}");
        assert_eq!(e.may_hold_message, may_hold_message, "{text}");
    }
    // Left out, it is the single-call session's frame.
    assert!(parse_text(Dialect::Json, r#"{"message":{"user":"a"}}"#).is_ok());
}
