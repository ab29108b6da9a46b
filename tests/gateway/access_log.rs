//! The access log: one JSON line per call on every protocol (and one per
//! WebSocket session), read back from the file and checked field by field;
//! failures always logged, successes sampled; a route can turn it off; the
//! text format escapes what clients wrote.

use crate::support;

use serde_json::Value;
use support::protocols::{call, Protocol, EVERY_PROTOCOL};
use support::{fixture, Harness, RouteKeys};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn log_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-access-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("access.log")
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn gateway(path: &std::path::Path, access_log: &str, route_extra: &str) -> Harness {
    let sections = format!(
        "[access_log]\npath = \"{}\"\n{access_log}\n\n\
         [authenticators.partners]\nkind = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\n",
        path.display(),
        fixture("api_keys.toml")
    );
    Harness::start_with(&sections, route_extra).await
}

/// Waits until `want` lines are in the log.
async fn wait_for(path: &std::path::Path, want: usize) -> Vec<Value> {
    support::eventually(|| lines(path).len() >= want).await;
    lines(path)
}

/// A gRPC, gRPC-Web or Connect call refused for its HTTP method or
/// version is a call its client made: one line each, with its protocol,
/// method and status, as REST's `405` has.
#[tokio::test]
async fn calls_refused_for_their_http_method_or_version_are_logged_as_calls() {
    let path = log_path("method-refusals");
    let h = gateway(&path, "", "").await;
    let method = "/portico.demo.v1.Probe/Headers";
    // What is sent (protocol, HTTP method, headers) and what it gets
    // (HTTP status, gRPC code).
    type Refused<'a> = (&'a str, http::Method, Vec<(&'a str, &'a str)>, u16, i64);
    let cases: [Refused; 4] = [
        (
            "connect",
            http::Method::PUT,
            vec![
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
            405,
            12,
        ),
        // A protocol version the gateway does not speak: refused on its
        // route, as a bad message is.
        (
            "connect",
            http::Method::POST,
            vec![
                ("content-type", "application/json"),
                ("connect-protocol-version", "2"),
            ],
            400,
            3,
        ),
        (
            "grpc-web",
            http::Method::GET,
            vec![("content-type", "application/grpc-web+proto")],
            200,
            12,
        ),
        // gRPC needs HTTP/2; this client speaks HTTP/1.1.
        (
            "grpc",
            http::Method::POST,
            vec![("content-type", "application/grpc")],
            505,
            12,
        ),
    ];
    for (protocol, verb, headers, status, _) in &cases {
        let r = h.client.send(verb.clone(), method, headers, "").await;
        assert_eq!(r.status.as_u16(), *status, "{protocol}: {}", r.text());
    }
    let all = wait_for(&path, cases.len()).await;
    for (protocol, verb, _, status, code) in &cases {
        let mine: Vec<&Value> = all
            .iter()
            .filter(|l| l["protocol"] == *protocol && l["http_method"] == verb.as_str())
            .collect();
        assert_eq!(
            mine.len(),
            1,
            "one line for the one {protocol} call: {all:#?}"
        );
        let line = mine[0];
        assert_eq!(line["kind"], "call", "{line}");
        assert_eq!(line["http_method"], verb.as_str(), "{line}");
        assert_eq!(line["http_status"], *status, "{line}");
        assert_eq!(line["grpc_code"], *code, "{line}");
        assert_eq!(line["method"], "portico.demo.v1.Probe/Headers", "{line}");
        assert_eq!(line["attempts"], 0, "{line}");
    }
}

