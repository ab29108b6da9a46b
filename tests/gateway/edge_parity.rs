//! One request edge: every policy behaviour, run through every ingress
//! protocol (REST, gRPC, gRPC-Web, Connect, WebSocket) with the same
//! headers, must give the same verdict and hand the backend the same
//! metadata. Each case is a row; each protocol a column.

use crate::support;
use support::RouteKeys;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};
use support::protocols::{call, gateway, Protocol, EVERY_PROTOCOL};
use support::{fixture, Harness};

const SECRET: &str = "an-edge-parity-secret-long-enough";

/// A named set of headers and the gRPC code it must get.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, i64);

fn token(scope: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ada", "exp": now + 600, "scope": scope}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_same_headers_reach_the_backend_whatever_the_protocol() {
    let h = gateway(
        "[websocket]\nallowed_origins = [\"http://app.example\"]\n\n\
         [cors]\nallowed_origins = [\"http://app.example\"]\n",
        "",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        let s = call(
            &h,
            protocol,
            &[
                ("x-tenant", "acme"),
                ("x-request-id", "r-1"),
                ("accept-language", "fr"),
                ("cookie", "session=secret"),
                ("origin", "http://app.example"),
                ("sec-fetch-mode", "cors"),
                ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
            ],
            "",
            None,
        )
        .await;
        assert_eq!(s.code, 0, "{protocol:?}");
        let md = &s.metadata;
        assert_eq!(md["x-tenant"], "acme", "{protocol:?}: {md:?}");
        // A WebSocket session's calls each get the session's id and a number.
        let id = if protocol == Protocol::WebSocket {
            "r-1.0"
        } else {
            "r-1"
        };
        assert_eq!(md["x-request-id"], id, "{protocol:?}");
        assert_eq!(md["accept-language"], "fr", "{protocol:?}");
        for never in [
            "cookie",
            "proxy-authorization",
            "origin",
            "sec-fetch-mode",
            "connect-protocol-version",
            "sec-websocket-key",
            "sec-websocket-protocol",
            "x-grpc-web",
        ] {
            assert!(
                !md.contains_key(never),
                "{protocol:?} forwarded {never}: {md:?}"
            );
        }
        assert!(
            md.contains_key("grpc-timeout"),
            "{protocol:?}: a deadline is always sent"
        );
    }
}

/// A call over HTTP/1.1: the protocol's name, the path, the headers it
/// adds and the request body (a GET for none).
type Http1Call = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
);

