//! The HTTP/2 edge under hostile clients, spoken frame by frame over a raw
//! socket: the settings the gateway advertises, too many header fields,
//! CONTINUATION floods, rapid reset, and SETTINGS and PING floods. After
//! each, the gateway serves the next client on a new connection.

use crate::support;

use http::StatusCode;
use std::time::Duration;
use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::h2raw::*;

/// A connection past the preface and an empty SETTINGS frame.
async fn open(h: &Harness) -> TcpStream {
    let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    sock.write_all(PREFACE).await.unwrap();
    sock.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    sock
}

/// One frame from the gateway: type, flags, stream and payload; `None`
/// once the connection is closed.
async fn read_frame(sock: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    sock.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    sock.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

/// Reads frames until the gateway's GOAWAY; its error code.
async fn goaway(sock: &mut TcpStream) -> u32 {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read_frame(sock).await {
                Some((GOAWAY, _, _, p)) => return u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                Some(_) => continue,
                None => panic!("the connection closed without a GOAWAY"),
            }
        }
    })
    .await
    .expect("a GOAWAY in time")
}

/// The next client, on a new connection, is served.
async fn still_serving(h: &Harness) {
    let r = support::HttpClient::http2(h.gateway.addr)
        .get("/v1/shelves/1")
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_gateway_advertises_its_documented_http2_limits() {
    let h = Harness::start_with(
        "[server.limits]\nmax_concurrent_streams = 50\nhttp2_stream_window_bytes = 131072\nhttp2_connection_window_bytes = 4194304\n",
        "",
    )
    .await;
    let mut sock = open(&h).await;
    let (kind, _, _, settings) = read_frame(&mut sock).await.unwrap();
    assert_eq!(kind, SETTINGS, "the server's preface is a SETTINGS frame");
    let values: std::collections::HashMap<u16, u32> = settings
        .chunks(6)
        .map(|c| {
            (
                u16::from_be_bytes([c[0], c[1]]),
                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
            )
        })
        .collect();
    assert_eq!(values.get(&0x3), Some(&50), "MAX_CONCURRENT_STREAMS");
    assert_eq!(values.get(&0x4), Some(&131_072), "INITIAL_WINDOW_SIZE");
    // Twice max_header_bytes: up to there the gateway answers in the
    // request's protocol; past it the protocol refuses the stream.
    assert_eq!(values.get(&0x6), Some(&131_072), "MAX_HEADER_LIST_SIZE");
    // The connection window is raised from the protocol's 65535 by a
    // WINDOW_UPDATE on stream 0.
    let raised = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read_frame(&mut sock).await.unwrap() {
                (WINDOW_UPDATE, _, 0, p) => {
                    return u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff
                }
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(raised + 65_535, 4_194_304);
}

#[tokio::test]
async fn too_many_header_fields_are_a_431_naming_the_limit_on_http2() {
    let h = Harness::start().await;
    // 120 cookie crumbs: each counts as a field, though together they are small.
    let mut req = http::Request::get(format!("http://{}/v1/shelves/1", h.gateway.addr));
    for i in 0..120 {
        req = req.header("cookie", format!("c{i}=1"));
    }
    let sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(sock).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (resp, _) = client.send_request(req.body(()).unwrap(), true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("server.limits.max_header_count (100)"),
        "{json}"
    );
    still_serving(&h).await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off_with_goaway() {
    let h = Harness::start().await;
    let mut sock = open(&h).await;
    // HEADERS without END_HEADERS, then a stream of tiny CONTINUATION
    // frames that never end the header block.
    let mut flood = frame(HEADERS, END_STREAM, 1, &get_block("/v1/shelves/1"));
    for _ in 0..1000 {
        // One small literal field (`x: y`) per frame.
        flood.extend(frame(CONTINUATION, 0, 1, &[0x00, 0x01, b'x', 0x01, b'y']));
    }
    let _ = sock.write_all(&flood).await;
    assert_eq!(goaway(&mut sock).await, ENHANCE_YOUR_CALM);
    still_serving(&h).await;
}

/// The documented bound: max(5, 1.25 x floor(2 x max_header_bytes / 16 KiB))
/// CONTINUATION frames before the last one, 10 with the default 64 KiB.
#[tokio::test]
async fn a_header_block_may_use_the_documented_number_of_continuation_frames() {
    let h = Harness::start().await;
    for (frames, served) in [(10, true), (11, false)] {
        let mut sock = open(&h).await;
        let mut block = frame(HEADERS, END_STREAM, 1, &get_block("/v1/shelves/1"));
        for _ in 0..frames {
            block.extend(frame(CONTINUATION, 0, 1, &[0x00, 0x01, b'x', 0x01, b'y']));
        }
        block.extend(frame(
            CONTINUATION,
            END_HEADERS,
            1,
            &[0x00, 0x01, b'x', 0x01, b'y'],
        ));
        let _ = sock.write_all(&block).await;
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match read_frame(&mut sock).await {
                    Some((HEADERS, _, 1, _)) => return "served",
                    Some((GOAWAY, _, _, p)) => {
                        assert_eq!(
                            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                            ENHANCE_YOUR_CALM
                        );
                        return "goaway";
                    }
                    Some(_) => continue,
                    None => return "closed",
                }
            }
        })
        .await
        .expect("an answer in time");
        assert_eq!(
            answer,
            if served { "served" } else { "goaway" },
            "{frames} frames"
        );
    }
    still_serving(&h).await;
}

