//! Streams over HTTP: server streams as NDJSON or SSE, flushed per message,
//! with an unambiguous terminal error; client streams as NDJSON bodies;
//! bidi full duplex over HTTP/2.

use crate::support;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use std::time::{Duration, Instant};
use support::{eventually, Harness};

/// Reads the body until `n` complete lines (NDJSON) or events (SSE) arrived.
async fn read_until(
    body: &mut hyper::body::Incoming,
    buf: &mut String,
    done: impl Fn(&str) -> bool,
) {
    while !done(buf) {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the next frame arrives")
            .expect("the stream has not ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

#[tokio::test]
async fn the_first_message_arrives_before_the_stream_ends() {
    let h = Harness::start().await;
    let started = Instant::now();
    let resp = h
        .client
        .open(
            Method::GET,
            "/v1/feed?count=3&interval_ms=400&topic=t",
            &[],
            "",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, |b| b.contains('\n')).await;
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "first line took {:?}",
        started.elapsed()
    );
    assert_eq!(
        buf,
        "{\"result\":{\"seq\":\"1\",\"topic\":\"t\",\"text\":\"event 1 on t\"}}\n"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    let lines: Vec<&str> = std::str::from_utf8(&rest).unwrap().lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn a_mid_stream_error_ends_ndjson_with_an_error_line() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/feed?count=5&fail_after=2").await;
    assert_eq!(r.status, StatusCode::OK);
    let lines: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["result"]["seq"], "1");
    assert_eq!(lines[1]["result"]["seq"], "2");
    assert_eq!(lines[2]["error"]["code"], 10);
    assert_eq!(
        lines[2]["error"]["message"],
        "feed interrupted by the backend"
    );
    assert!(lines[2].get("result").is_none());
}

#[tokio::test]
async fn sse_sends_message_events_then_a_named_end_or_error_event() {
    let h = Harness::start().await;
    let accept = [("accept", "text/event-stream")];
    let r = h
        .client
        .send(Method::GET, "/v1/feed?count=2", &accept, "")
        .await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        r.text(),
        "id: 1\ndata: {\"seq\":\"1\",\"topic\":\"news\",\"text\":\"event 1 on news\"}\n\n\
         id: 2\ndata: {\"seq\":\"2\",\"topic\":\"news\",\"text\":\"event 2 on news\"}\n\n\
         event: end\ndata: {}\n\n"
    );
    let r = h
        .client
        .send(Method::GET, "/v1/feed?count=3&fail_after=1", &accept, "")
        .await;
    let text = r.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2);
    assert!(
        events[1].starts_with("event: error\ndata: {"),
        "{}",
        events[1]
    );
    assert!(events[1].contains("\"code\":10"));
}

#[tokio::test]
async fn an_error_before_the_first_message_is_an_ordinary_error_response() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/feed?count=-1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["code"], 3);
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_backend_stream() {
    let h = Harness::start().await;
    let resp = h
        .client
        .open(Method::GET, "/v1/feed?count=1000&interval_ms=20", &[], "")
        .await;
    let mut body = resp.into_body();
    let mut buf = String::new();
    read_until(&mut body, &mut buf, |b| b.lines().count() >= 2).await;
    drop(body);
    let feed = h.backends.feed.clone();
    assert!(
        eventually(|| feed.cancelled_watches() == 1).await,
        "the backend saw the stream cancelled"
    );
}

#[tokio::test]
async fn a_client_stream_is_read_as_newline_delimited_json() {
    let h = Harness::start().await;
    let body = "{\"seq\":1,\"topic\":\"a\"}\n\n{\"seq\":\"2\",\"topic\":\"b\"}\r\n{\"seq\":3,\"topic\":\"a\"}";
    let r = h.client.json(Method::POST, "/v1/feed:upload", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"count": 3, "topics": ["a", "b"], "lastSeq": "3"})
    );
    // The content types a body may have, and NDJSON's own; no other.
    let line = "{\"seq\":1,\"topic\":\"a\"}\n";
    for (content_type, status) in [
        ("application/x-ndjson", StatusCode::OK),
        ("application/jsonl; charset=utf-8", StatusCode::OK),
        ("application/x-www-form-urlencoded", StatusCode::OK),
        (
            "application/octet-stream",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        ("image/png", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let r = h
            .client
            .send(
                Method::POST,
                "/v1/feed:upload",
                &[("content-type", content_type)],
                line,
            )
            .await;
        assert_eq!(r.status, status, "{content_type}: {}", r.text());
    }
    // A query parameter the upload does not take is the URL's fault, said
    // before any line is read.
    let r = h
        .client
        .json(Method::POST, "/v1/feed:upload?colour=red", line)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("query parameter colour") && !message.contains("line 1"),
        "{message}"
    );
}

