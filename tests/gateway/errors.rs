//! Failures: backend statuses map to HTTP by the standard table with a
//! google.rpc.Status body; the gateway's own refusals never reach the
//! backend; and no input brings the gateway down.

use crate::support;

use bytes::Bytes;
use http::{Method, StatusCode};
use std::time::Duration;
use support::{eventually, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn backend_statuses_map_to_the_standard_http_statuses() {
    let h = Harness::start().await;
    for (code, http) in [
        (3, 400),
        (16, 401),
        (7, 403),
        (5, 404),
        (6, 409),
        (8, 429),
        (12, 501),
        (14, 503),
        (4, 504),
        (9, 400),
        (10, 409),
        (11, 400),
        (13, 500),
        (2, 500),
        (15, 500),
    ] {
        let r = h.client.get(&format!("/v1/probe/fail/{code}")).await;
        assert_eq!(r.status.as_u16(), http, "grpc code {code}");
        let body = r.json();
        assert_eq!(body["code"], code);
        assert!(body["message"].as_str().unwrap().contains("as asked"));
        assert_eq!(
            body["details"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(body["details"][0]["reason"], "PROBE_FAILURE");
        // The backend's error metadata comes as headers, as on success.
        let code = code.to_string();
        assert_eq!(r.header("x-probe-failure"), Some(code.as_str()));
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_404_and_a_wrong_verb_a_405_with_allow() {
    let h = Harness::start().await;
    let r = h.client.get("/v2/nothing").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["message"], "no route for /v2/nothing");
    let r = h.client.send(Method::PUT, "/v1/shelves/1", &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // HEAD is answered wherever a unary GET is, so it is allowed too.
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(r.json()["code"], 12);
    // A stream's HEAD is refused, so its path allows GET alone.
    let r = h.client.send(Method::PUT, "/v1/feed", &[], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_and_the_backend_is_not_called() {
    let h = Harness::start_with("[server.limits]\nmax_request_body_bytes = 1024\n", "").await;
    let big = format!(r#"{{"query":"{}"}}"#, "x".repeat(4096));
    let before = h.backends.probe.calls();
    let r = h.client.json(Method::POST, "/v1/books:search", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["code"], 8);
    assert_eq!(
        r.json()["message"],
        "the request body is larger than server.limits.max_request_body_bytes (1024 bytes)"
    );
    // Without a Content-Length (chunked), the limit is enforced while reading.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..8)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b' '; 512]))))
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::post(h.client.url("/v1/books:search"))
        .body(body)
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.backends.probe.calls(), before);
}

#[tokio::test]
async fn the_route_timeout_gives_504_and_cancels_the_backend_call() {
    let h = Harness::start_with("", "timeout = \"200ms\"").await;
    let r = h.client.get("/v1/probe/sleep/5000").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["code"], 4);
    let probe = h.backends.probe.clone();
    assert!(
        eventually(|| probe.cancelled_sleeps() == 1).await,
        "the backend saw the cancellation"
    );
}

#[tokio::test]
async fn a_client_grpc_timeout_shortens_the_deadline() {
    let h = Harness::start().await;
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/sleep/3000",
            &[("grpc-timeout", "100m")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/sleep/10",
            &[("grpc-timeout", "5S")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_backend_that_is_down_is_a_503() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n[upstreams.gone]\nendpoints = [\"{dead}\"]\nconnect_timeout = \"500ms\"\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"gone\"\n",
        support::proto_dir()
    );
    let gw = portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap();
    let client = support::HttpClient::new(gw.addr);
    let r = client.get("/v1/shelves/1").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["code"], 14);
}

#[tokio::test]
async fn garbage_requests_get_errors_and_the_gateway_stays_up() {
    let h = Harness::start().await;
    let weird = [
        "/",
        "//",
        "/v1",
        "/v1/",
        "/v1/shelves/",
        "/v1/shelves//books",
        "/%",
        "/%zz/%2",
        "/v1/shelves/%ff%fe",
        "/v1/books:",
        "/v1/books:search:search",
        "/:",
        "/v1/files/",
        "/portico.demo.v1.Library/",
        "/v1/shelves/1/books/1:archive:x",
    ];
    for path in weird {
        let r = h.client.get(path).await;
        assert!(
            r.status.is_client_error() || r.status.is_success(),
            "{path}: {}",
            r.status
        );
        assert!(
            r.json().get("code").is_some() || r.status.is_success(),
            "{path}"
        );
    }
    // A raw socket with a broken request line: hyper answers 400, we stay up.
    let mut sock = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .unwrap();
    sock.write_all(b"GARBAGE\x00\x01 / HTTP/9\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), sock.read_to_end(&mut buf)).await;
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

/// A backend's error metadata reaches the client as a success's does: REST
/// headers (above), and an MCP tool error's `io.portico/metadata`.
#[tokio::test]
async fn a_backend_errors_metadata_reaches_an_mcp_tool_error() {
    let h = Harness::start().await;
    let (_, result) = support::mcp_call(
        &h.client,
        &[],
        "Probe_Fail",
        serde_json::json!({ "code": 5 }),
    )
    .await;
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(
        result["_meta"]["io.portico/metadata"]["x-probe-failure"], "5",
        "{result}"
    );
}
