//! Metrics on the admin port: every call counted by method and status,
//! whatever protocol it came in on, and each endpoint's state.

use crate::support;

use http::StatusCode;
use portico::demo::backends::pb;
use support::HttpClient;

fn line_value(metrics: &str, prefix: &str) -> Option<u64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn calls_from_every_protocol_are_counted_by_method_and_status() {
    let h = support::Harness::start().await;
    let (gateway, backend) = (&h.gateway, h.backend_addr);
    let client = HttpClient::new(gateway.addr);
    for _ in 0..3 {
        assert_eq!(client.get("/v1/shelves/1").await.status, StatusCode::OK);
    }
    assert_eq!(
        client.get("/v1/shelves/9").await.status,
        StatusCode::NOT_FOUND
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::library_client::LibraryClient::new(channel)
        .get_shelf(pb::GetShelfRequest { shelf: "2".into() })
        .await
        .unwrap();

    let admin = HttpClient::new(gateway.admin_addr.unwrap());
    let r = admin.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    let m = r.text();
    let ok = "portico_calls_total{method=\"portico.demo.v1.Library/GetShelf\",upstream=\"demo\",code=\"OK\"}";
    let not_found = "portico_calls_total{method=\"portico.demo.v1.Library/GetShelf\",upstream=\"demo\",code=\"NOT_FOUND\"}";
    assert_eq!(
        line_value(&m, ok),
        Some(4),
        "REST and gRPC calls together:\n{m}"
    );
    assert_eq!(line_value(&m, not_found), Some(1), "{m}");
    assert_eq!(
        line_value(
            &m,
            "portico_call_duration_seconds_count{method=\"portico.demo.v1.Library/GetShelf\"}"
        ),
        Some(5)
    );
    let endpoint =
        format!("portico_endpoint_available{{upstream=\"demo\",endpoint=\"{backend}\"}}");
    assert_eq!(line_value(&m, &endpoint), Some(1), "{m}");
}

#[tokio::test]
async fn authenticated_calls_are_counted_per_principal() {
    let sections = format!(
        "[authenticators.partners]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        support::fixture("api_keys.toml")
    );
    let h = support::Harness::start_with(&sections, "auth = \"partners\"").await;
    let gateway = &h.gateway;
    let client = HttpClient::new(gateway.addr);
    for key in ["acme-key-123", "acme-key-123", "globex-key-456"] {
        let r = client
            .send(
                http::Method::GET,
                "/v1/shelves/1",
                &[("x-api-key", key)],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Refused before authentication succeeds: nobody's usage.
    assert_eq!(
        client.get("/v1/shelves/1").await.status,
        StatusCode::UNAUTHORIZED
    );
    let m = HttpClient::new(gateway.admin_addr.unwrap())
        .get("/metrics")
        .await
        .text();
    assert_eq!(
        line_value(&m, "portico_principal_calls_total{principal=\"acme\"}"),
        Some(2),
        "{m}"
    );
    assert_eq!(
        line_value(&m, "portico_principal_calls_total{principal=\"globex\"}"),
        Some(1)
    );
    assert_eq!(
        line_value(
            &m,
            "portico_calls_total{method=\"portico.demo.v1.Library/GetShelf\",upstream=\"demo\",code=\"UNAUTHENTICATED\"}"
        ),
        Some(1),
        "refusals are counted too"
    );
}

#[tokio::test]
async fn the_dashboard_page_and_its_stats_are_on_the_admin_port() {
    let h = support::Harness::start().await;
    let (gateway, backend) = (&h.gateway, h.backend_addr);
    let client = HttpClient::new(gateway.addr);
    client.get("/v1/shelves/1").await;
    client.get("/v1/shelves/9").await;
    let admin = HttpClient::new(gateway.admin_addr.unwrap());
    let page = admin.get("/").await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("fetch(\"/stats\""));
    let stats = admin.get("/stats").await.json();
    let shelf = stats["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "portico.demo.v1.Library/GetShelf")
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(shelf["total"], 2);
    assert_eq!(shelf["codes"]["OK"], 1);
    assert_eq!(shelf["codes"]["NOT_FOUND"], 1);
    assert_eq!(
        stats["upstreams"][0]["endpoints"][0]["address"],
        backend.to_string()
    );
}

/// Every admin page answers; a page that does not exist is a 404 whatever
/// the method, a page that only reads refuses a write with 405 and `Allow`,
/// and each refusal is `{"error": ...}` saying what to do instead.
#[tokio::test]
async fn the_admin_port_answers_its_pages_and_refuses_the_rest_in_one_shape() {
    let h = support::Harness::start().await;
    let admin = HttpClient::new(h.gateway.admin_addr.unwrap());
    for page in [
        "/",
        "/dashboard",
        "/healthz",
        "/readyz",
        "/routes",
        "/upstreams",
        "/stats",
        "/usage",
        "/metrics",
        "/config",
        "/openapi.json",
    ] {
        let r = admin.get(page).await;
        assert_eq!(r.status, StatusCode::OK, "{page}: {}", r.text());
    }
    // The demo harness has no [redis]: /fleet exists and says why it is empty.
    let r = admin.get("/fleet").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].as_str().unwrap().contains("[redis]"));
    let cases = [
        (
            http::Method::GET,
            "/nope",
            StatusCode::NOT_FOUND,
            "no admin page /nope",
        ),
        (
            http::Method::POST,
            "/nope",
            StatusCode::NOT_FOUND,
            "POST /config/reload",
        ),
        (
            http::Method::DELETE,
            "/metrics",
            StatusCode::METHOD_NOT_ALLOWED,
            "GET them",
        ),
        (
            http::Method::GET,
            "/usage?format=xml",
            StatusCode::BAD_REQUEST,
            "is not a format",
        ),
    ];
    for (method, path, status, says) in cases {
        let r = admin.send(method.clone(), path, &[], "").await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(says), "{method} {path}: {error}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(r.header("allow"), Some("GET, HEAD"));
        }
    }
}

