//! An AI agent uses the gateway's methods as Model Context Protocol tools:
//! the official Python SDK initializes, lists and calls them, and each call
//! runs through the same edge and policies as every other protocol.

use crate::support;
use support::RouteKeys;

use http::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{python, Harness, HttpClient};

const SECRET: &str = "a-secret-for-the-mcp-tests-32-bytes";

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Library behind a JWT authenticator, Feed open (streams read for 1.5 s
/// at most), Probe limited and cached; all three offered as tools.
async fn gateway(log: Option<&std::path::Path>) -> Harness {
    let log = log
        .map(|p| format!("[access_log]\npath = \"{}\"\n", p.display()))
        .unwrap_or_default();
    Harness::start_with_config(|backend| {
        support::config_text(
            backend,
            &format!(
                "{log}[authenticators.agents]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n"
            ),
            "",
        )
        .with_route_keys("Library", "mcp = true\nauth = \"agents\"")
        .with_route_keys("Feed", "mcp = true\ntimeout = \"1500ms\"")
        .with_route_keys(
            "Probe",
            "\
             rate_limit = { requests_per_second = 0.001, burst = 3, key = \"route\" }\n\
             cache = { ttl = \"60s\", methods = [\"Headers\"] }",
        )
    })
    .await
}

/// One JSON-RPC request to `/mcp`.
async fn rpc(client: &HttpClient, headers: &[(&str, &str)], body: Value) -> (StatusCode, Value) {
    let mut all = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    all.extend_from_slice(headers);
    let r = client
        .send(Method::POST, "/mcp", &all, body.to_string())
        .await;
    let value = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, value)
}

