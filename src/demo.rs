//! `portico demo`: the bundled example backends and the gateway in front of
//! them, in one process, with a tour printed on startup.

#[path = "../examples/backends/mod.rs"]
pub mod backends;

use crate::app::{self, StartError};
use crate::config::Config;
use crate::ingress::dispatch::Page;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// The demo's gateway config, with `@LISTEN@`, `@ADMIN@` and `@BACKEND@` placeholders.
pub const CONFIG: &str = include_str!("../examples/demo.toml");

/// The demo's admin port for a gateway on `listen`: the next one (any free
/// port when that is 0), or why there is none.
pub fn admin_port(listen: u16) -> Result<u16, String> {
    match listen {
        0 => Ok(0),
        u16::MAX => Err(format!(
            "port {} leaves no port after it for the admin port; choose a lower one",
            u16::MAX
        )),
        port => Ok(port + 1),
    }
}

pub fn config(listen: SocketAddr, backend: SocketAddr) -> Result<Config, StartError> {
    let admin_port = admin_port(listen.port()).map_err(|reason| {
        StartError::Config(crate::config::ConfigError {
            file: "portico demo".into(),
            key: "--listen".into(),
            reason,
        })
    })?;
    let admin = SocketAddr::new(listen.ip(), admin_port);
    let text = CONFIG
        .replace("@LISTEN@", &listen.to_string())
        .replace("@ADMIN@", &admin.to_string())
        .replace("@BACKEND@", &backend.to_string());
    Ok(Config::from_str_in(
        &text,
        "the demo's built-in config (--listen sets server.listen, and server.admin to the next port)",
        Path::new("."),
    )?)
}

/// Starts the demo backends and the gateway, prints the tour, serves until a signal.
pub async fn run(listen: SocketAddr) -> Result<(), StartError> {
    let backends = backends::Backends::default();
    let any: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    let (backend_addr, _task) = backends.bind(any).await.map_err(|error| StartError::Bind {
        file: String::new(),
        key: "demo backend",
        addr: any,
        error,
    })?;
    let gateway = app::start_with_pages(config(listen, backend_addr)?, pages()).await?;
    let admin = gateway.admin_addr.unwrap_or(gateway.addr);
    // A reader that stops early (`portico demo | head`) is no reason to stop.
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        tour(gateway.addr, admin, backend_addr)
    );
    gateway.run_until_signal().await;
    Ok(())
}

/// The demo's browser page: a chat room over the WebSocket bridge.
pub const CHAT_PAGE: &str = include_str!("../examples/chat.html");

pub fn pages() -> Vec<Page> {
    vec![Page {
        path: "/demo/chat.html".to_owned(),
        content_type: "text/html; charset=utf-8",
        body: bytes::Bytes::from_static(CHAT_PAGE.as_bytes()),
    }]
}

fn tour(gw: SocketAddr, admin: SocketAddr, backend: SocketAddr) -> String {
    format!(
        r#"
Portico demo: gateway on http://{gw}, demo gRPC backend on {backend}.
Try:

  curl -s http://{gw}/v1/shelves/1
  curl -s http://{gw}/v1/shelves/1/books
  curl -s -i -X POST http://{gw}/v1/shelves/1/books -d '{{"title":"Dune","author":"Frank Herbert","genre":"GENRE_FICTION"}}'
  curl -s -X PATCH http://{gw}/v1/shelves/1/books/1 -d '{{"pages":320}}'
  curl -s -X POST http://{gw}/v1/shelves/1/books/2:archive -d '{{"reason":"worn out"}}'
  curl -s 'http://{gw}/v1/books:search?query=sol&genres=GENRE_FICTION&pageSize=5&filter.language=en'
  curl -s http://{gw}/v1/shelves/1/books/1/cover
  curl -s -X POST http://{gw}/portico.demo.v1.Library/Stats -d '{{}}'
  curl -s -N 'http://{gw}/v1/feed?count=5&interval_ms=500'
  curl -s -N -H 'Accept: text/event-stream' 'http://{gw}/v1/feed?count=3&fail_after=2'
  printf '{{"seq":1,"topic":"a"}}\n{{"seq":2,"topic":"b"}}\n' | curl -s -X POST http://{gw}/v1/feed:upload --data-binary @-
  curl -s -i http://{gw}/v1/shelves/9
  curl -s -i http://{gw}/v1/probe/fail/7
  curl -s -i http://{gw}/v1/shelves/1 -X DELETE
  curl -s -i -X POST http://{gw}/v1/shelves/1/books -d '{{"title":"x","colour":"red"}}'
  curl -s 'http://{gw}/v1/shelves/1/overview?limit=2'        # one request, three calls

  curl -s http://{gw}/mcp -H 'content-type: application/json' -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'   # MCP tools

Chat over WebSocket in a browser: open http://{gw}/demo/chat.html in two tabs.
Read and try the REST API: http://{gw}/docs (the description: http://{gw}/openapi.json).
Watch it all on the live dashboard: http://{admin}/ (Prometheus: http://{admin}/metrics).

Press Ctrl-C to stop.
"#
    )
}
