//! The Connect protocol, as connect-web / connect-es clients send it, on
//! the same `/package.Service/Method` paths.

use crate::support;
use support::RouteKeys;

use base64::Engine as _;
use bytes::{Buf, Bytes};
use http::{Method, StatusCode};
use portico::demo::backends::pb;
use prost::Message;
use support::{frame_bytes, Harness};

const UNARY_JSON: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("connect-protocol-version", "1"),
];

/// Splits a streaming reply into its messages and its end-stream JSON.
fn envelopes(mut body: Bytes) -> (Vec<Bytes>, serde_json::Value) {
    let mut messages = Vec::new();
    let mut end = serde_json::Value::Null;
    while body.len() >= 5 {
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        let payload = body.split_to(len);
        if flags & 0x02 != 0 {
            end = serde_json::from_slice(&payload).unwrap();
        } else {
            messages.push(payload);
        }
    }
    (messages, end)
}

#[tokio::test]
async fn unary_json_and_proto() {
    let h = Harness::start().await;
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            &UNARY_JSON,
            r#"{"shelf":"1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["theme"], "Fiction");

    let headers = [
        ("content-type", "application/proto"),
        ("connect-protocol-version", "1"),
    ];
    let body = pb::GetShelfRequest { shelf: "2".into() }.encode_to_vec();
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            &headers,
            body,
        )
        .await;
    assert_eq!(r.header("content-type"), Some("application/proto"));
    assert_eq!(pb::Shelf::decode(r.body).unwrap().theme, "History");
}

#[tokio::test]
async fn errors_use_connect_codes_and_details() {
    let h = Harness::start().await;
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Probe/Fail",
            &UNARY_JSON,
            r#"{"code":5}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let e = r.json();
    assert_eq!(e["code"], "not_found");
    assert_eq!(e["details"][0]["type"], "google.rpc.ErrorInfo");
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(e["details"][0]["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        portico::demo::backends::rpc::ErrorInfo::decode(raw.as_slice())
            .unwrap()
            .reason,
        "PROBE_FAILURE"
    );

    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            &UNARY_JSON,
            r#"{"shelf":1,"x":2}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["code"], "invalid_argument");
    assert_eq!(r.json()["details"][0]["type"], "google.rpc.BadRequest");
}

#[tokio::test]
async fn get_is_allowed_for_side_effect_free_methods_only() {
    let h = Harness::start().await;
    let url = "/portico.demo.v1.Library/GetShelf?connect=v1&encoding=json&message=%7B%22shelf%22%3A%222%22%7D";
    let r = h.client.get(url).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["theme"], "History");
    let length = r.body.len().to_string();
    // HEAD of the same URL is that GET without its body, as on REST.
    let r = h.client.send(Method::HEAD, url, &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), Some(length.as_str()));
    // A method GET may not call: HEAD may not either, and both are named.
    let r = h
        .client
        .send(
            Method::HEAD,
            "/portico.demo.v1.Library/Stats?connect=v1&encoding=json&message=%7B%7D",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("POST"));

    let msg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(pb::GetShelfRequest { shelf: "1".into() }.encode_to_vec());
    let r = h
        .client
        .get(&format!(
            "/portico.demo.v1.Library/GetShelf?connect=v1&encoding=proto&base64=1&message={msg}"
        ))
        .await;
    assert_eq!(pb::Shelf::decode(r.body).unwrap().theme, "Fiction");

    // Without base64=1 the message is its bytes percent-encoded, which need
    // not be UTF-8: a 200-byte name has the length prefix 0xC8 0x01.
    let long = "a".repeat(200);
    let raw = pb::GetShelfRequest {
        shelf: long.clone(),
    }
    .encode_to_vec();
    let escaped: String = raw.iter().map(|b| format!("%{b:02X}")).collect();
    let r = h
        .client
        .get(&format!(
            "/portico.demo.v1.Library/GetShelf?connect=v1&encoding=proto&message={escaped}"
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert!(
        r.json()["message"].as_str().unwrap().contains(&long),
        "{}",
        r.text()
    );

    let r = h
        .client
        .get("/portico.demo.v1.Library/Stats?connect=v1&encoding=json&message=%7B%7D")
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("POST"));
    // A stream is never called by GET: the method is wrong, not the type.
    let r = h
        .client
        .get("/portico.demo.v1.Feed/Watch?connect=v1&encoding=json&message=%7B%7D")
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    assert_eq!(r.header("allow"), Some("POST"));
    assert_eq!(r.json()["code"], "unimplemented", "{}", r.text());
    // A method GET may call lists GET beside POST when another is refused.
    let r = h
        .client
        .send(
            Method::PUT,
            "/portico.demo.v1.Library/GetShelf",
            &UNARY_JSON[..],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));

    // A missing message, a parameter given twice, a base64 flag that is
    // neither 1 nor 0: refused as Connect, naming the parameter.
    for (query, named) in [
        ("connect=v1&encoding=json", "message"),
        (
            "connect=v1&encoding=json&message=%7B%7D&message=%7B%22shelf%22%3A%222%22%7D",
            "message",
        ),
        (
            "connect=v1&encoding=json&encoding=proto&message=%7B%7D",
            "encoding",
        ),
        ("connect=v1&encoding=proto&base64=2&message=", "base64"),
    ] {
        let r = h
            .client
            .get(&format!("/portico.demo.v1.Library/GetShelf?{query}"))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        assert_eq!(r.json()["code"], "invalid_argument", "{query}");
        let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(named), "{query}: {message}");
    }

    // Another protocol version, or a compressed message, is refused as
    // Connect, saying which.
    let r = h
        .client
        .get("/portico.demo.v1.Library/GetShelf?connect=v2&encoding=json&message=%7B%7D")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["code"], "invalid_argument");
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("\"v2\" is not a Connect protocol version"),
        "{message}"
    );
    let r = h
        .client
        .get("/portico.demo.v1.Library/GetShelf?connect=v1&encoding=json&compression=gzip&message=%7B%7D")
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("compression \"gzip\" is not supported"),
        "{message}"
    );
}

