//! gRPC framing and status at the edges: a length prefix over the message
//! limit is refused as soon as it is read, compressed bodies are refused
//! rather than passed on as plain, and a plain HTTP error from a backend
//! (or a proxy before it) becomes the status gRPC's mapping gives.

use crate::support;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use support::protocols::{call, EVERY_PROTOCOL};
use support::Harness;

#[tokio::test]
async fn a_length_prefix_over_the_limit_is_refused_before_its_bytes_arrive() {
    let h = Harness::start_with("[server.limits]\nmax_grpc_message_bytes = 1024\n", "").await;
    // A frame that claims 4 GiB, in each body encoding (gRPC-Web text is
    // decoded as it arrives, so its prefix is read as soon as it is sent).
    for (content_type, claim) in [
        ("application/grpc", &[0, 0xff, 0xff, 0xff, 0xff][..]),
        ("application/grpc-web", &[0, 0xff, 0xff, 0xff, 0xff][..]),
        ("application/grpc-web-text", &b"AP////8="[..]),
    ] {
        let sock = tokio::net::TcpStream::connect(h.gateway.addr)
            .await
            .unwrap();
        let (client, conn) = h2::client::handshake(sock).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::post(format!(
            "http://{}/portico.demo.v1.Probe/Headers",
            h.gateway.addr
        ))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (resp, mut body) = client.send_request(req, false).unwrap();
        // Its bytes never come; the stream stays open.
        body.send_data(Bytes::copy_from_slice(claim), false)
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(2), resp)
            .await
            .unwrap_or_else(|_| panic!("{content_type}: refused at once, not after the bytes"))
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{content_type}");
        assert_eq!(
            resp.headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap()),
            Some("8"),
            "{content_type}: RESOURCE_EXHAUSTED"
        );
    }
    assert_eq!(h.backends.probe.calls(), 0, "the backend got nothing");
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn compressed_bodies_are_refused_naming_the_encoding_on_every_protocol() {
    let h = Harness::start().await;
    // REST and Connect say so with Content-Encoding.
    for (path, headers) in [
        (
            "/portico.demo.v1.Probe/Headers",
            vec![("content-type", "application/json")],
        ),
        (
            "/portico.demo.v1.Probe/Headers",
            vec![
                ("content-type", "application/json"),
                ("connect-protocol-version", "1"),
            ],
        ),
    ] {
        let mut headers = headers;
        headers.push(("content-encoding", "gzip"));
        let r = h
            .client
            .send(http::Method::POST, path, &headers, "\u{1f}\u{8b}not json")
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{path}: {}",
            r.text()
        );
        let body = r.json();
        assert!(
            body["message"].as_str().unwrap().contains("gzip"),
            "{path}: {body}"
        );
        // What the gateway takes instead (RFC 9110 section 12.5.3).
        assert_eq!(r.header("accept-encoding"), Some("identity"), "{path}");
    }
    // gRPC and gRPC-Web mark a compressed message with its flag byte.
    let http2 = h.client.as_http2();
    let compressed = support::frame_bytes(1, b"zz");
    for content_type in ["application/grpc", "application/grpc-web"] {
        let r = http2
            .send(
                http::Method::POST,
                "/portico.demo.v1.Probe/Headers",
                &[
                    ("content-type", content_type),
                    ("grpc-encoding", "gzip"),
                    ("te", "trailers"),
                ],
                compressed.clone(),
            )
            .await;
        let status = r
            .header("grpc-status")
            .or_else(|| r.trailers.get("grpc-status").and_then(|v| v.to_str().ok()))
            .unwrap_or_default()
            .to_owned();
        assert_eq!(status, "12", "{content_type}: UNIMPLEMENTED");
        assert_eq!(
            r.header("grpc-accept-encoding"),
            Some("identity"),
            "{content_type}: says what it takes"
        );
    }
    assert_eq!(
        h.backends.probe.calls(),
        0,
        "nothing compressed reached the backend"
    );
}