/// Probe's Headers over each protocol that comes over HTTP/1.1.
fn probe_calls_over_http1() -> [Http1Call; 3] {
    [
        ("REST", "/v1/probe/headers", vec![], vec![]),
        (
            "Connect",
            "/portico.demo.v1.Probe/Headers",
            vec![
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            b"{}".to_vec(),
        ),
        (
            "gRPC-Web",
            "/portico.demo.v1.Probe/Headers",
            vec![("content-type", "application/grpc-web+proto")],
            vec![0, 0, 0, 0, 0],
        ),
    ]
}

/// A header an HTTP/1.1 request's `Connection` names is for that hop
/// alone (RFC 9110 section 7.6.1), on every protocol that comes over it.
#[tokio::test]
async fn headers_named_by_connection_stay_with_the_hop() {
    let h = gateway("", "").await;
    let headers = [
        ("connection", "keep-alive, x-hop-only"),
        ("x-hop-only", "1"),
        ("x-tenant", "acme"),
    ];
    let calls = probe_calls_over_http1();
    for (name, path, extra, body) in calls {
        let mut all = headers.to_vec();
        all.extend(extra);
        let method = if body.is_empty() {
            http::Method::GET
        } else {
            http::Method::POST
        };
        let r = h.client.send(method, path, &all, body).await;
        assert_eq!(r.status, 200, "{name}");
        // The echo is the reply message (gRPC-Web's in its frame).
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(text.contains("acme"), "{name}: {text}");
        assert!(!text.contains("x-hop-only"), "{name} forwarded it: {text}");
    }
}

/// A protocol's own header is for the hop that reads it, the gateway:
/// named by `Connection`, a deadline header still sets the deadline the
/// backend is given, as it does unnamed, on every protocol over HTTP/1.1.
#[tokio::test]
async fn a_deadline_header_named_by_connection_still_sets_the_deadline() {
    let h = gateway("", "").await;
    // The deadline the backend was sent, read from the echoed metadata
    // (gRPC-Web's reply is a protobuf frame: its value follows the name).
    fn sent_deadline(body: &[u8]) -> std::time::Duration {
        let text = String::from_utf8_lossy(body);
        let at = text.find("grpc-timeout").expect("a deadline was sent") + "grpc-timeout".len();
        let value: String = text[at..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let (digits, unit) = value.split_at(value.len() - 1);
        let n: u64 = digits.parse().unwrap();
        match unit {
            "H" => std::time::Duration::from_secs(n * 3600),
            "M" => std::time::Duration::from_secs(n * 60),
            "S" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_millis(n),
            "u" => std::time::Duration::from_micros(n),
            "n" => std::time::Duration::from_nanos(n),
            _ => panic!("no unit in {value:?}"),
        }
    }
    let calls = probe_calls_over_http1();
    for (name, path, extra, body) in calls {
        for (header, value) in [("grpc-timeout", "1500m"), ("connect-timeout-ms", "1500")] {
            if name == "gRPC-Web" && header == "connect-timeout-ms" {
                continue;
            }
            let connection = format!("keep-alive, {header}");
            let mut all = vec![("connection", connection.as_str()), (header, value)];
            all.extend(extra.iter().cloned());
            let method = if body.is_empty() {
                http::Method::GET
            } else {
                http::Method::POST
            };
            let r = h.client.send(method, path, &all, body.clone()).await;
            assert_eq!(r.status, 200, "{name} {header}");
            let sent = sent_deadline(&r.body);
            assert!(
                sent <= std::time::Duration::from_millis(1500),
                "{name}: {header} named by Connection was not read: the backend got {sent:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_forward_list_is_one_rule_for_every_protocol() {
    let h = gateway("[metadata]\nforward = [\"x-tenant-*\", \"cookie\"]\n", "").await;
    for protocol in EVERY_PROTOCOL {
        let s = call(
            &h,
            protocol,
            &[
                ("x-tenant-id", "t1"),
                ("cookie", "c=1"),
                ("x-other", "no"),
                ("authorization", "Bearer x"),
            ],
            "",
            None,
        )
        .await;
        let md = &s.metadata;
        assert_eq!(md["x-tenant-id"], "t1", "{protocol:?}");
        assert_eq!(md["cookie"], "c=1", "{protocol:?}");
        assert!(!md.contains_key("x-other"), "{protocol:?}: {md:?}");
        assert!(!md.contains_key("authorization"), "{protocol:?}: {md:?}");
    }
}

/// gRPC metadata names are lowercase letters, digits, `_`, `-` and `.`;
/// HTTP allows more (`x!y`, `x~z`), and a gRPC library that checks names
/// (grpc-core's) fails the whole call over one such header. So such a
/// header is not forwarded, whatever the forward rule and the protocol.
#[tokio::test]
async fn a_header_name_grpc_metadata_cannot_carry_is_not_forwarded_on_any_protocol() {
    let h = gateway(
        "[metadata]\nforward = [\"*\"]\nheaders_with_underscores = \"allow\"\n",
        "",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        let s = call(
            &h,
            protocol,
            &[("x!y", "1"), ("x~z", "2"), ("x-ok.v_2", "3")],
            "",
            None,
        )
        .await;
        let md = &s.metadata;
        assert_eq!(md["x-ok.v_2"], "3", "{protocol:?}: {md:?}");
        assert!(!md.contains_key("x!y"), "{protocol:?}: {md:?}");
        assert!(!md.contains_key("x~z"), "{protocol:?}: {md:?}");
    }
}

/// The gateway's own origin is one rule on every protocol: a page served
/// through a proxy that sets `X-Forwarded-Host` to the public host calls
/// the gateway over any protocol, WebSocket and MCP included, with no
/// policy; the same page without that header is another site's.
#[tokio::test]
async fn the_gateways_own_origin_behind_a_proxy_is_one_rule_on_every_protocol() {
    let h = gateway("", "").await;
    let page = ("origin", "https://public.example");
    for protocol in EVERY_PROTOCOL {
        let proxied = call(
            &h,
            protocol,
            &[page, ("x-forwarded-host", "proxy.internal, public.example")],
            "",
            None,
        )
        .await;
        assert_eq!(proxied.code, 0, "{protocol:?}: {}", proxied.message);
        if protocol == Protocol::Mcp {
            let r = support::mcp_send(&h.client, "/mcp", &[page], "Probe_Headers", json!({})).await;
            assert_eq!(r.status, 403, "{}", r.text());
        } else {
            let foreign = call(&h, protocol, &[page], "", None).await;
            assert_eq!(foreign.code, 7, "{protocol:?}: {}", foreign.message);
        }
    }
    // A scheme's default port is the same origin written or not.
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[
                ("origin", "http://public.example"),
                ("host", "public.example:80"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn a_jwt_in_the_header_or_the_session_cookie_authenticates_every_protocol() {
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\ncookie = \"session\"\n"
    );
    let h = gateway(&sections, "auth = \"users\"").await;
    let bearer = format!("Bearer {}", token("probe"));
    let cookie = format!("theme=dark; session={}", token("probe"));
    let other = format!("Bearer {}", token("other"));
    // The matching cookie first, then another: every `session` counts.
    let matching_then_other = format!("session={}; session={}", token("probe"), token("other"));
    let same_twice = format!("session={0}; theme=dark; session={0}", token("probe"));
    let cases: [Case; 9] = [
        ("header", vec![("authorization", bearer.as_str())], 0),
        ("cookie", vec![("cookie", cookie.as_str())], 0),
        ("nothing", vec![], 16),
        ("forged cookie", vec![("cookie", "session=a.b.c")], 16),
        (
            "two authorization fields",
            vec![
                ("authorization", bearer.as_str()),
                ("authorization", other.as_str()),
            ],
            3,
        ),
        (
            "a header and a different cookie",
            vec![
                ("authorization", other.as_str()),
                ("cookie", cookie.as_str()),
            ],
            3,
        ),
        (
            "a header and its cookie, then a different one",
            vec![
                ("authorization", bearer.as_str()),
                ("cookie", matching_then_other.as_str()),
            ],
            3,
        ),
        (
            "two different session cookies",
            vec![("cookie", matching_then_other.as_str())],
            3,
        ),
        (
            "the same session cookie twice",
            vec![("cookie", same_twice.as_str())],
            0,
        ),
    ];
    for (name, headers, want) in &cases {
        for protocol in EVERY_PROTOCOL {
            let s = call(&h, protocol, headers, "", None).await;
            assert_eq!(s.code, *want, "{name} over {protocol:?}");
        }
    }
    // The cookie served the policy; it is not forwarded by default.
    let s = call(&h, Protocol::Connect, &[("cookie", &cookie)], "", None).await;
    assert!(!s.metadata.contains_key("cookie"));
    assert_eq!(
        h.backends.probe.calls(),
        3 * EVERY_PROTOCOL.len() as u64 + 1
    );
}

#[tokio::test]
async fn an_api_key_in_the_header_or_the_query_authenticates_every_protocol() {
    let sections = format!(
        "[authenticators.partners]\nkind = \"api_key\"\nheader = \"x-api-key\"\nquery_param = \"api_key\"\nkeys_file = \"{}\"\n",
        fixture("api_keys.toml")
    );
    let h = gateway(&sections, "auth = \"partners\"").await;
    for protocol in EVERY_PROTOCOL {
        let s = call(&h, protocol, &[("x-api-key", "acme-key-123")], "", None).await;
        assert_eq!(s.code, 0, "header over {protocol:?}");
        let s = call(&h, protocol, &[("x-api-key", "wrong")], "", None).await;
        assert_eq!(s.code, 16, "a wrong key over {protocol:?}");
        // gRPC clients have no query string to speak of.
        if protocol != Protocol::Grpc {
            let s = call(&h, protocol, &[], "api_key=acme-key-123", None).await;
            assert_eq!(s.code, 0, "query over {protocol:?}");
            // A key in the header and another in the query: which one counts?
            // Neither: the call is refused.
            let s = call(
                &h,
                protocol,
                &[("x-api-key", "acme-key-123")],
                "api_key=globex-key-456",
                None,
            )
            .await;
            assert_eq!(s.code, 3, "header and query over {protocol:?}");
        }
    }
}

#[tokio::test]
async fn authorization_refuses_the_same_callers_on_every_protocol() {
    let sections =
        format!("[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n");
    let h = gateway(
        &sections,
        "auth = \"users\"\nauthorize = { scopes = [\"probe.read\"] }",
    )
    .await;
    let allowed = format!("Bearer {}", token("probe.read"));
    let denied = format!("Bearer {}", token("other"));
    for protocol in EVERY_PROTOCOL {
        let s = call(&h, protocol, &[("authorization", &allowed)], "", None).await;
        assert_eq!(s.code, 0, "{protocol:?}");
        let s = call(&h, protocol, &[("authorization", &denied)], "", None).await;
        assert_eq!(s.code, 7, "{protocol:?}");
    }
    assert_eq!(h.backends.probe.calls(), EVERY_PROTOCOL.len() as u64);
}

#[tokio::test]
async fn a_refusal_names_everything_missing_and_claims_match_by_value_on_every_protocol() {
    let sections =
        format!("[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n");
    let h = gateway(
        &sections,
        "auth = \"users\"\nauthorize = { scopes = [\"probe.read\", \"probe.audit\"], claims = { level = \"3\", staff = \"true\" } }",
    )
    .await;
    let signed = |claims: serde_json::Value| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = claims;
        claims["sub"] = json!("ada");
        claims["exp"] = json!(now + 600);
        format!(
            "Bearer {}",
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        )
    };
    // A number and a boolean claim match the configured text that spells them.
    let allowed = signed(json!({"scope": "probe.read probe.audit", "level": 3, "staff": true}));
    let lacking = signed(json!({"scope": "other", "level": "4", "staff": true}));
    for protocol in EVERY_PROTOCOL {
        let s = call(&h, protocol, &[("authorization", &allowed)], "", None).await;
        assert_eq!(s.code, 0, "{protocol:?}: {}", s.message);
        let s = call(&h, protocol, &[("authorization", &lacking)], "", None).await;
        assert_eq!(s.code, 7, "{protocol:?}");
        // One refusal names every requirement the token misses.
        assert!(
            s.message
                .contains("the caller lacks the scopes \"probe.read\", \"probe.audit\"")
                && s.message.contains("the claim \"level\" is not \"3\"")
                && !s.message.contains("staff"),
            "{protocol:?}: {}",
            s.message
        );
    }
    assert_eq!(h.backends.probe.calls(), EVERY_PROTOCOL.len() as u64);
}

#[tokio::test]
async fn a_rate_limit_keyed_on_a_header_counts_it_on_every_protocol() {
    let h = gateway(
        "",
        "rate_limit = { requests_per_second = 0.001, burst = 1, key = \"header:x-client\" }",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        let key = format!("{protocol:?}");
        let s = call(&h, protocol, &[("x-client", &key)], "", None).await;
        assert_eq!(s.code, 0, "first call over {protocol:?}");
        let s = call(&h, protocol, &[("x-client", &key)], "", None).await;
        assert_eq!(s.code, 8, "second call over {protocol:?}");
    }
    // One key is one bucket, whichever protocol spends it.
    let s = call(&h, Protocol::Rest, &[("x-client", "Grpc")], "", None).await;
    assert_eq!(s.code, 8);
}

#[tokio::test]
async fn the_cache_reads_cache_control_and_vary_from_every_protocol() {
    let h = gateway(
        "",
        "cache = { ttl = \"60s\", vary = [\"accept-language\", \"x-run\"] }",
    )
    .await;
    let mut calls = 0;
    for protocol in EVERY_PROTOCOL {
        let run = format!("{protocol:?}");
        let with = |lang: &'static str, extra: Option<(&'static str, &'static str)>| {
            let mut v = vec![("x-run", run.clone()), ("accept-language", lang.to_owned())];
            if let Some((k, val)) = extra {
                v.push((k, val.to_owned()));
            }
            v
        };
        let go = |headers: Vec<(&'static str, String)>| {
            let h = &h;
            async move {
                let refs: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                call(h, protocol, &refs, "", None).await
            }
        };
        let s = go(with("en", None)).await;
        calls += 1;
        assert_eq!(s.cache.as_deref(), Some("MISS"), "{protocol:?}");
        let s = go(with("en", None)).await;
        assert_eq!(s.cache.as_deref(), Some("HIT"), "{protocol:?}");
        assert_eq!(s.metadata["accept-language"], "en");

        // Another language is another variant: never the first one's reply.
        let s = go(with("fr", None)).await;
        calls += 1;
        assert_eq!(s.cache.as_deref(), Some("MISS"), "{protocol:?}");
        assert_eq!(s.metadata["accept-language"], "fr", "{protocol:?}");

        let s = go(with("en", Some(("cache-control", "no-cache")))).await;
        calls += 1;
        assert_eq!(
            s.cache.as_deref(),
            Some("MISS"),
            "no-cache over {protocol:?}"
        );

        let s = go(with("de", Some(("cache-control", "no-store")))).await;
        calls += 1;
        assert_ne!(
            s.cache.as_deref(),
            Some("HIT"),
            "no-store over {protocol:?}"
        );
        let s = go(with("de", None)).await;
        calls += 1;
        assert_eq!(
            s.cache.as_deref(),
            Some("MISS"),
            "{protocol:?}: a no-store reply was stored"
        );
        assert_eq!(h.backends.probe.calls(), calls, "{protocol:?}");
    }
}

/// The client's deadline header as `protocol` sends it: Connect's
/// `connect-timeout-ms`, everyone else's `grpc-timeout`.
fn deadline(
    protocol: Protocol,
    connect_ms: &'static str,
    grpc: &'static str,
) -> [(&'static str, &'static str); 1] {
    match protocol {
        Protocol::Connect => [("connect-timeout-ms", connect_ms)],
        _ => [("grpc-timeout", grpc)],
    }
}

/// Identical cache misses wait for one backend call, each within its own
/// deadline; and a call that ran out of its own, shorter deadline is no
/// answer for a request that waited for it with time left.
#[tokio::test]
async fn a_cache_waiter_keeps_its_own_deadline_on_every_protocol() {
    use std::time::{Duration, Instant};
    let h = gateway("", "cache = { ttl = \"60s\" }").await;
    for (i, protocol) in EVERY_PROTOCOL.into_iter().enumerate() {
        // Each protocol its own keys: a reply another one stored is a hit.
        let millis = 900 + 2 * i as i64;
        let first = call(&h, protocol, &[], "", Some(millis));
        let waiter = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let asked = Instant::now();
            let s = call(
                &h,
                protocol,
                &deadline(protocol, "200", "200m"),
                "",
                Some(millis),
            )
            .await;
            (s, asked.elapsed())
        };
        let (first, (waiter, waited)) = tokio::join!(first, waiter);
        assert_eq!(first.code, 0, "{protocol:?}: {}", first.message);
        assert_eq!(waiter.code, 4, "{protocol:?}: {}", waiter.message);
        assert!(
            waited < Duration::from_millis(650),
            "{protocol:?}: the waiter waited {waited:?}, past its own 200 ms"
        );

        let millis = millis + 1;
        let short = deadline(protocol, "200", "200m");
        let first = call(&h, protocol, &short, "", Some(millis));
        let waiter = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            call(&h, protocol, &[], "", Some(millis)).await
        };
        let (first, waiter) = tokio::join!(first, waiter);
        assert_eq!(first.code, 4, "{protocol:?}: {}", first.message);
        assert_eq!(waiter.code, 0, "{protocol:?}: {}", waiter.message);
    }
}

#[tokio::test]
async fn a_client_deadline_shortens_the_call_on_every_protocol() {
    let h = gateway("", "").await;
    for protocol in EVERY_PROTOCOL {
        let s = call(&h, protocol, &deadline(protocol, "700", "700m"), "", None).await;
        assert_eq!(s.code, 0, "{protocol:?}");
        let sent = s.metadata["grpc-timeout"].as_str().unwrap().to_owned();
        let sent = portico::headers::parse_grpc_timeout(&sent).unwrap();
        assert!(
            sent <= std::time::Duration::from_millis(700),
            "{protocol:?} sent {sent:?}"
        );

        let short = &deadline(protocol, "100", "100m");
        // The backend's own timer for the `grpc-timeout` it was sent races
        // the gateway's; whichever fires first, the client sees its deadline.
        for _ in 0..4 {
            let s = call(&h, protocol, short, "", Some(3000)).await;
            assert_eq!(s.code, 4, "{protocol:?}: {}", s.message);
        }
    }
}

/// With `metadata.honour_client_timeout = false` only the route's
/// timeout counts, whichever protocol sent a shorter one; a malformed
/// value is still refused.
#[tokio::test]
async fn a_client_deadline_counts_for_nothing_when_not_honoured_on_every_protocol() {
    let h = gateway(
        "[metadata]\nhonour_client_timeout = false\n",
        "timeout = \"2s\"",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        let short = &deadline(protocol, "100", "100m");
        let s = call(&h, protocol, short, "", None).await;
        assert_eq!(s.code, 0, "{protocol:?}: {}", s.message);
        let sent = s.metadata["grpc-timeout"].as_str().unwrap().to_owned();
        let sent = portico::headers::parse_grpc_timeout(&sent).unwrap();
        assert!(
            sent > std::time::Duration::from_secs(1) && sent <= std::time::Duration::from_secs(2),
            "{protocol:?}: the backend was sent the route's timeout, not the client's: {sent:?}"
        );
        let s = call(&h, protocol, short, "", Some(400)).await;
        assert_eq!(
            s.code, 0,
            "{protocol:?} outlives its own deadline: {}",
            s.message
        );
        if !matches!(protocol, Protocol::WebSocket | Protocol::Mcp) {
            let bad = &deadline(protocol, "abc", "abc");
            let s = call(&h, protocol, bad, "", None).await;
            assert_eq!(s.code, 3, "{protocol:?}: {}", s.message);
        }
    }
}

#[tokio::test]
async fn a_malformed_deadline_is_refused_on_every_protocol() {
    let h = gateway("", "").await;
    for protocol in EVERY_PROTOCOL {
        if matches!(protocol, Protocol::WebSocket | Protocol::Mcp) {
            // Below: a WebSocket handshake is refused as HTTP, a call in a
            // session by its frame; MCP answers a JSON-RPC error.
            continue;
        }
        let bad: &[&[(&str, &str)]] = match protocol {
            Protocol::Connect => &[
                &[("connect-timeout-ms", "abc")],
                &[("connect-timeout-ms", "-5")],
                &[("connect-timeout-ms", "99999999999")],
                // Twice: which one was meant is anyone's guess.
                &[
                    ("connect-timeout-ms", "5000"),
                    ("connect-timeout-ms", "100"),
                ],
            ],
            _ => &[
                &[("grpc-timeout", "abc")],
                &[("grpc-timeout", "123456789S")],
                // A sign is no digit, though Rust's integer parser takes it.
                &[("grpc-timeout", "+1S")],
                &[("grpc-timeout", "5S"), ("grpc-timeout", "100m")],
            ],
        };
        for headers in bad {
            let s = call(&h, protocol, headers, "", None).await;
            assert_eq!(s.code, 3, "{protocol:?} {headers:?}: {}", s.message);
            assert!(
                s.message.contains(headers[0].0),
                "{protocol:?}: the message names the header: {}",
                s.message
            );
        }
    }
    // A WebSocket handshake with a malformed deadline gets the HTTP answer.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/v1/probe/headers", h.gateway.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("grpc-timeout", "abc".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), http::StatusCode::BAD_REQUEST)
        }
        other => panic!("the handshake was not refused: {other:?}"),
    }
    // A call of a session with one in its `open` metadata is refused by its frame.
    let frame = open_frame_answer(&h, json!({"grpc-timeout": "soon"})).await;
    assert_eq!(frame["id"], "a", "{frame}");
    assert_eq!(frame["error"]["code"], 3, "{frame}");
    // Named as the client wrote it: a field of the call's metadata.
    assert!(
        frame["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metadata.grpc-timeout"),
        "{frame}"
    );
    let refused = mcp_tools_list(&h, &[("grpc-timeout", "abc")]).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("grpc-timeout")),
        "{refused}"
    );
    assert_eq!(
        h.backends.probe.calls(),
        0,
        "no refused call reached the backend"
    );
}

