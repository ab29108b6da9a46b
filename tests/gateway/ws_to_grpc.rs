//! WebSocket clients driving gRPC calls through the gateway, with a real
//! tokio-tungstenite client: every call kind, both framing protocols and the
//! plain dialect, multiplexing, errors, lifecycles and browser rules.

use crate::support;
use support::RouteKeys;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use portico::demo::backends::pb;
use prost::Message as _;
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, Harness};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(h: &Harness, path: &str, protocol: Option<&str>, headers: &[(&str, &str)]) -> Ws {
    try_connect(h, path, protocol, headers)
        .await
        .expect("the handshake succeeds")
}

async fn try_connect(
    h: &Harness,
    path: &str,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Ws, u16> {
    let mut req = format!("ws://{}{}", h.gateway.addr, path)
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// The next text frame as JSON (pings answered, anything else is a failure).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads to the close frame, with no text frame before it; returns its
/// code and reason.
async fn closed(ws: &mut Ws) -> (u16, String) {
    let (frames, code, reason) = frames_then_close(ws).await;
    assert!(
        frames.is_empty(),
        "unexpected frames before close: {frames:?}"
    );
    (code, reason)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

#[tokio::test]
async fn a_unary_call_from_the_url_replies_then_a_status_frame_then_close() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/shelves/1", Some("portico.json.v1"), &[]).await;
    assert_eq!(next_json(&mut ws).await["result"]["theme"], "Fiction");
    let end = next_json(&mut ws).await;
    assert_eq!(end["status"]["code"], 0);
    assert!(end["trailers"].is_object());
    assert_eq!(closed(&mut ws).await.0, 1000);
}

#[tokio::test]
async fn a_frame_on_a_rest_path_is_read_as_that_bindings_http_body() {
    let h = Harness::start().await;
    // `body: "book"`: the frame is the book, as a REST body would be.
    let mut ws = connect(&h, "/v1/shelves/1/books?method=POST", None, &[]).await;
    send(&mut ws, json!({"title": "Dune", "author": "Frank Herbert"})).await;
    let created = next_json(&mut ws).await;
    assert_eq!(created["result"]["title"], "Dune", "{created}");
    assert_eq!(closed(&mut ws).await.0, 1000);
    let name = created["result"]["name"].as_str().unwrap().to_owned();

    // A PATCH fills the update mask from the keys sent, so the fields not
    // sent are kept, exactly as through REST.
    let mut ws = connect(&h, &format!("/v1/{name}?method=PATCH"), None, &[]).await;
    send(&mut ws, json!({"pages": 10})).await;
    let patched = next_json(&mut ws).await;
    assert_eq!(patched["result"]["pages"], "10", "{patched}");
    assert_eq!(patched["result"]["title"], "Dune", "{patched}");
    assert_eq!(closed(&mut ws).await.0, 1000);
    let r = h.client.get(&format!("/v1/{name}")).await;
    assert_eq!(r.json()["author"], "Frank Herbert");
    assert_eq!(r.json()["pages"], "10");
}

#[tokio::test]
async fn a_server_stream_in_the_plain_dialect_ends_with_a_normal_close() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/feed?count=3&topic=ws", None, &[]).await;
    for seq in ["1", "2", "3"] {
        let m = next_json(&mut ws).await;
        assert_eq!(m["result"]["seq"], seq);
        assert_eq!(m["result"]["topic"], "ws");
    }
    assert_eq!(closed(&mut ws).await.0, 1000);
}

/// A binding's `response_body` shapes the reply the same way over REST
/// (unary and each message of a stream) and over a WebSocket on its path.
#[tokio::test]
async fn response_body_shapes_the_reply_on_every_transport_of_a_rest_path() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys(
            "Feed",
            "http_rules.Watch = { get = \"/v9/feed\", response_body = \"text\" }",
        )
    })
    .await;
    let r = h.client.get("/v9/feed?count=2&topic=t").await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.text(),
        "{\"result\":\"event 1 on t\"}\n{\"result\":\"event 2 on t\"}\n"
    );
    // The API description says so too.
    let api = h.client.get("/openapi.json").await.json();
    let line = &api["paths"]["/v9/feed"]["get"]["responses"]["200"]["content"]
        ["application/x-ndjson"]["schema"];
    assert_eq!(line["properties"]["result"]["type"], "string", "{line}");
    let mut ws = connect(&h, "/v9/feed?count=2&topic=t", None, &[]).await;
    for n in 1..=2 {
        assert_eq!(
            next_json(&mut ws).await,
            json!({"result": format!("event {n} on t")})
        );
    }
    assert_eq!(closed(&mut ws).await.0, 1000);
    // A unary binding's response_body, as REST writes it.
    let rest = h.client.get("/v1/shelves/1/books/2/title").await.json();
    let mut ws = connect(&h, "/v1/shelves/1/books/2/title", None, &[]).await;
    assert_eq!(next_json(&mut ws).await, json!({"result": rest}));
    assert_eq!(closed(&mut ws).await.0, 1000);
}

