//! Graceful shutdown of the real binary: on SIGTERM it stops accepting,
//! finishes the calls in flight (up to `server.drain_timeout`) and exits 0.

use crate::support;

use http::StatusCode;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::instances::Instance;
use support::HttpClient;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `portico serve` in front of `backend`; returns it once it answers.
async fn portico(
    backend: &Instance,
    drain_timeout: &str,
) -> (Child, HttpClient, std::path::PathBuf) {
    portico_with(backend, drain_timeout, "", "").await
}

/// [`portico`] with `server` among the `[server]` keys and `more` at the
/// end of its config (its first lines are the Probe route's keys).
async fn portico_with(
    backend: &Instance,
    drain_timeout: &str,
    server: &str,
    more: &str,
) -> (Child, HttpClient, std::path::PathBuf) {
    let port = free_port();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-shutdown-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_timeout = \"{drain_timeout}\"\n{server}\n\
             [descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/probe.proto\", \"portico/demo/v1/feed.proto\"]\n\n\
             [upstreams.demo]\nendpoints = [\"{}\"]\n\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\n{more}",
            support::proto_dir(),
            backend.addr
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
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

fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_finishes_calls_in_flight_refuses_new_ones_and_exits_zero() {
    let backend = Instance::start("127.0.0.1:0").await;
    let (mut child, client, dir) = portico(&backend, "10s").await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get("/v1/probe/sleep/800").await.status })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(client.addr).await.is_err(),
        "the listener is closed during the drain"
    );
    assert_eq!(
        slow.await.unwrap(),
        StatusCode::OK,
        "the call in flight finished"
    );
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}

