//! Request paths are normalized before matching, the same for every
//! protocol: dot-segments (encoded or not) removed, empty segments merged,
//! a climb above the root refused; a multi-segment variable never receives `..` or
//! an empty segment, and `%2F` keeps its google.api.http meaning.

use crate::support;

use http::{Method, StatusCode};
use support::{frame_bytes, Harness, HttpClient};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn a_multi_segment_variable_never_receives_dot_or_empty_segments() {
    let h = Harness::start().await;
    // (request path, what the backend's GetFile receives, or the status)
    let cases: &[(&str, Result<&str, u16>)] = &[
        ("/v1/files/a/b.txt", Ok("a/b.txt")),
        ("/v1/files//etc/passwd", Ok("etc/passwd")),
        ("/v1/files/a/./b/../c.txt", Ok("a/c.txt")),
        ("/v1/files/sub/%2e%2e/x", Ok("x")),
        ("/v1/files/sub/.%2E/x", Ok("x")),
        ("/v1/files/%61/b", Ok("a/b")),
        ("/v1/files/a%2Fb/c", Ok("a%2Fb/c")),
        // A character encoded as several escapes comes out whole; `%2f`
        // reaches the backend as the client wrote it (google.api.http).
        ("/v1/files/%D1%97/a%2fb", Ok("\u{457}/a%2fb")),
        ("/v1/files/a%2fb/./c", Ok("a%2fb/c")),
        // A malformed escape, or escapes that are not UTF-8: refused.
        ("/v1/files/100%/x", Err(400)),
        ("/v1/files/x%zz", Err(400)),
        ("/v1/files/%FF%FE", Err(400)),
        // Out of the route's prefix: another path, which nothing serves.
        ("/v1/files/../../etc/passwd", Err(404)),
        ("/v1/files/a/../../../etc/passwd", Err(404)),
        // Above the root: refused.
        ("/v1/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd", Err(400)),
        ("/v1/files/.%2E/.%2e/.%2E/etc/passwd", Err(400)),
    ];
    for (path, want) in cases {
        let r = h.client.get(path).await;
        match want {
            Ok(bound) => {
                assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
                assert_eq!(r.json()["path"], *bound, "{path}");
            }
            Err(status) => {
                assert_eq!(r.status.as_u16(), *status, "{path}: {}", r.text());
                let body = r.json();
                if *status == 400 {
                    assert_eq!(body["code"], 3);
                    let message = body["message"].as_str().unwrap();
                    assert!(
                        message.contains("climbs above the root")
                            || message.contains("malformed percent-escape")
                            || message.contains("do not decode to UTF-8"),
                        "{body}"
                    );
                }
            }
        }
    }
    // The next request on a new connection is served.
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_protocol_matches_the_normalized_path_and_refuses_a_climb() {
    let h = Harness::start().await;
    let get_shelf = {
        use prost::Message as _;
        portico::demo::backends::pb::GetShelfRequest { shelf: "1".into() }.encode_to_vec()
    };
    let grpc = HttpClient::http2(h.gateway.addr);
    for (path, ok) in [
        ("/portico.demo.v1.Library/./GetShelf", true),
        ("/x/../portico.demo.v1.Library/GetShelf", true),
        ("/../portico.demo.v1.Library/GetShelf", false),
    ] {
        // gRPC
        let r = grpc
            .send(
                Method::POST,
                path,
                &[("content-type", "application/grpc"), ("te", "trailers")],
                frame_bytes(0, &get_shelf),
            )
            .await;
        let status = r.header("grpc-status").unwrap_or("0").to_owned();
        assert_eq!(status == "0", ok, "gRPC {path}: {status}");
        if !ok {
            assert_eq!(status, "3", "gRPC {path}");
        }
        // gRPC-Web
        let r = h
            .client
            .send(
                Method::POST,
                path,
                &[("content-type", "application/grpc-web+proto")],
                frame_bytes(0, &get_shelf),
            )
            .await;
        let status = r.header("grpc-status").map(str::to_owned);
        if ok {
            assert_eq!(r.status, StatusCode::OK);
            assert!(
                status.is_none() || status.as_deref() == Some("0"),
                "gRPC-Web {path}"
            );
        } else {
            assert_eq!(status.as_deref(), Some("3"), "gRPC-Web {path}");
        }
        // Connect
        let r = h
            .client
            .send(
                Method::POST,
                path,
                &[
                    ("content-type", "application/json"),
                    ("connect-protocol-version", "1"),
                ],
                r#"{"shelf":"1"}"#,
            )
            .await;
        if ok {
            assert_eq!(r.status, StatusCode::OK, "Connect {path}: {}", r.text());
        } else {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "Connect {path}");
            assert_eq!(r.json()["code"], "invalid_argument");
        }
        // WebSocket: the handshake on the method's path.
        let req = format!("ws://{}{path}", h.gateway.addr)
            .into_client_request()
            .unwrap();
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => assert!(ok, "WebSocket {path} was accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert!(!ok, "WebSocket {path}: {}", resp.status());
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            }
            Err(e) => panic!("WebSocket {path}: {e}"),
        }
    }
}

