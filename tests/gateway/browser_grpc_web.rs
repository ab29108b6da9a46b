//! The stock grpc-web client library, in headless Chromium, calling the
//! demo services through Portico from another origin (so CORS is real).

use crate::support;

use support::browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_using_the_grpc_web_library_calls_through_the_gateway() {
    let Some(chromium) = browser::available() else {
        return;
    };
    let pages = browser::static_server(browser::pages_dir()).await;
    let origin = format!("http://{pages}");
    let cors = format!("cors = {{ allowed_origins = [\"{origin}\"] }}");
    let h = support::Harness::start_with("", &cors).await;
    let url = format!("{origin}/grpc_web.html?gw=http://{}", h.gateway.addr);
    let result = browser::page_result(&chromium, &url).await;

    assert_eq!(result["textUnary"]["theme"], "Fiction", "{result}");
    assert_eq!(result["binaryUnary"]["theme"], "History", "{result}");
    assert_eq!(result["notFound"]["code"], 5, "{result}");
    assert_eq!(result["notFound"]["message"], "shelf shelves/9 not found");
    let events = result["textStream"]["events"].as_array().unwrap();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3], "{result}");
    assert!(result["textStream"].get("error").is_none(), "{result}");
}
