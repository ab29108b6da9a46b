//! Response caching as a pipeline policy: what the backend sees is the
//! proof (its call counter).

use crate::support;
use support::RouteKeys;

use http::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portico::demo::backends::pb;
use std::time::Duration;
use support::Harness;

const SECRET: &str = "cache-test-secret-long-enough-for-hs256";

async fn gateway(extra_route: &str, sections: &str) -> Harness {
    let extra = extra_route.to_owned();
    let sections = sections.to_owned();
    Harness::start_with_config(move |backend| {
        support::config_text(backend, &sections, "")
            .with_route_keys("Probe", &format!("cache = {{ ttl = \"400ms\" }}\n{extra}"))
    })
    .await
}

#[tokio::test]
async fn a_repeat_is_served_from_the_cache_in_any_protocol_until_it_expires() {
    let h = gateway("", "").await;
    let r = h.client.get("/v1/probe/headers").await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert_eq!(r.header("age"), None, "a fresh reply has no Age");
    let r = h.client.get("/v1/probe/headers").await;
    assert_eq!(
        (r.status, r.header("x-cache")),
        (StatusCode::OK, Some("HIT"))
    );
    assert_eq!(r.header("age"), Some("0"), "a stored reply says its Age");
    assert_eq!(h.backends.probe.calls(), 1);

    // The same call from a gRPC client is the same cache entry.
    let channel = h.grpc_channel().await;
    let resp = pb::probe_client::ProbeClient::new(channel)
        .headers(pb::HeadersRequest {})
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-cache").unwrap(), "HIT");
    assert!(resp.metadata().get("age").is_some());
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
    // Two answered from memory (REST, gRPC); three not (the first, the
    // no-cache one, the expired one).
    let metrics = support::HttpClient::new(h.gateway.admin_addr.unwrap())
        .get("/metrics")
        .await
        .text();
    for line in [
        "portico_cache_lookups_total{method=\"portico.demo.v1.Probe/Headers\",result=\"hit\"} 2",
        "portico_cache_lookups_total{method=\"portico.demo.v1.Probe/Headers\",result=\"miss\"} 3",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn concurrent_identical_misses_make_one_backend_call() {
    let h = gateway("", "").await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = h.client.clone();
            tokio::spawn(async move {
                let r = c.get("/v1/probe/sleep/200").await;
                (r.status, r.header("x-cache").map(str::to_owned))
            })
        })
        .collect();
    for c in calls {
        // Every waiter gets the one call's reply as that call got it.
        assert_eq!(c.await.unwrap(), (StatusCode::OK, Some("MISS".to_owned())));
    }
    assert_eq!(h.backends.probe.calls(), 1);
    // Different requests are different entries.
    h.client.get("/v1/probe/sleep/1").await;
    assert_eq!(h.backends.probe.calls(), 2);
}

/// A `304` or `206` answers the conditions of the request that made it:
/// requests without them that waited on its call each make their own,
/// and get the whole reply.
#[tokio::test]
async fn requests_waiting_on_a_not_modified_reply_get_their_own() {
    let h = gateway("", "").await;
    let leader = {
        let c = h.client.clone();
        tokio::spawn(async move {
            c.send(
                http::Method::GET,
                "/v1/probe/sleep/1000",
                &[("x-reply-x-http-status", "304")],
                "",
            )
            .await
            .status
        })
    };
    // Well inside the leader's call, so these wait on it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let c = h.client.clone();
            tokio::spawn(async move { c.get("/v1/probe/sleep/1000").await.status })
        })
        .collect();
    assert_eq!(leader.await.unwrap(), StatusCode::NOT_MODIFIED);
    for w in waiters {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(h.backends.probe.calls(), 4);
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

#[tokio::test]
async fn one_subject_named_by_two_kinds_of_credential_gets_two_entries() {
    use support::protocols::{call, gateway, EVERY_PROTOCOL};
    // A token whose sub is "acme" and the API-key consumer "acme": one
    // principal to limits and usage, but the backend sees different
    // headers, so each gets its own reply.
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        support::fixture("api_keys.toml")
    );
    let token = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "acme", "exp": 4_102_444_800u64}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let bearer = format!("Bearer {token}");
    for protocol in EVERY_PROTOCOL {
        let h = gateway(
            &sections,
            "auth = [\"users\", \"keys\"]\ncache = { ttl = \"30s\" }",
        )
        .await;
        let by_token = [("authorization", bearer.as_str())];
        let by_key = [("x-api-key", "acme-key-123")];
        let verdict = |headers: &[(&str, &str)]| {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let h = &h;
            async move {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                call(h, protocol, &headers, "", None).await.cache
            }
        };
        assert_eq!(
            verdict(&by_token).await.as_deref(),
            Some("MISS"),
            "{protocol:?}"
        );
        assert_eq!(
            verdict(&by_key).await.as_deref(),
            Some("MISS"),
            "{protocol:?}: the key's acme does not get the token's reply"
        );
        assert_eq!(
            verdict(&by_token).await.as_deref(),
            Some("HIT"),
            "{protocol:?}"
        );
        assert_eq!(
            verdict(&by_key).await.as_deref(),
            Some("HIT"),
            "{protocol:?}"
        );
    }
}