#[tokio::test]
async fn an_untrusted_client_cannot_claim_an_address_on_any_protocol() {
    let h = gateway("[websocket]\nallowed_origins = [\"*\"]\n", "").await;
    for protocol in EVERY_PROTOCOL {
        let s = call(
            &h,
            protocol,
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=1.2.3.4;proto=https"),
            ],
            "",
            None,
        )
        .await;
        assert_eq!(s.metadata["x-forwarded-for"], "127.0.0.1", "{protocol:?}");
        assert_eq!(s.metadata["x-forwarded-proto"], "http", "{protocol:?}");
        assert!(
            !s.metadata.contains_key("forwarded"),
            "{protocol:?}: {:?}",
            s.metadata
        );
    }
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_that_rate_limits_count() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "")
            .replacen(
                "admin = \"127.0.0.1:0\"\n",
                "admin = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
                1,
            )
            .with_route_keys(
                "Probe",
                "rate_limit = { requests_per_second = 0.001, burst = 1, key = \"client_ip\" }",
            )
    })
    .await;
    for (i, protocol) in EVERY_PROTOCOL.into_iter().enumerate() {
        let client = format!("198.51.100.{i}");
        let s = call(&h, protocol, &[("x-forwarded-for", &client)], "", None).await;
        assert_eq!(s.code, 0, "{protocol:?}");
        assert_eq!(
            s.metadata["x-forwarded-for"],
            format!("{client}, 127.0.0.1"),
            "{protocol:?}"
        );
        // The same client again, through the same proxy: its own bucket is empty.
        let s = call(&h, protocol, &[("x-forwarded-for", &client)], "", None).await;
        assert_eq!(s.code, 8, "{protocol:?}");
    }
}

