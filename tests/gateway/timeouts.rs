//! Timeouts on by default: a client that stalls its body, a backend that
//! never answers, or one that goes quiet mid-reply, each gets a clear
//! error naming the timeout, and the backend's call is cancelled.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{frame_bytes, Harness, HttpClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LIMITS: &str = "body_read_timeout = \"300ms\"\nupstream_header_timeout = \"300ms\"\nstream_idle_timeout = \"300ms\"\n";

fn with_limits(text: String) -> String {
    text.replacen(
        "admin = \"127.0.0.1:0\"\n",
        &format!("admin = \"127.0.0.1:0\"\n\n[server.limits]\n{LIMITS}"),
        1,
    )
}

#[tokio::test]
async fn a_stalled_request_body_is_a_408_naming_the_timeout() {
    let h = Harness::start_with_config(|b| with_limits(support::config_text(b, "", ""))).await;
    let mut socket = TcpStream::connect(h.gateway.addr).await.unwrap();
    socket
        .write_all(b"POST /portico.demo.v1.Probe/Headers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.read(&mut answer))
        .await
        .expect("an answer before 3 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(h.backends.probe.calls(), 0);
    assert_eq!(h.client.get("/v1/probe/headers").await.status, 200);
}

/// A raw HTTP/2 client connection to `addr`, driven in a task of its own.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    client
}

/// An HTTP/2 answer as text: its status, headers, body and trailers.
async fn everything_said(resp: http::Response<h2::RecvStream>) -> String {
    let mut said = format!("{} {:?}", resp.status(), resp.headers());
    let mut body = resp.into_body();
    while let Some(Ok(chunk)) = body.data().await {
        said.push_str(&String::from_utf8_lossy(&chunk));
    }
    if let Ok(Some(trailers)) = body.trailers().await {
        said.push_str(&format!("{trailers:?}"));
    }
    said
}

/// Sends `first` on a new stream to `path` over HTTP/2 and then nothing,
/// keeping the stream open; returns everything the gateway answered
/// (headers, body, trailers) as text, and how long the answer took.
/// A `POST` of `path` at `addr` over `client` with `headers` (and `te:
/// trailers`), its body left open: the answer to wait for, and the body.
async fn open_post(
    client: &h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let mut req = http::Request::post(format!("http://{addr}{path}")).header("te", "trailers");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut client = client.clone().ready().await.unwrap();
    client.send_request(req.body(()).unwrap(), false).unwrap()
}

async fn stall_after(
    client: &h2::client::SendRequest<bytes::Bytes>,
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    first: Vec<u8>,
) -> (String, Duration) {
    let (resp, mut send) = open_post(client, addr, path, &[("content-type", content_type)]).await;
    send.send_data(bytes::Bytes::from(first), false).unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(3), resp)
        .await
        .expect("an answer before 3 s")
        .unwrap();
    let took = started.elapsed();
    let said = everything_said(resp).await;
    drop(send);
    (said, took)
}

/// A unary gRPC or gRPC-Web call whose message stalls half-way is the
/// same client stall as a REST body: named `body_read_timeout`.
#[tokio::test]
async fn a_stalled_unary_grpc_message_names_body_read_timeout() {
    let h = Harness::start_with_config(|b| {
        with_limits(support::config_text(b, "", "")).replace(
            "stream_idle_timeout = \"300ms\"",
            "stream_idle_timeout = \"5s\"",
        )
    })
    .await;
    let client = h2_client(h.gateway.addr).await;
    for content_type in ["application/grpc", "application/grpc-web+proto"] {
        // A length prefix for 10 bytes, and two of them.
        let (said, took) = stall_after(
            &client,
            h.gateway.addr,
            "/portico.demo.v1.Probe/Headers",
            content_type,
            vec![0, 0, 0, 0, 10, 1, 2],
        )
        .await;
        assert!(
            said.contains("\"grpc-status\": \"4\"") || said.contains("grpc-status:4\r\n"),
            "{content_type}: {said}"
        );
        assert!(said.contains("body_read_timeout"), "{content_type}: {said}");
        assert!(took < Duration::from_secs(2), "{content_type}");
    }
    assert_eq!(h.backends.probe.calls(), 0);
}

