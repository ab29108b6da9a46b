//! `--threads 1` (or `PORTICO_THREADS=1`) runs the whole gateway on one
//! thread, the cheapest way per request: every protocol is still served,
//! and a slow call holds up nobody else's.

use crate::support;

use support::protocols::{call_at, EVERY_PROTOCOL};
use support::served::Served;

/// The threads of a process whose names start with `prefix` (Linux).
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.trim_end().starts_with(prefix))
        })
        .count()
}

#[tokio::test]
async fn one_thread_serves_every_protocol_and_a_slow_call_blocks_no_other() {
    let (backend, _) = portico::demo::backends::Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let gateway = Served::start_with_env(
        &support::config_text(backend, "", ""),
        "warn",
        &[("PORTICO_THREADS", "1")],
    )
    .await;
    assert_eq!(
        threads_named(gateway.pid(), "tokio-rt-worker"),
        0,
        "PORTICO_THREADS=1 still started worker threads"
    );
    let client = support::HttpClient::new(gateway.addr);

    // A call the backend takes 3 s over is in flight while every protocol
    // makes its own; each of those must finish long before it.
    let slow = {
        let client = support::HttpClient::new(gateway.addr);
        let addr = gateway.addr;
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let seen = call_at(
                addr,
                &client,
                support::protocols::Protocol::Rest,
                &[],
                "",
                Some(3000),
            )
            .await;
            (seen.code, started.elapsed())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    for protocol in EVERY_PROTOCOL {
        let seen = call_at(
            gateway.addr,
            &client,
            protocol,
            &[("x-who", "one-thread")],
            "",
            None,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert_eq!(
            seen.metadata["x-who"], "one-thread",
            "{protocol:?}: the backend did not see the call's metadata"
        );
    }
    let quick = started.elapsed();
    let (code, slow_took) = slow.await.unwrap();
    assert_eq!(code, 0, "the slow call failed");
    assert!(
        quick < slow_took / 2,
        "the quick calls took {quick:?}, waiting behind a call of {slow_took:?}"
    );
}
