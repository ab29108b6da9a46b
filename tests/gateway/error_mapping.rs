//! The same failure through every protocol: one error table, so REST,
//! gRPC, gRPC-Web, Connect and WebSocket clients all see the same code.

use crate::support;

use http::Method;
use portico::demo::backends::pb;
use prost::Message as _;
use support::{frame, Harness};
use tokio_tungstenite::tungstenite::Message;

/// What each protocol reported for one failure.
#[derive(Debug, PartialEq)]
struct Seen {
    rest: (u16, i64),
    grpc: i32,
    grpc_web: String,
    connect: (u16, String),
    websocket: i64,
}

impl Seen {
    /// One gRPC code on every protocol: REST and Connect with the HTTP
    /// status the error table gives it, Connect by its name.
    fn everywhere(code: i32) -> Seen {
        let (status, name) = match code {
            1 => (499, "canceled"),
            4 => (504, "deadline_exceeded"),
            5 => (404, "not_found"),
            7 => (403, "permission_denied"),
            8 => (429, "resource_exhausted"),
            13 => (502, "internal"),
            14 => (503, "unavailable"),
            other => panic!("code {other} has no row here"),
        };
        Seen {
            rest: (status, i64::from(code)),
            grpc: code,
            grpc_web: code.to_string(),
            connect: (status, name.into()),
            websocket: i64::from(code),
        }
    }
}

/// The error message each protocol carried (REST, gRPC, Connect,
/// WebSocket; gRPC-Web's is gRPC's, percent-encoded).
#[derive(Debug)]
struct Said([String; 4]);

/// Calls `method` through every protocol with `request` (`json` in the
/// JSON protocols). REST calls `rest_path` with GET, or, when it is
/// `None`, posts `json` to the method's own path.
async fn through_every_protocol(
    h: &Harness,
    grpc_path: &str,
    rest_path: Option<&str>,
    request: &impl prost::Message,
    json: &str,
) -> (Seen, Said) {
    let rest = match rest_path {
        Some(path) => h.client.get(path).await,
        None => {
            h.client
                .send(
                    Method::POST,
                    grpc_path,
                    &[("content-type", "application/json")],
                    json.to_owned(),
                )
                .await
        }
    };
    let message = |v: &serde_json::Value| v["message"].as_str().unwrap_or_default().to_owned();
    let rest_said = message(&rest.json());
    let rest = (rest.status.as_u16(), rest.json()["code"].as_i64().unwrap());

    let channel = h.grpc_channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            tonic::Request::new(bytes::Bytes::from(request.encode_to_vec())),
            grpc_path.parse::<http::uri::PathAndQuery>().unwrap(),
            portico::egress::codec::RawCodec,
        )
        .await
        .unwrap_err();

    let web = h
        .client
        .send(
            Method::POST,
            grpc_path,
            &[("content-type", "application/grpc-web+proto")],
            frame(request),
        )
        .await;
    let grpc_web = web.header("grpc-status").unwrap_or("?").to_owned();

    let connect = h
        .client
        .send(
            Method::POST,
            grpc_path,
            &[
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            json.to_owned(),
        )
        .await;
    let connect_said = message(&connect.json());
    let connect = (
        connect.status.as_u16(),
        connect.json()["code"].as_str().unwrap().to_owned(),
    );

    let mut ws = support::json_v1_session(h).await;
    let open = serde_json::json!({"id": "x", "open": grpc_path, "message": serde_json::from_str::<serde_json::Value>(json).unwrap()});
    futures_util::SinkExt::send(&mut ws, Message::text(open.to_string()))
        .await
        .unwrap();
    let ws_status = support::ws_status(&mut ws).await;
    let seen = Seen {
        rest,
        grpc: status.code() as i32,
        grpc_web,
        connect,
        websocket: ws_status["code"].as_i64().unwrap(),
    };
    let said = Said([
        rest_said,
        status.message().to_owned(),
        connect_said,
        message(&ws_status),
    ]);
    (seen, said)
}

#[tokio::test]
async fn a_backend_not_found_is_not_found_everywhere() {
    let h = Harness::start().await;
    let (seen, _) = through_every_protocol(
        &h,
        "/portico.demo.v1.Library/GetShelf",
        Some("/v1/shelves/9"),
        &pb::GetShelfRequest { shelf: "9".into() },
        r#"{"shelf":"9"}"#,
    )
    .await;
    assert_eq!(seen, Seen::everywhere(5));
}