/// A client that sends its request a byte at a time, each within
/// `body_read_timeout`, is answered when the call's deadline passes, on
/// every protocol that reads a request before calling the backend, not
/// when its body finally ends; the backend is never called.
#[tokio::test]
async fn a_trickling_request_is_answered_when_its_deadline_passes() {
    use support::RouteKeys;
    let h = Harness::start_with_config(|b| {
        with_limits(support::config_text(b, "", "")).with_route_keys("Probe", "timeout = \"600ms\"")
    })
    .await;
    let client = h2_client(h.gateway.addr).await;
    let grpc_prefix = vec![0, 0, 0, 0, 100];
    for (protocol, content_type, extra, first) in [
        ("REST", "application/json", None, b"{".to_vec()),
        (
            "Connect",
            "application/json",
            Some(("connect-protocol-version", "1")),
            b"{".to_vec(),
        ),
        ("gRPC", "application/grpc", None, grpc_prefix.clone()),
        (
            "gRPC-Web",
            "application/grpc-web+proto",
            None,
            grpc_prefix.clone(),
        ),
    ] {
        let mut headers = vec![("content-type", content_type)];
        headers.extend(extra);
        let (resp, mut send) = open_post(
            &client,
            h.gateway.addr,
            "/portico.demo.v1.Probe/Headers",
            &headers,
        )
        .await;
        let started = Instant::now();
        send.send_data(bytes::Bytes::from(first), false).unwrap();
        // A byte every 100 ms: never a pause of body_read_timeout (300 ms),
        // and 100 bytes would take 10 s.
        let trickle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if send
                    .send_data(bytes::Bytes::from_static(b" "), false)
                    .is_err()
                {
                    break;
                }
            }
        });
        let resp = tokio::time::timeout(Duration::from_secs(3), resp)
            .await
            .unwrap_or_else(|_| panic!("{protocol}: no answer before 3 s"))
            .unwrap();
        let took = started.elapsed();
        let said = everything_said(resp).await;
        trickle.abort();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(2),
            "{protocol}: answered after {took:?}: {said}"
        );
        match protocol {
            "REST" | "Connect" => assert!(said.starts_with("504"), "{protocol}: {said}"),
            _ => assert!(
                said.contains("\"grpc-status\": \"4\""),
                "{protocol}: {said}"
            ),
        }
        assert!(
            said.contains("before its request had arrived"),
            "{protocol}: {said}"
        );
    }
    // MCP reads its body before it knows the tool, so its deadline: the
    // answer comes once the body is in, said the same way.
    let (resp, mut send) = open_post(
        &client,
        h.gateway.addr,
        "/mcp",
        &[("content-type", "application/json")],
    )
    .await;
    send.send_data(
        bytes::Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Probe_Headers","arguments":{"#,
        ),
        false,
    )
    .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        send.send_data(bytes::Bytes::from_static(b" "), false)
            .unwrap();
    }
    send.send_data(bytes::Bytes::from_static(b"}}}"), true)
        .unwrap();
    let said = everything_said(resp.await.unwrap()).await;
    assert!(said.starts_with("200"), "MCP: {said}");
    assert!(said.contains("\"isError\":true"), "MCP: {said}");
    assert!(
        said.contains("before its request had arrived"),
        "MCP: {said}"
    );
    assert_eq!(h.backends.probe.calls(), 0);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Stall {
    /// Takes the stream and never answers.
    BeforeHeaders,
    /// Answers with headers, then sends nothing more.
    AfterHeaders,
}

