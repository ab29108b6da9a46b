//! Client-controlled text in the log is escaped: a query parameter name or
//! an enum value carrying a newline and an escape byte cannot forge a log
//! line or a terminal sequence. Runs the real binary and reads its log.

use crate::support;

use portico::demo::backends::Backends;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::HttpClient;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// The `portico` binary serving the demo Library on a free port with
/// `RUST_LOG=info`, its log on a pipe; `extra` is added to its config
/// (the Library route's keys first, then any sections).
async fn serve_logging(name: &str, extra: &str) -> (tokio::process::Child, HttpClient, PathBuf) {
    serve_logging_at(name, extra, "info").await
}

/// [`serve_logging`] with `RUST_LOG` at `log`.
async fn serve_logging_at(
    name: &str,
    extra: &str,
    log: &str,
) -> (tokio::process::Child, HttpClient, PathBuf) {
    let (backend, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n\n\
             [upstreams.demo]\nendpoints = [\"{backend}\"]\n\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"demo\"\n{extra}\n",
            support::proto_dir()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = HttpClient::new(format!("127.0.0.1:{port}").parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(client.addr).await.is_err() {
        assert!(Instant::now() < deadline, "portico did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, client, dir)
}

/// Everything the binary logged, once it is stopped.
async fn stop_and_read_log(mut child: tokio::process::Child) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn a_forged_log_line_stays_inside_its_field() {
    let (child, client, dir) = serve_logging("logs", "").await;
    // A query parameter name and an enum value with CR, LF and ESC in them.
    let forged = "%0D%0AFORGED%20INFO%20portico%3A%20all%20good%1B%5B31m";
    let r = client.get(&format!("/v1/shelves/1?x{forged}=1")).await;
    assert_eq!(r.status, 400);
    let r = client
        .json(
            http::Method::POST,
            "/v1/shelves/1/books",
            "{\"title\":\"t\",\"genre\":\"A\\r\\nFORGED INFO portico: all good\\u001b[31m\"}",
        )
        .await;
    assert_eq!(r.status, 400);
    let out = stop_and_read_log(child).await;
    assert!(
        out.contains("FORGED"),
        "the refusals were not logged: {out}"
    );
    for line in out.lines() {
        assert!(!line.starts_with("FORGED"), "a forged line: {line:?}");
        assert!(
            !line.contains("\u{1b}[31m"),
            "a terminal escape from a client reached the log: {line:?}"
        );
    }
    // Written to a pipe, not a terminal: no colors at all.
    assert!(
        !out.contains('\u{1b}'),
        "escape codes in a redirected log: {out:?}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn log_lines_about_a_call_in_a_websocket_session_carry_the_calls_request_id() {
    use futures_util::{SinkExt, StreamExt};
    let (child, client, dir) = serve_logging("ws-logs", "").await;
    let addr = client.addr;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    req.headers_mut()
        .insert("x-request-id", "session-7f3a".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let open = serde_json::json!({"id": "a", "open": "/portico.demo.v1.Library/GetShelf", "message": {"shelf": "9"}});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        open.to_string().into(),
    ))
    .await
    .unwrap();
    loop {
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))
                if t.as_str().contains("\"status\"") =>
            {
                break
            }
            Some(Ok(_)) => continue,
            other => panic!("no status frame: {other:?}"),
        }
    }
    // A call waiting for its message, cancelled by the client; then a
    // frame the session refuses. Both lines name whose they are.
    for frame in [
        serde_json::json!({"id": "b", "open": "/portico.demo.v1.Library/GetShelf"}),
        serde_json::json!({"id": "b", "cancel": true}),
        serde_json::json!({"id": "c", "message": {"shelf": "1"}}),
    ] {
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            frame.to_string().into(),
        ))
        .await
        .unwrap();
    }
    loop {
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))
                if t.as_str().contains("\"error\"") =>
            {
                break
            }
            Some(Ok(_)) => continue,
            other => panic!("no error frame: {other:?}"),
        }
    }
    // A client that leaves in the middle of its upload is no failure of
    // the gateway's or the backend's: no diagnostic line.
    {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(
            b"POST /v1/shelves/1/books HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"title\":",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = stop_and_read_log(child).await;
    assert!(
        !out.contains("left before its request ended"),
        "an abandoned upload has no diagnostic line: {out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains("websocket call ended with an error"))
        .unwrap_or_else(|| panic!("the failed call was not logged: {out}"));
    assert!(line.contains("request_id=session-7f3a."), "{line}");
    let cancelled = out
        .lines()
        .find(|l| l.contains("cancelled by the client"))
        .unwrap_or_else(|| panic!("the cancel was not logged: {out}"));
    assert!(
        cancelled.contains("request_id=session-7f3a."),
        "{cancelled}"
    );
    let refused = out
        .lines()
        .find(|l| l.contains("websocket frame refused"))
        .unwrap_or_else(|| panic!("the refused frame was not logged: {out}"));
    // The session's own line carries the handshake's id.
    assert!(
        refused.contains("request_id=session-7f3a")
            && !refused.contains("request_id=session-7f3a.")
            && refused.contains("code=3"),
        "{refused}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A client's refusal inside an aggregate (`on_error = "partial"` lets
/// the others pass) is logged at `info`, as every protocol logs a
/// client's failures: warnings are about the operator's systems.
#[tokio::test]
async fn a_client_refusal_inside_an_aggregate_is_no_warning() {
    let (child, client, dir) = serve_logging(
        "aggregate-logs",
        "rate_limit = { requests_per_second = 0.001, burst = 1, key = \"route\" }\n\n\
         [[aggregates]]\npath = \"/v1/twice\"\non_error = \"partial\"\n\
         [[aggregates.calls]]\nname = \"a\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"1\" }\n\
         [[aggregates.calls]]\nname = \"b\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"2\" }\n",
    )
    .await;
    let r = client.get("/v1/twice").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["errors"].as_object().is_some_and(|e| e.len() == 1),
        "{}",
        r.text()
    );
    let out = stop_and_read_log(child).await;
    let line = out
        .lines()
        .find(|l| l.contains("aggregated call failed"))
        .unwrap_or_else(|| panic!("the refused call was not logged: {out}"));
    assert!(
        line.contains(" INFO ") && line.contains("origin=\"client\""),
        "{line}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `portico::access=debug` writes one line for every request as it is
/// answered, whatever its protocol, with the HTTP method, the path, the
/// status, the time to the answer and the request id.
#[tokio::test]
async fn the_debug_access_line_is_written_for_a_request_of_every_protocol() {
    use support::protocols::{call_json, Protocol, EVERY_PROTOCOL};
    let (child, client, dir) =
        serve_logging_at("debug-lines", "mcp = true\n", "info,portico::access=debug").await;
    for protocol in EVERY_PROTOCOL {
        if protocol == Protocol::Mcp {
            let (_, result) = support::mcp_call(
                &client,
                &[],
                "Library_GetShelf",
                serde_json::json!({"shelf": "1"}),
            )
            .await;
            assert_ne!(result["isError"], true, "{result}");
            continue;
        }
        let seen = call_json(
            &client,
            protocol,
            "/portico.demo.v1.Library/GetShelf",
            r#"{"shelf":"1"}"#,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
    }
    assert_eq!(client.get("/v1/shelves/1").await.status, 200);
    let out = stop_and_read_log(child).await;
    let answered: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("portico::access: request answered"))
        .collect();
    for (protocol, method, path, status) in [
        (Protocol::Rest, "GET", "\"/v1/shelves/1\"", 200),
        // A session's line is its handshake's.
        (Protocol::WebSocket, "GET", "\"/ws\"", 101),
        (Protocol::Mcp, "POST", "\"/mcp\"", 200),
    ] {
        let line = answered
            .iter()
            .find(|l| l.contains(&format!("method={method} path={path} status={status} ")))
            .unwrap_or_else(|| panic!("{protocol:?}: no line in {answered:#?}"));
        assert!(
            line.contains(" micros=") && line.contains(" request_id="),
            "{protocol:?}: {line}"
        );
    }
    // gRPC, gRPC-Web, Connect and REST's automatic binding each post to
    // the method's path.
    let posts = answered
        .iter()
        .filter(|l| {
            l.contains("method=POST path=\"/portico.demo.v1.Library/GetShelf\" status=200 ")
        })
        .count();
    assert_eq!(posts, 4, "{answered:#?}");
    std::fs::remove_dir_all(dir).ok();
}

/// An authorization service's URL may carry a credential in its query:
/// the warning that it did not answer names the URL with the credential
/// masked.
#[tokio::test]
async fn an_authorization_services_url_is_logged_without_its_query_credential() {
    // Nothing listens on port 9 of the loopback: the service never answers.
    let (child, client, dir) = serve_logging(
        "authz-url",
        "ext_authz = \"gate\"\n[ext_authz.gate]\nhttp = \"http://127.0.0.1:9/check?tenant=acme&token=SECRET-T0KEN\"\n",
    )
    .await;
    let r = client.get("/v1/shelves/1").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let out = stop_and_read_log(child).await;
    let line = out
        .lines()
        .find(|l| l.contains("external authorization failed"))
        .unwrap_or_else(|| panic!("no warning: {out}"));
    assert!(
        line.contains("/check?tenant=acme&token=[redacted]"),
        "{line}"
    );
    assert!(!out.contains("SECRET-T0KEN"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

/// A connection to a TLS port closed before any handshake, as a load
/// balancer's TCP health check makes every few seconds, writes no `info`
/// line; a handshake that fails (plain text on the TLS port) still does.
#[tokio::test]
async fn a_tcp_probe_of_a_tls_port_is_not_logged_as_a_failed_handshake() {
    use tokio::io::AsyncWriteExt;
    let tls = format!(
        "\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        support::fixture("tls/server.pem"),
        support::fixture("tls/server.key")
    );
    let (child, client, dir) = serve_logging("tls-probe", &tls).await;
    for _ in 0..3 {
        let probe = tokio::net::TcpStream::connect(client.addr).await.unwrap();
        drop(probe);
    }
    let mut plain = tokio::net::TcpStream::connect(client.addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut answer),
    )
    .await;
    let log = stop_and_read_log(child).await;
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect();
    assert_eq!(failed.len(), 1, "only the plain-text client's: {log}");
    assert!(!log.contains("eof"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A header block the HTTP/2 library will not decode (an upper-case field
/// name) ends the whole connection with a GOAWAY, and the calls on it with
/// it: a log line says the client broke HTTP/2, so those calls' cut is not
/// left unexplained.
#[tokio::test]
async fn a_connection_ended_for_broken_http2_is_logged_as_the_clients_fault() {
    use tokio::io::AsyncWriteExt;
    let (child, client, dir) = serve_logging("broken-h2", "").await;
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(0x04u8, "/v1/shelves/1"), (0x01, "x")] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block.extend_from_slice(b"\x00\x07X-Upper\x011");
    let mut bytes =
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    bytes.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
    bytes.extend_from_slice(&[0x01, 0x05, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    let mut h2 = tokio::net::TcpStream::connect(client.addr).await.unwrap();
    h2.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut h2, &mut answer),
    )
    .await;
    // A GOAWAY frame (type 7) among the server's frames.
    let mut at = 0;
    let mut goaway = false;
    while at + 9 <= answer.len() {
        let len = u32::from_be_bytes([0, answer[at], answer[at + 1], answer[at + 2]]) as usize;
        goaway |= answer[at + 3] == 7;
        at += 9 + len;
    }
    assert!(goaway, "{answer:?}");
    let log = stop_and_read_log(child).await;
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("the client broke HTTP/2")
            && l.contains("PROTOCOL_ERROR")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
