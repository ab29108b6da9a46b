//! Headless Chromium for tests that load a real page: a static file server
//! on 127.0.0.1 and a runner that returns the page's DOM after its scripts ran.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The folder of the browser test pages and their bundles.
pub fn pages_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium and the built bundles, or `None` (with a note) when they are
/// not installed here. CI sets PORTICO_REQUIRE_BROWSER, so there a missing
/// browser fails the test instead of skipping it.
pub fn available() -> Option<PathBuf> {
    let chromium = std::env::var_os("PORTICO_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let bundle = pages_dir().join("dist/grpc_web_client.js");
    let missing = if !chromium.exists() {
        Some(format!(
            "no browser at {} (apt-get install chromium)",
            chromium.display()
        ))
    } else if !bundle.exists() {
        Some("no page bundles (npm ci && npm run build in tests/browser)".to_owned())
    } else {
        None
    };
    match missing {
        None => Some(chromium),
        Some(why) if std::env::var_os("PORTICO_REQUIRE_BROWSER").is_some() => {
            panic!("browser test cannot run: {why}")
        }
        Some(why) => {
            // Past the test harness's capture, so a skip shows in `cargo test`.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED browser test: {why}; .ci/run installs both"
            );
            None
        }
    }
}

/// Serves the files of `dir` over HTTP/1.1 on an ephemeral port.
pub async fn static_server(dir: PathBuf) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let dir = dir.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let path = dir.join(req.uri().path().trim_start_matches('/'));
                    async move {
                        let resp = match (path.starts_with(pages_dir()), std::fs::read(&path)) {
                            (true, Ok(bytes)) => {
                                let ct = match path.extension().and_then(|e| e.to_str()) {
                                    Some("html") => "text/html; charset=utf-8",
                                    Some("js") => "text/javascript",
                                    _ => "application/octet-stream",
                                };
                                let mut r = Response::new(Full::new(Bytes::from(bytes)));
                                r.headers_mut().insert("content-type", ct.parse().unwrap());
                                r
                            }
                            _ => {
                                let mut r =
                                    Response::new(Full::new(Bytes::from_static(b"not found")));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                r
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Opens `url` in headless Chromium and returns the JSON the page writes
/// into `<pre id="result">`, read over the DevTools protocol as soon as it
/// appears (bounded time). Polling the live page works for any traffic,
/// WebSocket included, where a one-shot DOM dump would race it.
pub async fn page_result(chromium: &Path, url: &str) -> serde_json::Value {
    page_result_with_screenshot(chromium, url, None).await
}

/// As [`page_result`], also saving a PNG of the page as it was then.
pub async fn page_result_with_screenshot(
    chromium: &Path,
    url: &str,
    screenshot: Option<&Path>,
) -> serde_json::Value {
    page_poll(
        chromium,
        url,
        "(document.getElementById('result') || {}).textContent || ''",
        screenshot,
    )
    .await
}

/// Opens `url` and evaluates `expression` in the page every 100 ms until
/// it returns a non-empty string, which must be JSON. An expression may
/// act on the page (click, type) between polls, as a user would.
pub async fn page_poll(
    chromium: &Path,
    url: &str,
    expression: &str,
    screenshot: Option<&Path>,
) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio_tungstenite::tungstenite::Message;

    let profile = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "portico-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let mut child = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let browser_ws = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                return url.trim().to_owned();
            }
        }
        panic!("chromium exited before opening DevTools");
    })
    .await
    .expect("DevTools in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let port = browser_ws
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .unwrap()
        .to_owned();

    let result = tokio::time::timeout(Duration::from_secs(60), async {
        // The page target's own DevTools socket, from the target list.
        let page_ws = loop {
            let list = super::HttpClient::new(format!("127.0.0.1:{port}").parse().unwrap()).get("/json/list").await;
            let targets: serde_json::Value = serde_json::from_slice(&list.body).unwrap_or_default();
            let found = targets.as_array().and_then(|t| {
                t.iter().find(|t| t["type"] == "page").and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            match found {
                Some(u) => break u,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let (mut ws, _) = tokio_tungstenite::connect_async(page_ws.as_str()).await.expect("DevTools socket");
        let mut id = 0;
        loop {
            id += 1;
            let ask = serde_json::json!({
                "id": id,
                "method": "Runtime.evaluate",
                "params": {"expression": expression, "returnByValue": true}
            });
            ws.send(Message::text(ask.to_string())).await.unwrap();
            let text = loop {
                match ws.next().await.expect("DevTools answers").unwrap() {
                    Message::Text(t) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                        if v["id"] == id {
                            break v["result"]["result"]["value"].as_str().unwrap_or("").to_owned();
                        }
                    }
                    _ => continue,
                }
            };
            if !text.is_empty() {
                if let Some(path) = screenshot {
                    id += 1;
                    let ask = serde_json::json!({"id": id, "method": "Page.captureScreenshot", "params": {"format": "png"}});
                    ws.send(Message::text(ask.to_string())).await.unwrap();
                    let png = loop {
                        if let Message::Text(t) = ws.next().await.expect("DevTools answers").unwrap() {
                            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                            if v["id"] == id {
                                break v["result"]["data"].as_str().unwrap_or("").to_owned();
                            }
                        }
                    };
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD.decode(png).expect("a base64 PNG");
                    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, bytes).unwrap();
                }
                break serde_json::from_str(&text).unwrap_or_else(|e| panic!("the page wrote no JSON ({e}): {text}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the page wrote its result in time");
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&profile);
    result
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