/// A raw HTTP/2 backend that stalls; reports each stream's reset.
async fn stalling_backend(stall: Stall) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = raw_h2_backend(move |req, mut respond| {
        let tx = tx.clone();
        async move {
            let mut body = req.into_body();
            while let Some(chunk) = body.data().await {
                if let Ok(c) = &chunk {
                    let _ = body.flow_control().release_capacity(c.len());
                }
            }
            // The request is in; now wait for the gateway to give up.
            let reset = if stall == Stall::AfterHeaders {
                let mut send = respond.send_response(grpc_headers(), false).unwrap();
                std::future::poll_fn(|cx| send.poll_reset(cx)).await
            } else {
                std::future::poll_fn(|cx| respond.poll_reset(cx)).await
            };
            let _ = tx.send(format!("{reset:?}"));
        }
    })
    .await;
    (addr, rx)
}

/// A raw HTTP/2 backend on a port of its own that hands each stream it is
/// sent to `stream`, in a task of its own.
async fn raw_h2_backend<F, Fut>(stream: F) -> SocketAddr
where
    F: Fn(http::Request<h2::RecvStream>, h2::server::SendResponse<bytes::Bytes>) -> Fut
        + Clone
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let stream = stream.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(stream(req, respond));
                }
            });
        }
    });
    addr
}

/// A gRPC reply's headers, status 200.
fn grpc_headers() -> http::Response<()> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

async fn gateway_to(backend: SocketAddr) -> portico::app::Gateway {
    let text = with_limits(support::config_text(backend, "", ""));
    portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_backend_that_never_answers_is_a_504_and_its_call_is_reset() {
    let (backend, mut resets) = stalling_backend(Stall::BeforeHeaders).await;
    let gw = gateway_to(backend).await;
    let client = HttpClient::new(gw.addr);
    let started = Instant::now();
    let r = client.get("/v1/shelves/1").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("upstream_header_timeout"), "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(3));
    let reset = tokio::time::timeout(Duration::from_secs(3), resets.recv()).await;
    assert!(reset.is_ok(), "the backend's stream was never reset");

    // gRPC: DEADLINE_EXCEEDED, trailers-only.
    let r = HttpClient::http2(gw.addr)
        .send(
            http::Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            &[("content-type", "application/grpc"), ("te", "trailers")],
            frame_bytes(0, &[]),
        )
        .await;
    assert_eq!(r.header("grpc-status"), Some("4"));
    assert!(r
        .header("grpc-message")
        .unwrap_or("")
        .contains("upstream_header_timeout"));
}

#[tokio::test]
async fn a_backend_that_goes_quiet_mid_reply_is_cut_off_naming_the_timeout() {
    let (backend, mut resets) = stalling_backend(Stall::AfterHeaders).await;
    let gw = gateway_to(backend).await;
    let client = HttpClient::new(gw.addr);
    // A server stream: the NDJSON ends with an error line.
    let r = client.get("/v1/feed?count=5").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("stream_idle_timeout"), "{}", r.text());
    assert!(tokio::time::timeout(Duration::from_secs(3), resets.recv())
        .await
        .is_ok());
    // A unary call whose reply never comes after its headers.
    let r = client.get("/v1/shelves/1").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("stream_idle_timeout"), "{}", r.text());
}

#[tokio::test]
async fn streams_that_keep_talking_are_not_cut_off() {
    // The limits are idle timeouts: a stream of messages 100 ms apart lasts
    // longer than any one of them.
    let h = Harness::start_with_config(|b| with_limits(support::config_text(b, "", ""))).await;
    let r = h.client.get("/v1/feed?count=6&interval_ms=100").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text().lines().count(), 6, "{}", r.text());
    assert!(!r.text().contains("error"), "{}", r.text());
}

