//! Load balancing and resilience over several backend instances, each a
//! real process: distribution per algorithm, endpoints that change at run
//! time, instances killed mid-load, health checks, and load shedding.

use crate::support;

use http::StatusCode;
use portico::app::{self, Gateway};
use portico::config::Config;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::instances::{slow_proxy, Instance};
use support::HttpClient;

/// A gateway whose Library and Probe routes go to upstream `pool`,
/// configured by `upstream` (the body of `[upstreams.pool]`).
async fn gateway(upstream: &str) -> (Gateway, HttpClient) {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"

[descriptors]
proto_paths = ["{proto}"]
protos = ["portico/demo/v1/library.proto", "portico/demo/v1/probe.proto"]

[upstreams.pool]
{upstream}

[[routes]]
grpc_service = "portico.demo.v1.Library"
upstream = "pool"

[[routes]]
grpc_service = "portico.demo.v1.Probe"
upstream = "pool"
"#,
        proto = support::proto_dir()
    );
    let gateway = app::start(Config::from_toml(&text).unwrap()).await.unwrap();
    let client = HttpClient::new(gateway.addr);
    (gateway, client)
}

fn endpoints(instances: &[&Instance]) -> String {
    let list: Vec<String> = instances
        .iter()
        .map(|i| format!("\"{}\"", i.addr))
        .collect();
    format!("endpoints = [{}]", list.join(", "))
}

/// Which instance served each of `n` calls to `path`.
async fn served_by(client: &HttpClient, path: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = client.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let by = r.header("x-served-by").expect("x-served-by").to_owned();
        *counts.entry(by).or_insert(0) += 1;
    }
    counts
}

/// `callers` clients calling `GET path` back to back for `length`: the
/// calls that succeeded and the bodies of those that did not.
fn load(
    client: &HttpClient,
    path: &'static str,
    callers: usize,
    length: Duration,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let until = Instant::now() + length;
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while Instant::now() < until {
                    let r = client.get(path).await;
                    if r.status == StatusCode::OK {
                        ok += 1;
                    } else {
                        failed.push(r.text());
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0, Vec::new());
        for w in workers {
            let (n, f) = w.await.unwrap();
            ok += n;
            failed.extend(f);
        }
        (ok, failed)
    })
}

async fn upstream_status(gateway: &Gateway) -> Value {
    let admin = HttpClient::new(gateway.admin_addr.expect("admin port"));
    admin.get("/upstreams").await.json()[0].clone()
}

fn endpoint_status<'a>(status: &'a Value, addr: &str) -> &'a Value {
    status["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr)
        .unwrap_or_else(|| panic!("{addr} not in {status}"))
}

#[tokio::test]
async fn round_robin_follows_the_weights() {
    let (a, b, c) = (
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
    );
    let (_gw, client) = gateway(&format!(
        "endpoints = [\"{}\", \"{}\", {{ address = \"{}\", weight = 2 }}]",
        a.addr, b.addr, c.addr
    ))
    .await;
    let counts = served_by(&client, "/v1/probe/headers", 200).await;
    assert_eq!(counts[&a.addr.to_string()], 50, "{counts:?}");
    assert_eq!(counts[&b.addr.to_string()], 50, "{counts:?}");
    assert_eq!(counts[&c.addr.to_string()], 100, "{counts:?}");
}

#[tokio::test]
async fn least_request_steers_calls_away_from_a_slow_endpoint() {
    let (fast, slow) = (
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
    );
    // Far slower than a fast call on a busy machine (the tests run side by
    // side, in a debug build), so the contrast holds whatever the load.
    let slowed = slow_proxy(slow.addr, Duration::from_millis(150)).await;
    let (_gw, client) = gateway(&format!(
        "endpoints = [\"{}\", \"{slowed}\"]\nbalance = \"least_request\"",
        fast.addr
    ))
    .await;
    // Eight callers at once for a second: the slow endpoint's calls stay in
    // flight longer, so the two-choice pick sends most calls elsewhere.
    let until = Instant::now() + Duration::from_secs(1);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut counts: HashMap<String, usize> = HashMap::new();
                while Instant::now() < until {
                    let r = client.get("/v1/probe/headers").await;
                    assert_eq!(r.status, StatusCode::OK);
                    *counts
                        .entry(r.header("x-served-by").unwrap().to_owned())
                        .or_default() += 1;
                }
                counts
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for w in workers {
        for (k, v) in w.await.unwrap() {
            *counts.entry(k).or_default() += v;
        }
    }
    let to_fast = counts.get(&fast.addr.to_string()).copied().unwrap_or(0);
    let to_slow = counts.get(&slow.addr.to_string()).copied().unwrap_or(0);
    assert!(
        to_fast > 4 * to_slow,
        "fast {to_fast}, slow {to_slow}: least request should favour the fast endpoint"
    );
}

