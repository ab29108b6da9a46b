//! Response caching as a pipeline policy: what the backend sees is the
//! proof (its call counter).

use crate::support;

use http::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portico::demo::backends::pb;
use std::time::Duration;
use support::Harness;

const SECRET: &str = "cache-test-secret-long-enough";

async fn gateway(extra_route: &str, sections: &str) -> Harness {
    let extra = extra_route.to_owned();
    let sections = sections.to_owned();
    Harness::start_with_config(move |backend| {
        support::config_text(backend, &sections, "").replacen(
            "grpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\n",
            &format!("grpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\ncache = {{ ttl = \"400ms\" }}\n{extra}"),
            1,
        )
    })
    .await
}

#[tokio::test]
async fn a_repeat_is_served_from_the_cache_in_any_protocol_until_it_expires() {
    let h = gateway("", "").await;
    let r = h.client.get("/v1/probe/headers").await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let r = h.client.get("/v1/probe/headers").await;
    assert_eq!(
        (r.status, r.header("x-cache")),
        (StatusCode::OK, Some("HIT"))
    );
    assert_eq!(h.backends.probe.calls(), 1);

    // The same call from a gRPC client is the same cache entry.
    let channel = h.grpc_channel().await;
    let resp = pb::probe_client::ProbeClient::new(channel)
        .headers(pb::HeadersRequest {})
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-cache").unwrap(), "HIT");
    assert_eq!(h.backends.probe.calls(), 1);

    // The client may ask for a fresh reply.
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("cache-control", "no-cache")],
            "",
        )
        .await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(h.backends.probe.calls(), 2);

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        h.client.get("/v1/probe/headers").await.header("x-cache"),
        Some("MISS"),
        "expired"
    );
    assert_eq!(h.backends.probe.calls(), 3);
}

#[tokio::test]
async fn concurrent_identical_misses_make_one_backend_call() {
    let h = gateway("", "").await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = h.client.clone();
            tokio::spawn(async move { c.get("/v1/probe/sleep/200").await.status })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(h.backends.probe.calls(), 1);
    // Different requests are different entries.
    h.client.get("/v1/probe/sleep/1").await;
    assert_eq!(h.backends.probe.calls(), 2);
}

#[tokio::test]
async fn errors_and_unsafe_methods_are_not_cached() {
    let h = gateway("", "").await;
    for _ in 0..2 {
        assert_eq!(
            h.client.get("/v1/probe/fail/5").await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(h.backends.probe.calls(), 2);
}

#[tokio::test]
async fn one_callers_cached_reply_is_never_served_to_another() {
    let sections =
        format!("[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n");
    let h = gateway("auth = \"users\"\n", &sections).await;
    let token = |sub: &str| {
        let claims = serde_json::json!({"sub": sub, "exp": 4_102_444_800u64});
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let get = |t: String| {
        let c = h.client.clone();
        async move {
            let auth = format!("Bearer {t}");
            c.send(
                Method::GET,
                "/v1/probe/headers",
                &[("authorization", auth.as_str())],
                "",
            )
            .await
        }
    };
    let ada = get(token("ada")).await;
    assert_eq!(ada.header("x-cache"), Some("MISS"));
    let bob = get(token("bob")).await;
    assert_eq!(
        bob.header("x-cache"),
        Some("MISS"),
        "bob does not get ada's reply"
    );
    assert_ne!(
        ada.json()["metadata"]["authorization"],
        bob.json()["metadata"]["authorization"]
    );
    assert_eq!(get(token("ada")).await.header("x-cache"), Some("HIT"));
    assert_eq!(h.backends.probe.calls(), 2);
}