#[tokio::test]
async fn an_api_key_is_a_credential_to_the_cache_on_a_route_that_does_not_check_it() {
    use support::protocols::{call, gateway, EVERY_PROTOCOL};
    // The backend checks keys itself: the route has no `auth`, but the
    // config's API-key authenticator says where keys travel.
    let sections = format!(
        "[authenticators.keys]\nkind = \"api_key\"\nquery_param = \"api_key\"\nkeys_file = \"{}\"\n",
        support::fixture("api_keys.toml")
    );
    for protocol in EVERY_PROTOCOL {
        let h = gateway(&sections, "cache = { ttl = \"30s\" }").await;
        let verdict = |headers: &'static [(&'static str, &'static str)], query: &'static str| {
            let h = &h;
            async move {
                let seen = call(h, protocol, headers, query, None).await;
                (seen.cache, seen.metadata.get("x-api-key").cloned())
            }
        };
        let (first, seen_a) = verdict(&[("x-api-key", "key-A")], "").await;
        assert_eq!(first.as_deref(), Some("MISS"), "{protocol:?}");
        assert_eq!(seen_a.unwrap(), "key-A", "{protocol:?}");
        let (again, _) = verdict(&[("x-api-key", "key-A")], "").await;
        assert_eq!(again.as_deref(), Some("HIT"), "{protocol:?}: A again");
        let (other, seen_b) = verdict(&[("x-api-key", "key-B")], "").await;
        assert_eq!(
            other.as_deref(),
            Some("MISS"),
            "{protocol:?}: B never gets A's reply"
        );
        assert_eq!(seen_b.unwrap(), "key-B", "{protocol:?}");
        let (anonymous, _) = verdict(&[], "").await;
        assert_eq!(
            anonymous.as_deref(),
            Some("MISS"),
            "{protocol:?}: nor does no key"
        );
        // A key in the query is the same credential as in the header, on
        // the protocols with a URL.
        if matches!(protocol, support::protocols::Protocol::Rest) {
            let (by_query, _) = verdict(&[], "api_key=key-C").await;
            assert_eq!(by_query.as_deref(), Some("MISS"), "C by query");
            let (by_query, _) = verdict(&[], "api_key=key-A").await;
            assert_eq!(by_query.as_deref(), Some("HIT"), "A by query is A");
        }
    }
}

