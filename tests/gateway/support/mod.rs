//! Test support: the demo backends and the gateway on 127.0.0.1 ephemeral
//! ports, and a real HTTP client to talk to the gateway.
#![allow(dead_code)]

pub mod browser;
pub mod client_script;
pub mod h2raw;
pub mod instances;
pub mod node;
pub mod protocols;
pub mod python;
pub mod redis;
pub mod scripted;
pub mod served;
pub mod ws_raw;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use portico::app::{self, Gateway};
use portico::config::Config;
use portico::demo::backends::Backends;
use std::net::SocketAddr;

pub const SERVICES: &[&str] = &[
    "portico.demo.v1.Library",
    "portico.demo.v1.Feed",
    "portico.demo.v1.Chat",
    "portico.demo.v1.Probe",
];

/// The proto folder of this repository.
pub fn proto_dir() -> String {
    format!("{}/proto", env!("CARGO_MANIFEST_DIR"))
}

/// A config for the demo services behind `backend`, schemas compiled from
/// `proto/`. `sections` is TOML placed before the routes (e.g. `[json]`),
/// `route_extra` is added to every route.
pub fn config_text(backend: SocketAddr, sections: &str, route_extra: &str) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[descriptors]
proto_paths = ["{proto}"]
protos = ["portico/demo/v1/library.proto", "portico/demo/v1/feed.proto", "portico/demo/v1/chat.proto", "portico/demo/v1/probe.proto"]

[upstreams.demo]
endpoints = ["{backend}"]

{sections}
"#,
        proto = proto_dir()
    );
    for service in SERVICES {
        // Probe's methods are also MCP tools: the column every
        // protocol-table test has for MCP calls them.
        let mcp = if *service == "portico.demo.v1.Probe" {
            "mcp = true\n"
        } else {
            ""
        };
        text.push_str(&format!(
            "\n[[routes]]\ngrpc_service = \"{service}\"\nupstream = \"demo\"\n{mcp}{route_extra}\n"
        ));
    }
    text
}

/// Keys added to one demo service's route in a config [`config_text`]
/// wrote: `with_route_keys("Probe", "cache = { ttl = \"5m\" }")`.
pub trait RouteKeys {
    fn with_route_keys(self, service: &str, keys: &str) -> String;
}

impl RouteKeys for String {
    /// Panics when the config has no such route, so no test runs on a
    /// config its edit silently missed.
    fn with_route_keys(self, service: &str, keys: &str) -> String {
        let route = format!("grpc_service = \"portico.demo.v1.{service}\"\nupstream = \"demo\"\n");
        let at = self
            .find(&route)
            .unwrap_or_else(|| panic!("the config has no route for portico.demo.v1.{service}"))
            + route.len();
        let mut text = self;
        text.insert_str(at, &format!("{keys}\n"));
        text
    }
}

pub struct Harness {
    pub backends: Backends,
    pub backend_addr: SocketAddr,
    pub gateway: Gateway,
    pub client: HttpClient,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with("", "").await
    }

    pub async fn start_with(sections: &str, route_extra: &str) -> Harness {
        Harness::start_with_config(|backend| config_text(backend, sections, route_extra)).await
    }

    /// A gateway on a config built from the demo backend's address.
    pub async fn start_with_config(text: impl FnOnce(SocketAddr) -> String) -> Harness {
        let backends = Backends::default();
        let (backend_addr, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let config = Config::from_toml(&text(backend_addr)).unwrap();
        let gateway = app::start(config).await.unwrap();
        let client = HttpClient::new(gateway.addr);
        Harness {
            backends,
            backend_addr,
            gateway,
            client,
        }
    }
}

impl Harness {
    /// A gRPC channel to the gateway's port.
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.gateway.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

/// A WebSocket client's connection to the gateway.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A multiplexed (`portico.json.v1`) WebSocket session on the gateway.
pub async fn json_v1_session(h: &Harness) -> Ws {
    json_v1_at(h, "/ws").await
}

/// A `portico.json.v1` WebSocket connection to `path` (`/ws`, or a
/// method's path for a single call).
pub async fn json_v1_at(h: &Harness, path: &str) -> Ws {
    json_v1_to(h.gateway.addr, path).await
}

/// A `portico.json.v1` WebSocket connection to `path` on a gateway
/// listening at `addr` (one a test built without a [`Harness`]).
pub async fn json_v1_to(addr: std::net::SocketAddr, path: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// A length-prefixed frame (gRPC, gRPC-Web and Connect share the shape).
pub fn frame_bytes(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A message in a data frame.
pub fn frame(msg: &impl prost::Message) -> Vec<u8> {
    frame_bytes(0, &msg.encode_to_vec())
}

/// A started gateway for an arbitrary config text (with `@BACKEND@` filled in).
/// A grpc.health.v1 `Watch` of `service` on the gateway at `addr`.
pub async fn health_watch(
    addr: SocketAddr,
    service: &str,
) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

pub async fn gateway_for(text: &str, backend: SocketAddr) -> Gateway {
    let config = Config::from_toml(&text.replace("@BACKEND@", &backend.to_string())).unwrap();
    app::start(config).await.unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// HTTP/2 trailers (gRPC's status), empty when none came.
    pub trailers: HeaderMap,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The single field violation of a 400's google.rpc.BadRequest detail.
    pub fn violated_field(&self) -> String {
        let j = self.json();
        j["details"][0]["fieldViolations"][0]["field"]
            .as_str()
            .unwrap_or_else(|| panic!("no field violation in {j}"))
            .to_owned()
    }
}

/// Writes `request` (an HTTP/1.1 request as bytes, asking to close the
/// connection) to `addr` on a connection of its own and reads the whole
/// answer, as text.
pub async fn http1_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// An MCP `tools/call` (id 7) of `tool` with `arguments` posted to `path`
/// (`/mcp`, perhaps with a query) with `headers`: the HTTP reply as it came.
pub async fn mcp_send(
    client: &HttpClient,
    path: &str,
    headers: &[(&str, &str)],
    tool: &str,
    arguments: serde_json::Value,
) -> Reply {
    let request = serde_json::json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments } });
    let mut all = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    all.extend_from_slice(headers);
    client
        .send(http::Method::POST, path, &all, request.to_string())
        .await
}

