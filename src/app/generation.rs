//! A generation: everything derived from one config and its schemas (routes
//! and bindings, policies, aggregates, upstream definitions, TLS
//! certificates, JSON options), built by one function that reads top to
//! bottom, and immutable once built. The live gateway serves the newest
//! generation; a request or stream keeps the one it started with.
//!
//! What must outlive a generation lives in [`Carry`], keyed by name or by
//! definition, never by position: upstreams (connection pools, health and
//! ejection state), rate-limit buckets, cached replies and call counters.
//! A new generation takes them over wherever its definition is unchanged.

use super::{Loaded, StartError};
use crate::config::{Config, EndpointSource, RouteConfig, UpstreamConfig, WeightedAddr};
use crate::egress::grpc::GrpcEgress;
use crate::egress::http::HttpEgress;
use crate::egress::local::LocalService;
use crate::egress::upstream::Upstream;
use crate::ingress::connect::ConnectIngress;
use crate::ingress::dispatch::{Ingress, Page};
use crate::ingress::edge::Edge;
use crate::ingress::grpc::GrpcIngress;
use crate::ingress::rest::RestIngress;
use crate::ingress::websocket::WebSocketIngress;
use crate::observe::call_stats::CallStats;
use crate::observe::metrics::Usage;
use crate::policy::cache::ResponseCache;
use crate::policy::rate_limit::Limiter;
use crate::routes::RouteTable;
use crate::transcode::status::StatusRenderer;
use crate::{egress, policy};
use arc_swap::ArcSwapOption;
use prost_reflect::DescriptorPool;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic_health::pb::health_check_response::ServingStatus;

/// State that outlives generations, and the things every generation shares.
pub struct Carry {
    pub usage: Arc<Usage>,
    pub pages: Arc<Vec<Page>>,
    pub shutdown: watch::Receiver<bool>,
    pub sessions: Arc<AtomicUsize>,
    /// The newest generation's WebSocket ingress, where open sessions find
    /// the routes and pipeline for the calls they open after a swap.
    pub websocket: Arc<ArcSwapOption<WebSocketIngress>>,
    /// By upstream name.
    upstreams: Mutex<HashMap<String, Arc<Upstream>>>,
    /// By route definition (see [`limiter_key`]).
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
    /// By route definition and schema (see [`cache_key`]).
    caches: Mutex<HashMap<String, Arc<ResponseCache>>>,
    /// By method path.
    /// By method path and upstream: a method moved to another upstream
    /// starts new series rather than carrying its counts under the new
    /// upstream's label.
    stats: Mutex<HashMap<(String, String), Arc<CallStats>>>,
    /// The Redis fleet, while `[redis]` is unchanged.
    fleet: Mutex<Option<Arc<crate::fleet::Fleet>>>,
    /// One health status per routed service for the process: a client
    /// watching it keeps its stream across reloads.
    health: Arc<egress::local::health::HealthBook>,
}

impl Carry {
    pub fn new(pages: Vec<Page>, shutdown: watch::Receiver<bool>) -> Carry {
        let health = Arc::new(egress::local::health::HealthBook::new(shutdown.clone()));
        Carry {
            usage: Arc::default(),
            pages: Arc::new(pages),
            shutdown,
            sessions: Arc::default(),
            websocket: Arc::new(ArcSwapOption::empty()),
            upstreams: Mutex::default(),
            limiters: Mutex::default(),
            caches: Mutex::default(),
            stats: Mutex::default(),
            fleet: Mutex::default(),
            health,
        }
    }

    /// The fleet for `config`: the running one while `[redis]` is
    /// unchanged (told the new digest), else a new connection.
    async fn fleet(
        &self,
        config: &crate::fleet::config::RedisConfig,
        digest: &str,
        listen: &str,
    ) -> Result<Arc<crate::fleet::Fleet>, String> {
        let running = lock(&self.fleet).clone();
        if let Some(f) = running.as_ref().filter(|f| f.config() == config) {
            f.set_digest(digest);
            return Ok(f.clone());
        }
        // The address it serves on: the running fleet knows the bound one.
        let listen = running
            .as_ref()
            .map_or(listen.to_owned(), |old| old.listen());
        let f = crate::fleet::Fleet::start(config.clone(), digest, &listen).await?;
        *lock(&self.fleet) = Some(f.clone());
        Ok(f)
    }