/// Two tokens of one subject are two credentials: each may hold claims of
/// its own (here a tenant the backend is sent), so neither gets the
/// other's reply, on any protocol.
#[tokio::test]
async fn two_tokens_of_one_subject_get_two_entries() {
    use support::protocols::{call, gateway, EVERY_PROTOCOL};
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\nforward_claims = {{ tenant = \"x-tenant-id\" }}\n"
    );
    // A third token holds the first's claims, with another id: a renewed
    // token, a credential of its own.
    let bearer = |tenant: &str, jti: u32| {
        let claims = serde_json::json!({"sub": "ada", "tenant": tenant, "jti": jti, "exp": 4_102_444_800u64});
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        format!("Bearer {token}")
    };
    let tokens = [
        ("acme", bearer("acme", 1)),
        ("globex", bearer("globex", 1)),
        ("acme", bearer("acme", 2)),
    ];
    for protocol in EVERY_PROTOCOL {
        let h = gateway(&sections, "auth = \"users\"\ncache = { ttl = \"30s\" }").await;
        // Each token's first call is a miss (globex's never gets acme's
        // reply), its second a hit; the backend saw each tenant.
        for (round, want) in [(1, "MISS"), (2, "HIT")] {
            for (tenant, bearer) in &tokens {
                let seen = call(
                    &h,
                    protocol,
                    &[("authorization", bearer.as_str())],
                    "",
                    None,
                )
                .await;
                assert_eq!(
                    seen.cache.as_deref(),
                    Some(want),
                    "{protocol:?} {tenant} {round}"
                );
                assert_eq!(
                    seen.metadata["x-tenant-id"], *tenant,
                    "{protocol:?} {round}"
                );
            }
        }
        assert_eq!(h.backends.probe.calls(), 3, "{protocol:?}");
    }
}

/// The shared cache by RFC 9111's rules, through every protocol: a reply
/// made for one credential is never served to another or to an anonymous
/// client, replies that set a cookie, vary on anything or are private are
/// never stored, and the backend's own `Vary` keys the entry.
#[tokio::test]
async fn the_cache_never_serves_one_callers_reply_to_another_on_any_protocol() {
    use support::protocols::{call, gateway, EVERY_PROTOCOL};
    for protocol in EVERY_PROTOCOL {
        let h = gateway("", "cache = { ttl = \"30s\" }").await;
        let calls = || h.backends.probe.calls();
        let verdict = |headers: &'static [(&'static str, &'static str)]| {
            let h = &h;
            async move { call(h, protocol, headers, "", None).await.cache }
        };
        let hit = Some("HIT".to_owned());
        let miss = Some("MISS".to_owned());

        // Credentials, on a route without an authenticator.
        assert_eq!(
            verdict(&[("authorization", "Bearer A")]).await,
            miss,
            "{protocol:?}"
        );
        assert_eq!(
            verdict(&[("authorization", "Bearer A")]).await,
            hit,
            "{protocol:?}: A again"
        );
        assert_eq!(
            verdict(&[("authorization", "Bearer B")]).await,
            miss,
            "{protocol:?}: B never gets A's"
        );
        assert_eq!(
            verdict(&[]).await,
            miss,
            "{protocol:?}: no credential never gets A's"
        );
        assert_eq!(verdict(&[]).await, hit, "{protocol:?}: anonymous again");
        assert_eq!(calls(), 3, "{protocol:?}");

        // Replies that are one client's, or vary on anything, are not kept.
        for (header, value) in [
            ("x-reply-set-cookie", "session=1"),
            ("x-reply-vary", "*"),
            ("x-reply-cache-control", "private"),
            // The qualified forms name per-user fields: the whole reply stays out.
            ("x-reply-cache-control", "private=\"x-secret\", max-age=60"),
            ("x-reply-cache-control", "no-cache=\"set-cookie\""),
            // A lifetime that cannot be read is already stale.
            ("x-reply-cache-control", "max-age=abc"),
            ("x-reply-expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            // Answers to a conditional or range request: a request without
            // those headers must get the whole reply.
            ("x-reply-x-http-status", "304"),
            ("x-reply-x-http-status", "206"),
        ] {
            let before = calls();
            // A credential of its own keeps each case apart from the others.
            let own = format!("Bearer {header}={value}").replace([' ', '"', ','], "");
            for _ in 0..2 {
                let seen = call(
                    &h,
                    protocol,
                    &[(header, value), ("authorization", own.as_str())],
                    "",
                    None,
                )
                .await;
                assert_eq!(
                    seen.cache, miss,
                    "{protocol:?}: {header}: {value} is not stored"
                );
            }
            assert_eq!(calls(), before + 2, "{protocol:?}: {header}");
        }

        // The backend's Vary keys the entry by the headers it names.
        let varies = |lang: &'static str| {
            let h = &h;
            async move {
                call(
                    h,
                    protocol,
                    &[
                        ("x-reply-vary", "accept-language"),
                        ("accept-language", lang),
                        ("authorization", "Bearer vary"),
                    ],
                    "",
                    None,
                )
                .await
                .cache
            }
        };
        assert_eq!(varies("fr").await, miss, "{protocol:?}: fr first");
        assert_eq!(varies("de").await, miss, "{protocol:?}: de is not fr's");
        assert_eq!(varies("fr").await, hit, "{protocol:?}: fr again");
        assert_eq!(varies("de").await, hit, "{protocol:?}: de again");
    }
}

/// The route's `vary` headers are told to the client in `Vary`, beside the
/// backend's own, so a cache between the gateway and the client keeps
/// apart what the gateway keeps apart.
#[tokio::test]
async fn the_routes_vary_headers_are_named_in_the_replys_vary() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys(
            "Probe",
            "cache = { ttl = \"30s\", vary = [\"accept-language\"] }",
        )
    })
    .await;
    let get = |lang: &'static str, reply_vary: &'static str| {
        let client = h.client.clone();
        async move {
            let mut headers = vec![("accept-language", lang)];
            if !reply_vary.is_empty() {
                headers.push(("x-reply-vary", reply_vary));
            }
            client
                .send(http::Method::GET, "/v1/probe/headers", &headers, "")
                .await
        }
    };
    let miss = get("en", "").await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(miss.header("vary"), Some("accept-language"));
    let hit = get("en", "").await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("vary"), Some("accept-language"));
    assert_eq!(get("fr", "").await.header("x-cache"), Some("MISS"));
    // The backend's own Vary comes first, the route's after it, once.
    let both = get("de", "x-tenant").await;
    assert_eq!(both.header("vary"), Some("x-tenant, accept-language"));
    let named = get("it", "x-tenant, Accept-Language").await;
    assert_eq!(named.header("vary"), Some("x-tenant, Accept-Language"));
}