#[tokio::test]
async fn a_client_stream_half_closes_and_still_gets_its_reply() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/feed:upload", Some("portico.json.v1"), &[]).await;
    for seq in 1..=3 {
        send(
            &mut ws,
            json!({"message": {"seq": seq, "topic": format!("t{}", seq % 2)}}),
        )
        .await;
    }
    send(&mut ws, json!({"end": true})).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(
        reply["result"],
        json!({"count": 3, "topics": ["t1", "t0"], "lastSeq": "3"})
    );
    assert_eq!(next_json(&mut ws).await["status"]["code"], 0);
    assert_eq!(closed(&mut ws).await.0, 1000);
}

#[tokio::test]
async fn a_whitespace_frame_in_the_plain_dialect_is_refused_not_sent_as_an_empty_message() {
    let h = Harness::start().await;
    for path in ["/v1/feed:upload", "/portico.demo.v1.Library/GetShelf"] {
        let mut ws = connect(&h, path, None, &[]).await;
        if path.contains("upload") {
            send(&mut ws, json!({"seq": 1, "topic": "t"})).await;
        }
        ws.send(Message::text(" \n ")).await.unwrap();
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["error"]["code"], 3, "{path}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("only whitespace"), "{path}: {message}");
    }
}

/// Reads to the close: the text frames before it, and its code and reason.
async fn frames_then_close(ws: &mut Ws) -> (Vec<Value>, u16, String) {
    let mut frames = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the close in time")
        {
            Some(Ok(Message::Text(t))) => frames.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(Some(f)))) => {
                return (frames, u16::from(f.code), f.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None => return (frames, 1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn a_query_the_binding_does_not_take_refuses_the_call_at_once_as_rest_does() {
    let h = Harness::start().await;
    // Paths whose binding takes a body: the URL's query is checked when the
    // call opens, by REST's rules, before any message is sent.
    for (path, rest_method) in [
        ("/v1/feed:upload?bogus=1", http::Method::POST),
        ("/v1/feed:upload?seq=zz", http::Method::POST),
        ("/v1/chat?text=q", http::Method::POST),
        (
            "/portico.demo.v1.Library/GetShelf?shelf=1",
            http::Method::POST,
        ),
    ] {
        let rest = h
            .client
            .send(
                rest_method,
                path,
                &[("content-type", "application/json")],
                "{}",
            )
            .await;
        assert_eq!(rest.status, http::StatusCode::BAD_REQUEST, "{path}");
        let refusal = rest.json()["message"].as_str().unwrap().to_owned();

        // The plain dialect: the close says it, with INVALID_ARGUMENT's code.
        let mut ws = connect(&h, path, None, &[]).await;
        let (_, code, reason) = frames_then_close(&mut ws).await;
        assert_eq!(code, 4003, "{path}: {reason}");
        assert!(
            refusal.starts_with(reason.trim_end_matches('…')),
            "{path}: {reason} / {refusal}"
        );

        // The JSON dialect: the call's status, with the same message.
        let mut ws = connect(&h, path, Some("portico.json.v1"), &[]).await;
        let (frames, code, _) = frames_then_close(&mut ws).await;
        let status = frames
            .iter()
            .find_map(|f| f.get("status"))
            .unwrap_or_else(|| panic!("{path}: {frames:?}"));
        assert_eq!(status["code"], 3, "{path}");
        assert_eq!(status["message"], refusal.as_str(), "{path}");
        assert_eq!(code, 1000, "{path}");
    }
}

#[tokio::test]
async fn bidi_chat_round_trips_and_ends_on_half_close() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/chat", Some("portico.json.v1"), &[]).await;
    for text in ["hi", "there"] {
        send(&mut ws, json!({"message": {"user": "ann", "text": text}})).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["result"]["text"], text);
        assert!(reply["result"]["sentAt"].is_string());
    }
    send(&mut ws, json!({"end": true})).await;
    assert_eq!(next_json(&mut ws).await["status"]["code"], 0);
    assert_eq!(closed(&mut ws).await.0, 1000);
}

#[tokio::test]
async fn the_binary_protocol_carries_protobuf_frames() {
    let h = Harness::start().await;
    let mut ws = connect(
        &h,
        "/portico.demo.v1.Chat/Converse",
        Some("portico.proto.v1"),
        &[],
    )
    .await;
    let msg = pb::ChatMessage {
        user: "bo".into(),
        text: "bin".into(),
        sent_at: None,
    };
    ws.send(Message::Binary(Bytes::from(msg.encode_to_vec())))
        .await
        .unwrap();
    let reply = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => break pb::ChatMessage::decode(b).unwrap(),
            Message::Text(t) => panic!("unexpected control frame {t}"),
            _ => continue,
        }
    };
    assert_eq!(reply.text, "bin");
    send(&mut ws, json!({"end": true})).await;
    assert_eq!(next_json(&mut ws).await["status"]["code"], 0);
}