#[tokio::test]
async fn a_bad_line_in_a_client_stream_is_a_400_naming_the_field() {
    let h = Harness::start().await;
    let body = "{\"seq\":1}\n\n{\"seq\":2,\"colour\":\"red\"}\n{\"seq\":3}\n";
    let r = h.client.json(Method::POST, "/v1/feed:upload", body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.violated_field(), "colour");
    // The line of the whole body, blank lines counted, said first
    // whatever the fault; the column where the parser has one.
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("line 3 of the request: ") && message.ends_with(" at column 17"),
        "{message}"
    );
    let deep = format!(
        "{{\"seq\":1}}\n{{\"seq\":{}1{}}}\n",
        "[".repeat(200),
        "]".repeat(200)
    );
    for (body, line) in [
        // A value of the wrong type.
        ("{\"seq\":1}\n{\"seq\":\"two\"}\n", 2),
        // Two messages on one line.
        ("{\"seq\":1} {\"seq\":2}\n", 1),
        // Nested past what the gateway reads.
        (deep.as_str(), 2),
    ] {
        let r = h.client.json(Method::POST, "/v1/feed:upload", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        let message = r.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(&format!("line {line} of the request: ")),
            "{body:?}: {message}"
        );
        assert!(!message.contains("line 1 column"), "{body:?}: {message}");
    }
}

#[tokio::test]
async fn a_streamed_line_over_the_message_limit_is_a_413_however_it_arrives() {
    let h = Harness::start_with("[server.limits]\nmax_grpc_message_bytes = 1000\n", "").await;
    let long = format!("{{\"seq\":1,\"topic\":\"{}\"}}", "t".repeat(2000));
    // Whole lines in one chunk, the long one in the middle or last and
    // unterminated: each is refused by the limit, never sent on.
    for body in [
        format!("{{\"seq\":0}}\n{long}\n{{\"seq\":2}}\n"),
        format!("{{\"seq\":0}}\n{long}"),
    ] {
        let r = h.client.json(Method::POST, "/v1/feed:upload", &body).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
        assert_eq!(r.json()["code"], 8);
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("server.limits.max_grpc_message_bytes (1000 bytes)"),
            "{}",
            r.text()
        );
    }
}

#[tokio::test]
async fn bidi_runs_full_duplex_over_http2() {
    let h = Harness::start().await;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::post(h.client.url("/v1/chat"))
        .body(body)
        .unwrap();
    tx.send(Ok(http_body::Frame::data(Bytes::from(
        "{\"user\":\"ann\",\"text\":\"hi\"}\n",
    ))))
    .await
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut buf = String::new();
    // The reply to the first message arrives while the request is still open.
    read_until(&mut body, &mut buf, |b| b.lines().count() >= 1).await;
    let first: serde_json::Value = serde_json::from_str(buf.lines().next().unwrap()).unwrap();
    assert_eq!(first["result"]["text"], "hi");
    assert!(first["result"]["sentAt"].is_string());
    tx.send(Ok(http_body::Frame::data(Bytes::from(
        "{\"user\":\"ann\",\"text\":\"bye\"}\n",
    ))))
    .await
    .unwrap();
    read_until(&mut body, &mut buf, |b| b.lines().count() >= 2).await;
    assert!(buf.lines().nth(1).unwrap().contains("\"bye\""));
    drop(tx);
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .unwrap()
        .unwrap();
    assert!(
        rest.to_bytes().is_empty(),
        "the stream ends after the client half-closes"
    );
}

/// A stream's messages are its content: a backend status HTTP allows none
/// for (204, 205, 304) is a 200 with every line, over HTTP/1.1 and
/// HTTP/2, while another success status is kept.
#[tokio::test]
async fn a_status_without_content_does_not_cut_a_stream() {
    let h = Harness::start().await;
    let http2 = support::HttpClient::http2(h.gateway.addr);
    for client in [&h.client, &http2] {
        for (asked, status) in [
            ("204", StatusCode::OK),
            ("205", StatusCode::OK),
            ("304", StatusCode::OK),
            ("206", StatusCode::PARTIAL_CONTENT),
        ] {
            let r = client
                .send(
                    Method::GET,
                    "/v1/feed?count=2",
                    &[("x-reply-x-http-status", asked)],
                    "",
                )
                .await;
            assert_eq!(r.status, status, "{asked}");
            assert_eq!(r.text().lines().count(), 2, "{asked}: {}", r.text());
        }
    }
    // Several Accept fields are one list.
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/feed?count=1",
            &[
                ("accept", "application/json"),
                ("accept", "text/event-stream"),
            ],
            "",
        )
        .await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
}