/// `connect=v1` makes a GET Connect's only where no REST binding answers
/// GET: a REST API's own `connect` parameter stays REST's, judged by the
/// binding's request message like any other parameter.
#[tokio::test]
async fn a_rest_get_with_a_connect_parameter_stays_rest() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/shelves/1?connect=v1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    // REST's error body (a numeric gRPC code), not Connect's.
    assert_eq!(r.json()["code"], 3, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("connect"), "{message}");

    // At the method's own path the same query is a Connect GET.
    let r = h
        .client
        .get("/portico.demo.v1.Library/GetShelf?connect=v1&encoding=json&message=%7B%22shelf%22%3A%221%22%7D")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["theme"], "Fiction");
}

/// Connect calls are POSTs (and GETs of side-effect-free unary methods):
/// another method is refused before the backend, as on gRPC, whatever
/// the codec, so a DELETE cannot run a method a GET may not.
#[tokio::test]
async fn a_connect_call_by_another_method_than_post_is_refused() {
    let h = Harness::start().await;
    let stream = [
        ("content-type", "application/connect+json"),
        ("connect-protocol-version", "1"),
    ];
    for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
        for (path, headers, body) in [
            (
                "/portico.demo.v1.Probe/Headers",
                &UNARY_JSON[..],
                Bytes::from_static(b"{}"),
            ),
            (
                "/portico.demo.v1.Feed/Watch",
                &stream[..],
                frame_bytes(0, br#"{"count":1}"#).into(),
            ),
        ] {
            let r = h.client.send(method.clone(), path, headers, body).await;
            assert_eq!(
                r.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {}",
                r.text()
            );
            assert_eq!(r.header("allow"), Some("POST"), "{method} {path}");
            let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
            assert!(
                message.contains(method.as_str()),
                "{method} {path}: {message}"
            );
        }
    }
    assert_eq!(h.backends.probe.calls(), 0, "no refused call reached it");
    assert_eq!(
        h.backends.feed.sent_events(),
        0,
        "no refused stream reached it"
    );
    // A method no route serves is Connect's 404 whatever the HTTP method.
    let r = h
        .client
        .send(Method::PUT, "/no.such.v1.Svc/Call", &UNARY_JSON, "{}")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.json()["code"], "unimplemented", "{}", r.text());
    // POST still calls.
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &UNARY_JSON,
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn a_get_message_is_bounded_as_a_posted_one_is() {
    let h = Harness::start_with("[server.limits]\nmax_grpc_message_bytes = 1024\n", "").await;
    let shelf = "9".repeat(1500);
    let r = h
        .client
        .get(&format!(
            "/portico.demo.v1.Library/GetShelf?connect=v1&encoding=json&message=%7B%22shelf%22%3A%22{shelf}%22%7D"
        ))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.json()["code"], "resource_exhausted");
    assert!(
        r.text().contains("server.limits.max_grpc_message_bytes"),
        "{}",
        r.text()
    );
    // (Had the backend been called, it would have answered not_found.)
}

#[tokio::test]
async fn connect_timeout_ms_sets_the_deadline() {
    let h = Harness::start().await;
    let headers = [
        ("content-type", "application/json"),
        ("connect-protocol-version", "1"),
        ("connect-timeout-ms", "100"),
    ];
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Probe/Sleep",
            &headers,
            r#"{"millis":3000}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["code"], "deadline_exceeded");
}

