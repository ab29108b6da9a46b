//! Strict HTTP/1.1 framing at the edge: requests whose framing or target
//! the gateway will not guess at are refused before any adapter reads them,
//! the backend never sees them, and the next request is served.

use crate::support;

use std::time::Duration;
use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes; returns the status line's code, the body, and whether
/// the gateway closed the connection after answering.
async fn raw(h: &Harness, request: &[u8]) -> (u16, String, bool) {
    let mut socket = TcpStream::connect(h.gateway.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&data).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body, closed)
}

#[tokio::test]
async fn hostile_framing_is_refused_before_the_backend() {
    let h = Harness::start().await;
    let long_target = format!(
        "GET /v1/probe/headers?x={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let many_headers = format!(
        "GET /v1/probe/headers HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let far_too_many = format!(
        "GET /v1/probe/headers HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..250)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    // (name, request, status, a word the JSON error must contain; None:
    // refused by hyper's parser, with no body)
    let cases: Vec<(&str, Vec<u8>, u16, Option<&str>)> = vec![
        (
            "Transfer-Encoding other than chunked",
            b"POST /portico.demo.v1.Probe/Headers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n".to_vec(),
            501,
            Some("Transfer-Encoding"),
        ),
        (
            "no Host",
            b"GET /v1/probe/headers HTTP/1.1\r\n\r\n".to_vec(),
            400,
            Some("Host"),
        ),
        (
            "two Hosts",
            b"GET /v1/probe/headers HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            400,
            Some("Host"),
        ),
        ("a 17 KiB request target", long_target.into_bytes(), 414, Some("max_request_target_bytes")),
        (
            "obsolete line folding",
            b"GET /v1/probe/headers HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
            None,
        ),
        (
            "a control byte in a header",
            b"GET /v1/probe/headers HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n".to_vec(),
            400,
            None,
        ),
        ("150 header fields", many_headers.into_bytes(), 431, Some("max_header_count")),
        ("250 header fields", far_too_many.into_bytes(), 431, None),
    ];
    // Each round's normal request is the only call the backend gets.
    for (served, (name, request, status, word)) in cases.into_iter().enumerate() {
        let (got, body, closed) = raw(&h, &request).await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(closed, "{name}: the connection stayed open");
        if let Some(word) = word {
            let json: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {body}"));
            assert!(
                json["message"].as_str().unwrap().contains(word),
                "{name}: {json}"
            );
        }
        assert_eq!(
            h.backends.probe.calls(),
            served as u64,
            "{name} reached the backend"
        );
        // The next request, on a new connection, is served.
        let (ok, _, _) = raw(
            &h,
            b"GET /v1/probe/headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(ok, 200, "after {name}");
    }
}

/// RFC 9112 section 6.3: a request with both Content-Length and
/// Transfer-Encoding is read by its chunked framing, and its connection is
/// closed after the reply, so a request smuggled behind it is never read.
#[tokio::test]
async fn a_request_with_both_lengths_is_read_as_chunked_and_ends_its_connection() {
    let h = Harness::start().await;
    let (status, _, closed) = raw(
        &h,
        b"POST /portico.demo.v1.Probe/Headers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nGET /v1/probe/headers HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(closed, "the connection is closed after the reply");
    assert_eq!(
        h.backends.probe.calls(),
        1,
        "the request behind it was never read"
    );
}

/// A chunked body whose framing breaks mid-way is refused naming what
/// broke, and the answer says the connection closes (it does: nothing
/// behind it is read as a request), on every protocol over HTTP/1.1.
#[tokio::test]
async fn a_chunked_body_whose_framing_breaks_is_refused_and_ends_its_connection() {
    let h = Harness::start().await;
    let grpc_web = format!(
        "5\r\n{}\r\n",
        String::from_utf8(support::frame_bytes(0, b"")).unwrap()
    );
    for (protocol, target, content_type, first_chunk, says) in [
        (
            "REST",
            "/v1/books:search",
            "application/json",
            "2\r\n{}\r\n".to_owned(),
            "invalid chunk size",
        ),
        (
            "Connect",
            "/portico.demo.v1.Probe/Headers",
            "application/json",
            "2\r\n{}\r\n".to_owned(),
            "invalid chunk size",
        ),
        (
            "gRPC-Web",
            "/portico.demo.v1.Probe/Headers",
            "application/grpc-web+proto",
            grpc_web,
            "invalid chunk size",
        ),
    ] {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n{first_chunk}FFFFFFFFFFFFFFFFFF\r\n\r\nGET /v1/probe/headers HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let mut socket = TcpStream::connect(h.gateway.addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
            .await
            .expect("the connection closes")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(answer.starts_with("http/1.1 "), "{protocol}: {answer}");
        assert_eq!(
            answer.matches("http/1.1 ").count(),
            1,
            "{protocol}: one answer: {answer}"
        );
        assert!(
            answer.contains("connection: close\r\n"),
            "{protocol}: {answer}"
        );
        assert!(answer.contains(says), "{protocol}: {answer}");
    }
    assert_eq!(h.backends.probe.calls(), 0, "no backend call");
}

/// The limit counts the client's own fields: exactly `max_header_count`
/// (Host and 99 more) is served, one more is a 431.
#[tokio::test]
async fn exactly_the_header_count_limit_is_served() {
    let h = Harness::start().await;
    let request = |n: usize| {
        format!(
            "GET /v1/probe/headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n",
            (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()
        )
    };
    let (status, body, _) = raw(&h, request(98).as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = raw(&h, request(99).as_bytes()).await;
    assert_eq!(status, 431, "{body}");
}

/// A CONNECT asks for a tunnel to a host and port: refused, saying so,
/// never sent anywhere.
#[tokio::test]
async fn a_connect_tunnel_is_refused_saying_the_gateway_is_no_forward_proxy() {
    let h = Harness::start().await;
    let (status, body, _) = raw(
        &h,
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        json["message"].as_str().unwrap().contains(
            "CONNECT 127.0.0.1:22 asks for a tunnel, and the gateway is no forward proxy"
        ),
        "{json}"
    );
    assert_eq!(h.backends.probe.calls(), 0);
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from
/// `socket`; its status code.
async fn one_response(socket: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .expect("the connection stays open");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

/// An HTTP/1.1 client sends its body after its headers; a refusal that
/// comes before the body is read (an unknown method, a compressed body)
/// keeps the connection: the body is read and dropped, and the client's
/// next request on it is served, on every protocol that rides HTTP/1.1.
#[tokio::test]
async fn a_refusal_before_the_body_keeps_the_connection_for_the_next_request() {
    let h = Harness::start().await;
    let body = br#"{"shelf":"1","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    // (what is refused, its headers, the status it gets)
    let cases: &[(&str, &str, u16)] = &[
        ("REST, no such path", "POST /v1/nowhere HTTP/1.1\r\ncontent-type: application/json\r\n", 404),
        (
            "Connect, no such method",
            "POST /no.such.v1.Svc/Call HTTP/1.1\r\ncontent-type: application/json\r\nconnect-protocol-version: 1\r\n",
            404,
        ),
        (
            "Connect, a gzip body",
            "POST /portico.demo.v1.Library/GetShelf HTTP/1.1\r\ncontent-type: application/json\r\nconnect-protocol-version: 1\r\ncontent-encoding: gzip\r\n",
            415,
        ),
        (
            "gRPC-Web, no such method",
            "POST /no.such.v1.Svc/Call HTTP/1.1\r\ncontent-type: application/grpc-web+proto\r\n",
            200,
        ),
    ];
    for (case, head, status) in cases {
        let mut socket = TcpStream::connect(h.gateway.addr).await.unwrap();
        let head = format!("{head}host: x\r\ncontent-length: {}\r\n\r\n", body.len());
        socket.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(one_response(&mut socket).await, *status, "{case}");
        // The body comes after the answer, then the next request.
        socket
            .write_all(body)
            .await
            .unwrap_or_else(|e| panic!("{case}: the body: {e}"));
        socket
            .write_all(b"GET /v1/shelves/1 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{case}: the next request: {e}"));
        assert_eq!(
            one_response(&mut socket).await,
            200,
            "{case}: the next request"
        );
    }
}

/// A body declared longer than the gateway reads past, refused before it
/// was read: the answer says the connection closes after it.
#[tokio::test]
async fn a_refusal_before_a_long_body_says_the_connection_closes() {
    let h = Harness::start().await;
    let mut socket = TcpStream::connect(h.gateway.addr).await.unwrap();
    socket
        .write_all(b"POST /v1/nowhere HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 16777216\r\n\r\n")
        .await
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while !data.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        data.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&data).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 404"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
}