#[tokio::test]
async fn a_route_that_names_audiences_refuses_a_token_without_one() {
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\naudiences = [\"probe-api\"]\n"
    );
    let h = gateway(&sections, "auth = \"users\"").await;
    let no_aud = format!("Bearer {}", token("probe"));
    for protocol in EVERY_PROTOCOL {
        let s = call(&h, protocol, &[("authorization", &no_aud)], "", None).await;
        assert_eq!(s.code, 16, "{protocol:?}");
    }
    assert_eq!(h.backends.probe.calls(), 0);
}

#[tokio::test]
async fn a_header_value_grpc_metadata_cannot_carry_is_not_forwarded() {
    let h = gateway("", "").await;
    for protocol in EVERY_PROTOCOL {
        let mut headers = vec![("x-city", "Zürich"), ("x-plain", "ok")];
        if protocol == Protocol::Grpc {
            // tonic will not send it; a raw HTTP/2 client will.
            headers.push(("grpc-timeout", "30S"));
        }
        let s = call(&h, protocol, &headers, "", None).await;
        assert_eq!(s.code, 0, "{protocol:?}: the call itself goes through");
        assert_eq!(s.metadata["x-plain"], "ok", "{protocol:?}");
        assert!(
            !s.metadata.contains_key("x-city"),
            "{protocol:?}: a non-ASCII value reached gRPC metadata: {:?}",
            s.metadata
        );
    }
}

