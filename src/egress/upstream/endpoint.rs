//! One backend instance: its address and weight, the load it carries, what
//! the gateway knows of its health, and (for gRPC) its HTTP/2 connections.

use crate::config::{ConnectionConfig, BACKEND_HEADER_LIST_BYTES};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint as TonicEndpoint};

/// Milliseconds since the process's first look at the clock: lets ejection
/// deadlines live in atomics, read on every pick without a lock.
pub fn now_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

pub struct Endpoint {
    /// `host:port` as configured, or `ip:port` from DNS.
    pub address: String,
    /// Its share of calls; a reload that changes only this keeps the rest
    /// of the endpoint (its connections, health and ejection).
    weight: AtomicU32,
    /// Calls on this endpoint now (streams count until they end).
    pub in_flight: AtomicUsize,
    /// Verdict of the active health check; true when there is none.
    pub healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    /// Active-check streaks, towards the healthy/unhealthy thresholds.
    pub check_successes: AtomicU32,
    pub check_failures: AtomicU32,
    /// Its `healthy: false` was carried over from the upstream a reload
    /// replaced: the first check under the new config decides it.
    pub verdict_carried: AtomicBool,
    /// Ejected by outlier detection until this instant (`now_millis`); 0: never.
    ejected_until: AtomicU64,
    /// How many times in a row it was ejected; each ejection lasts longer.
    ejections: AtomicU32,
    /// Ejections over its life (the admin port's figure).
    pub ejected_total: AtomicU64,
    /// gRPC only: the connection pool.
    pub pool: Option<Pool>,
}