#[tokio::test]
async fn every_call_writes_one_json_line_with_what_happened_on_every_protocol() {
    let path = log_path("fields");
    let h = gateway(&path, "", "auth = \"partners\"").await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT}-01");
    for protocol in EVERY_PROTOCOL {
        let id = format!("ok-{}", protocol.name());
        let seen = call(
            &h,
            protocol,
            &[
                ("x-api-key", "acme-key-123"),
                ("x-request-id", &id),
                ("traceparent", &traceparent),
            ],
            "",
            None,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {seen:?}");
        // A request of some bytes (Sleep's), refused before any backend.
        let id = format!("denied-{}", protocol.name());
        let seen = call(&h, protocol, &[("x-request-id", &id)], "", Some(1)).await;
        assert_eq!(seen.code, 16, "{protocol:?}: {seen:?}");
    }
    // Two calls per protocol, and the WebSocket's two sessions.
    let expected = 2 * EVERY_PROTOCOL.len();
    let all = wait_for(&path, expected + 2).await;
    assert_eq!(all.len(), expected + 2, "{all:#?}");
    let calls: Vec<&Value> = all.iter().filter(|l| l["kind"] == "call").collect();
    assert_eq!(calls.len(), expected, "{all:#?}");
    for protocol in EVERY_PROTOCOL {
        let name = protocol.name();
        let mine: Vec<&&Value> = calls.iter().filter(|l| l["protocol"] == name).collect();
        assert_eq!(mine.len(), 2, "{name}: {all:#?}");
        let ok = mine
            .iter()
            .find(|l| l["grpc_code"] == 0)
            .unwrap_or_else(|| panic!("{name}: no successful call in {mine:#?}"));
        let denied = mine
            .iter()
            .find(|l| l["grpc_code"] == 16)
            .unwrap_or_else(|| panic!("{name}: no refused call in {mine:#?}"));

        assert_eq!(ok["method"], "portico.demo.v1.Probe/Headers", "{name}");
        assert_eq!(ok["grpc_status"], "OK", "{name}");
        assert_eq!(ok["upstream"], "demo", "{name}");
        assert_eq!(ok["endpoint"], h.backend_addr.to_string(), "{name}");
        assert_eq!(ok["attempts"], 1, "{name}");
        assert_eq!(ok["principal"], "acme", "{name}");
        assert_eq!(ok["trace_id"], TRACE_ID, "{name}");
        assert_eq!(ok["parent_span_id"], PARENT, "{name}");
        assert_eq!(ok["client"], "127.0.0.1", "{name}");
        assert!(
            ok["error"].is_null() && ok["origin"].is_null(),
            "{name}: {ok}"
        );
        assert!(ok["cache"].is_null(), "{name}: {ok}");
        assert_eq!(ok["bytes_in"], 0, "{name}: an empty request message");
        assert!(ok["bytes_out"].as_u64().unwrap() > 0, "{name}: {ok}");
        let total = ok["duration_ms"].as_f64().unwrap();
        let upstream = ok["upstream_ms"].as_f64().unwrap();
        let policies = ok["policies_ms"].as_f64().unwrap();
        assert!(upstream > 0.0 && upstream <= total, "{name}: {ok}");
        assert!(policies >= 0.0 && policies <= total, "{name}: {ok}");
        assert!(
            ok["timestamp"].as_str().unwrap().starts_with("20"),
            "{name}: {ok}"
        );

        assert_eq!(denied["grpc_status"], "UNAUTHENTICATED", "{name}");
        assert_eq!(denied["origin"], "client", "{name}");
        assert!(
            denied["error"].as_str().unwrap().contains("x-api-key"),
            "{name}: {denied}"
        );
        assert_eq!(denied["attempts"], 0, "{name}: never reached the backend");
        assert_eq!(denied["bytes_in"], 0, "{name}: no backend received it");
        assert!(
            denied["endpoint"].is_null() && denied["upstream_ms"].is_null(),
            "{name}"
        );
        assert!(denied["principal"].is_null(), "{name}");

        match protocol {
            Protocol::WebSocket => {
                // A call of a session: its id is the session's with its number.
                assert!(ok["http_status"].is_null(), "{ok}");
                assert!(ok["http_method"].is_null(), "{ok}");
                let session = ok["session"].as_str().unwrap();
                assert!(
                    ok["request_id"].as_str().unwrap().starts_with(session),
                    "{ok}"
                );
                // Called by name: the method's automatic binding.
                assert_eq!(ok["route"], "POST /portico.demo.v1.Probe/Headers");
            }
            Protocol::Rest => {
                assert_eq!(ok["request_id"], format!("ok-{name}"));
                assert_eq!(denied["request_id"], format!("denied-{name}"));
                assert_eq!(ok["http_status"], 200);
                assert_eq!(denied["http_status"], 401);
                assert_eq!(ok["http_method"], "GET");
                assert_eq!(ok["path"], "/v1/probe/headers");
                assert_eq!(ok["route"], "GET /v1/probe/headers");
            }
            Protocol::Connect => {
                assert_eq!(ok["request_id"], format!("ok-{name}"));
                assert_eq!(ok["http_status"], 200);
                assert_eq!(denied["http_status"], 401);
                assert_eq!(ok["path"], "/portico.demo.v1.Probe/Headers");
            }
            Protocol::Mcp => {
                assert_eq!(ok["request_id"], format!("ok-{name}"));
                // A failed tool call is a result too: HTTP 200 either way.
                assert_eq!(ok["http_status"], 200);
                assert_eq!(denied["http_status"], 200);
                assert_eq!(ok["path"], "/mcp");
                assert_eq!(ok["route"], "tool Probe_Headers");
            }
            Protocol::Grpc | Protocol::GrpcWeb => {
                assert_eq!(ok["request_id"], format!("ok-{name}"));
                // gRPC answers every call with HTTP 200; the code is the status.
                assert_eq!(ok["http_status"], 200);
                assert_eq!(denied["http_status"], 200);
                assert_eq!(ok["path"], "/portico.demo.v1.Probe/Headers");
            }
        }
    }
    let sessions: Vec<&Value> = all.iter().filter(|l| l["kind"] == "session").collect();
    assert_eq!(sessions.len(), 2, "{all:#?}");
    for s in sessions {
        assert_eq!(s["protocol"], "websocket");
        assert_eq!(s["http_status"], 101, "{s}");
        assert_eq!(s["calls"], 1, "{s}");
        assert_eq!(s["path"], "/ws");
        // The test's client leaves without a close frame: no code.
        assert!(s["close_code"].is_null(), "{s}");
    }
}