/// A client stream whose client goes quiet ends at `stream_idle_timeout`
/// with `DEADLINE_EXCEEDED` blaming the client, the same over gRPC,
/// gRPC-Web, Connect and WebSocket.
#[tokio::test]
async fn a_client_stream_whose_client_goes_quiet_ends_the_same_on_every_protocol() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let h = Harness::start_with_config(|b| with_limits(support::config_text(b, "", ""))).await;
    let event = an_event();
    let client = h2_client(h.gateway.addr).await;
    for content_type in [
        "application/grpc",
        "application/grpc-web+proto",
        "application/connect+proto",
    ] {
        let (said, took) = stall_after(
            &client,
            h.gateway.addr,
            "/portico.demo.v1.Feed/Upload",
            content_type,
            frame_bytes(0, &event),
        )
        .await;
        assert!(
            said.contains("the client sent nothing") && said.contains("stream_idle_timeout"),
            "{content_type}: {said}"
        );
        assert!(
            said.contains("deadline_exceeded")
                || said.contains("\"grpc-status\": \"4\"")
                || said.contains("grpc-status:4\r\n"),
            "{content_type}: {said}"
        );
        assert!(took < Duration::from_secs(2), "{content_type}");
    }
    // WebSocket: a call opened on the method, one message, then silence.
    let mut ws = support::json_v1_session(&h).await;
    ws.send(Message::text(
        serde_json::json!({"id": "u", "open": "/portico.demo.v1.Feed/Upload", "message": {"seq": 1}})
            .to_string(),
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let told_client_silent = |status: serde_json::Value| {
        assert_eq!(status["code"], 4, "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or("")
                .contains("the client sent nothing"),
            "{status}"
        );
    };
    told_client_silent(support::ws_status(&mut ws).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    // A unary call opened without its message, then silence: the same.
    ws.send(Message::text(
        serde_json::json!({"id": "g", "open": "/portico.demo.v1.Library/GetShelf"}).to_string(),
    ))
    .await
    .unwrap();
    told_client_silent(support::ws_status(&mut ws).await);
}

/// One `Feed.Upload` message, encoded.
fn an_event() -> Vec<u8> {
    use prost::Message as _;
    portico::demo::backends::pb::Event {
        seq: 1,
        topic: "t".into(),
        text: String::new(),
    }
    .encode_to_vec()
}

/// A raw HTTP/2 backend that answers every call's headers at once, reads
/// the whole upload, thinks for `think`, then replies with an
/// `UploadSummary` counting the DATA frames it got, and `OK`.
async fn early_headers_backend(think: Duration) -> SocketAddr {
    use prost::Message as _;
    raw_h2_backend(move |req, mut respond| async move {
        let mut send = respond.send_response(grpc_headers(), false).unwrap();
        let mut body = req.into_body();
        let mut frames = 0;
        while let Some(chunk) = body.data().await {
            let Ok(c) = chunk else { return };
            let _ = body.flow_control().release_capacity(c.len());
            frames += 1;
        }
        tokio::time::sleep(think).await;
        let summary = portico::demo::backends::pb::UploadSummary {
            count: frames,
            ..Default::default()
        };
        let reply = frame_bytes(0, &summary.encode_to_vec());
        let _ = send.send_data(reply.into(), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let _ = send.send_trailers(trailers);
    })
    .await
}

/// A backend that sends its headers before the upload is in (grpc-go's
/// `SendHeader`, grpcio's `send_initial_metadata`) is not silent while the
/// client still sends: an upload longer than `stream_idle_timeout`, with
/// messages closer together than it, ends well on every protocol; and once
/// the upload is in, the backend has the whole timeout to answer.
#[tokio::test]
async fn an_upload_longer_than_the_idle_timeout_is_not_cut_when_the_backend_answered_headers_first()
{
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let event = frame_bytes(0, &[0x08, 0x01]);
    // Eight messages 120 ms apart (about a second, over the 300 ms
    // timeout) answered at once; three 250 ms apart answered 150 ms after
    // the upload ends, when a timer set from the last message but one
    // comes due.
    for (count, spacing, think) in [(8, 120, 0), (3, 250, 150)] {
        let gw = gateway_to(early_headers_backend(Duration::from_millis(think)).await).await;
        let client = h2_client(gw.addr).await;
        for content_type in [
            "application/grpc",
            "application/grpc-web+proto",
            "application/connect+proto",
        ] {
            let (resp, mut send) = open_post(
                &client,
                gw.addr,
                "/portico.demo.v1.Feed/Upload",
                &[("content-type", content_type)],
            )
            .await;
            for _ in 0..count {
                send.send_data(event.clone().into(), false).unwrap();
                tokio::time::sleep(Duration::from_millis(spacing)).await;
            }
            send.send_data(bytes::Bytes::new(), true).unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(3), resp)
                .await
                .expect("an answer")
                .unwrap();
            let said = everything_said(resp).await;
            assert!(!said.contains("sent nothing"), "{content_type}: {said}");
            assert!(
                said.contains("\"grpc-status\": \"0\"")
                    || said.contains("grpc-status: 0\r\n")
                    || (content_type.starts_with("application/connect") && !said.contains("error")),
                "{content_type} ({count} messages {spacing} ms apart): {said}"
            );
        }
    }
    // WebSocket: a call on the method, its messages as frames.
    let gw = gateway_to(early_headers_backend(Duration::ZERO).await).await;
    let mut ws = support::json_v1_to(gw.addr, "/ws").await;
    ws.send(Message::text(
        serde_json::json!({"id": "u", "open": "/portico.demo.v1.Feed/Upload", "message": {"seq": 1}})
            .to_string(),
    ))
    .await
    .unwrap();
    for seq in 2..9 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        ws.send(Message::text(
            serde_json::json!({"id": "u", "message": {"seq": seq}}).to_string(),
        ))
        .await
        .unwrap();
    }
    ws.send(Message::text(
        serde_json::json!({"id": "u", "end": true}).to_string(),
    ))
    .await
    .unwrap();
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 0, "{status}");
}