/// A single-segment variable is decoded whole, as google.api.http says: it
/// is a string, and may hold `/` and `..`; the backend gets it as sent.
#[tokio::test]
async fn a_single_segment_variable_is_a_string_that_may_hold_slashes_and_dots() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/files/x").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.client.get("/v1/shelves/%2e%2e%2fetc").await;
    // No such shelf: the backend was asked for "../etc".
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert!(r.text().contains("../etc"), "{}", r.text());
}

/// Only a Connect GET's `message` may hold bytes that are not UTF-8: the
/// same parameters on any other request are text, and refused as such.
#[tokio::test]
async fn only_a_connect_get_carries_a_binary_message_in_its_query() {
    let h = Harness::start().await;
    let query = "connect=v1&encoding=proto&message=%FF%FE";
    for method in [Method::POST, Method::HEAD, Method::DELETE] {
        let r = h
            .client
            .send(
                method.clone(),
                &format!("/v1/shelves/1/books/2:archive?{query}"),
                &[],
                "{}",
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method}");
        if method != Method::HEAD {
            assert!(
                r.text().contains("do not decode to UTF-8"),
                "{method}: {}",
                r.text()
            );
        }
    }
}

/// A query whose escapes are malformed or not UTF-8 is refused on every
/// protocol, naming the parameter, before anything reads it.
#[tokio::test]
async fn a_query_that_is_not_utf8_is_refused_on_every_protocol() {
    use support::protocols::{call, EVERY_PROTOCOL};
    let h = Harness::start().await;
    for (query, why) in [
        ("tag=%FF%FE", "do not decode to UTF-8"),
        ("tag=50%", "malformed percent-escape"),
    ] {
        // gRPC (a tonic client has no query to send), the WebSocket
        // handshake and MCP's transport are checked below.
        use support::protocols::Protocol;
        for protocol in EVERY_PROTOCOL
            .into_iter()
            .filter(|p| !matches!(p, Protocol::Grpc | Protocol::WebSocket | Protocol::Mcp))
        {
            let seen = call(&h, protocol, &[], query, None).await;
            assert_eq!(seen.code, 3, "{protocol:?} {query}: {seen:?}");
            assert!(
                seen.message.contains("query parameter \"tag\"") && seen.message.contains(why),
                "{protocol:?} {query}: {seen:?}"
            );
            assert!(
                seen.metadata.is_empty(),
                "{protocol:?}: the backend got nothing"
            );
        }
        let r = HttpClient::http2(h.gateway.addr)
            .send(
                Method::POST,
                &format!("/portico.demo.v1.Probe/Headers?{query}"),
                &[("content-type", "application/grpc"), ("te", "trailers")],
                frame_bytes(0, &[]),
            )
            .await;
        assert_eq!(r.header("grpc-status"), Some("3"), "gRPC {query}");
        assert!(
            r.header("grpc-message").unwrap_or("").contains("tag"),
            "gRPC {query}"
        );
        let req = format!("ws://{}/v1/probe/headers?{query}", h.gateway.addr)
            .into_client_request()
            .unwrap();
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "WebSocket {query}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains(why), "WebSocket {query}: {body}");
            }
            other => panic!("WebSocket {query}: the handshake is refused, got {other:?}"),
        }
        let r = h
            .client
            .send(
                Method::POST,
                &format!("/mcp?{query}"),
                &[
                    ("content-type", "application/json"),
                    ("accept", "application/json, text/event-stream"),
                ],
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "MCP {query}");
        assert_eq!(
            r.json()["error"]["code"],
            -32600,
            "MCP {query}: {}",
            r.text()
        );
        assert!(r.text().contains(why), "MCP {query}: {}", r.text());
    }
    // UTF-8 text in escapes is fine, in the query and the path alike.
    let r = h.client.get("/v1/files/%C3%A9t%C3%A9?unused=%C3%A9").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("unused is not a field"), "{}", r.text());
    let r = h.client.get("/v1/files/%C3%A9t%C3%A9").await;
    assert_eq!(r.json()["path"], "\u{e9}t\u{e9}", "{}", r.text());
}

/// The asterisk form of a request target (`OPTIONS *`, which HTTP/1.1's
/// parser takes for any method) names no path: a `400` saying so, as
/// `portico check --explain` says, never matched as the path `/*`.
#[tokio::test]
async fn an_asterisk_target_is_no_path() {
    let h = Harness::start().await;
    for method in ["GET", "OPTIONS", "POST"] {
        let request = format!(
            "{method} * HTTP/1.1\r\nHost: g\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let answer = support::http1_exchange(h.gateway.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{method}: {answer}");
        assert!(
            answer.contains("\\\"*\\\" is not a request path: it must start with /"),
            "{method}: {answer}"
        );
    }
}