/// A request the shared edge refuses once it knows the protocol (here a
/// foreign `Origin`) is a call its client
/// made: one line on every protocol, as an adapter's own refusal has (a
/// WebSocket handshake's is its session's).
#[tokio::test]
async fn refusals_at_the_shared_edge_are_logged_on_every_protocol() {
    let path = log_path("edge-refusals");
    let sections = format!(
        "[access_log]\npath = \"{}\"\n[cors]\nallowed_origins = [\"https://app.example\"]\n",
        path.display()
    );
    let h = Harness::start_with(&sections, "").await;
    // `/mcp` answers a foreign origin itself, as a JSON-RPC error with its
    // own line (the MCP tests'); every other protocol's is the edge's.
    let edge_refused: Vec<Protocol> = EVERY_PROTOCOL
        .into_iter()
        .filter(|p| *p != Protocol::Mcp)
        .collect();
    for protocol in edge_refused.iter().copied() {
        let id = format!("foreign-{}", protocol.name());
        let headers = [("origin", "https://evil.example"), ("x-request-id", &id)];
        let seen = call(&h, protocol, &headers, "", None).await;
        assert_eq!(seen.code, 7, "{protocol:?}: {seen:?}");
    }
    let logged = |all: &[Value], protocol: Protocol| {
        all.iter().any(|l| {
            // gRPC answers HTTP 200 with its status; the others a 403.
            let status = if matches!(protocol, Protocol::Grpc | Protocol::GrpcWeb) {
                200
            } else {
                403
            };
            l["protocol"] == protocol.name()
                && l["http_status"] == status
                && l["grpc_status"] == "PERMISSION_DENIED"
        })
    };
    support::eventually(|| {
        let all = lines(&path);
        edge_refused.iter().all(|p| logged(&all, *p))
    })
    .await;
    let all = lines(&path);
    for protocol in edge_refused {
        assert!(logged(&all, protocol), "{protocol:?}: {all:#?}");
    }
}

/// A backend that refuses connections never received the request: every
/// protocol's line names the endpoint tried and says 0 bytes in.
#[tokio::test]
async fn a_call_no_backend_took_logs_no_bytes_in_on_every_protocol() {
    let path = log_path("refused");
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let sections = format!("[access_log]\npath = \"{}\"\n", path.display());
    let h = Harness::start_with_config(|_| support::config_text(dead, &sections, "")).await;
    for protocol in EVERY_PROTOCOL {
        // Sleep's request message has bytes: 1 ms.
        let seen = call(&h, protocol, &[], "", Some(1)).await;
        assert_eq!(seen.code, 14, "{protocol:?}: {seen:?}");
    }
    // Every protocol's call line (a WebSocket session's line comes too).
    let calls = |all: &[Value]| all.iter().filter(|l| l["kind"] == "call").count();
    support::eventually(|| calls(&lines(&path)) >= EVERY_PROTOCOL.len()).await;
    let all = lines(&path);
    for protocol in EVERY_PROTOCOL {
        let name = protocol.name();
        let line = all
            .iter()
            .find(|l| l["kind"] == "call" && l["protocol"] == name)
            .unwrap_or_else(|| panic!("{name}: no call line in {all:#?}"));
        assert_eq!(line["grpc_status"], "UNAVAILABLE", "{name}: {line}");
        assert_eq!(line["endpoint"], dead.to_string(), "{name}: {line}");
        assert!(line["attempts"].as_u64() >= Some(1), "{name}: {line}");
        assert_eq!(line["bytes_in"], 0, "{name}: no backend took it: {line}");
    }
}