    /// A method's counters on an upstream: the ones it had there in earlier
    /// generations, if any.
    pub fn stats(&self, path: &str, upstream: &str) -> Arc<CallStats> {
        lock(&self.stats)
            .entry((path.to_owned(), upstream.to_owned()))
            .or_default()
            .clone()
    }

    /// The upstream for `config`: the running one when its definition is
    /// unchanged, or differs only in its endpoint list (returned too, to be
    /// applied once the whole generation is built, so the endpoints that stay
    /// keep their connections); else a new one.
    async fn upstream(
        &self,
        config: &UpstreamConfig,
    ) -> Result<(Arc<Upstream>, Option<Vec<WeightedAddr>>), StartError> {
        let running = lock(&self.upstreams).get(&config.name).cloned();
        if let Some(up) = &running {
            // The list is applied even when the definition looks unchanged:
            // the running upstream's config holds the list it started with,
            // not the one in effect, so a return to that list must be applied.
            if same_but_endpoints(&up.config, config) {
                if let EndpointSource::Static(list) | EndpointSource::File { initial: list, .. } =
                    &config.endpoints
                {
                    return Ok((up.clone(), Some(list.clone())));
                }
            }
            if up.config == *config {
                return Ok((up.clone(), None));
            }
        }
        let up = Upstream::start_after(config.clone(), running.as_deref())
            .await
            .map_err(StartError::Upstream)?;
        Ok((up, None))
    }