#[tokio::test]
async fn rapid_reset_is_cut_off_with_goaway() {
    let h = Harness::start_with("[server.limits]\nhttp2_max_pending_resets = 5\n", "").await;
    let mut sock = open(&h).await;
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let stream = 1 + 2 * i;
        burst.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &get_block("/v1/probe/sleep/1000"),
        ));
        burst.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let _ = sock.write_all(&burst).await;
    assert_eq!(goaway(&mut sock).await, ENHANCE_YOUR_CALM);
    still_serving(&h).await;
}

/// A client that floods SETTINGS or PING frames and never reads the
/// acknowledgements: the gateway holds at most one pending answer, stops
/// reading when it cannot write, and so buffers nothing without bound. The
/// flood's writes stall after what the socket buffers hold (a few MiB);
/// a gateway that read on regardless would take in far more.
#[tokio::test]
async fn settings_and_ping_floods_are_met_with_backpressure_not_buffering() {
    let h = Harness::start().await;
    for (name, one) in [
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 0x3, 0, 0, 0, 10])),
        ("PING", frame(PING, 0, 0, &[7; 8])),
    ] {
        let mut sock = open(&h).await;
        let chunk: Vec<u8> = one.repeat(4096);
        let mut written = 0usize;
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while written < 64 << 20 {
                sock.write_all(&chunk).await.unwrap();
                written += chunk.len();
            }
        })
        .await;
        assert!(
            written < 64 << 20,
            "{name}: {written} bytes were taken in without being answered"
        );
        drop(sock);
        still_serving(&h).await;
    }
}

#[tokio::test]
async fn too_many_header_fields_are_refused_on_every_protocol() {
    use support::protocols::{call, gateway, Protocol};
    let h = gateway("", "").await;
    let names: Vec<String> = (0..120).map(|i| format!("x-field-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    for protocol in [
        Protocol::Rest,
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::Connect,
    ] {
        let seen = call(&h, protocol, &headers, "", None).await;
        assert_eq!(seen.code, 3, "{protocol:?}: INVALID_ARGUMENT, got {seen:?}");
        assert!(
            seen.message.contains("max_header_count"),
            "{protocol:?}: {seen:?}"
        );
        assert!(
            seen.metadata.is_empty(),
            "{protocol:?}: the backend got nothing"
        );
    }
    // A WebSocket handshake is refused before the upgrade.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/v1/probe/headers", h.gateway.addr)
        .into_client_request()
        .unwrap();
    for n in &names {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            "1".parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert!(body["message"]
                .as_str()
                .unwrap()
                .contains("max_header_count"));
        }
        other => panic!("the handshake is refused with 431, got {other:?}"),
    }
    let fine = call(&h, Protocol::WebSocket, &[], "", None).await;
    assert_eq!(fine.code, 0);
}

