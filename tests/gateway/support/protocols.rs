//! Every ingress protocol as a column of a table: one call of the demo
//! `Probe` service (`Headers`, or `Sleep`) with the same headers over REST,
//! gRPC, gRPC-Web, Connect or WebSocket, and what the client saw of it.

use super::{frame_bytes, Harness, RouteKeys};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use portico::demo::backends::pb;
use prost::Message as _;
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket's socket: plain TCP or TLS.
enum Stream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rest,
    Grpc,
    GrpcWeb,
    Connect,
    WebSocket,
    Mcp,
}

impl Protocol {
    /// As logs, metrics and traces name it (`portico.ingress`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Connect => "connect",
            Protocol::WebSocket => "websocket",
            Protocol::Mcp => "mcp",
        }
    }
}

pub const EVERY_PROTOCOL: [Protocol; 6] = [
    Protocol::Rest,
    Protocol::Grpc,
    Protocol::GrpcWeb,
    Protocol::Connect,
    Protocol::WebSocket,
    Protocol::Mcp,
];

/// What a client saw of one call of `Probe.Headers`.
#[derive(Debug)]
pub struct Seen {
    /// The gRPC code (REST and Connect: the code of the error body).
    pub code: i64,
    /// The metadata the backend received, when the call reached it.
    pub metadata: Map<String, Value>,
    /// The reply's `x-cache` verdict, if any.
    pub cache: Option<String>,
    /// The error's message (gRPC `grpc-message`, the JSON `message`, the
    /// WebSocket status's), or a REST reply's body when it is not JSON.
    pub message: String,
    /// The `x-request-id` the reply carried (a header, gRPC metadata, or
    /// the WebSocket call's `headers` frame).
    pub request_id: Option<String>,
    /// The `WWW-Authenticate` challenge, wherever the protocol carries it
    /// (a header, trailing metadata, the WebSocket status's trailers, MCP's
    /// `_meta`), when it is a valid (ASCII) value.
    pub challenge: Option<String>,
}

/// Calls `Probe.Headers` (or `Probe.Sleep` for `millis`) with `headers` over `protocol`.
/// `query` is appended to the URL where the protocol has one.
pub async fn call(
    h: &Harness,
    protocol: Protocol,
    headers: &[(&str, &str)],
    query: &str,
    sleep_millis: Option<i64>,
) -> Seen {
    call_at(
        h.gateway.addr,
        &h.client,
        protocol,
        headers,
        query,
        sleep_millis,
    )
    .await
}

