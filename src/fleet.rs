//! Fleet mode: the instances of one deployment share rate limits and
//! cached replies through Redis, and see each other through heartbeats.
//!
//! One [`Fleet`] per process (kept across reloads while `[redis]` is
//! unchanged) holds the connection (standalone, or Redis Cluster), the
//! instance's identity, and whether Redis is usable. It never lets a
//! request wait on a Redis that is known to be down: after a failed or
//! slow command it is marked unavailable, limits fall back to per-instance
//! buckets, and the heartbeat loop (every `heartbeat_interval`) brings it
//! back once Redis answers again.

pub mod config;

use arc_swap::{ArcSwap, ArcSwapOption};
use config::{RedisConfig, RedisTopology};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A live Redis connection: one server, or a cluster.
#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn connect(config: &RedisConfig) -> redis::RedisResult<Conn> {
        match &config.topology {
            RedisTopology::Standalone(url) => {
                let mut settings = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
                let mut redis_settings = settings.redis_settings().clone();
                if let Some(u) = &config.username {
                    redis_settings = redis_settings.set_username(u);
                }
                if let Some(p) = &config.password {
                    redis_settings = redis_settings.set_password(&p.0);
                }
                settings = settings.set_redis_settings(redis_settings);
                let client = match &config.tls_ca_pem {
                    None => redis::Client::open(settings)?,
                    Some(pem) => redis::Client::build_with_tls(settings, certificates(pem))?,
                };
                let manager = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.command_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                // A plain-text Redis never answers a TLS hello: the wait
                // runs out without a word about TLS, so it is said here.
                let what = if url.starts_with("rediss://") {
                    "connecting (over TLS, as rediss:// asks: a plain-text Redis never answers its hello)"
                } else {
                    "connecting"
                };
                let conn = tokio::time::timeout(
                    config.connect_timeout * 2,
                    client.get_connection_manager_with_config(manager),
                )
                .await
                .map_err(|_| timed_out(what))??;
                Ok(Conn::Single(conn))
            }
            RedisTopology::Cluster(seeds) => {
                let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.command_timeout)
                    .retries(3);
                if let Some(u) = &config.username {
                    builder = builder.username(u);
                }
                if let Some(p) = &config.password {
                    builder = builder.password(&p.0);
                }
                if let Some(pem) = &config.tls_ca_pem {
                    builder = builder.certs(certificates(pem));
                }
                let client = builder.build()?;
                let conn =
                    tokio::time::timeout(config.connect_timeout * 2, client.get_async_connection())
                        .await
                        .map_err(|_| timed_out("connecting"))??;
                Ok(Conn::Cluster(conn))
            }
        }
    }

    /// A connection that has answered a PING. A server that wants
    /// credentials the config does not give accepts the connection and
    /// refuses its first command (`NOAUTH`): asked at once, so a start
    /// without them fails as one with wrong ones does.
    async fn connect_answering(config: &RedisConfig) -> redis::RedisResult<Conn> {
        let mut conn = Conn::connect(config).await?;
        tokio::time::timeout(
            config.command_timeout,
            conn.query::<String>(&redis::cmd("PING")),
        )
        .await
        .map_err(|_| timed_out("answering a PING within redis.command_timeout"))??;
        Ok(conn)
    }

    async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }

    async fn pipeline<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => pipe.query_async(c).await,
            Conn::Cluster(c) => pipe.query_async(c).await,
        }
    }

    async fn script<T: redis::FromRedisValue>(
        &mut self,
        call: &redis::ScriptInvocation<'_>,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => call.invoke_async(c).await,
            Conn::Cluster(c) => call.invoke_async(c).await,
        }
    }
}

/// Runs the limits' script once, on a key of its own that it lets
/// through and that expires in milliseconds: a Redis user allowed the
/// heartbeat's commands but not `EVALSHA`/`SCRIPT` is found by this, not
/// declared back by each heartbeat and lost again by each decision.
async fn probe_decision(
    conn: &mut Conn,
    gcra: &redis::Script,
    key: &str,
) -> redis::RedisResult<()> {
    let mut call = gcra.key(key);
    call.arg(1u64).arg(1_000_000_000_000u64);
    let _: (i64, i64) = conn.script(&call).await?;
    Ok(())
}

fn certificates(ca_pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.to_vec()),
    }
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}

/// Why a fleet operation gave no answer.
#[derive(Debug, Clone)]
pub struct Unavailable;

