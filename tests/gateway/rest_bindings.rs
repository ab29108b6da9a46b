//! Every kind of google.api.http binding, served by a real tonic backend
//! through the gateway.

use crate::support;
use support::RouteKeys;

use http::{Method, StatusCode};
use support::Harness;

#[tokio::test]
async fn a_path_variable_fills_the_request_field() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/shelves/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "shelves/1", "theme": "Fiction", "bookCount": 2})
    );
}

#[tokio::test]
async fn a_variable_with_a_sub_template_captures_several_segments() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/shelves/1/books/2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["title"], "Solaris");
    // additional_bindings: the same method on a second template.
    let r = h.client.get("/v1/books/shelves/1/books/2").await;
    assert_eq!(r.json()["title"], "Solaris");
}

#[tokio::test]
async fn a_body_field_with_path_parent_creates_with_201_and_location() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(
            Method::POST,
            "/v1/shelves/2/books?bookId=dune",
            r#"{"title":"Dune","pages":"412"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("location"), Some("/v1/shelves/2/books/dune"));
    assert_eq!(r.json()["name"], "shelves/2/books/dune");
    assert_eq!(r.json()["pages"], "412");
    // x-http-status is consumed by the gateway, not passed on.
    assert_eq!(r.header("x-http-status"), None);
}

