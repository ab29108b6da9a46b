//! The gateway's own services (gRPC health, server reflection) answer on
//! every RPC protocol the same way: a load balancer's gRPC health check, a
//! browser's gRPC-Web or Connect client and a WebSocket page all get the
//! same status, and none of those calls is counted as traffic.

use crate::support;

use futures_util::{SinkExt, StreamExt};
use http::Method;
use prost::Message as _;
use serde_json::{json, Value};
use support::protocols::{connect_code, split_web_body};
use support::{frame_bytes, json_v1_session, Harness, HttpClient, Ws};
use tokio_tungstenite::tungstenite::Message;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    HealthCheckResponse,
};
use tonic_reflection::pb::v1::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, ServerReflectionRequest, ServerReflectionResponse,
};

/// A reflection call (v1) over gRPC asking `questions` in order.
async fn reflect(
    h: &Harness,
    questions: Vec<MessageRequest>,
) -> tonic::Streaming<ServerReflectionResponse> {
    let requests = questions.into_iter().map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });
    ServerReflectionClient::new(h.grpc_channel().await)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
}

const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";
const LIBRARY: &str = "portico.demo.v1.Library";

#[derive(Debug, Clone, Copy)]
enum Client {
    Grpc,
    GrpcWeb,
    GrpcWebText,
    ConnectJson,
    ConnectProto,
    WebSocket,
}

const EVERY_CLIENT: [Client; 6] = [
    Client::Grpc,
    Client::GrpcWeb,
    Client::GrpcWebText,
    Client::ConnectJson,
    Client::ConnectProto,
    Client::WebSocket,
];