#[tokio::test]
async fn a_backend_error_ends_the_call_with_its_status() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/probe/fail/5", Some("portico.json.v1"), &[]).await;
    let end = next_json(&mut ws).await;
    assert_eq!(end["status"]["code"], 5);
    assert_eq!(
        end["status"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(closed(&mut ws).await.0, 1000);

    // The plain dialect: an error frame, then the code in the close frame.
    let mut ws = connect(&h, "/v1/probe/fail/7", None, &[]).await;
    assert_eq!(next_json(&mut ws).await["error"]["code"], 7);
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4007);
    assert!(reason.contains("PermissionDenied"), "{reason}");
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_backend_call() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/feed?count=1000&interval_ms=20", None, &[]).await;
    next_json(&mut ws).await;
    next_json(&mut ws).await;
    drop(ws);
    let feed = h.backends.feed.clone();
    assert!(
        eventually(|| feed.cancelled_watches() == 1).await,
        "the backend saw the cancellation"
    );
}

#[tokio::test]
async fn a_slow_reader_slows_the_backend_instead_of_growing_buffers() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/feed?count=100000&padding=16384", None, &[]).await;
    next_json(&mut ws).await;
    // Read nothing for a while: the backend may only run ahead by what the
    // socket, the gateway's bounded queues and HTTP/2 windows hold.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ahead = h.backends.feed.sent_events();
    assert!(
        ahead < 1_000,
        "the backend produced {ahead} of 100000 events while nobody read"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = h.backends.feed.sent_events();
    assert!(later - ahead < 50, "still bounded: {ahead} then {later}");
    // Reading again lets it flow: the backend moves before we drain what was buffered.
    let mut read = 0;
    while h.backends.feed.sent_events() == later {
        next_json(&mut ws).await;
        read += 1;
        assert!(
            read < 2_000,
            "the backend did not resume after {read} reads"
        );
    }
    eprintln!("backend ran {ahead} events ahead of a stalled reader; resumed after {read} reads");
}

/// The writer batches what is ready: a stream the backend sends as fast as
/// it can still arrives whole and in order, and a chat in the same session,
/// whose answers are lone frames, gets every reply, in order.
#[tokio::test]
async fn a_fast_stream_arrives_whole_and_in_order_beside_a_chat() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    send(
        &mut ws,
        json!({"id": "chat", "open": "/portico.demo.v1.Chat/Converse"}),
    )
    .await;
    send(&mut ws, json!({"id": "fast", "open": "/portico.demo.v1.Feed/Watch", "message": {"count": 3000, "topic": "f"}})).await;
    let mut seqs = Vec::new();
    let mut statuses: std::collections::HashMap<String, i64> = Default::default();
    let mut said = 0;
    let mut heard = Vec::new();
    while statuses.len() < 2 {
        let f = next_json(&mut ws).await;
        let id = f["id"].as_str().unwrap().to_owned();
        if let Some(s) = f.get("status") {
            statuses.insert(id, s["code"].as_i64().unwrap());
            continue;
        }
        let Some(r) = f.get("result") else { continue };
        if id == "fast" {
            seqs.push(r["seq"].as_str().unwrap().parse::<i64>().unwrap());
            // A chat message now and then while the stream flows; the
            // chat ends once it has had its replies.
            if seqs.len() % 1000 == 1 && said < 3 {
                said += 1;
                send(
                    &mut ws,
                    json!({"id": "chat", "message": {"user": "ann", "text": format!("m{said}")}}),
                )
                .await;
            }
        } else {
            heard.push(r["text"].as_str().unwrap().to_owned());
            if heard.len() == 3 {
                send(&mut ws, json!({"id": "chat", "end": true})).await;
            }
        }
    }
    assert_eq!(statuses["fast"], 0);
    assert_eq!(statuses["chat"], 0);
    assert_eq!(
        seqs,
        (1..=3000).collect::<Vec<_>>(),
        "every message, once, in order"
    );
    assert_eq!(heard, ["m1", "m2", "m3"]);
}