#[tokio::test]
async fn consistent_hashing_keeps_keys_and_moves_about_a_fifth_when_an_instance_joins() {
    let instances = [
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
    ];
    let newcomer = Instance::start("127.0.0.1:0").await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-hash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.txt");
    let list = |extra: Option<&Instance>| {
        instances
            .iter()
            .chain(extra)
            .map(|i| format!("{}\n", i.addr))
            .collect::<String>()
    };
    std::fs::write(&file, list(None)).unwrap();
    let (_gw, client) = gateway(&format!(
        "endpoints_file = \"{}\"\nbalance = \"consistent_hash\"\nhash_key = \"header:x-user\"",
        file.display()
    ))
    .await;
    let owner = |user: String| {
        let client = client.clone();
        async move {
            let r = client
                .send(
                    http::Method::GET,
                    "/v1/probe/headers",
                    &[("x-user", user.as_str())],
                    "",
                )
                .await;
            r.header("x-served-by").unwrap().to_owned()
        }
    };
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut before = Vec::new();
    for u in &users {
        before.push(owner(u.clone()).await);
    }
    for (u, b) in users.iter().zip(&before).take(50) {
        assert_eq!(&owner(u.clone()).await, b, "{u} sticks to its instance");
    }
    let spread: std::collections::HashSet<&String> = before.iter().collect();
    assert_eq!(spread.len(), 4, "keys spread over every instance");

    // A fifth instance joins through the watched file, without a restart.
    std::fs::write(&file, list(Some(&newcomer))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let newcomer_addr = newcomer.addr.to_string();
    'wait: loop {
        for i in 0..40 {
            if owner(format!("joiner-{i}")).await == newcomer_addr {
                break 'wait;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the newcomer never received keys"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut moved, mut to_newcomer) = (0, 0);
    for (u, b) in users.iter().zip(&before) {
        let now = owner(u.clone()).await;
        if &now != b {
            moved += 1;
            to_newcomer += usize::from(now == newcomer_addr);
        }
    }
    // Maglev moves a few keys among the others too, for balance.
    assert!(
        to_newcomer * 10 >= moved * 9,
        "{to_newcomer} of {moved} moved to the newcomer"
    );
    let share = moved as f64 / users.len() as f64;
    assert!(
        (0.08..0.35).contains(&share),
        "{moved} of {} keys moved",
        users.len()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_killed_instance_loses_no_idempotent_call_is_ejected_and_readmitted_when_back() {
    let a = Instance::start("127.0.0.1:0").await;
    let mut b = Instance::start("127.0.0.1:0").await;
    let c = Instance::start("127.0.0.1:0").await;
    let (gw, client) = gateway(&format!(
        "{}\n[upstreams.pool.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_time = \"3s\"\n",
        endpoints(&[&a, &b, &c])
    ))
    .await;
    // Four callers of an idempotent method (GetShelf is NO_SIDE_EFFECTS) for
    // a second and a half; one instance is killed a third of the way in.
    let load = load(&client, "/v1/shelves/1", 4, Duration::from_millis(1500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.kill().await;
    let (total, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert!(total > 100, "only {total} calls");
    let status = upstream_status(&gw).await;
    assert_eq!(
        endpoint_status(&status, &b.addr.to_string())["ejected"],
        true,
        "{status}"
    );

    // Back on the same port: after its ejection time it takes calls again.
    b.restart().await;
    let b_addr = b.addr.to_string();
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let counts = served_by(&client, "/v1/probe/headers", 9).await;
        if counts.contains_key(&b_addr) {
            break;
        }
        assert!(Instant::now() < deadline, "never readmitted: {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn health_checks_take_a_stopped_instance_out_and_bring_it_back() {
    let a = Instance::start("127.0.0.1:0").await;
    let mut b = Instance::start("127.0.0.1:0").await;
    let (gw, client) = gateway(&format!(
        "{}\n[upstreams.pool.health_check]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n",
        endpoints(&[&a, &b])
    ))
    .await;
    let b_addr = b.addr.to_string();
    let healthy = |status: &Value| endpoint_status(status, &b_addr)["healthy"] == true;
    assert!(healthy(&upstream_status(&gw).await));
    b.kill().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while healthy(&upstream_status(&gw).await) {
        assert!(
            Instant::now() < deadline,
            "still healthy after being stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Out of rotation: even a call that may not be retried goes to the other.
    let counts = served_by(&client, "/v1/probe/headers", 10).await;
    assert_eq!(counts[&a.addr.to_string()], 10);

    b.restart().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !healthy(&upstream_status(&gw).await) {
        assert!(
            Instant::now() < deadline,
            "not healthy again after restarting"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = served_by(&client, "/v1/probe/headers", 10).await;
    assert_eq!(counts.get(&b_addr), Some(&5), "{counts:?}");
}

/// Round robin with one of three endpoints out of rotation: the other
/// two take turns, not the one after the sick one twice as often.
#[tokio::test]
async fn a_sick_endpoints_turns_are_shared_evenly() {
    let a = Instance::start("127.0.0.1:0").await;
    let b = Instance::start("127.0.0.1:0").await;
    let mut c = Instance::start("127.0.0.1:0").await;
    let (gw, client) = gateway(&format!(
        // A timeout as long as the interval allows: a and b answer at
        // once, a stopped c refuses at once, and a slow machine takes
        // neither a nor b out.
        "{}\n[upstreams.pool.health_check]\ninterval = \"500ms\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n",
        endpoints(&[&a, &b, &c])
    ))
    .await;
    let c_addr = c.addr.to_string();
    c.kill().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while endpoint_status(&upstream_status(&gw).await, &c_addr)["healthy"] == true {
        assert!(
            Instant::now() < deadline,
            "still healthy after being stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = served_by(&client, "/v1/probe/headers", 30).await;
    assert_eq!(counts.get(&a.addr.to_string()), Some(&15), "{counts:?}");
    assert_eq!(counts.get(&b.addr.to_string()), Some(&15), "{counts:?}");
}

#[tokio::test]
async fn a_flood_over_the_circuit_breaker_is_shed_at_once_and_service_recovers() {
    let a = Instance::start("127.0.0.1:0").await;
    let (_gw, client) = gateway(&format!(
        "{}\n[upstreams.pool.circuit_breaker]\nmax_requests = 4\n",
        endpoints(&[&a])
    ))
    .await;
    let started = Instant::now();
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let r = client.get("/v1/probe/sleep/500").await;
                (
                    r.status,
                    r.header("x-portico-overloaded").map(str::to_owned),
                    Instant::now(),
                )
            })
        })
        .collect();
    let mut ok = 0;
    let mut shed = 0;
    for c in calls {
        let (status, why, at) = c.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                shed += 1;
                assert_eq!(why.as_deref(), Some("max_requests"));
                assert!(
                    at - started < Duration::from_millis(400),
                    "shed calls fail fast"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, shed), (4, 8));
    assert_eq!(client.get("/v1/probe/sleep/1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn streams_past_the_per_connection_cap_open_another_connection() {
    let a = Instance::start("127.0.0.1:0").await;
    let (gw, client) = gateway(&format!(
        "{}\nmax_streams_per_connection = 2\nmax_connections_per_endpoint = 3\n",
        endpoints(&[&a])
    ))
    .await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("/v1/probe/sleep/400").await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = upstream_status(&gw).await;
    assert_eq!(
        endpoint_status(&status, &a.addr.to_string())["connections"],
        3,
        "{status}"
    );
    for c in calls {
        assert_eq!(c.await.unwrap(), StatusCode::OK);
    }
}

/// `/upstreams` counts the connections open now: one whose backend died
/// is gone from the count at once, though the pool reopens it on the next
/// call once the backend is back.
#[tokio::test]
async fn upstreams_counts_no_connection_to_a_dead_backend() {
    let mut a = Instance::start("127.0.0.1:0").await;
    let (gw, client) = gateway(&endpoints(&[&a])).await;
    let addr = a.addr.to_string();
    let connections =
        || async { endpoint_status(&upstream_status(&gw).await, &addr)["connections"].clone() };
    assert_eq!(client.get("/v1/probe/sleep/1").await.status, StatusCode::OK);
    assert_eq!(connections().await, 1);

    a.kill().await;
    assert!(
        support::eventually_async(|| async { connections().await == 0 }).await,
        "{}",
        upstream_status(&gw).await
    );

    a.restart().await;
    assert!(
        support::eventually_async(|| async {
            client.get("/v1/probe/sleep/1").await.status == StatusCode::OK
        })
        .await
    );
    assert_eq!(connections().await, 1);
}

#[tokio::test]
async fn a_dns_name_is_resolved_into_endpoints() {
    let a = Instance::start("127.0.0.1:0").await;
    let (gw, client) = gateway(&format!(
        "dns = \"localhost:{}\"\ndns_refresh = \"1s\"",
        a.addr.port()
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = upstream_status(&gw).await;
        if status["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["address"] == a.addr.to_string())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "localhost never resolved: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // localhost may also resolve to ::1, where nothing listens: refused
    // connections never reached a backend, so they are retried elsewhere.
    let counts = served_by(&client, "/v1/probe/headers", 10).await;
    assert_eq!(counts.values().sum::<usize>(), 10);
}

#[tokio::test]
async fn a_call_past_its_deadline_is_a_504_in_time_and_not_retried_elsewhere() {
    let a = Instance::start("127.0.0.1:0").await;
    let b = Instance::start("127.0.0.1:0").await;
    let (_gw, client) = gateway(&endpoints(&[&a, &b])).await;
    let started = Instant::now();
    let r = client
        .send(
            http::Method::GET,
            "/v1/probe/sleep/3000",
            &[("grpc-timeout", "300m")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(1000));
}

#[tokio::test]
async fn a_backend_going_away_mid_load_loses_no_call_even_a_non_idempotent_one() {
    use portico::demo::backends::Backends;
    let mut stops = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let backends = Backends::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        backends.probe.set_served_by(addr.to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        backends.serve_until(listener, async move {
            let _ = stopped.await;
        });
        stops.push(stop);
        addrs.push(addr);
    }
    let (_gw, client) = gateway(&format!("endpoints = [\"{}\", \"{}\"]", addrs[0], addrs[1])).await;
    // Probe.Sleep is not idempotent: only calls that never reached the
    // backend (refused streams, refused connections) may be retried.
    let load = load(
        &client,
        "/v1/probe/sleep/20",
        6,
        Duration::from_millis(1200),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Graceful shutdown: GOAWAY to the gateway, calls in flight finish.
    let _ = stops.remove(0).send(());
    let (total, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "lost calls: {failed:?}");
    assert!(total > 100, "only {total} calls");
}

#[tokio::test]
async fn removing_an_instance_from_the_file_lets_its_calls_in_flight_finish() {
    let (a, b) = (
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-remove-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("endpoints.txt");
    std::fs::write(&file, format!("{}\n{} 1\n", a.addr, b.addr)).unwrap();
    let (gw, client) = gateway(&format!("endpoints_file = \"{}\"", file.display())).await;
    // Round robin: four slow calls, two on each instance.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let r = client.get("/v1/probe/sleep/800").await;
                (r.status, r.header("x-served-by").map(str::to_owned))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&file, format!("# b is being retired\n{}\n", a.addr)).unwrap();
    let b_addr = b.addr.to_string();
    let deadline = Instant::now() + Duration::from_secs(3);
    while upstream_status(&gw).await["endpoints"]
        .as_array()
        .unwrap()
        .len()
        != 1
    {
        assert!(Instant::now() < deadline, "the file change was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = served_by(&client, "/v1/probe/headers", 6).await;
    assert_eq!(
        counts.get(&b_addr),
        None,
        "no new call goes to the removed instance"
    );
    let mut on_b = 0;
    for s in slow {
        let (status, by) = s.await.unwrap();
        assert_eq!(status, StatusCode::OK, "a call in flight was dropped");
        on_b += usize::from(by.as_deref() == Some(b_addr.as_str()));
    }
    assert_eq!(on_b, 2, "the removed instance finished its calls");

    // A file caught empty (mid-write) or that does not parse changes
    // nothing: the upstream keeps the endpoint it knows.
    for broken in ["", "# nothing yet\n", "not an address\n"] {
        std::fs::write(&file, broken).unwrap();
        // The file is looked at every 500 ms.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let endpoints = upstream_status(&gw).await["endpoints"].clone();
        assert_eq!(
            endpoints.as_array().map(Vec::len),
            Some(1),
            "{broken:?}: {endpoints}"
        );
        assert_eq!(client.get("/v1/probe/headers").await.status, StatusCode::OK);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn hashing_on_a_request_field_keeps_equal_values_on_one_instance() {
    let instances = [
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
        Instance::start("127.0.0.1:0").await,
    ];
    let refs: Vec<&Instance> = instances.iter().collect();
    // /v1/probe/sleep/{millis}: the path variable fills the field hashed.
    let (_gw, client) = gateway(&format!(
        "{}\nbalance = \"consistent_hash\"\nhash_key = \"field:millis\"",
        endpoints(&refs)
    ))
    .await;
    let mut owners = std::collections::HashSet::new();
    for millis in 1..=12 {
        let path = format!("/v1/probe/sleep/{millis}");
        let counts = served_by(&client, &path, 4).await;
        assert_eq!(counts.len(), 1, "{path} went to {counts:?}");
        owners.extend(counts.into_keys());
    }
    assert!(owners.len() > 1, "different values spread: {owners:?}");
}

#[tokio::test]
async fn calls_queued_behind_full_connections_are_bounded_by_max_pending() {
    let a = Instance::start("127.0.0.1:0").await;
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-pending-{}.log", fastrand::u64(..)));
    // Sleep made idempotent: a shed call is still not sent again.
    let (_gw, client) = gateway(&format!(
        "{}\nmax_streams_per_connection = 1\nmax_connections_per_endpoint = 1\n[upstreams.pool.circuit_breaker]\nmax_pending = 1\n[upstreams.pool.retry]\nidempotent_methods = [\"Sleep\"]\n[access_log]\npath = \"{}\"\n",
        endpoints(&[&a]),
        log.display()
    ))
    .await;
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                // Staggered, so the first holds the stream and the second queues.
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                let r = client.get("/v1/probe/sleep/400").await;
                (
                    r.status,
                    r.header("x-portico-overloaded").map(str::to_owned),
                )
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in calls {
        outcomes.push(c.await.unwrap());
    }
    assert_eq!(outcomes[0].0, StatusCode::OK);
    assert_eq!(outcomes[1].0, StatusCode::OK, "one call may wait");
    assert_eq!(
        outcomes[2],
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("max_pending".to_owned())
        )
    );
    let shed = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["grpc_status"] == "UNAVAILABLE")
    };
    support::eventually(|| shed().is_some()).await;
    assert_eq!(shed().unwrap()["attempts"], 1, "{}", shed().unwrap());
    // Its request never left the gateway: no byte of it reached a backend
    // (usage figures and bills count only what did), while the calls sent
    // count theirs.
    assert_eq!(shed().unwrap()["bytes_in"], 0, "{}", shed().unwrap());
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    support::eventually(|| lines().lines().count() == 3).await;
    let text = lines();
    let served: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["grpc_status"] == "OK")
        .collect();
    assert_eq!(served.len(), 2, "{text}");
    assert!(served.iter().all(|l| l["bytes_in"] == 3), "{text}");
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn hashing_on_a_field_no_routed_method_has_is_a_startup_error() {
    let text = support::config_text("127.0.0.1:1".parse().unwrap(), "", "").replacen(
        "[upstreams.demo]\n",
        "[upstreams.demo]\nbalance = \"consistent_hash\"\nhash_key = \"field:shelff\"\n",
        1,
    );
    let err = portico::app::load(portico::config::Config::from_toml(&text).unwrap())
        .await
        .err()
        .expect("a typo is refused")
        .to_string();
    assert!(err.contains("upstreams.demo.hash_key"), "{err}");
    assert!(err.contains("\"shelff\""), "{err}");
    // A field that only client streams' messages have (Feed.Upload's and
    // Chat.Converse's `text`) would hash nothing either: those calls are
    // balanced before their first message arrives.
    let streams_only = text.replace("field:shelff", "field:text");
    let err = portico::app::load(portico::config::Config::from_toml(&streams_only).unwrap())
        .await
        .err()
        .expect("a field only client streams have is refused")
        .to_string();
    assert!(
        err.contains("upstreams.demo.hash_key") && err.contains("whose request is one message"),
        "{err}"
    );
    // A field some routed method has is fine, whatever the others have.
    let text = text.replace("field:shelff", "field:shelf");
    assert!(
        portico::app::load(portico::config::Config::from_toml(&text).unwrap())
            .await
            .is_ok()
    );
}

/// A backend that answers every call with response headers
/// (`x-served-by: name`) and then `UNAVAILABLE` in the trailers, as a
/// server that sends its initial metadata before failing does.
async fn headers_then_unavailable(
    name: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    support::scripted::serve(support::scripted::Script {
        headers: vec![("x-served-by", name.to_owned())],
        status: 14,
        status_message: "draining",
        ..Default::default()
    })
    .await
}

/// A status sent after response headers is the same failure as one sent
/// alone: an idempotent call is retried on it, the endpoint's failures are
/// counted toward its ejection, and the client's error carries the
/// headers the backend sent.
#[tokio::test]
async fn unavailable_after_response_headers_is_retried_and_counted() {
    use std::sync::atomic::Ordering;
    let (a, a_calls) = headers_then_unavailable("a").await;
    let (b, b_calls) = headers_then_unavailable("b").await;
    let (gw, client) = gateway(&format!(
        "endpoints = [\"{a}\", \"{b}\"]\n[upstreams.pool.retry]\nidempotent_methods = [\"Headers\"]\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n[upstreams.pool.outlier_detection]\nconsecutive_failures = 3\nmax_ejection_percent = 50\n"
    ))
    .await;
    let r = client.get("/v1/probe/headers").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.text().contains("draining"), "{}", r.text());
    assert!(
        matches!(r.header("x-served-by"), Some("a" | "b")),
        "the backend's headers come with its error: {:?}",
        r.headers
    );
    let calls = a_calls.load(Ordering::SeqCst) + b_calls.load(Ordering::SeqCst);
    assert_eq!(calls, 3, "the first attempt and max_retries = 2 retries");
    // Three failures in a row on one endpoint eject it.
    for _ in 0..4 {
        client.get("/v1/probe/headers").await;
    }
    let status = upstream_status(&gw).await;
    let ejections: u64 = [a, b]
        .iter()
        .map(|e| {
            endpoint_status(&status, &e.to_string())["ejections"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(ejections >= 1, "{status}");
}

/// Once a call has tried every endpoint, each further retry still takes the
/// balancer's next turn: with two endpoints that both fail, four attempts
/// alternate between them, rather than piling onto the one tried last.
#[tokio::test]
async fn retries_past_every_endpoint_keep_taking_turns() {
    use std::sync::atomic::Ordering;
    let (a, a_calls) = headers_then_unavailable("a").await;
    let (b, b_calls) = headers_then_unavailable("b").await;
    let (_gw, client) = gateway(&format!(
        "endpoints = [\"{a}\", \"{b}\"]\n[upstreams.pool.retry]\nidempotent_methods = [\"Headers\"]\nmax_retries = 3\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n[upstreams.pool.outlier_detection]\nconsecutive_failures = 1000\n"
    ))
    .await;
    for round in 1..=2 {
        let r = client.get("/v1/probe/headers").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        assert_eq!(
            (
                a_calls.load(Ordering::SeqCst),
                b_calls.load(Ordering::SeqCst)
            ),
            (2 * round, 2 * round),
            "round {round}: the first attempt and three retries, two on each"
        );
    }
}