/// One instance as its heartbeat describes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct InstanceInfo {
    pub id: String,
    pub version: String,
    pub config_digest: String,
    /// Unix milliseconds of its last heartbeat.
    pub last_seen: u64,
    pub started: u64,
    /// The main port's address, as the instance bound it.
    pub listen: String,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Global rate-limit decisions taken in Redis.
    pub global_decisions: AtomicU64,
    /// Global rate-limit decisions taken by the per-instance fallback.
    pub fallback_decisions: AtomicU64,
    /// Replies served from the shared cache tier.
    pub shared_cache_hits: AtomicU64,
    /// Times Redis became unavailable.
    pub outages: AtomicU64,
}

pub struct Fleet {
    config: RedisConfig,
    conn: ArcSwapOption<Conn>,
    available: AtomicBool,
    /// When `available` last changed (unix ms), for `/fleet`.
    changed_at: AtomicU64,
    /// Why Redis is unavailable, when it is.
    last_error: Mutex<Option<String>>,
    /// This instance's id in the fleet.
    pub id: String,
    started: u64,
    digest: ArcSwap<String>,
    listen: ArcSwap<String>,
    /// Live instances, from the last heartbeat read (`fleet_size` before).
    live: AtomicU32,
    instances: Mutex<Vec<InstanceInfo>>,
    gcra: redis::Script,
    pub stats: FleetStats,
    /// Writes under way that no call waits for ([`Fleet::set_behind`]).
    writes_behind: std::sync::atomic::AtomicUsize,
}

/// GCRA in one round trip, on Redis's own clock (so instances' clocks do
/// not matter): KEYS[1] holds the theoretical arrival time in
/// microseconds; ARGV[1] is the emission interval, ARGV[2] the burst
/// tolerance (interval x burst), both in microseconds. Returns
/// {1, 0} when admitted, {0, microseconds to wait} when not.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
"#;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The most [`Fleet::set_behind`] writes under way at once.
pub const MAX_WRITES_BEHIND: usize = 64;

impl Fleet {
    /// Connects and starts the heartbeat. Without Redis at startup this
    /// fails, unless `on_start_failure = "degraded"`: then the fleet
    /// starts unavailable and the heartbeat keeps trying.
    pub async fn start(
        config: RedisConfig,
        digest: &str,
        listen: &str,
    ) -> Result<Arc<Fleet>, String> {
        let mut startup_error = None;
        let conn = match Conn::connect_answering(&config).await {
            Ok(c) => Some(Arc::new(c)),
            Err(e) if config.start_degraded => {
                tracing::warn!(error = %e, "Redis is unavailable as this config is loaded; global limits fall back per instance until it answers");
                startup_error = Some(e.to_string());
                None
            }
            Err(e) => {
                return Err(format!(
                    "cannot use Redis at {}: {e}{}",
                    config.topology.describe(),
                    not_redis_hint(&e)
                ))
            }
        };
        let started = unix_ms();
        let fleet = Arc::new(Fleet {
            available: AtomicBool::new(conn.is_some()),
            conn: ArcSwapOption::new(conn),
            changed_at: AtomicU64::new(started),
            last_error: Mutex::new(startup_error),
            id: format!("{:016x}", fastrand::u64(..)),
            started,
            digest: ArcSwap::from_pointee(digest.to_owned()),
            listen: ArcSwap::from_pointee(listen.to_owned()),
            live: AtomicU32::new(config.fleet_size),
            instances: Mutex::new(Vec::new()),
            gcra: redis::Script::new(GCRA),
            stats: FleetStats::default(),
            writes_behind: Default::default(),
            config,
        });
        if fleet.is_available() {
            // The first heartbeat now, so the fleet's size is known at once.
            fleet.heartbeat().await;
        } else {
            // A degraded start is an outage from the first moment: counted
            // as one, as `/fleet` shows it.
            fleet.stats.outages.fetch_add(1, Ordering::Relaxed);
        }
        tokio::spawn(heartbeats(Arc::downgrade(&fleet)));
        Ok(fleet)
    }

