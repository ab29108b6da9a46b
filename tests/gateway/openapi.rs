//! A client author reads the REST API from the gateway itself: an OpenAPI
//! 3.1 description that a validator accepts, that follows reloads, that
//! `portico openapi` prints, and that the API's replies conform to.

use crate::support;

use http::{Method, StatusCode};
use portico::app;
use portico::config::Config;
use portico::demo::backends::Backends;
use support::{python, HttpClient};

/// The demo gateway, as `portico demo` runs it.
async fn demo() -> (Backends, app::Gateway) {
    let backends = Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = portico::demo::config("127.0.0.1:0".parse().unwrap(), backend).unwrap();
    (backends, app::start(config).await.unwrap())
}

/// The every-field-kind service, its schema compiled from `.proto`.
fn kinds_config(dir: &std::path::Path) -> std::path::PathBuf {
    let fixtures = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[descriptors]
protos = ["kinds.proto"]
proto_paths = ["{fixtures}/openapi"]

[upstreams.things]
endpoints = ["127.0.0.1:9"]

[authenticators.keys]
kind = "api_key"
header = "x-api-key"
query_param = "key"
keys_file = "{fixtures}/api_keys.toml"

[[routes]]
grpc_service = "kinds.v1.Things"
upstream = "things"
auth = "keys"
rate_limit = {{ requests_per_second = 10, burst = 10 }}
"#
    );
    let path = dir.join("kinds.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-openapi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn validate(python: &std::path::Path, spec: &[u8]) {
    let run = python::run(python, "validate_openapi.py", &[], Some(spec)).await;
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("valid"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_is_described_the_same_on_both_ports_and_a_validator_accepts_it() {
    let (_backends, gateway) = demo().await;
    let main = HttpClient::new(gateway.addr).get("/openapi.json").await;
    assert_eq!(main.status, StatusCode::OK);
    assert_eq!(main.header("content-type"), Some("application/json"));
    let admin = HttpClient::new(gateway.admin_addr.unwrap())
        .get("/openapi.json")
        .await;
    assert_eq!(admin.body, main.body);
    let spec = main.json();
    assert_eq!(spec["openapi"], "3.1.0");
    // Comments from the backend's reflection reach the description.
    let watch = &spec["paths"]["/v1/feed"]["get"];
    assert!(
        watch["summary"]
            .as_str()
            .unwrap()
            .contains("replies `count` events"),
        "{watch}"
    );
    assert!(spec["paths"]["/v1/shelves/{shelf}/overview"]["get"].is_object());
    if let Some(python) = python::available(&["openapi_spec_validator"]) {
        validate(&python, &main.body).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portico_openapi_prints_what_the_gateway_serves_for_every_field_kind() {
    let dir = temp_dir("kinds");
    let config = kinds_config(&dir);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["openapi", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gateway = app::start(Config::load(&config).unwrap()).await.unwrap();
    let served = HttpClient::new(gateway.addr)
        .get("/openapi.json")
        .await
        .json();
    assert_eq!(printed, served);
    let get = &served["paths"]["/v1/things"]["get"];
    assert_eq!(
        get["responses"]["429"]["$ref"],
        "#/components/responses/RateLimited"
    );
    assert_eq!(get["security"][1]["keys_query"], serde_json::json!([]));
    // API keys name no scheme: their 401 is described without the
    // WWW-Authenticate challenge a bearer token's carries.
    assert_eq!(
        get["responses"]["401"]["$ref"],
        "#/components/responses/UnauthenticatedNoChallenge"
    );
    let responses = &served["components"]["responses"];
    assert!(responses["UnauthenticatedNoChallenge"]["headers"].is_null());
    assert!(responses["Unauthenticated"]["headers"]["WWW-Authenticate"].is_object());
    assert_eq!(
        served["components"]["schemas"]["kinds.v1.Thing"]["properties"]["createTime"]["format"],
        "date-time"
    );
    if let Some(python) = python::available(&["openapi_spec_validator"]) {
        validate(&python, &out.stdout).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_follows_a_reload() {
    let backends = Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = temp_dir("reload");
    let path = dir.join("portico.toml");
    let text = support::config_text(backend, "", "");
    std::fs::write(&path, &text).unwrap();
    let gateway = app::start(Config::load(&path).unwrap()).await.unwrap();
    let client = HttpClient::new(gateway.addr);
    let before = client.get("/openapi.json").await.json();
    assert!(before["paths"]["/v1/feed"].is_object());
    assert_eq!(before["info"]["title"], "Portico");

    // The Feed route goes, the title changes.
    let feed = "\n[[routes]]\ngrpc_service = \"portico.demo.v1.Feed\"\nupstream = \"demo\"\n\n";
    let changed = format!(
        "[openapi]\ntitle = \"Library API\"\nversion = \"2.0\"\n{}",
        text.replacen(feed, "\n", 1)
    );
    assert_ne!(changed.len(), text.len());
    std::fs::write(&path, changed).unwrap();
    let outcome = HttpClient::new(gateway.admin_addr.unwrap())
        .send(Method::POST, "/config/reload", &[], "")
        .await;
    assert_eq!(outcome.status, StatusCode::OK, "{}", outcome.text());
    let after = client.get("/openapi.json").await.json();
    assert!(
        after["paths"]["/v1/feed"].is_null(),
        "the removed route is gone"
    );
    assert!(after["paths"]["/v1/shelves/{shelf}"].is_object());
    assert_eq!(after["info"]["title"], "Library API");
    assert_eq!(after["info"]["version"], "2.0");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_false_keeps_the_description_and_docs_off_the_main_port_only() {
    let h = support::Harness::start_with("[openapi]\nserve = false\n", "").await;
    for path in ["/openapi.json", "/docs", "/docs/swagger-ui-bundle.js"] {
        let r = h.client.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.json()["code"], 5, "a route miss, as JSON: {path}");
    }
    let admin = HttpClient::new(h.gateway.admin_addr.unwrap())
        .get("/openapi.json")
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    assert!(admin.json()["paths"]["/v1/shelves/{shelf}"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_and_its_files_come_from_the_gateway() {
    let h = support::Harness::start().await;
    let page = h.client.get("/docs").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    for src in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/init.js",
    ] {
        assert!(
            page.text().contains(src) || src == "/docs/init.js" && page.text().contains("init.js")
        );
        let file = h.client.get(src).await;
        assert_eq!(file.status, StatusCode::OK, "{src}");
        assert!(file.body.len() > 100, "{src}");
    }
    // Nothing on the page is loaded from elsewhere.
    assert!(!page.text().contains("http://") && !page.text().contains("https://"));
    // HEAD is answered as GET, without the body, as for any resource.
    for path in ["/docs", "/docs/swagger-ui.css", "/openapi.json"] {
        let got = h.client.get(path).await;
        let head = h.client.send(http::Method::HEAD, path, &[], "").await;
        assert_eq!(head.status, StatusCode::OK, "{path}");
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(
            head.header("content-length"),
            Some(got.body.len().to_string().as_str()),
            "{path}"
        );
        assert_eq!(
            head.header("content-type"),
            got.header("content-type"),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_reply_off_the_description() {
    let Some(python) = python::available(&["schemathesis"]) else {
        return;
    };
    let (_backends, gateway) = demo().await;
    let url = format!("http://{}/openapi.json", gateway.addr);
    // Probe fails on purpose (it answers with the status it is asked for).
    let run = python::run(
        &python,
        "schemathesis_run.py",
        &[
            &url,
            "--max-examples",
            "10",
            "--seed",
            "1",
            "--exclude-tag",
            "portico.demo.v1.Probe",
        ],
        None,
    )
    .await;
    println!("{}", run.stdout);
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
}

/// The description and the docs page belong to no route: a route's CORS
/// policy does not open them to another site, even where a binding of
/// that route shares their path (the gateway answers there, not it).
#[tokio::test]
async fn a_bindings_cors_policy_does_not_open_the_gateways_own_pages() {
    use support::RouteKeys;
    let h = support::Harness::start_with_config(|backend| {
        support::config_text(
            backend,
            "[cors]\nallowed_origins = [\"https://app.example\"]\n",
            "",
        )
        .with_route_keys(
            "Library",
            "http_rules.Stats = { post = \"/openapi.json\" }\nhttp_rules.GetShelf = { get = \"/docs/init.js\", additional_bindings = [{ get = \"/docs/shelves/{shelf}\" }] }",
        )
    })
    .await;
    let origin = [("origin", "https://app.example")];
    for path in ["/openapi.json", "/docs/init.js", "/docs"] {
        let r = h.client.send(Method::GET, path, &origin, "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text());
        let preflight = h
            .client
            .send(
                Method::OPTIONS,
                path,
                &[
                    ("origin", "https://app.example"),
                    ("access-control-request-method", "GET"),
                ],
                "",
            )
            .await;
        assert_eq!(preflight.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            preflight.header("access-control-allow-origin").is_none(),
            "{path}"
        );
    }
    // A binding under /docs that no page hides keeps its route's policy.
    let r = h
        .client
        .send(Method::GET, "/docs/shelves/1", &origin, "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // The binding's own method there is the route's, and so is its policy.
    let r = h
        .client
        .send(
            Method::POST,
            "/openapi.json",
            &[
                ("origin", "https://app.example"),
                ("content-type", "application/json"),
            ],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
}
