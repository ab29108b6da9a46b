//! What operators correlate and probe: a request id that follows every
//! call from the client through the gateway to the backend and back, on
//! every protocol, and a readiness endpoint that tells a load balancer
//! whether calls could reach a backend.

use crate::support;

use support::instances::Instance;
use support::protocols::{call, gateway, Protocol, EVERY_PROTOCOL};
use support::HttpClient;

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn a_request_id_follows_every_call_to_the_backend_and_back() {
    // Even a forwarding rule that names nothing else forwards it.
    let h = gateway("[metadata]\nforward = [\"authorization\"]\n", "").await;
    for protocol in EVERY_PROTOCOL {
        // The client's own id is kept.
        let seen = call(&h, protocol, &[("x-request-id", "order-42")], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}");
        let expected = if protocol == Protocol::WebSocket {
            // A session's calls: the session's id and the call's number.
            "order-42.0"
        } else {
            "order-42"
        };
        assert_eq!(
            seen.metadata["x-request-id"], expected,
            "{protocol:?}: the backend got it"
        );
        assert_eq!(
            seen.request_id.as_deref(),
            Some(expected),
            "{protocol:?}: the client got it back"
        );

        // No id, or one that could confuse a log: the gateway makes one.
        for sent in [vec![], vec![("x-request-id", "two words")]] {
            let seen = call(&h, protocol, &sent, "", None).await;
            let backend = seen.metadata["x-request-id"].as_str().unwrap().to_owned();
            let returned = seen.request_id.clone().unwrap();
            assert_eq!(backend, returned, "{protocol:?}: one id for both sides");
            let base = backend.strip_suffix(".0").unwrap_or(&backend);
            assert!(is_generated(base), "{protocol:?}: {backend}");
        }
    }
    // A refusal carries one too.
    let r = h.client.get("/v1/nowhere").await;
    assert_eq!(r.status, 404);
    assert!(is_generated(r.header("x-request-id").unwrap()));
}

/// The test config with active health checks every 100 ms, one verdict
/// enough either way.
fn checked_every_100ms(backend: std::net::SocketAddr) -> String {
    support::config_text(backend, "", "").replacen(
        "[upstreams.demo]\n",
        "[upstreams.demo.health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n[upstreams.demo]\n",
        1,
    )
}

/// Whether `/readyz`'s reason comes to contain `words`.
async fn readyz_says(admin: &HttpClient, words: &str) -> bool {
    support::eventually_async(|| {
        let admin = admin.clone();
        async move {
            admin.get("/readyz").await.json()["reason"]
                .as_str()
                .is_some_and(|r| r.contains(words))
        }
    })
    .await
}

#[tokio::test]
async fn readyz_says_whether_a_routed_upstream_has_an_endpoint() {
    let mut backend = Instance::start("127.0.0.1:0").await;
    let g = support::gateway_for(&checked_every_100ms(backend.addr), backend.addr).await;
    let admin = HttpClient::new(g.admin_addr.unwrap());
    let ready = |expect: u16| {
        let admin = admin.clone();
        async move {
            support::eventually_async(|| {
                let admin = admin.clone();
                async move { admin.get("/readyz").await.status == expect }
            })
            .await
        }
    };
    assert!(ready(200).await, "ready with its one endpoint up");
    assert_eq!(admin.get("/healthz").await.status, 200);

    backend.kill().await;
    assert!(ready(503).await, "not ready once the only endpoint is gone");
    let body = admin.get("/readyz").await.json();
    assert_eq!(body["ready"], false);
    assert_eq!(body["upstreams_without_endpoints"][0], "demo");
    assert_eq!(admin.get("/healthz").await.status, 200, "alive all along");
    // With health checks, the reason says the endpoint left rotation.
    assert!(
        readyz_says(&admin, "failing its health checks").await,
        "{}",
        admin.get("/readyz").await.text()
    );

    backend.restart().await;
    assert!(ready(200).await, "ready again when it returns");
}

