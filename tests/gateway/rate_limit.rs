//! Rate limits as a pipeline policy: one budget, whatever protocol spends it.

use crate::support;
use support::RouteKeys;

use futures_util::StreamExt;
use http::{Method, StatusCode};
use portico::demo::backends::pb;
use std::time::Duration;
use support::Harness;

/// Probe: 2 calls at once per client IP, refilled at 2 per second.
/// Library: 1 call per second per x-request-id.
async fn gateway() -> Harness {
    Harness::start_with_config(|backend| {
        support::config_text(backend, "", "")
            .with_route_keys(
                "Probe",
                "rate_limit = { requests_per_second = 2, burst = 2 }",
            )
            .with_route_keys(
                "Library",
                "rate_limit = { requests_per_second = 1, key = \"header:x-request-id\" }",
            )
    })
    .await
}

#[tokio::test]
async fn a_spent_budget_is_429_with_retry_after_and_refills() {
    let h = gateway().await;
    for _ in 0..2 {
        let r = h.client.get("/v1/probe/headers").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.header("ratelimit-limit"),
            None,
            "only refusals carry them"
        );
    }
    let r = h.client.get("/v1/probe/headers").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["code"], 8);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("ratelimit-limit"), Some("2"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    // The wait until a token is back, in whole seconds rounded up.
    assert_eq!(r.header("ratelimit-reset"), Some("1"));
    assert_eq!(
        h.backends.probe.calls(),
        2,
        "the refused call never reached the backend"
    );

    // The same budget, spent from gRPC.
    let channel = h.grpc_channel().await;
    let err = pb::probe_client::ProbeClient::new(channel.clone())
        .headers(pb::HeadersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    // With what a REST client gets as headers, as metadata.
    let md = err.metadata();
    assert_eq!(
        (
            md.get("retry-after").and_then(|v| v.to_str().ok()),
            md.get("ratelimit-limit").and_then(|v| v.to_str().ok()),
            md.get("ratelimit-remaining").and_then(|v| v.to_str().ok()),
            md.get("ratelimit-reset").and_then(|v| v.to_str().ok()),
        ),
        (Some("1"), Some("2"), Some("0"), Some("1")),
        "{md:?}"
    );

    // In a portico.json.v1 session, they are the status frame's trailers.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/v1/probe/headers", h.gateway.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let status = loop {
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v.get("status").is_some() {
                    break v;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("no status frame: {other:?}"),
        }
    };
    assert_eq!(status["status"]["code"], 8, "{status}");
    assert_eq!(status["trailers"]["ratelimit-limit"], "2", "{status}");
    assert_eq!(status["trailers"]["retry-after"], "1", "{status}");
    assert_eq!(status["trailers"]["ratelimit-reset"], "1", "{status}");

    // And from a WebSocket call: it ends with RESOURCE_EXHAUSTED (close 4008).
    let url = format!("ws://{}/v1/probe/headers", h.gateway.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut frames = Vec::new();
    while let Some(Ok(frame)) = ws.next().await {
        frames.push(frame);
    }
    let close = frames
        .iter()
        .find_map(|f| match f {
            tokio_tungstenite::tungstenite::Message::Close(Some(c)) => Some(u16::from(c.code)),
            _ => None,
        })
        .expect("a close frame");
    assert_eq!(close, 4008, "{frames:?}");
    assert_eq!(h.backends.probe.calls(), 2);

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        pb::probe_client::ProbeClient::new(channel)
            .headers(pb::HeadersRequest {})
            .await
            .is_ok(),
        "refilled"
    );
}

#[tokio::test]
async fn each_key_has_its_own_budget() {
    let h = gateway().await;
    let get = |id: &'static str| {
        let client = h.client.clone();
        async move {
            client
                .send(Method::GET, "/v1/shelves/1", &[("x-request-id", id)], "")
                .await
                .status
        }
    };
    assert_eq!(get("alice").await, StatusCode::OK);
    assert_eq!(get("alice").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get("bob").await, StatusCode::OK);
    // Routes without a limit are not limited.
    for _ in 0..5 {
        assert_eq!(
            h.client.get("/v1/feed?count=1").await.status,
            StatusCode::OK
        );
    }
}

