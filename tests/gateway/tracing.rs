//! OpenTelemetry traces, received by real OTLP collectors in the test (the
//! collector's gRPC `TraceService`, and OTLP/HTTP protobuf): every protocol
//! makes a server span that continues the client's trace and an attempt
//! span per upstream attempt, and the backend gets a `traceparent` whose
//! parent is the attempt; retries are sibling attempts; a WebSocket call is
//! a child of its session unless its metadata names its own parent; a dead
//! collector costs no request.

use crate::support;

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use support::protocols::{call, Protocol, EVERY_PROTOCOL};
use support::Harness;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Every span a collector received, with its resource's service name.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn keep(&self, req: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push((service.clone(), span));
                }
            }
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Whether at least `n` spans of the trace arrived, in bounded time.
    async fn arrived(&self, trace_id: &str, n: usize) -> bool {
        support::eventually(|| self.of_trace(trace_id).len() >= n).await
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A collector's OTLP/gRPC receiver on an ephemeral port.
async fn grpc_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(received.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, received)
}

/// A collector's OTLP/HTTP receiver (`POST /v1/traces`, protobuf body).
async fn http_collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = received.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let keep = keep.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let keep = keep.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            keep.keep(ExportTraceServiceRequest::decode(body).unwrap());
                            let reply = ExportTraceServiceResponse::default().encode_to_vec();
                            Ok::<_, std::convert::Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(http_body_util::Full::new(bytes::Bytes::from(reply)))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (addr, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    })
}

async fn gateway(tracing: &str, route_extra: &str) -> Harness {
    Harness::start_with(&format!("[tracing]\n{tracing}\n"), route_extra).await
}