/// [`call`] against any gateway: one at `addr`, reached over HTTP by `client`
/// (which says whether it is TLS).
pub async fn call_at(
    addr: std::net::SocketAddr,
    client: &super::HttpClient,
    protocol: Protocol,
    headers: &[(&str, &str)],
    query: &str,
    sleep_millis: Option<i64>,
) -> Seen {
    let (grpc_path, rest_path, message, json_body) = match sleep_millis {
        None => (
            "/portico.demo.v1.Probe/Headers".to_owned(),
            "/v1/probe/headers".to_owned(),
            Bytes::from(pb::HeadersRequest {}.encode_to_vec()),
            json!({}),
        ),
        Some(ms) => (
            "/portico.demo.v1.Probe/Sleep".to_owned(),
            format!("/v1/probe/sleep/{ms}"),
            Bytes::from(pb::SleepRequest { millis: ms }.encode_to_vec()),
            json!({ "millis": ms }),
        ),
    };
    let with_query = |p: &str| {
        if query.is_empty() {
            p.to_owned()
        } else {
            format!("{p}?{query}")
        }
    };
    match protocol {
        Protocol::Mcp => {
            // The demo config offers Probe as tools (`mcp = true`).
            let tool = if sleep_millis.is_some() {
                "Probe_Sleep"
            } else {
                "Probe_Headers"
            };
            let r = super::mcp_send(client, &with_query("/mcp"), headers, tool, json_body).await;
            let reply = r.json();
            let result = &reply["result"];
            assert!(result.is_object(), "not a tool result: {reply}");
            let structured = &result["structuredContent"];
            let (code, message) = if result["isError"] == true {
                let status = &result["_meta"]["io.portico/status"];
                (
                    status["code"].as_i64().unwrap(),
                    status["message"].as_str().unwrap_or("").to_owned(),
                )
            } else {
                (0, String::new())
            };
            let meta = &result["_meta"]["io.portico/metadata"];
            seen(code, structured, meta["x-cache"].as_str(), message)
                .with_id(r.header("x-request-id"))
                .with_challenge(meta["www-authenticate"].as_str())
        }
        Protocol::Rest => {
            let r = client
                .send(Method::GET, &with_query(&rest_path), headers, "")
                .await;
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let code = if r.status.is_success() {
                0
            } else {
                body["code"].as_i64().unwrap_or(-1)
            };
            let message = body["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| r.text());
            seen(code, &body, r.header("x-cache"), message)
                .with_id(r.header("x-request-id"))
                .with_challenge(r.header("www-authenticate"))
        }
        Protocol::Connect => {
            let mut all = vec![
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ];
            all.extend_from_slice(headers);
            let r = client
                .send(
                    Method::POST,
                    &with_query(&grpc_path),
                    &all,
                    json_body.to_string(),
                )
                .await;
            let body = r.json();
            let code = if r.status.is_success() {
                0
            } else {
                connect_code(body["code"].as_str().unwrap())
            };
            let message = body["message"].as_str().unwrap_or("").to_owned();
            seen(code, &body, r.header("x-cache"), message)
                .with_id(r.header("x-request-id"))
                .with_challenge(r.header("www-authenticate"))
        }
        Protocol::GrpcWeb => {
            let mut all = vec![("content-type", "application/grpc-web+proto")];
            all.extend_from_slice(headers);
            let r = client
                .send(
                    Method::POST,
                    &with_query(&grpc_path),
                    &all,
                    frame_bytes(0, &message),
                )
                .await;
            let (message, trailers) = split_web_body(&r.body);
            let status = r
                .header("grpc-status")
                .map(str::to_owned)
                .or_else(|| trailers.get("grpc-status").cloned())
                .unwrap();
            let code: i64 = status.parse().unwrap();
            let text = r
                .header("grpc-message")
                .map(str::to_owned)
                .or_else(|| trailers.get("grpc-message").cloned())
                .unwrap_or_default();
            let body = decode_reply(message.as_deref(), sleep_millis.is_some());
            let challenge = r
                .header("www-authenticate")
                .map(str::to_owned)
                .or_else(|| trailers.get("www-authenticate").cloned());
            seen(code, &body, r.header("x-cache"), grpc_message(&text))
                .with_id(r.header("x-request-id"))
                .with_challenge(challenge.as_deref())
        }
        Protocol::Grpc
            if headers.iter().any(|(k, _)| *k == "grpc-timeout") || client.tls.is_some() =>
        {
            // tonic enforces a deadline it sends itself (and reports CANCELLED):
            // send the header by hand over HTTP/2 to see what the gateway does.
            // (Also the way over TLS: this build's tonic has no TLS.)
            let mut all = vec![("content-type", "application/grpc"), ("te", "trailers")];
            all.extend_from_slice(headers);
            let r = client
                .as_http2()
                .send(Method::POST, &grpc_path, &all, frame_bytes(0, &message))
                .await;
            let (message, _) = split_web_body(&r.body);
            // A failure before any reply is trailers-only: the status is a header.
            // Trailers-only (a failure before any reply) puts the status in
            // the headers; otherwise it is in the trailers.
            let trailer = |name: &str| {
                r.header(name)
                    .or_else(|| r.trailers.get(name).and_then(|v| v.to_str().ok()))
                    .map(str::to_owned)
            };
            let code: i64 = trailer("grpc-status")
                .expect("a gRPC reply carries grpc-status")
                .parse()
                .unwrap();
            let text = grpc_message(&trailer("grpc-message").unwrap_or_default());
            let body = decode_reply(message.as_deref(), sleep_millis.is_some());
            seen(code, &body, r.header("x-cache"), text)
                .with_id(r.header("x-request-id"))
                .with_challenge(trailer("www-authenticate").as_deref())
        }
        Protocol::Grpc => {
            let mut grpc = tonic::client::Grpc::new(grpc_channel(addr).await);
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(message);
            for (k, v) in headers {
                req.metadata_mut().append(
                    tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let reply = grpc
                .unary(
                    req,
                    grpc_path.parse::<http::uri::PathAndQuery>().unwrap(),
                    portico::egress::codec::RawCodec,
                )
                .await;
            match reply {
                Ok(r) => {
                    let cache = r
                        .metadata()
                        .get("x-cache")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let id = r
                        .metadata()
                        .get("x-request-id")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let body = decode_reply(Some(r.get_ref()), sleep_millis.is_some());
                    seen(0, &body, cache.as_deref(), String::new()).with_id(id.as_deref())
                }
                Err(status) => seen(
                    status.code() as i64,
                    &json!({}),
                    None,
                    status.message().to_owned(),
                )
                .with_id(
                    status
                        .metadata()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok()),
                )
                .with_challenge(
                    status
                        .metadata()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok()),
                ),
            }
        }
        Protocol::WebSocket => {
            let scheme = if client.tls.is_some() { "wss" } else { "ws" };
            let mut req = format!("{scheme}://{}{}", addr, with_query("/ws"))
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
            for (k, v) in headers {
                req.headers_mut().append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let connected = match &client.tls {
                None => {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    tokio_tungstenite::client_async(req, Stream::Plain(tcp)).await
                }
                Some(config) => {
                    let mut config = (**config).clone();
                    config.alpn_protocols = vec![b"http/1.1".to_vec()];
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                        .connect(name, tcp)
                        .await
                        .unwrap();
                    tokio_tungstenite::client_async(req, Stream::Tls(Box::new(tls))).await
                }
            };
            let (mut ws, handshake) = match connected {
                Ok(connected) => connected,
                // Refused before the upgrade: the error is the HTTP reply's
                // JSON body, as REST's is.
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    let body: Value =
                        serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                            .unwrap_or_else(|e| panic!("a refused handshake's JSON body: {e}"));
                    let message = body["message"].as_str().unwrap_or("").to_owned();
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok());
                    return seen(body["code"].as_i64().unwrap(), &json!({}), None, message)
                        .with_challenge(challenge);
                }
                Err(e) => panic!("the WebSocket handshake failed: {e}"),
            };
            let open = json!({"id": "c", "open": grpc_path, "message": json_body});
            ws.send(Message::text(open.to_string())).await.unwrap();
            let mut cache = None;
            // The session's id, from the 101; its first call's is `<id>.0`.
            let request_id = handshake
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|id| format!("{id}.0"));
            let mut body = json!({});
            loop {
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    panic!("the session ended before the call's status")
                };
                let f: Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(hd) = f.get("headers") {
                    cache = hd["x-cache"].as_str().map(str::to_owned);
                }
                if let Some(r) = f.get("result") {
                    body = r.clone();
                }
                if let Some(s) = f.get("status") {
                    let code = s["code"].as_i64().unwrap();
                    let message = s["message"].as_str().unwrap_or("").to_owned();
                    return seen(code, &body, cache.as_deref(), message)
                        .with_id(request_id.as_deref())
                        .with_challenge(f["trailers"]["www-authenticate"].as_str());
                }
                if let Some(e) = f.get("error") {
                    panic!("frame refused: {e}");
                }
            }
        }
    }
}