/// Names come from the config and from identities: a quote, a backslash
/// or a line feed in one is escaped as the Prometheus text format says,
/// so one odd name cannot break the whole scrape.
#[tokio::test]
async fn label_values_are_escaped_as_the_text_format_says() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    // The consumer "odd\nname" holds acme's key.
    std::fs::write(
        &keys,
        "\"odd\\nname\" = \"a8becd6134fb3a40415fb328a7939e1c8065e4f45697070c9f84aa0fe25649b0\"\n",
    )
    .unwrap();
    let sections = format!(
        "[authenticators.partners]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        keys.display()
    );
    let h = support::Harness::start_with_config(|backend| {
        support::config_text(backend, &sections, "auth = \"partners\"")
            .replace("[upstreams.demo]", "[upstreams.'de\"mo\\x']")
            .replace("upstream = \"demo\"", "upstream = 'de\"mo\\x'")
    })
    .await;
    let r = HttpClient::new(h.gateway.addr)
        .send(
            http::Method::GET,
            "/v1/shelves/1",
            &[("x-api-key", "acme-key-123")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let m = HttpClient::new(h.gateway.admin_addr.unwrap())
        .get("/metrics")
        .await
        .text();
    for sample in [
        "portico_calls_total{method=\"portico.demo.v1.Library/GetShelf\",upstream=\"de\\\"mo\\\\x\",code=\"OK\"} 1",
        "portico_upstream_in_flight{upstream=\"de\\\"mo\\\\x\"} 0",
        "portico_principal_calls_total{principal=\"odd\\nname\"} 1",
    ] {
        assert!(m.lines().any(|l| l == sample), "{sample} in\n{m}");
    }
    // Every line is a comment or one sample: no value broke a line.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(series.starts_with("portico_"), "{line}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Before choosing `headers_with_underscores = "allow"`, an operator asks
/// whether any client sends such names at all: the drops are counted, on
/// every protocol.
#[tokio::test]
async fn headers_dropped_for_an_underscore_are_counted_on_every_protocol() {
    use support::protocols::{call, gateway, EVERY_PROTOCOL};
    let h = gateway("", "").await;
    let admin = HttpClient::new(h.gateway.admin_addr.unwrap());
    let name = "portico_dropped_headers_with_underscores_total ";
    let dropped = || async { line_value(&admin.get("/metrics").await.text(), name) };
    let before = dropped().await.expect("the counter is exported");
    for protocol in EVERY_PROTOCOL {
        let seen = call(
            &h,
            protocol,
            &[("x_tenant", "acme"), ("x_user", "ada")],
            "",
            None,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert!(!seen.metadata.contains_key("x_tenant"), "{protocol:?}");
    }
    // Other tests in this process may drop some too: at least ours.
    let after = dropped().await.unwrap();
    assert!(
        after - before >= 2 * EVERY_PROTOCOL.len() as u64,
        "{before} -> {after}"
    );
}