type WsSession =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket session in the JSON dialect whose handshake carries a
/// `traceparent` of `trace` (sampled, parent [`CLIENT_PARENT`]).
async fn traced_session(h: &Harness, trace: &str) -> WsSession {
    let mut req = format!("ws://{}/ws", h.gateway.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    req.headers_mut().insert(
        "traceparent",
        format!("00-{trace}-{CLIENT_PARENT}-01").parse().unwrap(),
    );
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// A trace id of its own per test case.
fn trace_id(n: u8) -> String {
    format!("{:02x}{}", n, "5b8aa5a2d2c872e8321cf37308d69d")
}

const CLIENT_PARENT: &str = "1111111111111111";

/// Checks one call's trace: the server span is the client's child, the
/// attempt spans the server span's, the backend's parent an attempt.
fn check_call(
    spans: &[Span],
    protocol: &str,
    parent: &str,
    backend_traceparent: &str,
) -> (Span, Vec<Span>) {
    let server: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32 && s.name == "portico.demo.v1.Probe/Headers")
        .collect();
    assert_eq!(server.len(), 1, "{protocol}: one server span in {spans:#?}");
    let server = server[0].clone();
    assert_eq!(
        hex(&server.parent_span_id),
        parent,
        "{protocol}: {server:#?}"
    );
    assert_eq!(attr(&server, "portico.ingress").as_deref(), Some(protocol));
    assert_eq!(attr(&server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr(&server, "rpc.service").as_deref(),
        Some("portico.demo.v1.Probe")
    );
    assert_eq!(attr(&server, "rpc.method").as_deref(), Some("Headers"));
    assert_eq!(attr(&server, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert!(attr(&server, "url.path").is_some(), "{server:#?}");
    let attempts: Vec<Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .cloned()
        .collect();
    assert!(
        !attempts.is_empty(),
        "{protocol}: no attempt span in {spans:#?}"
    );
    for a in &attempts {
        assert_eq!(a.parent_span_id, server.span_id, "{protocol}: {a:#?}");
        assert!(a.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(a.end_time_unix_nano <= server.end_time_unix_nano);
    }
    let last = attempts
        .iter()
        .max_by_key(|a| a.start_time_unix_nano)
        .unwrap();
    let parts: Vec<&str> = backend_traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{backend_traceparent}");
    assert_eq!(
        parts[1],
        hex(&server.trace_id),
        "{protocol}: the backend's trace"
    );
    assert_eq!(
        parts[2],
        hex(&last.span_id),
        "{protocol}: the backend's parent is the attempt"
    );
    assert_eq!(parts[3], "01");
    (server, attempts)
}

#[tokio::test]
async fn every_protocol_continues_the_clients_trace_down_to_the_backend() {
    let (collector, received) = grpc_collector().await;
    let h = gateway(
        &format!(
            "endpoint = \"http://{collector}\"\nprotocol = \"grpc\"\nservice_name = \"edge-gw\""
        ),
        "",
    )
    .await;
    for (n, protocol) in EVERY_PROTOCOL.into_iter().enumerate() {
        let trace = trace_id(n as u8);
        let traceparent = format!("00-{trace}-{CLIENT_PARENT}-01");
        let seen = call(&h, protocol, &[("traceparent", &traceparent)], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: {seen:?}");
        let backend = seen.metadata["traceparent"].as_str().unwrap().to_owned();
        let name = protocol.name();
        // The WebSocket session's span ends with the session.
        let want = if protocol == Protocol::WebSocket {
            3
        } else {
            2
        };
        assert!(
            received.arrived(&trace, want).await,
            "{name}: spans never arrived: {:#?}",
            received.spans()
        );
        let spans = received.of_trace(&trace);
        if protocol == Protocol::WebSocket {
            let session = spans
                .iter()
                .find(|s| s.name == "websocket")
                .unwrap_or_else(|| panic!("no session span in {spans:#?}"));
            assert_eq!(session.kind, SpanKind::Server as i32);
            assert_eq!(hex(&session.parent_span_id), CLIENT_PARENT);
            assert_eq!(
                attr(session, "portico.websocket.calls").as_deref(),
                Some("1")
            );
            check_call(&spans, name, &hex(&session.span_id), &backend);
        } else {
            check_call(&spans, name, CLIENT_PARENT, &backend);
        }
    }
    assert!(received
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|(service, _)| service == "edge-gw"));

    // A call with no traceparent starts a trace of its own.
    let seen = call(&h, Protocol::Rest, &[], "", None).await;
    let backend = seen.metadata["traceparent"].as_str().unwrap().to_owned();
    let trace = backend.split('-').nth(1).unwrap().to_owned();
    assert!(received.arrived(&trace, 2).await);
    let spans = received.of_trace(&trace);
    let (server, _) = check_call(&spans, "rest", "", &backend);
    assert!(server.parent_span_id.is_empty(), "a root span: {server:#?}");
    assert_eq!(
        attr(&server, "http.route").as_deref(),
        Some("/v1/probe/headers")
    );
    assert_eq!(attr(&server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr(&server, "http.response.status_code").as_deref(),
        Some("200")
    );
}

#[tokio::test]
async fn a_websocket_call_that_names_its_own_parent_is_its_child_not_the_sessions() {
    let (collector, received) = grpc_collector().await;
    let h = gateway(
        &format!("endpoint = \"http://{collector}\"\nprotocol = \"grpc\""),
        "",
    )
    .await;
    let session_trace = trace_id(40);
    let call_trace = trace_id(41);
    let mut ws = traced_session(&h, &session_trace).await;
    let own = "2222222222222222";
    let open = json!({
        "id": "a",
        "open": "/portico.demo.v1.Probe/Headers",
        "metadata": {"traceparent": format!("00-{call_trace}-{own}-01")},
        "message": {}
    });
    ws.send(Message::text(open.to_string())).await.unwrap();
    let mut backend = String::new();
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("the session ended early")
        };
        let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        if let Some(r) = f.get("result") {
            backend = r["metadata"]["traceparent"].as_str().unwrap().to_owned();
        }
        if f.get("status").is_some() {
            break;
        }
    }
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    assert!(
        support::eventually_async(|| {
            let received = received.clone();
            let (a, b) = (session_trace.clone(), call_trace.clone());
            async move { !received.of_trace(&a).is_empty() && received.of_trace(&b).len() >= 2 }
        })
        .await,
        "{:#?}",
        received.spans()
    );
    check_call(&received.of_trace(&call_trace), "websocket", own, &backend);
    let session = received.of_trace(&session_trace);
    assert_eq!(
        session.len(),
        1,
        "only the session is in its trace: {session:#?}"
    );
    assert_eq!(
        attr(&session[0], "portico.websocket.close_code").as_deref(),
        Some("1000")
    );
}

#[tokio::test]
async fn a_retried_call_shows_two_sibling_attempts_and_the_reason() {
    let (collector, received) = grpc_collector().await;
    let h = Harness::start_with_config(|backend| {
        support::config_text(
            backend,
            &format!("[tracing]\nendpoint = \"http://{collector}\"\nprotocol = \"grpc\"\n"),
            "",
        )
        .replace(
            &format!("endpoints = [\"{backend}\"]"),
            &format!("endpoints = [\"127.0.0.1:1\", \"{backend}\"]"),
        )
    })
    .await;
    // Until one call went to the dead endpoint first.
    for n in 0..12u8 {
        let trace = trace_id(100 + n);
        let seen = call(
            &h,
            Protocol::Rest,
            &[("traceparent", &format!("00-{trace}-{CLIENT_PARENT}-01"))],
            "",
            None,
        )
        .await;
        assert_eq!(seen.code, 0);
        let backend = seen.metadata["traceparent"].as_str().unwrap().to_owned();
        assert!(received.arrived(&trace, 2).await);
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let spans = received.of_trace(&trace);
        let (_, attempts) = check_call(&spans, "rest", CLIENT_PARENT, &backend);
        if attempts.len() == 2 {
            let mut attempts = attempts;
            attempts.sort_by_key(|a| a.start_time_unix_nano);
            assert_eq!(attr(&attempts[0], "server.port").as_deref(), Some("1"));
            assert_eq!(attr(&attempts[0], "portico.attempt").as_deref(), Some("1"));
            assert_ne!(
                attr(&attempts[0], "rpc.grpc.status_code").as_deref(),
                Some("0")
            );
            assert_eq!(attr(&attempts[1], "portico.attempt").as_deref(), Some("2"));
            assert_eq!(
                attr(&attempts[1], "rpc.grpc.status_code").as_deref(),
                Some("0")
            );
            assert!(
                attr(&attempts[1], "portico.retry_reason").is_some(),
                "{attempts:#?}"
            );
            return;
        }
    }
    panic!("no call was retried: {:#?}", received.spans());
}

#[tokio::test]
async fn otlp_over_http_and_a_cache_hit_and_rate_limit_are_span_events() {
    let (collector, received) = http_collector().await;
    let h = gateway(
        &format!("endpoint = \"http://{collector}/v1/traces\"\nprotocol = \"http/protobuf\""),
        "cache = { ttl = \"1m\" }\nrate_limit = { requests_per_second = 0.001, burst = 2 }",
    )
    .await;
    let mut traces = Vec::new();
    for n in 0..3u8 {
        let trace = trace_id(60 + n);
        call(
            &h,
            Protocol::Connect,
            &[("traceparent", &format!("00-{trace}-{CLIENT_PARENT}-01"))],
            "",
            None,
        )
        .await;
        traces.push(trace);
    }
    assert!(
        support::eventually_async(|| {
            let received = received.clone();
            let traces = traces.clone();
            async move { traces.iter().all(|t| !received.of_trace(t).is_empty()) }
        })
        .await,
        "{:#?}",
        received.spans()
    );
    let events = |t: &str| -> Vec<String> {
        received
            .of_trace(t)
            .iter()
            .filter(|s| s.kind == SpanKind::Server as i32)
            .flat_map(|s| s.events.iter().map(|e| e.name.clone()))
            .collect()
    };
    assert!(
        events(&traces[0]).is_empty(),
        "a miss: {:?}",
        events(&traces[0])
    );
    assert_eq!(events(&traces[1]), ["cache hit"]);
    assert_eq!(events(&traces[2]), ["rate limited"]);
    let limited = received.of_trace(&traces[2]);
    assert_eq!(
        attr(&limited[0], "rpc.grpc.status_code").as_deref(),
        Some("8")
    );
    assert!(
        limited.iter().all(|s| s.kind != SpanKind::Client as i32),
        "never reached the backend"
    );
}

#[tokio::test]
async fn a_dead_collector_costs_no_request_and_the_loss_is_counted() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = gateway(
        &format!("endpoint = \"http://{dead}\"\nprotocol = \"grpc\"\nqueue_size = 4\nbatch_size = 2\nexport_timeout = \"1s\""),
        "",
    )
    .await;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        for protocol in EVERY_PROTOCOL {
            assert_eq!(call(&h, protocol, &[], "", None).await.code, 0);
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let admin = support::HttpClient::new(h.gateway.admin_addr.unwrap());
    let metrics = admin.get("/metrics").await.text();
    let count = |result: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("portico_trace_spans_total{{result=\"{result}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {result} count in {metrics}"))
    };
    assert!(count("dropped") + count("failed") > 0, "{metrics}");
}

#[tokio::test]
async fn the_standard_environment_alone_turns_export_on_in_the_binary() {
    let (collector, received) = grpc_collector().await;
    let (backend, _) = portico::demo::backends::Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let endpoint = format!("http://{collector}");
    let served = support::served::Served::start_with_env(
        &support::config_text(backend, "", ""),
        "warn",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "from-env"),
        ],
    )
    .await;
    let trace = trace_id(200);
    let client = support::HttpClient::new(served.addr);
    let r = client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[("traceparent", &format!("00-{trace}-{CLIENT_PARENT}-01"))],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        received.arrived(&trace, 2).await,
        "no spans from the binary"
    );
    assert!(received
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|(service, _)| service == "from-env"));
}