#[tokio::test]
async fn native_grpc_needs_http2_and_every_grpc_call_is_a_post() {
    use prost::Message as _;
    let h = Harness::start().await;
    let message = portico::demo::backends::pb::HeadersRequest {}.encode_to_vec();
    // HTTP/1.1 cannot carry gRPC's trailers: the status of a call that sent
    // a reply would be lost, a failed stream read as a clean end.
    let r = h
        .client
        .send(
            http::Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &[("content-type", "application/grpc"), ("te", "trailers")],
            support::frame_bytes(0, &message),
        )
        .await;
    assert_eq!(r.status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    assert_eq!(r.header("grpc-status"), Some("12"));
    let said = r.header("grpc-message").unwrap_or_default().to_owned();
    let said = percent_encoding::percent_decode_str(&said).decode_utf8_lossy();
    assert!(
        said.contains("needs HTTP/2") && said.contains("gRPC-Web or Connect"),
        "{said}"
    );
    assert_eq!(h.backends.probe.calls(), 0, "the backend was not called");
    // gRPC-Web carries its trailers in the body, so HTTP/1.1 serves it.
    let r = h
        .client
        .send(
            http::Method::POST,
            "/portico.demo.v1.Probe/Headers",
            &[("content-type", "application/grpc-web+proto")],
            support::frame_bytes(0, &message),
        )
        .await;
    let (_, trailers) = support::protocols::split_web_body(&r.body);
    assert_eq!(trailers.get("grpc-status").map(String::as_str), Some("0"));
    assert_eq!(h.backends.probe.calls(), 1);
    // Both are POSTs: another method is no call at all.
    let http2 = h.client.as_http2();
    for (method, content_type) in [
        (http::Method::GET, "application/grpc"),
        (http::Method::PUT, "application/grpc"),
        (http::Method::GET, "application/grpc-web+proto"),
    ] {
        let r = http2
            .send(
                method.clone(),
                "/portico.demo.v1.Probe/Headers",
                &[("content-type", content_type), ("te", "trailers")],
                support::frame_bytes(0, &message),
            )
            .await;
        assert_eq!(
            r.header("grpc-status"),
            Some("12"),
            "{method} {content_type}"
        );
        let said = percent_encoding::percent_decode_str(r.header("grpc-message").unwrap_or(""))
            .decode_utf8_lossy()
            .into_owned();
        assert!(
            said.contains("allowed: POST"),
            "{method} {content_type}: {said}"
        );
    }
    assert_eq!(
        h.backends.probe.calls(),
        1,
        "none of them reached the backend"
    );
}

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An HTTP/2 server on a free port answering every request with `answer`.
async fn http2_backend(
    answer: fn(&http::Request<hyper::body::Incoming>) -> http::Response<AnswerBody>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(answer(&req))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
                        .await;
            });
        }
    });
    addr
}

/// A backend that is not gRPC at all: a proxy that answers the status the
/// request's `x-answer` header asks for, with a short text body.
async fn plain_http_backend() -> SocketAddr {
    http2_backend(|req| {
        let status: u16 = req
            .headers()
            .get("x-answer")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(503);
        let mut resp = http::Response::new(
            http_body_util::Full::new(Bytes::from(format!("proxy says {status}"))).boxed(),
        );
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp
    })
    .await
}

#[tokio::test]
async fn a_plain_http_error_from_a_backend_maps_as_grpc_documents_on_every_protocol() {
    let proxy = plain_http_backend().await;
    let h = Harness::start_with_config(move |_| support::config_text(proxy, "", "")).await;
    for (http_status, code) in [
        (401, 16),
        (403, 7),
        (404, 12),
        (429, 14),
        (503, 14),
        (400, 13),
        (500, 2),
    ] {
        let answer = http_status.to_string();
        for protocol in EVERY_PROTOCOL {
            let seen = call(&h, protocol, &[("x-answer", answer.as_str())], "", None).await;
            assert_eq!(
                seen.code, code,
                "HTTP {http_status} over {protocol:?}: {seen:?}"
            );
            assert!(
                seen.message.contains(&format!("proxy says {http_status}")),
                "HTTP {http_status} over {protocol:?}: the body is quoted: {seen:?}"
            );
        }
    }
}

/// A backend that compresses its replies whatever the call accepts (the
/// gateway asks for `identity`): gzip named in the headers, the message
/// flagged compressed.
async fn compressing_backend() -> SocketAddr {
    http2_backend(|_| {
        let mut resp = http::Response::new(
            http_body_util::Full::new(Bytes::from(support::frame_bytes(
                1,
                b"\x1f\x8b not really gzip",
            )))
            .boxed(),
        );
        let headers = resp.headers_mut();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert("grpc-encoding", "gzip".parse().unwrap());
        resp
    })
    .await
}

/// The gateway reads only uncompressed replies and says so: a compressed
/// one is the backend's fault (INTERNAL, 502), named as such on every
/// protocol, not the UNIMPLEMENTED the gRPC library reports.
#[tokio::test]
async fn a_compressed_reply_is_the_backends_fault_on_every_protocol() {
    let backend = compressing_backend().await;
    let h = Harness::start_with_config(move |_| support::config_text(backend, "", "")).await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[], "", None).await;
        assert_eq!(seen.code, 13, "{protocol:?}: {seen:?}");
        assert!(
            seen.message.contains("compressed its reply with gzip"),
            "{protocol:?}: {seen:?}"
        );
    }
    // REST and Connect say it with the status of a bad backend reply.
    let r = h.client.get("/v1/probe/headers").await;
    assert_eq!(r.status, 502, "{}", r.text());
}