#[tokio::test]
async fn many_calls_share_one_socket_and_cancelling_one_spares_the_others() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    send(&mut ws, json!({"id": "a", "open": "/portico.demo.v1.Feed/Watch", "message": {"count": 3, "intervalMs": 30, "topic": "a"}})).await;
    send(&mut ws, json!({"id": "b", "open": "/portico.demo.v1.Feed/Watch", "message": {"count": 3, "intervalMs": 30, "topic": "b"}})).await;
    send(&mut ws, json!({"id": "c", "open": "/portico.demo.v1.Feed/Watch", "message": {"count": 1000, "intervalMs": 10, "topic": "c"}})).await;
    send(
        &mut ws,
        json!({"id": "d", "open": "/portico.demo.v1.Library/GetShelf", "message": {"shelf": "2"}}),
    )
    .await;
    let mut results: std::collections::HashMap<String, Vec<Value>> = Default::default();
    let mut statuses: std::collections::HashMap<String, i64> = Default::default();
    let mut cancelled = false;
    while statuses.len() < 4 {
        let f = next_json(&mut ws).await;
        let id = f["id"].as_str().unwrap().to_owned();
        if let Some(r) = f.get("result") {
            results.entry(id.clone()).or_default().push(r.clone());
            if id == "c" && !cancelled {
                send(&mut ws, json!({"id": "c", "cancel": true})).await;
                cancelled = true;
            }
        } else if let Some(s) = f.get("status") {
            statuses.insert(id, s["code"].as_i64().unwrap());
        }
    }
    assert_eq!(statuses["a"], 0);
    assert_eq!(statuses["b"], 0);
    assert_eq!(statuses["c"], 1, "c was cancelled");
    assert_eq!(statuses["d"], 0);
    assert_eq!(results["a"].len(), 3);
    assert!(results["b"].iter().all(|e| e["topic"] == "b"));
    assert_eq!(results["d"][0]["theme"], "History");
    let feed = h.backends.feed.clone();
    assert!(
        eventually(|| feed.cancelled_watches() == 1).await,
        "only c's backend stream was cancelled"
    );
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_session_stays_up() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next_json(&mut ws).await["error"]["code"], 3);
    // JSON of another shape is said in the protocol's words: the key at
    // fault and what it holds, never a type of the gateway's own code.
    for (frame, field, says) in [
        ("[1,2]", "", "a frame is a JSON object"),
        ("\"hello\"", "", "not a string"),
        (
            "{\"id\": 5, \"message\": {}}",
            "id",
            "id must be a string, not a number",
        ),
        (
            "{\"id\": \"a\", \"end\": \"yes\"}",
            "end",
            "end must be true, not a string",
        ),
        (
            "{\"id\": \"a\", \"open\": null, \"cancel\": 1}",
            "cancel",
            "cancel must be true, not a number",
        ),
    ] {
        ws.send(Message::text(frame)).await.unwrap();
        let e = next_json(&mut ws).await;
        assert_eq!(e["error"]["code"], 3, "{frame}: {e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(says) && !message.contains("JsonFrame"),
            "{frame}: {message}"
        );
        let violation = &e["error"]["details"][0]["fieldViolations"][0]["field"];
        assert_eq!(violation, field, "{frame}: {e}");
    }
    send(&mut ws, json!({"id": "zz", "message": {}})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["id"], "zz");
    assert!(e["error"]["message"].as_str().unwrap().contains("zz"));
    send(
        &mut ws,
        json!({"id": "u", "open": "/portico.demo.v1.Feed/Upload"}),
    )
    .await;
    // A bad message of an upload under way ends the upload with the
    // refusal: going on without it would leave a hole in its input.
    send(&mut ws, json!({"id": "u", "message": {"seq": "x"}})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(
        (e["id"].as_str(), e["status"]["code"].as_i64()),
        (Some("u"), Some(3)),
        "{e}"
    );
    send(&mut ws, json!({"id": "u", "message": {"seq": 1}})).await;
    let e = next_json(&mut ws).await;
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no open call has id \"u\""),
        "{e}"
    );
    // A message after the end of input loses nothing: it is refused alone.
    send(
        &mut ws,
        json!({"id": "v", "open": "/portico.demo.v1.Feed/Upload"}),
    )
    .await;
    send(&mut ws, json!({"id": "v", "message": {"seq": 1}})).await;
    send(&mut ws, json!({"id": "v", "end": true})).await;
    send(&mut ws, json!({"id": "v", "message": {"seq": 2}})).await;
    let mut saw_after_end = false;
    let mut summary = None;
    while summary.is_none() || !saw_after_end {
        let f = next_json(&mut ws).await;
        if f.get("error").is_some() {
            assert!(f["error"]["message"]
                .as_str()
                .unwrap()
                .contains("after the end of input"));
            saw_after_end = true;
        } else if let Some(r) = f.get("result") {
            summary = Some(r.clone());
        }
    }
    assert_eq!(
        summary.unwrap()["count"],
        1,
        "the late message was not sent"
    );
    // An `open` whose message is bad is refused whole: no call is left
    // open under its id, so the same id opens again at once.
    send(
        &mut ws,
        json!({"id": "g", "open": "/portico.demo.v1.Library/GetShelf", "message": {"shelf": "1", "bogus": 1}}),
    )
    .await;
    let e = loop {
        let f = next_json(&mut ws).await;
        if f["id"] == "g" {
            break f;
        }
    };
    assert_eq!(e["error"]["code"], 3, "{e}");
    // The session still takes calls.
    send(
        &mut ws,
        json!({"id": "g", "open": "/portico.demo.v1.Library/GetShelf", "message": {"shelf": "1"}}),
    )
    .await;
    loop {
        let f = next_json(&mut ws).await;
        if f["id"] == "g" && f.get("result").is_some() {
            assert_eq!(f["result"]["theme"], "Fiction");
            break;
        }
    }
}