#[tokio::test]
async fn server_streams_end_with_an_end_stream_frame_bytes() {
    let h = Harness::start().await;
    let headers = [("content-type", "application/connect+json")];
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Feed/Watch",
            &headers,
            frame_bytes(0, br#"{"count":3,"topic":"c"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/connect+json"));
    let (messages, end) = envelopes(r.body);
    let seqs: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap()["seq"].clone())
        .collect();
    assert_eq!(seqs, ["1", "2", "3"]);
    assert!(end.get("error").is_none(), "{end}");

    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Feed/Watch",
            &headers,
            frame_bytes(0, br#"{"count":3,"failAfter":1}"#),
        )
        .await;
    let (messages, end) = envelopes(r.body);
    assert_eq!(messages.len(), 1);
    assert_eq!(end["error"]["code"], "aborted");
}

/// What a backend's reply headers may not set on a Connect stream: its
/// `x-request-id` (the request's own is the reply's, on every protocol),
/// and the Connect protocol's own `connect-*` headers (a backend's
/// `connect-content-encoding` would tell a client its messages were
/// compressed). The backend sends headers, then fails an upload, whose
/// headers join the error's trailers in the end-stream metadata.
#[tokio::test]
async fn a_backends_headers_cannot_set_the_request_id_or_connects_own_on_a_stream() {
    let (backend, _) = support::scripted::serve(support::scripted::Script {
        headers: vec![
            ("x-request-id", "backend-rid".to_owned()),
            ("connect-content-encoding", "gzip".to_owned()),
            ("x-kept", "yes".to_owned()),
        ],
        status: 9,
        status_message: "no",
        trailers: vec![("x-trailing", "t")],
        ..Default::default()
    })
    .await;
    let h = Harness::start_with_config(|_| support::config_text(backend, "", "")).await;
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Feed/Upload",
            &[
                ("content-type", "application/connect+json"),
                ("x-request-id", "client-rid"),
            ],
            frame_bytes(0, br#"{"seq":1}"#),
        )
        .await;
    assert_eq!(r.header("x-request-id"), Some("client-rid"));
    assert_eq!(r.header("connect-content-encoding"), None);
    let (_, end) = envelopes(r.body);
    assert_eq!(end["error"]["code"], "failed_precondition", "{end}");
    let metadata = &end["metadata"];
    assert_eq!(metadata["x-kept"][0], "yes", "{end}");
    assert_eq!(metadata["x-trailing"][0], "t", "{end}");
    assert!(metadata.get("x-request-id").is_none(), "{end}");
    assert!(metadata.get("connect-content-encoding").is_none(), "{end}");
}

#[tokio::test]
async fn client_streams_take_proto_envelopes() {
    let h = Harness::start().await;
    let mut body = Vec::new();
    for seq in 1..=3 {
        body.extend(frame_bytes(
            0,
            &pb::Event {
                seq,
                topic: "t".into(),
                text: String::new(),
            }
            .encode_to_vec(),
        ));
    }
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Feed/Upload",
            &[("content-type", "application/connect+proto")],
            body,
        )
        .await;
    let (messages, end) = envelopes(r.body);
    assert!(end.get("error").is_none(), "{end}");
    let summary = pb::UploadSummary::decode(messages[0].clone()).unwrap();
    assert_eq!((summary.count, summary.last_seq), (3, 3));
}

#[tokio::test]
async fn a_unary_content_type_on_a_streaming_method_is_refused() {
    let h = Harness::start().await;
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Feed/Watch",
            &UNARY_JSON,
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("application/connect+json"));
}

#[tokio::test]
async fn a_refused_stream_carries_retry_after_as_headers_and_end_stream_metadata() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys(
            "Feed",
            "rate_limit = { requests_per_second = 0.001, burst = 1 }",
        )
    })
    .await;
    let headers = [("content-type", "application/connect+json")];
    let watch = || {
        h.client.send(
            Method::POST,
            "/portico.demo.v1.Feed/Watch",
            &headers,
            frame_bytes(0, br#"{"count":1}"#),
        )
    };
    let (_, end) = envelopes(watch().await.body);
    assert!(end.get("error").is_none(), "{end}");

    let refused = watch().await;
    assert_eq!(
        refused.status,
        StatusCode::OK,
        "a stream's error is in its end"
    );
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("ratelimit-limit"), Some("1"));
    let (messages, end) = envelopes(refused.body);
    assert!(messages.is_empty());
    assert_eq!(end["error"]["code"], "resource_exhausted", "{end}");
    assert!(end["metadata"]["retry-after"][0].is_string(), "{end}");
    assert_eq!(end["metadata"]["ratelimit-limit"][0], "1", "{end}");
    assert_eq!(end["metadata"]["ratelimit-remaining"][0], "0", "{end}");
}