/// `grpc-encoding` names the coding of messages flagged compressed: a
/// reply that names one and flags none is plain, and a trailers-only
/// error that names one is the backend's status, on every protocol.
#[tokio::test]
async fn a_coding_named_but_not_used_is_no_compressed_reply() {
    let plain = http2_backend(|_| {
        let mut resp = ok_reply_of(1);
        resp.headers_mut()
            .insert("grpc-encoding", "gzip".parse().unwrap());
        resp
    })
    .await;
    let error = http2_backend(|_| {
        let mut resp = http::Response::new(http_body_util::Full::new(Bytes::new()).boxed());
        let headers = resp.headers_mut();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert("grpc-encoding", "gzip".parse().unwrap());
        headers.insert("grpc-status", "5".parse().unwrap());
        headers.insert("grpc-message", "no such shelf".parse().unwrap());
        resp
    })
    .await;
    for (backend, code, said) in [(plain, 0, ""), (error, 5, "no such shelf")] {
        let h = Harness::start_with_config(move |_| support::config_text(backend, "", "")).await;
        for protocol in EVERY_PROTOCOL {
            let seen = call(&h, protocol, &[], "", None).await;
            assert_eq!(seen.code, code, "{said:?} over {protocol:?}: {seen:?}");
            assert!(seen.message.contains(said), "over {protocol:?}: {seen:?}");
        }
    }
}

/// A gRPC reply of `messages` (empty ones: every message type reads
/// them) and then the `OK` status in trailers.
fn ok_reply_of(messages: usize) -> http::Response<AnswerBody> {
    use http_body::Frame;
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..messages)
        .map(|_| Ok(Frame::data(Bytes::from(support::frame_bytes(0, b"")))))
        .collect();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    frames.push(Ok(Frame::trailers(trailers)));
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let mut resp = http::Response::new(body.boxed());
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp
}

/// `OK` in the reply's headers and no body: gRPC's trailers-only form.
fn ok_trailers_only() -> http::Response<AnswerBody> {
    let mut resp = http::Response::new(http_body_util::Full::new(Bytes::new()).boxed());
    let headers = resp.headers_mut();
    headers.insert("content-type", "application/grpc".parse().unwrap());
    headers.insert("grpc-status", "0".parse().unwrap());
    resp
}

/// Every text frame a `portico.json.v1` call on `path` gets, to its close.
async fn json_v1_frames(h: &Harness, path: &str) -> Vec<serde_json::Value> {
    use futures_util::StreamExt;
    let mut ws = support::json_v1_at(h, path).await;
    let mut frames = Vec::new();
    while let Some(Ok(frame)) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
            frames.push(serde_json::from_str(t.as_str()).unwrap());
        }
    }
    frames
}

/// A unary method's reply is one message, whichever protocol asked: a
/// backend that ends the call `OK` with none (trailers-only or not), or
/// sends two, fails it as INTERNAL, the backend's fault, as a gRPC
/// client's own stub would, and never as a success with no reply (or a
/// gRPC call that broke its protocol by passing it on). No client sees
/// the first of two messages before the error.
#[tokio::test]
async fn a_unary_reply_of_no_message_or_two_is_internal_on_every_protocol() {
    let none = http2_backend(|_| ok_reply_of(0)).await;
    let trailers_only = http2_backend(|_| ok_trailers_only()).await;
    let two = http2_backend(|_| ok_reply_of(2)).await;
    for (backend, said) in [
        (none, "ended the call without a message"),
        (trailers_only, "ended the call without a message"),
        (two, "more than one message for a unary call"),
    ] {
        let h = Harness::start_with_config(move |_| support::config_text(backend, "", "")).await;
        for protocol in EVERY_PROTOCOL {
            let seen = call(&h, protocol, &[], "", None).await;
            assert_eq!(seen.code, 13, "{said}, over {protocol:?}: {seen:?}");
            assert!(seen.message.contains(said), "over {protocol:?}: {seen:?}");
        }
        let r = h.client.get("/v1/probe/headers").await;
        assert_eq!(r.status, 502, "{said}: {}", r.text());
        let frames = json_v1_frames(&h, "/v1/probe/headers").await;
        assert!(
            frames.iter().all(|f| f.get("result").is_none()),
            "{said}: a result before the error: {frames:?}"
        );
        assert!(
            frames.iter().any(|f| f["status"]["code"] == 13),
            "{said}: {frames:?}"
        );
    }
    // A reply of one message is the call's answer.
    let one = http2_backend(|_| ok_reply_of(1)).await;
    let h = Harness::start_with_config(move |_| support::config_text(one, "", "")).await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[], "", None).await;
        assert_eq!(seen.code, 0, "one message, over {protocol:?}: {seen:?}");
    }
}

