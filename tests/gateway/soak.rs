//! A bounded soak: a `portico serve` process takes rounds of hostile
//! traffic (garbage bytes, slow heads, oversized and smuggling-shaped
//! requests, path traversal, aborted uploads, truncated gRPC frames, bad
//! WebSocket frames, HTTP/2 CONTINUATION floods and rapid resets, clients
//! that vanish mid-call) mixed with normal calls over every protocol. Every
//! normal call is answered, the process never panics, and its resident
//! memory and open file descriptors stay bounded.
//!
//! It takes the machine for as long as it runs, so plain `cargo test` skips
//! it; run it with `cargo test --test gateway soak -- --ignored`.
//! `PORTICO_SOAK_SECS` sets how long (default 15; `.ci/run` runs it for 120).

use crate::support;

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::h2raw::*;
use support::protocols::{call_at, EVERY_PROTOCOL};
use support::served::Served;
use support::HttpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Writes `bytes`, reads whatever comes back for a moment, and hangs up.
async fn raw(addr: SocketAddr, bytes: &[u8], linger: Duration) {
    let Ok(mut sock) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = sock.write_all(bytes).await;
    let mut sink = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(linger, async {
        while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// One round of every kind of hostile client, all at once.
async fn hostile_round(addr: SocketAddr) {
    let short = Duration::from_millis(300);
    let big_header = format!(
        "GET /v1/shelves/1 HTTP/1.1\r\nHost: g\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let many_fields: String = (0..150).map(|i| format!("x-f{i}: 1\r\n")).collect();
    let many_fields = format!("GET /v1/shelves/1 HTTP/1.1\r\nHost: g\r\n{many_fields}\r\n");
    let long_target = format!(
        "GET /v1/shelves/{} HTTP/1.1\r\nHost: g\r\n\r\n",
        "1".repeat(17_000)
    );
    let mut continuation = PREFACE.to_vec();
    continuation.extend(frame(SETTINGS, 0, 0, &[]));
    continuation.extend(frame(HEADERS, END_STREAM, 1, &get_block("/v1/shelves/1")));
    for _ in 0..200 {
        continuation.extend(frame(CONTINUATION, 0, 1, &[0x00, 0x01, b'x', 0x01, b'y']));
    }
    let mut rapid_reset = PREFACE.to_vec();
    rapid_reset.extend(frame(SETTINGS, 0, 0, &[]));
    for i in 0..200u32 {
        let stream = 1 + 2 * i;
        rapid_reset.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &get_block("/v1/probe/sleep/200"),
        ));
        rapid_reset.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let truncated_grpc = {
        let mut body = vec![0u8];
        body.extend_from_slice(&100u32.to_be_bytes());
        body.extend_from_slice(b"short");
        let mut r = PREFACE.to_vec();
        r.extend(frame(SETTINGS, 0, 0, &[]));
        let mut block = vec![0x83, 0x86];
        for (index, value) in [
            (0x04u8, "/portico.demo.v1.Library/GetShelf"),
            (0x01, "gateway"),
        ] {
            block.push(index);
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        for (name, value) in [("content-type", "application/grpc"), ("te", "trailers")] {
            block.push(0x00);
            block.push(name.len() as u8);
            block.extend_from_slice(name.as_bytes());
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        r.extend(frame(HEADERS, END_HEADERS, 1, &block));
        r.extend(frame(0x0, END_STREAM, 1, &body));
        r
    };
    let cases: Vec<(Vec<u8>, Duration)> = vec![
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(), short),
        (b"GET /v1/shelves/1 HTTP/1.1\r\nHost: g\r\nx-slow: ".to_vec(), Duration::from_millis(1500)),
        (big_header.into_bytes(), short),
        (many_fields.into_bytes(), short),
        (long_target.into_bytes(), short),
        (b"POST /v1/shelves/1/books HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".to_vec(), short),
        (b"POST /v1/shelves/1/books HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n".to_vec(), short),
        (b"GET /v1/shelves/1 HTTP/1.1\r\n\r\n".to_vec(), short),
        (b"GET /v1/files/../../etc/passwd HTTP/1.1\r\nHost: g\r\n\r\n".to_vec(), short),
        (b"GET /v1/files/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: g\r\n\r\n".to_vec(), short),
        (b"POST /v1/shelves/1/books HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"title\":\"cut".to_vec(), Duration::ZERO),
        (b"POST /v1/shelves/1/books HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"title\":\x01}".to_vec(), short),
        (b"GET /portico.demo.v1.Library/GetShelf?encoding=proto&base64=1&message=%%% HTTP/1.1\r\nHost: g\r\nConnect-Protocol-Version: 1\r\n\r\n".to_vec(), short),
        // MCP: a cut body, a batch, arguments of the wrong shape, a version nobody speaks.
        (b"POST /mcp HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,".to_vec(), Duration::ZERO),
        (b"POST /mcp HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\n[{}]".to_vec(), short),
        (b"POST /mcp HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\nContent-Length: 93\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"Probe_Sleep\",\"arguments\":[]}}".to_vec(), short),
        (b"POST /mcp HTTP/1.1\r\nHost: g\r\nMCP-Protocol-Version: 9999\r\nContent-Length: 2\r\n\r\n{}".to_vec(), short),
        (continuation, short),
        (rapid_reset, short),
        (truncated_grpc, short),
    ];
    let mut tasks: Vec<_> = cases
        .into_iter()
        .map(|(bytes, linger)| tokio::spawn(async move { raw(addr, &bytes, linger).await }))
        .collect();
    // WebSocket clients that send junk, an oversized message, or vanish.
    tasks.push(tokio::spawn(async move {
        let url = format!("ws://{addr}/ws");
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(req).await {
            let _ = ws.send(Message::text("{not json")).await;
            let _ = ws
                .send(Message::text(format!(
                    "{{\"id\":\"a\",\"open\":\"/portico.demo.v1.Feed/Watch\",\"message\":{{\"count\":1000,\"interval_ms\":5,\"topic\":\"{}\"}}}}",
                    "t".repeat(100)
                )))
                .await;
            let _ = ws.send(Message::binary(vec![0u8; 2 << 20])).await;
            let _ = tokio::time::timeout(Duration::from_millis(100), ws.next()).await;
            // Gone without a close frame.
        }
    }));
    for t in tasks {
        let _ = t.await;
    }
}

/// One normal call on every protocol, and a stream read to its end.
async fn normal_round(addr: SocketAddr, client: &HttpClient) -> usize {
    let mut answered = 0;
    for protocol in EVERY_PROTOCOL {
        let seen = call_at(addr, client, protocol, &[("x-soak", "1")], "", None).await;
        assert_eq!(
            seen.code, 0,
            "{protocol:?}: a normal call is answered: {seen:?}"
        );
        answered += 1;
    }
    let r = client.get("/v1/feed?count=3").await;
    assert_eq!(r.status, http::StatusCode::OK);
    assert_eq!(r.text().lines().count(), 3, "{}", r.text());
    answered + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak takes the machine: cargo test --test gateway soak -- --ignored"]
async fn mixed_hostile_and_normal_traffic_leaves_the_gateway_bounded() {
    let secs: u64 = std::env::var("PORTICO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = support::config_text(
        backend,
        "[server.limits]\nheader_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\n\n[websocket]\nmax_message_bytes = 65536\n",
        "",
    );
    let mut gateway = Served::start(&config, "warn").await;
    // A client per round: a pooled connection left idle past the header
    // timeout while the hostile round runs may be closed as it is reused.
    let addr = gateway.addr;
    let client = move || HttpClient::new(addr);

    // Warm up every path once, then take the baseline.
    normal_round(gateway.addr, &client()).await;
    hostile_round(gateway.addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (base_rss, base_fds) = (gateway.rss_bytes(), gateway.open_fds());

    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut rounds, mut answered, mut peak_rss, mut peak_fds) = (0, 0, base_rss, base_fds);
    while Instant::now() < deadline {
        let hostile = tokio::spawn(hostile_round(gateway.addr));
        answered += normal_round(gateway.addr, &client()).await;
        hostile.await.unwrap();
        rounds += 1;
        peak_rss = peak_rss.max(gateway.rss_bytes());
        peak_fds = peak_fds.max(gateway.open_fds());
        assert!(gateway.alive(), "the gateway is up after round {rounds}");
    }
    // Slow clients are cut off by the header timeout; then all is released.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (end_rss, end_fds) = (gateway.rss_bytes(), gateway.open_fds());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "soak: {rounds} rounds in {secs}s, {answered} normal calls answered; RSS {:.1} -> peak {:.1} -> {:.1} MiB; fds {base_fds} -> peak {peak_fds} -> {end_fds}",
        mib(base_rss),
        mib(peak_rss),
        mib(end_rss)
    );
    assert!(rounds >= 3, "only {rounds} rounds ran");
    assert!(gateway.alive());
    let stderr = gateway.stderr();
    assert!(
        !stderr.contains("panicked"),
        "the gateway panicked:\n{stderr}"
    );
    assert!(
        end_fds <= base_fds + 8,
        "file descriptors leak: {base_fds} at the start, {end_fds} at the end"
    );
    assert!(
        peak_rss <= base_rss + (96 << 20),
        "memory grew without bound: {:.1} MiB at the start, a peak of {:.1} MiB",
        mib(base_rss),
        mib(peak_rss)
    );
    assert!(
        end_rss <= base_rss + (48 << 20),
        "memory is not given back: {:.1} MiB at the start, {:.1} MiB at the end",
        mib(base_rss),
        mib(end_rss)
    );
    // And a new client is served as on the first day.
    assert_eq!(
        normal_round(gateway.addr, &client()).await,
        EVERY_PROTOCOL.len() + 1
    );
}