#[tokio::test]
async fn binary_metadata_that_is_not_base64_is_refused_on_every_protocol() {
    let h = gateway("", "").await;
    for protocol in [Protocol::Rest, Protocol::GrpcWeb, Protocol::Connect] {
        let s = call(&h, protocol, &[("x-trace-bin", "AAEC, AAECAw==")], "", None).await;
        assert_eq!(s.code, 0, "{protocol:?}: {}", s.message);
        // Two values in one field reach the backend as two fields (the
        // demo backend shows the last), each one base64 value as gRPC
        // libraries read a `-bin` field.
        assert_eq!(s.metadata["x-trace-bin"], "AAECAw==", "{protocol:?}");
        let s = call(&h, protocol, &[("x-trace-bin", "not base64!")], "", None).await;
        assert_eq!(s.code, 3, "{protocol:?}: {}", s.message);
        assert!(
            s.message.contains("x-trace-bin"),
            "{protocol:?}: {}",
            s.message
        );
    }
    // A gRPC library encodes binary metadata itself: the raw field is sent
    // as a client that did not would send it.
    use prost::Message as _;
    let message = portico::demo::backends::pb::HeadersRequest {}.encode_to_vec();
    let r = h
        .client
        .as_http2()
        .send(
            http::Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &[
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("x-trace-bin", "not base64!"),
            ],
            support::frame_bytes(0, &message),
        )
        .await;
    assert_eq!(r.header("grpc-status"), Some("3"));
    assert!(r
        .header("grpc-message")
        .unwrap_or("")
        .contains("x-trace-bin"));
    let calls = h.backends.probe.calls();
    // MCP's edge refuses it before the JSON-RPC call.
    let refused = mcp_tools_list(&h, &[("x-trace-bin", "%%")]).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-trace-bin")),
        "{refused}"
    );
    // Answered once the body is read: with the request's id.
    assert_eq!(refused["id"], 1, "{refused}");
    // A WebSocket call's metadata is named as the client wrote it.
    let frame = open_frame_answer(&h, json!({"x-trace-bin": "???"})).await;
    assert_eq!(frame["error"]["code"], 3, "{frame}");
    assert!(
        frame["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metadata.x-trace-bin"),
        "{frame}"
    );
    assert_eq!(
        h.backends.probe.calls(),
        calls,
        "no refused call reached the backend"
    );
}

