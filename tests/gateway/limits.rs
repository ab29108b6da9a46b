//! The safe limits, each breached for real over a socket: oversized
//! headers, slow headers, too many HTTP/2 streams, idle connections.

use crate::support;

use http::StatusCode;
use std::time::{Duration, Instant};
use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_all(sock: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(within, sock.read_to_end(&mut buf))
        .await
        .is_ok();
    (buf, closed)
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let h = Harness::start_with("[server.limits]\nmax_header_bytes = 8192\n", "").await;
    let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    let req = format!(
        "GET /v1/shelves/1 HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let (buf, _) = read_all(&mut sock, Duration::from_secs(3)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_the_client_is_asked_to_send_it() {
    // `Expect: 100-continue` with a Content-Length over the body's bound
    // (REST and MCP: max_request_body_bytes; Connect: the message limit):
    // the answer is the 413, never the `100 Continue` that would invite
    // the upload, on every protocol whose request is one body, whether
    // the length is past what the gateway would read past or just over.
    let h = Harness::start_with(
        "[server.limits]\nmax_request_body_bytes = 4096\nmax_grpc_message_bytes = 4096\n",
        "",
    )
    .await;
    let connect = "/portico.demo.v1.Library/CreateBook";
    for (protocol, path, length) in [
        ("REST", "/v1/shelves/1/books", 50_000_000),
        ("REST", "/v1/shelves/1/books", 5_000),
        ("Connect", connect, 50_000_000),
        ("Connect", connect, 5_000),
        ("MCP", "/mcp", 50_000_000),
        ("MCP", "/mcp", 5_000),
    ] {
        let content_type = "application/json";
        let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\naccept: application/json, text/event-stream\r\nexpect: 100-continue\r\ncontent-length: {length}\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(Duration::from_secs(3), sock.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "{protocol} {length}: {text}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{protocol} {length}: the body never sent, the connection closes: {text}"
        );
    }
}

#[tokio::test]
async fn a_client_that_sends_headers_too_slowly_is_cut_off() {
    let h = Harness::start_with("[server.limits]\nheader_read_timeout = \"300ms\"\n", "").await;
    let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    let started = Instant::now();
    sock.write_all(b"GET /v1/shelves/1 HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_all(&mut sock, Duration::from_secs(3)).await;
    assert!(closed, "the connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let h = Harness::start_with("[server.limits]\nidle_timeout = \"300ms\"\n", "").await;
    let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    sock.write_all(b"GET /v1/shelves/1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let (_, closed) = read_all(&mut sock, Duration::from_secs(5)).await;
    assert!(
        closed && started.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn http2_streams_per_connection_are_capped() {
    let h = Harness::start_with("[server.limits]\nmax_concurrent_streams = 7\n", "").await;
    let sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(sock).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // The server's SETTINGS arrive with the first exchange.
    let req = http::Request::get("http://x/v1/shelves/1")
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.current_max_send_streams(), 7);
}

#[tokio::test]
async fn many_concurrent_requests_on_one_http2_connection_all_succeed() {
    let h = Harness::start().await;
    let client = support::HttpClient::http2(h.gateway.addr);
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .get(&format!("/v1/shelves/{}", 1 + i % 2))
                    .await
                    .status
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
}

/// A backend reply message over `max_grpc_message_bytes` is the backend's
/// fault: 502 / INTERNAL on every protocol, naming the limit, counted as
/// INTERNAL in the metrics, for a unary reply and mid-stream alike; the
/// gateway keeps serving.
#[tokio::test]
async fn a_reply_over_the_message_limit_is_the_backends_fault_on_every_protocol() {
    use support::protocols::{call, gateway, EVERY_PROTOCOL};
    // The probe's reply echoes the request headers: a long one makes the
    // reply large while the request message stays empty.
    let h = gateway("[server.limits]\nmax_grpc_message_bytes = 512\n", "").await;
    let pad = "p".repeat(2000);
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("x-pad", pad.as_str())], "", None).await;
        assert_eq!(seen.code, 13, "{protocol:?}: INTERNAL, got {seen:?}");
        assert!(
            seen.message.contains("max_grpc_message_bytes"),
            "{protocol:?}: the error names the limit: {seen:?}"
        );
        assert!(seen.metadata.is_empty(), "{protocol:?}: {seen:?}");
        let fine = call(&h, protocol, &[], "", None).await;
        assert_eq!(fine.code, 0, "{protocol:?}: a small reply still passes");
    }
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[("x-pad", pad.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(r.json()["code"], 13);

    // A server stream's events over the limit end the stream with the error.
    let r = h.client.get("/v1/feed?count=2&padding=100").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.client.get("/v1/feed?count=3&padding=1000").await;
    let body = r.text();
    assert!(
        body.contains("max_grpc_message_bytes") && body.contains("\"code\":13"),
        "the stream ends with the error: {body}"
    );

    let admin = support::HttpClient::new(h.gateway.admin_addr.unwrap());
    let metrics = admin.get("/metrics").await.text();
    for method in ["Probe/Headers", "Feed/Watch"] {
        let line = format!(
            "portico_calls_total{{method=\"portico.demo.v1.{method}\",upstream=\"demo\",code=\"INTERNAL\"}}"
        );
        assert!(
            metrics.lines().any(|l| l.starts_with(&line)),
            "{line} in\n{metrics}"
        );
    }
}

/// The message the gateway builds from a REST body and its URL, or from a
/// WebSocket message, may come out larger than `max_grpc_message_bytes`
/// (which bounds what gRPC, gRPC-Web and Connect clients send): it still
/// reaches the backend.
#[tokio::test]
async fn a_message_built_from_bounded_input_is_not_refused_for_its_size() {
    let h = Harness::start_with("[server.limits]\nmax_grpc_message_bytes = 1000\n", "").await;
    // An upload of exactly the limit, wrapped with its name and content type.
    let r = h
        .client
        .send(
            http::Method::PUT,
            "/v1/shelves/1/books/1/cover",
            &[("content-type", "image/png")],
            "x".repeat(1000),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["size"], "1000", "{}", r.text());
    // A long path value: the backend answers for it (no such shelf).
    let long = "s".repeat(1500);
    let r = h.client.get(&format!("/v1/shelves/{long}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    // A WebSocket call opened on the same long path.
    let mut ws = support::json_v1_at(&h, &format!("/v1/shelves/{long}")).await;
    let status = serde_json::json!({ "status": support::ws_status(&mut ws).await });
    assert_eq!(
        status["status"]["code"], 5,
        "NOT_FOUND from the backend: {status}"
    );
}

/// A connection that never sends a byte is closed at `header_read_timeout`,
/// however many there are, not kept for the idle timeout.
#[tokio::test]
async fn connections_that_send_nothing_are_closed_at_the_header_timeout() {
    let h = Harness::start_with("[server.limits]\nheader_read_timeout = \"400ms\"\n", "").await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(h.gateway.addr).await.unwrap());
    }
    let started = Instant::now();
    for (i, sock) in silent.iter_mut().enumerate() {
        let (_, closed) = read_all(sock, Duration::from_secs(5)).await;
        assert!(closed, "silent connection {i} still open after 5 s");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

/// An HTTP/2 client that sends its preface and then nothing is told to go
/// at `header_read_timeout` and dropped soon after, even if it never
/// acknowledges the GOAWAY; the same for one stuck in a header block.
#[tokio::test]
async fn a_silent_http2_connection_is_closed_at_the_header_timeout() {
    use support::h2raw::{frame, CONTINUATION, HEADERS, PREFACE, SETTINGS};
    let h = Harness::start_with("[server.limits]\nheader_read_timeout = \"400ms\"\n", "").await;
    let unfinished = {
        let mut bytes = frame(HEADERS, 0, 1, &support::h2raw::get_block("/v1/shelves/1"));
        bytes.extend(frame(CONTINUATION, 0, 1, &[]));
        bytes
    };
    for (what, after_preface) in [
        ("nothing", Vec::new()),
        ("an unfinished header block", unfinished),
    ] {
        let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        hello.extend(after_preface);
        sock.write_all(&hello).await.unwrap();
        let started = Instant::now();
        let (_, closed) = read_all(&mut sock, Duration::from_secs(10)).await;
        assert!(closed, "{what}: still open after 10 s");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: closed after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

/// One address cannot take every connection: past
/// `max_connections_per_ip`, its new connections are closed at once, and a
/// place freed is a place to use again.
#[tokio::test]
async fn one_address_cannot_hold_more_than_its_connections() {
    let h = Harness::start_with("[server.limits]\nmax_connections_per_ip = 3\n", "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
        sock.write_all(b"GET /v1/shelves/1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = sock.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(sock);
    }
    let mut fourth = TcpStream::connect(h.gateway.addr).await.unwrap();
    let _ = fourth
        .write_all(b"GET /v1/shelves/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, closed) = read_all(&mut fourth, Duration::from_secs(2)).await;
    assert!(
        closed && answer.is_empty(),
        "the fourth connection is closed unanswered"
    );
    drop(held.pop());
    let addr = h.gateway.addr;
    assert!(
        support::eventually_async(|| async move {
            let Ok(mut sock) = TcpStream::connect(addr).await else {
                return false;
            };
            let _ = sock
                .write_all(b"GET /v1/shelves/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let (answer, _) = read_all(&mut sock, Duration::from_secs(2)).await;
            answer.starts_with(b"HTTP/1.1 200")
        })
        .await,
        "a freed place is usable again"
    );
}