async fn call(client: &HttpClient, headers: &[(&str, &str)], name: &str, args: Value) -> Value {
    support::mcp_call(client, headers, name, args).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdk_lists_the_tools_and_calls_one_with_and_without_a_token() {
    let Some(python) = python::available(&["mcp"]) else {
        return;
    };
    let h = gateway(None).await;
    let url = format!("http://{}/mcp", h.gateway.addr);
    let args = r#"{"shelf": "1"}"#;
    let bearer = token("ada");
    let with = python::run(
        &python,
        "mcp_client.py",
        &[
            &url,
            "--token",
            &bearer,
            "--call",
            "Library_GetShelf",
            "--args",
            args,
        ],
        None,
    )
    .await;
    assert!(with.success, "{}\n{}", with.stdout, with.stderr);
    let with = with.json();
    assert_eq!(with["serverName"], "portico");
    let tools = with["tools"].as_array().unwrap();
    let shelf = tools
        .iter()
        .find(|t| t["name"] == "Library_GetShelf")
        .unwrap_or_else(|| panic!("{with}"));
    assert_eq!(
        shelf["inputSchema"]["properties"]["shelf"]["type"],
        "string"
    );
    assert_eq!(
        shelf["outputSchema"]["properties"]["bookCount"]["format"],
        "int32"
    );
    assert!(tools.iter().any(|t| t["name"] == "Feed_Watch"));
    assert!(
        !tools.iter().any(|t| t["name"] == "Chat_Converse"),
        "not offered: the route has no mcp = true"
    );
    assert_eq!(with["call"]["isError"], false, "{with}");
    assert_eq!(with["call"]["structuredContent"]["name"], "shelves/1");

    let without = python::run(
        &python,
        "mcp_client.py",
        &[&url, "--call", "Library_GetShelf", "--args", args],
        None,
    )
    .await;
    assert!(without.success, "{}\n{}", without.stdout, without.stderr);
    let without = without.json();
    assert_eq!(without["call"]["isError"], true, "{without}");
    let status = &without["call"]["meta"]["io.portico/status"];
    assert_eq!(status["code"], 16, "UNAUTHENTICATED: {without}");
    assert!(without["call"]["structuredContent"].is_null());

    // The authenticated call counted for its principal, like any other.
    let usage = HttpClient::new(h.gateway.admin_addr.unwrap())
        .get("/usage")
        .await
        .json();
    assert!(usage.to_string().contains("\"ada\""), "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_passes_the_route_limit_cache_and_access_log() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-mcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let h = gateway(Some(&log)).await;
    let client = &h.client;

    // The cache: the second call is answered without the backend.
    let first = call(
        client,
        &[("x-request-id", "mcp-call-1")],
        "Probe_Headers",
        json!({}),
    )
    .await;
    assert_eq!(first["isError"], Value::Null, "{first}");
    let seen = &first["structuredContent"]["metadata"];
    assert_eq!(seen["x-request-id"], "mcp-call-1", "{seen}");
    assert!(seen.get("mcp-protocol-version").is_none());
    let calls = h.backends.probe.calls();
    let second = call(client, &[], "Probe_Headers", json!({})).await;
    assert_eq!(second["structuredContent"], first["structuredContent"]);
    assert_eq!(h.backends.probe.calls(), calls, "served from the cache");

    // The rate limit: three calls per route, then RESOURCE_EXHAUSTED.
    let third = call(client, &[], "Probe_Headers", json!({})).await;
    assert_eq!(third["isError"], Value::Null);
    let refused = call(client, &[], "Probe_Headers", json!({})).await;
    assert_eq!(refused["isError"], true, "{refused}");
    assert_eq!(
        refused["_meta"]["io.portico/status"]["code"], 8,
        "{refused}"
    );
    // What a REST client reads from the headers of its 429.
    assert!(
        refused["_meta"]["io.portico/metadata"]["retry-after"].is_string(),
        "{refused}"
    );

    // The access log names the protocol and the tool's method.
    let found = support::eventually(|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"mcp-call-1\""))
    })
    .await;
    assert!(found, "no access-log line");
    let line: Value = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find(|l| l.contains("\"mcp-call-1\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(line["protocol"], "mcp", "{line}");
    assert_eq!(line["method"], "portico.demo.v1.Probe/Headers", "{line}");

    // A call to no tool is logged as the JSON-RPC method it was, failed.
    let (status, reply) = rpc(
        client,
        &[("x-request-id", "mcp-no-tool")],
        json!({ "jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": { "name": "Nope" } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let found = support::eventually(|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"mcp-no-tool\"")
    })
    .await;
    assert!(found, "no access-log line for the unknown tool");
    let line: Value = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find(|l| l.contains("\"mcp-no-tool\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(line["route"], "mcp tools/call", "{line}");
    assert_eq!(line["grpc_code"], 3, "{line}");

    // A method MCP servers may offer but this one does not: UNIMPLEMENTED.
    let (_, reply) = rpc(
        client,
        &[("x-request-id", "mcp-no-method")],
        json!({ "jsonrpc": "2.0", "id": 9, "method": "resources/list" }),
    )
    .await;
    assert_eq!(reply["error"]["code"], -32601, "{reply}");
    assert!(
        support::eventually(|| std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"mcp-no-method\""))
        .await
    );
    let line: Value = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find(|l| l.contains("\"mcp-no-method\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(line["route"], "mcp resources/list", "{line}");
    assert_eq!(line["grpc_code"], 12, "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_bad_arguments_and_protocol_errors_get_clear_answers() {
    let h = gateway(None).await;
    let client = &h.client;

    let (status, init) = rpc(
        client,
        &[],
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(
        init["result"]["capabilities"]["tools"]["listChanged"],
        false
    );

    // A server stream: every reply, in order.
    let watched = call(client, &[], "Feed_Watch", json!({ "count": 3 })).await;
    let messages = watched["structuredContent"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{watched}");
    assert_eq!(messages[2]["seq"], "3");
    assert_eq!(watched["structuredContent"]["truncated"], false);
    // A stream longer than the route's timeout is cut there, with what came.
    let endless = call(
        client,
        &[],
        "Feed_Watch",
        json!({ "count": 1000, "intervalMs": 400 }),
    )
    .await;
    assert_eq!(endless["structuredContent"]["truncated"], true, "{endless}");
    assert!(!endless["structuredContent"]["messages"]
        .as_array()
        .unwrap()
        .is_empty());
    // A stream that fails part way is a tool error that keeps what came:
    // the status first, then the replies delivered before it.
    let failed = call(
        client,
        &[],
        "Feed_Watch",
        json!({ "count": 3, "failAfter": 2 }),
    )
    .await;
    assert_eq!(failed["isError"], true, "{failed}");
    assert!(failed["content"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Aborted"));
    let delivered: Value =
        serde_json::from_str(failed["content"][1]["text"].as_str().unwrap()).unwrap();
    let seqs: Vec<&Value> = delivered["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["seq"])
        .collect();
    assert_eq!(seqs, [&json!("1"), &json!("2")], "{failed}");

    // A google.api.HttpBody reply is content, not structured content.
    let bearer = format!("Bearer {}", token("ada"));
    let auth = [("authorization", bearer.as_str())];
    let cover = call(
        client,
        &auth,
        "Library_GetCover",
        json!({ "name": "shelves/1/books/1" }),
    )
    .await;
    assert_eq!(cover["content"][0]["type"], "image", "{cover}");
    assert_eq!(cover["content"][0]["mimeType"], "image/svg+xml", "{cover}");
    let (_, listed) = rpc(
        client,
        &[],
        json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/list" }),
    )
    .await;
    let listed = listed["result"]["tools"].as_array().unwrap().clone();
    let get_cover = listed
        .iter()
        .find(|t| t["name"] == "Library_GetCover")
        .unwrap();
    assert!(get_cover.get("outputSchema").is_none(), "{get_cover}");

    // Arguments that do not fit the request message: a tool error naming the field.
    let bad = call(client, &[], "Feed_Watch", json!({ "count": "many" })).await;
    assert_eq!(bad["isError"], true);
    assert_eq!(bad["_meta"]["io.portico/status"]["code"], 3);
    assert!(
        bad["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("count"),
        "{bad}"
    );
    // No position in JSON the agent never wrote (the gateway's own
    // rewriting of the arguments).
    let bad = call(client, &auth, "Library_GetShelf", json!({ "shelf": 1 })).await;
    assert_eq!(bad["isError"], true, "{bad}");
    let text = bad["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("expected a string") && !text.contains(" at line "),
        "{bad}"
    );

    // What is sent, with which headers, and the HTTP status and JSON-RPC code it gets.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, StatusCode, i64);
    let cases: Vec<Case> = vec![
        ("not JSON", vec![], "{".to_owned(), StatusCode::BAD_REQUEST, -32700),
        ("a batch", vec![], "[]".to_owned(), StatusCode::BAD_REQUEST, -32600),
        ("a string", vec![], "\"ping\"".to_owned(), StatusCode::BAD_REQUEST, -32600),
        (
            "an unknown method",
            vec![],
            json!({ "jsonrpc": "2.0", "id": 2, "method": "resources/list" }).to_string(),
            StatusCode::OK,
            -32601,
        ),
        (
            "an unknown tool",
            vec![],
            json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": { "name": "Nope" } }).to_string(),
            StatusCode::OK,
            -32602,
        ),
        (
            "no \"jsonrpc\": \"2.0\"",
            vec![],
            json!({ "jsonrpc": "1.0", "id": 6, "method": "ping" }).to_string(),
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            "a null id",
            vec![],
            json!({ "jsonrpc": "2.0", "id": null, "method": "ping" }).to_string(),
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            "an object id",
            vec![],
            json!({ "jsonrpc": "2.0", "id": {"a": 1}, "method": "ping" }).to_string(),
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            "a tools/call without a name",
            vec![],
            json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {} }).to_string(),
            StatusCode::OK,
            -32602,
        ),
        (
            "params that are not an object",
            vec![],
            json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": [] }).to_string(),
            StatusCode::OK,
            -32602,
        ),

        (
            "an initialize whose protocolVersion is not a string",
            vec![],
            json!({ "jsonrpc": "2.0", "id": "init", "method": "initialize", "params": { "protocolVersion": 5 } }).to_string(),
            StatusCode::OK,
            -32602,
        ),
        (
            "a compressed body",
            vec![("content-encoding", "gzip")],
            json!({ "jsonrpc": "2.0", "id": 8, "method": "ping" }).to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            -32600,
        ),
        (
            "an unknown protocol version",
            vec![("mcp-protocol-version", "1999-01-01")],
            json!({ "jsonrpc": "2.0", "id": 4, "method": "ping" }).to_string(),
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            "another origin",
            vec![("origin", "http://evil.example")],
            json!({ "jsonrpc": "2.0", "id": 5, "method": "ping" }).to_string(),
            StatusCode::FORBIDDEN,
            -32600,
        ),
    ];
    for (what, headers, body, status, code) in cases {
        let mut all = vec![("content-type", "application/json")];
        all.extend(headers);
        let body_sent = body.clone();
        let r = client.send(Method::POST, "/mcp", &all, body).await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{what}: {}", r.text());
        let message = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        // The answer carries the request's id whenever the body was read
        // and its id is one (refused for a header or not); a compressed
        // body is refused before it is read.
        let sent = serde_json::from_str::<Value>(&body_sent).ok();
        let id = sent
            .as_ref()
            .and_then(|b| b.get("id"))
            .filter(|i| (i.is_string() || i.is_number()) && what != "a compressed body");
        assert_eq!(r.json()["id"], id.cloned().unwrap_or(Value::Null), "{what}");
        match what {
            "a batch" => assert!(message.contains("batches are not part of MCP"), "{message}"),
            "a string" => assert!(message.contains("got a string"), "{message}"),
            _ => {}
        }
    }
    // Another site's page is refused for its origin whatever the method:
    // it is not told which methods /mcp takes (its own site gets the 405).
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let r = client
            .send(
                method.clone(),
                "/mcp",
                &[("origin", "http://evil.example")],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], -32600, "{method}");
        let r = client.send(method.clone(), "/mcp", &[], "").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    // An id is answered exactly as it was written, however JSON spells it.
    for id in ["1e3", "123456789012345678901234567890", "-0.5", "\"x\""] {
        let r = client
            .send(
                Method::POST,
                "/mcp",
                &[("content-type", "application/json")],
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{id}");
        assert!(
            r.text().contains(&format!(r#""id":{id}"#)),
            "{id}: {}",
            r.text()
        );
    }
    // An id given twice is read as JSON parsers read a key given twice:
    // the request is answered (not taken for a notification), with the last.
    let r = client
        .send(
            Method::POST,
            "/mcp",
            &[("content-type", "application/json")],
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["id"], 2, "{}", r.text());
    // A notification is accepted without a reply; GET opens no stream.
    let (status, _) = rpc(
        client,
        &[],
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let r = client.get("/mcp").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("POST"));
    // The gateway stays up and serves.
    assert_eq!(
        client.get("/v1/shelves/1").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_mcp_route_there_is_no_mcp_endpoint() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").replace("mcp = true\n", "")
    })
    .await;
    let (status, body) = rpc(
        &h.client,
        &[],
        json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn a_patch_method_updates_only_the_fields_the_arguments_name() {
    let h = gateway(None).await;
    let bearer = format!("Bearer {}", token("ada"));
    let auth = [("authorization", bearer.as_str())];
    // As a REST PATCH would: the mask is the keys sent under `book`.
    let result = call(
        &h.client,
        &auth,
        "Library_UpdateBook",
        json!({ "book": { "name": "shelves/1/books/2", "pages": 111 } }),
    )
    .await;
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(
        result["_meta"]["io.portico/metadata"]["x-update-mask"], "pages",
        "{result}"
    );
    let book = h
        .client
        .send(Method::GET, "/v1/shelves/1/books/2", &auth, "")
        .await
        .json();
    assert_eq!(book["pages"], "111", "{book}");
    assert!(
        book["title"].as_str().is_some_and(|t| !t.is_empty()),
        "the other fields stay: {book}"
    );
    // A mask the agent gives is used as given.
    let result = call(
        &h.client,
        &auth,
        "Library_UpdateBook",
        json!({ "book": { "name": "shelves/1/books/2", "pages": 112, "title": "x" }, "updateMask": "pages" }),
    )
    .await;
    assert_eq!(
        result["_meta"]["io.portico/metadata"]["x-update-mask"], "pages",
        "{result}"
    );
    // Arguments that name only the resource change nothing: refused, never
    // sent as an empty mask a backend would read as "replace it all".
    for arguments in [
        json!({ "book": { "name": "shelves/1/books/2" } }),
        json!({}),
        // An empty mask is no mask.
        json!({ "book": { "name": "shelves/1/books/2" }, "updateMask": "" }),
    ] {
        let result = call(&h.client, &auth, "Library_UpdateBook", arguments.clone()).await;
        assert_eq!(result["isError"], true, "{arguments}: {result}");
        let status = &result["_meta"]["io.portico/status"];
        assert_eq!(status["code"], 3, "{result}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("names no field to update"),
            "{result}"
        );
    }
    let book = h
        .client
        .send(Method::GET, "/v1/shelves/1/books/2", &auth, "")
        .await
        .json();
    assert_eq!(book["pages"], "112", "untouched: {book}");
}

/// A streaming tool is bounded by the route's timeout from the request's
/// arrival: a backend that sends no reply within it fails the call with
/// DEADLINE_EXCEEDED, as a silent unary backend does, not an empty success.
#[tokio::test]
async fn a_stream_tool_waits_no_longer_than_the_route_timeout_for_its_first_reply() {
    let (backend, _) = support::scripted::serve(support::scripted::Script {
        pause_before_reply: std::time::Duration::from_millis(1500),
        // An Event { seq = 1 }, encoded by hand.
        messages: vec![vec![0x08, 0x01]],
        ..Default::default()
    })
    .await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "portico-mcp-stream-deadline-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let sections = format!("[access_log]\npath = \"{}\"\n", log.display());
    let h = Harness::start_with_config(|_| {
        support::config_text(backend, &sections, "")
            .with_route_keys("Feed", "mcp = true\ntimeout = \"300ms\"")
    })
    .await;
    // Held for the backend's 1.5 s, the call would have its reply.
    let result = call(&h.client, &[], "Feed_Watch", json!({"topic": "a"})).await;
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(result["_meta"]["io.portico/status"]["code"], 4, "{result}");
    // A call refused for a malformed header is still the tool's call in
    // the log (and its span): the body named it.
    let (status, refused) = rpc(
        &h.client,
        &[("grpc-timeout", "abc")],
        json!({ "jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": { "name": "Feed_Watch", "arguments": {} } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["id"], 8, "{refused}");
    // The route's deadline is the gateway's to enforce, as on every
    // protocol: logged with origin gateway, not blamed on the backend.
    support::eventually(|| {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("DEADLINE_EXCEEDED"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["grpc_status"] == "DEADLINE_EXCEEDED")
        .unwrap();
    assert_eq!(line["origin"], "gateway", "{line}");
    support::eventually(|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("grpc-timeout")))
        .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| {
            l["error"]
                .as_str()
                .is_some_and(|e| e.contains("grpc-timeout"))
        })
        .unwrap();
    assert_eq!(line["route"], "tool Feed_Watch", "{line}");
    assert_eq!(line["method"], "portico.demo.v1.Feed/Watch", "{line}");
    std::fs::remove_dir_all(dir).ok();
}

/// The corners of the JSON-RPC envelope: a message that is both a request
/// and a response is run as neither; two origins are refused with the
/// request's id; the query, but for an API key, means nothing; arguments a
/// JSON value cannot hold are the method's request to judge, as a REST
/// body is; and a stream cut for its tool result counts as the success
/// the agent got.
#[tokio::test]
async fn the_json_rpc_envelope_is_read_as_json_rpc_says() {
    let h = gateway(None).await;
    let client = &h.client;
    let watch = |id: i64, args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"Feed_Watch","arguments":{args}}}}}"#
        )
    };
    let send = |path: &'static str, headers: Vec<(&'static str, &'static str)>, body: String| async move {
        let mut all = vec![("content-type", "application/json")];
        all.extend(headers);
        let r = client.send(Method::POST, path, &all, body).await;
        (r.status, r.json())
    };

    let (status, both) = send(
        "/mcp",
        vec![],
        r#"{"jsonrpc":"2.0","id":5,"result":{},"method":"tools/call","params":{"name":"Feed_Watch","arguments":{"count":1}}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{both}");
    assert_eq!(both["id"], 5);
    assert_eq!(both["error"]["code"], -32600, "{both}");
    assert!(both.get("result").is_none(), "{both}");

    let (status, two) = send(
        "/mcp",
        vec![
            ("origin", "http://a.example"),
            ("origin", "http://b.example"),
        ],
        watch(6, r#"{"count":1}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{two}");
    assert_eq!(two["id"], 6, "{two}");
    assert!(
        two["error"]["message"].as_str().unwrap().contains("origin"),
        "{two}"
    );

    let (status, queried) = send("/mcp?foo=bar", vec![], watch(7, r#"{"count":1}"#)).await;
    assert_eq!(status, StatusCode::OK, "{queried}");
    assert_eq!(
        queried["result"]["structuredContent"]["messages"][0]["seq"],
        "1"
    );

    let (status, huge) = send("/mcp", vec![], watch(8, r#"{"count":1e400}"#)).await;
    assert_eq!(status, StatusCode::OK, "{huge}");
    assert_eq!(huge["id"], 8);
    assert_eq!(huge["result"]["isError"], true, "{huge}");
    assert_eq!(
        huge["result"]["_meta"]["io.portico/status"]["code"], 3,
        "{huge}"
    );

    // Cut at the route's timeout (1.5 s): a result the agent got whole.
    let cut = call(
        client,
        &[],
        "Feed_Watch",
        json!({ "count": 1000, "intervalMs": 400 }),
    )
    .await;
    assert_eq!(cut["structuredContent"]["truncated"], true, "{cut}");
    let admin = HttpClient::new(h.gateway.admin_addr.unwrap());
    let counted = |code: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .get("/metrics")
                .await
                .text()
                .lines()
                .any(|l| l.contains("Feed/Watch") && l.contains(&format!("code=\"{code}\"")))
        }
    };
    assert!(
        support::eventually_async(|| counted("OK")).await,
        "the cut stream is counted OK"
    );
    assert!(!counted("CANCELLED").await, "and not as a client that left");
}

/// One endpoint serves every tool route: a preflight for `/mcp` from an
/// origin several of their CORS policies allow is answered with all of
/// them together, so a page may send what any of those routes takes.
#[tokio::test]
async fn an_mcp_preflight_answers_with_every_allowing_tool_routes_policy() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "")
            .with_route_keys(
                "Library",
                "mcp = true\ncors = { allowed_origins = [\"https://app.example\"], allowed_headers = [\"x-api-key\"], max_age = \"5m\", allow_credentials = true }",
            )
            .with_route_keys(
                "Feed",
                "mcp = true\ncors = { allowed_origins = [\"https://app.example\"], allowed_headers = [\"x-a\"], max_age = \"1m\" }",
            )
    })
    .await;
    let r = h
        .client
        .send(
            Method::OPTIONS,
            "/mcp",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-api-key"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let allowed = r.header("access-control-allow-headers").unwrap();
    assert!(
        allowed.contains("x-api-key") && allowed.contains("x-a"),
        "{allowed}"
    );
    assert_eq!(r.header("access-control-max-age"), Some("60"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

/// A body the JSON-RPC reader cannot take says what it is, as a REST body
/// does: JSON holding a number no double holds is a request refused with
/// its id as written, a byte order mark is named, and a lone surrogate is
/// said to be one (the JSON parser calls it the end of a hex escape).
#[tokio::test]
async fn a_body_the_reader_cannot_take_is_said_as_what_it_is() {
    let h = gateway(None).await;
    let surrogate = "the body is not JSON: a \\\\u escape before line 1 column 62 is half of a UTF-16 surrogate pair without its other half";
    for (body, code, id, says) in [
        (
            r#"{"jsonrpc":"2.0","id":1e400,"method":"ping"}"#.to_owned(),
            -32600,
            "1e400",
            "the body is JSON the gateway does not read: the number at line 1 column 27 is out of range",
        ),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"ping","params":{"x":1e400}}"#.to_owned(),
            -32600,
            "7",
            "the number at line 1 column 59 is out of range",
        ),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping","params":{"x":1e400}}"#.to_owned(),
            -32600,
            "null",
            "the number at line 1 column 65 is out of range",
        ),
        (
            "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}".to_owned(),
            -32700,
            "null",
            "the body starts with a byte order mark (EF BB BF), which JSON text may not",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"\ud800"}}"#.to_owned(),
            -32700,
            "null",
            surrogate,
        ),
    ] {
        let reply = h
            .client
            .send(
                Method::POST,
                "/mcp",
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let text = reply.text();
        assert!(
            text.starts_with(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{{\"code\":{code},")),
            "{body}: {text}"
        );
        assert!(text.contains(says), "{body}: {text}");
    }
    // In a tool's arguments, the lone surrogate is the method's request's
    // fault, said as a REST body's is: a tool error, code 3.
    let auth = format!("Bearer {}", token("agent"));
    let reply = h
        .client
        .send(
            Method::POST,
            "/mcp",
            &[("content-type", "application/json"), ("authorization", &auth)],
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"Library_SearchBooks","arguments":{"query":"\ud800"}}}"#,
        )
        .await;
    let answer = reply.json();
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("the JSON is malformed: a \\u escape before line 1 column 17 is half of a UTF-16 surrogate pair"),
        "{answer}"
    );
}

/// The method's own rule says what a tool call is: a method whose rule is
/// a whole-message `POST` and that can also be patched at another URL
/// (an `additional_bindings` entry) is called with its arguments as the
/// whole message, no mask added, while that other URL still patches.
#[tokio::test]
async fn a_patch_that_is_only_an_additional_binding_adds_no_mask_to_a_tool_call() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys(
            "Library",
            "mcp = true\nhttp_rules.UpdateBook = { post = \"/v1/books:replace\", body = \"*\", \
             additional_bindings = [{ patch = \"/v1/{book.name=shelves/*/books/*}\", body = \"book\" }] }",
        )
    })
    .await;
    let replaced = json!({ "book": { "name": "shelves/1/books/2", "title": "Whole", "pages": 7 } });
    let result = call(&h.client, &[], "Library_UpdateBook", replaced).await;
    assert!(result.get("isError").is_none(), "{result}");
    let meta = &result["_meta"]["io.portico/metadata"];
    assert_eq!(meta["x-update-mask"], "", "no mask sent: {result}");
    assert_eq!(result["structuredContent"]["title"], "Whole", "{result}");
    // Arguments without the patch's body field are a call like any other.
    let result = call(&h.client, &[], "Library_UpdateBook", json!({})).await;
    let status = &result["_meta"]["io.portico/status"];
    assert_eq!(
        status["message"], "book is required",
        "the backend's answer: {result}"
    );
    // The PATCH URL still fills its mask from the body's keys.
    let r = h
        .client
        .json(Method::PATCH, "/v1/shelves/1/books/2", r#"{"pages": 9}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-update-mask"), Some("pages"));
    assert_eq!(r.json()["title"], "Whole");
}