/// A health `Check` of `service` over `client`: the gRPC code, and the
/// status name when the call succeeded.
async fn check(h: &Harness, client: Client, service: &str) -> (i64, Option<String>) {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let name = |status: i32| {
        ServingStatus::try_from(status)
            .unwrap()
            .as_str_name()
            .to_owned()
    };
    match client {
        Client::Grpc => match HealthClient::new(h.grpc_channel().await)
            .check(request)
            .await
        {
            Ok(r) => (0, Some(name(r.get_ref().status))),
            Err(s) => (s.code() as i64, None),
        },
        Client::GrpcWeb | Client::GrpcWebText => {
            let text = matches!(client, Client::GrpcWebText);
            let framed = frame_bytes(0, &request.encode_to_vec());
            let (content_type, body) = if text {
                use base64::Engine as _;
                (
                    "application/grpc-web-text",
                    base64::engine::general_purpose::STANDARD
                        .encode(framed)
                        .into_bytes(),
                )
            } else {
                ("application/grpc-web+proto", framed)
            };
            let r = h
                .client
                .send(Method::POST, CHECK, &[("content-type", content_type)], body)
                .await;
            assert_eq!(r.status, 200, "{client:?}");
            let body = if text {
                // Each write is its own padded chunk: decoded a quad at a time.
                use base64::Engine as _;
                r.body
                    .chunks(4)
                    .flat_map(|quad| {
                        base64::engine::general_purpose::STANDARD
                            .decode(quad)
                            .expect("a text reply is base64")
                    })
                    .collect()
            } else {
                r.body.to_vec()
            };
            let (message, trailers) = split_web_body(&body);
            let code: i64 = r
                .header("grpc-status")
                .map(str::to_owned)
                .or_else(|| trailers.get("grpc-status").cloned())
                .expect("a grpc-status")
                .parse()
                .unwrap();
            let status =
                message.map(|m| name(HealthCheckResponse::decode(m.as_slice()).unwrap().status));
            (code, status)
        }
        Client::ConnectJson => {
            let r = h
                .client
                .send(
                    Method::POST,
                    CHECK,
                    &[
                        ("content-type", "application/json"),
                        ("connect-protocol-version", "1"),
                    ],
                    json!({ "service": service }).to_string(),
                )
                .await;
            let body = r.json();
            if r.status.is_success() {
                (0, body["status"].as_str().map(str::to_owned))
            } else {
                (connect_code(body["code"].as_str().unwrap()), None)
            }
        }
        Client::ConnectProto => {
            let r = h
                .client
                .send(
                    Method::POST,
                    CHECK,
                    &[
                        ("content-type", "application/proto"),
                        ("connect-protocol-version", "1"),
                    ],
                    request.encode_to_vec(),
                )
                .await;
            if r.status.is_success() {
                let reply = HealthCheckResponse::decode(r.body.as_ref()).unwrap();
                (0, Some(name(reply.status)))
            } else {
                (connect_code(r.json()["code"].as_str().unwrap()), None)
            }
        }
        Client::WebSocket => {
            let mut ws = json_v1_session(h).await;
            let open = json!({"id": "h", "open": CHECK, "message": {"service": service}});
            ws.send(Message::text(open.to_string())).await.unwrap();
            let mut status = None;
            loop {
                let f = next_json(&mut ws).await;
                if let Some(r) = f.get("result") {
                    status = r["status"].as_str().map(str::to_owned);
                }
                if let Some(s) = f.get("status") {
                    return (s["code"].as_i64().unwrap(), status);
                }
            }
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s");
        match next {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("the session ended: {other:?}"),
        }
    }
}

/// The gateway reports a routed service serving once its upstream's probe
/// has run: waited for over gRPC, so every protocol then sees the same.
async fn serving(h: &Harness) {
    let up = support::eventually_async(|| async {
        check(h, Client::Grpc, LIBRARY).await == (0, Some("SERVING".into()))
    })
    .await;
    assert!(up, "the Library service is reported serving");
}

/// Every route authenticates and rate-limits its callers, and browsers
/// of one other origin may call: the gateway's own services answer
/// without a credential, and to that origin too.
const GUARDED: &str = "[authenticators.users]\nalgorithm = \"HS256\"\n\
                       secret = \"a-gateway-services-secret-long-enough\"\n\n\
                       [cors]\nallowed_origins = [\"http://app.example\"]\n";
const GUARDED_ROUTE: &str = "auth = \"users\"\nrate_limit = { requests_per_second = 1, burst = 1 }";

#[tokio::test]
async fn a_health_check_answers_the_same_on_every_rpc_protocol() {
    let h = Harness::start_with(GUARDED, GUARDED_ROUTE).await;
    // The routes are guarded indeed.
    assert_eq!(h.client.get("/v1/shelves/1").await.status, 401);
    serving(&h).await;
    for client in EVERY_CLIENT {
        assert_eq!(
            check(&h, client, LIBRARY).await,
            (0, Some("SERVING".into())),
            "{client:?}: a routed service"
        );
        assert_eq!(
            check(&h, client, "").await,
            (0, Some("SERVING".into())),
            "{client:?}: the server as a whole"
        );
        assert_eq!(
            check(&h, client, "nope.v1.Nope").await,
            (5, None),
            "{client:?}: a service nobody routes is NOT_FOUND"
        );
    }
    // A browser on the allowed origin may call them (the top-level [cors]).
    let preflight = h
        .client
        .send(
            Method::OPTIONS,
            CHECK,
            &[
                ("origin", "http://app.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,connect-protocol-version",
                ),
            ],
            "",
        )
        .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    let (code, status) = check(&h, Client::ConnectJson, LIBRARY).await;
    assert_eq!((code, status.as_deref()), (0, Some("SERVING")));
}

/// `List`, which newer health clients have, is not served, and the
/// refusal says what is.
#[tokio::test]
async fn a_health_list_is_unimplemented_naming_what_is_served() {
    let h = Harness::start().await;
    let said = "the gateway's grpc.health.v1.Health serves Check and Watch, not List";
    let list = "/grpc.health.v1.Health/List";
    let connect = h
        .client
        .send(
            Method::POST,
            list,
            &[
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            "{}",
        )
        .await;
    assert_eq!(
        connect.json()["code"],
        "unimplemented",
        "{}",
        connect.text()
    );
    assert_eq!(connect.json()["message"], said);
    let web = h
        .client
        .send(
            Method::POST,
            list,
            &[("content-type", "application/grpc-web+proto")],
            frame_bytes(0, &[]),
        )
        .await;
    assert_eq!(web.header("grpc-status"), Some("12"));
    assert_eq!(
        web.header("grpc-message").map(|m| m.replace("%27", "'")),
        Some(said.to_owned())
    );
}

#[tokio::test]
async fn a_health_watch_streams_on_every_protocol_that_streams() {
    // Backend streams silent for a second are cut; a watch is not.
    let h = Harness::start_with("[server.limits]\nstream_idle_timeout = \"1s\"\n", "").await;
    serving(&h).await;
    let request = HealthCheckRequest {
        service: LIBRARY.into(),
    };

    // gRPC: the first message of the stream is the current status.
    let mut grpc = HealthClient::new(h.grpc_channel().await)
        .watch(request.clone())
        .await
        .unwrap()
        .into_inner();
    let first = grpc.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32, "gRPC");
    let quiet = tokio::time::timeout(std::time::Duration::from_millis(1500), grpc.next()).await;
    assert!(
        quiet.is_err(),
        "the watch stays open past stream_idle_timeout: {quiet:?}"
    );
    // A service nobody routes: SERVICE_UNKNOWN, and the call stays open
    // for the day it is routed.
    let mut unknown = HealthClient::new(h.grpc_channel().await)
        .watch(HealthCheckRequest {
            service: "nope.v1.Nope".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = unknown.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
    let open = tokio::time::timeout(std::time::Duration::from_millis(300), unknown.next()).await;
    assert!(open.is_err(), "the watch stays open: {open:?}");

    // gRPC-Web and Connect read the reply body as it streams: the first
    // message arrives while the call is still open.
    let web = HttpClient::new(h.gateway.addr)
        .open(
            Method::POST,
            WATCH,
            &[("content-type", "application/grpc-web+proto")],
            frame_bytes(0, &request.encode_to_vec()),
        )
        .await;
    let first = first_frame(web).await;
    let reply = HealthCheckResponse::decode(first.as_slice()).unwrap();
    assert_eq!(reply.status, ServingStatus::Serving as i32, "gRPC-Web");

    let connect = HttpClient::new(h.gateway.addr)
        .open(
            Method::POST,
            WATCH,
            &[("content-type", "application/connect+json")],
            frame_bytes(0, json!({"service": LIBRARY}).to_string().as_bytes()),
        )
        .await;
    let first: Value = serde_json::from_slice(&first_frame(connect).await).unwrap();
    assert_eq!(first, json!({"status": "SERVING"}), "Connect");

    let mut ws = json_v1_session(&h).await;
    let open = json!({"id": "w", "open": WATCH, "message": {"service": LIBRARY}});
    ws.send(Message::text(open.to_string())).await.unwrap();
    let result = loop {
        let f = next_json(&mut ws).await;
        assert!(f.get("status").is_none(), "the watch ended: {f}");
        if let Some(r) = f.get("result") {
            break r.clone();
        }
    };
    assert_eq!(result, json!({"status": "SERVING"}), "WebSocket");
}

/// The first length-prefixed frame of a streaming reply body.
async fn first_frame(resp: http::Response<hyper::body::Incoming>) -> Vec<u8> {
    use http_body_util::BodyExt as _;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                return buf[5..5 + len].to_vec();
            }
        }
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("a frame within 10 s")
            .expect("the body goes on")
            .expect("the body reads");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn server_reflection_answers_over_connect_and_websocket_too() {
    // Backend replies are bounded small; the gateway's own schema files are
    // larger, and are its own replies.
    let h = Harness::start_with("[server.limits]\nmax_grpc_message_bytes = 1024\n", "").await;
    {
        let mut replies = reflect(
            &h,
            vec![MessageRequest::FileContainingSymbol(LIBRARY.into())],
        )
        .await;
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            replies.next().await.unwrap().unwrap().message_response
        else {
            panic!("expected a file descriptor");
        };
        let size: usize = files.file_descriptor_proto.iter().map(Vec::len).sum();
        assert!(size > 1024, "a schema file over the bound: {size} bytes");
    }
    let listed = |services: &Value| -> Vec<String> {
        services["listServicesResponse"]["service"]
            .as_array()
            .unwrap_or_else(|| panic!("a service list: {services}"))
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };

    // Connect's bidirectional stream over HTTP/2, the whole request sent at once.
    let body = frame_bytes(0, json!({"listServices": ""}).to_string().as_bytes());
    let r = h
        .client
        .as_http2()
        .send(
            Method::POST,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            &[("content-type", "application/connect+json")],
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first =
        &r.body[5..5 + u32::from_be_bytes([r.body[1], r.body[2], r.body[3], r.body[4]]) as usize];
    let names = listed(&serde_json::from_slice(first).unwrap());
    assert!(names.contains(&LIBRARY.to_owned()), "Connect: {names:?}");
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "Connect: {names:?}"
    );

    // A WebSocket session, through the older v1alpha service.
    let mut ws = json_v1_session(&h).await;
    let open = json!({"id": "r", "open": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                      "message": {"listServices": ""}});
    ws.send(Message::text(open.to_string())).await.unwrap();
    let result = loop {
        let f = next_json(&mut ws).await;
        if let Some(r) = f.get("result") {
            break r.clone();
        }
        assert!(f.get("status").is_none(), "the call ended: {f}");
    };
    let names = listed(&result);
    assert!(names.contains(&LIBRARY.to_owned()), "WebSocket: {names:?}");
    ws.send(Message::text(json!({"id": "r", "end": true}).to_string()))
        .await
        .unwrap();
    let status = loop {
        let f = next_json(&mut ws).await;
        if let Some(s) = f.get("status") {
            break s.clone();
        }
    };
    assert_eq!(status["code"], 0, "{status}");
}

#[tokio::test]
async fn calls_of_the_gateway_services_are_not_counted_as_traffic() {
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-own-services-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let h = Harness::start_with(&format!("[access_log]\npath = \"{}\"\n", log.display()), "").await;
    serving(&h).await;
    for client in EVERY_CLIENT {
        assert_eq!(check(&h, client, LIBRARY).await.0, 0, "{client:?}");
        assert_eq!(check(&h, client, "nope.v1.Nope").await.0, 5, "{client:?}");
    }
    // One routed call last, so the figures below are known to be live.
    let r = h.client.get("/v1/shelves/1").await;
    assert_eq!(r.status, 200);
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert!(
        support::eventually_async(|| async { lines().iter().any(|l| l.contains("GetShelf")) })
            .await,
        "the routed call's line: {:?}",
        lines()
    );
    // A WebSocket session has its own line when it ends; its calls of the
    // gateway's services have none.
    let calls: Vec<String> = lines()
        .into_iter()
        .filter(|l| l.contains(r#""kind":"call""#))
        .collect();
    assert_eq!(calls.len(), 1, "only the routed call: {calls:?}");
    assert!(
        !lines().iter().any(|l| l.contains("grpc.health")),
        "{:?}",
        lines()
    );
    let admin = HttpClient::new(h.gateway.admin_addr.unwrap());
    let usage = admin.get("/usage").await.text();
    assert!(usage.contains("GetShelf"), "{usage}");
    assert!(!usage.contains("grpc.health.v1"), "{usage}");
    std::fs::remove_file(&log).ok();
}

/// Reflection as `grpcurl` and other clients use it: several questions on
/// one call, a miss answered in the stream without ending it, a file sent
/// with its imports, extensions listed.
#[tokio::test]
async fn reflection_answers_every_question_on_one_call_misses_included() {
    let h = Harness::start().await;
    let mut replies = reflect(
        &h,
        vec![
            MessageRequest::FileContainingSymbol("no.Such".into()),
            MessageRequest::FileContainingSymbol(format!("{LIBRARY}.GetShelf")),
            MessageRequest::FileByFilename("grpc/health/v1/health.proto".into()),
            MessageRequest::AllExtensionNumbersOfType("google.protobuf.MethodOptions".into()),
        ],
    )
    .await;
    let Some(MessageResponse::ErrorResponse(miss)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("a miss is an error_response");
    };
    assert_eq!(miss.error_code, 5, "{miss:?}");
    assert!(miss.error_message.contains("no.Such"), "{miss:?}");

    let Some(MessageResponse::FileDescriptorResponse(files)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("a method's file");
    };
    let names: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|b| {
            prost_types::FileDescriptorProto::decode(b.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert_eq!(names[0], "portico/demo/v1/library.proto", "{names:?}");
    assert!(
        names.contains(&"google/api/annotations.proto".to_owned()),
        "with its imports: {names:?}"
    );

    let Some(MessageResponse::FileDescriptorResponse(health)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("the health file by grpc's name for it");
    };
    assert_eq!(health.file_descriptor_proto.len(), 1);

    let Some(MessageResponse::AllExtensionNumbersResponse(numbers)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("extension numbers");
    };
    assert!(
        numbers.extension_number.contains(&72295728),
        "google.api.http: {numbers:?}"
    );
    assert!(
        replies.message().await.unwrap().is_none(),
        "the call ends when asked"
    );
}

/// A health check whose deadline has already passed gets no `SERVING`, on
/// any protocol: it is `DEADLINE_EXCEEDED`, as a call to a backend is.
#[tokio::test]
async fn a_deadline_already_passed_gets_no_answer_from_the_gateways_services() {
    let h = Harness::start().await;
    serving(&h).await;
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let http2 = h.client.as_http2();
    for client in EVERY_CLIENT {
        let (code, message) = match client {
            Client::Grpc | Client::GrpcWeb | Client::GrpcWebText => {
                let framed = frame_bytes(0, &request.encode_to_vec());
                let (via, content_type, body) = match client {
                    Client::Grpc => (&http2, "application/grpc", framed),
                    Client::GrpcWeb => (&h.client, "application/grpc-web+proto", framed),
                    _ => {
                        use base64::Engine as _;
                        (
                            &h.client,
                            "application/grpc-web-text",
                            base64::engine::general_purpose::STANDARD
                                .encode(framed)
                                .into_bytes(),
                        )
                    }
                };
                let r = via
                    .send(
                        Method::POST,
                        CHECK,
                        &[
                            ("content-type", content_type),
                            ("te", "trailers"),
                            ("grpc-timeout", "0S"),
                        ],
                        body,
                    )
                    .await;
                let status = |name: &str| {
                    r.header(name)
                        .or_else(|| r.trailers.get(name).and_then(|v| v.to_str().ok()))
                        .unwrap_or_default()
                        .to_owned()
                };
                let message = percent_encoding::percent_decode_str(&status("grpc-message"))
                    .decode_utf8_lossy()
                    .into_owned();
                (status("grpc-status").parse::<i64>().unwrap(), message)
            }
            Client::ConnectJson | Client::ConnectProto => {
                let (content_type, body) = match client {
                    Client::ConnectJson => ("application/json", b"{}".to_vec()),
                    _ => ("application/proto", request.encode_to_vec()),
                };
                let r = h
                    .client
                    .send(
                        Method::POST,
                        CHECK,
                        &[
                            ("content-type", content_type),
                            ("connect-protocol-version", "1"),
                            ("connect-timeout-ms", "0"),
                        ],
                        body,
                    )
                    .await;
                assert_eq!(r.status, 504, "{client:?}");
                let body = r.json();
                (
                    connect_code(body["code"].as_str().unwrap()),
                    body["message"].as_str().unwrap_or_default().to_owned(),
                )
            }
            Client::WebSocket => {
                let mut ws = json_v1_session(&h).await;
                let open = json!({"id": "h", "open": CHECK, "metadata": {"grpc-timeout": "0S"}, "message": {}});
                ws.send(Message::text(open.to_string())).await.unwrap();
                loop {
                    let f = next_json(&mut ws).await;
                    assert!(f.get("result").is_none(), "no answer: {f}");
                    if let Some(s) = f.get("status") {
                        break (
                            s["code"].as_i64().unwrap(),
                            s["message"].as_str().unwrap_or_default().to_owned(),
                        );
                    }
                }
            }
        };
        // (A streaming protocol may find it passed while the request was
        // still arriving: said so, as for a backend's method.)
        assert_eq!(code, 4, "{client:?}: {message}");
        assert!(
            message.contains("deadline passed before"),
            "{client:?}: {message}"
        );
    }
}