#[tokio::test]
async fn a_deadline_is_deadline_exceeded_everywhere() {
    let h = Harness::start_with("", "timeout = \"150ms\"").await;
    let (seen, _) = through_every_protocol(
        &h,
        "/portico.demo.v1.Probe/Sleep",
        Some("/v1/probe/sleep/3000"),
        &pb::SleepRequest { millis: 3000 },
        r#"{"millis":3000}"#,
    )
    .await;
    assert_eq!(seen, Seen::everywhere(4));
}

#[tokio::test]
async fn a_permission_error_is_permission_denied_everywhere() {
    let h = Harness::start().await;
    let (seen, _) = through_every_protocol(
        &h,
        "/portico.demo.v1.Probe/Fail",
        Some("/v1/probe/fail/7"),
        &pb::FailRequest {
            code: 7,
            message: String::new(),
        },
        r#"{"code":7}"#,
    )
    .await;
    assert_eq!(seen, Seen::everywhere(7));
}

#[tokio::test]
async fn a_backend_error_with_a_long_message_keeps_its_code() {
    let h = Harness::start().await;
    // 20 KB of message in grpc-message: past HTTP/2's default 16 KiB
    // header list, well inside what the gateway accepts from a backend.
    let message = "x".repeat(20_000);
    let r = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Probe/Fail",
            &[
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            serde_json::json!({"code": 5, "message": message}).to_string(),
        )
        .await;
    assert_eq!(r.status, http::StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.json()["code"], "not_found");
    assert_eq!(r.json()["message"], message.as_str());
    assert_eq!(r.json()["details"][0]["type"], "google.rpc.ErrorInfo");

    // gRPC and gRPC-Web clients get the message cut, in grpc-message and
    // in the Status of grpc-status-details-bin to the same text (status
    // libraries such as grpcio-status refuse two that differ), whose
    // ErrorInfo survives: the whole block stays under the 8 KiB gRPC
    // clients take by default, counted as sent, percent-encoded, whatever
    // the message's characters.
    for message in [message, "é".repeat(10_000), "%".repeat(20_000)] {
        let kind = message.chars().next().unwrap();
        let request = pb::FailRequest {
            code: 5,
            message: message.clone(),
        };
        let web = h
            .client
            .send(
                Method::POST,
                "/portico.demo.v1.Probe/Fail",
                &[("content-type", "application/grpc-web+proto")],
                frame(&request),
            )
            .await;
        assert_eq!(web.header("grpc-status"), Some("5"), "{kind}");
        let said = web.header("grpc-message").unwrap();
        assert!(said.ends_with("more bytes)"), "{kind}: {said}");
        assert!(said.len() <= 1024, "{kind}: {} bytes sent", said.len());
        let details = web.header("grpc-status-details-bin").unwrap();
        assert!(
            said.len() + details.len() < 8 * 1024,
            "{kind}: {} + {}",
            said.len(),
            details.len()
        );
        let status = fail_over_grpc(&h, &request).await;
        assert_eq!(status.code(), tonic::Code::NotFound, "{kind}");
        assert!(status.message().starts_with(kind), "{kind}");
        let decoded = portico::demo::backends::rpc::Status::decode(status.details()).unwrap();
        assert_eq!(
            decoded.details[0].type_url, "type.googleapis.com/google.rpc.ErrorInfo",
            "{kind}: the ErrorInfo detail is kept"
        );
        assert_eq!(
            decoded.message,
            status.message(),
            "{kind}: the two copies of the message agree"
        );
    }
}

/// The demo's `Probe/Fail` called over gRPC: the status it ends with.
async fn fail_over_grpc(h: &Harness, request: &pb::FailRequest) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(h.grpc_channel().await);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(bytes::Bytes::from(request.encode_to_vec())),
        "/portico.demo.v1.Probe/Fail"
            .parse::<http::uri::PathAndQuery>()
            .unwrap(),
        portico::egress::codec::RawCodec,
    )
    .await
    .unwrap_err()
}