    /// Keeps only what the newest generation uses, so removed routes and
    /// upstreams release their state once their last calls end.
    fn retain(
        &self,
        upstreams: &[Arc<Upstream>],
        limiters: &HashMap<String, Arc<Limiter>>,
        caches: &HashMap<String, Arc<ResponseCache>>,
        routes: &RouteTable,
    ) {
        *lock(&self.upstreams) = upstreams
            .iter()
            .map(|u| (u.name().to_owned(), u.clone()))
            .collect();
        *lock(&self.limiters) = limiters.clone();
        *lock(&self.caches) = caches.clone();
        lock(&self.stats).retain(|(path, upstream), _| {
            routes
                .target(path)
                .is_some_and(|t| &*t.upstream_name == upstream.as_str())
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Two upstream definitions that differ at most in their endpoint list
/// (static, or the current contents of the same endpoints file).
fn same_but_endpoints(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    let comparable = match (&a.endpoints, &b.endpoints) {
        (EndpointSource::Static(_), EndpointSource::Static(_)) => true,
        (EndpointSource::File { path: p, .. }, EndpointSource::File { path: q, .. }) => p == q,
        _ => false,
    };
    let mut a = a.clone();
    a.endpoints = b.endpoints.clone();
    comparable && a == *b
}

/// A route's rate-limit buckets carry over while its service, methods and
/// limit are unchanged.
/// What names a global limit in Redis: the route's service and methods and
/// the limit's numbers, written out so that every version of the gateway
/// running the same config shares one bucket.
fn global_limit_name(route: &RouteConfig, c: &crate::config::RateLimitConfig) -> String {
    use crate::config::RateLimitKey;
    let key = match &c.key {
        RateLimitKey::ClientIp => "client_ip".to_owned(),
        RateLimitKey::Principal => "principal".to_owned(),
        RateLimitKey::Route => "route".to_owned(),
        RateLimitKey::Header(h) => format!("header:{h}"),
    };
    // The same methods listed in another order are the same limit.
    let methods = route
        .methods
        .as_ref()
        .map(|m| {
            let mut sorted = m.clone();
            sorted.sort();
            sorted.join(",")
        })
        .unwrap_or_else(|| "*".to_owned());
    format!(
        "{}|{methods}|{}|{}|{key}",
        route.grpc_service, c.rate, c.burst
    )
}

fn limiter_key(route: &RouteConfig) -> String {
    format!(
        "{}|{:?}|{:?}",
        route.grpc_service, route.methods, route.rate_limit
    )
}

/// A route's cached replies carry over while its whole definition (with the
/// upstream and authenticator it names, by name, not by position) and its
/// service's schema are unchanged.
fn cache_key(route: &RouteConfig, config: &Config, pool: &DescriptorPool) -> String {
    let schema = pool
        .get_service_by_name(&route.grpc_service)
        .map(|s| {
            use prost::Message as _;
            // Definitions, options and comments, not where they sit: a
            // blank line moves every span after it and changes nothing.
            let mut file = s.parent_file().file_descriptor_proto().clone();
            if let Some(info) = &mut file.source_code_info {
                for location in &mut info.location {
                    location.span.clear();
                }
            }
            hex(&Sha256::digest(file.encode_to_vec()))
        })
        .unwrap_or_default();
    let upstream = &config.upstreams[route.upstream].name;
    let auth: Vec<&str> = route
        .auth
        .iter()
        .map(|&i| config.authenticators[i].name.as_str())
        .collect();
    let ext_authz = route.ext_authz.map(|i| config.ext_authz[i].name.as_str());
    let positionless = RouteConfig {
        upstream: usize::MAX,
        auth: Vec::new(),
        ext_authz: None,
        ..route.clone()
    };
    format!("{positionless:?}|{upstream}|{auth:?}|{ext_authz:?}|{schema}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One generation, ready to serve.
pub struct Generation {
    pub config: Config,
    /// The fleet this instance shares limits and replies with, with `[redis]`.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    pub ingress: Arc<Ingress>,
    pub routes: Arc<RouteTable>,
    pub upstreams: Arc<Vec<Arc<Upstream>>>,
    /// The OpenAPI description of what this generation serves.
    pub api: Arc<crate::openapi::ApiDescription>,
    pub tls: Option<TlsAcceptor>,
    /// SHA-256 over the config text, every file it names, and the schemas.
    pub digest: String,
    pub loaded_at: SystemTime,
    /// Per upstream, in config order, whether an endpoint in rotation
    /// accepts connections (`None` until first checked); for `/readyz`.
    pub reachable: Vec<watch::Receiver<Option<bool>>>,
    /// The authenticators, in config order: a reload that changes nothing
    /// else still hands them the key sets it read.
    pub authenticators: Vec<Arc<policy::auth::Authenticator>>,
    /// Dropped with the generation: its background tasks (the health
    /// service's reporters) end then.
    _alive: watch::Sender<()>,
}

/// How often upstream reachability is checked for the health service and
/// `/readyz`.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Builds a generation from a loaded config, taking over `carry`'s state
/// where definitions are unchanged.
pub async fn build(loaded: Loaded, carry: &Carry) -> Result<Generation, StartError> {
    let Loaded {
        config,
        pool,
        routes,
        aggregates,
        authenticators,
    } = loaded;
    let digest = digest(&config, &pool);
    let kept_authenticators = authenticators.clone();
    let limits = config.server.limits.clone();
    let fleet = match &config.redis {
        None => {
            // The old generation keeps its fleet while it serves; once it
            // is gone, so are its heartbeats.
            *lock(&carry.fleet) = None;
            None
        }
        Some(rc) => Some(
            carry
                .fleet(rc, &digest, &config.server.listen.to_string())
                .await
                .map_err(|reason| {
                    StartError::Config(crate::config::ConfigError {
                        file: config.source.clone(),
                        key: "redis".to_owned(),
                        reason,
                    })
                })?,
        ),
    };

    // Upstreams first: the egress and the health service need them.
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    let mut endpoint_changes = Vec::new();
    for u in &config.upstreams {
        let (upstream, endpoints) = carry.upstream(u).await?;
        if let Some(list) = endpoints {
            endpoint_changes.push((upstream.clone(), list));
        }
        upstreams.push(upstream);
    }
    let upstreams = Arc::new(upstreams);
    let egress = egress::Egress {
        grpc: GrpcEgress::new(&limits),
        http: HttpEgress::new(&config.upstreams, routes.outbound_bindings(), &limits)
            .map_err(StartError::Upstream)?,
        upstreams: upstreams.clone(),
    };
    let routes = Arc::new(routes);
    let aggregates = Arc::new(aggregates);
    let api = Arc::new(crate::openapi::ApiDescription::new(
        config.clone(),
        routes.clone(),
        aggregates.clone(),
        digest.clone(),
    ));

    // Policies, one instance per route; stateful ones taken over by definition.
    let auth = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| {
                (!r.auth.is_empty()).then(|| {
                    Arc::new(policy::auth::RouteAuth::new(
                        r.auth.iter().map(|&i| authenticators[i].clone()).collect(),
                    ))
                })
            })
            .collect(),
    );
    let mut authorizers = Vec::with_capacity(config.ext_authz.len());
    for c in &config.ext_authz {
        let stats = carry.usage.ext_authz_stats(&c.name);
        let a = policy::ext_authz::ExtAuthz::new(c, stats).map_err(|reason| {
            StartError::Config(crate::config::ConfigError {
                file: config.source.clone(),
                key: format!("ext_authz.{}", c.name),
                reason,
            })
        })?;
        authorizers.push(Arc::new(a));
    }
    let ext_authz = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| r.ext_authz.map(|i| authorizers[i].clone()))
            .collect(),
    );
    let authorize = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| {
                r.authorize
                    .clone()
                    .map(|a| Arc::new(policy::authorize::Rules(a)))
            })
            .collect(),
    );
    let mut limiters = HashMap::new();
    let rate_limit = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| {
                let c = r.rate_limit.clone()?;
                let global = fleet.as_ref().filter(|_| c.global);
                // A global limit is also tied to its fleet (a new connection,
                // after a change of [redis], is a new limiter).
                let key = match global {
                    Some(f) => format!("{}|{:p}", limiter_key(r), Arc::as_ptr(f)),
                    None => limiter_key(r),
                };
                let name = global_limit_name(r, &c);
                let existing = lock(&carry.limiters).get(&key).cloned();
                let limiter = existing.unwrap_or_else(|| {
                    Arc::new(match global {
                        Some(f) => Limiter::global(c, f.clone(), name),
                        None => Limiter::new(c),
                    })
                });
                limiters.insert(key, limiter.clone());
                Some(limiter)
            })
            .collect(),
    );
    let mut caches = HashMap::new();
    let cache = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| {
                let c = r.cache.clone()?;
                let shared = fleet.as_ref().filter(|_| c.shared.is_some());
                let key = match shared {
                    Some(f) => format!("{}|{:p}", cache_key(r, &config, &pool), Arc::as_ptr(f)),
                    None => cache_key(r, &config, &pool),
                };
                let existing = lock(&carry.caches).get(&key).cloned();
                let cache = existing.unwrap_or_else(|| {
                    Arc::new(match shared {
                        Some(f) => ResponseCache::shared(c, f.clone()),
                        None => ResponseCache::new(c),
                    })
                });
                caches.insert(key, cache.clone());
                Some(cache)
            })
            .collect(),
    );
    let auth_for_handshakes = auth.clone();
    let (alive, alive_rx) = watch::channel(());
    let (local, reachable, health_reports) =
        local_grpc_services(&pool, &routes, &upstreams, carry, &egress.grpc);
    let local = egress::local::AnsweredLocally(Arc::new(local));
    // Where credentials travel: bearer tokens, each API key's header, and
    // each session cookie.
    // Each with where a client may send it, as a refusal of two says:
    // the query parameters the edge lifts into that header.
    let carried = |header: &http::HeaderName| {
        let mut params: Vec<String> = config
            .authenticators
            .iter()
            .filter_map(|a| match &a.method {
                crate::config::AuthMethod::ApiKey(k) if k.header == header => k
                    .query_param
                    .as_ref()
                    .map(|q| format!("`{q}` query parameter")),
                _ => None,
            })
            .collect();
        if header == http::header::AUTHORIZATION {
            if let Some(p) = &config.websocket.token_query_param {
                params.push(format!("`{p}` query parameter of a WebSocket handshake"));
            }
        }
        params.sort();
        params.dedup();
        if params.is_empty() {
            "in headers".to_owned()
        } else {
            format!("in headers or the {}", params.join(" or the "))
        }
    };
    let mut credentials = policy::one_credential::Credentials {
        headers: vec![(
            http::header::AUTHORIZATION,
            carried(&http::header::AUTHORIZATION),
        )],
        cookies: Vec::new(),
    };
    for a in &config.authenticators {
        match &a.method {
            crate::config::AuthMethod::ApiKey(k)
                if !credentials.headers.iter().any(|(h, _)| h == k.header) =>
            {
                credentials
                    .headers
                    .push((k.header.clone(), carried(&k.header)));
            }
            crate::config::AuthMethod::Jwt(j) => {
                if let Some(name) = j
                    .cookie
                    .as_ref()
                    .filter(|c| !credentials.cookies.contains(c))
                {
                    credentials.cookies.push(name.clone());
                }
            }
            _ => {}
        }
    }
    let credentials = policy::one_credential::OneCredentialLayer(Arc::new(credentials));
    let pipeline = policy::pipeline(
        credentials.clone(),
        auth,
        authorize,
        ext_authz,
        rate_limit,
        cache,
        carry.usage.clone(),
        local,
        egress,
    );

    // The ingress adapters, all through one request edge.
    // Opened again by every generation: a log rotated by renaming it goes
    // on in a new file after a reload.
    let access_log = config
        .access_log
        .as_ref()
        .map(|c| {
            crate::observe::access_log::AccessLog::start(c).map_err(|reason| {
                StartError::Config(crate::config::ConfigError {
                    file: config.source.clone(),
                    key: "access_log.path".into(),
                    reason,
                })
            })
        })
        .transpose()?;
    let tracing = config
        .tracing
        .as_ref()
        .map(|c| {
            crate::observe::traces::Tracing::start(c).map_err(|reason| {
                StartError::Config(crate::config::ConfigError {
                    file: config.source.clone(),
                    key: "tracing.endpoint".into(),
                    reason,
                })
            })
        })
        .transpose()?;
    let edge = Edge::new(
        config.metadata.clone(),
        config.websocket.token_query_param.clone(),
    )
    .with_sinks(crate::observe::call_record::Sinks {
        log: access_log,
        tracing,
        usage: Some(carry.usage.clone()),
    })
    .with_proxies(config.server.trusted_proxies.clone());
    let websocket = Arc::new(WebSocketIngress {
        routes: routes.clone(),
        pipeline: pipeline.clone(),
        auth: auth_for_handshakes,
        credentials,
        config: config.websocket.clone(),
        stream_idle_timeout: config.server.limits.stream_idle_timeout,
        limits: config.server.limits.clone(),
        edge: edge.clone(),
        status: StatusRenderer::new(&pool),
        shutdown: carry.shutdown.clone(),
        sessions: carry.sessions.clone(),
        newest: Arc::downgrade(&carry.websocket),
    });
    let tools = crate::ingress::mcp::tools::ToolTable::build(
        &routes,
        &config.routes.iter().map(|r| r.mcp).collect::<Vec<_>>(),
    );
    for warning in &tools.warnings {
        tracing::warn!("{warning}");
    }
    for warning in crate::ingress::dispatch::shadowed_bindings(
        &routes,
        &aggregates,
        config.openapi.serve,
        !tools.is_empty(),
    ) {
        tracing::warn!("{warning}");
    }
    let ingress = Arc::new(Ingress {
        routes: routes.clone(),
        rest: Arc::new(RestIngress {
            routes: routes.clone(),
            pipeline: pipeline.clone(),
            aggregates,
            aggregator: policy::aggregate::Aggregator {
                pipeline: pipeline.clone(),
                status: StatusRenderer::new(&pool),
            },
            edge: edge.clone(),
            limits: limits.clone(),
            status: StatusRenderer::new(&pool),
        }),
        grpc: Arc::new(GrpcIngress {
            routes: routes.clone(),
            pipeline: pipeline.clone(),
            limits: limits.clone(),
            edge: edge.clone(),
        }),
        mcp: (!tools.is_empty()).then(|| {
            Arc::new(crate::ingress::mcp::McpIngress {
                tools: Arc::new(tools),
                routes: routes.clone(),
                pipeline: pipeline.clone(),
                edge: edge.clone(),
                limits: limits.clone(),
                status: StatusRenderer::new(&pool),
            })
        }),
        connect: Arc::new(ConnectIngress {
            routes: routes.clone(),
            pipeline,
            limits: limits.clone(),
            edge,
            status: StatusRenderer::new(&pool),
        }),
        websocket,
        pages: carry.pages.clone(),
        api: api.clone(),
        limits: limits.clone(),
    });

    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::ingress::tls::acceptor)
        .transpose()
        .map_err(|(key, reason)| {
            StartError::Config(crate::config::ConfigError {
                file: config.source.clone(),
                key: format!("server.tls.{key}"),
                reason,
            })
        })?;

    // Nothing below can fail: only now does a reload touch running state.
    for (upstream, list) in endpoint_changes {
        if let Err(e) = upstream.set_endpoints(list) {
            tracing::warn!(upstream = upstream.name(), error = %e, "endpoints not applied");
        }
    }
    carry.retain(&upstreams, &limiters, &caches, &routes);
    health_reports.start(&carry.health, alive_rx);
    Ok(Generation {
        fleet,
        config,
        ingress,
        routes,
        upstreams,
        api,
        tls,
        digest,
        loaded_at: SystemTime::now(),
        reachable,
        authenticators: kept_authenticators,
        _alive: alive,
    })
}