impl Endpoint {
    pub fn new(address: String, weight: u32, pool: Option<Pool>) -> Endpoint {
        Endpoint {
            address,
            weight: AtomicU32::new(weight),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            check_successes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            verdict_carried: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            ejected_total: AtomicU64::new(0),
            pool,
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn reweigh(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// When the ejection in force at `now` ends (`now_millis`), if any.
    pub fn ejection_ends(&self, now: u64) -> Option<u64> {
        Some(self.ejected_until.load(Ordering::Relaxed)).filter(|&t| t > now)
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Out of rotation, as the endpoint it replaces (same address, the
    /// upstream before a reload changed its settings) was for failing its
    /// checks, until the first check under the new config answers.
    pub fn carry_failed_checks(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        self.verdict_carried.store(true, Ordering::Relaxed);
    }

    /// Healthy and not ejected.
    pub fn is_available(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_ejected(now)
    }

    /// A call went through: the failure streak is over.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 && !self.is_ejected(now_millis()) {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A call failed in a way that is the endpoint's fault; returns the new
    /// streak length.
    pub fn record_failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Takes the endpoint out of rotation for `base` times the number of
    /// ejections in a row (at most ten times `base`).
    pub fn eject(&self, base: Duration) -> Duration {
        self.ejected_total.fetch_add(1, Ordering::Relaxed);
        let n = (self.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(10);
        let time = base * n;
        self.ejected_until
            .store(now_millis() + time.as_millis() as u64, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        time
    }

    /// Counts a call on this endpoint until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// An in-flight call on an endpoint.
pub struct InFlight(pub Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An endpoint's HTTP/2 connections. A call takes the first connection
/// below `max_streams_per_connection`; when all are at the cap, another
/// connection is opened, up to `max_connections_per_endpoint`, after which
/// the least loaded one queues the stream.
pub struct Pool {
    endpoint: TonicEndpoint,
    connections: RwLock<Vec<Arc<Connection>>>,
    max_streams: usize,
    max_connections: usize,
    /// The upstream's count of streams queued behind a full pool.
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    /// TLS to the endpoint, when the upstream asks for it.
    tls: Option<HttpsConnector<HttpConnector>>,
    /// Plain text to the endpoint otherwise.
    h2c: crate::egress::h2c::Connector,
    /// The pool's connections whose sockets are open.
    open: Arc<AtomicUsize>,
}

pub struct Connection {
    pub channel: Channel,
    streams: AtomicUsize,
}

/// A stream on a pooled connection; releases its slot (and its place in
/// the pending count, if it had to queue) on drop.
pub struct StreamSlot {
    connection: Arc<Connection>,
    queued: Option<Arc<AtomicUsize>>,
}

impl StreamSlot {
    pub fn channel(&self) -> Channel {
        self.connection.channel.clone()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.connection.streams.fetch_sub(1, Ordering::Relaxed);
        if let Some(q) = &self.queued {
            q.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Pool {
    /// `authority`: what calls carry as `:authority` instead of `address`.
    pub fn new(
        address: &str,
        authority: Option<&str>,
        connect_timeout: Duration,
        c: &ConnectionConfig,
        tls: Option<HttpsConnector<HttpConnector>>,
        pending: Arc<AtomicUsize>,
        max_pending: usize,
    ) -> Result<Pool, String> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = TonicEndpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| format!("bad endpoint {address}: {e}"))?
            .tcp_nodelay(true);
        // tonic bounds a connector of its caller's by wrapping every
        // connection's reads and writes in a timeout layer, a cost on each
        // call; the plain-text connector bounds its TCP connect itself.
        if tls.is_some() {
            endpoint = endpoint.connect_timeout(connect_timeout);
        }
        if let Some(authority) = authority {
            let origin = format!("{scheme}://{authority}")
                .parse()
                .map_err(|e| format!("bad authority {authority}: {e}"))?;
            endpoint = endpoint.origin(origin);
        }
        if let Some(interval) = c.keepalive_interval {
            // Only while calls are open: stock gRPC servers refuse pings on
            // a connection without calls (GOAWAY "too many pings").
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(c.keepalive_timeout)
                .keep_alive_while_idle(false);
        }
        let endpoint = endpoint
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .http2_max_header_list_size(BACKEND_HEADER_LIST_BYTES);
        let pool = Pool {
            connections: RwLock::new(Vec::new()),
            max_streams: c.max_streams_per_connection,
            max_connections: c.max_connections_per_endpoint,
            pending,
            max_pending,
            endpoint,
            tls,
            h2c: crate::egress::h2c::Connector::new(connect_timeout),
            open: Arc::new(AtomicUsize::new(0)),
        };
        let first = Arc::new(Connection {
            channel: pool.connect(),
            streams: AtomicUsize::new(0),
        });
        pool.connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(first);
        Ok(pool)
    }

    /// A new lazily-connecting channel: plain h2c, or TLS through the
    /// upstream's connector.
    fn connect(&self) -> Channel {
        use crate::egress::counted::Counting;
        let open = self.open.clone();
        match &self.tls {
            Some(connector) => self
                .endpoint
                .connect_with_connector_lazy(Counting::new(connector.clone(), open)),
            None => self
                .endpoint
                .connect_with_connector_lazy(Counting::new(self.h2c.clone(), open)),
        }
    }

    /// Any connection (for health checks).
    pub fn any(&self) -> Channel {
        self.connections.read().unwrap_or_else(|e| e.into_inner())[0]
            .channel
            .clone()
    }

    /// Connections open now: a broken one no longer counts, though its
    /// channel stays in the pool to reconnect on its next call.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A stream slot; `None` when every connection is full and the
    /// upstream already has `max_pending` streams queued.
    pub fn stream(&self) -> Option<StreamSlot> {
        let ready = |c: &Arc<Connection>| StreamSlot {
            connection: c.clone(),
            queued: None,
        };
        {
            let conns = self.connections.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = conns.iter().find(|c| self.try_take(c)) {
                return Some(ready(c));
            }
        }
        let mut conns = self.connections.write().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conns.iter().find(|c| self.try_take(c)) {
            return Some(ready(c));
        }
        if conns.len() < self.max_connections {
            tracing::debug!(endpoint = %self.endpoint.uri(), connections = conns.len() + 1, "every connection is at its stream cap; opening another");
            let c = Arc::new(Connection {
                channel: self.connect(),
                streams: AtomicUsize::new(1),
            });
            conns.push(c.clone());
            return Some(ready(&c));
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let least = conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed))
            .expect("a pool has a connection")
            .clone();
        least.streams.fetch_add(1, Ordering::Relaxed);
        Some(StreamSlot {
            connection: least,
            queued: Some(self.pending.clone()),
        })
    }

    fn try_take(&self, c: &Connection) -> bool {
        c.streams
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max_streams).then_some(n + 1)
            })
            .is_ok()
    }
}
