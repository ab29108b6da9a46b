//! The one place that wires ingress -> policy pipeline -> egress, binds the
//! sockets, and shuts everything down. What config and schemas produce is a
//! [`generation::Generation`]; [`reload`] swaps it while calls are in flight.

pub mod generation;
pub mod reload;

use crate::config::{Config, ConfigError};
use crate::descriptors::{self, SchemaError};
use crate::ingress::dispatch::Page;
use crate::ingress::server;
use crate::routes::aggregate::AggregateTable;
use crate::routes::RouteTable;
use crate::{admin, policy};
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
        /// The config file that names the address; empty for one the
        /// gateway chose itself.
        file: String,
        key: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    Upstream(String),
    /// A gateway started from an inline config has no file to read again.
    NoConfigFile,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Each names its file and key already: written as every
            // other config error is, `FILE: key: reason`.
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Schema(e) => write!(f, "{e}"),
            StartError::Bind {
                file,
                key,
                addr,
                error,
            } if !file.is_empty() => {
                write!(f, "{file}: {key}: cannot listen on {addr}: {error}")
            }
            StartError::Bind {
                key, addr, error, ..
            } => {
                write!(f, "cannot listen on {addr} ({key}): {error}")
            }
            StartError::Upstream(e) => write!(f, "upstream error: {e}"),
            StartError::NoConfigFile => write!(
                f,
                "the gateway was started from an inline config: there is no file to reload"
            ),
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
    load_with_stats(config, &|_, _| Arc::default()).await
}