#[tokio::test]
async fn patch_fills_the_update_mask_from_the_json_keys_sent() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(
            Method::PATCH,
            "/v1/shelves/1/books/1",
            r#"{"pages":999,"author":"U. K. Le Guin"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let mut mask: Vec<&str> = r.header("x-update-mask").unwrap().split(',').collect();
    mask.sort();
    assert_eq!(mask, ["author", "pages"]);
    let book = r.json();
    assert_eq!(book["pages"], "999");
    assert_eq!(book["author"], "U. K. Le Guin");
    // Fields not in the mask are untouched.
    assert_eq!(book["title"], "The Left Hand of Darkness");
    // The name the path binds names the book; repeated in the body, it is
    // still not a field to update.
    let r = h
        .client
        .json(
            Method::PATCH,
            "/v1/shelves/1/books/1",
            r#"{"name":"shelves/1/books/1","pages":998}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-update-mask"), Some("pages"));
    // A PATCH that names nothing to change is refused, not sent with an
    // empty mask (or none) that a backend would read as a full replace.
    // An empty mask is no mask.
    for (query, body) in [
        ("", ""),
        ("", "{}"),
        ("", r#"{"name":"shelves/1/books/1"}"#),
        ("?updateMask=", ""),
        ("?updateMask=", "{}"),
        ("?updateMask=,", "{}"),
        ("?updateMask=%20", "{}"),
        ("?updateMask=", r#"{"name":"shelves/1/books/1"}"#),
    ] {
        let r = h
            .client
            .json(
                Method::PATCH,
                &format!("/v1/shelves/1/books/1{query}"),
                body,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{query} {body:?}: {}",
            r.text()
        );
        assert!(
            r.text().contains("names no field to update"),
            "{}",
            r.text()
        );
    }
    let book = h.client.get("/v1/shelves/1/books/1").await.json();
    assert_eq!(book["pages"], "998", "untouched: {book}");
    // A mask the client gives says what to change (here: reset) by itself.
    let r = h
        .client
        .json(Method::PATCH, "/v1/shelves/1/books/1?updateMask=author", "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-update-mask"), Some("author"));
    // A key set to {} or null is a field to reset: that is a change.
    let r = h
        .client
        .json(
            Method::PATCH,
            "/v1/shelves/1/books/1",
            r#"{"published":null}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-update-mask"), Some("published"));
    // An empty mask beside fields to change: the mask is made from them.
    let r = h
        .client
        .json(
            Method::PATCH,
            "/v1/shelves/1/books/1?updateMask=",
            r#"{"pages":997}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-update-mask"), Some("pages"));
}

/// With `json.reject_unknown_fields = false` an enum name the schema does
/// not know is dropped, as an unknown key is, and so it is no path of the
/// filled update mask either: the field keeps its value (masked, it would
/// be reset), whichever protocol filled the mask.
#[tokio::test]
async fn a_dropped_enum_name_is_no_path_of_the_filled_update_mask() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "[json]\nreject_unknown_fields = false\n", "")
            .with_route_keys("Library", "mcp = true")
    })
    .await;
    let book = || async { h.client.get("/v1/shelves/1/books/1").await.json() };
    let genre = book().await["genre"].clone();
    assert!(
        genre.as_str().is_some_and(|g| g != "GENRE_UNSPECIFIED"),
        "{genre}"
    );

    let r = h
        .client
        .json(
            Method::PATCH,
            "/v1/shelves/1/books/1",
            r#"{"genre":"GENRE_POETRY","pages":321}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-update-mask"), Some("pages"));
    // Nothing left to change: refused, as an empty body is.
    let r = h
        .client
        .json(
            Method::PATCH,
            "/v1/shelves/1/books/1",
            r#"{"genre":"GENRE_POETRY"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(
        r.text().contains("names no field to update"),
        "{}",
        r.text()
    );

    // A WebSocket on the PATCH binding's path.
    let url = format!("ws://{}/v1/shelves/1/books/1?method=PATCH", h.gateway.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(r#"{"genre":"GENRE_POETRY","pages":322}"#))
        .await
        .unwrap();
    let Some(Ok(Message::Text(reply))) = ws.next().await else {
        panic!("no reply")
    };
    let reply: serde_json::Value = serde_json::from_str(reply.as_str()).unwrap();
    assert_eq!(reply["result"]["pages"], "322", "{reply}");

    // An MCP tool of the PATCH method.
    let (_, result) = support::mcp_call(
        &h.client,
        &[],
        "Library_UpdateBook",
        serde_json::json!({ "book": { "name": "shelves/1/books/1", "genre": "GENRE_POETRY", "pages": 323 } }),
    )
    .await;
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(
        result["_meta"]["io.portico/metadata"]["x-update-mask"], "pages",
        "{result}"
    );

    let after = book().await;
    assert_eq!(after["genre"], genre, "{after}");
    assert_eq!(after["pages"], "323", "{after}");
}

/// A status HTTP allows no content (204, 205, 304) gets none, whatever the
/// backend's reply message holds; another success status keeps the body.
#[tokio::test]
async fn a_backend_status_without_content_gets_an_empty_body() {
    let h = Harness::start().await;
    for (asked, status, empty) in [
        ("204", StatusCode::NO_CONTENT, true),
        ("205", StatusCode::RESET_CONTENT, true),
        ("304", StatusCode::NOT_MODIFIED, true),
        ("202", StatusCode::ACCEPTED, false),
    ] {
        let r = h
            .client
            .send(
                Method::GET,
                "/v1/probe/headers",
                &[("x-reply-x-http-status", asked)],
                "",
            )
            .await;
        assert_eq!(r.status, status, "{asked}");
        assert_eq!(r.body.is_empty(), empty, "{asked}: {}", r.text());
        if empty {
            assert!(
                r.header("content-length").is_none_or(|l| l == "0"),
                "{asked}"
            );
        }
    }
}

#[tokio::test]
async fn an_explicit_update_mask_is_kept() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(
            Method::PATCH,
            "/v1/shelves/1/books/1?updateMask=title",
            r#"{"title":"New","pages":1}"#,
        )
        .await;
    assert_eq!(r.header("x-update-mask"), Some("title"));
    assert_eq!(r.json()["pages"], "304");
}

#[tokio::test]
async fn delete_replies_204_with_no_body() {
    let h = Harness::start().await;
    let r = h
        .client
        .send(Method::DELETE, "/v1/shelves/1/books/2", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_eq!(
        h.client.get("/v1/shelves/1/books/2").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_custom_verb_reaches_its_method() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(
            Method::POST,
            "/v1/shelves/1/books/2:archive",
            r#"{"reason":"worn"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["archived"], true);
    assert_eq!(r.json()["labels"]["archived-because"], "worn");
}

#[tokio::test]
async fn response_body_writes_one_field_alone() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/shelves/1/books/2/title").await;
    assert_eq!(r.json(), serde_json::json!("Solaris"));
}

#[tokio::test]
async fn http_body_carries_raw_bytes_both_ways() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/shelves/1/books/2/cover").await;
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert!(r.text().starts_with("<svg") && r.text().contains("Solaris"));

    let png = vec![0x89u8, b'P', b'N', b'G', 0, 1, 2, 3];
    let r = h
        .client
        .send(
            Method::PUT,
            "/v1/shelves/1/books/2/cover",
            &[("content-type", "image/png")],
            png,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["contentType"], "image/png");
    assert_eq!(r.json()["size"], "8");
}

/// google.api.HttpBody { content_type = 1, data = 2 }, encoded by hand.
fn http_body(content_type: &[u8], data: &[u8]) -> Vec<u8> {
    let mut message = vec![0x0a, content_type.len() as u8];
    message.extend_from_slice(content_type);
    message.extend_from_slice(&[0x12, data.len() as u8]);
    message.extend_from_slice(data);
    message
}

/// A gateway for `download.v1.Files`, whose `Download` is a server stream
/// of `google.api.HttpBody` at `GET /v1/files/{name}`, served by `backend`.
async fn download_gateway(backend: std::net::SocketAddr) -> portico::app::Gateway {
    gateway_for_proto(
        r#"syntax = "proto3";
package download.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
service Files {
  rpc Download(DownloadRequest) returns (stream google.api.HttpBody) {
    option (google.api.http) = { get: "/v1/files/{name}" };
  }
}
message DownloadRequest { string name = 1; }
"#,
        "download.v1.Files",
        backend,
        "",
    )
    .await
}

/// A gateway for the one service `service` of the `.proto` text `proto`,
/// compiled in process, served by `backend`; `limits` is the body of a
/// `[server.limits]` table.
async fn gateway_for_proto(
    proto: &str,
    service: &str,
    backend: std::net::SocketAddr,
    limits: &str,
) -> portico::app::Gateway {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-proto-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("service.proto"), proto).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.limits]\n{limits}\n\
         [descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"service.proto\"]\n\
         [upstreams.backend]\nendpoints = [\"{backend}\"]\n\
         [[routes]]\ngrpc_service = \"{service}\"\nupstream = \"backend\"\n",
        dir.display()
    );
    let gateway = portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    gateway
}

/// A server stream of HttpBody is one download, as httpbody.proto describes
/// it: the messages' bytes in order under the first one's content type.
/// A failure after the first byte cuts the reply short (no last chunk), so
/// the client never takes a partial file for the whole.
#[tokio::test]
async fn a_stream_of_http_bodies_is_one_download_and_a_failure_cuts_it_short() {
    let parts = vec![
        http_body(b"text/csv", b"name,pages\n"),
        http_body(b"", b"Solaris,204\n"),
        http_body(b"", b"Dune,412\n"),
    ];
    let (complete, _) = support::scripted::serve(support::scripted::Script {
        messages: parts.clone(),
        ..Default::default()
    })
    .await;
    let gw = download_gateway(complete).await;
    let r = support::HttpClient::new(gw.addr)
        .get("/v1/files/books.csv")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/csv"));
    assert_eq!(r.text(), "name,pages\nSolaris,204\nDune,412\n");
    // The API description says so too: bytes, not NDJSON.
    let spec = support::HttpClient::new(gw.addr)
        .get("/openapi.json")
        .await
        .json();
    let reply = &spec["paths"]["/v1/files/{name}"]["get"]["responses"]["200"];
    assert!(reply["content"].get("*/*").is_some(), "{reply}");
    assert!(
        reply["content"].get("application/x-ndjson").is_none(),
        "{reply}"
    );
    let said = spec["paths"]["/v1/files/{name}"]["get"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        said.contains("one download") && !said.contains("JSON object per line"),
        "{said}"
    );

    let (failing, _) = support::scripted::serve(support::scripted::Script {
        messages: parts,
        pause_before_status: std::time::Duration::from_millis(200),
        status: 14,
        status_message: "disk gone",
        ..Default::default()
    })
    .await;
    let gw = download_gateway(failing).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    socket
        .write_all(b"GET /v1/files/books.csv HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    // The connection is closed (a reset is as good: either way, not complete).
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.read_to_end(&mut raw),
    )
    .await
    .expect("the connection is closed");
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(raw.contains("Dune,412"), "{raw}");
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "a failed download must not end as complete: {raw}"
    );
}