/// A backend status outside 0-16 is UNKNOWN, in `grpc-status` and in the
/// Status `grpc-status-details-bin` repeats beside it, on gRPC and gRPC-Web:
/// a client's status library reads or checks the details' code too.
#[tokio::test]
async fn a_code_outside_grpcs_is_unknown_in_the_details_too() {
    let h = Harness::start().await;
    for code in [20, -1] {
        let request = pb::FailRequest {
            code,
            message: String::new(),
        };
        let web = h
            .client
            .send(
                Method::POST,
                "/portico.demo.v1.Probe/Fail",
                &[("content-type", "application/grpc-web+proto")],
                frame(&request),
            )
            .await;
        assert_eq!(web.header("grpc-status"), Some("2"), "{code}");
        let details = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            web.header("grpc-status-details-bin").unwrap(),
        )
        .unwrap();
        let decoded = portico::demo::backends::rpc::Status::decode(&details[..]).unwrap();
        assert_eq!(decoded.code, 2, "{code}: gRPC-Web");
        assert_eq!(decoded.details.len(), 1, "{code}: the ErrorInfo is kept");

        let status = fail_over_grpc(&h, &request).await;
        assert_eq!(status.code(), tonic::Code::Unknown, "{code}");
        let decoded = portico::demo::backends::rpc::Status::decode(status.details()).unwrap();
        assert_eq!(decoded.code, 2, "{code}: gRPC");
        assert_eq!(decoded.message, status.message(), "{code}");
    }
}

/// Without details beside it, a backend's message in `grpc-message` is
/// bounded at 4 KiB as sent (percent-encoded), whatever its characters.
#[test]
fn a_grpc_message_is_bounded_as_it_is_sent() {
    use portico::ingress::grpc::{grpc_message_text, MAX_GRPC_MESSAGE_BYTES};
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');
    for message in ["x".repeat(20_000), "é".repeat(10_000), "%".repeat(20_000)] {
        let text = grpc_message_text(&message, MAX_GRPC_MESSAGE_BYTES);
        let sent = percent_encoding::utf8_percent_encode(&text, ESCAPED).to_string();
        assert!(sent.len() <= MAX_GRPC_MESSAGE_BYTES, "{}", sent.len());
        assert!(sent.len() > MAX_GRPC_MESSAGE_BYTES - 64, "{}", sent.len());
        assert!(text.ends_with("more bytes)"), "{text}");
    }
    assert_eq!(
        grpc_message_text("short é %", MAX_GRPC_MESSAGE_BYTES),
        "short é %"
    );
}

/// A backend whose error trailers are over the 256 KiB the gateway accepts
/// fails the call as INTERNAL, the backend's fault, on every protocol, with
/// a message naming the limit: whether HTTP/2 refused the header block for
/// its size or closed the connection for its many CONTINUATION frames.
/// (tonic reports the second as RESOURCE_EXHAUSTED, a 429 clients retry.)
#[tokio::test]
async fn backend_trailers_over_the_limit_are_internal_everywhere() {
    let h = Harness::start().await;
    // The message and its copy in grpc-status-details-bin (base64): 140 KB
    // makes a block over the limit in few frames, 1 MB one in many.
    for size in [140_000, 1_000_000] {
        let message = "x".repeat(size);
        let request = pb::FailRequest {
            code: 5,
            message: message.clone(),
        };
        let json = serde_json::json!({"code": 5, "message": message}).to_string();
        let (seen, said) =
            through_every_protocol(&h, "/portico.demo.v1.Probe/Fail", None, &request, &json).await;
        assert_eq!(seen, Seen::everywhere(13), "{size}");
        // Past about 20 frames of it, HTTP/2 counts CONTINUATION frames
        // and closes the connection; below, it refuses the block alone.
        let closes = size > 500_000;
        for said in &said.0 {
            assert!(said.contains("over the 256 KiB"), "{size}: {said}");
            assert_eq!(said.contains("CONTINUATION"), closes, "{size}: {said}");
            assert_eq!(said.contains("PROTOCOL_ERROR"), !closes, "{size}: {said}");
        }
    }
    // The connection HTTP/2 closed is dialled again.
    let ok = h.client.get("/v1/shelves/1").await;
    assert_eq!(ok.status, 200);
}

/// A backend no one answers at is UNAVAILABLE on every protocol, and the
/// message names the upstream (not its address) so an operator knows
/// which to look at.
#[tokio::test]
async fn an_unreachable_backend_is_unavailable_everywhere_naming_the_upstream() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with_config(|_| support::config_text(closed, "", "")).await;
    let (seen, said) = through_every_protocol(
        &h,
        "/portico.demo.v1.Library/GetShelf",
        Some("/v1/shelves/1"),
        &pb::GetShelfRequest { shelf: "1".into() },
        r#"{"shelf":"1"}"#,
    )
    .await;
    assert_eq!(seen, Seen::everywhere(14));
    for message in said.0 {
        assert!(
            message.contains("backend unavailable (upstream demo)"),
            "{message}"
        );
        assert!(!message.contains(&closed.to_string()), "{message}");
    }
}