/// As [`load`], with each routed method's counters taken from `stats`.
pub async fn load_with_stats(
    config: Config,
    stats: &(dyn Fn(&str, &str) -> Arc<crate::observe::call_stats::CallStats> + Sync),
) -> Result<Loaded, StartError> {
    let pool = descriptors::load(&config).await?;
    let routes = RouteTable::build_with_stats(&config, &pool, stats)?;
    let aggregates = AggregateTable::build(&config, &routes)?;
    if let Some(tls) = &config.server.tls {
        // Checked here too, so `portico check` catches a key that does not fit.
        crate::ingress::tls::acceptor(tls).map_err(|(key, reason)| crate::config::ConfigError {
            file: config.source.clone(),
            key: format!("server.tls.{key}"),
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
                .map_err(|(at, reason)| {
                    StartError::Config(crate::config::ConfigError {
                        file: config.source.clone(),
                        key: match at {
                            Some(at) => format!("authenticators.{}.{at}", a.name),
                            None => format!("authenticators.{}", a.name),
                        },
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
    /// The generation being served, and how to replace it.
    pub live: Arc<reload::Live>,
    shutdown: watch::Sender<bool>,
    /// Told at the drain timeout: the main port's connections still open
    /// are cut, and their tasks awaited until each has let go of its calls.
    cut: watch::Sender<bool>,
    /// The main port's task, which ends once every connection has.
    serving: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    /// The admin port's task, told to stop once the drain is over (it
    /// serves through it), and the telling.
    admin: Option<JoinHandle<()>>,
    stop_admin: watch::Sender<bool>,
    drain_timeout: Duration,
}

/// Loads everything, binds the sockets and starts serving.
pub async fn start(config: Config) -> Result<Gateway, StartError> {
    start_with_pages(config, Vec::new()).await
}

/// As [`start`], also serving static pages on the main port.
pub async fn start_with_pages(config: Config, pages: Vec<Page>) -> Result<Gateway, StartError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let carry = generation::Carry::new(pages, shutdown_rx.clone());
    let loaded = load_with_stats(config, &|path, upstream| carry.stats(path, upstream)).await?;
    let first = generation::build(loaded, &carry).await?;
    let listen = first.config.server.listen;
    let admin = first.config.server.admin;
    let limits = first.config.server.limits.clone();
    let drain_timeout = first.config.server.drain_timeout;
    let route_names: Vec<String> = first
        .config
        .routes
        .iter()
        .map(|r| r.grpc_service.clone())
        .collect();

    let source = first.config.source.clone();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| StartError::Bind {
            file: source.clone(),
            key: "server.listen",
            addr: listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| StartError::Bind {
        file: source.clone(),
        key: "server.listen",
        addr: listen,
        error,
    })?;
    if let Some(f) = &first.fleet {
        f.set_listen(&addr.to_string());
    }
    let live = reload::Live::new(first, carry);
    // Reload triggers first: a config change or a SIGHUP is seen from the
    // moment the port answers.
    let tasks = vec![reload::spawn_triggers(live.clone(), shutdown_rx.clone())];
    let (cut, cut_rx) = watch::channel(false);
    let serving = server::spawn(listener, live.clone(), limits, shutdown_rx.clone(), cut_rx);

    let mut admin_addr = None;
    let (stop_admin, stop_admin_rx) = watch::channel(false);
    let mut admin_task = None;
    if let Some(admin) = admin {
        let listener = TcpListener::bind(admin)
            .await
            .map_err(|error| StartError::Bind {
                file: source.clone(),
                key: "server.admin",
                addr: admin,
                error,
            })?;
        admin_addr = listener.local_addr().ok();
        admin_task = Some(admin::spawn(
            listener,
            live.clone(),
            shutdown_rx.clone(),
            stop_admin_rx,
        ));
    }
    // The addresses as bound: with port 0 in the config, this line is
    // where an operator finds them.
    match admin_addr {
        Some(admin) => tracing::info!(%addr, %admin, routes = ?route_names, "portico listening"),
        None => tracing::info!(%addr, routes = ?route_names, "portico listening"),
    }
    Ok(Gateway {
        addr,
        admin_addr,
        live,
        shutdown,
        cut,
        serving,
        tasks,
        admin: admin_task,
        stop_admin,
        drain_timeout,
    })
}

impl Gateway {
    /// Stops accepting, lets requests in flight finish (WebSockets get a
    /// going-away close), and returns when every connection is closed or
    /// `server.drain_timeout` has passed, whichever is first.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let sessions = self.live.carry.sessions.clone();
        let drained = async {
            let _ = (&mut self.serving).await;
            for t in &mut self.tasks {
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
            // The main port's task cuts its connections and waits until
            // each is dropped, so every call cut there has finished its
            // record (its access-log line) before the log is closed below.
            // A handle polled again once it has answered panics: only the
            // tasks still running are waited for.
            let _ = self.cut.send(true);
            if !self.serving.is_finished()
                && tokio::time::timeout(Duration::from_secs(5), &mut self.serving)
                    .await
                    .is_err()
            {
                self.serving.abort();
            }
            for t in self.tasks.iter_mut().filter(|t| !t.is_finished()) {
                t.abort();
                let _ = t.await;
            }
        }
        // The calls are over: their access-log lines reach the file, and
        // their spans the collector (within one export's time).
        let sinks = self.live.current().ingress.rest.edge.sinks.clone();
        if let Some(log) = sinks.log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
        if let Some(tracing) = &sinks.tracing {
            tracing.flush().await;
        }
        let _ = self.stop_admin.send(true);
        if let Some(admin) = self.admin.take() {
            let _ = admin.await;
        }
    }

    /// Answers the SIGHUPs [`HeldHangups`] held while the gateway started:
    /// one reload, since the config read at startup may predate the change
    /// the signal was sent for.
    pub fn answer_held_hangups(&self, mut held: HeldHangups) {
        #[cfg(unix)]
        if let Some(signal) = held.0.as_mut() {
            use futures_util::FutureExt;
            if signal.recv().now_or_never().is_some() {
                tracing::info!("SIGHUP while starting: reloading the config");
                let live = self.live.clone();
                tokio::spawn(async move { live.reload().await });
            }
        }
        #[cfg(not(unix))]
        let _ = &mut held;
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down: draining connections");
        self.shutdown().await;
    }
}

/// SIGHUPs sent while the gateway starts (loading schemas may wait on
/// reflection for seconds): the signal's default action ends the process,
/// so from the first moment of `serve` they are held here, then answered
/// by [`Gateway::answer_held_hangups`].
pub struct HeldHangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

/// Starts holding SIGHUPs (call it first, inside the runtime).
pub fn hold_hangups() -> HeldHangups {
    #[cfg(unix)]
    return HeldHangups(
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
    );
    #[cfg(not(unix))]
    HeldHangups()
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