/// google.api.HttpBody as a backend reads it.
#[derive(Clone, PartialEq, prost::Message)]
struct ReceivedHttpBody {
    #[prost(string, tag = "1")]
    content_type: String,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

/// A bare HTTP/2 gRPC backend that reads each call's whole upload, hands
/// its messages to the test, and answers OK with an empty message.
async fn upload_recording_backend() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Vec<ReceivedHttpBody>>,
) {
    use prost::Message as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        let mut bytes = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            bytes.extend_from_slice(&chunk);
                        }
                        let mut messages = Vec::new();
                        let mut rest = &bytes[..];
                        while rest.len() >= 5 {
                            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
                            messages.push(ReceivedHttpBody::decode(&rest[5..5 + len]).unwrap());
                            rest = &rest[5 + len..];
                        }
                        let _ = tx.send(messages);
                        let response = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let Ok(mut send) = respond.send_response(response, false) else {
                            return;
                        };
                        let _ = send.send_data(support::frame_bytes(0, &[]).into(), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let _ = send.send_trailers(trailers);
                    });
                }
            });
        }
    });
    (addr, rx)
}

/// A client stream of `google.api.HttpBody` takes a REST body as the one
/// upload it is, not as lines: every byte reaches the backend in order (line
/// ends included), each message carries the request's content type, and no
/// message is over `max_grpc_message_bytes` however large the body.
#[tokio::test]
async fn a_client_stream_of_http_bodies_is_the_rest_body_byte_for_byte() {
    let (backend, mut received) = upload_recording_backend().await;
    let gw = gateway_for_proto(
        r#"syntax = "proto3";
package upload.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
import "google/protobuf/empty.proto";
service Files {
  rpc Upload(stream google.api.HttpBody) returns (google.protobuf.Empty) {
    option (google.api.http) = { post: "/v1/upload" body: "*" };
  }
}
"#,
        "upload.v1.Files",
        backend,
        "max_grpc_message_bytes = 1024",
    )
    .await;
    let client = support::HttpClient::new(gw.addr);

    let mut png = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', b'\n'];
    png.extend((0..5000u32).map(|i| (i % 251) as u8));
    for (content_type, body) in [("text/plain", b"a\nb\r\n\nc".to_vec()), ("image/png", png)] {
        let r = client
            .send(
                Method::POST,
                "/v1/upload",
                &[("content-type", content_type)],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{content_type}: {}", r.text());
        let messages = received.recv().await.unwrap();
        assert!(!messages.is_empty(), "{content_type}");
        use prost::Message as _;
        assert!(
            messages
                .iter()
                .all(|m| m.content_type == content_type && m.encoded_len() <= 1024),
            "{content_type}: {:?}",
            messages
                .iter()
                .map(|m| (m.content_type.clone(), m.data.len()))
                .collect::<Vec<_>>()
        );
        let joined: Vec<u8> = messages.into_iter().flat_map(|m| m.data).collect();
        assert_eq!(joined, body, "{content_type}");
    }
}

/// A `response_body` naming a `google.api.HttpBody` field is the reply on
/// every transport of the binding's path: a REST client gets its bytes, a
/// WebSocket client on the same path that field's message as JSON (a JSON
/// frame cannot hold raw bytes), never the whole reply message.
#[tokio::test]
async fn a_response_body_of_http_body_shapes_rest_and_websocket_replies_alike() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let body = http_body(b"text/plain", b"abc");
    let mut doc = vec![0x0a, 1, b'x', 0x12, body.len() as u8];
    doc.extend_from_slice(&body);
    let (backend, _) = support::scripted::serve(support::scripted::Script {
        messages: vec![doc],
        ..Default::default()
    })
    .await;
    let gw = gateway_for_proto(
        r#"syntax = "proto3";
package docs.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
service Docs {
  rpc Get(GetRequest) returns (Doc) {
    option (google.api.http) = { get: "/v1/docs/{name}" response_body: "data" };
  }
}
message GetRequest { string name = 1; }
message Doc { string name = 1; google.api.HttpBody data = 2; }
"#,
        "docs.v1.Docs",
        backend,
        "",
    )
    .await;

    let r = support::HttpClient::new(gw.addr).get("/v1/docs/x").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.text(), "abc");

    let url = format!("ws://{}/v1/docs/x", gw.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let Some(Ok(Message::Text(frame))) = ws.next().await else {
        panic!("no reply")
    };
    let reply: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
    assert_eq!(
        reply["result"],
        serde_json::json!({"contentType": "text/plain", "data": "YWJj"}),
        "{frame}"
    );
}