/// `Probe.Fail` called through every protocol by a gateway in front of
/// `backend` (a scripted one, whose reply is the same whatever the call).
async fn fail_through_every_protocol(backend: std::net::SocketAddr) -> (Seen, Said) {
    let h = Harness::start_with_config(|_| support::config_text(backend, "", "")).await;
    let request = pb::FailRequest::default();
    through_every_protocol(&h, "/portico.demo.v1.Probe/Fail", None, &request, "{}").await
}

/// A backend's status fields that tonic would misread: details that are
/// not base64 (tonic panics on them) and a message cut inside a UTF-8
/// character (tonic throws the code away for UNKNOWN). Every protocol gets
/// the backend's code and message, in trailers and in a trailers-only
/// reply alike; the details that cannot be read are dropped.
#[tokio::test]
async fn a_backends_malformed_status_fields_keep_its_code_and_message_everywhere() {
    for trailers_only in [false, true] {
        let (backend, _) = support::scripted::serve(support::scripted::Script {
            status: 5,
            status_message: "caf%C3%A9 %E2%82",
            trailers: vec![("grpc-status-details-bin", "!!notbase64")],
            trailers_only,
            ..Default::default()
        })
        .await;
        let (seen, said) = fail_through_every_protocol(backend).await;
        assert_eq!(seen, Seen::everywhere(5), "trailers only: {trailers_only}");
        for message in &said.0 {
            assert_eq!(message, "café \u{fffd}", "trailers only: {trailers_only}");
        }
    }
}

/// A backend that breaks a reply off, resetting the call's stream or
/// ending it inside a message, is said to have done so on every protocol,
/// by gRPC's reading of each HTTP/2 reason: never an "http2 error", nor
/// the connection lost when only the stream was reset.
#[tokio::test]
async fn a_reply_the_backend_broke_off_says_how_everywhere() {
    use support::scripted::Ending;
    let cases = [
        (
            Ending::Reset(h2::Reason::INTERNAL_ERROR),
            13,
            "the backend reset the call's stream (INTERNAL_ERROR",
        ),
        (
            Ending::Reset(h2::Reason::ENHANCE_YOUR_CALM),
            8,
            "the backend reset the call's stream (ENHANCE_YOUR_CALM",
        ),
        (
            Ending::Reset(h2::Reason::CANCEL),
            1,
            "the backend reset the call's stream (CANCEL",
        ),
        (
            Ending::InsideAMessage,
            13,
            "its stream ended inside a message, with no grpc-status",
        ),
    ];
    for (ending, code, says) in cases {
        let (backend, _) = support::scripted::serve(support::scripted::Script {
            ending,
            ..Default::default()
        })
        .await;
        let (seen, said) = fail_through_every_protocol(backend).await;
        assert_eq!(seen, Seen::everywhere(code), "{ending:?}");
        for message in &said.0 {
            assert!(message.contains(says), "{ending:?}: {message}");
        }
    }
}

/// A backend lost in the middle of a stream is named by its upstream, as
/// one unreachable before the reply is (above): REST's NDJSON error line
/// and Connect's end-stream error say which hop failed.
#[tokio::test]
async fn a_backend_lost_mid_stream_is_unavailable_naming_the_upstream() {
    for connect in [false, true] {
        let mut backend = support::instances::Instance::start("127.0.0.1:0").await;
        let addr = backend.addr;
        let h = Harness::start_with_config(|_| support::config_text(addr, "", "")).await;
        let client = h.client.clone();
        let call = tokio::spawn(async move {
            if connect {
                client
                    .send(
                        Method::POST,
                        "/portico.demo.v1.Feed/Watch",
                        &[("content-type", "application/connect+json")],
                        support::frame_bytes(0, br#"{"count":50,"intervalMs":100}"#),
                    )
                    .await
            } else {
                client.get("/v1/feed?count=50&interval_ms=100").await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
        backend.kill().await;
        let r = call.await.unwrap();
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(
            text.contains("backend unavailable (upstream demo)"),
            "connect: {connect}: {text}"
        );
    }
}

/// A status HTTP names no reason for, such as the 499 a backend's
/// CANCELLED becomes, goes out over HTTP/1.1 with a reason phrase (nginx's
/// "Client Closed Request"), never a placeholder.
#[tokio::test]
async fn a_499_has_a_reason_phrase_over_http1() {
    let h = Harness::start().await;
    let answer = support::http1_exchange(
        h.gateway.addr,
        b"GET /v1/probe/fail/1 HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 499 Client Closed Request\r\n"),
        "{answer}"
    );
}