#[tokio::test]
async fn failures_are_always_logged_successes_as_sampled_and_a_route_can_turn_it_off() {
    let path = log_path("sampling");
    let h = gateway(&path, "sample = 0.0", "auth = \"partners\"").await;
    for protocol in EVERY_PROTOCOL {
        call(&h, protocol, &[("x-api-key", "acme-key-123")], "", None).await;
        call(&h, protocol, &[], "", None).await;
    }
    // A request no route matches is a failure too, logged without a method.
    assert_eq!(h.client.get("/v1/nowhere").await.status, 404);
    let all = wait_for(&path, EVERY_PROTOCOL.len() + 1).await;
    // Give a wrongly sampled success time to show up.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let all_after = lines(&path);
    assert_eq!(all.len(), all_after.len(), "{all_after:#?}");
    let calls: Vec<&Value> = all_after.iter().filter(|l| l["kind"] == "call").collect();
    assert_eq!(
        calls.len(),
        EVERY_PROTOCOL.len() + 1,
        "a refusal per protocol and the 404: {all_after:#?}"
    );
    assert!(calls.iter().all(|l| l["grpc_code"] != 0), "{calls:#?}");
    let not_found = calls.iter().find(|l| l["http_status"] == 404).unwrap();
    assert!(not_found["method"].is_null(), "{not_found}");
    assert_eq!(not_found["grpc_status"], "NOT_FOUND");

    let quiet_path = log_path("quiet");
    let quiet = gateway(&quiet_path, "", "access_log = false").await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(&quiet, protocol, &[], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}");
    }
    // Refused before the pipeline, on the quiet route: no line either,
    // nor for a method its path is not bound for (a 405), nor for one its
    // calls are refused by as calls (gRPC-Web by GET).
    let bad = quiet.client.get("/v1/probe/headers?unknown=1").await;
    assert_eq!(bad.status, 400);
    let wrong = quiet
        .client
        .send(http::Method::DELETE, "/v1/probe/headers", &[], "")
        .await;
    assert_eq!(wrong.status, 405);
    let by_get = quiet
        .client
        .send(
            http::Method::GET,
            "/portico.demo.v1.Probe/Headers",
            &[("content-type", "application/grpc-web+proto")],
            "",
        )
        .await;
    assert_eq!(by_get.header("grpc-status"), Some("12"));
    // A stream has no HEAD: its 405 is the route's too.
    let head = quiet
        .client
        .send(http::Method::HEAD, "/v1/feed?count=1", &[], "")
        .await;
    assert_eq!(head.status, 405);
    // A handshake on the route's path from a foreign page: refused before
    // the rest of it is read, still the quiet route's.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{}/v1/probe/headers", quiet.gateway.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{refused:?}"
    );
    quiet.client.get("/v1/nowhere").await;
    wait_for(&quiet_path, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let quiet_lines = lines(&quiet_path);
    // Only what no route owns, and the WebSocket session itself.
    assert!(
        quiet_lines
            .iter()
            .all(|l| l["http_status"] == 404 || l["kind"] == "session"),
        "{quiet_lines:#?}"
    );
    assert!(
        !quiet_lines.iter().any(|l| l["path"] == "/v1/probe/headers"),
        "{quiet_lines:#?}"
    );
}

