//! Fleet mode: several Portico instances (real `portico serve` processes
//! where a test loads them, in-process gateways elsewhere) share rate
//! limits and cached replies through real `redis-server` processes,
//! standalone and as a Redis Cluster, and keep serving when Redis goes.

use crate::support;

use http::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::protocols::{Protocol, Seen, EVERY_PROTOCOL};
use support::redis::{available, RedisCluster, RedisServer};
use support::served::Served as Portico;
use support::{HttpClient, RouteKeys};

/// The admin port's `/fleet` and `/metrics`.
async fn fleet_status(admin: SocketAddr) -> serde_json::Value {
    HttpClient::new(admin).get("/fleet").await.json()
}

async fn metric(admin: SocketAddr, line_prefix: &str) -> f64 {
    let text = HttpClient::new(admin).get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in /metrics"))
}

/// The demo config with `[redis]` and `library_extra` on the Library route.
fn config(backend: SocketAddr, redis: &str, library_extra: &str) -> String {
    config_for(backend, redis, "Library", library_extra)
}

/// The demo config with `[redis]` and `extra` on the route of `service`.
fn config_for(backend: SocketAddr, redis: &str, service: &str, extra: &str) -> String {
    support::config_text(backend, redis, "").with_route_keys(service, extra)
}

async fn backend() -> (portico::demo::backends::Backends, SocketAddr) {
    let backends = portico::demo::backends::Backends::default();
    let (addr, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (backends, addr)
}

/// Drives `GET /v1/shelves/1` at each gateway every `every` for `period`;
/// returns the (admitted, refused, other) counts.
async fn load(gateways: &[SocketAddr], every: Duration, period: Duration) -> (usize, usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + period;
    let mut tasks = Vec::new();
    for &g in gateways {
        for _ in 0..2 {
            let (ok, refused, other) = (ok.clone(), refused.clone(), other.clone());
            tasks.push(tokio::spawn(async move {
                let client = HttpClient::new(g);
                let mut tick = tokio::time::interval(every * 2);
                while Instant::now() < end {
                    tick.tick().await;
                    let status = client.get("/v1/shelves/1").await.status;
                    match status {
                        StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                        StatusCode::TOO_MANY_REQUESTS => refused.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    )
}

/// The tests that time admissions run one at a time: on a two-core
/// machine, two of them at once would measure each other.
static TIMED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RATE: f64 = 40.0;
/// Small next to ten seconds of the rate, and enough that arrivals a few
/// milliseconds late do not cost admissions.
const BURST: f64 = 5.0;

/// `portico check` on a config file holding `text`: whether it passed,
/// and what it said on stderr.
fn portico_check(text: &str) -> (bool, String) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-check-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("portico.toml"), text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--config"])
        .arg(dir.join("portico.toml"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_refuses_a_cluster_node_given_as_url_and_names_redis_cluster() {
    if !available("check_refuses_a_cluster_node_given_as_url_and_names_redis_cluster") {
        return;
    }
    let node = RedisServer::start(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ])
    .await;
    let (_b, backend) = backend().await;
    let text = config(
        backend,
        &format!("[redis]\nurl = \"{}\"\n", node.url()),
        &global_limit("route"),
    );
    let (passed, said) = portico_check(&text);
    assert!(!passed, "{said}");
    assert!(said.contains("is a node of a Redis Cluster"), "{said}");
    assert!(said.contains("redis.cluster = [...]"), "{said}");
}

fn global_limit(key: &str) -> String {
    format!("rate_limit = {{ requests_per_second = {RATE}, burst = {BURST}, key = \"{key}\", scope = \"global\" }}")
}

#[tokio::test]
async fn three_instances_share_one_limit_and_survive_a_redis_outage() {
    if !available("three_instances_share_one_limit_and_survive_a_redis_outage") {
        return;
    }
    let _timed = TIMED.lock().await;
    let mut redis = RedisServer::start(&[]).await;
    let (_b, backend) = backend().await;
    let text = config(
        backend,
        &format!(
            "[redis]\nurl = \"{}\"\nheartbeat_interval = \"500ms\"\n",
            redis.url()
        ),
        &global_limit("route"),
    );
    let fleet = [
        Portico::start(&text, "warn").await,
        Portico::start(&text, "warn").await,
        Portico::start(&text, "warn").await,
    ];
    let gateways: Vec<SocketAddr> = fleet.iter().map(|p| p.addr).collect();
    // Every instance sees the other two.
    assert!(
        support::eventually_async(|| async {
            fleet_status(fleet[0].admin).await["live_instances"] == 3
        })
        .await,
        "{}",
        fleet_status(fleet[0].admin).await
    );

    // 10 s of load spread over the three, about 6x over the limit.
    let period = Duration::from_secs(10);
    let started = Instant::now();
    let (ok, refused, other) = load(&gateways, Duration::from_millis(20), period).await;
    let elapsed = started.elapsed().as_secs_f64();
    let expected = RATE * elapsed + BURST;
    assert_eq!(other, 0);
    assert!(
        refused > ok,
        "the load was over the limit: {ok} admitted, {refused} refused"
    );
    assert!(
        (ok as f64 - expected).abs() <= 0.03 * RATE * 10.0,
        "{ok} admitted in {elapsed:.2} s, {expected:.0} expected for {RATE}/s across the fleet"
    );

    // Redis dies mid-load: calls keep flowing under each instance's share.
    let outage = tokio::spawn({
        let gateways = gateways.clone();
        async move { load(&gateways, Duration::from_millis(20), Duration::from_secs(3)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill().await;
    let (ok, _, other) = outage.await.unwrap();
    assert_eq!(other, 0, "no call failed because Redis went away");
    assert!(ok > 10, "calls flowed during the outage: {ok}");
    // Each instance enforced its share (a third of the limit), so the
    // fleet stayed near the limit: not unlimited (the load offered ~450).
    assert!(
        (ok as f64) <= RATE * 3.0 * 1.3 + 3.0 * BURST,
        "{ok} admitted in 3 s with Redis gone: the per-instance shares did not hold"
    );
    for p in &fleet {
        assert_eq!(metric(p.admin, "portico_fleet_redis_available ").await, 0.0);
        assert!(
            metric(
                p.admin,
                "portico_rate_limit_global_decisions_total{by=\"local-fallback\"} "
            )
            .await
                > 0.0
        );
        assert_eq!(
            fleet_status(p.admin).await["redis"]["mode"],
            "local-fallback"
        );
    }

    // Redis is back: global enforcement resumes within 10 s by itself.
    redis.restart().await;
    let back = Instant::now();
    for p in &fleet {
        assert!(
            support::eventually_async(|| async {
                fleet_status(p.admin).await["redis"]["available"] == true
            })
            .await
        );
    }
    assert!(back.elapsed() < Duration::from_secs(10));
    let before = metric(
        fleet[0].admin,
        "portico_rate_limit_global_decisions_total{by=\"redis\"} ",
    )
    .await;
    let (ok, _, _) = load(&gateways, Duration::from_millis(20), Duration::from_secs(2)).await;
    let after = metric(
        fleet[0].admin,
        "portico_rate_limit_global_decisions_total{by=\"redis\"} ",
    )
    .await;
    assert!(after > before, "decisions are taken in Redis again");
    assert!(
        (ok as f64) <= RATE * 2.5 + BURST,
        "the global limit holds again: {ok} admitted in 2 s"
    );
}

#[tokio::test]
async fn global_limits_count_each_key_on_its_own_across_instances() {
    if !available("global_limits_count_each_key_on_its_own_across_instances") {
        return;
    }
    let redis = RedisServer::start(&[]).await;
    let (_b, backend) = backend().await;
    let text = config(
        backend,
        &format!("[redis]\nurl = \"{}\"\n", redis.url()),
        "rate_limit = { requests_per_second = 0.1, burst = 3, key = \"header:x-client\", scope = \"global\" }",
    );
    let a = support::gateway_for(&text, backend).await;
    let b = support::gateway_for(&text, backend).await;
    let get = |g: SocketAddr, who: &'static str| async move {
        HttpClient::new(g)
            .send(http::Method::GET, "/v1/shelves/1", &[("x-client", who)], "")
            .await
    };
    // Three for alice, spread over both instances, then none.
    assert_eq!(get(a.addr, "alice").await.status, 200);
    assert_eq!(get(b.addr, "alice").await.status, 200);
    assert_eq!(get(a.addr, "alice").await.status, 200);
    let refused = get(b.addr, "alice").await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.header("ratelimit-limit"), Some("3"));
    // Bob has his own three.
    for g in [b.addr, a.addr, b.addr] {
        assert_eq!(get(g, "bob").await.status, 200);
    }
    assert_eq!(get(a.addr, "bob").await.status, 429);
    // gRPC clients count against the same bucket.
    let mut grpc = portico::demo::backends::pb::library_client::LibraryClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", a.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut req =
        tonic::Request::new(portico::demo::backends::pb::GetShelfRequest { shelf: "1".into() });
    req.metadata_mut()
        .insert("x-client", "alice".parse().unwrap());
    let err = grpc.get_shelf(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
}

/// A Redis that stops answering holds a call no longer than the call's
/// deadline, on every protocol: its global limit's decision and its shared
/// cache lookup give up when the call's time is up, and the backend is not
/// called late.
#[tokio::test]
async fn a_frozen_redis_holds_a_call_no_longer_than_its_deadline() {
    if !available("a_frozen_redis_holds_a_call_no_longer_than_its_deadline") {
        return;
    }
    let redis = RedisServer::start(&[]).await;
    let (backends, backend) = backend().await;
    for (policy, waiting_for) in [
        (global_limit("route"), "global rate limit"),
        (
            "cache = { ttl = \"30s\", shared = true }".to_owned(),
            "shared cache",
        ),
    ] {
        let text = config_for(
            backend,
            &format!(
                "[redis]\nurl = \"{}\"\ncommand_timeout = \"5s\"\n",
                redis.url()
            ),
            "Probe",
            &format!("timeout = \"400ms\"\n{policy}"),
        );
        let gw = support::gateway_for(&text, backend).await;
        let client = HttpClient::new(gw.addr);
        redis.freeze(true);
        let before = backends.probe.calls();
        type Headers<'a> = Vec<(&'a str, &'a str)>;
        let calls: [(&str, http::Method, &str, Headers, &str); 3] = [
            ("REST", http::Method::GET, "/v1/probe/headers", vec![], ""),
            (
                "Connect",
                http::Method::POST,
                "/portico.demo.v1.Probe/Headers",
                vec![
                    ("content-type", "application/json"),
                    ("connect-protocol-version", "1"),
                    ("connect-timeout-ms", "200"),
                ],
                "{}",
            ),
            (
                "gRPC-Web",
                http::Method::POST,
                "/portico.demo.v1.Probe/Headers",
                vec![
                    ("content-type", "application/grpc-web+proto"),
                    ("grpc-timeout", "200m"),
                ],
                "\0\0\0\0\0",
            ),
        ];
        for (name, method, path, headers, body) in calls {
            let started = Instant::now();
            let r = client.send(method, path, &headers, body).await;
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(2),
                "{name} ({waiting_for}): {took:?}"
            );
            match name {
                "REST" => assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text()),
                "Connect" => assert_eq!(r.json()["code"], "deadline_exceeded", "{}", r.text()),
                _ => assert_eq!(r.header("grpc-status"), Some("4"), "{name}"),
            }
            if name == "REST" {
                let message = r.json()["message"].as_str().unwrap().to_owned();
                assert!(message.contains("Redis"), "{message}");
            }
        }
        assert_eq!(
            backends.probe.calls(),
            before,
            "no backend call after the deadline"
        );
        redis.freeze(false);
    }
}

/// What the backend answered is the caller's even while Redis is frozen,
/// on every protocol: the shared tier's write comes after the reply, so it
/// never spends the call's deadline (here the lookup's 500 ms timeout and
/// the write's would together pass the route's 900 ms).
#[tokio::test]
async fn a_frozen_redis_never_turns_a_backends_reply_into_a_timeout() {
    if !available("a_frozen_redis_never_turns_a_backends_reply_into_a_timeout") {
        return;
    }
    let redis = RedisServer::start(&[]).await;
    let (backends, backend) = backend().await;
    let text = shared_cache_config(
        backend,
        &format!("url = \"{}\"\ncommand_timeout = \"500ms\"", redis.url()),
        "timeout = \"900ms\"",
        "ttl = \"30s\", shared = true",
    );
    let gw = support::gateway_for(&text, backend).await;
    redis.freeze(true);
    for protocol in EVERY_PROTOCOL {
        let before = backends.probe.calls();
        let seen = probe_over(&gw, protocol, &[]).await;
        let name = protocol.name();
        assert_eq!(seen.code, 0, "{name}: {}", seen.message);
        assert_eq!(seen.cache.as_deref(), Some("MISS"), "{name}");
        assert_eq!(backends.probe.calls(), before + 1, "{name}");
    }
    redis.freeze(false);
}

/// A reply larger than the route's `max_bytes` is kept in neither tier,
/// on every protocol: not by the instance that fetched it, not by another.
#[tokio::test]
async fn a_reply_larger_than_max_bytes_is_not_shared_either() {
    if !available("a_reply_larger_than_max_bytes_is_not_shared_either") {
        return;
    }
    let (redis, backends, a, b) = two_instances_sharing_a_cache(|backend, url| {
        let redis = format!("url = \"{url}\"");
        shared_cache_config(
            backend,
            &redis,
            "",
            "ttl = \"30s\", shared = true, max_bytes = 2000",
        )
    })
    .await;
    // Headers echoes the request's headers: a large one makes a large reply.
    let large = "x".repeat(3000);
    let small = "x".repeat(100);
    for (stored, protocol) in EVERY_PROTOCOL.into_iter().enumerate() {
        let name = protocol.name();
        for (gateway, instance) in [(&a, "A"), (&a, "A again"), (&b, "B")] {
            let before = backends.probe.calls();
            let seen = probe_over(gateway, protocol, &[("x-large", &large)]).await;
            assert_eq!(seen.code, 0, "{name} on {instance}: {}", seen.message);
            assert_eq!(seen.cache.as_deref(), Some("MISS"), "{name} on {instance}");
            assert_eq!(backends.probe.calls(), before + 1, "{name} on {instance}");
        }
        // A reply within the bound is written to Redis; once it is there,
        // the only cache entries Redis holds are the small replies.
        let seen = probe_over(&a, protocol, &[("x-large", &small)]).await;
        assert_eq!(seen.cache.as_deref(), Some("MISS"), "{name}");
        assert!(
            support::eventually_async(|| async { cache_keys(&redis).await.len() == stored + 1 })
                .await,
            "{name}'s small reply reached Redis, and no large one did: {:?}",
            cache_keys(&redis).await
        );
    }
}

/// A reply is never served from Redis past the route's `ttl` counted from
/// when it was made, whatever lifetime Redis holds it for, on every
/// protocol: a write a frozen Redis ran late, once it resumed, set that
/// lifetime afresh.
#[tokio::test]
async fn a_shared_reply_is_never_served_past_the_routes_ttl_from_when_it_was_made() {
    if !available("a_shared_reply_is_never_served_past_the_routes_ttl_from_when_it_was_made") {
        return;
    }
    let (redis, backends, a, b) = two_instances_sharing_a_cache(|backend, url| {
        let redis = format!("url = \"{url}\"");
        shared_cache_config(backend, &redis, "", "ttl = \"1s\", shared = true")
    })
    .await;
    for (stored, protocol) in EVERY_PROTOCOL.into_iter().enumerate() {
        let before = cache_keys(&redis).await;
        let seen = probe_over(&a, protocol, &[]).await;
        assert_eq!(seen.cache.as_deref(), Some("MISS"), "{}", protocol.name());
        assert!(
            support::eventually_async(|| async { cache_keys(&redis).await.len() == stored + 1 })
                .await
        );
        // As a late write leaves it: a whole minute to live, from now.
        let written = cache_keys(&redis)
            .await
            .into_iter()
            .find(|key| !before.contains(key))
            .unwrap();
        redis.cli(&["PEXPIRE", &written, "60000"]).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for protocol in EVERY_PROTOCOL {
        let calls = backends.probe.calls();
        let late = probe_over(&b, protocol, &[]).await;
        let name = protocol.name();
        assert_eq!(
            late.cache.as_deref(),
            Some("MISS"),
            "{name}: {}",
            late.message
        );
        assert_eq!(backends.probe.calls(), calls + 1, "{name}");
    }
}

/// `Probe.Headers` over `protocol` at `gateway`, sending `headers` and an
/// `x-case` that names the protocol: the routes of
/// [`shared_cache_config`] vary on it, so each protocol's calls in a table
/// make and find their own entries.
async fn probe_over(
    gateway: &portico::app::Gateway,
    protocol: Protocol,
    headers: &[(&str, &str)],
) -> Seen {
    let mut all = vec![("x-case", protocol.name())];
    all.extend_from_slice(headers);
    let client = HttpClient::new(gateway.addr);
    support::protocols::call_at(gateway.addr, &client, protocol, &all, "", None).await
}

/// `GET /v1/probe/headers` (which echoes its headers) as a client behind
/// a load balancer sends it, with every instance seeing one public host
/// (the forwarding headers the backend gets are part of the cache key),
/// plus `headers`.
async fn public_get(addr: SocketAddr, headers: &[(&str, &str)]) -> support::Reply {
    let mut all = vec![("host", "api.example")];
    all.extend_from_slice(headers);
    HttpClient::new(addr)
        .send(http::Method::GET, "/v1/probe/headers", &all, "")
        .await
}

/// The shared cache's keys Redis holds now.
async fn cache_keys(redis: &RedisServer) -> Vec<String> {
    redis
        .cli(&["KEYS", "*:cache:*"])
        .await
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The demo config with `[redis]` holding `redis` (its keys), and on the
/// Probe route `route` (its keys) and `cache = { <cache>, vary = ["x-case"] }`.
/// Only the headers these tests send reach the backend: the forwarding
/// headers, which name each instance's own address, stay out of the
/// backend's metadata and so out of the cache key, and two instances'
/// calls share entries.
fn shared_cache_config(backend: SocketAddr, redis: &str, route: &str, cache: &str) -> String {
    let sections = format!(
        "[redis]\n{redis}\n\n[metadata]\n\
         forward = [\"x-case\", \"x-large\", \"x-reply-vary\", \"x-user\"]\n"
    );
    config_for(
        backend,
        &sections,
        "Probe",
        &format!("{route}\ncache = {{ {cache}, vary = [\"x-case\"] }}"),
    )
}

/// The demo config on the Redis at `url` with a shared cache on the Probe
/// route, and the default forward list: the backend gets the forwarding
/// headers, so the instances share entries for clients that reach them
/// through one public host, as behind a load balancer ([`public_get`]).
fn behind_one_public_host(backend: SocketAddr, url: &str) -> String {
    config_for(
        backend,
        &format!("[redis]\nurl = \"{url}\"\n"),
        "Probe",
        "cache = { ttl = \"30s\", shared = true }",
    )
}

/// Two instances on one Redis, each with the config `config` makes for a
/// backend and a Redis URL, in front of one backend.
async fn two_instances_sharing_a_cache(
    config: fn(SocketAddr, &str) -> String,
) -> (
    RedisServer,
    portico::demo::backends::Backends,
    portico::app::Gateway,
    portico::app::Gateway,
) {
    let redis = RedisServer::start(&[]).await;
    let (backends, backend) = backend().await;
    let text = config(backend, &redis.url());
    let a = support::gateway_for(&text, backend).await;
    let b = support::gateway_for(&text, backend).await;
    (redis, backends, a, b)
}

#[tokio::test]
async fn a_reply_cached_through_one_instance_is_a_hit_on_another() {
    if !available("a_reply_cached_through_one_instance_is_a_hit_on_another") {
        return;
    }
    let (_redis, backends, a, b) = two_instances_sharing_a_cache(behind_one_public_host).await;
    let calls = || backends.probe.calls();
    let get = |addr| public_get(addr, &[]);
    let first = get(a.addr).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let before = calls();
    // Old enough for its Age to show.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = get(b.addr).await;
    let age = |v: Option<&str>| v.and_then(|a| a.parse::<u64>().ok());
    assert!(
        age(second.header("age")).is_some_and(|a| a >= 1),
        "a shared hit's Age counts from when A stored it: {:?}",
        second.header("age")
    );
    assert_eq!(second.status, 200);
    assert_eq!(
        second.header("x-cache"),
        Some("HIT"),
        "filled by A, served by B"
    );
    assert_eq!(second.json(), first.json());
    assert_eq!(calls(), before, "B did not call the backend");
    // And over gRPC on B (its `:authority` the same public host), from its
    // own memory now.
    let mut grpc = portico::demo::backends::pb::probe_client::ProbeClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", b.addr))
            .unwrap()
            .origin("http://api.example".parse().unwrap())
            .connect()
            .await
            .unwrap(),
    );
    let reply = grpc
        .headers(portico::demo::backends::pb::HeadersRequest {})
        .await
        .unwrap();
    assert_eq!(reply.metadata().get("x-cache").unwrap(), "HIT");
    assert!(
        age(reply.metadata().get("age").and_then(|v| v.to_str().ok())).is_some_and(|a| a >= 1),
        "and so does B's own copy's"
    );
    assert_eq!(calls(), before);
    // A client's no-cache skips both tiers.
    let fresh = HttpClient::new(b.addr)
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[("cache-control", "no-cache")],
            "",
        )
        .await;
    assert_eq!(fresh.header("x-cache"), Some("MISS"));
    assert_eq!(calls(), before + 1, "no-cache went to the backend");
    let shared_hits = metric(b.admin_addr.unwrap(), "portico_cache_shared_hits_total ").await;
    assert_eq!(shared_hits, 1.0);
}

/// A reply whose Vary names a header is shared only with requests that
/// send the same value of it, whichever instance stored it and whether or
/// not the instance asked has seen that Vary before.
#[tokio::test]
async fn a_shared_reply_that_varies_is_never_served_to_another_value() {
    if !available("a_shared_reply_that_varies_is_never_served_to_another_value") {
        return;
    }
    let (_redis, backends, a, b) = two_instances_sharing_a_cache(behind_one_public_host).await;
    let get = |addr, user: &'static str| async move {
        public_get(addr, &[("x-reply-vary", "x-user"), ("x-user", user)]).await
    };
    let alice = get(a.addr, "alice").await;
    assert_eq!(alice.header("x-cache"), Some("MISS"));
    // B has never seen the backend's Vary: alice's reply is no hit for bob.
    let bob = get(b.addr, "bob").await;
    assert_eq!(bob.header("x-cache"), Some("MISS"), "{}", bob.text());
    assert_eq!(bob.json()["metadata"]["x-user"], "bob");
    // Alice's own request finds hers on B, from the fleet.
    let calls = backends.probe.calls();
    let again = get(b.addr, "alice").await;
    assert_eq!(again.header("x-cache"), Some("HIT"), "{}", again.text());
    assert_eq!(again.json()["metadata"]["x-user"], "alice");
    assert_eq!(backends.probe.calls(), calls);
}

#[tokio::test]
async fn a_wrong_redis_password_is_a_startup_error_or_a_degraded_start() {
    if !available("a_wrong_redis_password_is_a_startup_error_or_a_degraded_start") {
        return;
    }
    let redis = RedisServer::start(&["--requirepass", "right-password"]).await;
    let (_b, backend) = backend().await;
    let url = format!("redis://:wrong-password@127.0.0.1:{}", redis.port);
    let text = config(
        backend,
        &format!("[redis]\nurl = \"{url}\"\n"),
        &global_limit("route"),
    );
    let err = match portico::app::start(portico::config::Config::from_toml(&text).unwrap()).await {
        Ok(_) => panic!("started with a wrong Redis password"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("redis"), "{err}");
    assert!(
        err.to_lowercase().contains("password") || err.contains("WRONGPASS"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-password"),
        "the password is never printed: {err}"
    );

    // No password at all: the server takes the connection and refuses its
    // first command. Refused at startup all the same, as `check` refuses it.
    let text = config(
        backend,
        &format!("[redis]\nurl = \"{}\"\n", redis.url()),
        &global_limit("route"),
    );
    let err = match portico::app::start(portico::config::Config::from_toml(&text).unwrap()).await {
        Ok(_) => panic!("started without the password Redis requires"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("redis") && err.contains("NOAUTH"), "{err}");

    // Degraded: it starts, says so, and limits fall back per instance.
    let text = config(
        backend,
        &format!("[redis]\nurl = \"{url}\"\non_start_failure = \"degraded\"\nfleet_size = 2\n"),
        &global_limit("route"),
    );
    let g = support::gateway_for(&text, backend).await;
    let status = fleet_status(g.admin_addr.unwrap()).await;
    assert_eq!(status["redis"]["available"], false, "{status}");
    assert_eq!(status["redis"]["mode"], "local-fallback");
    assert_eq!(
        metric(g.admin_addr.unwrap(), "portico_fleet_redis_outages_total").await,
        1.0,
        "a start without Redis is an outage, as /fleet says"
    );
    assert_eq!(
        HttpClient::new(g.addr).get("/v1/shelves/1").await.status,
        200
    );

    // The right password, from the environment.
    std::env::set_var("PORTICO_TEST_REDIS_PASSWORD", "right-password");
    let text = config(
        backend,
        &format!(
            "[redis]\nurl = \"{}\"\npassword_env = \"PORTICO_TEST_REDIS_PASSWORD\"\n",
            redis.url()
        ),
        &global_limit("route"),
    );
    let g = support::gateway_for(&text, backend).await;
    assert_eq!(
        fleet_status(g.admin_addr.unwrap()).await["redis"]["available"],
        true
    );
    let config = HttpClient::new(g.admin_addr.unwrap())
        .get("/config")
        .await
        .text();
    assert!(!config.contains("right-password"));
}

#[tokio::test]
async fn a_redis_user_without_the_script_commands_stays_in_the_fallback_without_flapping() {
    if !available("a_redis_user_without_the_script_commands_stays_in_the_fallback_without_flapping")
    {
        return;
    }
    let redis = RedisServer::start(&[]).await;
    // Allowed the heartbeat's commands, not the decision script's.
    redis
        .cli(&[
            "ACL", "SETUSER", "nolua", "on", ">luapass", "~*", "+@all", "-evalsha", "-script",
            "-eval",
        ])
        .await;
    let (_b, backend) = backend().await;
    let url = format!("redis://nolua:luapass@127.0.0.1:{}", redis.port);
    let section = format!("[redis]\nurl = \"{url}\"\nheartbeat_interval = \"100ms\"\n");
    let text = config(backend, &section, &global_limit("route"));

    // `check` runs the script once, and says why it cannot.
    let (passed, said) = portico_check(&text);
    assert!(!passed, "{said}");
    assert!(said.contains("refuses the rate-limit script"), "{said}");
    // And every command of a heartbeat: one that cannot read the fleet's
    // members is found by `check`, not by a fleet stuck in its fallback.
    redis
        .cli(&[
            "ACL",
            "SETUSER",
            "noread",
            "on",
            ">readpass",
            "~*",
            "+@all",
            "-hgetall",
        ])
        .await;
    let url = format!("redis://noread:readpass@127.0.0.1:{}", redis.port);
    let unread = config(
        backend,
        &format!("[redis]\nurl = \"{url}\"\n"),
        &global_limit("route"),
    );
    let (passed, said) = portico_check(&unread);
    assert!(!passed, "{said}");
    assert!(
        said.contains("refuses the heartbeat") && said.contains("HGETALL"),
        "{said}"
    );

    // `serve` starts; within a heartbeat, before any limited call, Redis is
    // found unusable for decisions, and it is not declared back while the
    // script is refused.
    let g = support::gateway_for(&text, backend).await;
    let admin = g.admin_addr.unwrap();
    let found = support::eventually_async(|| async {
        fleet_status(admin).await["redis"]["available"] == false
    })
    .await;
    assert!(found, "{}", fleet_status(admin).await);
    let client = HttpClient::new(g.addr);
    for _ in 0..5 {
        let _ = client.get("/v1/shelves/1").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let status = fleet_status(admin).await;
    assert_eq!(status["redis"]["available"], false, "{status}");
    assert!(
        status["redis"]["error"]
            .as_str()
            .is_some_and(|e| e.to_lowercase().contains("evalsha") || e.contains("NOPERM")),
        "{status}"
    );
    assert_eq!(
        metric(admin, "portico_fleet_redis_outages_total").await,
        1.0,
        "one outage, not one per heartbeat"
    );
}

#[tokio::test]
async fn a_redis_cluster_keeps_the_limit_while_a_slot_moves() {
    if !available("a_redis_cluster_keeps_the_limit_while_a_slot_moves") {
        return;
    }
    let _timed = TIMED.lock().await;
    let cluster = RedisCluster::start().await;
    let (_b, backend) = backend().await;
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let text = config(
        backend,
        &format!("[redis]\ncluster = [{}]\n", seeds.join(", ")),
        &global_limit("route"),
    );
    let a = support::gateway_for(&text, backend).await;
    let b = support::gateway_for(&text, backend).await;
    let gateways = [a.addr, b.addr];
    // Find the limit's key and its slot while it exists (it expires once
    // its bucket is full again).
    let warm = tokio::spawn(async move {
        load(&gateways, Duration::from_millis(20), Duration::from_secs(2)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut key = String::new();
    for n in &cluster.nodes {
        let keys = n.cli(&["--scan", "--pattern", "portico:rl:*"]).await;
        if let Some(k) = keys.lines().next() {
            key = k.to_owned();
        }
    }
    assert!(!key.is_empty(), "the limit's key is in the cluster");
    assert!(warm.await.unwrap().0 >= 1);
    let slot: u16 = cluster.nodes[0]
        .cli(&["cluster", "keyslot", &key])
        .await
        .trim()
        .parse()
        .unwrap();
    let (owner_before, _) = cluster.owner(slot).await;

    let period = Duration::from_secs(6);
    let started = Instant::now();
    let during =
        tokio::spawn(async move { load(&gateways, Duration::from_millis(20), period).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.move_slot(slot).await;
    let (ok, refused, other) = during.await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let (owner_after, _) = cluster.owner(slot).await;
    assert_ne!(owner_before, owner_after, "the slot moved");
    assert_eq!(other, 0, "no call failed while the slot moved");
    assert!(refused > 0);
    let expected = RATE * elapsed + BURST;
    assert!(
        (ok as f64 - expected).abs() <= 0.1 * expected,
        "{ok} admitted in {elapsed:.2} s, about {expected:.0} expected"
    );
    for g in [&a, &b] {
        let status = fleet_status(g.admin_addr.unwrap()).await;
        assert_eq!(status["redis"]["topology"], "cluster");
        assert_eq!(status["redis"]["available"], true, "{status}");
        let fallback = metric(
            g.admin_addr.unwrap(),
            "portico_rate_limit_global_decisions_total{by=\"local-fallback\"} ",
        )
        .await;
        assert_eq!(
            fallback, 0.0,
            "every decision was taken in the cluster, redirections followed"
        );
    }
}

#[tokio::test]
async fn rediss_is_verified_against_the_configured_ca() {
    if !available("rediss_is_verified_against_the_configured_ca") {
        return;
    }
    let redis = RedisServer::start_tls().await;
    let (_b, backend) = backend().await;
    let section = |ca: &str| format!("[redis]\nurl = \"{}\"\n{ca}", redis.url());
    let text = config(
        backend,
        &section(&format!(
            "tls_ca_file = \"{}\"\n",
            support::fixture("tls/ca.pem")
        )),
        &global_limit("route"),
    );
    let g = support::gateway_for(&text, backend).await;
    assert_eq!(
        fleet_status(g.admin_addr.unwrap()).await["redis"]["available"],
        true
    );
    assert_eq!(
        HttpClient::new(g.addr).get("/v1/shelves/1").await.status,
        200
    );
    assert!(
        metric(
            g.admin_addr.unwrap(),
            "portico_rate_limit_global_decisions_total{by=\"redis\"} "
        )
        .await
            >= 1.0
    );

    // Without the private CA the server's certificate does not verify.
    let text = config(backend, &section(""), &global_limit("route"));
    let err = match portico::app::start(portico::config::Config::from_toml(&text).unwrap()).await {
        Ok(_) => panic!("trusted a certificate no configured CA signed"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("redis"), "{err}");
}
