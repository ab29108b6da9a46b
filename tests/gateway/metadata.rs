//! Headers in, metadata out: the forwarding rule decides which request
//! headers reach the backend (tests/edge_parity.rs runs it through every
//! protocol); backend metadata comes back as response headers.

use crate::support;
use support::RouteKeys;

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
                // Another method than the one routed and authorized.
                ("x-http-method-override", "DELETE"),
                ("x-method-override", "DELETE"),
                ("x-http-method", "DELETE"),
                // An address no client may claim.
                ("x-real-ip", "6.6.6.6"),
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
    for never in [
        "x-http-method-override",
        "x-method-override",
        "x-http-method",
        "x-real-ip",
    ] {
        assert!(md.get(never).is_none(), "{never}: {md}");
    }
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

/// One raw HTTP/1.1 GET (the client's `Connection` as written); the reply's
/// head and its JSON body.
async fn raw_get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &str,
) -> (String, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n{headers}\r\n");
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.to_owned(),
        serde_json::from_str(body).unwrap_or_default(),
    )
}

/// Headers a client's `Connection` names are for its hop alone: they are
/// gone before any policy or the cache reads the request, and naming the
/// gateway's own headers takes none of them from the backend.
#[tokio::test]
async fn headers_named_by_connection_never_reach_the_backend_or_the_cache_key() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "")
            .with_route_keys("Probe", "cache = { ttl = \"30s\", vary = [\"x-tenant\"] }")
    })
    .await;
    let (head, body) = raw_get(
        h.gateway.addr,
        "/v1/probe/headers",
        "Connection: close, x-request-id, x-forwarded-for, x-forwarded-host, x-internal, x-tenant\r\n\
         x-request-id: mine-1\r\nx-forwarded-for: 6.6.6.6\r\nx-internal: yes\r\nx-tenant: acme\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let md = &body["metadata"];
    assert!(md.get("x-internal").is_none(), "{md}");
    assert!(md.get("x-tenant").is_none(), "{md}");
    // The gateway's own headers are still set: an id of its own (the
    // client's was for the hop), and who the client is as it saw it.
    let id = md["x-request-id"].as_str().unwrap_or_default();
    assert!(!id.is_empty() && id != "mine-1", "{md}");
    assert_eq!(md["x-forwarded-for"], "127.0.0.1", "{md}");
    assert_eq!(md["x-forwarded-host"], "gateway.test", "{md}");

    // That reply was made without a tenant: it is no hit for a request that
    // sends one, which the backend sees.
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("x-tenant", "acme")],
            "",
        )
        .await;
    assert_eq!(r.header("x-cache"), Some("MISS"), "{}", r.text());
    assert_eq!(r.json()["metadata"]["x-tenant"], "acme");
}

/// A `Host` that is no host name or address with an optional port is a
/// `400` naming it, before anything reads it; an absolute-form target's
/// host wins over the `Host` field (RFC 9112 section 3.2.2).
#[tokio::test]
async fn a_malformed_host_is_refused_and_an_absolute_targets_host_wins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await;
    for host in [
        "evil.example/path",
        "a@b.example",
        "evil.example, other",
        "[::1",
        "evil.example:99999",
        "",
    ] {
        let mut sock = tokio::net::TcpStream::connect(h.gateway.addr)
            .await
            .unwrap();
        let request = format!("GET /v1/probe/headers HTTP/1.1\r\nHost: {host}\r\n\r\n");
        sock.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        sock.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 400"), "{host}: {reply}");
        assert!(reply.contains("is not a valid Host"), "{host}: {reply}");
    }
    let mut sock = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .unwrap();
    sock.write_all(
        b"GET http://absolute.example/v1/probe/headers HTTP/1.1\r\nHost: hostheader.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    sock.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(
        json["metadata"]["x-forwarded-host"], "absolute.example",
        "{reply}"
    );
}