/// A call's `open` metadata joins its handshake's headers under the bounds
/// every request's header fields have, and cannot say who the client is:
/// the calls of a session are the connection's client, as its handshake
/// found it. Refused by the call's frame; nothing reaches the backend.
#[tokio::test]
async fn a_sessions_call_metadata_is_bounded_and_cannot_name_the_client() {
    let h = gateway("", "").await;
    let many: serde_json::Map<String, serde_json::Value> =
        (0..150).map(|i| (format!("x-m-{i}"), json!("v"))).collect();
    for (metadata, says) in [
        (
            json!({ "x-big": "x".repeat(70 * 1024) }),
            "the header fields of the call (its open metadata and its handshake's headers) are",
        ),
        (
            serde_json::Value::Object(many),
            "over server.limits.max_header_count (100)",
        ),
        (
            json!({ "x-forwarded-for": "198.51.100.7" }),
            "metadata.x-forwarded-for: names a forwarding header",
        ),
        (
            json!({ "forwarded": "for=198.51.100.7" }),
            "metadata.forwarded: names a forwarding header",
        ),
    ] {
        let frame = open_frame_answer(&h, metadata).await;
        assert_eq!(frame["id"], "a", "{frame}");
        assert_eq!(frame["error"]["code"], 3, "{frame}");
        let message = frame["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    }
    assert_eq!(
        h.backends.probe.calls(),
        0,
        "no refused call reached the backend"
    );
}

/// Metadata a backend would refuse by failing the HTTP/2 connection it
/// shares with other calls is never sent: the call is refused on every
/// protocol, and another client's call in flight on that connection ends
/// well.
#[tokio::test]
async fn metadata_over_what_the_backend_takes_is_refused_and_harms_no_other_call() {
    let h = gateway("[websocket]\nallowed_origins = [\"*\"]\n", "").await;
    let pad = "p".repeat(20_000);
    let in_flight = call(&h, Protocol::Grpc, &[], "", Some(1500));
    let refused = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut seen = Vec::new();
        for protocol in EVERY_PROTOCOL {
            seen.push((
                protocol,
                call(&h, protocol, &[("x-pad", &pad)], "", None).await,
            ));
        }
        seen
    };
    let (in_flight, refused) = tokio::join!(in_flight, refused);
    for (protocol, s) in refused {
        assert_eq!(s.code, 3, "{protocol:?}: {}", s.message);
        assert!(
            s.message
                .contains("over upstreams.demo.max_request_header_bytes (16384)"),
            "{protocol:?}: {}",
            s.message
        );
        assert!(
            s.metadata.is_empty(),
            "{protocol:?}: the backend got nothing"
        );
    }
    assert_eq!(in_flight.code, 0, "{}", in_flight.message);
    // Under the bound, the same header goes through.
    let fine = call(&h, Protocol::Rest, &[("x-pad", &pad[..8000])], "", None).await;
    assert_eq!(fine.code, 0, "{}", fine.message);
    // Just under the bound by the metadata alone, over it with the fields
    // the gateway writes beside it (the pseudo-headers, content-type...),
    // which the backend counts too: refused as the gateway's, never the
    // backend's 431.
    let close = call(&h, Protocol::Rest, &[("x-pad", &pad[..15_800])], "", None).await;
    assert_eq!(close.code, 3, "{}", close.message);
    assert!(
        close
            .message
            .contains("over upstreams.demo.max_request_header_bytes (16384)"),
        "{}",
        close.message
    );
}

/// The first frame a WebSocket session in the JSON dialect gets for an
/// `open` of `Probe.Headers` with `metadata`.
/// An MCP `tools/list` (id 1) with `headers` besides its JSON content
/// type: the JSON-RPC reply.
async fn mcp_tools_list(h: &Harness, headers: &[(&str, &str)]) -> serde_json::Value {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    h.client
        .send(
            http::Method::POST,
            "/mcp",
            &all,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        )
        .await
        .json()
}

async fn open_frame_answer(h: &Harness, metadata: serde_json::Value) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws", h.gateway.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let open = json!({"id": "a", "open": "/portico.demo.v1.Probe/Headers",
                      "metadata": metadata, "message": {}});
    ws.send(Message::text(open.to_string())).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                break serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap()
            }
            Some(Ok(_)) => continue,
            other => panic!("no frame: {other:?}"),
        }
    }
}

