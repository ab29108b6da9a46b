//! Routes to a backend that speaks JSON over HTTP: a gRPC client (reverse
//! transcoding) and a REST client both reach it through the gateway.

use crate::support;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portico::demo::backends::pb;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tonic::Code;

/// What the REST backend saw of each request: method, path and query, body.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// A small REST service shaped like the Library's HTTP bindings.
async fn rest_backend() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let method = req.method().to_string();
                        let target = req.uri().path_and_query().unwrap().to_string();
                        let path = req.uri().path().to_owned();
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let lang = header("x-lang");
                        let host = header("host");
                        // What a backend that honours these would act on.
                        let asked = format!(
                            "accept-encoding={};if-none-match={};range={}",
                            header("accept-encoding"),
                            header("if-none-match"),
                            header("range")
                        );
                        let body = String::from_utf8(
                            req.into_body().collect().await.unwrap().to_bytes().to_vec(),
                        )
                        .unwrap();
                        log.lock()
                            .unwrap()
                            .push((method.clone(), target.clone(), body.clone()));
                        let (status, json) = match (method.as_str(), path.as_str()) {
                            ("GET", "/v1/shelves/1") => (200, r#"{"name":"shelves/1","theme":"Poetry","bookCount":7,"curator":"ignored"}"#.to_owned()),
                            ("GET", "/v1/shelves/8") => (200, r#"{"name":5}"#.to_owned()),
                            // Replies that depend on a request header, and say so.
                            ("GET", "/v1/shelves/5" | "/v1/shelves/6") => (200, format!(r#"{{"name":"shelves/5","theme":"{lang}"}}"#)),
                            ("DELETE", "/v1/shelves/1/books/2") => (200, r#"{"deleted":true}"#.to_owned()),
                            // An error page or a list where the (empty) message should be.
                            ("DELETE", "/v1/shelves/1/books/3") => (200, "<html>oops</html>".to_owned()),
                            ("DELETE", "/v1/shelves/1/books/4") => (200, "[1,2]".to_owned()),
                            ("GET", "/v1/shelves/7") => (503, r#"{"message":"busy"}"#.to_owned()),
                            // A message the size of a document.
                            ("GET", "/v1/shelves/31") => (500, format!(r#"{{"message":"{}"}}"#, "w".repeat(300_000))),
                            ("GET", "/v1/shelves/30") => (302, r#"{"message":"moved, follow me"}"#.to_owned()),
                            // An error page larger than any message.
                            ("GET", "/v1/shelves/40") => (503, format!(r#"{{"message":"{}"}}"#, "p".repeat(5 << 20))),
                            ("GET", "/v1/shelves/41" | "/v1/shelves/42") => (200, r#"{"name":"shelves/41"}"#.to_owned()),
                            ("GET", "/v1/shelves/43") => (404, r#"{"message":" "}"#.to_owned()),
                            ("GET", "/v1/shelves/47") => (499, r#"{"message":"the backend's client left"}"#.to_owned()),
                            ("GET", "/v1/shelves/48") => (200, r#"{"name":"shelves/48"}"#.to_owned()),
                            ("GET", "/v1/shelves/45") => (404, "\u{1f}\u{8b}compressed".to_owned()),
                            ("GET", "/v1/shelves/46") => (200, format!(r#"{{"name":"shelves/46","theme":"{host}"}}"#)),
                            ("GET", "/v1/shelves/44") => (200, format!(r#"{{"name":"shelves/44","theme":"{asked}"}}"#)),
                            ("GET", t) if t.starts_with("/v1/shelves/") => (404, r#"{"message":"no such shelf"}"#.to_owned()),
                            ("POST", "/v1/shelves/1/books" | "/v1/shelves/3/books") => (201, body.replacen('{', r#"{"name":"shelves/1/books/9","#, 1)),
                            ("POST", "/v1/shelves/2/books") => (409, r#"{"error":{"message":"shelf is full"}}"#.to_owned()),
                            ("GET", t) if t.starts_with("/v1/books:search") => (200, r#"{"books":[{"title":"Found"}]}"#.to_owned()),
                            ("GET", "/stats") => (200, r#"{"shelves":4,"books":40}"#.to_owned()),
                            _ => (500, "boom".to_owned()),
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(json)));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        resp.headers_mut()
                            .insert("x-backend", "rest".parse().unwrap());
                        match path.as_str() {
                            "/v1/shelves/5" => {
                                resp.headers_mut().insert("vary", "x-lang".parse().unwrap());
                            }
                            "/v1/shelves/6" => {
                                resp.headers_mut().insert("vary", "*".parse().unwrap());
                            }
                            "/v1/shelves/7" => {
                                resp.headers_mut()
                                    .insert("retry-after", "7".parse().unwrap());
                            }
                            // Its own status is not passed on; this header is.
                            "/v1/shelves/3/books" => {
                                resp.headers_mut()
                                    .insert("x-http-status", "201".parse().unwrap());
                            }
                            "/v1/shelves/30" => {
                                resp.headers_mut()
                                    .insert("location", "http://elsewhere/".parse().unwrap());
                            }
                            // Compressed, though the gateway asked for identity.
                            "/v1/shelves/41" | "/v1/shelves/45" => {
                                resp.headers_mut()
                                    .insert("content-encoding", "gzip".parse().unwrap());
                            }
                            // Headers gRPC metadata cannot carry, beside one it can.
                            "/v1/shelves/48" => {
                                let h = resp.headers_mut();
                                h.insert("x-bad-bin", "!!!".parse().unwrap());
                                h.insert("x-good-bin", "AAA".parse().unwrap());
                                h.insert("x!odd", "1".parse().unwrap());
                                h.insert("x-tab", "a\tb".parse().unwrap());
                            }
                            // A header the size of a document.
                            "/v1/shelves/42" => {
                                resp.headers_mut()
                                    .insert("x-big", "h".repeat(300_000).parse().unwrap());
                            }
                            _ => {}
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn gateway(rest: SocketAddr) -> portico::app::Gateway {
    gateway_with(rest, "").await
}

async fn gateway_with(rest: SocketAddr, route_extra: &str) -> portico::app::Gateway {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[descriptors]
proto_paths = ["{}"]
protos = ["portico/demo/v1/library.proto"]
[upstreams.rest]
protocol = "http"
endpoints = ["{rest}"]
[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "rest"
http_rules.Stats = {{ get = "/stats" }}
{route_extra}
"#,
        support::proto_dir()
    );
    portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap()
}

async fn library(
    gw: &portico::app::Gateway,
) -> pb::library_client::LibraryClient<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::library_client::LibraryClient::new(ch)
}

#[tokio::test]
async fn a_grpc_client_calls_a_rest_backend() {
    let (rest, seen) = rest_backend().await;
    let gw = gateway(rest).await;
    let mut client = library(&gw).await;
    let resp = client
        .get_shelf(pb::GetShelfRequest { shelf: "1".into() })
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-backend").unwrap(), "rest");
    let shelf = resp.into_inner();
    assert_eq!((shelf.theme.as_str(), shelf.book_count), ("Poetry", 7));
    assert_eq!(
        seen.lock().unwrap()[0],
        ("GET".into(), "/v1/shelves/1".into(), String::new())
    );
}

#[tokio::test]
async fn the_body_field_and_query_parameters_are_built_from_the_message() {
    let (rest, seen) = rest_backend().await;
    let gw = gateway(rest).await;
    let mut client = library(&gw).await;
    let book = client
        .create_book(pb::CreateBookRequest {
            parent: "shelves/1".into(),
            book: Some(pb::Book {
                title: "Odes".into(),
                pages: 40,
                ..Default::default()
            }),
            book_id: "odes".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(book.name, "shelves/1/books/9");
    assert_eq!(book.title, "Odes");
    let (method, target, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (method.as_str(), target.as_str()),
        ("POST", "/v1/shelves/1/books?bookId=odes")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"title": "Odes", "pages": "40"})
    );

    client
        .search_books(pb::SearchBooksRequest {
            query: "o d".into(),
            genres: vec![1, 2],
            filter: Some(pb::SearchFilter {
                language: "en".into(),
                min_rating: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {:?}", seen.lock().unwrap()));
    let (_, target, _) = seen.lock().unwrap()[1].clone();
    assert_eq!(
        target,
        "/v1/books:search?query=o+d&genres=GENRE_FICTION&genres=GENRE_HISTORY&filter.language=en"
    );

    // A value the template's pattern does not allow never becomes another
    // path on the upstream: `{parent=shelves/*}` refuses `authors/1`.
    for parent in ["authors/1", "shelves/1/extra", "shelves/"] {
        let err = client
            .create_book(pb::CreateBookRequest {
                parent: parent.into(),
                book: Some(pb::Book::default()),
                book_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{parent}: {err:?}");
        assert!(
            err.message()
                .contains("does not match the template's shelves/*"),
            "{parent}: {err:?}"
        );
    }
    // Nor a dot-segment, which a backend removing them would resolve to
    // another path: in a pattern's `*`, as a whole variable, or inside a
    // one-segment variable's value, whose escaped `/` a backend may unescape
    // before it removes dot-segments.
    for parent in ["shelves/..", "shelves/."] {
        let err = client
            .create_book(pb::CreateBookRequest {
                parent: parent.into(),
                book: Some(pb::Book::default()),
                book_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{parent}: {err:?}");
        assert!(err.message().contains("dot-segment"), "{parent}: {err:?}");
    }
    for shelf in ["..", ".", "../../admin", "a/../b", "a/.", "..\\admin"] {
        let err = client
            .get_shelf(pb::GetShelfRequest {
                shelf: shelf.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{shelf}: {err:?}");
        assert!(err.message().contains("dot-segment"), "{shelf}: {err:?}");
    }
    assert_eq!(seen.lock().unwrap().len(), 2, "the upstream was not called");
}

#[tokio::test]
async fn a_reply_is_read_leniently_and_one_that_cannot_be_is_the_backends_fault() {
    let (rest, _) = rest_backend().await;
    let gw = gateway(rest).await;
    let mut client = library(&gw).await;
    // What a backend says about a DELETE is dropped: Empty keeps nothing.
    client
        .delete_book(pb::DeleteBookRequest {
            name: "shelves/1/books/2".into(),
        })
        .await
        .unwrap();
    // ...but a reply that is no JSON object is no Empty either.
    for book in ["3", "4"] {
        let err = client
            .delete_book(pb::DeleteBookRequest {
                name: format!("shelves/1/books/{book}"),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{book}: {err:?}");
        assert!(
            err.message()
                .starts_with("the backend's reply could not be read"),
            "{err:?}"
        );
    }
    let err = client
        .get_shelf(pb::GetShelfRequest { shelf: "8".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert!(
        err.message()
            .starts_with("the backend's reply could not be read: name: ")
            && !err.message().contains("invalid request"),
        "{err:?}"
    );
}

#[tokio::test]
async fn rest_statuses_map_back_to_grpc_codes() {
    let (rest, _) = rest_backend().await;
    let gw = gateway(rest).await;
    let mut client = library(&gw).await;
    let err = client
        .get_shelf(pb::GetShelfRequest { shelf: "9".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such shelf");
    // The backend's headers come with its error, as a gRPC backend's do.
    assert_eq!(
        err.metadata().get("x-backend").map(|v| v.to_str().unwrap()),
        Some("rest")
    );
    let err = client
        .create_book(pb::CreateBookRequest {
            parent: "shelves/2".into(),
            book: Some(pb::Book::default()),
            book_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(err.message(), "shelf is full");
    let err = client
        .get_file(pb::GetFileRequest { path: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    // A redirect is not followed: an error saying so, whatever its body
    // says, without the Location that would read as the way on.
    let err = client
        .get_shelf(pb::GetShelfRequest { shelf: "30".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "backend replied 302 Found");
    assert!(err.metadata().get("location").is_none());
    assert_eq!(
        err.metadata().get("x-backend").map(|v| v.to_str().unwrap()),
        Some("rest")
    );
    // nginx's 499 is about the backend's own client, the gateway: the
    // caller did not cancel, it gets what any other 4xx gives.
    let err = client
        .get_shelf(pb::GetShelfRequest { shelf: "47".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "the backend's client left");
}

/// Replies a JSON backend should not send, or sends too large, are judged by
/// what they are: an error page of any size is its status (and retried as
/// that status is), a compressed body or a head over 256 KiB is a bad reply
/// from the backend, tried once. The backend is asked for what the gateway
/// can read, and never sent a conditional or range request whose answer
/// (`304`, `206`) has no place in a gRPC reply.
#[tokio::test]
async fn a_json_backends_unusual_replies_are_judged_by_what_they_are() {
    let (rest, seen) = rest_backend().await;
    let gw = gateway(rest).await;
    let tries = |path: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(_, target, _)| target == path)
            .count()
    };
    let client = support::HttpClient::new(gw.addr);
    for (path, status, message) in [
        (
            "/v1/shelves/40",
            StatusCode::SERVICE_UNAVAILABLE,
            "backend replied 503 Service Unavailable",
        ),
        (
            "/v1/shelves/41",
            StatusCode::BAD_GATEWAY,
            "the backend's reply is encoded with gzip, though the gateway asked for identity",
        ),
        (
            "/v1/shelves/42",
            StatusCode::BAD_GATEWAY,
            "the backend's reply headers are over 256 KiB",
        ),
        // An encoded error page is no message to pass on either.
        (
            "/v1/shelves/45",
            StatusCode::BAD_GATEWAY,
            "the backend's reply is encoded with gzip",
        ),
        // An empty message says nothing: the status line does.
        (
            "/v1/shelves/43",
            StatusCode::NOT_FOUND,
            "backend replied 404 Not Found",
        ),
    ] {
        let r = client.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let said = r.json()["message"].as_str().unwrap().to_owned();
        assert!(said.starts_with(message), "{path}: {said}");
        assert!(r.header("x-big").is_none());
        let expected_tries = if status == StatusCode::SERVICE_UNAVAILABLE {
            3
        } else {
            1
        };
        assert_eq!(tries(path), expected_tries, "{path}");
        // The same verdict on every other protocol: the egress judges the
        // reply, whoever asked.
        use support::protocols::Protocol;
        let shelf = path.rsplit('/').next().unwrap();
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::NOT_FOUND => Code::NotFound,
            _ => Code::Internal,
        };
        for protocol in [
            Protocol::Grpc,
            Protocol::GrpcWeb,
            Protocol::Connect,
            Protocol::WebSocket,
        ] {
            let seen = get_shelf(&client, protocol, shelf).await;
            assert_eq!(
                seen.code, code as i64,
                "{protocol:?} {path}: {}",
                seen.message
            );
            assert!(
                seen.message.starts_with(message),
                "{protocol:?} {path}: {}",
                seen.message
            );
            assert!(!seen.fields.contains_key("x-big"), "{protocol:?} {path}");
        }
    }
    let r = client
        .send(
            Method::GET,
            "/v1/shelves/44",
            &[
                ("if-none-match", "\"v1\""),
                ("range", "bytes=0-10"),
                ("accept-encoding", "gzip"),
            ],
            "",
        )
        .await;
    assert_eq!(
        r.json()["theme"],
        "accept-encoding=identity;if-none-match=;range=",
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn a_rest_client_is_routed_to_the_rest_backend_through_the_same_pipeline() {
    let (rest, _) = rest_backend().await;
    let gw = gateway(rest).await;
    let client = support::HttpClient::new(gw.addr);
    let r = client.get("/v1/shelves/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "shelves/1", "theme": "Poetry", "bookCount": 7})
    );
    let r = client.get("/v1/shelves/3").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["message"], "no such shelf");
    // A back-off hint on an error reaches the client.
    let r = client.get("/v1/shelves/7").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-backend"), Some("rest"));
    let r = client
        .json(Method::POST, "/v1/shelves/1/books", r#"{"title":"Odes"}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = client
        .json(Method::POST, "/v1/shelves/3/books", r#"{"title":"Odes"}"#)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("x-http-status"), None, "consumed");
}

#[test]
fn an_http_upstream_refuses_streaming_methods_at_startup() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/feed.proto\"]\n[upstreams.rest]\nprotocol = \"http\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\ngrpc_service = \"portico.demo.v1.Feed\"\nupstream = \"rest\"\n",
        support::proto_dir()
    );
    let err = load_error(&text);
    assert!(
        err.contains("routes[0].methods") && err.contains("unary methods only"),
        "{err}"
    );
}

/// Why loading the config `text` fails.
fn load_error(text: &str) -> String {
    let config = portico::config::Config::from_toml(text).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(portico::app::load(config))
        .err()
        .expect("the load fails")
        .to_string()
}

/// A JSON/HTTP upstream's request path is built from the method's first
/// binding: a wildcard there that no variable holds could never be
/// filled, so the config is refused at load, naming the rule.
#[test]
fn an_http_upstream_refuses_a_first_binding_with_a_wildcard_outside_a_variable() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n[upstreams.rest]\nprotocol = \"http\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"rest\"\nhttp_rules.Stats = {{ get = \"/v1/star/*/stats\" }}\n",
        support::proto_dir()
    );
    let err = load_error(&text);
    assert!(
        err.contains("routes[0].http_rules.Stats") && err.contains("wildcard outside a variable"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rule_in_the_route_says_how_to_call_an_unannotated_method() {
    let (rest, seen) = rest_backend().await;
    let gw = gateway(rest).await;
    let stats = library(&gw)
        .await
        .stats(pb::StatsRequest {
            include_archived: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.shelves, stats.books), (4, 40));
    assert_eq!(seen.lock().unwrap()[0].1, "/stats");
}

#[tokio::test]
async fn a_dns_upstream_is_called_with_its_name_as_host() {
    // Virtual hosts and ingress proxies in front of JSON backends route on
    // `Host`: a `dns` upstream's calls carry its name, as gRPC calls carry
    // it as `:authority`, whichever address the name resolved to.
    let (rest, _) = rest_backend().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\n\
         protos = [\"portico/demo/v1/library.proto\"]\n\
         [upstreams.rest]\nprotocol = \"http\"\ndns = \"localhost:{}\"\n\
         [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"rest\"\n",
        support::proto_dir(),
        rest.port()
    );
    let gw = portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap();
    let r = support::HttpClient::new(gw.addr)
        .get("/v1/shelves/46")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["theme"],
        format!("localhost:{}", rest.port()),
        "{}",
        r.text()
    );
    // An endpoint written as an address is called with that address.
    let gw = gateway(rest).await;
    let r = support::HttpClient::new(gw.addr)
        .get("/v1/shelves/46")
        .await;
    assert_eq!(r.json()["theme"], rest.to_string(), "{}", r.text());
}

#[tokio::test]
async fn a_rest_backend_behind_tls_is_called_over_https() {
    let (rest, seen) = rest_backend().await;
    let secure = support::instances::tls_front(rest).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n[upstreams.rest]\nprotocol = \"http\"\nendpoints = [\"{secure}\"]\ntls_ca_file = \"{}\"\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"rest\"\n",
        support::proto_dir(),
        support::fixture("tls/ca.pem")
    );
    let gw = portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap();
    let shelf = library(&gw)
        .await
        .get_shelf(pb::GetShelfRequest { shelf: "1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shelf.theme, "Poetry");
    assert_eq!(seen.lock().unwrap()[0].1, "/v1/shelves/1");
}

#[tokio::test]
async fn the_cache_honours_a_rest_backends_vary_on_every_protocol() {
    let (rest, seen) = rest_backend().await;
    let gw = gateway_with(rest, "cache = { ttl = \"30s\" }").await;
    let client = support::HttpClient::new(gw.addr);
    let get = |shelf: &'static str, lang: &'static str| {
        let client = &client;
        async move {
            let r = client
                .send(
                    Method::GET,
                    &format!("/v1/shelves/{shelf}"),
                    &[("x-lang", lang)],
                    "",
                )
                .await;
            (
                r.header("x-cache").unwrap_or("").to_owned(),
                r.json()["theme"].as_str().unwrap_or("").to_owned(),
                r.header("vary").map(str::to_owned),
            )
        }
    };
    let (cache, theme, vary) = get("5", "fr").await;
    assert_eq!((cache.as_str(), theme.as_str()), ("MISS", "fr"));
    assert_eq!(vary.as_deref(), Some("x-lang"), "the client sees the Vary");
    assert_eq!(get("5", "fr").await.0, "HIT");
    // A hit says how long it has been kept (RFC 9111's Age).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let aged = client
        .send(Method::GET, "/v1/shelves/5", &[("x-lang", "fr")], "")
        .await;
    assert_eq!(aged.header("x-cache"), Some("HIT"));
    assert_eq!(aged.header("age"), Some("1"));
    // Another value of the header the reply varies on is another entry.
    let (cache, theme, _) = get("5", "de").await;
    assert_eq!((cache.as_str(), theme.as_str()), ("MISS", "de"));

    // A gRPC client's call takes the same entries.
    let mut grpc = library(&gw).await;
    let mut req = tonic::Request::new(pb::GetShelfRequest { shelf: "5".into() });
    req.metadata_mut().insert("x-lang", "de".parse().unwrap());
    let reply = grpc.get_shelf(req).await.unwrap();
    assert_eq!(reply.metadata().get("x-cache").unwrap(), "HIT");
    assert_eq!(reply.into_inner().theme, "de");
    let mut req = tonic::Request::new(pb::GetShelfRequest { shelf: "5".into() });
    req.metadata_mut().insert("x-lang", "ja".parse().unwrap());
    let reply = grpc.get_shelf(req).await.unwrap();
    assert_eq!(reply.metadata().get("x-cache").unwrap(), "MISS");
    assert_eq!(reply.into_inner().theme, "ja");

    // `Vary: *` is never stored.
    assert_eq!(get("6", "fr").await.0, "MISS");
    assert_eq!(get("6", "fr").await.0, "MISS");
    let backend_calls = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, target, _)| {
            target.starts_with("/v1/shelves/5") || target.starts_with("/v1/shelves/6")
        })
        .count();
    assert_eq!(backend_calls, 5);
}

#[tokio::test]
async fn a_json_backends_error_and_its_headers_reach_a_client_of_every_protocol() {
    use support::protocols::Protocol;
    let (rest, _) = rest_backend().await;
    let gw = gateway(rest).await;
    let client = support::HttpClient::new(gw.addr);
    // Shelf 7 is answered 503 with a Retry-After and the backend's own header.
    for protocol in [
        Protocol::Rest,
        Protocol::Grpc,
        Protocol::GrpcWeb,
        Protocol::Connect,
        Protocol::WebSocket,
    ] {
        let seen = get_shelf(&client, protocol, "7").await;
        assert_eq!(seen.code, Code::Unavailable as i64, "{protocol:?}");
        assert_eq!(seen.message, "busy", "{protocol:?}");
        assert_eq!(
            seen.fields.get("x-backend").map(String::as_str),
            Some("rest"),
            "{protocol:?}: {:?}",
            seen.fields
        );
        assert_eq!(
            seen.fields.get("retry-after").map(String::as_str),
            Some("7"),
            "{protocol:?}: the back-off hint comes with the error: {:?}",
            seen.fields
        );
        // A backend's message the size of a document is cut to a status
        // message's size, so that the reply still reaches a gRPC client.
        let long = get_shelf(&client, protocol, "31").await;
        assert_eq!(
            long.code,
            Code::Internal as i64,
            "{protocol:?}: {}",
            long.message
        );
        assert!(
            long.message.len() < 1100 && long.message.ends_with("... (298976 more bytes)"),
            "{protocol:?}: {} bytes: {}",
            long.message.len(),
            &long.message[long.message.len().saturating_sub(60)..]
        );
    }
}

/// The protocols [`get_shelf`] calls through (MCP calls tools instead).
const JSON_PROTOCOLS: [support::protocols::Protocol; 5] = [
    support::protocols::Protocol::Rest,
    support::protocols::Protocol::Grpc,
    support::protocols::Protocol::GrpcWeb,
    support::protocols::Protocol::Connect,
    support::protocols::Protocol::WebSocket,
];

/// `Library/GetShelf` of `shelf` over `protocol`, as that protocol's
/// client sees the answer.
async fn get_shelf(
    client: &support::HttpClient,
    protocol: support::protocols::Protocol,
    shelf: &str,
) -> support::protocols::Outcome {
    support::protocols::call_json(
        client,
        protocol,
        "/portico.demo.v1.Library/GetShelf",
        &format!(r#"{{"shelf":"{shelf}"}}"#),
    )
    .await
}

/// A backend that reads a request, writes `answer` (nothing, or headers
/// and part of a body) and then says nothing more.
async fn stalling_backend(answer: &'static [u8]) -> SocketAddr {
    raw_backend(answer, true).await
}

/// A backend that reads a request and writes `answer`; then holds the
/// connection open, silent, until the gateway gives up (`hold_open`), or
/// closes it.
async fn raw_backend(answer: &'static [u8], hold_open: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer).await;
                if hold_open {
                    let _ = stream.read(&mut buf).await;
                }
            });
        }
    });
    addr
}

/// The Library served by the JSON backend at `backend`, with
/// `[server.limits]` settings `limits` and the route's `timeout`.
async fn library_over_http(
    backend: SocketAddr,
    limits: &str,
    timeout: &str,
) -> portico::app::Gateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.limits]\n{limits}\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n[upstreams.rest]\nprotocol = \"http\"\nendpoints = [\"{backend}\"]\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"rest\"\ntimeout = \"{timeout}\"\n",
        support::proto_dir()
    );
    portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap()
}

/// A JSON backend that never answers, or stops halfway through its body,
/// is cut off by the same limits as a gRPC one: the reply's headers by
/// `upstream_header_timeout`, each piece of its body by
/// `stream_idle_timeout`.
#[tokio::test]
async fn a_json_backend_that_goes_silent_is_cut_off_by_the_upstream_limits() {
    for (answer, timeout) in [
        (&b""[..], "server.limits.upstream_header_timeout"),
        (
            &b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{\"name\":"[..],
            "server.limits.stream_idle_timeout",
        ),
    ] {
        let backend = stalling_backend(answer).await;
        let limits = "upstream_header_timeout = \"300ms\"\nstream_idle_timeout = \"300ms\"";
        let gw = library_over_http(backend, limits, "30s").await;
        let started = std::time::Instant::now();
        let r = support::HttpClient::new(gw.addr).get("/v1/shelves/1").await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{timeout}: {}", r.text());
        assert!(r.text().contains(timeout), "{}", r.text());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{timeout}: cut off by the limit, not the route's 30 s"
        );
    }
}

/// Replies in older or broken shapes, judged on every protocol: an
/// HTTP/1.0 reply is read as HTTP/1.0 (its body ends with the connection),
/// a 503 whose page is cut short is still the 503 it says it is, and a
/// head in no HTTP/1 version is the backend's fault.
#[tokio::test]
async fn a_json_backends_http10_cut_and_foreign_replies_are_read_as_their_heads_say() {
    use support::protocols::Protocol;
    let table: [(&[u8], u16, Code, &str); 3] = [
        (
            b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{\"name\":\"shelves/1\",\"theme\":\"old\"}",
            200,
            Code::Ok,
            "",
        ),
        (
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\ndown for",
            503,
            Code::Unavailable,
            "backend replied 503 Service Unavailable",
        ),
        (
            b"HTTP/2.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            502,
            Code::Internal,
            "the backend's reply could not be read: invalid HTTP version",
        ),
    ];
    for (answer, status, code, says) in table {
        let backend = raw_backend(answer, false).await;
        let gw = library_over_http(backend, "", "10s").await;
        let client = support::HttpClient::new(gw.addr);
        let r = client.get("/v1/shelves/1").await;
        assert_eq!(r.status.as_u16(), status, "{}", r.text());
        if code == Code::Ok {
            assert_eq!(r.json()["theme"], "old", "{}", r.text());
        } else {
            assert!(
                r.json()["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(says),
                "{}",
                r.text()
            );
        }
        for protocol in [
            Protocol::Grpc,
            Protocol::GrpcWeb,
            Protocol::Connect,
            Protocol::WebSocket,
        ] {
            let seen = get_shelf(&client, protocol, "1").await;
            assert_eq!(seen.code, code as i64, "{protocol:?}: {}", seen.message);
            assert!(
                seen.message.starts_with(says),
                "{protocol:?}: {}",
                seen.message
            );
        }
    }
}

/// Headers a JSON backend's `Connection` names are for its hop to the
/// gateway alone: they reach no client, whatever its protocol.
#[tokio::test]
async fn headers_a_json_backends_connection_names_reach_no_client() {
    let backend = raw_backend(
        b"HTTP/1.1 200 OK\r\nconnection: x-hop, close\r\nx-hop: for the gateway\r\nx-kept: for the client\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"name\":\"shelves/1\"}",
        false,
    )
    .await;
    let gw = library_over_http(backend, "", "10s").await;
    let client = support::HttpClient::new(gw.addr);
    for protocol in JSON_PROTOCOLS {
        let seen = get_shelf(&client, protocol, "1").await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert_eq!(
            seen.fields.get("x-kept").map(String::as_str),
            Some("for the client"),
            "{protocol:?}: {:?}",
            seen.fields
        );
        assert_eq!(seen.fields.get("x-hop"), None, "{protocol:?}");
    }
}

/// The next request head on a raw backend's connection (its body, if
/// any, left in `pending`), or `None` once the gateway closes it.
async fn next_request_head(
    stream: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
    let end = pending.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end);
    Some(head)
}

/// A keep-alive JSON backend that answers `/v1/shelves/smuggle` with
/// `bodiless` (a reply HTTP says has no body: a 204, or anything to a
/// HEAD) and the bytes of a whole second reply as if they were its body,
/// written when the next request arrives on the connection (so they are
/// the first bytes the gateway reads after sending it); every other
/// request with `{"name": "shelves/LAST"}`, LAST its path's last segment.
async fn body_after_bodiless_reply_backend(bodiless: &'static str) -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut smuggled: Option<String> = None;
                while let Some(head) = next_request_head(&mut stream, &mut pending).await {
                    if let Some(inner) = smuggled.take() {
                        let _ = stream.write_all(inner.as_bytes()).await;
                    }
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let shelf = path.rsplit('/').next().unwrap_or("");
                    if shelf == "smuggle" {
                        let fake = b"{\"name\":\"shelves/SMUGGLED\"}";
                        let inner = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                            fake.len(),
                            String::from_utf8_lossy(fake)
                        );
                        let head = format!("{bodiless}content-length: {}\r\n\r\n", inner.len());
                        let _ = stream.write_all(head.as_bytes()).await;
                        smuggled = Some(inner);
                    } else {
                        let body = format!("{{\"name\":\"shelves/{shelf}\"}}");
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    addr
}

/// A JSON backend that writes a body after a reply HTTP says has none (a
/// 204, a reply to HEAD) would have those bytes read as the reply to the
/// next call on its connection, another client's: the gateway never
/// reuses a connection after such a reply, so every later call gets its
/// own answer.
#[tokio::test]
async fn a_body_written_after_a_bodiless_reply_never_answers_the_next_call() {
    for (bodiless, rule) in [
        ("HTTP/1.1 204 No Content\r\n", ""),
        (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n",
            "http_rules.GetShelf = { custom = { kind = \"HEAD\", path = \"/v1/shelves/{shelf}\" } }\n",
        ),
    ] {
        let backend = body_after_bodiless_reply_backend(bodiless).await;
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n[upstreams.rest]\nprotocol = \"http\"\nendpoints = [\"{backend}\"]\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"rest\"\n{rule}",
            support::proto_dir()
        );
        let gw = portico::app::start(portico::config::Config::from_toml(&text).unwrap())
            .await
            .unwrap();
        let client = support::HttpClient::new(gw.addr);
        let verb = if rule.is_empty() { Method::GET } else { Method::HEAD };
        let warm = client.get("/v1/shelves/1/books/1").await;
        assert_eq!(warm.status, StatusCode::OK, "{bodiless:?}: {}", warm.text());
        client.send(verb, "/v1/shelves/smuggle", &[], "").await;
        for book in ["2", "3", "4"] {
            let r = client.get(&format!("/v1/shelves/1/books/{book}")).await;
            assert_eq!(r.status, StatusCode::OK, "{bodiless:?}: {}", r.text());
            let want = format!("shelves/{book}");
            assert_eq!(r.json()["name"], want.as_str(), "{bodiless:?}: {}", r.text());
        }
    }
}

/// A keep-alive JSON backend that answers `/v1/shelves/NAME` with
/// `{"name": "shelves/NAME"}`, and after answering `extra` writes a second,
/// unasked-for reply 30 ms later; counts the requests that came with
/// `connection: close` and the connections that carried a request.
async fn late_extra_reply_backend() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closing, connections) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, n) = (closing.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (c, n) = (c.clone(), n.clone());
            tokio::spawn(async move {
                let mut first = true;
                let reply = |shelf: &str| {
                    let body = format!("{{\"name\":\"shelves/{shelf}\"}}");
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let mut pending = Vec::new();
                while let Some(head) = next_request_head(&mut stream, &mut pending).await {
                    let head = head.to_ascii_lowercase();
                    // The gateway's reachability probe connects and sends
                    // nothing: only connections that carry a call count.
                    if std::mem::take(&mut first) {
                        n.fetch_add(1, Ordering::SeqCst);
                    }
                    if head.contains("\r\nconnection: close\r\n") {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let shelf = path.rsplit('/').next().unwrap_or("").to_owned();
                    if stream.write_all(reply(&shelf).as_bytes()).await.is_err() {
                        return;
                    }
                    if shelf == "extra" {
                        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                        let _ = stream.write_all(reply("SMUGGLED").as_bytes()).await;
                    }
                }
            });
        }
    });
    (addr, closing, connections)
}

/// A backend that writes a reply nobody asked for after a whole one puts
/// every later reply on that connection one call late, if the next
/// request was sent before the stray bytes came (HTTP/1.1 cannot tell
/// them apart). With `reuse_connections = false` each call has a
/// connection of its own, closed with its reply, so every client gets its
/// own answer.
#[tokio::test]
async fn a_json_upstream_that_reuses_no_connection_gives_each_call_its_own_reply() {
    let (backend, closing, connections) = late_extra_reply_backend().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n[upstreams.rest]\nprotocol = \"http\"\nendpoints = [\"{backend}\"]\nreuse_connections = false\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"rest\"\n",
        support::proto_dir()
    );
    let gw = portico::app::start(portico::config::Config::from_toml(&text).unwrap())
        .await
        .unwrap();
    let client = support::HttpClient::new(gw.addr);
    let mut calls = 0;
    for protocol in JSON_PROTOCOLS {
        let extra = get_shelf(&client, protocol, "extra").await;
        assert_eq!(
            extra.json["name"], "shelves/extra",
            "{protocol:?}: {}",
            extra.message
        );
        for shelf in ["2", "3"] {
            let seen = get_shelf(&client, protocol, shelf).await;
            let want = format!("shelves/{shelf}");
            assert_eq!(
                seen.json["name"],
                want.as_str(),
                "{protocol:?}: {}",
                seen.message
            );
        }
        calls += 3;
    }
    assert_eq!(
        closing.load(Ordering::SeqCst),
        calls,
        "every request says close"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        calls,
        "a connection each"
    );
}

#[test]
fn reuse_connections_is_refused_on_a_grpc_upstream() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.g]\nendpoints = [\"127.0.0.1:9\"]\nreuse_connections = false\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"g\"\n";
    let err = portico::config::Config::from_toml(text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("upstreams.g.reuse_connections") && err.contains("protocol = \"http\""),
        "{err}"
    );
}

/// A gRPC or Connect client may send what JSON cannot hold (a Timestamp
/// past year 9999): the call is refused, naming why, and the backend never
/// gets the empty request that leaving the message out would make.
#[tokio::test]
async fn a_message_json_cannot_hold_is_refused_not_sent_empty() {
    use prost::Message as _;
    let (rest, seen) = rest_backend().await;
    let gw = gateway(rest).await;
    let request = pb::CreateBookRequest {
        parent: "shelves/1".into(),
        book: Some(pb::Book {
            title: "Odes".into(),
            published: Some(prost_types::Timestamp {
                seconds: 1_000_000_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }),
        book_id: "odes".into(),
    };
    let status = library(&gw)
        .await
        .create_book(request.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("cannot be written as JSON for the backend"),
        "{status:?}"
    );
    let connect = support::HttpClient::new(gw.addr)
        .send(
            Method::POST,
            "/portico.demo.v1.Library/CreateBook",
            &[
                ("content-type", "application/proto"),
                ("connect-protocol-version", "1"),
            ],
            request.encode_to_vec(),
        )
        .await;
    assert_eq!(
        connect.status,
        StatusCode::BAD_REQUEST,
        "{}",
        connect.text()
    );
    assert!(
        connect
            .text()
            .contains("cannot be written as JSON for the backend"),
        "{}",
        connect.text()
    );
    assert!(seen.lock().unwrap().is_empty(), "the backend got nothing");
}

/// A JSON backend's reply header that gRPC metadata cannot carry would
/// fail a gRPC client's answered call: it is dropped for every client,
/// while the others pass.
#[tokio::test]
async fn a_json_backends_headers_grpc_cannot_carry_reach_no_client() {
    let (rest, _) = rest_backend().await;
    let gw = gateway(rest).await;
    let resp = library(&gw)
        .await
        .get_shelf(pb::GetShelfRequest { shelf: "48".into() })
        .await
        .unwrap();
    let metadata = resp.metadata();
    assert_eq!(resp.get_ref().name, "shelves/48");
    assert!(metadata.get_bin("x-good-bin").is_some(), "{metadata:?}");
    for dropped in ["x-bad-bin", "x!odd", "x-tab"] {
        assert!(metadata.get(dropped).is_none(), "{dropped}: {metadata:?}");
        assert!(metadata.get_bin(dropped).is_none(), "{dropped}");
    }
    let r = support::HttpClient::new(gw.addr)
        .get("/v1/shelves/48")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for dropped in ["x-bad-bin", "x!odd", "x-tab"] {
        assert_eq!(r.header(dropped), None, "{dropped}");
    }
    assert_eq!(r.header("x-backend"), Some("rest"));
}