/// A reply that was kept by a cache before the backend (its `Age`) has
/// that much less of its `max-age` left: one already past it is not
/// stored, and a hit's `Age` counts from when the reply was made, not from
/// when the gateway stored it.
#[tokio::test]
async fn a_reply_that_arrives_aged_keeps_its_age() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys("Probe", "cache = { ttl = \"5m\" }")
    })
    .await;
    let get = |case: &'static str, headers: Vec<(&'static str, String)>| {
        let h = &h;
        async move {
            // A credential of its own keeps each case apart.
            let mut all = vec![("authorization", format!("Bearer {case}"))];
            all.extend(headers);
            let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.client
                .send(Method::GET, "/v1/probe/headers", &all, "")
                .await
        }
    };
    let cc = || ("x-reply-cache-control", "max-age=60".to_owned());
    for _ in 0..2 {
        let r = get("old", vec![cc(), ("x-reply-age", "100".to_owned())]).await;
        assert_eq!(r.header("x-cache"), Some("MISS"), "stale on arrival");
    }
    assert_eq!(h.backends.probe.calls(), 2);
    // Fresh for 10 s more: kept, and told as 50 s old.
    let r = get("young", vec![cc(), ("x-reply-age", "50".to_owned())]).await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let r = get("young", vec![cc(), ("x-reply-age", "50".to_owned())]).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!((50..60).contains(&age), "{age}");
    assert_eq!(h.backends.probe.calls(), 3);
}

/// A reply larger than the whole cache (`max_bytes`) is answered and never
/// kept, while smaller ones are.
#[tokio::test]
async fn a_reply_larger_than_max_bytes_is_never_stored() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "")
            .with_route_keys("Probe", "cache = { ttl = \"30s\", max_bytes = 4096 }")
    })
    .await;
    // The Headers method echoes the request's headers: a large one makes
    // a large reply.
    let big = "x".repeat(6000);
    for (pad, second) in [(big.as_str(), "MISS"), ("small", "HIT")] {
        let headers = [("x-pad", pad)];
        let first = h
            .client
            .send(Method::GET, "/v1/probe/headers", &headers, "")
            .await;
        assert_eq!(first.header("x-cache"), Some("MISS"), "{}", pad.len());
        let again = h
            .client
            .send(Method::GET, "/v1/probe/headers", &headers, "")
            .await;
        assert_eq!(again.header("x-cache"), Some(second), "{}", pad.len());
    }
}

/// Where each protocol's client found a backend's `x-a` header and
/// trailer: (protocol, values among the reply's headers, values among
/// its trailers).
type Placed = Vec<(&'static str, Vec<String>, Vec<String>)>;

async fn where_x_a_arrives(h: &Harness) -> Placed {
    use futures_util::StreamExt;
    let values = |headers: &http::HeaderMap, name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let mut placed = Placed::new();
    let rest = h.client.get("/v1/probe/headers").await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.text());
    placed.push(("rest", values(&rest.headers, "x-a"), Vec::new()));

    let grpc = h
        .client
        .as_http2()
        .send(
            Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &[("content-type", "application/grpc"), ("te", "trailers")],
            support::frame_bytes(0, b""),
        )
        .await;
    assert_eq!(
        grpc.trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..]),
        "{:?} {:?}",
        grpc.headers,
        grpc.trailers
    );
    placed.push((
        "grpc",
        values(&grpc.headers, "x-a"),
        values(&grpc.trailers, "x-a"),
    ));

    let web = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &[("content-type", "application/grpc-web+proto")],
            support::frame_bytes(0, b""),
        )
        .await;
    // The trailer frame (flag 0x80) is the body's last.
    let body = web.body.to_vec();
    let at = body.iter().rposition(|b| *b == 0x80).unwrap();
    let trailer_block = String::from_utf8_lossy(&body[at + 5..]).into_owned();
    let web_trailers: Vec<String> = trailer_block
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("x-a:").map(|v| v.trim().to_owned()))
        .collect();
    placed.push(("grpc-web", values(&web.headers, "x-a"), web_trailers));

    let connect = h
        .client
        .send(
            Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &[
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            "{}",
        )
        .await;
    assert_eq!(connect.status, StatusCode::OK, "{}", connect.text());
    placed.push((
        "connect",
        values(&connect.headers, "x-a"),
        values(&connect.headers, "trailer-x-a"),
    ));

    let mut ws = support::json_v1_at(h, "/v1/probe/headers").await;
    let (mut ws_headers, mut ws_trailers) = (Vec::new(), Vec::new());
    while let Some(Ok(frame)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if let Some(x) = v["headers"]["x-a"].as_str() {
                ws_headers.push(x.to_owned());
            }
            if let Some(x) = v["trailers"]["x-a"].as_str() {
                ws_trailers.push(x.to_owned());
            }
        }
    }
    placed.push(("websocket", ws_headers, ws_trailers));
    placed
}