/// A protocol, its client, the headers and body, and whether it answers
/// with `grpc-status`.
type ContentTypeRow<'a> = (
    &'a str,
    &'a support::HttpClient,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    bool,
);

/// A body has one type: two different `Content-Type` fields are refused at
/// the edge on every protocol that has one, each in its own terms, and
/// reach no backend; the same type twice is one.
#[tokio::test]
async fn two_different_content_types_or_origins_are_refused_on_every_protocol() {
    use prost::Message as _;
    let h = gateway("", "").await;
    let message = portico::demo::backends::pb::HeadersRequest {}.encode_to_vec();
    let framed = support::frame_bytes(0, &message);
    let http2 = h.client.as_http2();
    let probe = "/portico.demo.v1.Probe/Headers";
    let rows: [ContentTypeRow; 4] = [
        (
            "REST",
            &h.client,
            vec![
                ("content-type", "application/json"),
                ("content-type", "application/xml"),
            ],
            b"{}".to_vec(),
            false,
        ),
        (
            "Connect",
            &h.client,
            vec![
                ("content-type", "application/json"),
                ("content-type", "application/proto"),
                ("connect-protocol-version", "1"),
            ],
            b"{}".to_vec(),
            false,
        ),
        (
            "gRPC-Web",
            &h.client,
            vec![
                ("content-type", "application/grpc-web+proto"),
                ("content-type", "application/json"),
            ],
            framed.clone(),
            true,
        ),
        (
            "gRPC",
            &http2,
            vec![
                ("content-type", "application/grpc"),
                ("content-type", "application/json"),
                ("te", "trailers"),
            ],
            framed.clone(),
            true,
        ),
    ];
    for (protocol, client, headers, body, grpc) in rows {
        let path = if protocol == "REST" {
            "/v1/probe/headers"
        } else {
            probe
        };
        let method = if protocol == "REST" {
            http::Method::GET
        } else {
            http::Method::POST
        };
        let r = client
            .send(method.clone(), path, &headers, body.clone())
            .await;
        let message = if grpc {
            assert_eq!(
                r.header("grpc-status"),
                Some("3"),
                "{protocol}: {:?} {:?}",
                r.status,
                r.headers
            );
            r.header("grpc-message").unwrap_or_default().to_owned()
        } else {
            assert_eq!(r.status, 400, "{protocol}: {}", r.text());
            r.json()["message"].as_str().unwrap_or_default().to_owned()
        };
        assert!(
            message.contains("content-type") && message.contains("more than once"),
            "{protocol}: {message}"
        );
        // The same type twice is one type.
        let twice: Vec<(&str, &str)> = headers
            .iter()
            .map(|&(k, v)| {
                if k == "content-type" {
                    (k, headers[0].1)
                } else {
                    (k, v)
                }
            })
            .collect();
        let r = client.send(method, path, &twice, body).await;
        if protocol == "gRPC-Web" {
            // The status is in the body's trailer frame.
            let body = String::from_utf8_lossy(&r.body).into_owned();
            assert!(body.contains("grpc-status: 0"), "{protocol}: {body:?}");
        } else if grpc {
            assert_eq!(
                r.trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
                Some("0"),
                "{protocol}: {:?} {:?}",
                r.status,
                r.trailers
            );
        } else {
            assert_eq!(r.status, 200, "{protocol}: {}", r.text());
        }
    }
    // MCP answers in JSON-RPC, with the request's id.
    let refused = mcp_tools_list(&h, &[("content-type", "text/plain")]).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("content-type") && m.contains("more than once")),
        "{refused}"
    );
    assert_eq!(refused["id"], 1, "{refused}");
    assert_eq!(h.backends.probe.calls(), 4, "only the calls with one type");

    // A request comes from one origin: two are refused before the
    // cross-origin check reads either, a WebSocket handshake included.
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[
                ("origin", "http://a.example"),
                ("origin", "http://b.example"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("origin"), "{}", r.text());
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/v1/probe/headers", h.gateway.addr)
        .into_client_request()
        .unwrap();
    for origin in ["http://a.example", "http://b.example"] {
        req.headers_mut().append("origin", origin.parse().unwrap());
    }
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400),
        "{refused:?}"
    );
    assert_eq!(h.backends.probe.calls(), 4);
}

