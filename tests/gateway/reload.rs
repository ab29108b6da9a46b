//! A live gateway: the config is reloaded while calls run, and nothing a
//! client started is lost. Reloads that fail change nothing and say why.

use crate::support;

use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use portico::app::reload::ReloadOutcome;
use portico::app::{self, Gateway};
use portico::config::Config;
use portico::demo::backends::{pb, Backends};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::HttpClient;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A TCP forwarder in front of a backend that counts the connections that
/// carried bytes (health probes only connect, and are not counted).
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let used = Arc::new(AtomicUsize::new(0));
    let counter = used.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if inbound.peek(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, used)
}

/// Two shapes of the same gateway. `A` routes Probe and has one endpoint;
/// `B` drops the Probe route, changes Library's rate limit and adds a
/// second endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    A,
    B,
}

fn config_text(shape: Shape, endpoints: &[SocketAddr], extra_server: &str) -> String {
    let eps: Vec<String> = match shape {
        Shape::A => vec![format!("\"{}\"", endpoints[0])],
        Shape::B => endpoints.iter().map(|e| format!("\"{e}\"")).collect(),
    };
    // Far above what the test's own loops send on any machine: the shapes
    // differ in the limit, no call should meet it.
    let rate = match shape {
        Shape::A => 1_000_000,
        Shape::B => 2_000_000,
    };
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
watch_files = false
{extra_server}

[descriptors]
proto_paths = ["{proto}"]
protos = ["portico/demo/v1/library.proto", "portico/demo/v1/feed.proto", "portico/demo/v1/chat.proto", "portico/demo/v1/probe.proto"]

[upstreams.demo]
endpoints = [{eps}]

[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "demo"
rate_limit = {{ requests_per_second = {rate} }}

[[routes]]
grpc_service = "portico.demo.v1.Feed"
upstream = "demo"

[[routes]]
grpc_service = "portico.demo.v1.Chat"
upstream = "demo"
"#,
        proto = support::proto_dir(),
        eps = eps.join(", ")
    );
    if shape == Shape::A {
        text.push_str(
            "\n[[routes]]\ngrpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\n",
        );
    }
    text
}

/// Replaces a file the way editors and deploy tools do: write aside, rename.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start(path: &Path) -> Gateway {
    app::start(Config::load(path).unwrap()).await.unwrap()
}

async fn admin_json(gw: &Gateway, method: Method, path: &str) -> (StatusCode, Value) {
    let r = HttpClient::new(gw.admin_addr.unwrap())
        .send(method, path, &[], "")
        .await;
    (r.status, r.json())
}

async fn metrics(gw: &Gateway) -> String {
    HttpClient::new(gw.admin_addr.unwrap())
        .get("/metrics")
        .await
        .text()
}