#[tokio::test]
async fn the_text_format_is_one_escaped_line_per_call() {
    let path = log_path("text");
    let h = gateway(&path, "format = \"text\"", "").await;
    let r = h
        .client
        .get("/v1/probe/headers?x%0D%0AFORGED%1B%5B31m=1")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(h.client.get("/v1/probe/headers").await.status, 200);
    support::eventually(|| {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .count()
            >= 2
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let refused = lines.iter().find(|l| l.contains("-> 400")).expect(&text);
    assert!(refused.contains(" rest GET "), "{refused}");
    assert!(refused.contains("INVALID_ARGUMENT"), "{refused}");
    assert!(refused.contains(r"\r\nFORGED\u{1b}"), "{refused}");
    let ok = lines.iter().find(|l| l.contains("-> 200 OK")).expect(&text);
    assert!(
        ok.contains("method=\"portico.demo.v1.Probe/Headers\""),
        "{ok}"
    );
}

#[test]
fn a_bad_access_log_setting_is_named_with_its_key() {
    for (setting, key, reason) in [
        (
            "format = \"xml\"",
            "access_log.format",
            "\"json\" or \"text\"",
        ),
        ("sample = 1.5", "access_log.sample", "between 0.0 and 1.0"),
        ("path = \"\"", "access_log.path", "empty"),
    ] {
        let text = support::config_text(
            "127.0.0.1:1".parse().unwrap(),
            &format!("[access_log]\n{setting}\n"),
            "",
        );
        let err = portico::config::Config::from_toml(&text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains(reason),
            "{setting}: {err}"
        );
    }
}

/// An aggregate's line sums its calls' bytes as its backends received
/// them: a call the cache answered adds nothing, though the others went on.
#[tokio::test]
async fn an_aggregates_bytes_in_leaves_out_the_calls_the_cache_answered() {
    let path = log_path("aggregate-cache");
    let sections = format!(
        r#"[access_log]
path = "{}"

[[aggregates]]
path = "/v1/shelves/{{shelf}}/nap"

[[aggregates.calls]]
name = "shelf"
method = "portico.demo.v1.Library/GetShelf"
request = {{ shelf = "{{path.shelf}}" }}

[[aggregates.calls]]
name = "nap"
method = "portico.demo.v1.Probe/Sleep"
request = {{ millis = "2" }}
"#,
        path.display()
    );
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, &sections, "")
            .with_route_keys("Library", "cache = { ttl = \"1m\" }")
    })
    .await;
    for _ in 0..2 {
        let r = h.client.get("/v1/shelves/1/nap").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let all = wait_for(&path, 2).await;
    // GetShelf's request is 3 bytes (`shelf: "1"`), Sleep's 2 (`millis: 2`).
    let (first, second) = (&all[0], &all[1]);
    assert_eq!(
        (first["cache"].as_str(), first["attempts"].as_u64()),
        (Some("miss"), Some(2)),
        "{first}"
    );
    assert_eq!(first["bytes_in"], 5, "{first}");
    assert_eq!(
        (second["cache"].as_str(), second["attempts"].as_u64()),
        (Some("hit"), Some(1)),
        "{second}"
    );
    assert_eq!(
        second["bytes_in"], 2,
        "only Sleep's request reached a backend: {second}"
    );
}

