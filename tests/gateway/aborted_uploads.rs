//! An aborted client stream is never presented to the backend as complete.
//! The backend here is a bare HTTP/2 server that records, for each stream,
//! how its request body ended on the wire: END_STREAM (the upload is whole)
//! or RST_STREAM (it was abandoned). Every way a client can abandon an
//! upload, on every protocol, must reach it as a reset.

use crate::support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use portico::app;
use portico::config::Config;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use support::frame_bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How a request body ended, as the backend's HTTP/2 stack saw it.
#[derive(Debug, PartialEq)]
enum BodyEnd {
    /// END_STREAM after this many bytes.
    Complete(usize),
    /// RST_STREAM with this reason.
    Reset(String),
}

/// A raw HTTP/2 gRPC backend: answers every stream's headers at once, reads
/// the request body to its end and reports how it ended; a complete body gets
/// an OK status with an empty message.
async fn frame_watching_backend() -> (SocketAddr, mpsc::UnboundedReceiver<BodyEnd>) {
    watching_backend(true).await
}

/// The same, answering headers at once (`headers_first`) or, as a
/// client-streaming method usually does, only once the upload has ended.
/// How each stream ended is read off the wire, frame by frame, before the
/// HTTP/2 stack sees it: a stack that reads an END_STREAM and a RST_STREAM
/// in one go reports only the reset, which would hide a gateway that sent
/// both.
async fn watching_backend(headers_first: bool) -> (SocketAddr, mpsc::UnboundedReceiver<BodyEnd>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let tapped = FrameTap::new(socket, tx.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tapped).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let response = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut response = Some(response);
                        let mut send = None;
                        if headers_first {
                            let Ok(s) = respond.send_response(response.take().unwrap(), false)
                            else {
                                return;
                            };
                            send = Some(s);
                        }
                        let mut body = req.into_body();
                        let complete = loop {
                            match body.data().await {
                                Some(Ok(chunk)) => {
                                    let _ = body.flow_control().release_capacity(chunk.len());
                                }
                                Some(Err(_)) => break false,
                                None => break true,
                            }
                        };
                        if let Some(response) = response {
                            let Ok(s) = respond.send_response(response, false) else {
                                return;
                            };
                            send = Some(s);
                        }
                        let Some(mut send) = send else { return };
                        if complete {
                            let _ = send.send_data(Bytes::from(frame_bytes(0, &[])), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let _ = send.send_trailers(trailers);
                        }
                    });
                }
            });
        }
    });
    (addr, rx)
}

/// Reads the client's HTTP/2 frames as they pass and reports, per stream,
/// the first of END_STREAM (with the DATA bytes before it) or RST_STREAM.
struct FrameTap {
    socket: TcpStream,
    seen: Vec<u8>,
    /// The client's 24-byte connection preface, still to skip.
    preface: usize,
    data: std::collections::HashMap<u32, usize>,
    ended: std::collections::HashSet<u32>,
    tx: mpsc::UnboundedSender<BodyEnd>,
}

impl FrameTap {
    fn new(socket: TcpStream, tx: mpsc::UnboundedSender<BodyEnd>) -> Self {
        FrameTap {
            socket,
            seen: Vec::new(),
            preface: 24,
            data: Default::default(),
            ended: Default::default(),
            tx,
        }
    }