/// gRPC and gRPC-Web with a message codec other than protobuf are answered
/// as gRPC, UNIMPLEMENTED naming the codec, not read as REST (which would
/// answer a 400 about malformed JSON that a gRPC client reads as INTERNAL).
#[tokio::test]
async fn another_message_codec_is_unimplemented_in_grpc_terms() {
    let h = support::Harness::start().await;
    for content_type in [
        "application/grpc+json",
        "application/grpc-web+json",
        "application/grpc-web-text+json",
    ] {
        let r = h
            .client
            .as_http2()
            .send(
                http::Method::POST,
                "/portico.demo.v1.Library/GetShelf",
                &[("content-type", content_type)],
                support::frame_bytes(0, br#"{"shelf":"1"}"#),
            )
            .await;
        assert_eq!(r.status, 200, "{content_type}");
        let status = r
            .header("grpc-status")
            .or_else(|| r.trailers.get("grpc-status").and_then(|v| v.to_str().ok()));
        assert_eq!(status, Some("12"), "{content_type}: {:?}", r.headers);
        let message = r
            .header("grpc-message")
            .or_else(|| r.trailers.get("grpc-message").and_then(|v| v.to_str().ok()))
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains("json"), "{content_type}: {message}");
    }
}

/// MCP's refusal of a compressed body says what it takes too, as every
/// other protocol's does.
#[tokio::test]
async fn an_mcp_request_with_a_compressed_body_is_told_the_encoding_it_may_use() {
    let h = support::protocols::gateway("", "").await;
    let r = h
        .client
        .send(
            http::Method::POST,
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            "\u{1f}\u{8b}not json",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
    assert_eq!(r.header("accept-encoding"), Some("identity"));
    assert!(r.json()["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("gzip")));
}

/// A compressed message in a stream whose reply has begun is refused where
/// the stream's end is said, with what the gateway takes: gRPC and
/// gRPC-Web in their trailers, Connect in its end-stream's metadata.
#[tokio::test]
async fn a_compressed_message_mid_stream_says_what_the_gateway_takes_on_every_protocol() {
    use http_body_util::StreamBody;
    use prost::Message as _;
    let h = Harness::start().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let hello = portico::demo::backends::pb::ChatMessage {
        user: "ann".into(),
        text: "hi".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for (content_type, first) in [
        ("application/grpc", hello.clone()),
        ("application/grpc-web+proto", hello.clone()),
        (
            "application/connect+json",
            br#"{"user":"ann","text":"hi"}"#.to_vec(),
        ),
    ] {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Infallible>>(4);
        let req = http::Request::post(h.client.url("/portico.demo.v1.Chat/Converse"))
            .header("content-type", content_type)
            .header("te", "trailers")
            .header("grpc-encoding", "gzip")
            .header("connect-content-encoding", "gzip")
            .body(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .unwrap();
        tx.send(Ok(http_body::Frame::data(Bytes::from(
            support::frame_bytes(0, &first),
        ))))
        .await
        .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{content_type}");
        let mut body = resp.into_body();
        // The first reply has gone out: the stream has begun.
        let mut seen = Vec::new();
        while seen.len() < 5 {
            let frame = body.frame().await.unwrap().unwrap();
            if let Ok(data) = frame.into_data() {
                seen.extend_from_slice(&data);
            }
        }
        tx.send(Ok(http_body::Frame::data(Bytes::from(
            support::frame_bytes(1, b"zz"),
        ))))
        .await
        .unwrap();
        let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .unwrap()
            .unwrap();
        let trailers = rest.trailers().cloned().unwrap_or_default();
        seen.extend_from_slice(&rest.to_bytes());
        match content_type {
            "application/grpc" => {
                assert_eq!(trailers["grpc-status"], "12");
                for name in ["grpc-accept-encoding", "connect-accept-encoding"] {
                    assert_eq!(trailers[name], "identity", "gRPC: {name}");
                }
            }
            "application/grpc-web+proto" => {
                let (_, trailers) = support::protocols::split_web_body(&seen);
                assert_eq!(trailers["grpc-status"], "12");
                assert_eq!(trailers["grpc-accept-encoding"], "identity", "gRPC-Web");
            }
            _ => {
                // The last envelope is the end-stream one (flag 2).
                let mut rest = &seen[..];
                let mut end = None;
                while rest.len() >= 5 {
                    let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
                    if rest[0] & 2 != 0 {
                        end = Some(
                            serde_json::from_slice::<serde_json::Value>(&rest[5..5 + len]).unwrap(),
                        );
                    }
                    rest = &rest[5 + len..];
                }
                let end = end.expect("an end-stream envelope");
                assert_eq!(end["error"]["code"], "unimplemented", "{end}");
                assert_eq!(
                    end["metadata"]["connect-accept-encoding"],
                    serde_json::json!(["identity"]),
                    "{end}"
                );
            }
        }
    }
}