/// An MCP `tools/call` of `tool` with `arguments` (and `headers`): the
/// HTTP reply, checked to be a JSON-RPC answer to it, and its `result`.
pub async fn mcp_call(
    client: &HttpClient,
    headers: &[(&str, &str)],
    tool: &str,
    arguments: serde_json::Value,
) -> (Reply, serde_json::Value) {
    let reply = mcp_send(client, "/mcp", headers, tool, arguments).await;
    let answer = reply.json();
    assert_eq!(reply.status, StatusCode::OK, "{answer}");
    assert_eq!(answer["id"], 7, "{answer}");
    let result = answer["result"].clone();
    assert!(result.is_object(), "not a tool result: {answer}");
    (reply, result)
}

/// An HTTP/1.1 client (hyper), or HTTP/2 with prior knowledge; plain
/// text, or TLS with a client config of the test's choosing.
#[derive(Clone)]
pub struct HttpClient {
    pub addr: SocketAddr,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The TLS client config, when the client speaks TLS.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

fn connector(
    tls: Option<&rustls::ClientConfig>,
    http2_only: bool,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let config = tls.cloned().unwrap_or_else(|| {
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
    });
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    // ALPN: h2 only, or h2 then http/1.1.
    if http2_only {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().enable_http2().wrap_connector(http)
    }
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        HttpClient {
            addr,
            client: Client::builder(TokioExecutor::new()).build(connector(None, false)),
            tls: None,
        }
    }

    pub fn http2(addr: SocketAddr) -> Self {
        HttpClient {
            addr,
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(connector(None, false)),
            tls: None,
        }
    }

    /// A TLS client (ALPN h2 or http/1.1, as `http2_only` says).
    pub fn tls(addr: SocketAddr, config: rustls::ClientConfig, http2_only: bool) -> Self {
        let mut config = config;
        config.alpn_protocols.clear();
        HttpClient {
            addr,
            client: Client::builder(TokioExecutor::new())
                .http2_only(http2_only)
                .build(connector(Some(&config), http2_only)),
            tls: Some(std::sync::Arc::new(config)),
        }
    }

    /// The same peer, over HTTP/2 only (gRPC).
    pub fn as_http2(&self) -> Self {
        match &self.tls {
            None => HttpClient::http2(self.addr),
            Some(c) => HttpClient::tls(self.addr, (**c).clone(), true),
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    }

    /// Whether a GET fails below HTTP (the connection refused or closed).
    pub async fn client_error(&self, path: &str) -> bool {
        let req = Request::builder()
            .uri(self.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.client.request(req).await.is_err()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn json(&self, method: Method, path: &str, body: &str) -> Reply {
        self.send(
            method,
            path,
            &[("content-type", "application/json")],
            body.to_owned(),
        )
        .await
    }

    /// Starts a request and returns the response with its body unread.
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<hyper::body::Incoming> {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap()
    }
}

/// `Authorization: Bearer <JWT>` for an HS256 token signed with `secret`
/// for `subject`, valid for ten minutes.
pub fn hs256_bearer(secret: &str, subject: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": subject, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    format!("Bearer {token}")
}

/// A file under `tests/fixtures`, as an absolute path for configs.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The JSON lines an access log at `path` holds so far (none before it
/// is created).
pub fn access_log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Retries `check` for up to two seconds; for effects that land shortly
/// after a response (a backend noticing a cancellation).
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// As [`eventually`], for checks that await, for up to ten seconds.
pub async fn eventually_async<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Reads a `portico.json.v1` session's text frames until a call's `status`
/// frame (or a frame-level `error`), and returns that object; panics when
/// the session ends first or no frame comes within 5 s.
pub async fn ws_status<S>(ws: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s");
        match frame {
            Some(Ok(Message::Text(t))) => {
                let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(s) = f.get("status").or_else(|| f.get("error")) {
                    return s.clone();
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("the session ended before a status: {other:?}"),
        }
    }
}