/// The gateway's grpc.health.v1 service and `/readyz` go by the same
/// view: when a health check takes the only endpoint out of rotation, a
/// load balancer watching the health service hears it at once, not at the
/// next reachability probe (every 2 s).
#[tokio::test]
async fn the_health_service_moves_with_readyz() {
    use futures_util::StreamExt as _;
    use std::time::Duration;
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut backend = Instance::start("127.0.0.1:0").await;
    let g = support::gateway_for(&checked_every_100ms(backend.addr), backend.addr).await;
    let admin = HttpClient::new(g.admin_addr.unwrap());
    let mut watch = support::health_watch(g.addr, "portico.demo.v1.Library").await;
    async fn next_status(
        watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
        within: Duration,
    ) -> Option<ServingStatus> {
        let reply = tokio::time::timeout(within, watch.next()).await.ok()?;
        ServingStatus::try_from(reply?.ok()?.status).ok()
    }
    // Before the first probe has answered, a newly routed service is not
    // serving yet.
    let mut status = next_status(&mut watch, Duration::from_secs(5)).await;
    if status == Some(ServingStatus::NotServing) {
        status = next_status(&mut watch, Duration::from_secs(5)).await;
    }
    assert_eq!(status, Some(ServingStatus::Serving));

    backend.kill().await;
    assert!(
        readyz_says(&admin, "failing its health checks").await,
        "{}",
        admin.get("/readyz").await.text()
    );
    // Within a round of the probe, a refused connect on this host: well
    // inside its 2 s interval (a unit test holds the probe to it).
    assert_eq!(
        next_status(&mut watch, Duration::from_secs(1)).await,
        Some(ServingStatus::NotServing),
        "the watch hears it with /readyz"
    );

    backend.restart().await;
    assert_eq!(
        next_status(&mut watch, Duration::from_secs(5)).await,
        Some(ServingStatus::Serving),
        "and hears it come back"
    );
    assert_eq!(admin.get("/readyz").await.status, 200);
}

/// A DNS name that gives no address leaves the upstream with no endpoints
/// at all, which `/readyz` names as such (nothing was ejected, no check
/// failed).
#[tokio::test]
async fn readyz_names_an_upstream_whose_dns_name_gave_no_address() {
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = support::config_text(backend, "", "").replacen(
        "endpoints = [\"127.0.0.1:9\"]",
        // Bounded by connect_timeout, should the resolver not answer.
        "dns = \"no-such-host.invalid:50051\"\nconnect_timeout = \"300ms\"",
        1,
    );
    assert!(text.contains("no-such-host.invalid"), "{text}");
    let g = support::gateway_for(&text, backend).await;
    let admin = HttpClient::new(g.admin_addr.unwrap());
    let r = admin.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["upstreams_without_endpoints"][0], "demo", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("no endpoints at all"), "{reason}");
    assert!(!reason.contains("health checks"), "{reason}");
}

#[tokio::test]
async fn readyz_sees_a_dead_endpoint_without_health_checks() {
    // No health_check table and no calls: nothing takes the endpoint out
    // of rotation, but it no longer accepts connections.
    let mut backend = Instance::start("127.0.0.1:0").await;
    let g = support::gateway_for(&support::config_text(backend.addr, "", ""), backend.addr).await;
    let admin = HttpClient::new(g.admin_addr.unwrap());
    let ready = |expect: u16| {
        let admin = admin.clone();
        async move {
            support::eventually_async(|| {
                let admin = admin.clone();
                async move { admin.get("/readyz").await.status == expect }
            })
            .await
        }
    };
    assert!(ready(200).await, "ready with its one endpoint up");
    backend.kill().await;
    assert!(ready(503).await, "not ready once the only endpoint is gone");
    let body = admin.get("/readyz").await.json();
    assert_eq!(body["upstreams_without_endpoints"][0], "demo", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("accepts connections")),
        "{body}"
    );
    // The metric and the dashboard's figures say what /readyz says, though
    // the endpoint is still in rotation.
    let metrics = admin.get("/metrics").await.text();
    assert!(
        metrics.contains("portico_upstream_reachable{upstream=\"demo\"} 0"),
        "{metrics}"
    );
    let stats = admin.get("/stats").await.json();
    assert_eq!(stats["upstreams"][0]["reachable"], false, "{stats}");
    backend.restart().await;
    assert!(ready(200).await, "ready again when it returns");
    let metrics = admin.get("/metrics").await.text();
    assert!(
        metrics.contains("portico_upstream_reachable{upstream=\"demo\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        admin.get("/stats").await.json()["upstreams"][0]["reachable"],
        true
    );
}
