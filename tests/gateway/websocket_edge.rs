//! The WebSocket edge by RFC 6455, spoken frame by frame over a raw socket:
//! each protocol violation closes with the code section 7.4 assigns, and a
//! ping flood from a client that never reads costs bounded memory.

use crate::support;

use std::time::Duration;
use support::served::Served;
use support::ws_raw::{masked, session, session_at};
use support::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads server frames until the close frame; its code (None: the
/// connection ended without one).
async fn close_code(sock: &mut TcpStream) -> Option<u16> {
    close_frame(sock).await.map(|(code, _)| code)
}

/// The close frame's code and reason.
async fn close_frame(sock: &mut TcpStream) -> Option<(u16, String)> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut head = [0u8; 2];
            sock.read_exact(&mut head).await.ok()?;
            let mut len = (head[1] & 0x7f) as usize;
            if len == 126 {
                let mut ext = [0u8; 2];
                sock.read_exact(&mut ext).await.ok()?;
                len = u16::from_be_bytes(ext) as usize;
            } else if len == 127 {
                let mut ext = [0u8; 8];
                sock.read_exact(&mut ext).await.ok()?;
                len = u64::from_be_bytes(ext) as usize;
            }
            let mut payload = vec![0u8; len];
            sock.read_exact(&mut payload).await.ok()?;
            if head[0] & 0x0f == 0x8 {
                return (payload.len() >= 2).then(|| {
                    (
                        u16::from_be_bytes([payload[0], payload[1]]),
                        String::from_utf8_lossy(&payload[2..]).into_owned(),
                    )
                });
            }
        }
    })
    .await
    .expect("a close in time")
}

#[tokio::test]
async fn each_protocol_violation_closes_with_the_code_rfc_6455_assigns() {
    let h = Harness::start().await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a text frame that is not UTF-8",
            masked(0x81, &[0xff, 0xfe, 0xfd]),
            1007,
        ),
        (
            "an unmasked client frame",
            vec![0x81, 0x02, b'{', b'}'],
            1002,
        ),
        ("a reserved bit set", masked(0x81 | 0x40, b"{}"), 1002),
        ("an unknown opcode", masked(0x83, b"{}"), 1002),
        ("a fragmented ping", masked(0x09, b"p"), 1002),
    ];
    for (name, frame, code) in cases {
        let mut sock = session(h.gateway.addr).await;
        sock.write_all(&frame).await.unwrap();
        assert_eq!(close_code(&mut sock).await, Some(code), "{name}");
    }
    // A frame far over the message limit.
    let mut sock = session(h.gateway.addr).await;
    let big = 4 << 20;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(big as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    let _ = sock.write_all(&frame).await;
    let (code, reason) = close_frame(&mut sock).await.expect("a close frame");
    assert_eq!(code, 1009, "a frame over twice the limit");
    assert!(
        reason.contains("websocket.max_message_bytes"),
        "named by its setting: {reason}"
    );
    // The next session is served.
    let mut sock = session(h.gateway.addr).await;
    sock.write_all(&masked(
        0x81,
        br#"{"id":"a","open":"/portico.demo.v1.Library/GetShelf","message":{"shelf":"1"}}"#,
    ))
    .await
    .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("Fiction"));
}

/// A session the gateway ends (here its one call is done) ends with the
/// closing handshake: the gateway sends its close frame and holds the
/// connection until the client answers it, then closes cleanly. Closing
/// at once would meet the client's answer with a TCP reset, which a
/// browser reports as an unclean close (`wasClean` false).
#[tokio::test]
async fn a_session_the_gateway_ends_waits_for_the_clients_close_frame() {
    let h = Harness::start().await;
    let mut sock = session_at(h.gateway.addr, "/v1/shelves/1").await;
    assert_eq!(close_code(&mut sock).await, Some(1000));
    // The client takes its time to answer: the connection stays open.
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), sock.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the gateway ended the connection before the client's close frame: {early:?}"
    );
    sock.write_all(&masked(0x88, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    // Then the gateway ends it: a clean end of stream, not a reset.
    let end = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut byte))
        .await
        .expect("the connection ends once the handshake is complete");
    assert_eq!(end.unwrap(), 0, "a clean end of stream");
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_costs_bounded_memory() {
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gateway = Served::start(&support::config_text(backend, "", ""), "warn").await;
    let mut sock = session(gateway.addr).await;
    let before = gateway.rss_bytes();
    // 20 MB of pings of 64 bytes, never reading the pongs: while a pong
    // cannot be written, a newer ping's replaces it instead of queueing.
    let ping = masked(0x89, &[b'p'; 64]);
    let burst = ping.repeat(1000);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..300 {
            if sock.write_all(&burst).await.is_err() {
                break;
            }
        }
    })
    .await;
    let grown = gateway.rss_bytes().saturating_sub(before);
    assert!(
        grown < 24 << 20,
        "the gateway grew by {} MiB under the flood",
        grown >> 20
    );
    drop(sock);
    let mut next = session(gateway.addr).await;
    next.write_all(&masked(0x89, b"hi")).await.unwrap();
    let mut pong = [0u8; 4];
    next.read_exact(&mut pong).await.unwrap();
    assert_eq!(
        pong,
        [0x8a, 2, b'h', b'i'],
        "the next client's ping is answered"
    );
}