    fn frames(&mut self) {
        let skip = self.preface.min(self.seen.len());
        self.seen.drain(..skip);
        self.preface -= skip;
        while self.seen.len() >= 9 {
            let len = u32::from_be_bytes([0, self.seen[0], self.seen[1], self.seen[2]]) as usize;
            if self.seen.len() < 9 + len {
                return;
            }
            let (kind, flags) = (self.seen[3], self.seen[4]);
            let stream = u32::from_be_bytes(self.seen[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let payload = &self.seen[9..9 + len];
            if stream != 0 && !self.ended.contains(&stream) {
                const END_STREAM: u8 = 0x1;
                let end = match kind {
                    0 => {
                        *self.data.entry(stream).or_default() += len;
                        flags & END_STREAM != 0
                    }
                    1 => flags & END_STREAM != 0,
                    _ => false,
                };
                if end {
                    let total = self.data.get(&stream).copied().unwrap_or(0);
                    let _ = self.tx.send(BodyEnd::Complete(total));
                    self.ended.insert(stream);
                } else if kind == 3 {
                    let code = u32::from_be_bytes(payload[..4].try_into().unwrap());
                    let _ = self
                        .tx
                        .send(BodyEnd::Reset(format!("{:?}", h2::Reason::from(code))));
                    self.ended.insert(stream);
                }
            }
            self.seen.drain(..9 + len);
        }
    }
}

impl tokio::io::AsyncRead for FrameTap {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.socket).poll_read(cx, buf);
        if polled.is_ready() {
            let fresh = buf.filled()[before..].to_vec();
            self.seen.extend_from_slice(&fresh);
            self.frames();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for FrameTap {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

async fn gateway(backend: SocketAddr) -> app::Gateway {
    gateway_with(backend, "").await
}

/// A gateway like [`gateway_with`]'s whose access log goes to a file in a
/// fresh folder named after `purpose`; returns the folder (for the test to
/// remove) and the log's path.
async fn gateway_with_access_log(
    backend: SocketAddr,
    purpose: &str,
) -> (app::Gateway, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-{purpose}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let gw = gateway_with(
        backend,
        &format!("[access_log]\npath = \"{}\"\n", log.display()),
    )
    .await;
    (gw, dir, log)
}

async fn gateway_with(backend: SocketAddr, sections: &str) -> app::Gateway {
    let text = format!(
        r#"
{sections}
[server]
listen = "127.0.0.1:0"

[descriptors]
proto_paths = ["{proto}"]
protos = ["portico/demo/v1/feed.proto", "portico/demo/v1/chat.proto"]

[upstreams.watched]
endpoints = ["{backend}"]

[websocket]
max_message_bytes = 1024

[[routes]]
grpc_service = "portico.demo.v1.Feed"
upstream = "watched"

[[routes]]
grpc_service = "portico.demo.v1.Chat"
upstream = "watched"
"#,
        proto = support::proto_dir()
    );
    app::start(Config::from_toml(&text).unwrap()).await.unwrap()
}

async fn next_end(rx: &mut mpsc::UnboundedReceiver<BodyEnd>) -> BodyEnd {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the backend never saw the stream end")
        .unwrap()
}

fn event(seq: i64) -> Vec<u8> {
    use prost::Message as _;
    portico::demo::backends::pb::Event {
        seq,
        topic: "t".into(),
        text: "x".into(),
    }
    .encode_to_vec()
}

/// Sends an HTTP/1.1 request with a chunked body whose first chunk is
/// `first`, waits until the backend has the stream, then drops the connection.
async fn abandon_http1_upload(gateway: SocketAddr, path: &str, content_type: &str, first: &[u8]) {
    let mut socket = TcpStream::connect(gateway).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {gateway}\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
        .write_all(format!("{:x}\r\n", first.len()).as_bytes())
        .await
        .unwrap();
    socket.write_all(first).await.unwrap();
    socket.write_all(b"\r\n").await.unwrap();
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(socket);
}

#[tokio::test]
async fn a_complete_upload_is_ended_so_the_watcher_can_tell_the_difference() {
    let (backend, mut ends) = frame_watching_backend().await;
    let gw = gateway(backend).await;
    let client = support::HttpClient::new(gw.addr);
    let body = format!(
        "{}\n{}\n",
        json!({"seq": 1, "topic": "a"}),
        json!({"seq": 2, "topic": "a"})
    );
    let r = client
        .send(http::Method::POST, "/v1/feed:upload", &[], body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(matches!(next_end(&mut ends).await, BodyEnd::Complete(n) if n > 0));
}

#[tokio::test]
async fn an_upload_abandoned_over_http1_is_reset_on_rest_grpc_web_and_connect() {
    let (backend, mut ends) = frame_watching_backend().await;
    let (gw, dir, log) = gateway_with_access_log(backend, "abandon").await;
    let ndjson = format!("{}\n", json!({"seq": 1, "topic": "a"}));
    let cases: [(&str, &str, &str, Vec<u8>); 3] = [
        (
            "REST NDJSON",
            "/v1/feed:upload",
            "application/x-ndjson",
            ndjson.into_bytes(),
        ),
        (
            "gRPC-Web",
            "/portico.demo.v1.Feed/Upload",
            "application/grpc-web+proto",
            frame_bytes(0, &event(1)),
        ),
        (
            "Connect",
            "/portico.demo.v1.Feed/Upload",
            "application/connect+proto",
            frame_bytes(0, &event(1)),
        ),
    ];
    for (name, path, content_type, first) in cases {
        abandon_http1_upload(gw.addr, path, content_type, &first).await;
        let end = next_end(&mut ends).await;
        assert!(matches!(end, BodyEnd::Reset(_)), "{name}: {end:?}");
    }
    // A client that left is a call it abandoned, on each of them as on
    // gRPC and WebSocket: CANCELLED with no error of its own, and no status
    // logged unless the reply had started (gRPC-Web's and Connect's
    // streams send their 200 as the backend's headers come).
    let lines = || support::access_log_lines(&log);
    support::eventually(|| lines().len() >= 3).await;
    for line in lines() {
        assert_eq!(line["grpc_status"], "CANCELLED", "{line}");
        let started = line["protocol"] != "rest" && line["http_status"] == 200;
        assert!(line["http_status"].is_null() || started, "{line}");
        assert!(line["error"].is_null(), "{line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// An HTTP/2 client that resets its stream mid-upload, with any code:
/// `NO_ERROR` too, which hyper reads as the body's end (RFC 9113 gives it
/// to servers that answered early, not to clients abandoning a request).
// Threads, as `serve` runs: the reset and the end race between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_resets_its_stream_resets_the_backends_on_every_protocol() {
    for headers_first in [false, true] {
        resets_reach_the_backend(headers_first).await;
    }
}

async fn resets_reach_the_backend(headers_first: bool) {
    let (backend, mut ends) = watching_backend(headers_first).await;
    let gw = gateway(backend).await;
    let ndjson = format!("{}\n", json!({"seq": 1, "topic": "a"}));
    let cases: [(&str, &str, &str, Vec<u8>); 4] = [
        (
            "gRPC",
            "/portico.demo.v1.Feed/Upload",
            "application/grpc",
            frame_bytes(0, &event(1)),
        ),
        (
            "gRPC-Web",
            "/portico.demo.v1.Feed/Upload",
            "application/grpc-web+proto",
            frame_bytes(0, &event(1)),
        ),
        (
            "Connect",
            "/portico.demo.v1.Feed/Upload",
            "application/connect+proto",
            frame_bytes(0, &event(1)),
        ),
        (
            "REST NDJSON",
            "/v1/feed:upload",
            "application/x-ndjson",
            ndjson.into_bytes(),
        ),
    ];
    let socket = TcpStream::connect(gw.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(conn);
    // Rounds: the end hyper reports and the reset race inside the gateway.
    // Each reset comes once the backend has the stream (one sent sooner
    // may stop the call before any backend stream opens).
    for round in 0..3 {
        for reason in [h2::Reason::CANCEL, h2::Reason::NO_ERROR] {
            for (name, path, content_type, first) in &cases {
                let mut client = client.clone().ready().await.unwrap();
                let req = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://{}{path}", gw.addr))
                    .header("content-type", *content_type)
                    .header("te", "trailers")
                    .body(())
                    .unwrap();
                let (_response, mut send) = client.send_request(req, false).unwrap();
                send.send_data(Bytes::from(first.clone()), false).unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                send.send_reset(reason);
                let end = next_end(&mut ends).await;
                assert!(
                    matches!(end, BodyEnd::Reset(_)),
                    "{name}, reset with {reason:?}, round {round}, backend's headers first: {headers_first}: {end:?}"
                );
            }
        }
    }
    // A stream that ends properly still reaches the backend whole.
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/portico.demo.v1.Feed/Upload", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(req, false).unwrap();
    send.send_data(Bytes::from(frame_bytes(0, &event(1))), true)
        .unwrap();
    assert!(matches!(next_end(&mut ends).await, BodyEnd::Complete(n) if n > 0));
    assert_eq!(response.await.unwrap().status(), 200);
}

/// The ways a WebSocket client abandons a client-streaming call.
#[derive(Debug, Clone, Copy)]
enum Abandon {
    CancelFrame,
    NormalClose,
    DroppedConnection,
    OversizeMessage,
}

#[tokio::test]
async fn a_websocket_call_abandoned_in_any_way_is_reset_at_the_backend() {
    let (backend, mut ends) = frame_watching_backend().await;
    let gw = gateway(backend).await;
    // Rounds, because the bug this guards against was a race.
    let rounds = [
        Abandon::CancelFrame,
        Abandon::NormalClose,
        Abandon::DroppedConnection,
        Abandon::OversizeMessage,
    ]
    .repeat(3);
    for how in rounds {
        for method in [
            "/portico.demo.v1.Feed/Upload",
            "/portico.demo.v1.Chat/Converse",
        ] {
            let mut req = format!("ws://{}/ws", gw.addr)
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            let message = if method.ends_with("Upload") {
                json!({"seq": 1, "topic": "a"})
            } else {
                json!({"user": "ann", "text": "hi"})
            };
            ws.send(Message::text(
                json!({"id": "u", "open": method, "message": message}).to_string(),
            ))
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            match how {
                Abandon::CancelFrame => {
                    ws.send(Message::text(
                        json!({"id": "u", "cancel": true}).to_string(),
                    ))
                    .await
                    .unwrap();
                }
                Abandon::NormalClose => ws.close(None).await.unwrap(),
                Abandon::DroppedConnection => drop(ws),
                Abandon::OversizeMessage => {
                    let _ = ws.send(Message::text("x".repeat(200 * 1024))).await;
                }
            }
            let end = next_end(&mut ends).await;
            assert!(
                matches!(end, BodyEnd::Reset(_)),
                "{how:?} on {method}: {end:?}"
            );
        }
    }
}

/// A unary body cut short by a reset with `NO_ERROR` is no request: a
/// Connect unary body has no framing of its own, so its first fields alone
/// would read as a whole, smaller message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_body_cut_by_a_reset_is_never_called() {
    use prost::Message as _;
    let h = support::Harness::start().await;
    let books = |h: &support::Harness| {
        let client = h.client.clone();
        async move {
            client.get("/v1/shelves/1/books").await.json()["books"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    let before = books(&h).await;
    // The first fields of a request whose `book_id` was still to come.
    let request = portico::demo::backends::pb::CreateBookRequest {
        parent: "shelves/1".into(),
        book: Some(portico::demo::backends::pb::Book {
            title: "cut short".into(),
            ..Default::default()
        }),
        book_id: String::new(),
    }
    .encode_to_vec();
    let socket = TcpStream::connect(h.gateway.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..10 {
        let mut client = client.clone().ready().await.unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{}/portico.demo.v1.Library/CreateBook",
                h.gateway.addr
            ))
            .header("content-type", "application/proto")
            .header("connect-protocol-version", "1")
            .body(())
            .unwrap();
        let (_response, mut send) = client.send_request(req, false).unwrap();
        send.send_data(Bytes::from(request.clone()), false).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        send.send_reset(h2::Reason::NO_ERROR);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(books(&h).await, before, "no book was created");
}

/// The same reset, on every protocol that sends a call's one message as
/// its body: the client left, so the access log says CANCELLED with no
/// status sent and no error, as for a reset with any other code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_message_body_cut_by_a_no_error_reset_is_logged_as_a_client_that_left() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cut-noerror-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let h =
        support::Harness::start_with(&format!("[access_log]\npath = \"{}\"\n", log.display()), "")
            .await;
    // Each body is the start of a longer one its headers announce.
    let grpc_start: &[u8] = &[0, 0, 0, 0, 40, 10, 9, b's', b'h'];
    let cases: [(&str, &str, &str, &[u8]); 5] = [
        (
            "rest",
            "/v1/shelves/1/books",
            "application/json",
            br#"{"title": "cut"#,
        ),
        (
            "grpc",
            "/portico.demo.v1.Library/CreateBook",
            "application/grpc",
            grpc_start,
        ),
        (
            "grpc-web",
            "/portico.demo.v1.Library/CreateBook",
            "application/grpc-web+proto",
            grpc_start,
        ),
        (
            "connect",
            "/portico.demo.v1.Library/CreateBook",
            "application/json",
            br#"{"parent": "shel"#,
        ),
        (
            "mcp",
            "/mcp",
            "application/json",
            br#"{"jsonrpc": "2.0", "id": 1, "method": "tools/ca"#,
        ),
    ];
    let socket = TcpStream::connect(h.gateway.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(conn);
    for (protocol, path, content_type, start) in cases {
        let mut client = client.clone().ready().await.unwrap();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", h.gateway.addr))
            .header("content-type", content_type)
            .header("content-length", "100")
            .header("accept", "application/json, text/event-stream")
            .header("te", "trailers");
        if protocol == "connect" {
            req = req.header("connect-protocol-version", "1");
        }
        let req = req.body(()).unwrap();
        let (_response, mut send) = client.send_request(req, false).unwrap();
        send.send_data(Bytes::from_static(start), false).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        send.send_reset(h2::Reason::NO_ERROR);
    }
    let lines = || support::access_log_lines(&log);
    support::eventually(|| lines().len() >= cases.len()).await;
    let lines = lines();
    for (protocol, path, _, _) in cases {
        let line = lines
            .iter()
            .find(|l| l["protocol"] == protocol)
            .unwrap_or_else(|| panic!("{protocol}: no line in {lines:?}"));
        assert_eq!(line["path"], path, "{line}");
        assert_eq!(line["grpc_status"], "CANCELLED", "{protocol}: {line}");
        assert!(line["http_status"].is_null(), "{protocol}: {line}");
        assert!(line["error"].is_null(), "{protocol}: {line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A call cut because the session was closed for the client's frame is
/// logged as that, not as a client that merely left.
#[tokio::test]
async fn a_call_cut_by_a_close_for_the_clients_frame_says_why() {
    let (backend, mut ends) = frame_watching_backend().await;
    let (gw, dir, log) = gateway_with_access_log(backend, "cut").await;
    let mut ws = support::json_v1_to(gw.addr, "/ws").await;
    ws.send(Message::text(
        json!({"id": "u", "open": "/portico.demo.v1.Feed/Upload", "message": {"seq": 1, "topic": "a"}})
            .to_string(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Over twice websocket.max_message_bytes (and 64 KiB): closed with 1009.
    let _ = ws.send(Message::text("x".repeat(200 * 1024))).await;
    assert!(matches!(next_end(&mut ends).await, BodyEnd::Reset(_)));
    let call_line = || -> Option<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["kind"] == "call")
    };
    support::eventually(|| call_line().is_some()).await;
    let line = call_line().unwrap();
    assert_eq!(line["grpc_status"], "RESOURCE_EXHAUSTED", "{line}");
    assert_eq!(line["origin"], "client", "{line}");
    assert!(
        line["error"].as_str().is_some_and(|e| e.contains("1009")),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A `portico.json.v1` session with an upload `u` under way: opened with
/// its first message, which the backend has had time to take.
async fn session_uploading_u(gateway: SocketAddr) -> support::Ws {
    let mut ws = support::json_v1_to(gateway, "/ws").await;
    ws.send(Message::text(
        json!({"id": "u", "open": "/portico.demo.v1.Feed/Upload", "message": {"seq": 1, "topic": "a"}})
            .to_string(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws
}

/// A frame over `websocket.max_message_bytes` ends the call it names (its
/// id read without the message) with code 8, reset at the backend, never
/// completed without the message.
#[tokio::test]
async fn an_upload_that_lost_an_oversized_message_is_reset_not_completed() {
    let (backend, mut ends) = frame_watching_backend().await;
    let gw = gateway(backend).await;
    let mut ws = session_uploading_u(gw.addr).await;
    // Over max_message_bytes (1024 here), under the close-the-connection size.
    ws.send(Message::text(
        json!({"id": "u", "message": {"seq": 2, "topic": "x".repeat(2000)}}).to_string(),
    ))
    .await
    .unwrap();
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 8, "{status}");
    // The client's end comes too late to complete it.
    let _ = ws
        .send(Message::text(json!({"id": "u", "end": true}).to_string()))
        .await;
    assert!(matches!(next_end(&mut ends).await, BodyEnd::Reset(_)));
}

/// A message the gateway refuses (a value of the wrong type, a frame that
/// is not JSON) ends the upload it was for with INVALID_ARGUMENT, reset at
/// the backend, in every dialect, as a bad line or envelope ends it on
/// REST and Connect: going on without it would complete the upload with a
/// hole. A frame that is not JSON, or a message that names no call (no
/// `id`, an empty, null or non-string one), may be any call's, so it ends
/// every upload still taking input; so does an `open` of the id of an
/// upload under way, whose message may have been meant for it.
#[tokio::test]
async fn an_upload_that_lost_a_refused_message_is_reset_not_completed() {
    let (backend, mut ends) = frame_watching_backend().await;
    let gw = gateway(backend).await;
    let second = json!({"seq": 2, "topic": "b"});
    for bad in [
        json!({"id": "u", "message": {"seq": "x"}}).to_string(),
        json!({"id": "u", "message": {"seq": 2, "colour": "red"}}).to_string(),
        "{\"id\": \"u\", \"message\": {\"seq\": 2".to_owned(),
        json!({"message": second}).to_string(),
        json!({"id": "", "message": second}).to_string(),
        json!({"id": null, "message": second}).to_string(),
        json!({"id": 7, "message": second}).to_string(),
        json!({"id": "u", "open": "/portico.demo.v1.Feed/Upload", "message": second}).to_string(),
    ] {
        let mut ws = session_uploading_u(gw.addr).await;
        ws.send(Message::text(bad.clone())).await.unwrap();
        let status = support::ws_status(&mut ws).await;
        assert_eq!(status["code"], 3, "{bad}: {status}");
        let _ = ws
            .send(Message::text(json!({"id": "u", "end": true}).to_string()))
            .await;
        assert!(
            matches!(next_end(&mut ends).await, BodyEnd::Reset(_)),
            "{bad}"
        );
    }
    // A session opened on the method's path is one call: every frame is
    // its own, an `open` among them.
    for protocol in ["portico.json.v1", "portico.proto.v1"] {
        let mut req = format!("ws://{}/portico.demo.v1.Feed/Upload", gw.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", protocol.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let first = if protocol == "portico.json.v1" {
            Message::text(json!({"message": {"seq": 1, "topic": "a"}}).to_string())
        } else {
            use prost::Message as _;
            let event = portico::demo::backends::pb::Event {
                seq: 1,
                topic: "a".into(),
                text: String::new(),
            };
            Message::binary(event.encode_to_vec())
        };
        ws.send(first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws.send(Message::text(
            json!({"open": "/portico.demo.v1.Feed/Upload"}).to_string(),
        ))
        .await
        .unwrap();
        let status = support::ws_status(&mut ws).await;
        assert_eq!(status["code"], 3, "{protocol}: {status}");
        let _ = ws
            .send(Message::text(json!({"end": true}).to_string()))
            .await;
        assert!(
            matches!(next_end(&mut ends).await, BodyEnd::Reset(_)),
            "{protocol}"
        );
    }
    // The plain dialect: the connection is the call.
    for bad in ["{\"seq\": \"x\"}", "{\"seq\": 2"] {
        let url = format!("ws://{}/portico.demo.v1.Feed/Upload", gw.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::text("{\"seq\": 1, \"topic\": \"a\"}"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws.send(Message::text(bad)).await.unwrap();
        let _ = ws.send(Message::text("")).await;
        let mut close = None;
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Close(c) = frame {
                close = c.map(|c| u16::from(c.code));
            }
        }
        assert_eq!(close, Some(4003), "{bad}");
        assert!(
            matches!(next_end(&mut ends).await, BodyEnd::Reset(_)),
            "{bad}"
        );
    }
}

/// A message that names no call may have been any one's: every upload
/// still taking input ends, not only one of them. So does one whose `id`
/// is given twice, which names neither call for certain.
#[tokio::test]
async fn a_nameless_message_ends_every_upload_taking_input() {
    let (backend, mut ends) = frame_watching_backend().await;
    let gw = gateway(backend).await;
    for nameless in [
        r#"{"message": {"seq": 2, "topic": "c"}}"#,
        r#"{"id": "u", "id": "v", "message": {"seq": 2, "topic": "c"}}"#,
        r#"{"id": "v", "id": "u", "message": {"seq": 2, "topic": "c"}}"#,
    ] {
        let mut ws = session_uploading_u(gw.addr).await;
        ws.send(Message::text(
            json!({"id": "v", "open": "/portico.demo.v1.Feed/Upload", "message": {"seq": 1, "topic": "b"}})
                .to_string(),
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws.send(Message::text(nameless)).await.unwrap();
        let mut ended = Vec::new();
        for _ in 0..2 {
            let status = support::ws_status(&mut ws).await;
            ended.push(status.to_string());
            assert!(
                matches!(next_end(&mut ends).await, BodyEnd::Reset(_)),
                "{nameless}"
            );
        }
        assert!(
            ended.iter().all(|s| s.contains(r#""code":3"#)),
            "{nameless}: {ended:?}"
        );
    }
}

/// A frame that names no call and holds no message (an `open`, `end` or
/// `cancel` without a readable `id`) loses no call's input: it gets an
/// `error` frame without an id, and the upload under way goes on and
/// completes.
#[tokio::test]
async fn a_nameless_frame_without_a_message_leaves_the_uploads_alone() {
    let (backend, mut ends) = frame_watching_backend().await;
    let gw = gateway(backend).await;
    let mut ws = session_uploading_u(gw.addr).await;
    for nameless in [
        json!({"id": "", "open": "/portico.demo.v1.Feed/Upload", "message": {"seq": 1}}),
        json!({"open": "/portico.demo.v1.Feed/Upload"}),
        json!({"id": null, "cancel": true}),
        json!({"id": "", "cancel": true}),
        json!({"end": true}),
        json!({"id": 5, "end": true}),
    ] {
        ws.send(Message::text(nameless.to_string())).await.unwrap();
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("{nameless}: no frame")
        };
        let frame: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(frame["error"]["code"], 3, "{nameless}: {frame}");
        assert!(
            frame.get("id").is_none_or(|id| id == ""),
            "{nameless}: {frame}"
        );
    }
    ws.send(Message::text(json!({"id": "u", "end": true}).to_string()))
        .await
        .unwrap();
    assert!(matches!(next_end(&mut ends).await, BodyEnd::Complete(n) if n > 0));
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 0, "{status}");
}

/// An oversized frame ends only the call it names: an oversized `open`
/// starts no call and is refused by its id, while an upload under way on
/// the same session goes on and completes.
#[tokio::test]
async fn an_oversized_open_leaves_the_other_uploads_alone() {
    let (backend, mut ends) = frame_watching_backend().await;
    let gw = gateway(backend).await;
    let mut ws = session_uploading_u(gw.addr).await;
    ws.send(Message::text(
        json!({"id": "v", "open": "/portico.demo.v1.Feed/Upload", "message": {"seq": 1, "topic": "x".repeat(2000)}})
            .to_string(),
    ))
    .await
    .unwrap();
    let refused = support::ws_status(&mut ws).await;
    assert_eq!(refused["code"], 8, "{refused}");
    ws.send(Message::text(json!({"id": "u", "end": true}).to_string()))
        .await
        .unwrap();
    assert!(matches!(next_end(&mut ends).await, BodyEnd::Complete(n) if n > 0));
}