/// A `response_body` naming a field with presence (proto3 `optional`) that
/// the backend left unset writes the field's default, as it does for any
/// other field: `0` and `""`, never `null`.
#[tokio::test]
async fn a_response_body_naming_an_unset_optional_field_writes_its_default() {
    let (backend, _) = support::scripted::serve(support::scripted::Script {
        messages: vec![Vec::new()],
        ..Default::default()
    })
    .await;
    let gw = gateway_for_proto(
        r#"syntax = "proto3";
package tally.v1;
import "google/api/annotations.proto";
service Tally {
  rpc Get(GetRequest) returns (Count) {
    option (google.api.http) = {
      get: "/v1/counts/{name}" response_body: "count"
      additional_bindings { get: "/v1/notes/{name}" response_body: "note" }
    };
  }
}
message GetRequest { string name = 1; }
message Count { optional int32 count = 1; optional string note = 2; }
"#,
        "tally.v1.Tally",
        backend,
        "",
    )
    .await;
    let client = support::HttpClient::new(gw.addr);
    for (path, default) in [("/v1/counts/x", "0"), ("/v1/notes/x", "\"\"")] {
        let r = client.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.text(), default, "{path}");
    }
}

/// A backend's HttpBody whose content type no header can carry is the
/// backend's bad reply (502, origin backend), named as such, not a failure
/// of the gateway.
#[tokio::test]
async fn an_http_body_content_type_no_header_can_carry_is_the_backends_fault() {
    let message = http_body(b"text/plain\r\nX-Evil: 1", b"abc");
    let (backend, _) = support::scripted::serve(support::scripted::Script {
        messages: vec![message],
        ..Default::default()
    })
    .await;
    let h = Harness::start_with_config(|_| support::config_text(backend, "", "")).await;
    let r = h.client.get("/v1/shelves/1/books/2/cover").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("HttpBody content_type"), "{message}");
    assert!(message.contains("not a valid Content-Type"), "{message}");
}