/// A `grpc-message` value, percent-decoded.
fn grpc_message(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

impl Seen {
    fn with_id(mut self, id: Option<&str>) -> Seen {
        self.request_id = id.map(str::to_owned);
        self
    }

    fn with_challenge(mut self, challenge: Option<&str>) -> Seen {
        self.challenge = challenge.map(str::to_owned);
        self
    }
}

fn seen(code: i64, body: &Value, cache: Option<&str>, message: String) -> Seen {
    Seen {
        code,
        message,
        request_id: None,
        challenge: None,
        metadata: body["metadata"].as_object().cloned().unwrap_or_default(),
        cache: cache.map(str::to_owned),
    }
}

pub fn connect_code(name: &str) -> i64 {
    match name {
        "invalid_argument" => 3,
        "deadline_exceeded" => 4,
        "permission_denied" => 7,
        "resource_exhausted" => 8,
        "unauthenticated" => 16,
        "unknown" => 2,
        "not_found" => 5,
        "failed_precondition" => 9,
        "aborted" => 10,
        "unimplemented" => 12,
        "internal" => 13,
        "unavailable" => 14,
        other => panic!("unexpected Connect code {other}"),
    }
}

/// A Headers reply as JSON (the shape REST and Connect return).
fn decode_reply(message: Option<&[u8]>, sleep: bool) -> Value {
    match (message, sleep) {
        (Some(m), false) => {
            let r = pb::HeadersResponse::decode(m).unwrap();
            json!({ "metadata": r.metadata })
        }
        _ => json!({}),
    }
}

/// A gRPC-Web body: its message (if any) and its trailers.
pub fn split_web_body(body: &[u8]) -> (Option<Vec<u8>>, std::collections::HashMap<String, String>) {
    let mut message = None;
    let mut trailers = std::collections::HashMap::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let flags = rest[0];
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        if flags & 0x80 != 0 {
            for line in String::from_utf8_lossy(payload).split("\r\n") {
                if let Some((k, v)) = line.split_once(':') {
                    trailers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
        } else {
            message = Some(payload.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (message, trailers)
}

/// The demo gateway with `probe_extra` added to the Probe route.
/// Calls `Probe.Headers` over every protocol, each call expected to end at
/// the route's short deadline while a policy waits on a slow service:
/// `DEADLINE_EXCEEDED` saying `says`, the backend never called, and long
/// before the service would have answered.
pub async fn assert_each_ends_at_its_deadline(h: &Harness, headers: &[(&str, &str)], says: &str) {
    for protocol in EVERY_PROTOCOL {
        let started = std::time::Instant::now();
        let seen = call(h, protocol, headers, "", None).await;
        assert_eq!(seen.code, 4, "{protocol:?}: {}", seen.message);
        assert!(
            seen.message.contains(says),
            "{protocol:?}: {}",
            seen.message
        );
        assert!(
            seen.metadata.is_empty(),
            "{protocol:?}: the backend was not called"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2500),
            "{protocol:?}: waited {:?}",
            started.elapsed()
        );
    }
}

pub async fn gateway(sections: &str, probe_extra: &str) -> Harness {
    let sections = sections.to_owned();
    let probe_extra = probe_extra.to_owned();
    Harness::start_with_config(move |backend| {
        super::config_text(backend, &sections, "").with_route_keys("Probe", &probe_extra)
    })
    .await
}

async fn grpc_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// What a client saw of one call of any demo method: the gRPC code it was
/// given, the reply or error as JSON, the error's message, and the headers
/// and trailers that came with it (for WebSocket, the `headers` and
/// `trailers` frames' entries).
#[derive(Debug)]
pub struct Outcome {
    pub code: i64,
    pub json: Value,
    pub message: String,
    pub fields: std::collections::HashMap<String, String>,
}

/// Calls the demo method at `grpc_path` (`/portico.demo.v1.Library/GetShelf`)
/// with `request` (its request message as JSON) over one protocol: REST
/// (a POST to the method's own path), gRPC, gRPC-Web, Connect (JSON) or a
/// WebSocket session in the JSON dialect. gRPC and gRPC-Web messages are
/// encoded from and decoded to JSON with the demo's schemas.
pub async fn call_json(
    client: &super::HttpClient,
    protocol: Protocol,
    grpc_path: &str,
    request: &str,
) -> Outcome {
    use std::collections::HashMap;
    let headers_of = |r: &super::Reply| -> HashMap<String, String> {
        r.headers
            .iter()
            .chain(r.trailers.iter())
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect()
    };
    let method = portico::fuzzing::demo_pool()
        .get_service_by_name(
            grpc_path
                .trim_start_matches('/')
                .split('/')
                .next()
                .expect("a gRPC path"),
        )
        .and_then(|s| {
            let name = grpc_path.rsplit('/').next()?;
            s.methods().find(|m| m.name() == name)
        })
        .expect("a demo method");
    match protocol {
        Protocol::Rest | Protocol::Connect => {
            let mut headers = vec![("content-type", "application/json")];
            if protocol == Protocol::Connect {
                headers.push(("connect-protocol-version", "1"));
            }
            let r = client
                .send(Method::POST, grpc_path, &headers, request.to_owned())
                .await;
            let json = r.json();
            let code = match &json["code"] {
                _ if r.status.is_success() => 0,
                Value::String(name) => connect_code(name),
                code => code.as_i64().expect("an error body has a code"),
            };
            let message = json["message"].as_str().unwrap_or("").to_owned();
            Outcome {
                code,
                json,
                message,
                fields: headers_of(&r),
            }
        }
        Protocol::Grpc | Protocol::GrpcWeb => {
            let mut de = serde_json::Deserializer::from_str(request);
            let message = prost_reflect::DynamicMessage::deserialize(method.input(), &mut de)
                .expect("a request the schema reads")
                .encode_to_vec();
            let (sender, content_type) = match protocol {
                Protocol::Grpc => (client.as_http2(), "application/grpc"),
                _ => (client.clone(), "application/grpc-web+proto"),
            };
            let r = sender
                .send(
                    Method::POST,
                    grpc_path,
                    &[("content-type", content_type), ("te", "trailers")],
                    frame_bytes(0, &message),
                )
                .await;
            let mut fields = headers_of(&r);
            let reply = if protocol == Protocol::GrpcWeb {
                let (reply, trailers) = split_web_body(&r.body);
                fields.extend(trailers);
                reply
            } else {
                (r.body.len() > 5).then(|| r.body[5..].to_vec())
            };
            let code: i64 = fields["grpc-status"].parse().unwrap();
            let json = match reply {
                Some(bytes) if code == 0 => serde_json::to_value(
                    prost_reflect::DynamicMessage::decode(method.output(), bytes.as_slice())
                        .unwrap(),
                )
                .unwrap(),
                _ => Value::Null,
            };
            let message = grpc_message(fields.get("grpc-message").map_or("", String::as_str));
            Outcome {
                code,
                json,
                message,
                fields,
            }
        }
        Protocol::WebSocket => {
            let mut req = format!("ws://{}/ws", client.addr)
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
            let open = format!(r#"{{"id":"a","open":"{grpc_path}","message":{request}}}"#);
            ws.send(Message::text(open)).await.unwrap();
            let mut fields = HashMap::new();
            let mut json = Value::Null;
            loop {
                let Some(Ok(Message::Text(t))) = ws.next().await else {
                    panic!("the session ended before the call's status")
                };
                let frame: Value = serde_json::from_str(t.as_str()).unwrap();
                for key in ["headers", "trailers"] {
                    for (k, v) in frame[key].as_object().into_iter().flatten() {
                        fields.insert(k.clone(), v.as_str().unwrap_or("").to_owned());
                    }
                }
                if let Some(result) = frame.get("result") {
                    json = result.clone();
                }
                if let Some(status) = frame.get("status").or(frame.get("error")) {
                    let code = status["code"].as_i64().expect("a status has a code");
                    if code != 0 {
                        json = status.clone();
                    }
                    let message = status["message"].as_str().unwrap_or("").to_owned();
                    return Outcome {
                        code,
                        json,
                        message,
                        fields,
                    };
                }
            }
        }
        Protocol::Mcp => unreachable!("MCP calls tools, see `call`"),
    }
}