#[tokio::test]
async fn header_fields_over_max_header_bytes_are_refused_on_every_protocol() {
    use support::protocols::{call, gateway, Protocol};
    let h = gateway("[server.limits]\nmax_header_bytes = 8192\n", "").await;
    let under = "u".repeat(7000);
    let over = "o".repeat(9000);
    for protocol in [
        Protocol::Rest,
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::Connect,
    ] {
        let seen = call(&h, protocol, &[("x-pad", over.as_str())], "", None).await;
        assert_eq!(seen.code, 3, "{protocol:?}: INVALID_ARGUMENT, got {seen:?}");
        assert!(
            seen.message
                .contains("server.limits.max_header_bytes (8192)"),
            "{protocol:?}: {seen:?}"
        );
        assert!(
            seen.metadata.is_empty(),
            "{protocol:?}: the backend got nothing"
        );
        let fine = call(&h, protocol, &[("x-pad", under.as_str())], "", None).await;
        assert_eq!(fine.code, 0, "{protocol:?}: {fine:?}");
    }
    // Over HTTP/1.1 (the REST call above went over HTTP/1.1 too): a 431
    // with the JSON error.
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[("x-pad", over.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.json()["code"], 3, "{}", r.text());
    // A WebSocket handshake is refused before the upgrade.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/v1/probe/headers", h.gateway.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("x-pad", over.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert!(body["message"]
                .as_str()
                .unwrap()
                .contains("max_header_bytes"));
        }
        other => panic!("the handshake is refused with 431, got {other:?}"),
    }
    let fine = call(
        &h,
        Protocol::WebSocket,
        &[("x-pad", under.as_str())],
        "",
        None,
    )
    .await;
    assert_eq!(fine.code, 0);
}

/// An HTTP/2 request whose `Host` names another host than its
/// `:authority` is malformed (RFC 9113 section 8.3.1): refused with a
/// JSON error, so neither host decides the own-origin check or what the
/// backend is told.
#[tokio::test]
async fn a_host_that_differs_from_the_authority_is_refused_on_http2() {
    let h = Harness::start().await;
    let sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(sock).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    for (host, status) in [
        ("evil.example", StatusCode::BAD_REQUEST),
        ("AUTHORITY.example", StatusCode::OK),
        // The scheme's default port written out is the same host.
        ("authority.example:80", StatusCode::OK),
    ] {
        let req = http::Request::get("http://authority.example/v1/shelves/1")
            .header("host", host)
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), status, "{host}");
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        if status == StatusCode::BAD_REQUEST {
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert!(
                json["message"].as_str().unwrap().contains(":authority"),
                "{json}"
            );
        }
        client = client.ready().await.unwrap();
    }
    still_serving(&h).await;
}

/// A HEAD answer has no content over HTTP/2 either, refusals included (a
/// foreign origin, a malformed escape, a method `/mcp` does not take):
/// the status and headers only, its length in `content-length`.
#[tokio::test]
async fn head_answers_carry_no_body_over_http2_refusals_included() {
    let h = Harness::start().await;
    let h2 = support::HttpClient::http2(h.gateway.addr);
    for (path, headers, status) in [
        (
            "/v1/shelves/1",
            vec![("origin", "https://evil.example")],
            StatusCode::FORBIDDEN,
        ),
        ("/v1/shelves/1?a=%ZZ", vec![], StatusCode::BAD_REQUEST),
        ("/mcp", vec![], StatusCode::METHOD_NOT_ALLOWED),
        ("/v1/shelves/1", vec![], StatusCode::OK),
        // A 204 says no length at all (RFC 9110 section 8.6).
        (
            "/v1/probe/headers",
            vec![("x-reply-x-http-status", "204")],
            StatusCode::NO_CONTENT,
        ),
    ] {
        let head = h2.send(http::Method::HEAD, path, &headers, "").await;
        assert_eq!(head.status, status, "{path}");
        assert!(head.body.is_empty(), "{path}: {:?}", head.body);
        // The length of what a GET gets, but where the answer names the
        // method (`/mcp`'s 405 says HEAD).
        if status == StatusCode::NO_CONTENT {
            assert_eq!(head.header("content-length"), None, "{path}");
            continue;
        }
        let get = h2.send(http::Method::GET, path, &headers, "").await;
        let length: usize = head.header("content-length").unwrap().parse().unwrap();
        if path == "/mcp" {
            assert!(length > 0, "{path}");
        } else {
            assert_eq!(length, get.body.len(), "{path}");
        }
    }
}