#[tokio::test]
async fn every_method_is_also_served_at_its_grpc_path() {
    let h = Harness::start().await;
    // Stats has no google.api.http rule at all.
    let r = h
        .client
        .json(
            Method::POST,
            "/portico.demo.v1.Library/Stats",
            r#"{"includeArchived":true}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"shelves": 2, "books": 3}));
    // An annotated one too.
    let r = h
        .client
        .json(
            Method::POST,
            "/portico.demo.v1.Library/GetShelf",
            r#"{"shelf":"2"}"#,
        )
        .await;
    assert_eq!(r.json()["theme"], "History");
    // An empty body is an empty message.
    let r = h
        .client
        .json(Method::POST, "/portico.demo.v1.Library/Stats", "")
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn single_segment_variables_decode_slashes_and_multi_segment_ones_keep_them() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/files/docs/a%2Fb/c%20d.txt").await;
    assert_eq!(r.json()["path"], "docs/a%2Fb/c d.txt");
    let r = h.client.json(Method::GET, "/v1/shelves/a%2Fb", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["message"], "shelf shelves/a/b not found");
}

#[tokio::test]
async fn literal_segments_win_over_variables() {
    let h = Harness::start().await;
    // /v1/books:search (literal "books" + verb) against /v1/books/{name=shelves/*/books/*}.
    let r = h.client.get("/v1/books:search?query=left").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["books"][0]["title"], "The Left Hand of Darkness");
    // The POST additional binding takes the whole body.
    let r = h
        .client
        .json(Method::POST, "/v1/books:search", r#"{"query":"guns"}"#)
        .await;
    assert_eq!(r.json()["books"][0]["title"], "The Guns of August");
}

#[tokio::test]
async fn http2_prior_knowledge_is_served_on_the_same_port() {
    let h = Harness::start().await;
    let client = support::HttpClient::http2(h.gateway.addr);
    let r = client.get("/v1/shelves/2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["theme"], "History");
}

#[tokio::test]
async fn a_rule_in_the_config_binds_a_method_the_schema_left_unannotated() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").with_route_keys("Library", "http_rules.Stats = { get = \"/v1/stats\" }\nhttp_rules.GetShelf = { get = \"/v2/shelf/{shelf}\" }")
    })
    .await;
    let r = h.client.get("/v1/stats?includeArchived=true").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["books"], 3);
    // A config rule replaces the schema's rule for that method.
    assert_eq!(h.client.get("/v2/shelf/2").await.json()["theme"], "History");
    assert_eq!(
        h.client.get("/v1/shelves/2").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn head_answers_as_get_without_the_body_over_http1_and_http2() {
    let h = Harness::start().await;
    let get = h.client.get("/v1/shelves/1").await;
    assert_eq!(get.status, StatusCode::OK);
    let length = get.body.len().to_string();
    for client in [
        support::HttpClient::new(h.gateway.addr),
        support::HttpClient::http2(h.gateway.addr),
    ] {
        let head = client.send(Method::HEAD, "/v1/shelves/1", &[], "").await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty(), "{:?}", head.body);
        assert_eq!(head.header("content-length"), Some(length.as_str()));
        assert_eq!(head.header("content-type"), get.header("content-type"));
        // Its refusals are the GET's too, without a body.
        let missing = client.send(Method::HEAD, "/v1/shelves/9", &[], "").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(missing.body.is_empty());
    }
    // A method bound only to POST has no HEAD, and neither has a stream.
    let post_only = h
        .client
        .send(Method::HEAD, "/portico.demo.v1.Library/CreateBook", &[], "")
        .await;
    assert_eq!(post_only.status, StatusCode::METHOD_NOT_ALLOWED);
    let stream = h
        .client
        .send(Method::HEAD, "/v1/feed?count=2", &[], "")
        .await;
    assert_eq!(stream.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(stream.header("allow"), Some("GET"));
}

/// A `custom` rule for HEAD is served for HEAD requests (not hidden by the
/// rule that answers HEAD as GET), and custom kinds that could never be
/// called as meant are refused at load, naming the method.
#[tokio::test]
async fn a_custom_head_rule_is_served_and_unservable_kinds_are_refused() {
    let with_rule = |rule: &str, backend: std::net::SocketAddr| {
        support::config_text(backend, "", "").with_route_keys("Library", rule)
    };
    let h = Harness::start_with_config(|backend| {
        with_rule(
            "http_rules.GetShelf = { custom = { kind = \"HEAD\", path = \"/v1/probe/{shelf}\" } }",
            backend,
        )
    })
    .await;
    let head = h.client.send(Method::HEAD, "/v1/probe/1", &[], "").await;
    assert_eq!(head.status, StatusCode::OK, "{}", head.text());
    assert!(head.body.is_empty());
    let missing = h.client.send(Method::HEAD, "/v1/probe/999", &[], "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let get = h.client.send(Method::GET, "/v1/probe/1", &[], "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), Some("HEAD"));
    // Described as what it answers: headers, no content.
    let spec = h.client.get("/openapi.json").await.json();
    let ok = &spec["paths"]["/v1/probe/{shelf}"]["head"]["responses"]["200"];
    assert!(ok["description"].is_string(), "{ok}");
    assert!(
        ok.get("content").is_none(),
        "a HEAD reply has no body: {ok}"
    );

    for (rule, says) in [
        (
            "http_rules.GetShelf = { custom = { kind = \"get\", path = \"/v1/x/{shelf}\" } }",
            "custom kind \"get\" is not \"GET\"",
        ),
        (
            "http_rules.GetShelf = { custom = { kind = \"CONNECT\", path = \"/v1/x/{shelf}\" } }",
            "custom kind \"CONNECT\" is not supported",
        ),
        (
            "http_rules.Watch = { custom = { kind = \"HEAD\", path = \"/v1/watching\" } }",
            "custom kind \"HEAD\" on a server-streaming method",
        ),
        (
            "http_rules.Upload = { post = \"/v1/uploads\" }",
            "the method is client-streaming: its messages are the body's lines, so the rule needs body = \"*\"",
        ),
        (
            "http_rules.Upload = { post = \"/v1/uploads\", body = \"text\" }",
            "has body = \"text\", but the method is client-streaming: its messages are the body's lines, each a whole request, so the rule needs body = \"*\"",
        ),
        (
            "http_rules.GetShelf = { get = \"/v1/x/{shelf\" }",
            "bad path template \"/v1/x/{shelf\"",
        ),
        (
            "http_rules.GetShelf = { post = \"/v1/x/{shelf}\", body = \"nope\" }",
            "nope",
        ),
    ] {
        let text = if rule.contains("Upload") || rule.contains("Watch") {
            support::config_text(h.backend_addr, "", "").with_route_keys("Feed", rule)
        } else {
            with_rule(rule, h.backend_addr)
        };
        let config = portico::config::Config::from_toml(&text).unwrap();
        let err = match portico::app::load(config).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{rule} was accepted"),
        };
        assert!(err.contains(says), "{err}");
        // Named by the rule's own key.
        let method = rule["http_rules.".len()..].split(' ').next().unwrap();
        assert!(
            err.contains(&format!("].http_rules.{method}: ")),
            "{err}"
        );
    }
}

/// A custom pattern of kind "*" (which some gateways read as any method)
/// is refused when the config loads, naming the method, rather than served
/// as a method literally named "*".
#[tokio::test]
async fn a_custom_kind_of_star_is_refused_at_load() {
    let text = support::config_text("127.0.0.1:1".parse().unwrap(), "", "").with_route_keys(
        "Library",
        "http_rules.Stats = { custom = { kind = \"*\", path = \"/v1/any\" } }",
    );
    let config = portico::config::Config::from_toml(&text).unwrap();
    let err = match portico::app::load(config).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("kind \"*\" was accepted"),
    };
    assert!(
        err.contains("Stats") && err.contains("custom kind \"*\""),
        "{err}"
    );
}