/// Server and attempt spans of `trace`, once `n` arrived.
async fn spans_of(received: &Received, trace: &str, n: usize) -> Vec<Span> {
    assert!(
        received.arrived(trace, n).await,
        "{n} spans of {trace} never arrived: {:#?}",
        received.spans()
    );
    received.of_trace(trace)
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

#[tokio::test]
async fn span_names_and_attempt_numbers_say_what_happened_never_what_a_client_made_up() {
    let (collector, received) = grpc_collector().await;
    let h = Harness::start_with(
        &format!(
            "[tracing]\nendpoint = \"http://{collector}\"\nprotocol = \"grpc\"\n\n\
             [[aggregates]]\npath = \"/v1/shelves/{{shelf}}/overview\"\n\
             [[aggregates.calls]]\nname = \"shelf\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = {{ shelf = \"{{path.shelf}}\" }}\n\
             [[aggregates.calls]]\nname = \"books\"\nmethod = \"portico.demo.v1.Library/ListBooks\"\nrequest = {{ parent = \"{{shelf.name}}\" }}\n"
        ),
        "",
    )
    .await;
    let parent = |n: u8| format!("00-{}-{CLIENT_PARENT}-01", trace_id(n));

    // An aggregate's two backend calls are each their call's first attempt.
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/shelves/1/overview",
            &[("traceparent", &parent(60))],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let spans = spans_of(&received, &trace_id(60), 3).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(server.name, "portico.demo.v1.Library/GetShelf");
    let attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    let mut names: Vec<&str> = attempts.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "portico.demo.v1.Library/GetShelf",
            "portico.demo.v1.Library/ListBooks"
        ]
    );
    for a in &attempts {
        assert_eq!(attr(a, "portico.attempt").as_deref(), Some("1"), "{a:#?}");
        assert_eq!(a.parent_span_id, server.span_id);
    }

    // A malformed body on a routed method: named after the method.
    let r = h
        .client
        .send(
            http::Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &[
                ("traceparent", &parent(61)),
                ("content-type", "application/json"),
            ],
            "{bad",
        )
        .await;
    assert_eq!(r.status, 400);
    let spans = spans_of(&received, &trace_id(61), 1).await;
    assert_eq!(spans[0].name, "portico.demo.v1.Probe/Headers");

    // An MCP tool call carries MCP's attributes, no HTTP route.
    let seen = call(&h, Protocol::Mcp, &[("traceparent", &parent(62))], "", None).await;
    assert_eq!(seen.code, 0, "{seen:?}");
    let spans = spans_of(&received, &trace_id(62), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(server.name, "portico.demo.v1.Probe/Headers");
    assert_eq!(
        attr(server, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert!(attr(server, "gen_ai.tool.name").is_some(), "{server:#?}");
    assert_eq!(attr(server, "http.route"), None, "{server:#?}");

    // WebSocket sessions: named after the method of their one call, or
    // `websocket`; never after a path the client chose.
    for (path, protocol, n, want) in [
        (
            "/portico.demo.v1.Probe/Headers",
            None,
            63,
            "websocket portico.demo.v1.Probe/Headers",
        ),
        (
            "/made-up-by-the-client-123",
            Some("portico.json.v1"),
            64,
            "websocket",
        ),
        ("/no/route/here-456", None, 65, "websocket"),
    ] {
        let mut req = format!("ws://{}{path}", h.gateway.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("traceparent", parent(n).parse().unwrap());
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((mut ws, _)) => {
                if protocol.is_none() {
                    ws.send(Message::text("{}")).await.unwrap();
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_close() {
                            break;
                        }
                    }
                } else {
                    ws.close(None).await.unwrap();
                }
            }
            Err(e) => assert!(e.to_string().contains("404"), "{path}: {e}"),
        }
        let spans = spans_of(&received, &trace_id(n), 1).await;
        let session = spans
            .iter()
            .find(|s| s.name.starts_with("websocket"))
            .unwrap_or_else(|| panic!("{path}: no session span in {spans:#?}"));
        assert_eq!(session.name, want, "{path}");
        assert_eq!(
            attr(session, "url.path").as_deref(),
            Some(path),
            "{path}: the path is an attribute"
        );
    }

    // A client that leaves while the backend works: the attempt ends then,
    // cancelled.
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        h.client.send(
            http::Method::GET,
            "/v1/probe/sleep/1500",
            &[("traceparent", &parent(66))],
            "",
        ),
    )
    .await;
    assert!(abandoned.is_err(), "the sleep should outlast the client");
    let spans = spans_of(&received, &trace_id(66), 2).await;
    let attempt = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(attr(attempt, "rpc.grpc.status_code").as_deref(), Some("1"));
    assert_eq!(
        attempt.status.as_ref().map(|s| s.code),
        Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
    );
    let ran = attempt.end_time_unix_nano - attempt.start_time_unix_nano;
    assert!(
        (200_000_000..1_200_000_000).contains(&ran),
        "the attempt lasted until the client left, not until the backend replied: {ran} ns"
    );
}