#[tokio::test]
async fn a_retried_call_counts_its_attempts_and_a_cache_hit_says_so() {
    let path = log_path("retry-cache");
    let log = format!("[access_log]\npath = \"{}\"\n", path.display());
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, &log, "cache = { ttl = \"1m\" }").replace(
            &format!("endpoints = [\"{backend}\"]"),
            &format!("endpoints = [\"127.0.0.1:1\", \"{backend}\"]"),
        )
    })
    .await;
    // Different requests (no cache hits) until one went to the dead endpoint first.
    for i in 0..12 {
        let r = h.client.get(&format!("/v1/probe/sleep/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let all = wait_for(&path, 12).await;
    let retried: Vec<&Value> = all.iter().filter(|l| l["attempts"] == 2).collect();
    assert!(!retried.is_empty(), "no call was retried: {all:#?}");
    for l in &retried {
        assert_eq!(
            l["endpoint"],
            h.backend_addr.to_string(),
            "the last attempt's: {l}"
        );
        assert_eq!(l["grpc_code"], 0, "{l}");
        assert_eq!(l["cache"], "miss", "{l}");
    }
    assert_eq!(h.client.get("/v1/probe/sleep/5").await.status, 200);
    let all = wait_for(&path, 13).await;
    let hit = all.last().unwrap();
    assert_eq!(hit["cache"], "hit", "{hit}");
    assert_eq!(hit["attempts"], 0, "{hit}");
    assert_eq!(hit["bytes_in"], 0, "no backend received it: {hit}");
    assert!(
        all.iter()
            .any(|l| l["attempts"].as_u64() >= Some(1) && l["bytes_in"].as_u64() > Some(0)),
        "a call that reached the backend counts its bytes: {all:#?}"
    );
    assert!(hit["upstream_ms"].is_null(), "{hit}");
    assert!(hit["bytes_out"].as_u64().unwrap() > 0, "{hit}");

    // Looked up, not found, and the backend answered an error: a miss,
    // not stored.
    let failed = h.client.get("/v1/probe/fail/5").await;
    assert_eq!(failed.status, 404);
    assert_eq!(failed.header("x-cache"), None);
    let all = wait_for(&path, 14).await;
    let miss = all.last().unwrap();
    assert_eq!(
        (miss["grpc_code"].as_u64(), miss["cache"].as_str()),
        (Some(5), Some("miss")),
        "{miss}"
    );
}

#[tokio::test]
async fn requests_no_route_takes_and_dropped_sessions_are_logged_as_they_happened() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = log_path("unrouted");
    let h = gateway(&path, "", "").await;
    // No route: still a line, with the client's address.
    assert_eq!(h.client.get("/v1/nowhere").await.status, 404);
    let grpc = h
        .client
        .as_http2()
        .send(
            http::Method::POST,
            "/nope.v1.Svc/Call",
            &[("content-type", "application/grpc")],
            vec![0u8, 0, 0, 0, 0],
        )
        .await;
    assert_eq!(grpc.status, 200);
    // A session whose client goes away without a close frame.
    let mut sock = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .unwrap();
    sock.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: portico.json.v1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    drop(sock);
    let all = wait_for(&path, 3).await;
    let unrouted: Vec<&Value> = all.iter().filter(|l| l["kind"] == "call").collect();
    assert_eq!(unrouted.len(), 2, "{all:#?}");
    for l in unrouted {
        assert_eq!(l["client"], "127.0.0.1", "{l}");
    }
    let session = all.iter().find(|l| l["kind"] == "session").unwrap();
    assert!(
        session["close_code"].is_null(),
        "a dropped connection sent no close code: {session}"
    );
}

#[tokio::test]
async fn a_websocket_call_that_fails_before_its_request_is_logged_with_its_failure() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let path = log_path("ws-failure");
    let h = gateway(&path, "", "").await;
    let mut ws = support::json_v1_session(&h).await;
    // A unary call whose input ends before its one request message.
    for frame in [
        serde_json::json!({"id": "a", "open": "/portico.demo.v1.Probe/Headers"}),
        serde_json::json!({"id": "a", "end": true}),
    ] {
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 3, "{status}");
    ws.close(None).await.unwrap();
    let all = wait_for(&path, 2).await;
    let call = all
        .iter()
        .find(|l| l["kind"] == "call")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(call["grpc_status"], "INVALID_ARGUMENT", "{call}");
    assert_eq!(call["origin"], "client", "{call}");
    assert!(call["error"]
        .as_str()
        .unwrap()
        .contains("before the request message"));
}

/// A WebSocket call the client abandons is `CANCELLED` in the log, with
/// the reason, whether it sent `cancel` or left while the gateway was
/// blocked writing to it, as the metrics count it.
#[tokio::test]
async fn an_abandoned_websocket_call_is_logged_as_cancelled_with_its_reason() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let path = log_path("ws-cancel");
    let h = gateway(&path, "", "").await;
    let mut ws = support::json_v1_session(&h).await;
    ws.send(Message::text(
        serde_json::json!({"id": "slow", "open": "/portico.demo.v1.Feed/Watch", "message": {"count": 50, "intervalMs": 200}})
            .to_string(),
    ))
    .await
    .unwrap();
    let first = ws.next().await;
    assert!(matches!(first, Some(Ok(Message::Text(_)))), "{first:?}");
    ws.send(Message::text(
        serde_json::json!({"id": "slow", "cancel": true}).to_string(),
    ))
    .await
    .unwrap();
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 1, "{status}");
    ws.close(None).await.unwrap();

    // A client that stops reading a large stream, then leaves.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/feed?count=400&padding=65536",
        h.gateway.addr
    ))
    .await
    .unwrap();
    let _ = ws.next().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    drop(ws);

    // A unary call on a path whose binding takes a body: the client leaves
    // before sending its message. It never reached the pipeline, and is
    // still a call the client abandoned.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v1/shelves/1/books?method=POST",
        h.gateway.addr
    ))
    .await
    .unwrap();
    ws.close(None).await.unwrap();
    drop(ws);

    let all = wait_for(&path, 6).await;
    let calls: Vec<&Value> = all.iter().filter(|l| l["kind"] == "call").collect();
    assert_eq!(calls.len(), 3, "{all:#?}");
    for call in &calls {
        assert_eq!(call["grpc_status"], "CANCELLED", "{call}");
        assert_eq!(call["grpc_code"], 1, "{call}");
    }
    // The cancelled call's client got a status saying why; the one that
    // left got nothing, as on any protocol.
    let cancelled = calls
        .iter()
        .find(|c| c["method"] == "portico.demo.v1.Feed/Watch" && c["route"] != "GET /v1/feed")
        .unwrap_or_else(|| panic!("{calls:#?}"));
    assert_eq!(cancelled["error"], "cancelled by the client", "{cancelled}");
    assert_eq!(cancelled["origin"], "client", "{cancelled}");
    let left = calls
        .iter()
        .find(|c| c["route"] == "GET /v1/feed")
        .unwrap_or_else(|| panic!("{calls:#?}"));
    assert_eq!(left["error"], Value::Null, "{left}");
    assert_eq!(left["origin"], Value::Null, "{left}");
    let never_sent = calls
        .iter()
        .find(|c| c["method"] == "portico.demo.v1.Library/CreateBook")
        .unwrap_or_else(|| panic!("{calls:#?}"));
    assert_eq!(never_sent["attempts"], 0, "{never_sent}");
}