/// SHA-256 over the config text, the contents of every file it names (a
/// folder: every file in it, by its name inside the folder), and the loaded
/// schemas (so schemas read by reflection count too). Only contents count:
/// how the config's path was spelled, the working directory, or where the
/// tree sits on disk change nothing, so two instances (or `portico openapi`
/// and a running gateway) started from the same files agree.
pub fn digest(config: &Config, pool: &DescriptorPool) -> String {
    let mut h = Sha256::new();
    h.update(config.text_sha256.as_bytes());
    for (i, path) in config.files.iter().enumerate() {
        // The config text names the file; its place in the list stands for it.
        h.update((i as u64).to_le_bytes());
        for file in files_under(path) {
            let inside = file.strip_prefix(path).unwrap_or(&file);
            h.update(inside.to_string_lossy().as_bytes());
            let contents = digest_contents(&file);
            h.update((contents.len() as u64).to_le_bytes());
            h.update(contents);
        }
    }
    h.update(pool.encode_to_vec());
    hex(&h.finalize())
}

/// A file, or every file under a folder (sorted; bounded, as a digest of a
/// huge tree would stall a reload).
fn files_under(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(p) = pending.pop() {
        if out.len() >= 10_000 {
            break;
        }
        match std::fs::read_dir(&p) {
            Ok(entries) => pending.extend(entries.filter_map(|e| e.ok()).map(|e| e.path())),
            // Not a folder: a file (or something else, whose contents the
            // digest leaves out; its name still counts).
            Err(_) => out.push(p),
        }
    }
    out.sort();
    out
}

