//! Schemas three ways (descriptor set, .proto compiled at startup, server
//! reflection) and the startup errors that name file and symbol.

use crate::support;
use support::RouteKeys;

use http::StatusCode;
use portico::app;
use portico::config::Config;
use portico::demo::backends::Backends;

async fn backend() -> std::net::SocketAddr {
    Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .0
}

fn config(backend: std::net::SocketAddr, descriptors: &str, service: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[descriptors]\n{descriptors}\n\n[upstreams.demo]\nendpoints = [\"{backend}\"]\n\n[[routes]]\ngrpc_service = \"{service}\"\nupstream = \"demo\"\n"
    )
}

async fn shelf_theme(gw: &app::Gateway) -> String {
    let r = support::HttpClient::new(gw.addr).get("/v1/shelves/2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()["theme"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_descriptor_set_file_is_loaded() {
    let b = backend().await;
    let set = format!(
        "sets = [\"{}/descriptors/demo.binpb\"]",
        env!("CARGO_MANIFEST_DIR")
    );
    let gw = app::start(Config::from_toml(&config(b, &set, "portico.demo.v1.Library")).unwrap())
        .await
        .unwrap();
    assert_eq!(shelf_theme(&gw).await, "History");
}

#[tokio::test]
async fn proto_sources_are_compiled_at_startup() {
    let b = backend().await;
    let protos = format!(
        "proto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]",
        support::proto_dir()
    );
    let gw = app::start(Config::from_toml(&config(b, &protos, "portico.demo.v1.Library")).unwrap())
        .await
        .unwrap();
    assert_eq!(shelf_theme(&gw).await, "History");
}

#[tokio::test]
async fn server_reflection_is_read_from_the_upstream() {
    let b = backend().await;
    let gw = app::start(
        Config::from_toml(&config(
            b,
            "reflect = [\"demo\"]",
            "portico.demo.v1.Library",
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(shelf_theme(&gw).await, "History");
}

#[tokio::test]
async fn reflection_reads_the_next_endpoint_when_the_first_is_down() {
    let b = backend().await;
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = config(b, "reflect = [\"demo\"]", "portico.demo.v1.Library").replace(
        &format!("endpoints = [\"{b}\"]"),
        &format!("endpoints = [\"{down}\", \"{b}\"]"),
    );
    let gw = app::start(Config::from_toml(&text).unwrap()).await.unwrap();
    assert_eq!(shelf_theme(&gw).await, "History");
}

#[tokio::test]
async fn a_route_to_an_unknown_service_names_the_key_and_the_service() {
    let b = backend().await;
    let protos = format!(
        "proto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/feed.proto\"]",
        support::proto_dir()
    );
    let err = app::load(Config::from_toml(&config(b, &protos, "portico.demo.v1.Nope")).unwrap())
        .await
        .err()
        .expect("load fails")
        .to_string();
    assert!(err.contains("routes[0].grpc_service"), "{err}");
    assert!(err.contains("portico.demo.v1.Nope"), "{err}");
    assert!(
        err.contains("portico.demo.v1.Feed"),
        "lists what is loaded: {err}"
    );
}

#[tokio::test]
async fn a_missing_import_names_the_proto_file_and_the_import() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("svc.proto"),
        "syntax = \"proto3\";\npackage x;\nimport \"shared/types.proto\";\n",
    )
    .unwrap();
    let b = backend().await;
    let protos = format!(
        "proto_paths = [\"{}\"]\nprotos = [\"svc.proto\"]",
        dir.display()
    );
    let err = app::load(Config::from_toml(&config(b, &protos, "x.Svc")).unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("shared/types.proto"), "{err}");
    assert!(err.contains("svc.proto"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn colliding_bindings_are_a_startup_error_naming_both_methods() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-collide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("c.proto"),
        r#"syntax = "proto3";
package c;
import "google/api/annotations.proto";
message M { string id = 1; }
service S {
  rpc A(M) returns (M) { option (google.api.http) = {get: "/v1/things/{id}"}; }
  rpc B(M) returns (M) { option (google.api.http) = {get: "/v1/things/{id=*}"}; }
}
"#,
    )
    .unwrap();
    let b = backend().await;
    let protos = format!(
        "proto_paths = [\"{}\"]\nprotos = [\"c.proto\"]",
        dir.display()
    );
    let err = app::load(Config::from_toml(&config(b, &protos, "c.S")).unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("c.S.A") && err.contains("c.S.B") && err.contains("collides"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_binding_naming_a_missing_field_is_a_startup_error() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-field-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("f.proto"),
        r#"syntax = "proto3";
package f;
import "google/api/annotations.proto";
message M { string id = 1; }
service S {
  rpc A(M) returns (M) { option (google.api.http) = {post: "/v1/{name}" body: "thing"}; }
}
"#,
    )
    .unwrap();
    let b = backend().await;
    let protos = format!(
        "proto_paths = [\"{}\"]\nprotos = [\"f.proto\"]",
        dir.display()
    );
    let err = app::load(Config::from_toml(&config(b, &protos, "f.S")).unwrap())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("f.S.A") && err.contains("\"name\""), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_method_list_naming_a_method_that_cannot_use_it_names_the_key() {
    let b = backend().await;
    let feed = "grpc_service = \"portico.demo.v1.Feed\"\nupstream = \"demo\"\n";
    for (feed_extra, sections, key, reason) in [
        (
            "cache = { ttl = \"1s\", methods = [\"Nope\"] }\n",
            "",
            "routes[1].cache.methods[0]",
            "portico.demo.v1.Feed has no method Nope",
        ),
        (
            "cache = { ttl = \"1s\", methods = [\"Watch\"] }\n",
            "",
            "routes[1].cache.methods[0]",
            "portico.demo.v1.Feed.Watch streams; only unary replies are cached",
        ),
        (
            "",
            "[upstreams.demo.retry]\nidempotent_methods = [\"GetShelf\", \"Nope\"]\n",
            "upstreams.demo.retry.idempotent_methods[1]",
            "no method routed to upstream demo is named Nope",
        ),
    ] {
        let text =
            support::config_text(b, "", "").replacen(feed, &format!("{feed}{feed_extra}"), 1)
                + sections;
        let err = app::load(Config::from_toml(&text).unwrap())
            .await
            .err()
            .expect("load fails")
            .to_string();
        assert!(err.contains(key) && err.contains(reason), "{err}");
    }
    // A method the route's `methods` leaves out never passes its cache,
    // nor does a rule bind it.
    for (keys, key, method) in [
        (
            "cache = { ttl = \"1s\", methods = [\"GetShelf\", \"ListBooks\"] }",
            "routes[0].cache.methods[1]",
            "ListBooks",
        ),
        (
            "http_rules.Stats = { get = \"/v1/stats\" }",
            "routes[0].http_rules.Stats",
            "Stats",
        ),
    ] {
        let text = support::config_text(b, "", "")
            .with_route_keys("Library", &format!("methods = [\"GetShelf\"]\n{keys}"));
        let err = app::load(Config::from_toml(&text).unwrap())
            .await
            .err()
            .expect("load fails")
            .to_string();
        assert!(
            err.contains(key)
                && err.contains(&format!(
                    "this route does not serve portico.demo.v1.Library.{method}"
                )),
            "{err}"
        );
    }
    // A method may be named simply, by its full name, or by its gRPC path.
    let text = support::config_text(b, "", "")
        + "[upstreams.demo.retry]\nidempotent_methods = [\"GetShelf\", \"portico.demo.v1.Library.ListBooks\", \"portico.demo.v1.Library/GetBook\"]\n";
    let gw = app::load(Config::from_toml(&text).unwrap()).await;
    assert!(gw.is_ok(), "{:?}", gw.err().map(|e| e.to_string()));
}

#[tokio::test]
async fn two_sources_that_disagree_name_the_listed_file_once() {
    // A copy of the demo's library.proto with one more field, listed by a
    // path to it rather than its name under the include path.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-conflict-{}", std::process::id()));
    let copy = dir.join("portico/demo/v1");
    std::fs::create_dir_all(&copy).unwrap();
    let original = std::fs::read_to_string(format!(
        "{}/portico/demo/v1/library.proto",
        support::proto_dir()
    ))
    .unwrap();
    let changed = original.replacen(
        "message Shelf {\n",
        "message Shelf {\n  string added_here = 99;\n",
        1,
    );
    assert_ne!(changed, original);
    std::fs::write(copy.join("library.proto"), changed).unwrap();
    let b = backend().await;
    let descriptors = format!(
        "sets = [\"{root}/descriptors/demo.binpb\"]\nproto_paths = [\"{dir}\", \"{protos}\"]\nprotos = [\"{dir}/portico/demo/v1/library.proto\"]",
        root = env!("CARGO_MANIFEST_DIR"),
        dir = dir.display(),
        protos = support::proto_dir()
    );
    let err =
        app::load(Config::from_toml(&config(b, &descriptors, "portico.demo.v1.Library")).unwrap())
            .await
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("descriptors.protos[0]: "), "{err}");
    assert!(err.contains("portico/demo/v1/library.proto"), "{err}");
    assert!(
        err.contains("an earlier schema source defines this file"),
        "{err}"
    );
    assert_eq!(
        err.matches("descriptors.protos").count(),
        1,
        "named once: {err}"
    );
    std::fs::remove_dir_all(dir).ok();
}
