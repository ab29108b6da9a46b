//! Headers in, metadata out: the forwarding rule decides which request
//! headers reach the backend (tests/edge_parity.rs runs it through every
//! protocol); backend metadata comes back as response headers.

use crate::support;

use http::{Method, StatusCode};
use support::Harness;

#[tokio::test]
async fn by_default_custom_headers_are_forwarded_and_browser_context_is_not() {
    let h = Harness::start().await;
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[
                ("authorization", "Bearer abc"),
                ("x-request-id", "req-1"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("cookie", "session=secret"),
                ("referer", "http://app.example/page"),
                ("x-internal", "yes"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let md = &r.json()["metadata"];
    assert_eq!(md["authorization"], "Bearer abc");
    assert_eq!(md["x-request-id"], "req-1");
    assert!(md["traceparent"].is_string());
    assert_eq!(md["x-internal"], "yes");
    assert!(md.get("cookie").is_none());
    assert!(md.get("referer").is_none());
    // The route timeout is always sent as a deadline.
    assert!(md["grpc-timeout"].is_string());
}

#[tokio::test]
async fn backend_response_metadata_becomes_response_headers() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(Method::PATCH, "/v1/shelves/1/books/1", r#"{"pages":1}"#)
        .await;
    assert_eq!(r.header("x-update-mask"), Some("pages"));
    // gRPC framing headers never leak into the HTTP reply.
    assert!(r.headers.keys().all(|k| !k.as_str().starts_with("grpc-")));
}

#[tokio::test]
async fn a_client_timeout_is_ignored_when_configured() {
    let h = Harness::start_with("[metadata]\nhonour_client_timeout = false\n", "").await;
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/sleep/150",
            &[("grpc-timeout", "10m")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}