#[test]
fn a_bad_limit_is_a_config_error_naming_the_key() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"a\"\n";
    let err = portico::config::Config::from_toml(&format!(
        "{base}rate_limit = {{ requests_per_second = 0 }}\n"
    ))
    .unwrap_err();
    assert_eq!(err.key, "routes[0].rate_limit.requests_per_second");
    let err = portico::config::Config::from_toml(&format!(
        "{base}rate_limit = {{ requests_per_second = 1, key = \"cookie\" }}\n"
    ))
    .unwrap_err();
    assert_eq!(err.key, "routes[0].rate_limit.key");
    // A token must come back within a year, the longest wait counted.
    let err = portico::config::Config::from_toml(&format!(
        "{base}rate_limit = {{ requests_per_second = 1e-20 }}\n"
    ))
    .unwrap_err();
    assert_eq!(err.key, "routes[0].rate_limit.requests_per_second");
    assert!(err.reason.contains("less than one a year"), "{err}");
    let err = portico::config::Config::from_toml(&format!(
        "{base}[websocket]\nmessages_per_second = 1e-20\n"
    ))
    .unwrap_err();
    assert_eq!(err.key, "websocket.messages_per_second");
    portico::config::Config::from_toml(&format!(
        "{base}rate_limit = {{ requests_per_second = 0.0000000317, scope = \"local\" }}\n"
    ))
    .unwrap();
}

/// `key = "principal"` is per authenticator, as the cache keys callers: a
/// token whose `sub` is `acme` does not spend the API-key consumer
/// `acme`'s budget.
#[tokio::test]
async fn a_principal_of_one_authenticator_does_not_spend_another_of_the_same_name() {
    let secret = "the-rate-limit-test-signing-secret";
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n\
         [authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        support::fixture("api_keys.toml")
    );
    let start = || {
        Harness::start_with_config(|backend| {
            support::config_text(backend, &sections, "").with_route_keys(
                "Probe",
                "auth = [\"users\", \"keys\"]\nrate_limit = { requests_per_second = 0.001, burst = 1, key = \"principal\" }",
            )
        })
    };
    let bearer = support::hs256_bearer(secret, "acme");
    // Every protocol, each on a gateway of its own (one budget serves
    // every protocol): 8 is RESOURCE_EXHAUSTED.
    for protocol in support::protocols::EVERY_PROTOCOL {
        let h = start().await;
        let key = [("x-api-key", "acme-key-123")];
        let jwt = [("authorization", bearer.as_str())];
        let codes = [
            support::protocols::call(&h, protocol, &key, "", None)
                .await
                .code,
            support::protocols::call(&h, protocol, &key, "", None)
                .await
                .code,
            support::protocols::call(&h, protocol, &jwt, "", None)
                .await
                .code,
            support::protocols::call(&h, protocol, &jwt, "", None)
                .await
                .code,
        ];
        assert_eq!(codes, [0, 8, 0, 8], "{protocol:?}");
    }
    let h = start().await;
    let get = |header: (&'static str, String)| {
        let client = h.client.clone();
        async move {
            client
                .send(
                    Method::GET,
                    "/v1/probe/headers",
                    &[(header.0, header.1.as_str())],
                    "",
                )
                .await
                .status
        }
    };
    let key = ("x-api-key", "acme-key-123".to_owned());
    assert_eq!(get(key.clone()).await, StatusCode::OK);
    assert_eq!(get(key).await, StatusCode::TOO_MANY_REQUESTS);
    let jwt = ("authorization", bearer);
    assert_eq!(get(jwt.clone()).await, StatusCode::OK, "its own budget");
    assert_eq!(get(jwt).await, StatusCode::TOO_MANY_REQUESTS);
}