/// A cache changes nothing of where a reply's parts arrive: a backend's
/// header stays a header and its trailer a trailer, on the call that
/// filled the cache and on every hit, on every protocol.
#[tokio::test]
async fn a_cached_reply_keeps_the_backends_headers_and_trailers_apart() {
    let (backend, calls) = support::scripted::serve(support::scripted::Script {
        headers: vec![("x-a", "H".to_owned())],
        messages: vec![Vec::new()],
        trailers: vec![("x-a", "T")],
        ..Default::default()
    })
    .await;
    let plain = Harness::start_with_config(|_| support::config_text(backend, "", "")).await;
    let uncached = where_x_a_arrives(&plain).await;
    assert!(
        uncached.contains(&("grpc", vec!["H".to_owned()], vec!["T".to_owned()])),
        "{uncached:?}"
    );
    let cached = Harness::start_with_config(|_| {
        support::config_text(backend, "", "").with_route_keys("Probe", "cache = { ttl = \"1m\" }")
    })
    .await;
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    // The first REST call fills the cache; every call after it is a hit.
    assert_eq!(where_x_a_arrives(&cached).await, uncached, "filling");
    assert_eq!(where_x_a_arrives(&cached).await, uncached, "hits");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst) - before,
        1,
        "one backend call filled the cache"
    );
}

/// A book's `labels` is a map, whose entries protobuf lets each writer
/// order as it likes (the gateway's own JSON reader, and a client's
/// library: Rust's and Go's change it from call to call). One request is
/// still one cache entry, on every protocol: the first call creates the
/// book, every repeat is that reply.
#[tokio::test]
async fn a_request_holding_a_map_is_one_entry_whatever_order_its_entries_come_in() {
    use support::protocols::{call_json, Protocol};
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys(
            "Library",
            "mcp = true\ncache = { ttl = \"60s\", methods = [\"CreateBook\"] }",
        )
    })
    .await;
    let labels: serde_json::Map<String, serde_json::Value> = (0..12)
        .map(|i| {
            (
                format!("label-{i}"),
                serde_json::json!(format!("value-{i}")),
            )
        })
        .collect();
    let request = serde_json::json!({
        "parent": "shelves/1",
        "book": { "title": "Maps", "labels": labels },
    });
    let mut names = std::collections::HashSet::new();
    let mut verdicts = Vec::new();
    for protocol in [
        Protocol::Rest,
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::Connect,
        Protocol::WebSocket,
    ] {
        for _ in 0..4 {
            let out = call_json(
                &h.client,
                protocol,
                "/portico.demo.v1.Library/CreateBook",
                &request.to_string(),
            )
            .await;
            assert_eq!(out.code, 0, "{protocol:?}: {}", out.message);
            names.insert(out.json["name"].as_str().unwrap().to_owned());
            verdicts.push((protocol, out.fields.get("x-cache").cloned()));
        }
    }
    for _ in 0..4 {
        let (_, result) =
            support::mcp_call(&h.client, &[], "Library_CreateBook", request.clone()).await;
        assert!(result.get("isError").is_none(), "{result}");
        names.insert(
            result["structuredContent"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let verdict = &result["_meta"]["io.portico/metadata"]["x-cache"];
        verdicts.push((Protocol::Mcp, verdict.as_str().map(str::to_owned)));
    }
    assert_eq!(
        names.len(),
        1,
        "one book made, every other call a hit: {names:?}"
    );
    assert_eq!(verdicts[0].1.as_deref(), Some("MISS"));
    for (protocol, verdict) in &verdicts[1..] {
        assert_eq!(
            verdict.as_deref(),
            Some("HIT"),
            "{protocol:?}: {verdicts:?}"
        );
    }
}
