//! The one place that wires ingress -> policy pipeline -> egress, binds the
//! sockets, and shuts everything down.

use crate::config::{Config, ConfigError};
use crate::descriptors::{self, SchemaError};
use crate::egress::grpc::GrpcEgress;
use crate::egress::http::HttpEgress;
use crate::ingress::connect::ConnectIngress;
use crate::ingress::dispatch::{Ingress, Page};
use crate::ingress::grpc::{GrpcIngress, LocalService};
use crate::ingress::rest::RestIngress;
use crate::ingress::server;
use crate::ingress::websocket::WebSocketIngress;
use crate::routes::aggregate::AggregateTable;
use crate::routes::RouteTable;
use crate::transcode::status::StatusRenderer;
use crate::{admin, egress, policy};
use prost_reflect::DescriptorPool;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the gateway could not start; each names file, key or address.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Schema(SchemaError),
    Bind {
        key: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    Upstream(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "config error: {e}"),
            StartError::Schema(e) => write!(f, "schema error: {e}"),
            StartError::Bind { key, addr, error } => {
                write!(f, "cannot listen on {addr} ({key}): {error}")
            }
            StartError::Upstream(e) => write!(f, "upstream error: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<SchemaError> for StartError {
    fn from(e: SchemaError) -> Self {
        StartError::Schema(e)
    }
}

/// Config, schemas and routes, loaded and checked; what `portico check` prints.
pub struct Loaded {
    pub config: Config,
    pub pool: DescriptorPool,
    pub routes: RouteTable,
    pub aggregates: AggregateTable,
    /// Authenticators with their keys read (key files, JWK sets).
    pub authenticators: Vec<Arc<policy::auth::Authenticator>>,
}

pub async fn load(config: Config) -> Result<Loaded, StartError> {
    let pool = descriptors::load(&config).await?;
    let routes = RouteTable::build(&config, &pool)?;
    let aggregates = AggregateTable::build(&config, &routes)?;
    if let Some(tls) = &config.server.tls {
        // Checked here too, so `portico check` catches a key that does not fit.
        crate::ingress::tls::acceptor(tls).map_err(|reason| crate::config::ConfigError {
            file: config.source.clone(),
            key: "server.tls".to_owned(),
            reason,
        })?;
    }
    // Key files and JWK sets are read here, so `portico check` refuses what
    // `portico serve` would.
    let mut authenticators = Vec::with_capacity(config.authenticators.len());
    for a in &config.authenticators {
        authenticators.push(Arc::new(
            policy::auth::Authenticator::load(a)
                .await
                .map_err(|reason| {
                    StartError::Config(crate::config::ConfigError {
                        file: config.source.clone(),
                        key: format!("authenticators.{}", a.name),
                        reason,
                    })
                })?,
        ));
    }
    Ok(Loaded {
        config,
        pool,
        routes,
        aggregates,
        authenticators,
    })
}

/// A running gateway.
pub struct Gateway {
    /// The address the main port is bound to (useful with port 0).
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// WebSocket sessions open; each closes with going-away on shutdown.
    sessions: Arc<std::sync::atomic::AtomicUsize>,
    drain_timeout: Duration,
}

/// Loads everything, binds the sockets and starts serving.
pub async fn start(config: Config) -> Result<Gateway, StartError> {
    start_with_pages(config, Vec::new()).await
}

/// As [`start`], also serving static pages on the main port.
pub async fn start_with_pages(config: Config, pages: Vec<Page>) -> Result<Gateway, StartError> {
    let Loaded {
        config,
        pool,
        routes,
        aggregates,
        authenticators,
    } = load(config).await?;
    let limits = config.server.limits.clone();
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        upstreams.push(
            egress::upstream::Upstream::start(u.clone())
                .await
                .map_err(StartError::Upstream)?,
        );
    }
    let upstreams = Arc::new(upstreams);
    let egress = egress::Egress {
        grpc: GrpcEgress::new(&limits),
        http: HttpEgress::new(&config.upstreams, routes.outbound_bindings(), &limits)
            .map_err(StartError::Upstream)?,
        upstreams: upstreams.clone(),
    };
    let routes = Arc::new(routes);
    let auth = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| r.auth.map(|i| authenticators[i].clone()))
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
    let rate_limit = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| {
                r.rate_limit
                    .clone()
                    .map(|c| Arc::new(policy::rate_limit::Limiter::new(c)))
            })
            .collect(),
    );
    let cache = policy::PerRoute::new(
        config
            .routes
            .iter()
            .map(|r| {
                r.cache
                    .clone()
                    .map(|c| Arc::new(policy::cache::ResponseCache::new(c)))
            })
            .collect(),
    );
    let usage = Arc::new(crate::observe::metrics::Usage::default());
    let pipeline = policy::pipeline(auth, authorize, rate_limit, cache, usage.clone(), egress);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let sessions = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let local = local_grpc_services(&pool, &routes, &upstreams)?;
    // One request edge for every adapter: one header rule, one deadline rule.
    let edge = crate::ingress::edge::Edge::new(
        config.metadata.clone(),
        config.websocket.token_query_param.clone(),
    );
    let ingress = Arc::new(Ingress {
        routes: routes.clone(),
        rest: Arc::new(RestIngress {
            routes: routes.clone(),
            pipeline: pipeline.clone(),
            aggregates: Arc::new(aggregates),
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
            local,
        }),
        connect: Arc::new(ConnectIngress {
            routes: routes.clone(),
            pipeline: pipeline.clone(),
            limits: limits.clone(),
            edge: edge.clone(),
            status: StatusRenderer::new(&pool),
        }),
        websocket: Arc::new(WebSocketIngress {
            routes: routes.clone(),
            pipeline,
            config: config.websocket.clone(),
            edge,
            status: StatusRenderer::new(&pool),
            shutdown: shutdown_rx.clone(),
            sessions: sessions.clone(),
        }),
        pages: Arc::new(pages),
    });

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|error| StartError::Bind {
            key: "server.listen",
            addr: config.server.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| StartError::Bind {
        key: "server.listen",
        addr: config.server.listen,
        error,
    })?;
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::ingress::tls::acceptor)
        .transpose()
        .map_err(|reason| {
            StartError::Config(crate::config::ConfigError {
                file: config.source.clone(),
                key: "server.tls".to_owned(),
                reason,
            })
        })?;
    let mut tasks = vec![server::spawn(
        listener,
        ingress,
        limits,
        tls,
        shutdown_rx.clone(),
    )];

    let mut admin_addr = None;
    if let Some(admin) = config.server.admin {
        let listener = TcpListener::bind(admin)
            .await
            .map_err(|error| StartError::Bind {
                key: "server.admin",
                addr: admin,
                error,
            })?;
        admin_addr = listener.local_addr().ok();
        tasks.push(admin::spawn(
            listener,
            routes,
            upstreams,
            usage,
            shutdown_rx,
        ));
    }
    tracing::info!(%addr, routes = ?config.routes.iter().map(|r| r.grpc_service.as_str()).collect::<Vec<_>>(), "portico listening");
    Ok(Gateway {
        addr,
        admin_addr,
        shutdown,
        tasks,
        sessions,
        drain_timeout: config.server.drain_timeout,
    })
}