/// A header named twice is two fields, handed on in the order the client
/// wrote them; the spaces around a value are not part of it. A WebSocket
/// call's `open` metadata is read the same way: in the order written (not
/// sorted by name), each value trimmed as HTTP trims a header's.
#[tokio::test]
async fn a_name_given_twice_reaches_the_backend_in_the_order_written_on_every_protocol() {
    let h = gateway("", "").await;
    // The backend reports the last value of a name it got more than once.
    for protocol in EVERY_PROTOCOL {
        let s = call(
            &h,
            protocol,
            &[("x-tag", "first"), ("x-tag", "second")],
            "",
            None,
        )
        .await;
        assert_eq!(s.code, 0, "{protocol:?}: {}", s.message);
        assert_eq!(s.metadata["x-tag"], "second", "{protocol:?}");
    }
    // Over HTTP/1.1 the parser drops the spaces around a value.
    let padded = call(&h, Protocol::Rest, &[("x-tag", " \tpadded\t ")], "", None).await;
    assert_eq!(padded.metadata["x-tag"], "padded");
    for (metadata, last) in [
        (json!({"x-tag": "first", "X-Tag": "second"}), "second"),
        (json!({"X-Tag": "first", "x-tag": "second"}), "second"),
        (json!({"x-tag": " \tpadded\t "}), "padded"),
    ] {
        let result = open_frame_result(&h, metadata.clone()).await;
        assert_eq!(result["metadata"]["x-tag"], last, "{metadata}: {result}");
    }
}

/// More `open` metadata entries than the header-count limit are refused
/// before any becomes a header (a header map holds at most 32,768: more
/// would end the session's task), and the session goes on.
#[tokio::test]
async fn open_metadata_past_the_header_count_is_refused_before_it_is_built() {
    let h = gateway("", "").await;
    let mut many = serde_json::Map::new();
    for i in 0..40_000 {
        many.insert(format!("x-{i}"), json!(""));
    }
    let frame = open_frame_answer(&h, serde_json::Value::Object(many)).await;
    assert_eq!(frame["id"], "a", "{frame}");
    assert_eq!(frame["error"]["code"], 3, "{frame}");
    let message = frame["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("has 40000 header fields, over server.limits.max_header_count (100)"),
        "{message}"
    );
    assert_eq!(h.backends.probe.calls(), 0);
    let fine = open_frame_result(&h, json!({"x-tag": "one"})).await;
    assert_eq!(fine["metadata"]["x-tag"], "one", "{fine}");
}

/// The `result` of an `open` of `Probe.Headers` with `metadata`, or the
/// frame that refused it.
async fn open_frame_result(h: &Harness, metadata: serde_json::Value) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws", h.gateway.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let open = json!({"id": "a", "open": "/portico.demo.v1.Probe/Headers",
                      "metadata": metadata, "message": {}});
    ws.send(Message::text(open.to_string())).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let frame: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if let Some(result) = frame.get("result") {
                    break result.clone();
                }
                if frame.get("error").is_some() || frame.get("status").is_some() {
                    break frame;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("no frame: {other:?}"),
        }
    }
}

/// A content type holding a byte no media type has is no type at all: it
/// is refused at the edge with a 415 that shows it, on every protocol,
/// never read as an absent type (which REST and MCP read as JSON).
#[tokio::test]
async fn a_content_type_that_is_not_ascii_is_refused_on_every_protocol() {
    let h = gateway("", "").await;
    let search = r#"{"query":"x"}"#;
    let mcp = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    for (protocol, target, content_type, body) in [
        ("REST", "/v1/books:search", &b"text/xml\xe9"[..], search),
        ("REST", "/v1/books:search", b"\xff", search),
        (
            "Connect",
            "/portico.demo.v1.Probe/Headers",
            b"application/proto\xe9",
            "{}",
        ),
        (
            "gRPC-Web",
            "/portico.demo.v1.Probe/Headers",
            b"application/grpc-web\xe9",
            "{}",
        ),
        ("MCP", "/mcp", b"application/json; x=\xe9", mcp),
    ] {
        let mut request = format!(
            "POST {target} HTTP/1.1\r\nhost: g\r\nconnection: close\r\ncontent-length: {}\r\ncontent-type: ",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(content_type);
        request.extend_from_slice(format!("\r\n\r\n{body}").as_bytes());
        let answer = support::http1_exchange(h.gateway.addr, &request).await;
        assert!(
            answer.starts_with("HTTP/1.1 415"),
            "{protocol} {content_type:?}: {answer}"
        );
        let shown = content_type
            .escape_ascii()
            .to_string()
            .replace('\\', "\\\\");
        assert!(
            answer.contains(&format!(
                "content type \\\"{shown}\\\" (its bytes outside ASCII written as \\\\xNN) is not a media type"
            )),
            "{protocol}: {answer}"
        );
    }
    assert_eq!(h.backends.probe.calls(), 0, "no backend was called");
}
