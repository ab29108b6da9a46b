//! Usage analytics: the admin port's `/usage` (JSON and CSV) counts exactly
//! the traffic a test made, per principal and method, whatever protocol
//! carried it; failed calls count as calls and as errors.

use crate::support;

use support::protocols::{call, Protocol};
use support::{fixture, Harness, HttpClient};

#[tokio::test]
async fn usage_counts_each_principals_calls_errors_and_bytes_per_method() {
    let sections = format!(
        "[authenticators.partners]\nkind = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\n",
        fixture("api_keys.toml")
    );
    let h = Harness::start_with(&sections, "auth = \"partners\"").await;
    let acme = [("x-api-key", "acme-key-123")];
    let globex = [("x-api-key", "globex-key-456")];
    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::WebSocket] {
        assert_eq!(call(&h, protocol, &acme, "", None).await.code, 0);
    }
    for protocol in [
        Protocol::Connect,
        Protocol::GrpcWeb,
        Protocol::Rest,
        Protocol::Grpc,
    ] {
        assert_eq!(call(&h, protocol, &globex, "", None).await.code, 0);
    }
    for _ in 0..2 {
        let r = h
            .client
            .send(http::Method::GET, "/v1/probe/fail/5", &acme, "")
            .await;
        assert_eq!(r.status, 404);
    }
    // No credential: refused, counted for nobody in particular.
    for protocol in [Protocol::Rest, Protocol::Connect] {
        assert_eq!(call(&h, protocol, &[], "", None).await.code, 16);
    }

    let admin = HttpClient::new(h.gateway.admin_addr.unwrap());
    let usage = admin.get("/usage").await;
    assert_eq!(usage.status, 200);
    let usage = usage.json();
    assert_eq!(usage["max_pairs"], 1000);
    let find = |window: &str, principal: &str, method: &str| {
        usage["windows"][window]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["principal"] == principal && r["method"] == method)
            .cloned()
            .unwrap_or_else(|| panic!("no {principal} {method} in {window}: {usage:#}"))
    };
    let headers = "portico.demo.v1.Probe/Headers";
    for window in ["1m", "1h", "24h"] {
        let a = find(window, "acme", headers);
        assert_eq!(
            (a["calls"].as_u64(), a["errors"].as_u64()),
            (Some(3), Some(0)),
            "{a}"
        );
        assert_eq!(a["bytes_in"], 0, "an empty request message: {a}");
        assert!(a["bytes_out"].as_u64().unwrap() > 0, "{a}");
        assert!(a["p50_ms"].as_f64().unwrap() > 0.0, "{a}");
        assert!(a["p99_ms"].as_f64().unwrap() >= a["p50_ms"].as_f64().unwrap());
        let g = find(window, "globex", headers);
        assert_eq!(
            (g["calls"].as_u64(), g["errors"].as_u64()),
            (Some(4), Some(0)),
            "{g}"
        );
        let f = find(window, "acme", "portico.demo.v1.Probe/Fail");
        assert_eq!(
            (f["calls"].as_u64(), f["errors"].as_u64()),
            (Some(2), Some(2)),
            "{f}"
        );
        let n = find(window, "anonymous", headers);
        assert_eq!(
            (n["calls"].as_u64(), n["errors"].as_u64()),
            (Some(2), Some(2)),
            "{n}"
        );
        assert_eq!(
            usage["windows"][window].as_array().unwrap().len(),
            4,
            "{usage:#}"
        );
    }
    // Busiest first.
    assert_eq!(usage["windows"]["1m"][0]["principal"], "globex");

    // A format that is neither is refused, not answered as JSON.
    let typo = admin.get("/usage?format=cvs").await;
    assert_eq!(typo.status, 400, "{}", typo.text());
    assert!(
        typo.json()["error"].as_str().unwrap().contains("\"csv\""),
        "{}",
        typo.text()
    );
    assert_eq!(
        admin.get("/usage?format=json").await.json(),
        admin.get("/usage").await.json()
    );
    // Two formats: neither is guessed at.
    let twice = admin.get("/usage?format=json&format=csv").await;
    assert_eq!(twice.status, 400, "{}", twice.text());
    assert!(twice.text().contains("more than once"), "{}", twice.text());

    let csv = admin.get("/usage?format=csv").await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = csv.text();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("window,principal,method,calls,errors,bytes_in,bytes_out,p50_ms,p95_ms,p99_ms")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 12, "{text}");
    let row = rows
        .iter()
        .find(|r| r[0] == "1h" && r[1] == "acme" && r[2] == "portico.demo.v1.Probe/Fail")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!((row[3], row[4]), ("2", "2"));
}

/// More callers than the book holds: the busiest keep their own rows, the
/// quietest are folded into `other`, and every call is still counted.
#[tokio::test]
async fn callers_beyond_the_books_bound_are_counted_as_other() {
    const SECRET: &str = "a-usage-bound-secret-long-enough";
    let h = Harness::start_with(
        &format!("[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n"),
        "auth = \"users\"",
    )
    .await;
    let bearer = |sub: &str| support::hs256_bearer(SECRET, sub);
    // One steady caller first, then one call each from more callers than
    // there is room for.
    let call_as = |subject: String| {
        let authorization = bearer(&subject);
        let client = &h.client;
        async move {
            let r = client
                .send(
                    http::Method::GET,
                    "/v1/probe/headers",
                    &[("authorization", authorization.as_str())],
                    "",
                )
                .await;
            assert_eq!(r.status, 200, "{subject}");
        }
    };
    for _ in 0..5 {
        call_as("steady".into()).await;
    }
    let extra = 10;
    let callers = 1000 + extra;
    for i in 0..callers {
        call_as(format!("caller-{i}")).await;
    }
    let admin = HttpClient::new(h.gateway.admin_addr.unwrap());
    let usage = admin.get("/usage").await.json();
    let rows = usage["windows"]["1m"].as_array().unwrap();
    let calls = |principal: &str| {
        rows.iter()
            .find(|r| r["principal"] == principal)
            .and_then(|r| r["calls"].as_u64())
    };
    assert_eq!(rows.len(), 1001, "1000 pairs and `other`");
    assert_eq!(calls("steady"), Some(5), "the busiest keeps its row");
    // The steady caller's pair was never the quietest, so 1 + extra of the
    // one-call pairs made room.
    assert_eq!(calls("other"), Some(1 + extra as u64));
    let total: u64 = rows.iter().map(|r| r["calls"].as_u64().unwrap()).sum();
    assert_eq!(total, 5 + callers as u64, "every call is counted");
}