/// The next frame of a WebSocket call `id` that ends it or refuses it.
async fn call_end(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    id: &str,
) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("the session is open")
            .expect("a readable frame");
        let Message::Text(t) = frame else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["id"] == id && (v.get("status").is_some() || v.get("error").is_some()) {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_call_and_cut_no_stream() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (b2, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("load");
    let path = dir.join("portico.toml");
    let endpoints = [b1, b2];
    replace(&path, &config_text(Shape::A, &endpoints, ""));
    let gw = start(&path).await;
    let client = HttpClient::new(gw.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let calls = Arc::new(AtomicUsize::new(0));

    // REST and gRPC clients in a loop on a route every shape has.
    let rest = {
        let (client, stop, failures, calls) = (
            client.clone(),
            stop.clone(),
            failures.clone(),
            calls.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r = client.get("/v1/shelves/1").await;
                calls.fetch_add(1, Ordering::SeqCst);
                if r.status != StatusCode::OK {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("REST {}: {}", r.status, r.text()));
                }
            }
        })
    };
    let grpc = {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", gw.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (stop, failures, calls) = (stop.clone(), failures.clone(), calls.clone());
        tokio::spawn(async move {
            let mut library = pb::library_client::LibraryClient::new(channel);
            while !stop.load(Ordering::SeqCst) {
                let r = library
                    .get_shelf(pb::GetShelfRequest { shelf: "1".into() })
                    .await;
                calls.fetch_add(1, Ordering::SeqCst);
                if let Err(s) = r {
                    failures.lock().unwrap().push(format!("gRPC {s:?}"));
                }
            }
        })
    };
    // A WebSocket bidi session that chats throughout.
    let chat = {
        let mut req = format!("ws://{}/v1/chat", gw.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let (mut tx, mut rx) = ws.split();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            let mut echoed = 0;
            while !stop.load(Ordering::SeqCst) {
                sent += 1;
                let m = json!({"message": {"user": "ann", "text": format!("m{sent}")}});
                tx.send(Message::text(m.to_string()))
                    .await
                    .expect("the session is open");
                let frame = tokio::time::timeout(Duration::from_secs(5), rx.next())
                    .await
                    .expect("an echo in time")
                    .expect("the session is open")
                    .expect("a readable frame");
                let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
                assert_eq!(v["result"]["text"], format!("m{sent}"), "{v}");
                echoed += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (sent, echoed)
        })
    };
    // A long server stream over REST.
    let feed = {
        let client = client.clone();
        tokio::spawn(async move {
            let resp = client
                .open(
                    Method::GET,
                    "/v1/feed?count=60&interval_ms=60&topic=t",
                    &[],
                    "",
                )
                .await;
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        })
    };
    // A multiplexed session that opens calls as the config changes.
    let mut req = format!("ws://{}/ws", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    let (mut session, _) = tokio_tungstenite::connect_async(req).await.unwrap();

    // A slow call on the route the first reload removes.
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get("/v1/probe/sleep/1500").await.status })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let admin = HttpClient::new(gw.admin_addr.unwrap());
    for i in 0..20 {
        let shape = if i % 2 == 0 { Shape::B } else { Shape::A };
        replace(&path, &config_text(shape, &endpoints, ""));
        // Alternate the triggers: the admin port and the API.
        if i % 4 < 2 {
            let r = admin.send(Method::POST, "/config/reload", &[], "").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            assert_eq!(r.json()["result"], "ok");
            assert_eq!(r.json()["changed"], true);
        } else {
            let outcome = gw.live.reload().await;
            assert!(
                matches!(outcome, ReloadOutcome::Swapped { .. }),
                "{outcome:?}"
            );
        }
        // Once swapped, the Probe route is there or not, for every protocol.
        let probe = client.get("/v1/probe/headers").await.status;
        let id = format!("p{i}");
        session
            .send(Message::text(
                json!({"id": id, "open": "/portico.demo.v1.Probe/Headers", "message": {}})
                    .to_string(),
            ))
            .await
            .unwrap();
        let opened = call_end(&mut session, &id).await;
        match shape {
            Shape::A => {
                assert_eq!(probe, StatusCode::OK, "reload {i}");
                assert_eq!(opened["status"]["code"], 0, "reload {i}: {opened}");
            }
            Shape::B => {
                assert_eq!(probe, StatusCode::NOT_FOUND, "reload {i}");
                assert_eq!(opened["error"]["code"], 12, "reload {i}: {opened}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(
        slow.await.unwrap(),
        StatusCode::OK,
        "the slow call on the removed route finished"
    );
    let lines = feed.await.unwrap();
    assert_eq!(
        lines.lines().count(),
        60,
        "the long stream was not cut: {lines}"
    );
    assert!(!lines.contains("\"error\""), "{lines}");
    stop.store(true, Ordering::SeqCst);
    rest.await.unwrap();
    grpc.await.unwrap();
    let (sent, echoed) = chat.await.unwrap();
    assert!(
        sent > 10 && sent == echoed,
        "chat: {sent} sent, {echoed} echoed"
    );
    let failed = failures.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        calls.load(Ordering::SeqCst),
        &failed[..failed.len().min(5)]
    );
    assert!(metrics(&gw)
        .await
        .contains("portico_config_reloads_total{result=\"ok\"} 20"));
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn endpoints_that_stay_keep_their_connections_and_counters_keep_counting() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (b2, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (p1, used1) = counting_proxy(b1).await;
    let (p2, used2) = counting_proxy(b2).await;
    let dir = temp_dir("endpoints");
    let path = dir.join("portico.toml");
    let endpoints = [p1, p2];
    replace(&path, &config_text(Shape::A, &endpoints, ""));
    let gw = start(&path).await;
    let client = HttpClient::new(gw.addr);
    for _ in 0..5 {
        assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    }
    let before = used1.load(Ordering::SeqCst);
    assert!(before >= 1);

    replace(&path, &config_text(Shape::B, &endpoints, ""));
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    for _ in 0..10 {
        assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    }
    replace(&path, &config_text(Shape::A, &endpoints, ""));
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    for _ in 0..5 {
        assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    }
    assert_eq!(
        used1.load(Ordering::SeqCst),
        before,
        "the endpoint every config has kept its connection"
    );
    // Back on the first list, the removed endpoint takes no calls.
    for _ in 0..6 {
        let r = client.get("/v1/probe/headers").await;
        assert_eq!(r.header("x-served-by"), Some(b1.to_string().as_str()));
    }
    assert!(
        used2.load(Ordering::SeqCst) >= 1,
        "the added endpoint took calls"
    );
    // Metrics counters are not reset by a reload: 20 calls on GetShelf.
    let text = metrics(&gw).await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("portico_calls_total") && l.contains("GetShelf") && l.contains("\"OK\"")
        })
        .unwrap_or_else(|| panic!("no GetShelf counter in {text}"));
    assert!(line.ends_with(" 20"), "{line}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_method_moved_to_another_upstream_starts_new_series() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("moved");
    let path = dir.join("portico.toml");
    let second = format!("\n[upstreams.second]\nendpoints = [\"{b1}\"]\n");
    let on_demo = config_text(Shape::A, &[b1], "") + &second;
    replace(&path, &on_demo);
    let gw = start(&path).await;
    let client = HttpClient::new(gw.addr);
    for _ in 0..3 {
        assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    }
    let moved = on_demo.replacen(
        "grpc_service = \"portico.demo.v1.Library\"\nupstream = \"demo\"",
        "grpc_service = \"portico.demo.v1.Library\"\nupstream = \"second\"",
        1,
    );
    assert_ne!(moved, on_demo);
    replace(&path, &moved);
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    for _ in 0..2 {
        assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    }
    let text = metrics(&gw).await;
    let get_shelf: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("portico_calls_total") && l.contains("GetShelf"))
        .collect();
    // The new upstream's series counts only its own calls; the old one's
    // three are not relabelled as if the new upstream had served them.
    assert_eq!(
        get_shelf,
        [
            "portico_calls_total{method=\"portico.demo.v1.Library/GetShelf\",upstream=\"second\",code=\"OK\"} 2"
        ],
        "{text}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_unchanged_reload_is_a_no_op_and_config_shows_the_generation_without_secrets() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("noop");
    let path = dir.join("portico.toml");
    let log = dir.join("access.log");
    let text = config_text(Shape::A, &[b1], "")
        + "\n[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-very-secret-signing-key-for-hs256\"\n"
        + &format!(
            "\n[authenticators.keys]\nkind = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\n",
            support::fixture("api_keys.toml")
        )
        + &format!("\n[access_log]\npath = \"{}\"\n", log.display());
    replace(&path, &text);
    let gw = start(&path).await;
    let client = HttpClient::new(gw.addr);
    assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    assert!(
        support::eventually(|| std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 1))
            .await
    );
    // Rotation by renaming: the reload that finds nothing changed still
    // opens the file again.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let (status, before) = admin_json(&gw, Method::GET, "/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(before["digest"].as_str().unwrap().len(), 64);
    assert!(before["loaded_at"].as_f64().unwrap() > 0.0);
    assert_eq!(before["last_error"], Value::Null);
    assert_eq!(
        before["config"]["authenticators"]["users"]["secret"],
        "[redacted]"
    );
    assert!(!before
        .to_string()
        .contains("a-very-secret-signing-key-for-hs256"));
    // An authenticator's name is not a setting: one named `keys` is shown.
    assert_eq!(
        before["config"]["authenticators"]["keys"]["kind"],
        "api_key"
    );

    let (status, outcome) = admin_json(&gw, Method::POST, "/config/reload").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        outcome,
        json!({"result": "ok", "changed": false, "digest": before["digest"], "needs_restart": []})
    );
    assert_eq!(client.get("/v1/shelves/2").await.status, StatusCode::OK);
    assert!(
        support::eventually(
            || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/v1/shelves/2"))
        )
        .await,
        "the call after the reload was not written to a new file"
    );
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1
    );
    let (_, after) = admin_json(&gw, Method::GET, "/config").await;
    assert_eq!(after["loaded_at"], before["loaded_at"], "no new generation");
    let (status, _) = admin_json(&gw, Method::GET, "/config/reload").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // Every other admin page only reads.
    for path in ["/openapi.json", "/config", "/healthz"] {
        let r = HttpClient::new(gw.admin_addr.unwrap())
            .send(Method::POST, path, &[], "")
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{path}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_changed_file_is_reloaded_by_itself() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("watch");
    let path = dir.join("portico.toml");
    let watched =
        |shape| config_text(shape, &[b1], "").replace("watch_files = false", "watch_files = true");
    replace(&path, &watched(Shape::A));
    let gw = start(&path).await;
    let client = HttpClient::new(gw.addr);
    assert_eq!(client.get("/v1/probe/headers").await.status, StatusCode::OK);
    replace(&path, &watched(Shape::B));
    let mut gone = false;
    for _ in 0..50 {
        if client.get("/v1/probe/headers").await.status == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the route was still served 5 s after the file changed"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The generation's digest, as `GET /config` reports it.
async fn digest_of(gw: &Gateway) -> String {
    let (status, config) = admin_json(gw, Method::GET, "/config").await;
    assert_eq!(status, StatusCode::OK, "{config}");
    config["digest"].as_str().unwrap_or_default().to_owned()
}

/// Waits up to 5 s for the digest to leave `from`; the new one.
async fn digest_after(gw: &Gateway, from: &str) -> Option<String> {
    for _ in 0..50 {
        let now = digest_of(gw).await;
        if now != from {
            return Some(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A deploy replaces a watched proto folder with a new one; the watcher
/// sees the swap and, after it, every edit inside the new folder.
#[tokio::test]
async fn a_replaced_proto_folder_is_watched_again() {
    let dir = temp_dir("watch-folder");
    let proto = |methods: &str| {
        format!("syntax = \"proto3\";\npackage t.v1;\nmessage M {{}}\nservice S {{\n{methods}}}\n")
    };
    let folder = dir.join("proto");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("s.proto"), proto("  rpc A(M) returns (M);\n")).unwrap();
    let path = dir.join("portico.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
             [descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"s.proto\"]\n\n\
             [upstreams.u]\nendpoints = [\"127.0.0.1:9\"]\n\n\
             [[routes]]\ngrpc_service = \"t.v1.S\"\nupstream = \"u\"\n",
            folder.display()
        ),
    )
    .unwrap();
    let gw = start(&path).await;
    let first = digest_of(&gw).await;

    // The swap: the old folder removed, a new one renamed into its place.
    let fresh = dir.join("proto.new");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(
        fresh.join("s.proto"),
        proto("  rpc A(M) returns (M);\n  rpc B(M) returns (M);\n"),
    )
    .unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::rename(&fresh, &folder).unwrap();
    let swapped = digest_after(&gw, &first)
        .await
        .expect("the folder's replacement reloads");

    // An edit inside the new folder, in place. The watch on it is set
    // once the reload that saw the swap is over, a moment after its digest
    // shows: an edit made before then is made again.
    let mut seen = false;
    for n in 0..5 {
        std::fs::write(
            folder.join("s.proto"),
            proto(&format!("  rpc C{n}(M) returns (M);\n")),
        )
        .unwrap();
        if digest_after(&gw, &swapped).await.is_some() {
            seen = true;
            break;
        }
    }
    assert!(seen, "an edit inside the replacing folder was not seen");
    std::fs::remove_dir_all(dir).ok();
}

/// A config file that is a symlink into another folder is edited where it
/// lies: the watcher follows the link's target too.
#[cfg(unix)]
#[tokio::test]
async fn an_edit_to_a_symlinked_configs_target_is_reloaded() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("watch-symlink");
    let real = dir.join("real");
    let etc = dir.join("etc");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&etc).unwrap();
    let watched =
        |shape| config_text(shape, &[b1], "").replace("watch_files = false", "watch_files = true");
    std::fs::write(real.join("portico.toml"), watched(Shape::A)).unwrap();
    let path = etc.join("portico.toml");
    std::os::unix::fs::symlink(real.join("portico.toml"), &path).unwrap();
    let gw = start(&path).await;
    let first = digest_of(&gw).await;
    std::fs::write(real.join("portico.toml"), watched(Shape::B)).unwrap();
    assert!(
        digest_after(&gw, &first).await.is_some(),
        "an edit to the link's target was not seen"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A certificate verifier that trusts anything and remembers what it saw.
#[derive(Debug)]
struct Recorder(std::sync::Mutex<Vec<Vec<u8>>>);

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.0.lock().unwrap().push(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// An HTTP/1.1 connection over TLS; returns its sender.
async fn tls_connection(
    addr: SocketAddr,
    seen: Arc<Recorder>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(seen)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_over(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
) -> StatusCode {
    let req = http::Request::builder()
        .uri("/v1/probe/headers")
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status()
}

fn pem_der(file: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(support::fixture(file))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_certificate_swap_reaches_new_handshakes_and_spares_open_connections() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("tls");
    let path = dir.join("portico.toml");
    let with_cert = |cert: &str, key: &str| {
        config_text(Shape::A, &[b1], "").replacen(
            "watch_files = false\n",
            &format!(
                "watch_files = false\n\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                support::fixture(cert),
                support::fixture(key)
            ),
            1,
        )
    };
    replace(&path, &with_cert("tls/server.pem", "tls/server.key"));
    let gw = start(&path).await;
    let seen = Arc::new(Recorder(Default::default()));
    let mut open = tls_connection(gw.addr, seen.clone()).await;
    assert_eq!(get_over(&mut open).await, StatusCode::OK);

    replace(&path, &with_cert("tls/client.pem", "tls/client.key"));
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    let mut fresh = tls_connection(gw.addr, seen.clone()).await;
    assert_eq!(get_over(&mut fresh).await, StatusCode::OK);
    assert_eq!(
        get_over(&mut open).await,
        StatusCode::OK,
        "the open connection still works"
    );
    let certs = seen.0.lock().unwrap().clone();
    assert_eq!(
        certs,
        vec![pem_der("tls/server.pem"), pem_der("tls/client.pem")]
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_only_a_restart_applies_is_named_on_every_reload_until_then() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("restart");
    let path = dir.join("portico.toml");
    replace(&path, &config_text(Shape::A, &[b1], ""));
    let gw = start(&path).await;
    replace(
        &path,
        &config_text(Shape::A, &[b1], "limits.max_connections = 500"),
    );
    match gw.live.reload().await {
        ReloadOutcome::Swapped { needs_restart, .. } => {
            assert_eq!(needs_restart, vec!["server.limits.max_connections"])
        }
        other => panic!("{other:?}"),
    }
    // Nothing changed since, but the restart is still owed.
    let (status, outcome) = admin_json(&gw, Method::POST, "/config/reload").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(outcome["changed"], false);
    assert_eq!(
        outcome["needs_restart"],
        json!(["server.limits.max_connections"])
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_inline_config_has_no_file_to_reload_and_that_is_no_failure() {
    let h = support::Harness::start().await;
    let gw = &h.gateway;
    let (status, answer) = admin_json(gw, Method::POST, "/config/reload").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("no file to reload")),
        "{answer}"
    );
    let (_, config) = admin_json(gw, Method::GET, "/config").await;
    assert_eq!(config["source"], Value::Null, "{config}");
    assert_eq!(config["reloads_failed"], 0, "{config}");
    assert_eq!(config["last_error"], Value::Null, "{config}");
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

/// A health watch opened on a service no route serves yet learns of it
/// when a reload routes it, and hears it go when a reload stops routing it.
#[tokio::test]
async fn a_health_watch_follows_its_service_across_reloads() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut backends = Vec::new();
    for _ in 0..2 {
        let (addr, _) = Backends::default()
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        backends.push(addr);
    }
    let dir = temp_dir("health-watch");
    let path = dir.join("portico.toml");
    // Shape B does not route Probe; shape A does.
    replace(&path, &config_text(Shape::B, &backends, ""));
    let gw = start(&path).await;
    let mut watch = crate::support::health_watch(gw.addr, "portico.demo.v1.Probe").await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("a status within 10 s")
            .unwrap()
            .expect("the watch goes on")
            .status
    };
    assert_eq!(next().await, ServingStatus::ServiceUnknown as i32);

    replace(&path, &config_text(Shape::A, &backends, ""));
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    // NOT_SERVING first, until the new generation's probe has reached
    // the upstream.
    let mut status = next().await;
    while status == ServingStatus::NotServing as i32 {
        status = next().await;
    }
    assert_eq!(
        status,
        ServingStatus::Serving as i32,
        "routed now, its upstream reachable"
    );

    replace(&path, &config_text(Shape::B, &backends, ""));
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    assert_eq!(next().await, ServingStatus::ServiceUnknown as i32);
    std::fs::remove_dir_all(dir).ok();
}

/// A session open across a reload takes the new generation's own limits:
/// a shorter idle timeout and ping interval reach it within a few seconds,
/// as they reach a session opened after the reload.
#[tokio::test]
async fn an_open_sessions_idle_timeout_and_pings_follow_a_reload() {
    let (backend, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("ws-limits");
    let path = dir.join("portico.toml");
    let text = config_text(Shape::A, &[backend], "");
    replace(&path, &text);
    let gw = start(&path).await;
    // A client that sends nothing, pongs included, under the defaults
    // (pings every 30 s, closed after 120 s of silence).
    let mut sock = support::ws_raw::session(gw.addr).await;
    // The next frame's opcode and payload.
    async fn frame(sock: &mut TcpStream) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(10), sock.read_exact(&mut head))
            .await
            .expect("no frame within 10 s of the reload")
            .unwrap();
        let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
        sock.read_exact(&mut payload).await.unwrap();
        (head[0] & 0x0f, payload)
    }
    // Pings every 200 ms from within a few seconds of the reload.
    replace(
        &path,
        &format!("{text}\n[websocket]\nping_interval = \"200ms\"\n"),
    );
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    for _ in 0..3 {
        assert_eq!(frame(&mut sock).await.0, 0x9, "a ping");
    }
    // Then closed for its silence within a few seconds of a shorter idle
    // timeout (pings may come first).
    replace(
        &path,
        &format!("{text}\n[websocket]\nping_interval = \"200ms\"\nidle_timeout = \"1s\"\n"),
    );
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    let reloaded = std::time::Instant::now();
    let close_code = loop {
        match frame(&mut sock).await {
            (0x8, payload) => break u16::from_be_bytes([payload[0], payload[1]]),
            _ => continue,
        }
    };
    assert_eq!(close_code, 1001, "closed for its idle time");
    assert!(
        reloaded.elapsed() < Duration::from_secs(8),
        "the new idle timeout took {:?}",
        reloaded.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A shutdown during a reload that a SIGHUP started does not wait for it,
/// as it does not for one `POST /config/reload` started: here the reload
/// waits on a reflection source that accepts the connection and never
/// answers (10 s), and SIGTERM ends the process at once.
#[tokio::test]
async fn a_shutdown_abandons_a_reload_that_a_sighup_started() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    let backends = Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut served =
        support::served::Served::start(&support::config_text(backend, "", ""), "info").await;
    let path = served.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[descriptors]\n",
        "[descriptors]\nreflect = [\"silent\"]\n",
        1,
    );
    replace(
        &path,
        &format!("{text}\n[upstreams.silent]\nendpoints = [\"{silent_addr}\"]\n"),
    );
    served.signal("HUP");
    assert!(
        support::eventually(|| accepted.load(Ordering::SeqCst) > 0).await,
        "the reload is under way, waiting on the silent source"
    );
    let asked = std::time::Instant::now();
    served.signal("TERM");
    while served.alive() && asked.elapsed() < Duration::from_secs(9) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !served.alive(),
        "still running 9 s after SIGTERM: {}",
        served.stderr()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?} after SIGTERM: {}",
        asked.elapsed(),
        served.stderr()
    );
}

/// A SIGHUP sent while `serve` starts (here while it loads its schemas by
/// reflection through a slow link) does not end the process, the signal's
/// default action: it is held, and once the gateway serves, answered with
/// a reload.
#[tokio::test]
async fn a_sighup_while_the_gateway_starts_is_held_and_answered_with_a_reload() {
    let backends = Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let slow = support::instances::slow_proxy(backend, Duration::from_millis(150)).await;
    let dir = temp_dir("hup-at-start");
    let port = support::redis::free_port();
    let path = dir.join("portico.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[descriptors]\nreflect = [\"demo\"]\n\
             [upstreams.demo]\nendpoints = [\"{slow}\"]\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"demo\"\n"
        ),
    )
    .unwrap();
    // The log goes to stdout, errors to stderr: both kept in one file.
    let stderr = dir.join("output.log");
    let output = std::fs::File::create(&stderr).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &child.id().unwrap().to_string()])
            .status()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(hup().success());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the SIGHUP ended the starting gateway: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        assert!(started.elapsed() < Duration::from_secs(15), "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = HttpClient::new(addr).get("/v1/shelves/1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let said = || std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        support::eventually(|| said().contains("SIGHUP while starting: reloading the config"))
            .await,
        "{}",
        said()
    );
    child.kill().await.ok();
    let _ = std::fs::remove_dir_all(dir);
}

/// A named pipe or a device under a `proto_paths` folder (the folder is
/// digested, every file in it) neither hangs the start nor a reload, nor
/// is read: a pipe's read would block forever, `/dev/zero`'s never end.
#[tokio::test]
async fn special_files_under_a_proto_folder_are_not_read() {
    let dir = temp_dir("special-files");
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero")).unwrap();
    let backends = Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let text = support::config_text(backend, "", "").replacen(
        "proto_paths = [\"",
        &format!("proto_paths = [\"{}\", \"", dir.display()),
        1,
    );
    assert!(text.contains(&dir.display().to_string()));
    let served = support::served::Served::start(&text, "warn").await;
    let admin = HttpClient::new(served.admin);
    let reloaded = tokio::time::timeout(
        Duration::from_secs(10),
        admin.send(Method::POST, "/config/reload", &[], ""),
    )
    .await
    .expect("the reload answers");
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.text());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A named pipe or device the config names (a `.proto` to compile, a key
/// file) is refused as not a regular file, naming it, instead of hanging
/// `check` or a start on a read that never ends.
#[tokio::test]
async fn a_named_pipe_the_config_names_is_refused_not_waited_on() {
    let dir = temp_dir("named-pipe");
    let pipe = dir.join("pipe.proto");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let backends = Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = support::config_text(backend, "", "");
    for (name, text, says) in [
        (
            "a .proto to compile",
            base.replacen(
                "proto_paths = [\"",
                &format!("proto_paths = [\"{}\", \"", dir.display()),
                1,
            )
            .replacen("protos = [", "protos = [\"pipe.proto\", ", 1),
            "pipe.proto",
        ),
        (
            "an API key file",
            format!(
                "{base}\n[authenticators.k]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
                pipe.display()
            ),
            "authenticators.k.keys_file",
        ),
    ] {
        let path = dir.join("portico.toml");
        replace(&path, &text);
        let checked = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_portico"))
                .args(["check", "--config"])
                .arg(&path)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: check hung"))
        .unwrap();
        let said = String::from_utf8_lossy(&checked.stderr);
        assert!(!checked.status.success(), "{name}: {said}");
        assert!(
            said.contains(says) && said.contains("not a regular file"),
            "{name}: {said}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that changes an upstream's settings starts it afresh, but the
/// calls still running on it stay counted: in `/upstreams` and against
/// its circuit breaker's `max_requests`, until they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_running_across_a_reload_of_their_upstream_stay_counted() {
    let (b1, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("in-flight");
    let path = dir.join("portico.toml");
    let text = |connect_timeout: &str| {
        config_text(Shape::A, &[b1], "").replace(
            "[upstreams.demo]\n",
            &format!(
                "[upstreams.demo]\nconnect_timeout = \"{connect_timeout}\"\n\
                 circuit_breaker = {{ max_requests = 1 }}\n"
            ),
        )
    };
    replace(&path, &text("2s"));
    let gw = start(&path).await;
    let client = HttpClient::new(gw.addr);
    // A call held by the backend for 1.5 s.
    let held = {
        let client = HttpClient::new(gw.addr);
        tokio::spawn(async move { client.get("/v1/probe/sleep/1500").await.status })
    };
    let in_flight = |v: &Value| v[0]["in_flight"].as_u64();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while in_flight(&admin_json(&gw, Method::GET, "/upstreams").await.1) != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replace(&path, &text("3s"));
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    let (_, upstreams) = admin_json(&gw, Method::GET, "/upstreams").await;
    assert_eq!(in_flight(&upstreams), Some(1), "{upstreams}");
    // The held call fills the new breaker too: another is shed.
    let shed = client.get("/v1/shelves/1").await;
    assert_eq!(
        shed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        shed.text()
    );
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    let (_, upstreams) = admin_json(&gw, Method::GET, "/upstreams").await;
    assert_eq!(in_flight(&upstreams), Some(0), "{upstreams}");
    assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    std::fs::remove_dir_all(dir).ok();
}

/// An endpoint out of rotation for failing its health checks stays out
/// across a reload that changes its upstream's settings (which starts the
/// upstream's endpoints afresh) until the new config's first check of it
/// answers: `/readyz` never reports a sick upstream ready in between. A
/// pass under the new config brings it back at once.
#[tokio::test]
async fn a_sick_endpoint_stays_out_of_rotation_across_a_reload_until_checked_again() {
    let (backend, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = temp_dir("sick-reload");
    let path = dir.join("portico.toml");
    let text = |upstream: &str, check: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nwatch_files = false\n\
             [descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/probe.proto\"]\n\
             [upstreams.demo]\nendpoints = [\"{backend}\"]\n{upstream}\n\
             [upstreams.demo.health_check]\n{check}\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\n",
            support::proto_dir()
        )
    };
    let readyz = async |gw: &Gateway| {
        HttpClient::new(gw.admin_addr.unwrap())
            .get("/readyz")
            .await
            .status
    };
    // The backend serves no health service named "nope": every check fails.
    replace(
        &path,
        &text("", "service = \"nope\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_threshold = 1"),
    );
    let gw = start(&path).await;
    let mut sick = false;
    for _ in 0..100 {
        if readyz(&gw).await == StatusCode::SERVICE_UNAVAILABLE {
            sick = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sick, "the failing checks took the only endpoint out");

    // A changed setting starts the endpoints afresh; checks an hour apart,
    // three failures to take one out: only the carried verdict keeps it out.
    replace(
        &path,
        &text(
            "connect_timeout = \"3s\"",
            "service = \"nope\"\ninterval = \"1h\"\nunhealthy_threshold = 3",
        ),
    );
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    for _ in 0..10 {
        assert_eq!(readyz(&gw).await, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A config whose check passes (the server as a whole) brings it back at
    // its first check, though healthy_threshold asks for three in a row.
    replace(
        &path,
        &text(
            "connect_timeout = \"4s\"",
            "service = \"\"\ninterval = \"1h\"\nhealthy_threshold = 3",
        ),
    );
    assert!(matches!(
        gw.live.reload().await,
        ReloadOutcome::Swapped { .. }
    ));
    let mut ready = false;
    for _ in 0..100 {
        if readyz(&gw).await == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the first passing check under the new config");
    std::fs::remove_dir_all(dir).ok();
}