/// RFC 6455 section 4.4: a handshake for another version is answered
/// `426 Upgrade Required` naming the version the gateway speaks; one
/// without a key, or with a key that is not a 16-byte nonce in base64
/// (section 4.2.1), is a plain `400`.
#[tokio::test]
async fn a_handshake_for_another_version_is_told_which_one_to_use() {
    let h = Harness::start().await;
    let nonce = Some("dGhlIHNhbXBsZSBub25jZQ==");
    for (version, key, want) in [
        (Some("8"), nonce, "HTTP/1.1 426"),
        (None, nonce, "HTTP/1.1 426"),
        (Some("13"), None, "HTTP/1.1 400"),
        (Some("13"), Some("short"), "HTTP/1.1 400"),
        (
            Some("13"),
            Some("dGhpcyBpcyBmYXIgdG9vIGxvbmcgYSBub25jZQ=="),
            "HTTP/1.1 400",
        ),
    ] {
        let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
        let mut head = String::from(
            "GET /v1/shelves/1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        if let Some(key) = key {
            head.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
        }
        if let Some(v) = version {
            head.push_str(&format!("Sec-WebSocket-Version: {v}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), sock.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(
            answer.starts_with(&want.to_lowercase()),
            "{version:?}: {answer}"
        );
        if want.ends_with("426") {
            assert!(answer.contains("sec-websocket-version: 13"), "{answer}");
            assert!(answer.contains("only 13 (rfc 6455)"), "{answer}");
        }
    }
    // An upgrade needs HTTP/1.1: over HTTP/1.0 a 101 would lead nowhere.
    let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
    sock.write_all(
        b"GET /v1/shelves/1 HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), sock.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.0 400"), "{answer}");
    assert!(answer.contains("needs http/1.1"), "{answer}");
}

/// A handshake that lacks `Connection: Upgrade` (a proxy dropped it),
/// carries two different keys, or names two different `?method=`s is a
/// `400` saying so, before the upgrade; never a REST answer, a `101`, or
/// a call refused after it.
#[tokio::test]
async fn a_malformed_handshake_is_refused_before_the_upgrade_saying_what_is_wrong() {
    let h = Harness::start().await;
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let other = "Sec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n";
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let no_connection = "Upgrade: websocket\r\nConnection: keep-alive\r\n";
    for (target, headers, want, says) in [
        (
            "/v1/feed?count=1",
            format!("{no_connection}{key}"),
            "http/1.1 400",
            "needs `connection: upgrade`",
        ),
        (
            "/v1/chat",
            format!("{no_connection}{key}"),
            "http/1.1 400",
            "needs `connection: upgrade`",
        ),
        (
            "/v1/feed?count=1",
            format!("{upgrade}{key}{other}"),
            "http/1.1 400",
            "sec-websocket-key: is given more than once",
        ),
        (
            "/v1/chat?method=POST&method=GET",
            format!("{upgrade}{key}"),
            "http/1.1 400",
            "given more than once with different values",
        ),
        (
            "/v1/chat?method=POST&method=post&method=POST",
            format!("{upgrade}{key}"),
            "http/1.1 101",
            "",
        ),
        (
            "/v1/feed?count=1",
            format!("{upgrade}{key}{key}"),
            "http/1.1 101",
            "",
        ),
    ] {
        let mut sock = TcpStream::connect(h.gateway.addr).await.unwrap();
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\n{headers}Sec-WebSocket-Version: 13\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), sock.read(&mut answer))
            .await
            .expect("an answer in time")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
        assert!(answer.starts_with(want), "{target} {headers:?}: {answer}");
        assert!(answer.contains(says), "{target} {headers:?}: {answer}");
    }
}

/// A call cut because the gateway closed its session for the client's
/// frame counts in `portico_calls_total` as the status it is logged with,
/// not as a call its client abandoned; a close frame with a code no
/// endpoint may send is such a protocol error (1002).
#[tokio::test]
async fn a_call_cut_by_a_close_for_the_clients_frame_counts_as_its_status() {
    let h = Harness::start().await;
    let open = masked(
        0x81,
        br#"{"id":"c","open":"/portico.demo.v1.Chat/Converse"}"#,
    );
    let mut bad_close = masked(0x88, &999u16.to_be_bytes());
    bad_close[1] = 0x80 | 2;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a close code no endpoint may send", bad_close, 1002),
        (
            "a text frame that is not UTF-8",
            masked(0x81, &[0xff, 0xfe]),
            1007,
        ),
        ("an unmasked frame", vec![0x81, 0x02, b'{', b'}'], 1002),
    ];
    for (name, frame, code) in &cases {
        let mut sock = session(h.gateway.addr).await;
        sock.write_all(&open).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        sock.write_all(frame).await.unwrap();
        assert_eq!(close_code(&mut sock).await, Some(*code), "{name}");
    }
    let admin = support::HttpClient::new(h.gateway.admin_addr.unwrap());
    let series = |code: &str| {
        format!(
            "portico_calls_total{{method=\"portico.demo.v1.Chat/Converse\",upstream=\"demo\",code=\"{code}\"}} "
        )
    };
    let counted = support::eventually_async(|| async {
        admin
            .get("/metrics")
            .await
            .text()
            .contains(&format!("{}3", series("INVALID_ARGUMENT")))
    })
    .await;
    let metrics = admin.get("/metrics").await.text();
    assert!(counted, "{metrics}");
    assert!(!metrics.contains(&series("CANCELLED")), "{metrics}");
}
