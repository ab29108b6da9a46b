//! Request paths are normalized before matching, the same for every
//! protocol: dot-segments (encoded or not) removed, empty segments merged,
//! a climb above the root refused; a bound variable never receives `..` or
//! an empty segment, and `%2F` keeps its google.api.http meaning.

use crate::support;

use http::{Method, StatusCode};
use support::{frame_bytes, Harness, HttpClient};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn a_multi_segment_variable_never_receives_dot_or_empty_segments() {
    let h = Harness::start().await;
    // (request path, what the backend's GetFile receives, or the status)
    let cases: &[(&str, Result<&str, u16>)] = &[
        ("/v1/files/a/b.txt", Ok("a/b.txt")),
        ("/v1/files//etc/passwd", Ok("etc/passwd")),
        ("/v1/files/a/./b/../c.txt", Ok("a/c.txt")),
        ("/v1/files/sub/%2e%2e/x", Ok("x")),
        ("/v1/files/sub/.%2E/x", Ok("x")),
        ("/v1/files/%61/b", Ok("a/b")),
        ("/v1/files/a%2Fb/c", Ok("a%2Fb/c")),
        // A character encoded as several escapes comes out whole; a stray
        // `%` is kept.
        ("/v1/files/%D1%97/a%2fb", Ok("\u{457}/a%2Fb")),
        ("/v1/files/100%/x%zz", Ok("100%/x%zz")),
        // Out of the route's prefix: another path, which nothing serves.
        ("/v1/files/../../etc/passwd", Err(404)),
        ("/v1/files/a/../../../etc/passwd", Err(404)),
        // Above the root: refused.
        ("/v1/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd", Err(400)),
        ("/v1/files/.%2E/.%2e/.%2E/etc/passwd", Err(400)),
    ];
    for (path, want) in cases {
        let r = h.client.get(path).await;
        match want {
            Ok(bound) => {
                assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
                assert_eq!(r.json()["path"], *bound, "{path}");
            }
            Err(status) => {
                assert_eq!(r.status.as_u16(), *status, "{path}: {}", r.text());
                let body = r.json();
                if *status == 400 {
                    assert_eq!(body["code"], 3);
                    assert!(
                        body["message"]
                            .as_str()
                            .unwrap()
                            .contains("climbs above the root"),
                        "{body}"
                    );
                }
            }
        }
    }
    // The next request on a new connection is served.
    assert_eq!(h.client.get("/v1/shelves/1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_protocol_matches_the_normalized_path_and_refuses_a_climb() {
    let h = Harness::start().await;
    let get_shelf = {
        use prost::Message as _;
        portico::demo::backends::pb::GetShelfRequest { shelf: "1".into() }.encode_to_vec()
    };
    let grpc = HttpClient::http2(h.gateway.addr);
    for (path, ok) in [
        ("/portico.demo.v1.Library/./GetShelf", true),
        ("/x/../portico.demo.v1.Library/GetShelf", true),
        ("/../portico.demo.v1.Library/GetShelf", false),
    ] {
        // gRPC
        let r = grpc
            .send(
                Method::POST,
                path,
                &[("content-type", "application/grpc"), ("te", "trailers")],
                frame_bytes(0, &get_shelf),
            )
            .await;
        let status = r.header("grpc-status").unwrap_or("0").to_owned();
        assert_eq!(status == "0", ok, "gRPC {path}: {status}");
        if !ok {
            assert_eq!(status, "3", "gRPC {path}");
        }
        // gRPC-Web
        let r = h
            .client
            .send(
                Method::POST,
                path,
                &[("content-type", "application/grpc-web+proto")],
                frame_bytes(0, &get_shelf),
            )
            .await;
        let status = r.header("grpc-status").map(str::to_owned);
        if ok {
            assert_eq!(r.status, StatusCode::OK);
            assert!(
                status.is_none() || status.as_deref() == Some("0"),
                "gRPC-Web {path}"
            );
        } else {
            assert_eq!(status.as_deref(), Some("3"), "gRPC-Web {path}");
        }
        // Connect
        let r = h
            .client
            .send(
                Method::POST,
                path,
                &[
                    ("content-type", "application/json"),
                    ("connect-protocol-version", "1"),
                ],
                r#"{"shelf":"1"}"#,
            )
            .await;
        if ok {
            assert_eq!(r.status, StatusCode::OK, "Connect {path}: {}", r.text());
        } else {
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "Connect {path}");
            assert_eq!(r.json()["code"], "invalid_argument");
        }
        // WebSocket: the handshake on the method's path.
        let req = format!("ws://{}{path}", h.gateway.addr)
            .into_client_request()
            .unwrap();
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => assert!(ok, "WebSocket {path} was accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert!(!ok, "WebSocket {path}: {}", resp.status());
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
            }
            Err(e) => panic!("WebSocket {path}: {e}"),
        }
    }
}