#[tokio::test]
async fn cross_origin_pages_are_refused_unless_allowed() {
    let h = Harness::start().await;
    let err = try_connect(
        &h,
        "/v1/shelves/1",
        None,
        &[("origin", "https://evil.example.net")],
    )
    .await
    .unwrap_err();
    assert_eq!(err, 403);
    let own = format!("http://{}", h.gateway.addr);
    assert!(try_connect(&h, "/v1/shelves/1", None, &[("origin", &own)])
        .await
        .is_ok());
    // The gateway's host and port under a web page's scheme, either one (a
    // TLS-terminating proxy may stand in front); no other scheme.
    let behind_tls = format!("https://{}", h.gateway.addr);
    assert!(
        try_connect(&h, "/v1/shelves/1", None, &[("origin", &behind_tls)])
            .await
            .is_ok()
    );
    for scheme in ["ws", "ftp"] {
        let other = format!("{scheme}://{}", h.gateway.addr);
        assert_eq!(
            try_connect(&h, "/v1/shelves/1", None, &[("origin", &other)])
                .await
                .unwrap_err(),
            403,
            "{other}"
        );
    }

    let h = Harness::start_with(
        "[websocket]\nallowed_origins = [\"https://app.example.com\"]\n",
        "",
    )
    .await;
    assert!(try_connect(
        &h,
        "/v1/shelves/1",
        None,
        &[("origin", "https://app.example.com")]
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn browser_credentials_become_the_authorization_metadata() {
    let h = Harness::start_with("[websocket]\ntoken_query_param = \"access_token\"\n", "").await;
    let auth = |v: Value| {
        v["result"]["metadata"]["authorization"]
            .as_str()
            .map(str::to_owned)
    };

    let mut ws = connect(&h, "/v1/probe/headers?access_token=q1", None, &[]).await;
    assert_eq!(auth(next_json(&mut ws).await).as_deref(), Some("Bearer q1"));
    // The same token twice is one; neither copy is left in the query,
    // where it would be read as a field of the method's request.
    let twice = "/v1/probe/headers?access_token=q1&access_token=q1";
    let mut ws = connect(&h, twice, None, &[]).await;
    assert_eq!(auth(next_json(&mut ws).await).as_deref(), Some("Bearer q1"));
    // Two different ones are two credentials, in either order: refused
    // before the upgrade, as two subprotocol tokens are (below).
    for (query, says) in [
        (
            "access_token=q1&access_token=q2",
            "more than one credential",
        ),
        (
            "access_token=q2&access_token=q1",
            "more than one credential",
        ),
        // An empty one names no token: said as such, not as a header the
        // client never sent.
        ("access_token=", "is empty: give the token"),
    ] {
        let mut req = format!("ws://{}/v1/probe/headers?{query}", h.gateway.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 400, "{query}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains(says), "{query}: {body}");
            }
            other => panic!("{query}: {other:?}"),
        }
    }
    use base64::Engine as _;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("p3");
    let protocols = format!("portico.json.v1, portico.token.{token}");
    let mut ws = connect(&h, "/v1/probe/headers", Some(&protocols), &[]).await;
    // This dialect sends the backend's response headers first.
    let headers = next_json(&mut ws).await;
    assert!(headers["headers"]["x-served-by"].is_string(), "{headers}");
    assert_eq!(auth(next_json(&mut ws).await).as_deref(), Some("Bearer p3"));

    // An entry that cannot be a token is refused before the upgrade, saying
    // which way it is wrong; so are two different tokens.
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("q9");
    let two = format!("{token}, portico.token.{other}");
    for (entry, says) in [
        ("p@3!", "is not written in base64url (padding optional)"),
        // "abc" is base64url of bytes that are not text.
        ("abc", "is base64url, but not of a token"),
        (two.as_str(), "more than one credential"),
    ] {
        let protocols = format!("portico.json.v1, portico.token.{entry}");
        let mut req = format!("ws://{}/v1/probe/headers", h.gateway.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 400, "{entry}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains(says), "{entry}: {body}");
            }
            other => panic!("{entry}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unknown_path_is_refused_before_the_upgrade() {
    let h = Harness::start().await;
    assert_eq!(
        try_connect(&h, "/v2/nothing", None, &[]).await.unwrap_err(),
        404
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let h = Harness::start_with(
        "[websocket]\nidle_timeout = \"300ms\"\nping_interval = \"100ms\"\n",
        "",
    )
    .await;
    // A client that never answers a ping (raw bytes: a WebSocket library
    // would answer them), so the connection is idle whatever it is sent.
    use tokio::io::AsyncReadExt;
    let mut tcp = crate::support::ws_raw::session(h.gateway.addr).await;
    let opened = std::time::Instant::now();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen))
        .await
        .expect("the gateway closes the idle connection")
        .unwrap();
    // Not at the first pings: the timeout, not a ping, closes it (the
    // client's clock starts a little after the gateway's).
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}"
    );
    // Pings came (0x89), then the close frame: 1001 "idle timeout".
    let close = [&[0x88u8, 14, 0x03, 0xe9][..], b"idle timeout"].concat();
    assert!(seen.windows(2).any(|w| w == [0x89, 0]), "pinged: {seen:?}");
    assert!(seen.windows(close.len()).any(|w| w == close), "{seen:?}");

    // A call still running is told why it ends, before the close.
    use tokio::io::AsyncWriteExt;
    let mut tcp = crate::support::ws_raw::session(h.gateway.addr).await;
    let open = json!({"id": "w", "open": "/portico.demo.v1.Feed/Watch", "message": {"count": 1000, "intervalMs": 50}});
    tcp.write_all(&crate::support::ws_raw::masked(
        0x81,
        open.to_string().as_bytes(),
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen))
        .await
        .expect("the gateway closes the idle connection")
        .unwrap();
    let text = String::from_utf8_lossy(&seen);
    let status_at = text
        .find("\"status\"")
        .unwrap_or_else(|| panic!("no status frame: {text}"));
    assert!(
        text[status_at..].contains("the client sent nothing for 300ms (websocket.idle_timeout)"),
        "{text}"
    );
    let close_at = seen
        .windows(close.len())
        .position(|w| w == close)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(status_at < close_at, "the status comes before the close");
}

#[tokio::test]
async fn an_idle_client_that_stopped_reading_is_still_closed_and_its_calls_cancelled() {
    let h = Harness::start_with(
        "[websocket]\nidle_timeout = \"300ms\"\nping_interval = \"100ms\"\n",
        "",
    )
    .await;
    // A stream of large messages to a client that neither reads nor
    // answers pings: the socket and the writer's queue fill, and the
    // gateway's own close cannot be written.
    use tokio::io::AsyncWriteExt;
    let mut tcp = crate::support::ws_raw::session(h.gateway.addr).await;
    let open = json!({"id": "w", "open": "/portico.demo.v1.Feed/Watch", "message": {"count": 5000, "padding": 65536}});
    let frame = open.to_string();
    // Over 125 bytes: the 16-bit length form, masked with a zero key.
    let mut bytes = vec![0x81, 0x80 | 126];
    bytes.extend_from_slice(&(frame.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(frame.as_bytes());
    tcp.write_all(&bytes).await.unwrap();
    // The call is stopped (the backend sees its stream cancelled), and
    // the session ends within the close's grace and the writer's: the
    // gateway drops the connection rather than wait on the client forever.
    let sessions = h.gateway.live.carry.sessions.clone();
    let open = || sessions.load(std::sync::atomic::Ordering::Acquire);
    let cancelled =
        crate::support::eventually_async(|| async { h.backends.feed.cancelled_watches() >= 1 })
            .await;
    assert!(
        cancelled,
        "the stream to a client that stopped reading runs on"
    );
    let ended = crate::support::eventually_async(|| async { open() == 0 }).await;
    assert!(
        ended,
        "the session still waits on a client that does not read"
    );
    drop(tcp);
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/v1/feed?count=1000&interval_ms=50", None, &[]).await;
    next_json(&mut ws).await;
    let gw = h.gateway;
    let shutdown = tokio::spawn(gw.shutdown());
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => break f.code,
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, CloseCode::Away);
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_connection_over_its_call_and_message_rates_is_told_and_no_call_goes_on_with_a_hole() {
    let h = Harness::start_with(
        "[websocket]\ncalls_per_second = 1.5\nmessages_per_second = 3.5\n",
        "",
    )
    .await;
    let mut ws = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    // Two opens fit the call budget (2 at once); the third is refused with when to retry.
    send(
        &mut ws,
        json!({"id": "a", "open": "/portico.demo.v1.Chat/Converse"}),
    )
    .await;
    send(
        &mut ws,
        json!({"id": "b", "open": "/portico.demo.v1.Library/GetShelf", "message": {"shelf": "1"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"]["theme"], "Fiction");
    assert_eq!(next_json(&mut ws).await["status"]["code"], 0);
    send(
        &mut ws,
        json!({"id": "c", "open": "/portico.demo.v1.Library/GetShelf", "message": {"shelf": "1"}}),
    )
    .await;
    let refused = next_json(&mut ws).await;
    assert_eq!(refused["id"], "c", "{refused}");
    assert_eq!(refused["error"]["code"], 8, "RESOURCE_EXHAUSTED: {refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("calls opened per second"));

    // The message budget (4 at once) is spent by the three opens plus one message.
    send(
        &mut ws,
        json!({"id": "a", "message": {"user": "ann", "text": "one"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"]["text"], "one");
    send(
        &mut ws,
        json!({"id": "a", "message": {"user": "ann", "text": "two"}}),
    )
    .await;
    // A message refused on a call under way would be a hole in its input:
    // the call ends with the refusal (reset at the backend), never goes on
    // without it.
    let ended = next_json(&mut ws).await;
    assert_eq!(
        (ended["id"].as_str(), ended["status"]["code"].as_i64()),
        (Some("a"), Some(8)),
        "{ended}"
    );
    assert!(ended["status"]["message"]
        .as_str()
        .unwrap()
        .contains("messages per second"));
    // The session goes on: once the budgets refill, a call runs whole.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send(
        &mut ws,
        json!({"id": "a", "open": "/portico.demo.v1.Chat/Converse", "message": {"user": "ann", "text": "three"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"]["text"], "three");
    send(&mut ws, json!({"id": "a", "end": true})).await;
    assert_eq!(next_json(&mut ws).await["status"]["code"], 0);
}

#[tokio::test]
async fn websocket_sessions_count_against_max_connections() {
    let h = Harness::start_with("[server.limits]\nmax_connections = 2\n", "").await;
    let mut first = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    let _second = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    // Both slots are held by the sessions: a third connection waits.
    let waiting =
        tokio::time::timeout(Duration::from_millis(400), h.client.get("/v1/shelves/1")).await;
    assert!(
        waiting.is_err(),
        "a third connection was served past max_connections"
    );
    // Once a session ends, its slot serves the next connection.
    first.close(None).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), h.client.get("/v1/shelves/1"))
        .await
        .expect("served once a slot is free");
    assert_eq!(r.status, http::StatusCode::OK);
}

#[tokio::test]
async fn frames_whose_call_is_ambiguous_are_refused_not_guessed() {
    let h = Harness::start().await;

    // A multiplexed session: every frame names its call.
    let mut ws = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    send(
        &mut ws,
        json!({"open": "/portico.demo.v1.Probe/Headers", "message": {}}),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["error"]["code"], 3, "{e}");
    assert!(e.get("id").is_none(), "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("id"),
        "{e}"
    );
    send(
        &mut ws,
        json!({"id": "", "open": "/portico.demo.v1.Probe/Headers", "message": {}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["error"]["code"], 3);
    assert_eq!(h.backends.probe.calls(), 0, "no call was opened");

    // A session opened on a method's path is one call: its frames carry no id.
    let mut ws = connect(
        &h,
        "/portico.demo.v1.Chat/Converse",
        Some("portico.json.v1"),
        &[],
    )
    .await;
    send(&mut ws, json!({"message": {"user": "ann", "text": "hi"}})).await;
    let r = next_json(&mut ws).await;
    assert_eq!(r["result"]["text"], "hi", "{r}");
    assert!(r.get("id").is_none());
    // A frame naming a call is refused, and its message lost: the call
    // ends with the refusal rather than go on with a hole.
    send(
        &mut ws,
        json!({"id": "x", "message": {"user": "ann", "text": "hi"}}),
    )
    .await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["status"]["code"], 3, "{e}");
    assert!(
        e["status"]["message"]
            .as_str()
            .unwrap()
            .contains("its frames carry no id"),
        "{e}"
    );
}

#[tokio::test]
async fn an_id_may_be_reused_right_after_its_call_is_cancelled() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    send(
        &mut ws,
        json!({"id": "a", "open": "/portico.demo.v1.Chat/Converse"}),
    )
    .await;
    // Cancel and reopen in one burst: the first call's end must not take the second with it.
    send(&mut ws, json!({"id": "a", "cancel": true})).await;
    send(
        &mut ws,
        json!({"id": "a", "open": "/portico.demo.v1.Chat/Converse"}),
    )
    .await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["status"]["code"], 1, "{first}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(
        &mut ws,
        json!({"id": "a", "message": {"user": "ann", "text": "still here"}}),
    )
    .await;
    let echo = next_json(&mut ws).await;
    assert_eq!(
        (echo["id"].as_str(), echo["result"]["text"].as_str()),
        (Some("a"), Some("still here")),
        "{echo}"
    );
    // A cancel after the status frame adds nothing: the status frame stays
    // the call's last, and the next frame is about something else.
    send(&mut ws, json!({"id": "a", "cancel": true})).await;
    assert_eq!(next_json(&mut ws).await["status"]["code"], 1);
    send(&mut ws, json!({"id": "a", "cancel": true})).await;
    send(&mut ws, json!({"id": "z", "end": true})).await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["id"], "z", "{e}");
    assert!(e.get("error").is_some(), "{e}");
}

#[tokio::test]
async fn a_call_may_be_opened_by_its_method_name_without_the_leading_slash() {
    let h = Harness::start().await;
    let mut ws = connect(&h, "/ws", Some("portico.json.v1"), &[]).await;
    send(
        &mut ws,
        json!({"id": "a", "open": "portico.demo.v1.Library/GetShelf", "message": {"shelf": "1"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"]["theme"], "Fiction");
    assert_eq!(next_json(&mut ws).await["status"]["code"], 0);
    // The method's path is normalized as a request path is.
    send(
        &mut ws,
        json!({"id": "n", "open": "/x/../portico.demo.v1.Library/./GetShelf", "message": {"shelf": "1"}}),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["result"]["theme"], "Fiction");
    assert_eq!(next_json(&mut ws).await["status"]["code"], 0);
    // Metadata that is not a valid header, or that names one of the
    // connection's framing, refuses the open, naming it and why.
    for (name, value, why) in [
        ("te", "trailers", "framing"),
        ("host", "elsewhere", "framing"),
        ("bad name", "x", "not a valid header name"),
        ("x-ok", "line\nbreak", "not a valid header value"),
    ] {
        send(
            &mut ws,
            json!({"id": "b", "open": "/portico.demo.v1.Library/GetShelf", "metadata": {name: value}, "message": {"shelf": "1"}}),
        )
        .await;
        let refused = next_json(&mut ws).await;
        assert_eq!(refused["error"]["code"], 3, "{refused}");
        let text = refused.to_string();
        assert!(
            text.contains(&format!("metadata.{name}")) && text.contains(why),
            "{name}: {refused}"
        );
    }
}

#[test]
fn pings_further_apart_than_the_idle_timeout_are_a_config_error() {
    let text = support::config_text(
        "127.0.0.1:1".parse().unwrap(),
        "[websocket]\nidle_timeout = \"4s\"\nping_interval = \"60s\"\n",
        "",
    );
    let err = portico::config::Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "websocket.ping_interval", "{err}");
    assert!(
        err.to_string()
            .contains("must be shorter than idle_timeout"),
        "{err}"
    );
}

/// A headers frame carries the backend's reply metadata as gRPC-Web and
/// Connect clients get it: a binary entry as its base64 text, and the
/// call's own request id in place of one the backend set.
#[tokio::test]
async fn a_headers_frame_carries_binary_entries_and_the_calls_own_id() {
    use base64::Engine as _;
    let h = Harness::start().await;
    let mut ws = connect(
        &h,
        "/v1/probe/headers",
        Some("portico.json.v1"),
        &[
            ("x-request-id", "session-7"),
            ("x-reply-x-data-bin", "SUI="),
            ("x-reply-x-request-id", "the-backends"),
        ],
    )
    .await;
    let frame = next_json(&mut ws).await;
    let headers = &frame["headers"];
    let data = headers["x-data-bin"]
        .as_str()
        .expect("the binary entry is there");
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(data.trim_end_matches('='))
        .unwrap();
    assert_eq!(decoded, b"IB", "{frame}");
    assert_eq!(headers["x-request-id"], "session-7", "{frame}");

    // In a multiplexed session each call's id is its own, not the session's.
    let mut ws = connect(
        &h,
        "/ws",
        Some("portico.json.v1"),
        &[("x-request-id", "session-8")],
    )
    .await;
    send(
        &mut ws,
        json!({"id": "h", "open": "/portico.demo.v1.Probe/Headers", "message": {},
               "metadata": {"x-reply-x-request-id": "the-backends", "x-reply-x-data-bin": "SUI="}}),
    )
    .await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["id"], "h", "{frame}");
    assert_eq!(frame["headers"]["x-request-id"], "session-8.0", "{frame}");
    assert!(frame["headers"]["x-data-bin"].is_string(), "{frame}");

    // A failed call's status frame carries the backend's metadata, with
    // the call's id too.
    send(
        &mut ws,
        json!({"id": "f", "open": "/portico.demo.v1.Probe/Fail", "message": {"code": 5},
               "metadata": {"x-reply-x-request-id": "the-backends"}}),
    )
    .await;
    let status = loop {
        let frame = next_json(&mut ws).await;
        if frame["id"] == "f" && frame.get("status").is_some() {
            break frame;
        }
    };
    assert_eq!(status["status"]["code"], 5, "{status}");
    let trailers = &status["trailers"];
    assert_eq!(trailers["x-request-id"], "session-8.1", "{status}");
}

/// A JSON object holds a name once: metadata the backend sent more than
/// once is one entry with its values joined, in the order sent, as a REST
/// client reading the header as one value gets it. Neither value is lost.
#[tokio::test]
async fn metadata_sent_twice_reaches_a_websocket_client_as_one_joined_entry() {
    let h = Harness::start().await;
    let twice = [("x-reply-x-multi", "a"), ("x-reply-x-multi", "b")];
    let mut ws = connect(&h, "/v1/probe/headers", Some("portico.json.v1"), &twice).await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["headers"]["x-multi"], "a, b", "{frame}");

    // Trailers of a failed call follow the same rule.
    let mut ws = connect(&h, "/v1/probe/fail/5", Some("portico.json.v1"), &twice).await;
    let status = loop {
        let frame = next_json(&mut ws).await;
        if frame.get("status").is_some() {
            break frame;
        }
    };
    assert_eq!(status["status"]["code"], 5, "{status}");
    assert_eq!(status["trailers"]["x-multi"], "a, b", "{status}");
}
