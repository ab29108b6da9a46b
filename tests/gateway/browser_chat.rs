//! The demo's chat page in headless Chromium: a real browser WebSocket
//! sends a message through the bridge to the bidi Chat backend and back.

use crate::support;

use support::browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_chat_page_round_trips_a_message_in_a_browser() {
    let Some(chromium) = browser::available() else {
        return;
    };
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = portico::demo::config("127.0.0.1:0".parse().unwrap(), backend).unwrap();
    let gw = portico::app::start_with_pages(config, portico::demo::pages())
        .await
        .unwrap();

    let url = format!(
        "http://{}/demo/chat.html?auto=hello%20from%20chromium&user=ada",
        gw.addr
    );
    let result = browser::page_result(&chromium, &url).await;
    let first = &result["received"][0];
    assert_eq!(first["user"], "ada", "{result}");
    assert_eq!(first["text"], "hello from chromium");
    assert!(
        first["sentAt"].is_string(),
        "the backend stamped it: {result}"
    );
}
