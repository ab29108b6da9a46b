//! gRPC-Web as a browser library sends it, over HTTP/1.1 and HTTP/2:
//! binary and base64 text, unary and server streaming, errors, and CORS.

use crate::support;

use base64::Engine as _;
use bytes::{Buf, Bytes};
use http::{Method, StatusCode};
use portico::demo::backends::pb;
use prost::Message;
use support::{frame, Harness, HttpClient, Reply};

/// Splits a gRPC-Web body into its messages and its trailers.
fn parse(mut body: Bytes) -> (Vec<Bytes>, Vec<(String, String)>) {
    let mut messages = Vec::new();
    let mut trailers = Vec::new();
    while body.len() >= 5 {
        let flags = body[0];
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        let payload = body.split_to(len);
        if flags & 0x80 != 0 {
            for line in std::str::from_utf8(&payload)
                .unwrap()
                .split("\r\n")
                .filter(|l| !l.is_empty())
            {
                let (k, v) = line.split_once(':').unwrap();
                trailers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        } else {
            messages.push(payload);
        }
    }
    assert!(body.is_empty(), "no bytes after the last frame");
    (messages, trailers)
}

fn trailer<'a>(trailers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    trailers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A gRPC-Web text reply's body: padded base64 chunks, decoded four
/// characters at a time.
fn decode_text(body: &[u8]) -> Bytes {
    let mut decoded = Vec::new();
    for quad in body.chunks(4) {
        decoded.extend(
            base64::engine::general_purpose::STANDARD
                .decode(quad)
                .unwrap(),
        );
    }
    decoded.into()
}

async fn call(client: &HttpClient, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let headers = [
        ("content-type", content_type),
        ("x-grpc-web", "1"),
        ("accept", content_type),
    ];
    client.send(Method::POST, path, &headers, body).await
}

#[tokio::test]
async fn unary_binary_over_http1() {
    let h = Harness::start().await;
    let r = call(
        &h.client,
        "/portico.demo.v1.Library/GetShelf",
        "application/grpc-web+proto",
        frame(&pb::GetShelfRequest { shelf: "1".into() }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/grpc-web+proto"));
    let (messages, trailers) = parse(r.body);
    assert_eq!(
        pb::Shelf::decode(messages[0].clone()).unwrap().theme,
        "Fiction"
    );
    assert_eq!(trailer(&trailers, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn unary_text_is_base64_both_ways() {
    let h = Harness::start().await;
    let body = base64::engine::general_purpose::STANDARD
        .encode(frame(&pb::GetShelfRequest { shelf: "2".into() }));
    let r = call(
        &h.client,
        "/portico.demo.v1.Library/GetShelf",
        "application/grpc-web-text",
        body.into_bytes(),
    )
    .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/grpc-web-text+proto")
    );
    // The body is several padded base64 chunks, one per frame.
    let (messages, trailers) = parse(decode_text(&r.body));
    assert_eq!(
        pb::Shelf::decode(messages[0].clone()).unwrap().theme,
        "History"
    );
    assert_eq!(trailer(&trailers, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn a_text_body_may_leave_out_its_last_padding() {
    let h = Harness::start().await;
    // GetShelf{shelf:"2"} frames to 8 bytes: padded base64 ends in "=".
    let raw = frame(&pb::GetShelfRequest { shelf: "2".into() });
    let padded = base64::engine::general_purpose::STANDARD.encode(&raw);
    assert!(padded.ends_with('='), "{padded}");
    let cases = [
        ("padded", padded.clone(), Some("0")),
        (
            "unpadded",
            padded.trim_end_matches('=').to_string(),
            Some("0"),
        ),
        (
            "one character short",
            padded[..padded.len() - 3].to_string(),
            None,
        ),
        ("not base64", "@@@@".to_string(), None),
    ];
    for (what, body, status) in cases {
        let r = call(
            &h.client,
            "/portico.demo.v1.Library/GetShelf",
            "application/grpc-web-text",
            body.into_bytes(),
        )
        .await;
        match status {
            Some(code) => {
                let (messages, trailers) = parse(decode_text(&r.body));
                assert_eq!(trailer(&trailers, "grpc-status"), Some(code), "{what}");
                assert_eq!(
                    pb::Shelf::decode(messages[0].clone()).unwrap().theme,
                    "History",
                    "{what}"
                );
            }
            None => {
                // Refused before any reply: the status is in the headers.
                assert_eq!(r.header("grpc-status"), Some("3"), "{what}");
                assert!(
                    r.header("grpc-message")
                        .is_some_and(|m| m.contains("grpc-web-text body is not base64")),
                    "{what}: {:?}",
                    r.header("grpc-message")
                );
            }
        }
    }
}

/// A text body is decoded as it arrives and held to the limit message by
/// message, as a binary one is: a client stream whose whole body is many
/// times the limit goes through, each chunk padded on its own.
#[tokio::test]
async fn a_text_client_stream_is_bounded_per_message_not_as_a_whole() {
    let h = Harness::start_with("[server.limits]\nmax_grpc_message_bytes = 1024\n", "").await;
    let text: String = (1..=20)
        .map(|seq| {
            let event = pb::Event {
                seq,
                topic: format!("t{seq}"),
                text: "x".repeat(900),
            };
            base64::engine::general_purpose::STANDARD.encode(frame(&event))
        })
        .collect();
    assert!(text.len() > 20 * 1024, "{} bytes of text", text.len());
    let r = call(
        &h.client,
        "/portico.demo.v1.Feed/Upload",
        "application/grpc-web-text",
        text.into_bytes(),
    )
    .await;
    let (messages, trailers) = parse(decode_text(&r.body));
    assert_eq!(
        trailer(&trailers, "grpc-status"),
        Some("0"),
        "{:?}",
        r.header("grpc-message")
    );
    let summary = pb::UploadSummary::decode(messages[0].clone()).unwrap();
    assert_eq!((summary.count, summary.last_seq), (20, 20));
}

#[tokio::test]
async fn server_streaming_over_http2() {
    let h = Harness::start().await;
    let client = HttpClient::http2(h.gateway.addr);
    let req = pb::WatchRequest {
        count: 3,
        interval_ms: 0,
        fail_after: 0,
        topic: "w".into(),
        padding: 0,
    };
    let r = call(
        &client,
        "/portico.demo.v1.Feed/Watch",
        "application/grpc-web+proto",
        frame(&req),
    )
    .await;
    let (messages, trailers) = parse(r.body);
    let seqs: Vec<i64> = messages
        .into_iter()
        .map(|m| pb::Event::decode(m).unwrap().seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(trailer(&trailers, "grpc-status"), Some("0"));
}

#[tokio::test]
async fn a_mid_stream_error_is_in_the_trailer_frame() {
    let h = Harness::start().await;
    let req = pb::WatchRequest {
        count: 3,
        interval_ms: 0,
        fail_after: 1,
        topic: String::new(),
        padding: 0,
    };
    let r = call(
        &h.client,
        "/portico.demo.v1.Feed/Watch",
        "application/grpc-web+proto",
        frame(&req),
    )
    .await;
    let (messages, trailers) = parse(r.body);
    assert_eq!(messages.len(), 1);
    assert_eq!(trailer(&trailers, "grpc-status"), Some("10"));
    assert_eq!(
        trailer(&trailers, "grpc-message"),
        Some("feed interrupted by the backend")
    );
}

#[tokio::test]
async fn an_early_error_is_trailers_only_in_the_headers() {
    let h = Harness::start().await;
    let r = call(
        &h.client,
        "/portico.demo.v1.Probe/Fail",
        "application/grpc-web+proto",
        frame(&pb::FailRequest {
            code: 7,
            message: String::new(),
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("grpc-status"), Some("7"));
    assert!(r.header("grpc-status-details-bin").is_some());
    assert!(r.body.is_empty());
    // A body that is not a frame.
    let r = call(
        &h.client,
        "/portico.demo.v1.Library/GetShelf",
        "application/grpc-web+proto",
        vec![0, 0, 0],
    )
    .await;
    assert_eq!(r.header("grpc-status"), Some("3"));
}

const CORS: &str = "cors = { allowed_origins = [\"https://app.example.com\"], allowed_headers = [\"x-tenant\"], max_age = \"1h\" }";

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered() {
    let h = Harness::start_with("", CORS).await;
    let headers = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type,x-grpc-web,x-tenant",
        ),
    ];
    let r = h
        .client
        .send(
            Method::OPTIONS,
            "/portico.demo.v1.Library/GetShelf",
            &headers,
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let allowed = r.header("access-control-allow-headers").unwrap();
    assert!(
        allowed.contains("x-grpc-web") && allowed.contains("x-tenant"),
        "{allowed}"
    );
    assert_eq!(r.header("access-control-max-age"), Some("3600"));
    // The answer depends on the origin: caches must keep them apart.
    assert_eq!(r.header("vary"), Some("origin"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, PUT, PATCH, DELETE")
    );
    // `/mcp` (Probe's route offers tools and has the policy) takes POST alone.
    let r = h
        .client
        .send(
            Method::OPTIONS,
            "/mcp",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    // REST paths share the route's policy.
    let r = h
        .client
        .send(
            Method::OPTIONS,
            "/v1/shelves/1",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_preflight_from_another_origin_is_refused() {
    let h = Harness::start_with("", CORS).await;
    let headers = [
        ("origin", "https://evil.example.net"),
        ("access-control-request-method", "POST"),
    ];
    let r = h
        .client
        .send(
            Method::OPTIONS,
            "/portico.demo.v1.Library/GetShelf",
            &headers,
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["code"], 7);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_a_policy_cross_origin_is_closed() {
    let h = Harness::start().await;
    let headers = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
    ];
    let r = h
        .client
        .send(
            Method::OPTIONS,
            "/portico.demo.v1.Library/GetShelf",
            &headers,
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // The gateway's own origin needs no policy, preflight included (a
    // browser sends none for it; a tool that does is answered).
    let own = format!("http://{}", h.gateway.addr);
    for path in ["/portico.demo.v1.Library/GetShelf", "/v1/shelves/1"] {
        let r = h
            .client
            .send(
                Method::OPTIONS,
                path,
                &[
                    ("origin", own.as_str()),
                    ("access-control-request-method", "POST"),
                ],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{path}: {}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some(own.as_str()));
        assert!(r
            .header("access-control-allow-headers")
            .is_some_and(|h| h.contains("x-grpc-web")));
    }
}

#[tokio::test]
async fn a_cross_site_request_runs_only_when_the_policy_allows_its_origin() {
    // What a foreign page can send without a preflight: a text/plain POST.
    let create = |origin: &'static str| {
        (
            Method::POST,
            "/v1/shelves/1/books",
            vec![("origin", origin), ("content-type", "text/plain")],
            r#"{"title":"csrf"}"#,
        )
    };
    for (cors, allowed) in [("", false), (CORS, true)] {
        let h = Harness::start_with("", cors).await;
        let before = h.client.get("/v1/shelves/1").await.json()["bookCount"].clone();
        let (method, path, headers, body) = create("https://app.example.com");
        let r = h.client.send(method, path, &headers, body).await;
        if allowed {
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
            assert_eq!(
                r.header("access-control-allow-origin"),
                Some("https://app.example.com")
            );
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
            assert_eq!(r.json()["code"], 7);
        }
        // Another site is refused either way, on every protocol a browser
        // speaks, in that protocol's error format, and nothing runs.
        let (method, path, headers, body) = create("https://evil.example.net");
        let r = h.client.send(method, path, &headers, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        let r = h
            .client
            .send(
                Method::POST,
                "/portico.demo.v1.Library/GetShelf",
                &[
                    ("origin", "https://evil.example.net"),
                    ("content-type", "application/grpc-web+proto"),
                ],
                frame(&pb::GetShelfRequest { shelf: "1".into() }),
            )
            .await;
        assert_eq!(r.header("grpc-status"), Some("7"));
        let r = h
            .client
            .send(
                Method::POST,
                "/portico.demo.v1.Library/GetShelf",
                &[
                    ("origin", "https://evil.example.net"),
                    ("content-type", "application/json"),
                    ("connect-protocol-version", "1"),
                ],
                r#"{"shelf":"1"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.json()["code"], "permission_denied");
        let after = h.client.get("/v1/shelves/1").await.json()["bookCount"].clone();
        let created = if allowed { 1 } else { 0 };
        assert_eq!(
            after.as_i64().unwrap(),
            before.as_i64().unwrap() + created,
            "only the allowed origin's book was created"
        );
        // The gateway's own pages are same-origin: no policy needed, under
        // either web scheme (a TLS-terminating proxy changes it); the same
        // host under another scheme is not a web page's origin.
        for (scheme, status) in [
            ("http", StatusCode::OK),
            ("https", StatusCode::OK),
            ("ws", StatusCode::FORBIDDEN),
        ] {
            let own = format!("{scheme}://{}", h.gateway.addr);
            let r = h
                .client
                .send(
                    Method::GET,
                    "/v1/shelves/1",
                    &[("origin", own.as_str())],
                    "",
                )
                .await;
            assert_eq!(r.status, status, "{own}");
            let r = h
                .client
                .send(
                    Method::POST,
                    "/portico.demo.v1.Library/GetShelf",
                    &[
                        ("origin", own.as_str()),
                        ("content-type", "application/grpc-web+proto"),
                    ],
                    frame(&pb::GetShelfRequest { shelf: "1".into() }),
                )
                .await;
            // Refused before any reply: the status in the headers.
            let refused = r.header("grpc-status") == Some("7");
            assert_eq!(refused, status != StatusCode::OK, "{own}");
        }

        // A method the path does not serve (a plain OPTIONS, no preflight
        // headers) from an allowed origin: the 405 its own site would get,
        // not an origin refusal. Another site is still refused.
        let r = h
            .client
            .send(
                Method::OPTIONS,
                "/v1/shelves/1",
                &[("origin", "https://app.example.com")],
                "",
            )
            .await;
        if allowed {
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
            assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        }
        let r = h
            .client
            .send(
                Method::OPTIONS,
                "/v1/shelves/1",
                &[("origin", "https://evil.example.net")],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    }
}

#[tokio::test]
async fn an_aggregate_follows_the_cors_default_and_answers_other_methods_with_405() {
    let aggregate = "[[aggregates]]\npath = \"/v1/shelves/{shelf}/overview\"\n\n\
                     [[aggregates.calls]]\nname = \"shelf\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"{path.shelf}\" }\n";
    let h = Harness::start_with(
        &format!("[cors]\nallowed_origins = [\"https://app.example.com\"]\n\n{aggregate}"),
        "",
    )
    .await;
    let r = h
        .client
        .send(
            Method::OPTIONS,
            "/v1/shelves/1/overview",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/shelves/1/overview",
            &[("origin", "https://app.example.com")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/shelves/1/overview",
            &[("origin", "https://evil.example.net")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // An aggregate is a REST endpoint: another method on its path is a 405.
    let r = h
        .client
        .send(Method::POST, "/v1/shelves/1/overview", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

/// A request the edge refuses (a limit, a malformed header or query) from
/// an origin the route allows is answered with the CORS headers any other
/// error gets, so the page reads why, on every protocol a browser speaks;
/// another origin, or two, still get none.
#[tokio::test]
async fn edge_refusals_carry_the_cors_headers_an_allowed_origin_needs() {
    let h = Harness::start_with("", CORS).await;
    let allowed = ("origin", "https://app.example.com");
    let long_get = format!(
        "/portico.demo.v1.Library/GetShelf?connect=v1&encoding=json&message={}",
        "a".repeat(20_000)
    );
    let grpc_web = ("content-type", "application/grpc-web+proto");
    let connect = ("content-type", "application/json");
    let get = frame(&pb::GetShelfRequest { shelf: "1".into() });
    let names: Vec<String> = (0..101).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    type Case<'a> = (
        &'a str,
        Method,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            "REST, a malformed escape",
            Method::GET,
            "/v1/shelves/1?a=%ZZ",
            vec![],
            vec![],
            400,
        ),
        (
            "REST, too many headers",
            Method::GET,
            "/v1/shelves/1",
            many.clone(),
            vec![],
            431,
        ),
        (
            "REST, a bad deadline",
            Method::GET,
            "/v1/shelves/1",
            vec![("connect-timeout-ms", "soon")],
            vec![],
            400,
        ),
        (
            "REST, binary metadata that is not base64",
            Method::GET,
            "/v1/shelves/1",
            vec![("x-trace-bin", "!!!")],
            vec![],
            400,
        ),
        (
            "Connect GET past the target limit",
            Method::GET,
            &long_get,
            vec![],
            vec![],
            414,
        ),
        (
            "Connect, a compressed body",
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            vec![
                connect,
                ("connect-protocol-version", "1"),
                ("content-encoding", "gzip"),
            ],
            b"{}".to_vec(),
            415,
        ),
        (
            "gRPC-Web, a bad deadline",
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            vec![grpc_web, ("grpc-timeout", "soon")],
            get.to_vec(),
            200,
        ),
        // Refused by their adapters for their HTTP method, as calls.
        (
            "gRPC-Web by GET",
            Method::GET,
            "/portico.demo.v1.Library/GetShelf",
            vec![grpc_web],
            vec![],
            200,
        ),
        (
            "Connect by PUT",
            Method::PUT,
            "/portico.demo.v1.Library/GetShelf",
            vec![connect, ("connect-protocol-version", "1")],
            b"{}".to_vec(),
            405,
        ),
    ];
    for (name, method, path, headers, body, status) in cases {
        for (origin, reads) in [
            (vec![allowed], true),
            (vec![("origin", "https://evil.example")], false),
            (vec![allowed, ("origin", "https://other.example")], false),
            // The same origin twice is that origin.
            (vec![allowed, allowed], true),
        ] {
            let mut all = headers.clone();
            all.extend(origin.iter().cloned());
            let r = h
                .client
                .send(method.clone(), path, &all, body.clone())
                .await;
            let allow = r.header("access-control-allow-origin");
            if reads {
                assert_eq!(r.status, status, "{name}: {}", r.text());
                assert_eq!(allow, Some("https://app.example.com"), "{name}");
                assert!(
                    r.header("access-control-expose-headers").is_some(),
                    "{name}"
                );
                assert_eq!(
                    r.headers.get_all("vary").iter().collect::<Vec<_>>(),
                    ["origin"],
                    "{name}: once"
                );
            } else {
                assert_eq!(allow, None, "{name}: {origin:?}");
            }
        }
    }
}

/// CORS is the gateway's policy alone: a backend's own `access-control-*`
/// reply metadata never reaches a client, on any protocol a page speaks,
/// so it cannot grant credentials or another origin the policy does not.
#[tokio::test]
async fn a_backends_cors_headers_never_reach_the_client() {
    let h = Harness::start_with("", CORS).await;
    let backend_says = [
        ("origin", "https://app.example.com"),
        ("x-reply-access-control-allow-credentials", "true"),
        (
            "x-reply-access-control-allow-origin",
            "https://evil.example",
        ),
        ("x-reply-x-kept", "yes"),
        // Said by the backend, as the README advises: not said twice.
        ("x-reply-vary", "origin"),
    ];
    let path = "/portico.demo.v1.Probe/Headers";
    type Call<'a> = (&'a str, Method, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>);
    let calls: [Call; 3] = [
        ("REST", Method::GET, "/v1/probe/headers", vec![], vec![]),
        (
            "Connect",
            Method::POST,
            path,
            vec![("content-type", "application/json")],
            b"{}".to_vec(),
        ),
        (
            "gRPC-Web",
            Method::POST,
            path,
            vec![("content-type", "application/grpc-web+proto")],
            vec![0, 0, 0, 0, 0],
        ),
    ];
    for (name, method, path, extra, body) in calls {
        let mut headers = backend_says.to_vec();
        headers.extend(extra);
        let r = h.client.send(method, path, &headers, body).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        assert_eq!(
            r.header("x-kept"),
            Some("yes"),
            "{name}: the backend's reply headers pass"
        );
        assert_eq!(
            r.headers
                .get_all("access-control-allow-origin")
                .iter()
                .collect::<Vec<_>>(),
            ["https://app.example.com"],
            "{name}"
        );
        assert_eq!(r.header("access-control-allow-credentials"), None, "{name}");
        let vary: Vec<&str> = r
            .headers
            .get_all("vary")
            .iter()
            .flat_map(|v| v.to_str().unwrap().split(','))
            .map(str::trim)
            .filter(|v| v.eq_ignore_ascii_case("origin"))
            .collect();
        assert_eq!(vary.len(), 1, "{name}: {:?}", r.headers);
    }
}

#[tokio::test]
async fn replies_to_an_allowed_origin_expose_the_grpc_status() {
    let h = Harness::start_with("", CORS).await;
    let headers = [
        ("content-type", "application/grpc-web+proto"),
        ("origin", "https://app.example.com"),
    ];
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            &headers,
            frame(&pb::GetShelfRequest { shelf: "1".into() }),
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // And what the gateway adds to replies and refusals, so a page reads
    // what curl would.
    let exposed: Vec<&str> = r
        .header("access-control-expose-headers")
        .unwrap()
        .split(',')
        .map(str::trim)
        .collect();
    for name in [
        "grpc-status",
        "grpc-message",
        "x-request-id",
        "x-cache",
        "age",
        "x-aggregate-complete",
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "www-authenticate",
    ] {
        assert!(exposed.contains(&name), "{name} in {exposed:?}");
    }
    assert_eq!(r.header("vary"), Some("origin"));
}