/// A file's contents for the digest, or nothing for what is not a regular
/// file (a symlink counts as what it points to): a named pipe would block
/// the read forever, and a device such as `/dev/zero` never end it.
fn digest_contents(file: &std::path::Path) -> Vec<u8> {
    if !std::fs::metadata(file).is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    std::fs::read(file).unwrap_or_default()
}

/// The gRPC services the gateway answers itself: server reflection (v1 and
/// v1alpha) over the routed services, and grpc.health.v1 reporting each
/// routed service as serving while an endpoint of its upstream is in
/// rotation and reachable (once [`HealthReports::start`]ed).
fn local_grpc_services(
    pool: &DescriptorPool,
    routes: &RouteTable,
    upstreams: &[Arc<Upstream>],
    carry: &Carry,
    grpc_egress: &GrpcEgress,
) -> (
    egress::local::LocalServices,
    Vec<watch::Receiver<Option<bool>>>,
    HealthReports,
) {
    let routed: std::collections::BTreeSet<String> = routes
        .targets()
        .map(|t| t.method.parent_service().full_name().to_owned())
        .collect();
    let schemas = Arc::new(egress::local::reflection::Schemas::new(
        pool.clone(),
        routed.iter().cloned().collect(),
    ));
    let probes = egress::probe::spawn(upstreams, PROBE_INTERVAL);
    let reachable = probes.clone();
    let by_upstream = probes
        .into_iter()
        .enumerate()
        .map(|(i, probe)| {
            let names = routes
                .targets()
                .filter(|t| t.upstream.0 == i)
                .map(|t| t.method.parent_service().full_name().to_owned())
                .collect();
            (names, probe)
        })
        .collect();
    let services = vec![
        (
            "/grpc.reflection.v1.ServerReflection/",
            LocalService::new(egress::local::reflection::v1::server(schemas.clone())),
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/",
            LocalService::new(egress::local::reflection::v1alpha::server(schemas)),
        ),
        (
            "/grpc.health.v1.Health/",
            LocalService::new(carry.health.server()),
        ),
    ];
    (
        egress::local::LocalServices {
            services,
            egress: grpc_egress.clone(),
        },
        reachable,
        HealthReports {
            routed,
            by_upstream,
        },
    )
}