/// The framed protocols read a client's envelopes alike: a server stream
/// takes exactly one request message, and a frame with flags no client
/// sends (Connect's end of stream 0x02, gRPC-Web's trailers 0x80) is
/// refused rather than read as a message, by the gateway.
#[tokio::test]
async fn framed_requests_are_held_to_the_same_rules_on_grpc_grpc_web_and_connect() {
    let h = Harness::start().await;
    let watch = br#"{"count":1,"topic":"t"}"#;
    let watch_proto = pb::WatchRequest {
        count: 1,
        topic: "t".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let twice = |m: &[u8]| [frame_bytes(0, m), frame_bytes(0, m)].concat();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("no message", Vec::new(), Vec::new(), "got 0"),
        (
            "two messages",
            twice(watch),
            twice(&watch_proto),
            "exactly one request message",
        ),
        (
            "an end-of-stream flag",
            frame_bytes(0x02, watch),
            frame_bytes(0x02, &watch_proto),
            "flags 0x02",
        ),
        (
            "a trailers flag",
            frame_bytes(0x80, watch),
            frame_bytes(0x80, &watch_proto),
            "flags 0x80",
        ),
    ];
    let grpc = support::HttpClient::http2(h.gateway.addr);
    for (what, connect_body, grpc_body, says) in cases {
        // Connect: the end-stream envelope (or the error body) says why.
        let r = h
            .client
            .send(
                Method::POST,
                "/portico.demo.v1.Feed/Watch",
                &[("content-type", "application/connect+json")],
                connect_body,
            )
            .await;
        let error = if r.status == StatusCode::OK {
            envelopes(r.body.clone()).1["error"].clone()
        } else {
            r.json()
        };
        assert_eq!(
            error["code"], "invalid_argument",
            "Connect, {what}: {error}"
        );
        assert!(
            error["message"].as_str().unwrap_or("").contains(says),
            "Connect, {what}: {error}"
        );
        // gRPC and gRPC-Web.
        for (client, content_type) in [
            (&grpc, "application/grpc"),
            (&h.client, "application/grpc-web+proto"),
        ] {
            let r = client
                .send(
                    Method::POST,
                    "/portico.demo.v1.Feed/Watch",
                    &[("content-type", content_type), ("te", "trailers")],
                    grpc_body.clone(),
                )
                .await;
            let said = format!("{:?} {}", r.headers, r.text());
            assert!(
                said.contains("grpc-status\": \"3\"") || said.contains("grpc-status:3"),
                "{content_type}, {what}: {said}"
            );
            assert!(said.contains(says), "{content_type}, {what}: {said}");
        }
    }
}

#[tokio::test]
async fn a_connect_protocol_version_other_than_1_is_refused() {
    let h = Harness::start().await;
    for version in ["2", "x"] {
        let r = h
            .client
            .send(
                Method::POST,
                "/portico.demo.v1.Library/GetShelf",
                &[
                    ("content-type", "application/json"),
                    ("connect-protocol-version", version),
                ],
                r#"{"shelf":"1"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{version}: {}", r.text());
        assert_eq!(r.json()["code"], "invalid_argument");
        assert!(
            r.text().contains("connect-protocol-version must be"),
            "{}",
            r.text()
        );
    }
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            &UNARY_JSON,
            r#"{"shelf":"1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// A Connect client in a codec the gateway does not speak is answered in
/// Connect's error shape (a string `code`), not REST's, and told the types
/// the method takes.
#[tokio::test]
async fn a_connect_request_in_an_unknown_codec_gets_a_connect_error() {
    let h = Harness::start().await;
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (
            "stream, unknown connect+ codec",
            "/portico.demo.v1.Feed/Watch",
            &[("content-type", "application/connect+cbor")],
            "application/connect+json",
        ),
        (
            "unary method, connect+ codec",
            "/portico.demo.v1.Library/GetShelf",
            &[("content-type", "Application/Connect+Thrift")],
            "application/json or application/proto",
        ),
        (
            "unary, unknown type with the version header",
            "/portico.demo.v1.Library/GetShelf",
            &[
                ("content-type", "text/plain"),
                ("connect-protocol-version", "1"),
            ],
            "application/json or application/proto",
        ),
        (
            "unary, no type with the version header",
            "/portico.demo.v1.Library/GetShelf",
            &[("connect-protocol-version", "1")],
            "application/json or application/proto",
        ),
    ];
    for (name, path, headers, wanted) in cases {
        let r = h.client.send(Method::POST, path, headers, "{}").await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{name}: {}",
            r.text()
        );
        let body = r.json();
        assert_eq!(body["code"], "invalid_argument", "{name}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(wanted),
            "{name}: {body}"
        );
    }
}