/// An upload still under way when its deadline passes is the client's
/// doing, as a unary body still arriving is: on every protocol the call
/// ends then with `DEADLINE_EXCEEDED` saying so, its access-log line blames
/// the client, and the backend's half of the upload is reset, not ended.
#[tokio::test]
async fn an_upload_whose_deadline_passes_while_its_client_sends_is_the_clients_doing() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-upload-deadline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let sections = format!("[access_log]\npath = \"{}\"\n", log.display());
    let h = Harness::start_with_config(move |b| support::config_text(b, &sections, "")).await;
    let event = an_event();
    const SAYS: &str = "still sending the request stream";
    let client = h2_client(h.gateway.addr).await;
    // Protocol, path, headers (one setting a 500 ms deadline), and one
    // message as that protocol writes it.
    type Upload<'a> = (&'a str, &'a str, [(&'a str, &'a str); 2], Vec<u8>);
    let cases: [Upload; 4] = [
        (
            "rest",
            "/v1/feed:upload",
            [
                ("content-type", "application/x-ndjson"),
                ("grpc-timeout", "500m"),
            ],
            b"{\"seq\":1}\n".to_vec(),
        ),
        (
            "grpc",
            "/portico.demo.v1.Feed/Upload",
            [
                ("content-type", "application/grpc"),
                ("grpc-timeout", "500m"),
            ],
            frame_bytes(0, &event),
        ),
        (
            "grpc-web",
            "/portico.demo.v1.Feed/Upload",
            [
                ("content-type", "application/grpc-web+proto"),
                ("grpc-timeout", "500m"),
            ],
            frame_bytes(0, &event),
        ),
        (
            "connect",
            "/portico.demo.v1.Feed/Upload",
            [
                ("content-type", "application/connect+proto"),
                ("connect-timeout-ms", "500"),
            ],
            frame_bytes(0, &event),
        ),
    ];
    for (protocol, path, headers, message) in cases {
        let (resp, mut send) = open_post(&client, h.gateway.addr, path, &headers).await;
        let started = Instant::now();
        // A message every 100 ms: never idle, and never done.
        let sending = tokio::spawn(async move {
            loop {
                if send
                    .send_data(bytes::Bytes::from(message.clone()), false)
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let resp = tokio::time::timeout(Duration::from_secs(3), resp)
            .await
            .unwrap_or_else(|_| panic!("{protocol}: no answer before 3 s"))
            .unwrap();
        let said = tokio::time::timeout(Duration::from_secs(3), everything_said(resp))
            .await
            .unwrap_or_else(|_| panic!("{protocol}: the answer did not end"));
        let took = started.elapsed();
        sending.abort();
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_secs(2),
            "{protocol}: answered after {took:?}: {said}"
        );
        assert!(said.contains(SAYS), "{protocol}: {said}");
        assert!(
            said.starts_with("504")
                || said.contains("\"grpc-status\": \"4\"")
                || said.contains("deadline_exceeded"),
            "{protocol}: {said}"
        );
    }
    // WebSocket: the deadline comes in the call's `open` metadata.
    let (mut ws_send, mut ws_read) = {
        use futures_util::StreamExt;
        support::json_v1_session(&h).await.split()
    };
    ws_send
        .send(Message::text(
            serde_json::json!({"id": "u", "open": "/portico.demo.v1.Feed/Upload",
                "metadata": {"grpc-timeout": "500m"}, "message": {"seq": 1}})
            .to_string(),
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let more = serde_json::json!({"id": "u", "message": {"seq": 2}});
            if ws_send.send(Message::text(more.to_string())).await.is_err() {
                break;
            }
        }
    });
    let status = support::ws_status(&mut ws_read).await;
    let took = started.elapsed();
    sending.abort();
    assert_eq!(status["code"], 4, "{status}");
    assert!(
        status["message"].as_str().unwrap_or("").contains(SAYS),
        "{status}"
    );
    assert!(took < Duration::from_secs(2), "websocket: took {took:?}");
    // Each line blames the client; no upload reached the backend as whole.
    let uploads = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["method"] == "portico.demo.v1.Feed/Upload")
            .collect()
    };
    assert!(support::eventually(|| uploads().len() >= 5).await);
    for line in uploads() {
        assert_eq!(line["origin"], "client", "{line}");
        assert_eq!(line["grpc_code"], 4, "{line}");
        assert!(
            line["error"].as_str().unwrap_or("").contains(SAYS),
            "{line}"
        );
    }
    let mut protocols: Vec<String> = uploads()
        .iter()
        .map(|l| l["protocol"].as_str().unwrap().to_owned())
        .collect();
    protocols.sort();
    assert_eq!(
        protocols,
        ["connect", "grpc", "grpc-web", "rest", "websocket"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that gives its call no time (`grpc-timeout: 0S`) is answered
/// `DEADLINE_EXCEEDED` before any policy or backend, and it is the
/// client's doing on every protocol, whatever the route's policies.
#[tokio::test]
async fn a_zero_client_timeout_is_the_clients_doing_on_every_protocol() {
    use support::protocols::{call, gateway, EVERY_PROTOCOL};
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-zero-deadline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let h = gateway(
        &format!("[access_log]\npath = \"{}\"\n", log.display()),
        "rate_limit = { requests_per_second = 1000 }",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("grpc-timeout", "0S")], "", None).await;
        assert_eq!(seen.code, 4, "{protocol:?}: {}", seen.message);
        assert!(
            seen.message.contains("the client's timeout was 0")
                || seen.message.contains("before its request had arrived"),
            "{protocol:?}: {}",
            seen.message
        );
    }
    let calls = || -> Vec<serde_json::Value> {
        support::access_log_lines(&log)
            .into_iter()
            .filter(|l| l["kind"] == "call")
            .collect()
    };
    support::eventually(|| calls().len() >= EVERY_PROTOCOL.len()).await;
    for line in calls() {
        assert_eq!(line["grpc_status"], "DEADLINE_EXCEEDED", "{line}");
        assert_eq!(line["origin"], "client", "{line}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