    /// Whether a fleet could start on `config`: connects, sends a PING,
    /// and lets go (for `portico check`).
    pub async fn probe(config: &RedisConfig) -> Result<(), String> {
        let at = config.topology.describe();
        let mut conn = Conn::connect_answering(config)
            .await
            .map_err(|e| format!("cannot use Redis at {at}: {e}{}", not_redis_hint(&e)))?;
        // A cluster node given as `url` answers the keys of its own slots
        // and MOVED for the rest: which of the fleet's keys work would be
        // luck. The server says what it is (a user refused INFO goes on to
        // the commands themselves, which name MOVED when they meet it).
        if let RedisTopology::Standalone(_) = &config.topology {
            let info = redis::cmd("INFO").arg("cluster").clone();
            if let Ok(Ok(text)) =
                tokio::time::timeout(config.command_timeout, conn.query::<String>(&info)).await
            {
                if text.lines().any(|l| l.trim() == "cluster_enabled:1") {
                    return Err(format!(
                        "Redis at {at} is a node of a Redis Cluster{CLUSTER_HINT}"
                    ));
                }
            }
        }
        // What a heartbeat does, on the instances' own key (another cluster
        // slot than the probe's): a cluster node given as `url`, or a user
        // without HSET, is found here rather than by a fleet that never
        // leaves its fallback.
        let instances = format!("{}:instances:{{fleet}}", config.key_prefix);
        let mut heartbeat = redis::pipe();
        heartbeat
            .cmd("HSET")
            .arg(&instances)
            .arg("portico-check")
            .arg("{}")
            .ignore()
            .cmd("HGETALL")
            .arg(&instances)
            .ignore()
            .cmd("HDEL")
            .arg(&instances)
            .arg("portico-check")
            .ignore();
        tokio::time::timeout(config.command_timeout, conn.pipeline::<()>(&heartbeat))
            .await
            .map_err(|_| {
                format!(
                    "Redis at {at} did not answer a heartbeat (HSET) within redis.command_timeout"
                )
            })?
            .map_err(|e| {
                format!(
                    "Redis at {at} refuses the heartbeat (HSET, HGETALL, HDEL on {instances}): {e}{}",
                    moved_hint(&e)
                )
            })?;
        let key = format!("{}:rl:{{probe}}", config.key_prefix);
        tokio::time::timeout(
            config.command_timeout,
            probe_decision(&mut conn, &redis::Script::new(GCRA), &key),
        )
        .await
        .map_err(|_| {
            format!("Redis at {at} did not run the rate-limit script within redis.command_timeout")
        })?
        .map_err(|e| {
            format!(
                "Redis at {at} refuses the rate-limit script (EVALSHA, SCRIPT LOAD): {e}{}",
                moved_hint(&e)
            )
        })
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    /// Live instances sharing this Redis (at least 1).
    pub fn live_instances(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    /// The newest generation's digest, announced in heartbeats.
    pub fn set_digest(&self, digest: &str) {
        self.digest.store(Arc::new(digest.to_owned()));
    }

    pub fn set_listen(&self, addr: &str) {
        self.listen.store(Arc::new(addr.to_owned()));
    }

    pub fn listen(&self) -> String {
        (**self.listen.load()).clone()
    }

    /// A key under the prefix, hash-tagged so that everything of one
    /// decision lands on one cluster slot.
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}:{kind}:{{{id}}}", self.config.key_prefix)
    }

    fn mark(&self, available: bool, error: Option<String>) {
        let was = self.available.swap(available, Ordering::AcqRel);
        if was != available {
            self.changed_at.store(unix_ms(), Ordering::Relaxed);
            if available {
                tracing::info!("Redis answers again: global limits and the shared cache are back");
            } else {
                self.stats.outages.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = error.as_deref().unwrap_or(""), "Redis is unavailable: global limits fall back to per-instance buckets, the shared cache is skipped");
            }
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Runs `op` on the connection within the command timeout; a failure
    /// marks Redis unavailable when `decisive` (a limit's decision: the
    /// shared cache's failures only skip the tier). Refused at once while
    /// Redis is unavailable.
    async fn with_conn<T, F, Fut>(&self, decisive: bool, op: F) -> Result<T, Unavailable>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_available() {
            return Err(Unavailable);
        }
        let Some(conn) = self.conn.load_full() else {
            return Err(Unavailable);
        };
        match tokio::time::timeout(self.config.command_timeout, op((*conn).clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if decisive {
                    self.mark(false, Some(e.to_string()));
                }
                Err(Unavailable)
            }
            Err(_) if !decisive => Err(Unavailable),
            Err(_) => {
                self.mark(
                    false,
                    Some(format!(
                        "no answer within {:?} (redis.command_timeout)",
                        self.config.command_timeout
                    )),
                );
                Err(Unavailable)
            }
        }
    }