/// A multiplexed call cut off for `websocket.max_in_flight` is logged and
/// counted as the RESOURCE_EXHAUSTED its client was told, not as a call
/// the client abandoned.
#[tokio::test]
async fn a_websocket_call_over_max_in_flight_is_logged_and_counted_as_its_status() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let path = log_path("ws-in-flight");
    let h = gateway(&path, "\n[websocket]\nmax_in_flight = 1\n", "").await;
    let mut ws = support::json_v1_session(&h).await;
    // An upload sent in one burst, far faster than its call starts to read.
    let mut frames = vec![serde_json::json!({"id": "up", "open": "/portico.demo.v1.Feed/Upload"})];
    frames.extend((1..=2000).map(|seq| serde_json::json!({"id": "up", "message": {"seq": seq}})));
    for frame in frames {
        ws.feed(Message::text(frame.to_string())).await.unwrap();
    }
    ws.flush().await.unwrap();
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 8, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("in flight"),
        "{status}"
    );
    let _ = ws.close(None).await;
    let all = wait_for(&path, 2).await;
    let call = all
        .iter()
        .find(|l| l["kind"] == "call")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(call["grpc_status"], "RESOURCE_EXHAUSTED", "{call}");
    assert_eq!(call["method"], "portico.demo.v1.Feed/Upload", "{call}");
    // Counted only if it had reached the pipeline before it was cut off
    // (a call refused before it is logged, not counted), and then with
    // its status, never as CANCELLED.
    let admin = support::HttpClient::new(h.gateway.admin_addr.unwrap());
    let metrics = admin.get("/metrics").await.text();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("portico_calls_total{method=\"portico.demo.v1.Feed/Upload\""))
    {
        assert!(line.contains("code=\"RESOURCE_EXHAUSTED\"} 1"), "{metrics}");
    }
}

/// A client that leaves while the backend is still working: the time is
/// the upstream's, not the gateway's, whatever the protocol.
#[tokio::test]
async fn a_call_abandoned_while_the_backend_works_counts_its_upstream_time() {
    let path = log_path("abandoned-upstream");
    let h = gateway(&path, "", "").await;
    let requests = [
        (http::Method::GET, "/v1/probe/sleep/1500", vec![], ""),
        (
            http::Method::POST,
            "/portico.demo.v1.Probe/Sleep",
            vec![("content-type", "application/json")],
            r#"{"millis":1500}"#,
        ),
    ];
    for (method, at, headers, body) in &requests {
        let left = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            h.client.send(method.clone(), at, headers, body.to_string()),
        )
        .await;
        assert!(left.is_err(), "{at}: the sleep should outlast the client");
    }
    let all = wait_for(&path, requests.len()).await;
    for line in &all {
        assert_eq!(line["grpc_code"], 1, "{line}");
        assert_eq!(line["http_status"], Value::Null, "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
        let upstream = line["upstream_ms"].as_f64().unwrap_or(0.0);
        assert!(upstream >= 250.0, "the backend's time: {line}");
        assert!(
            upstream <= line["duration_ms"].as_f64().unwrap() + 1.0,
            "{line}"
        );
    }
}

