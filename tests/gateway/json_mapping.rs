//! Proto3 JSON mapping: conformant output, both field names on input,
//! strict by default with the offending field named, and the options.

use crate::support;
use support::RouteKeys;

use http::{Method, StatusCode};
use support::Harness;

const CREATE: &str = "/v1/shelves/1/books";

#[tokio::test]
async fn output_is_lower_camel_case_with_int64_as_strings_and_defaults_omitted() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/shelves/2/books/1").await;
    let book = r.json();
    assert_eq!(book["pages"], "511");
    assert_eq!(book["genre"], "GENRE_HISTORY");
    assert_eq!(book["published"], "1970-01-01T00:00:00Z");
    assert!(
        book.get("archived").is_none(),
        "false is a default and is omitted: {book}"
    );
    assert!(book.get("labels").is_none());
}

#[tokio::test]
async fn input_accepts_proto_and_json_names_and_wkt_forms() {
    let h = Harness::start().await;
    let body = r#"{"title":"T","author":"A","genre":3,"pages":12,"published":"2001-02-03T04:05:06.5Z","labels":{"k":"v"},"isbn":"978"}"#;
    let r = h
        .client
        .json(Method::POST, &format!("{CREATE}?book_id=x1"), body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let b = r.json();
    assert_eq!(b["genre"], "GENRE_SCIENCE");
    assert_eq!(b["published"], "2001-02-03T04:05:06.500Z");
    assert_eq!(b["labels"]["k"], "v");
    assert_eq!(b["isbn"], "978");
}

#[tokio::test]
async fn an_unknown_field_is_a_400_naming_it_and_the_backend_is_not_called() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(Method::POST, CREATE, r#"{"title":"T","colour":"red"}"#)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.violated_field(), "book.colour");
    assert_eq!(r.json()["code"], 3);
    assert_eq!(
        r.json()["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(
        h.client.get("/v1/shelves/1").await.json()["bookCount"],
        2,
        "nothing was created"
    );
}

#[tokio::test]
async fn bad_enum_names_wrong_types_and_second_oneof_members_are_named() {
    let h = Harness::start().await;
    for (body, field) in [
        (r#"{"title":"T","genre":"GENRE_POETRY"}"#, "book.genre"),
        (r#"{"title":"T","pages":"many"}"#, "book.pages"),
        (r#"{"title":["T"]}"#, "book.title"),
        (r#"{"title":"T","isbn":"1","url":"u"}"#, "book.identifier"),
        (r#"{"title":"T","published":"soon"}"#, "book.published"),
    ] {
        let r = h.client.json(Method::POST, CREATE, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.violated_field(), field, "{body}: {}", r.text());
    }
    let r = h
        .client
        .json(
            Method::POST,
            "/v1/books:search",
            r#"{"filter":{"minRating":"x"}}"#,
        )
        .await;
    assert_eq!(r.violated_field(), "filter.minRating");
}

/// A field given twice in a JSON body is read last-wins, by either of its
/// names and at any depth, on REST and Connect alike: a later `null`
/// clears it, and one oneof member given twice is that member.
#[tokio::test]
async fn a_field_given_twice_in_a_body_is_read_last_wins_on_every_json_protocol() {
    let h = Harness::start().await;
    let connect = [
        ("content-type", "application/json"),
        ("connect-protocol-version", "1"),
    ];
    // (the book's JSON, a field of the created book and its value)
    let cases = [
        (
            r#"{"title":"a","title":"b"}"#,
            "title",
            serde_json::json!("b"),
        ),
        (
            r#"{"title":"T","isbn":"1","isbn":"2"}"#,
            "isbn",
            serde_json::json!("2"),
        ),
        (
            r#"{"title":"T","author":"A","author":null}"#,
            "author",
            serde_json::Value::Null,
        ),
        (
            r#"{"title":"T","labels":{"k":"v"},"labels":null}"#,
            "labels",
            serde_json::Value::Null,
        ),
        (
            r#"{"title":"T","archived":true,"archived":false}"#,
            "archived",
            serde_json::Value::Null,
        ),
    ];
    for (book, field, want) in cases {
        let r = h.client.json(Method::POST, CREATE, book).await;
        assert_eq!(r.status, StatusCode::CREATED, "REST {book}: {}", r.text());
        assert_eq!(
            r.json().get(field).cloned().unwrap_or_default(),
            want,
            "REST {book}"
        );
        let body = format!(r#"{{"parent":"shelves/1","book":{book},"book":{book}}}"#);
        let r = h
            .client
            .send(
                Method::POST,
                "/portico.demo.v1.Library/CreateBook",
                &connect,
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "Connect {body}: {}", r.text());
        assert_eq!(
            r.json().get(field).cloned().unwrap_or_default(),
            want,
            "Connect {body}"
        );
    }
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let h = Harness::start().await;
    for body in [
        r#"{"title":"#,
        "not json",
        r#"{"title":"T"} trailing"#,
        "[]",
    ] {
        let r = h.client.json(Method::POST, CREATE, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json()["code"], 3);
    }
    // A body of the wrong shape, or with a byte order mark, is said so.
    for (path, body, says) in [
        (CREATE, "[]", "invalid value for book: the body is an array, but a portico.demo.v1.Book is written as a JSON object"),
        ("/v1/books:search", "\"q\"", "the body is a string, but a portico.demo.v1.SearchBooksRequest is written as a JSON object"),
        ("/v1/books:search", "\u{feff}{}", "the body starts with a byte order mark (EF BB BF)"),
        (CREATE, "true", "the body is a boolean"),
        (CREATE, "12", "the body is a number"),
        // Only a value that is whole JSON is named by its kind: a form
        // body (`curl -d title=x`) or a stray word is malformed JSON.
        (CREATE, "title=x", "the JSON is malformed"),
        (CREATE, "tru", "the JSON is malformed"),
        ("/v1/books:search", "12abc", "the JSON is malformed"),
        ("/v1/books:search", "-", "the JSON is malformed"),
        ("/v1/books:search", "[1,", "the JSON is malformed"),
        // The parser's "unexpected end of hex escape", in words.
        (CREATE, r#"{"title":"\ud800"}"#, "the JSON is malformed: a \\u escape before line 1 column 17 is half of a UTF-16 surrogate pair without its other half"),
    ] {
        let r = h.client.json(Method::POST, path, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(says), "{body}: {message}");
    }
    // Latin-1 is no JSON, whatever the label says.
    let r = h
        .client
        .send(
            Method::POST,
            CREATE,
            &[("content-type", "application/json; charset=ISO-8859-1")],
            b"{\"title\":\"Caf\xe9\"}".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("the JSON is malformed"), "{}", r.text());
    // Not JSON at all: the body (here the book) is named, never a made-up
    // member of it.
    for (path, body, field) in [(CREATE, "{bad", "book"), ("/v1/books:search", "{bad", "")] {
        let r = h.client.json(Method::POST, path, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.violated_field(), field, "{}", r.text());
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("the JSON is malformed: key must be a string at line 1 column 2"),
            "{}",
            r.text()
        );
    }
}

/// Well-formed JSON the gateway will not read says why: a number past any
/// double is named at its field (nesting past 127 levels: a unit test in
/// transcode::json, as no demo message nests).
#[tokio::test]
async fn a_number_out_of_range_names_its_field() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(
            Method::POST,
            "/v1/books:search",
            r#"{"query":"q","minScore":1e400}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.violated_field(), "minScore", "{}", r.text());
    assert!(r.text().contains("out of range"), "{}", r.text());
}

#[tokio::test]
async fn a_body_of_another_media_type_is_a_415() {
    let h = Harness::start().await;
    let r = h
        .client
        .send(
            Method::POST,
            CREATE,
            &[("content-type", "application/xml")],
            "<book/>",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn relaxed_parsing_drops_unknown_fields_when_configured() {
    let h = Harness::start_with("[json]\nreject_unknown_fields = false\n", "").await;
    let r = h
        .client
        .json(
            Method::POST,
            CREATE,
            r#"{"title":"T","colour":"red","genre":"GENRE_POETRY"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

#[tokio::test]
async fn output_options_apply_globally_and_per_route() {
    let h = Harness::start_with(
        "[json]\nemit_unpopulated = true\n",
        "json = { use_proto_names = true, enums_as_numbers = true }",
    )
    .await;
    let b = h.client.get("/v1/shelves/2/books/1").await.json();
    assert_eq!(b["genre"], 2);
    assert_eq!(b["archived"], false);
    assert!(b.get("labels").is_some());
    assert!(b.get("published").is_some());
    let shelf = h.client.get("/v1/shelves/1").await.json();
    assert_eq!(shelf["book_count"], 2);
}

/// Proto3 JSON writes a non-finite double or float as a string, the wrapper
/// types included, wherever the gateway writes JSON: a REST reply, a Connect
/// JSON reply and a WebSocket message.
#[tokio::test]
async fn non_finite_wrapped_floats_are_written_as_the_spec_strings_on_every_json_protocol() {
    use futures_util::StreamExt;
    let h = Harness::start().await;
    let expect = |received: &serde_json::Value, how: &str| {
        assert_eq!(received["maxScore"], "NaN", "{how}: {received}");
        assert_eq!(received["maxWeight"], "-Infinity", "{how}: {received}");
        assert_eq!(received["minScore"], "Infinity", "{how}: {received}");
    };
    let query = "maxScore=NaN&maxWeight=-Infinity&minScore=Infinity";

    let r = h.client.get(&format!("/v1/books:search?{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    expect(&r.json()["received"], "REST");

    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Library/SearchBooks",
            &[
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            r#"{"maxScore":"NaN","maxWeight":"-Infinity","minScore":"Infinity"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    expect(&r.json()["received"], "Connect");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/books:search?{query}",
        h.gateway.addr
    ))
    .await
    .expect("the handshake succeeds");
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("a message in time")
        .expect("a message")
        .expect("a frame");
    let m: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    expect(&m["result"]["received"], "WebSocket");
}

#[tokio::test]
async fn numbers_reach_the_backend_exactly_or_are_refused_on_every_json_protocol() {
    use support::protocols::{call_json, Protocol};
    let h = Harness::start().await;
    let search = |protocol, body: &'static str| {
        call_json(
            &h.client,
            protocol,
            "/portico.demo.v1.Library/SearchBooks",
            body,
        )
    };
    for protocol in [Protocol::Rest, Protocol::Connect, Protocol::WebSocket] {
        // An exponent, and an integer past 2^53: exact, not through a double.
        // The largest float as written by JSON encoders reads back as itself.
        let seen = search(
            protocol,
            r#"{"minPages":1e18,"maxPages":9.223372036854775807e18,"weight":3.4028235e38}"#,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.json);
        let received = &seen.json["received"];
        assert_eq!(received["minPages"], "1000000000000000000", "{protocol:?}");
        assert_eq!(received["maxPages"], "9223372036854775807", "{protocol:?}");
        assert_eq!(
            received["weight"].as_f64().map(|w| w as f32),
            Some(f32::MAX),
            "{protocol:?}"
        );
        // The non-finite spellings in quotes, and the largest float in
        // quotes, are read as written.
        let seen = search(
            protocol,
            r#"{"minScore":"Infinity","maxScore":"NaN","weight":"3.4028235e38"}"#,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.json);
        let received = &seen.json["received"];
        assert_eq!(received["minScore"], "Infinity", "{protocol:?}");
        assert_eq!(received["maxScore"], "NaN", "{protocol:?}");
        assert_eq!(
            received["weight"].as_f64().map(|w| w as f32),
            Some(f32::MAX),
            "{protocol:?}"
        );
        // Past the field's range, or not an integer: refused, never clamped.
        for (body, named) in [
            (
                r#"{"minPages":-9223372036854775809}"#,
                "out of range for int64",
            ),
            (
                r#"{"maxPages":18446744073709551616}"#,
                "out of range for uint64",
            ),
            (r#"{"minPages":9007199254740993.5}"#, "is not an integer"),
            // In quotes too: a float or double past its range is not read
            // as an infinity, and an integer's fault is said in words.
            (
                r#"{"weight":"3.5e38"}"#,
                r#"weight: "3.5e38" is out of range for a float"#,
            ),
            (
                r#"{"minScore":"-1e400"}"#,
                r#"minScore: "-1e400" is out of range for a double"#,
            ),
            (
                r#"{"offset":2147483648}"#,
                "offset: 2147483648 is out of range for sint32",
            ),
            (
                r#"{"minPages":"9223372036854775808"}"#,
                r#"minPages: "9223372036854775808" is out of range for int64"#,
            ),
            (
                r#"{"minPages":"1e3"}"#,
                r#"minPages: "1e3" is not an integer: int64 in quotes is plain decimal digits"#,
            ),
        ] {
            let seen = search(protocol, body).await;
            assert_eq!(
                seen.code, 3,
                "{protocol:?} {body}: INVALID_ARGUMENT, {}",
                seen.json
            );
            assert!(
                seen.message.contains(named),
                "{protocol:?} {body}: {}",
                seen.message
            );
        }
    }
    // A query parameter reads the largest float as written, too.
    let r = h
        .client
        .get("/v1/books:search?weight=3.4028235e%2B38")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["received"]["weight"].as_f64().map(|w| w as f32),
        Some(f32::MAX)
    );
}

#[tokio::test]
async fn a_wrapper_body_field_reads_null_as_unset_like_a_scalar() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys(
            "Library",
            "\
             http_rules.SearchBooks = { post = \"/v9/search\", body = \"page_size\" }",
        )
    })
    .await;
    let r = h.client.json(Method::POST, "/v9/search", "7").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["received"]["pageSize"], 7);
    let r = h.client.json(Method::POST, "/v9/search", "null").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.json()["received"].get("pageSize").is_none(),
        "{}",
        r.text()
    );
}

/// A refusal quoting what the client sent is bounded: a huge unknown key
/// comes back as a short message (its start and its end), on every
/// protocol that reads JSON, not as a reply many times the request.
#[tokio::test]
async fn a_refusal_of_a_huge_key_is_a_short_reply_on_every_json_protocol() {
    use futures_util::SinkExt;
    let h = Harness::start_with("[websocket]\nmax_message_bytes = 4194304\n", "").await;
    let key = "k".repeat(2_000_000);
    let book = format!(r#"{{"{key}":1}}"#);
    let connect_body = format!(r#"{{"parent":"shelves/1","book":{book}}}"#);
    let rest = h.client.json(Method::POST, CREATE, &book).await;
    let connect = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Library/CreateBook",
            &[
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            connect_body.clone(),
        )
        .await;
    for (name, status, text) in [
        ("REST", rest.status, rest.text()),
        ("Connect", connect.status, connect.text()),
    ] {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert!(text.len() < 8 * 1024, "{name}: a {}-byte reply", text.len());
        assert!(text.contains("bytes cut"), "{name}: {text:.300}");
        assert!(
            text.contains("unrecognized field name"),
            "{name}: {text:.300}"
        );
    }
    let mut ws = support::json_v1_session(&h).await;
    let frame = format!(
        r#"{{"id":"a","open":"/portico.demo.v1.Library/CreateBook","message":{connect_body}}}"#
    );
    ws.send(tokio_tungstenite::tungstenite::Message::text(frame))
        .await
        .unwrap();
    let status = support::ws_status(&mut ws).await;
    let text = status.to_string();
    assert_eq!(status["code"], 3, "{text:.300}");
    assert!(
        text.len() < 8 * 1024,
        "WebSocket: a {}-byte status",
        text.len()
    );
}

/// A map's entries are written in key order on every JSON protocol, so
/// one reply is the same JSON however often it is written (the backend
/// and the gateway both hold a map in hash order, which differs from one
/// decoding to the next).
#[tokio::test]
async fn map_entries_are_written_in_key_order_on_every_json_protocol() {
    use support::protocols::{call_json, Protocol};
    let h = Harness::start().await;
    let names = [
        "kilo", "alpha", "zulu", "echo", "bravo", "yankee", "mike", "delta",
    ];
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    let labels: serde_json::Map<String, serde_json::Value> =
        names.iter().map(|n| (n.to_string(), "x".into())).collect();
    let keys = |map: &serde_json::Value| -> Vec<String> {
        map.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    for protocol in [Protocol::Rest, Protocol::Connect, Protocol::WebSocket] {
        for round in 0..3 {
            let request = serde_json::json!({
                "parent": "shelves/1",
                "book": { "title": format!("T{round}"), "labels": labels },
            });
            let seen = call_json(
                &h.client,
                protocol,
                "/portico.demo.v1.Library/CreateBook",
                &request.to_string(),
            )
            .await;
            assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.json);
            assert_eq!(
                keys(&seen.json["labels"]),
                sorted,
                "{protocol:?}, round {round}: {}",
                seen.json
            );
        }
    }

    // An MCP tool's structured content, and the backend's map of the
    // metadata it received, in name order.
    let sent: Vec<(String, &str)> = names.iter().map(|n| (format!("x-{n}"), "1")).collect();
    let headers: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    for round in 0..3 {
        let (_, result) =
            support::mcp_call(&h.client, &headers, "Probe_Headers", serde_json::json!({})).await;
        let metadata = keys(&result["structuredContent"]["metadata"]);
        for (name, _) in &sent {
            assert!(metadata.contains(name), "round {round}: {name}: {result}");
        }
        let mut all_sorted = metadata.clone();
        all_sorted.sort_unstable();
        assert_eq!(metadata, all_sorted, "round {round}: {result}");
    }
}