    /// One GCRA decision for `key`: `Ok(None)` admitted, `Ok(Some(wait))`
    /// refused, `Err` when Redis did not decide.
    pub async fn admit(
        &self,
        key: &str,
        rate: f64,
        burst: u32,
    ) -> Result<Option<Duration>, Unavailable> {
        let interval = (1_000_000.0 / rate).max(1.0) as u64;
        let tolerance = interval.saturating_mul(u64::from(burst));
        let mut call = self.gcra.key(key);
        call.arg(interval).arg(tolerance);
        let (admitted, wait): (i64, i64) = self
            .with_conn(true, |mut c| async move { c.script(&call).await })
            .await?;
        self.stats.global_decisions.fetch_add(1, Ordering::Relaxed);
        Ok((admitted != 1).then(|| Duration::from_micros(wait.max(1) as u64)))
    }

    /// A value and its remaining lifetime.
    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, Duration)>, Unavailable> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
        let (value, ttl): (Option<Vec<u8>>, i64) = self
            .with_conn(false, |mut c| async move { c.pipeline(&pipe).await })
            .await?;
        Ok(value
            .filter(|_| ttl > 0)
            .map(|v| (v, Duration::from_millis(ttl as u64))))
    }

    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Unavailable> {
        let ms = ttl.as_millis().max(1) as u64;
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ms);
        self.with_conn(false, |mut c| async move { c.query::<()>(&cmd).await })
            .await
    }

    /// [`Fleet::set`] in a task of its own, for a value no call waits to
    /// see stored (a shared cache entry). A Redis slow to answer holds each
    /// write up to `command_timeout`; past [`MAX_WRITES_BEHIND`] of them
    /// under way, a write is skipped rather than queued, so a slow Redis
    /// never piles up memory in waiting values.
    pub fn set_behind(self: &Arc<Self>, key: String, value: Vec<u8>, ttl: Duration) {
        if self.writes_behind.fetch_add(1, Ordering::Relaxed) >= MAX_WRITES_BEHIND {
            self.writes_behind.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let fleet = self.clone();
        tokio::spawn(async move {
            let _ = fleet.set(&key, &value, ttl).await;
            fleet.writes_behind.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Announces this instance and reads the others'. Also how an
    /// unavailable Redis is found to be back (and a degraded start
    /// connects).
    async fn heartbeat(&self) {
        let conn = match self.conn.load_full() {
            Some(c) => c,
            None => match Conn::connect(&self.config).await {
                Ok(c) => {
                    let c = Arc::new(c);
                    self.conn.store(Some(c.clone()));
                    c
                }
                Err(e) => {
                    self.mark(false, Some(e.to_string()));
                    return;
                }
            },
        };
        let now = unix_ms();
        let me = InstanceInfo {
            id: self.id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config_digest: (**self.digest.load()).clone(),
            last_seen: now,
            started: self.started,
            listen: (**self.listen.load()).clone(),
        };
        let key = self.key("instances", "fleet");
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(&self.id)
            .arg(serde_json::to_string(&me).unwrap_or_default())
            .ignore()
            .cmd("HGETALL")
            .arg(&key);
        let mut c = (*conn).clone();
        // The same bound as a decision's: a Redis too slow for calls is not
        // declared back by a heartbeat that waited longer.
        let read = tokio::time::timeout(self.config.command_timeout, async move {
            c.pipeline::<(std::collections::HashMap<String, String>,)>(&pipe)
                .await
        })
        .await;
        let all = match read {
            Ok(Ok((all,))) => all,
            Ok(Err(e)) => return self.mark(false, Some(e.to_string())),
            Err(_) => return self.mark(false, Some("heartbeat timed out".to_owned())),
        };
        // Three missed heartbeats and an instance is gone.
        let horizon = self.config.heartbeat_interval.as_millis() as u64 * 3;
        let mut live = Vec::new();
        let mut stale = Vec::new();
        for (id, text) in all {
            match serde_json::from_str::<InstanceInfo>(&text) {
                Ok(i) if now.saturating_sub(i.last_seen) <= horizon => live.push(i),
                _ => stale.push(id),
            }
        }
        if !stale.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(&key).arg(&stale);
            let mut c = (*conn).clone();
            let _ = tokio::time::timeout(self.config.command_timeout, async move {
                c.query::<()>(&cmd).await
            })
            .await;
        }
        // Available only while a decision would work too: a user allowed
        // the heartbeat's commands but not the script's is found within a
        // heartbeat, not at the first limited call (one script run per
        // heartbeat, on a key that expires in milliseconds).
        {
            let mut c = (*conn).clone();
            let key = self.key("rl", "probe");
            let probed = tokio::time::timeout(
                self.config.command_timeout,
                probe_decision(&mut c, &self.gcra, &key),
            )
            .await;
            match probed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return self.mark(false, Some(e.to_string())),
                Err(_) => return self.mark(false, Some("the rate-limit script timed out".into())),
            }
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        self.live.store(
            u32::try_from(live.len()).unwrap_or(u32::MAX).max(1),
            Ordering::Relaxed,
        );
        *self.instances.lock().unwrap_or_else(|e| e.into_inner()) = live;
        self.mark(true, None);
    }

    /// `GET /fleet` on the admin port.
    pub fn status_json(&self) -> serde_json::Value {
        let instances = self
            .instances
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let available = self.is_available();
        serde_json::json!({
            "self": self.id,
            "redis": {
                "topology": match &self.config.topology {
                    RedisTopology::Standalone(_) => "standalone",
                    RedisTopology::Cluster(_) => "cluster",
                },
                "available": available,
                "mode": if available { "global" } else { "local-fallback" },
                "since": self.changed_at.load(Ordering::Relaxed),
                "error": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
            },
            "live_instances": self.live_instances(),
            "instances": instances,
        })
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        let _ = write!(
            out,
            "# HELP portico_fleet_redis_available Whether Redis answers (1) or limits fall back per instance (0).\n\
             # TYPE portico_fleet_redis_available gauge\n\
             portico_fleet_redis_available {}\n\
             # HELP portico_fleet_instances Live instances sharing the Redis, from heartbeats.\n\
             # TYPE portico_fleet_instances gauge\n\
             portico_fleet_instances {}\n\
             # HELP portico_fleet_redis_outages_total Times Redis became unavailable.\n\
             # TYPE portico_fleet_redis_outages_total counter\n\
             portico_fleet_redis_outages_total {}\n\
             # HELP portico_rate_limit_global_decisions_total Global rate-limit decisions, by where they were taken.\n\
             # TYPE portico_rate_limit_global_decisions_total counter\n\
             portico_rate_limit_global_decisions_total{{by=\"redis\"}} {}\n\
             portico_rate_limit_global_decisions_total{{by=\"local-fallback\"}} {}\n\
             # HELP portico_cache_shared_hits_total Replies served from the shared (Redis) cache tier.\n\
             # TYPE portico_cache_shared_hits_total counter\n\
             portico_cache_shared_hits_total {}\n",
            u8::from(self.is_available()),
            self.live_instances(),
            s.outages.load(Ordering::Relaxed),
            s.global_decisions.load(Ordering::Relaxed),
            s.fallback_decisions.load(Ordering::Relaxed),
            s.shared_cache_hits.load(Ordering::Relaxed),
        );
    }
}

/// Heartbeats until the fleet is dropped.
async fn heartbeats(fleet: Weak<Fleet>) {
    loop {
        let interval = match fleet.upgrade() {
            Some(f) => f.config.heartbeat_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        match fleet.upgrade() {
            Some(f) => f.heartbeat().await,
            None => return,
        }
    }
}

/// What to do about a Redis Cluster node given as `url`.
const CLUSTER_HINT: &str =
    ": list the cluster's nodes in redis.cluster = [...] instead of redis.url";

/// What to do about a key's redirection to another node: the server
/// answered as a node of a Redis Cluster.
fn moved_hint(e: &redis::RedisError) -> String {
    if e.redirect_node().is_some() || matches!(e.code(), Some("MOVED" | "ASK")) {
        format!(" (this is a node of a Redis Cluster{CLUSTER_HINT})")
    } else {
        String::new()
    }
}

/// A hint for an answer that is no Redis protocol at all: the address
/// is some other server's.
fn not_redis_hint(e: &redis::RedisError) -> &'static str {
    let text = e.to_string();
    if text.contains("Parse error") || text.contains("Unexpected") {
        " (the answer is not Redis's protocol: is this address a Redis server?)"
    } else {
        ""
    }
}
