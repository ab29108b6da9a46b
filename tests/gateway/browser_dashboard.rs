//! The admin dashboard in headless Chromium: the page polls /stats and
//! shows the calls that went through the gateway and the endpoints' state.

use crate::support;

use support::{browser, HttpClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_calls_rates_and_endpoints_in_a_browser() {
    let Some(chromium) = browser::available() else {
        return;
    };
    let h = support::Harness::start().await;
    let (gateway, backend) = (&h.gateway, h.backend_addr);
    let client = HttpClient::new(gateway.addr);
    for _ in 0..5 {
        client.get("/v1/shelves/1").await;
    }
    // Traffic keeps flowing while the page polls, so it sees a rate.
    let traffic = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                client.get("/v1/shelves/2").await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let url = format!("http://{}/", gateway.admin_addr.unwrap());
    // Kept as the test's artifact: what an operator sees.
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let shown = browser::page_result_with_screenshot(&chromium, &url, Some(&screenshot)).await;
    println!("dashboard screenshot: {}", screenshot.display());
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 1000);
    traffic.abort();
    let shelf = shown["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == "portico.demo.v1.Library/GetShelf")
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(shelf["total"].as_u64().unwrap() >= 5, "{shown}");
    assert!(
        shelf["rate"].as_f64().unwrap() > 0.0,
        "a live rate: {shown}"
    );
    assert_eq!(shown["endpoints"][0]["address"], backend.to_string());
    assert_eq!(shown["endpoints"][0]["state"], "available");
    assert_eq!(shown["endpoints"][0]["ejections"], 0);
    // A chart per method with traffic: 90 ten-second steps.
    let chart = shown["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "portico.demo.v1.Library/GetShelf")
        .unwrap_or_else(|| panic!("no chart: {shown}"));
    assert_eq!(chart["points"], 90);
    assert!(chart["calls"].as_u64().unwrap() >= 5, "{chart}");
    // Calls, error rate and latency each drew something, even when every
    // call fell in one ten-second step (a dot, not an invisible line).
    let drawn: Vec<u64> = chart["drawn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(drawn.len(), 3, "{chart}");
    assert!(drawn.iter().all(|n| *n > 0), "{chart}");
    // Who calls what (unauthenticated here), and the route table with its policies.
    assert!(shown["consumers"].as_array().unwrap().iter().any(
        |c| c["principal"] == "anonymous" && c["method"] == "portico.demo.v1.Library/GetShelf"
    ));
    let route = shown["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["verb"] == "GET" && r["template"] == "/v1/shelves/{shelf}")
        .unwrap_or_else(|| panic!("no route: {shown}"));
    assert_eq!(route["method"], "portico.demo.v1.Library/GetShelf");
    assert_eq!(route["upstream"], "demo");
    assert!(route["policies"].is_string(), "{route}");
    assert!(
        shown["generation"]["digest"].as_str().unwrap().len() >= 12,
        "{shown}"
    );
    // No reload has happened: the page says so, not that one went well.
    let line = shown["generationLine"].as_str().unwrap();
    assert!(
        line.contains("reloads: 0 ok, 0 failed; no reload yet"),
        "{line}"
    );
}