#[tokio::test]
async fn an_unusable_traceparent_in_open_metadata_leaves_the_call_the_sessions_child() {
    let (collector, received) = grpc_collector().await;
    let h = gateway(
        &format!("endpoint = \"http://{collector}\"\nprotocol = \"grpc\""),
        "",
    )
    .await;
    let session_trace = trace_id(70);
    let mut ws = traced_session(&h, &session_trace).await;
    let other = format!("00-{}-2222222222222222-01", trace_id(71));
    let another = format!("00-{}-3333333333333333-01", trace_id(72));
    let metadatas = [
        json!({"traceparent": "garbage"}),
        // One name twice: two fields, as two header lines would be.
        json!({"traceparent": other, "TraceParent": another}),
    ];
    for (i, metadata) in metadatas.iter().enumerate() {
        let open = json!({
            "id": format!("c{i}"),
            "open": "/portico.demo.v1.Probe/Headers",
            "metadata": metadata,
            "message": {}
        });
        ws.send(Message::text(open.to_string())).await.unwrap();
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("the session ended early")
            };
            let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if let Some(r) = f.get("result") {
                let backend = r["metadata"]["traceparent"].as_str().unwrap();
                assert_eq!(
                    backend.split('-').nth(1),
                    Some(session_trace.as_str()),
                    "{metadata}: the backend is in the session's trace"
                );
            }
            if f.get("status").is_some() {
                break;
            }
        }
    }
    ws.close(None).await.unwrap();
    // The session, two calls and their attempts, all in the session's trace.
    let spans = spans_of(&received, &session_trace, 5).await;
    let session = named(&spans, "websocket");
    let calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "portico.demo.v1.Probe/Headers" && s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(calls.len(), 2, "{spans:#?}");
    for c in calls {
        assert_eq!(c.parent_span_id, session.span_id, "{c:#?}");
    }
    assert!(received.of_trace(&trace_id(71)).is_empty());
    assert!(received.of_trace(&trace_id(72)).is_empty());
}

