//! A developer opens `/docs` in a browser, finds GetShelf, presses "Try it
//! out" and "Execute": the request goes through the gateway that served the
//! page and the reply shows.

use crate::support;

use support::browser;

/// Drives Swagger UI one step per poll, as a user clicks; returns the
/// executed request's status and body once they show.
const TRY_IT: &str = r#"(() => {
  // A step that never comes ends the test with where it stopped.
  window.__polls = (window.__polls || 0) + 1;
  const stuck = step => window.__polls > 200 ? JSON.stringify({ stuck: step }) : '';
  const op = [...document.querySelectorAll('.opblock.opblock-get')]
    .find(b => (b.querySelector('.opblock-summary-path') || { dataset: {} }).dataset.path === '/v1/shelves/{shelf}');
  if (!op) return stuck('no operation');
  if (!op.classList.contains('is-open')) {
    (op.querySelector('.opblock-summary-control') || op.querySelector('.opblock-summary')).click();
    return stuck('opening');
  }
  const tryOut = op.querySelector('.try-out__btn');
  if (tryOut && !tryOut.classList.contains('cancel')) { tryOut.click(); return stuck('try it out'); }
  const input = op.querySelector('.parameters input[type=text], .parameters input:not([type])');
  if (!input) return stuck('no input');
  if (input.value !== '1') {
    const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
    set.call(input, '1');
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.dispatchEvent(new Event('change', { bubbles: true }));
    window.__typed = window.__polls;
    return stuck('typing');
  }
  const status = op.querySelector('.live-responses-table tbody .response-col_status');
  if (!status) {
    const execute = op.querySelector('.execute');
    // The field takes its value after a debounce, as typing would.
    const settled = window.__polls - (window.__typed || 0) > 10;
    if (execute && settled && !window.__executed) { window.__executed = true; execute.click(); }
    return stuck('executing: ' + op.innerText.replace(/\s+/g, ' ').slice(0, 1500));
  }
  const body = op.querySelector('.live-responses-table .response-col_description pre');
  const url = op.querySelector('.request-url pre');
  return JSON.stringify({
    status: status.textContent.trim(),
    body: body ? body.textContent : '',
    url: url ? url.textContent.trim() : '',
  });
})()"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_it_out_on_the_docs_page_calls_the_api_through_the_gateway() {
    let Some(chromium) = browser::available() else {
        return;
    };
    let h = support::Harness::start().await;
    let url = format!("http://{}/docs", h.gateway.addr);
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs.png");
    let shown = browser::page_poll(&chromium, &url, TRY_IT, Some(&screenshot)).await;
    println!("docs screenshot: {}", screenshot.display());
    assert_eq!(shown["status"], "200", "{shown}");
    assert_eq!(
        shown["url"],
        format!("http://{}/v1/shelves/1", h.gateway.addr),
        "{shown}"
    );
    let body: serde_json::Value = serde_json::from_str(shown["body"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {shown}"));
    assert_eq!(body["name"], "shelves/1", "{shown}");
}