/// The admin port serves through the drain: a liveness probe still sees
/// the process alive, a load balancer's readiness check is told to send
/// nothing new, and the drain's counts can be scraped until it is over.
#[tokio::test]
async fn the_admin_port_answers_during_the_drain_and_readyz_says_it_is_draining() {
    let backend = Instance::start("127.0.0.1:0").await;
    let admin = HttpClient::new(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let (mut child, client, dir) =
        portico_with(&backend, "10s", &format!("admin = \"{}\"", admin.addr), "").await;
    assert_eq!(admin.get("/readyz").await.status, StatusCode::OK);
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get("/v1/probe/sleep/3000").await.status })
    };
    // The drain is over as soon as nothing is in flight: the call must be
    // under way before the signal, however slow the machine.
    let in_flight = "portico_upstream_in_flight{upstream=\"demo\"} 1";
    assert!(
        support::eventually_async(|| async {
            admin.get("/metrics").await.text().contains(in_flight)
        })
        .await,
        "the call never got under way"
    );
    sigterm(&child);
    assert!(
        support::eventually_async(|| async {
            tokio::net::TcpStream::connect(client.addr).await.is_err()
        })
        .await,
        "the main port is closed during the drain"
    );
    assert_eq!(admin.get("/healthz").await.status, StatusCode::OK);
    let ready = admin.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    assert!(
        ready.json()["reason"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{}",
        ready.text()
    );
    // A generation built now would only start tasks for a gateway about
    // to exit.
    let reload = admin
        .send(http::Method::POST, "/config/reload", &[], "")
        .await;
    assert_eq!(reload.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reload.json()["result"], "error", "{}", reload.text());
    let metrics = admin.get("/metrics").await.text();
    assert!(
        metrics.contains(in_flight),
        "the call still in flight: {metrics}"
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK, "the call finished");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        tokio::net::TcpStream::connect(admin.addr).await.is_err(),
        "the admin port closes with the process"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_drain_timeout_bounds_how_long_shutdown_waits() {
    let backend = Instance::start("127.0.0.1:0").await;
    let (mut child, client, dir) = portico(&backend, "300ms").await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            let r = client
                .open(http::Method::GET, "/v1/probe/sleep/5000", &[], "")
                .await;
            r.status()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .expect("exits at the drain timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
    slow.abort();
    let _ = std::fs::remove_dir_all(dir);
}

/// A call cut at the drain timeout still writes its access-log line
/// before the process exits, on every protocol: `CANCELLED` for the HTTP
/// ones, whose connections are cut (a REST stream waiting for its next
/// message among them), and the shutdown's `UNAVAILABLE` for a WebSocket
/// call, ended at once.
#[tokio::test]
async fn calls_cut_at_the_drain_timeout_are_in_the_access_log() {
    use support::protocols::{call_at, EVERY_PROTOCOL};
    let backend = Instance::start("127.0.0.1:0").await;
    let admin = HttpClient::new(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let (mut child, client, dir) = portico_with(
        &backend,
        "300ms",
        &format!("admin = \"{}\"", admin.addr),
        "mcp = true\n\n[[routes]]\ngrpc_service = \"portico.demo.v1.Feed\"\nupstream = \"demo\"\n\n\
         [access_log]\npath = \"access.log\"\n",
    )
    .await;
    // A REST stream too, whose next message is a while away.
    let stream = client
        .open(
            http::Method::GET,
            "/v1/feed?count=100&interval_ms=200",
            &[],
            "",
        )
        .await;
    assert_eq!(stream.status(), StatusCode::OK);
    let calls: Vec<_> = EVERY_PROTOCOL
        .into_iter()
        .map(|protocol| {
            let client = client.clone();
            tokio::spawn(async move {
                call_at(client.addr, &client, protocol, &[], "", Some(10_000)).await
            })
        })
        .collect();
    // Every call has reached the backend.
    let all = format!(
        "portico_upstream_in_flight{{upstream=\"demo\"}} {}",
        EVERY_PROTOCOL.len() + 1
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !admin.get("/metrics").await.text().contains(&all) {
        assert!(Instant::now() < deadline, "the calls did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .expect("exits after the drain timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    for call in calls {
        call.abort();
    }
    let log = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|l: &serde_json::Value| l["method"] == "portico.demo.v1.Probe/Sleep")
        .collect();
    for protocol in EVERY_PROTOCOL {
        let line = lines
            .iter()
            .find(|l| l["protocol"] == protocol.name())
            .unwrap_or_else(|| panic!("{protocol:?}: no line for the cut call in {log}"));
        let expected = if protocol == support::protocols::Protocol::WebSocket {
            14
        } else {
            1
        };
        assert_eq!(line["grpc_code"], expected, "{protocol:?}: {line}");
    }
    let feed = log
        .lines()
        .find(|l| l.contains("portico.demo.v1.Feed/"))
        .unwrap_or_else(|| panic!("no line for the cut REST stream in {log}"));
    assert!(feed.contains(r#""grpc_code":1,"#), "{feed}");
    drop(stream);
    let _ = std::fs::remove_dir_all(dir);
}

/// A WebSocket client that never answers the gateway's going-away close
/// holds its session past a short drain timeout; the gateway still exits
/// 0 once the drain timeout has passed (its other tasks, already ended by
/// then, are not waited for twice).
#[tokio::test]
async fn a_session_that_outlasts_the_drain_timeout_still_exits_zero() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Instance::start("127.0.0.1:0").await;
    let (mut child, client, dir) = portico(&backend, "300ms").await;
    let mut sock = tokio::net::TcpStream::connect(client.addr).await.unwrap();
    sock.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: portico.json.v1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 1024];
    let n = sock.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // From here the client reads nothing and sends no close.
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    drop(sock);
    let _ = std::fs::remove_dir_all(dir);
}

/// WebSocket sessions do not wait out the drain (they may last for ever):
/// each call still running gets a status saying the gateway is shutting
/// down, then the connection closes with 1001.
#[tokio::test]
async fn sigterm_ends_websocket_calls_with_a_status_then_closes_with_1001() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let backend = Instance::start("127.0.0.1:0").await;
    let (mut child, client, dir) = portico(&backend, "10s").await;
    let mut req = format!("ws://{}/ws", client.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(
        serde_json::json!({"id": "s", "open": "/portico.demo.v1.Probe/Sleep", "message": {"millis": 5000}})
            .to_string(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    let mut status = None;
    let mut close = None;
    while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        match frame {
            Ok(Message::Text(t)) => {
                let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(s) = f.get("status") {
                    status = Some(s.clone());
                }
            }
            Ok(Message::Close(f)) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let status = status.expect("a status frame for the running call");
    assert_eq!(status["code"], 14, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("shutting down"),
        "{status}"
    );
    assert_eq!(close, Some(1001));
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    let _ = std::fs::remove_dir_all(dir);
}