/// A graceful shutdown sends the spans of the calls it drained, a
/// WebSocket session's included, before it returns: they are not left in
/// a batch that waits for more.
#[tokio::test]
async fn a_graceful_shutdown_sends_the_spans_it_drained() {
    let (collector, received) = grpc_collector().await;
    let h = gateway(
        &format!("endpoint = \"http://{collector}\"\nprotocol = \"grpc\""),
        "",
    )
    .await;
    let (rest, ws) = (trace_id(200), trace_id(201));
    let traceparent = format!("00-{rest}-{CLIENT_PARENT}-01");
    let seen = call(
        &h,
        Protocol::Rest,
        &[("traceparent", &traceparent)],
        "",
        None,
    )
    .await;
    assert_eq!(seen.code, 0);
    // A session still open when the gateway stops: its going-away close
    // ends its span.
    let mut session = traced_session(&h, &ws).await;
    session
        .send(Message::text(
            json!({"id": "a", "open": "/portico.demo.v1.Probe/Headers", "message": {}}).to_string(),
        ))
        .await
        .unwrap();
    let answered = session.next().await.unwrap().unwrap();
    assert!(answered.to_text().unwrap().contains("\"a\""), "{answered}");
    let reader = tokio::spawn(async move { while session.next().await.is_some() {} });
    let Harness { gateway, .. } = h;
    gateway.shutdown().await;
    let _ = reader.await;
    assert!(
        received.of_trace(&rest).len() >= 2,
        "the REST call's spans were sent before shutdown returned: {:#?}",
        received.spans()
    );
    assert!(
        !received.of_trace(&ws).is_empty(),
        "the session's spans were sent before shutdown returned: {:#?}",
        received.spans()
    );
}