/// Behind a trusted proxy, a WebSocket session's line names the client the
/// proxy forwarded for, as its calls' lines and every other protocol's do.
#[tokio::test]
async fn a_sessions_line_names_the_client_a_trusted_proxy_forwarded_for() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let path = log_path("ws-proxied");
    let log = path.clone();
    let h = Harness::start_with_config(move |backend| {
        support::config_text(
            backend,
            &format!("[access_log]\npath = \"{}\"\n", log.display()),
            "",
        )
        .replacen(
            "admin = \"127.0.0.1:0\"\n",
            "admin = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
            1,
        )
    })
    .await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/ws", h.gateway.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
    req.headers_mut()
        .insert("x-forwarded-for", "198.51.100.9".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let open =
        serde_json::json!({"id": "a", "open": "/portico.demo.v1.Probe/Headers", "message": {}});
    ws.send(Message::text(open.to_string())).await.unwrap();
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 0, "{status}");
    // A call refused before the pipeline (its input ended before its one
    // message) names the client too.
    for frame in [
        serde_json::json!({"id": "b", "open": "/portico.demo.v1.Probe/Headers"}),
        serde_json::json!({"id": "b", "end": true}),
    ] {
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    let status = support::ws_status(&mut ws).await;
    assert_eq!(status["code"], 3, "{status}");
    ws.close(None).await.unwrap();
    let all = wait_for(&path, 3).await;
    assert_eq!(all.len(), 3, "{all:#?}");
    for line in &all {
        assert_eq!(line["client"], "198.51.100.9", "{line}");
    }
}

/// An aggregate's line is its first method's: its `cache` field is that
/// call's verdict, not another call's.
#[tokio::test]
async fn an_aggregates_cache_field_is_its_first_calls_verdict() {
    let path = log_path("aggregate-cache");
    let sections = format!(
        "[access_log]\npath = \"{}\"\n\n\
         [[aggregates]]\npath = \"/v1/cached-first\"\n\
         [[aggregates.calls]]\nname = \"probe\"\nmethod = \"portico.demo.v1.Probe/Headers\"\n\
         [[aggregates.calls]]\nname = \"shelf\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = {{ shelf = \"1\" }}\n\n\
         [[aggregates]]\npath = \"/v1/uncached-first\"\n\
         [[aggregates.calls]]\nname = \"shelf\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = {{ shelf = \"1\" }}\n\
         [[aggregates.calls]]\nname = \"probe\"\nmethod = \"portico.demo.v1.Probe/Headers\"\n\n\
         [[aggregates]]\npath = \"/v1/one-method-twice\"\n\
         [[aggregates.calls]]\nname = \"warm\"\nmethod = \"portico.demo.v1.Probe/Sleep\"\nrequest = {{ millis = 1 }}\n\
         [[aggregates.calls]]\nname = \"cold\"\nmethod = \"portico.demo.v1.Probe/Sleep\"\nrequest = {{ millis = 2 }}\n",
        path.display()
    );
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, &sections, "")
            .with_route_keys("Probe", "cache = { ttl = \"1m\" }")
    })
    .await;
    for target in [
        "/v1/cached-first",
        "/v1/cached-first",
        "/v1/uncached-first",
        "/v1/probe/sleep/1",
        "/v1/one-method-twice",
    ] {
        let r = h.client.get(target).await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
    }
    assert_eq!(
        h.backends.probe.calls(),
        3,
        "the later Headers calls and the warm Sleep were hits"
    );
    let all = wait_for(&path, 5).await;
    let seen: Vec<(&str, &str, Value)> = all
        .iter()
        .map(|l| {
            (
                l["route"].as_str().unwrap_or(""),
                l["method"].as_str().unwrap_or(""),
                l["cache"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "GET /v1/cached-first",
                "portico.demo.v1.Probe/Headers",
                Value::from("miss")
            ),
            (
                "GET /v1/cached-first",
                "portico.demo.v1.Probe/Headers",
                Value::from("hit")
            ),
            // Its Headers call was a hit too, but GetShelf has no cache.
            (
                "GET /v1/uncached-first",
                "portico.demo.v1.Library/GetShelf",
                Value::Null
            ),
            (
                "GET /v1/probe/sleep/{millis}",
                "portico.demo.v1.Probe/Sleep",
                Value::from("miss")
            ),
            // Its first call was a hit, its second (the same method) a miss.
            (
                "GET /v1/one-method-twice",
                "portico.demo.v1.Probe/Sleep",
                Value::from("hit")
            ),
        ],
        "{all:#?}"
    );
}