/// How often upstream reachability is checked for the health service.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The gRPC services the gateway answers itself: server reflection (v1 and
/// v1alpha) over the routed services, and grpc.health.v1 reporting each
/// routed service as serving while an endpoint of its upstream is in
/// rotation and reachable.
fn local_grpc_services(
    pool: &DescriptorPool,
    routes: &RouteTable,
    upstreams: &[Arc<egress::upstream::Upstream>],
) -> Result<Vec<(&'static str, LocalService)>, StartError> {
    let mut services: Vec<String> = routes
        .targets()
        .map(|t| t.method.parent_service().full_name().to_owned())
        .collect();
    services.sort();
    services.dedup();

    let schemas = pool.encode_to_vec();
    let reflection = |alpha: bool| -> Result<LocalService, StartError> {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(&schemas)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for s in &services {
            builder = builder.with_service_name(s.clone());
        }
        let fail = |e: tonic_reflection::server::Error| {
            StartError::Upstream(format!("reflection service: {e}"))
        };
        Ok(if alpha {
            LocalService::new(builder.build_v1alpha().map_err(fail)?)
        } else {
            LocalService::new(builder.build_v1().map_err(fail)?)
        })
    };

    let (reporter, health) = tonic_health::server::health_reporter();
    let probes = egress::probe::spawn(upstreams, PROBE_INTERVAL);
    for (i, upstream) in probes.into_iter().enumerate() {
        let names: Vec<String> = routes
            .targets()
            .filter(|t| t.upstream.0 == i)
            .map(|t| t.method.parent_service().full_name().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let reporter = reporter.clone();
        let mut upstream = upstream;
        tokio::spawn(async move {
            loop {
                let status = if *upstream.borrow_and_update() {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                };
                for name in &names {
                    reporter.set_service_status(name, status).await;
                }
                if upstream.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(vec![
        ("/grpc.reflection.v1.ServerReflection/", reflection(false)?),
        (
            "/grpc.reflection.v1alpha.ServerReflection/",
            reflection(true)?,
        ),
        ("/grpc.health.v1.Health/", LocalService::new(health)),
    ])
}

impl Gateway {
    /// Stops accepting, lets requests in flight finish (WebSockets get a
    /// going-away close), and returns when every connection is closed or
    /// `server.drain_timeout` has passed, whichever is first.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let sessions = self.sessions.clone();
        let drained = async move {
            for t in self.tasks {
                let _ = t.await;
            }
            while sessions.load(std::sync::atomic::Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(self.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(drain_timeout = ?self.drain_timeout, "requests still in flight at the drain timeout; closing their connections");
            for a in aborts {
                a.abort();
            }
        }
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down: draining connections");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
