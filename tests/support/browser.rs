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
            eprintln!("skipping browser test: {why}; .ci/run installs both");
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

/// Loads `url` in headless Chromium and returns the DOM once the page's
/// scripts have run (real network, bounded time).
pub async fn dump_dom(chromium: &Path, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "portico-chromium-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(chromium)
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
                "--virtual-time-budget=20000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished in time")
    .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The text of `<pre id="result">` in a dumped DOM.
pub fn result_of(dom: &str) -> serde_json::Value {
    let start = dom
        .find("<pre id=\"result\">")
        .map(|i| i + "<pre id=\"result\">".len());
    let text = start
        .and_then(|s| dom[s..].find("</pre>").map(|e| &dom[s..s + e]))
        .unwrap_or("");
    let text = text
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("no result on the page ({e}); DOM: {dom}"))
}