/// What a generation reports to the health service, started only once it
/// is sure to go live: a reload that fails changes no status.
struct HealthReports {
    routed: std::collections::BTreeSet<String>,
    /// Each upstream's routed services, and its reachability probe.
    by_upstream: Vec<(
        std::collections::BTreeSet<String>,
        watch::Receiver<Option<bool>>,
    )>,
}

impl HealthReports {
    /// Services no longer routed stop being reported; the others keep
    /// their status until this generation's probes have answered. The
    /// reporters end when `alive` closes.
    fn start(self, book: &Arc<egress::local::health::HealthBook>, alive: watch::Receiver<()>) {
        book.route(self.routed);
        for (names, mut probe) in self.by_upstream {
            let book = book.clone();
            let mut alive = alive.clone();
            tokio::spawn(async move {
                loop {
                    match *probe.borrow_and_update() {
                        Some(up) => {
                            let status = if up {
                                ServingStatus::Serving
                            } else {
                                ServingStatus::NotServing
                            };
                            for name in &names {
                                book.set(name, status);
                            }
                        }
                        // Not probed yet: a service new to the gateway is
                        // not serving yet; the others keep their status.
                        None => {
                            for name in &names {
                                book.set_if_unreported(name, ServingStatus::NotServing);
                            }
                        }
                    }
                    tokio::select! {
                        changed = probe.changed() => if changed.is_err() { return },
                        // The generation is gone: so is this reporter, and
                        // with it the probe, whose receiver this was.
                        _ = alive.changed() => return,
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema part of a route's cache key, for `proto` compiled from a
    /// file as `descriptors.protos` compiles it.
    fn schema_key(proto: &str) -> String {
        let dir = crate::scratch::ScratchDir::new("key");
        std::fs::write(dir.join("k.proto"), proto).unwrap();
        let set = crate::descriptors::compile_protos(&[&dir], &["k.proto".to_owned()])
            .map_err(|(_, e)| e.to_string())
            .unwrap();
        let pool = DescriptorPool::decode(&set[..]).unwrap();
        let text = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.b]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ngrpc_service = \"k.S\"\nupstream = \"b\"\n";
        let config = Config::from_toml(text).unwrap();
        cache_key(&config.routes[0], &config, &pool)
    }

    #[test]
    fn cached_replies_outlive_blank_lines_but_not_an_edited_comment() {
        let proto = "syntax = \"proto3\";\npackage k;\nmessage M { string a = 1; }\n// Looks things up.\nservice S { rpc Get(M) returns (M); }\n";
        let key = schema_key(proto);
        let spaced = proto.replace("package k;\n", "package k;\n\n\n");
        assert_eq!(key, schema_key(&spaced), "blank lines change nothing");
        let edited = proto.replace("Looks things up.", "Finds things.");
        assert_ne!(key, schema_key(&edited), "a comment is part of the schema");
    }

    #[test]
    fn the_digest_depends_on_contents_not_on_how_the_path_is_spelled() {
        let dir = crate::scratch::ScratchDir::new("digest");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("keys.toml"),
            format!("alice = \"{}\"\n", "1".repeat(64)),
        )
        .unwrap();
        let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[authenticators.k]\nkind = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"keys.toml\"\n\n[upstreams.b]\nendpoints = [\"127.0.0.1:1\"]\n\n[[routes]]\ngrpc_service = \"x.v1.S\"\nupstream = \"b\"\nauth = \"k\"\n";
        std::fs::write(dir.join("portico.toml"), text).unwrap();
        let pool = crate::descriptors::builtin::pool();
        let of = |path: &std::path::Path| digest(&Config::load(path).expect("loads"), &pool);
        let plain = of(&dir.join("portico.toml"));
        assert_eq!(plain, of(&dir.join("sub/../portico.toml")));
        assert_eq!(plain, of(&dir.join("./portico.toml")));
        // The same files elsewhere on disk: the same digest.
        let moved = dir.join("sub/copy");
        std::fs::create_dir_all(&moved).unwrap();
        std::fs::copy(dir.join("portico.toml"), moved.join("portico.toml")).unwrap();
        std::fs::copy(dir.join("keys.toml"), moved.join("keys.toml")).unwrap();
        assert_eq!(plain, of(&moved.join("portico.toml")));
        // A file it names changes: the digest does.
        std::fs::write(
            moved.join("keys.toml"),
            format!("alice = \"{}\"\n", "2".repeat(64)),
        )
        .unwrap();
        assert_ne!(plain, of(&moved.join("portico.toml")));
        std::fs::remove_dir_all(dir).ok();
    }
}
