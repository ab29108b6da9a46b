//! An upstream: the set of endpoints behind one name, kept current (DNS,
//! a watched file), health-checked actively and passively, and the loop
//! that makes a call on one of them, retrying elsewhere when that is safe.
//! The protocol-specific part, one attempt on one endpoint, is a closure
//! from the gRPC or HTTP egress.

pub mod config;

pub mod endpoint;
mod health;
pub mod pick;
pub mod retry;

use crate::config::{
    Balance, EndpointSource, HashKey, UpstreamConfig, UpstreamProtocol, WeightedAddr,
};
use crate::envelope::{Envelope, Payload, Reply};
use crate::error::{ErrorKind, GatewayError, Origin};
use endpoint::{now_millis, Endpoint, Pool};
use futures_util::StreamExt;
use pick::Snapshot;
use retry::RetryBudget;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

pub struct Upstream {
    pub config: UpstreamConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    counter: AtomicUsize,
    budget: RetryBudget,
    /// Admitted calls (the circuit breaker's count), shared with the
    /// upstream of the same name this one replaced at a reload, whose calls
    /// still run: the breaker and `/upstreams` count them too.
    in_flight: Arc<AtomicUsize>,
    /// Calls whose stream waits for a connection at its stream cap (shared
    /// across a reload as `in_flight` is).
    pub pending: Arc<AtomicUsize>,
    /// gRPC over TLS: the connector every endpoint's connections use.
    tls: Option<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>>,
    /// Marked whenever a health check's verdict or an ejection takes an
    /// endpoint out of rotation or brings it back, and when the endpoint
    /// set changes, so the reachability probe (the health service,
    /// `/readyz`) looks again at once instead of at its next interval. The
    /// end of an ejection is no event: the probe wakes for it by its clock.
    rotation: tokio::sync::watch::Sender<()>,
}

/// How one attempt failed.
pub struct AttemptError {
    pub error: GatewayError,
    /// The request surely never reached the backend (connection refused, a
    /// stream the server refused or dropped unprocessed on GOAWAY): any call
    /// may be sent again.
    pub unreached: bool,
    /// The failure says the endpoint is sick (connect errors, UNAVAILABLE,
    /// 5xx), as opposed to an answer about the request.
    pub endpoint_fault: bool,
}

impl AttemptError {
    /// Classifies a finished attempt's error by what it says about the endpoint.
    pub fn from_error(error: GatewayError, unreached: bool) -> AttemptError {
        let endpoint_fault = unreached
            || matches!(error.kind, ErrorKind::BackendUnavailable)
            || error.origin == Origin::Backend && error.grpc_code() == tonic::Code::Unavailable;
        AttemptError {
            error,
            unreached,
            endpoint_fault,
        }
    }
}

impl Upstream {
    /// Builds the upstream with its endpoints known at startup (a DNS name
    /// is resolved once before serving) and starts the tasks that keep them
    /// current and checked.
    pub async fn start(config: UpstreamConfig) -> Result<Arc<Upstream>, String> {
        Upstream::start_after(config, None).await
    }

    /// [`Upstream::start`] in place of `previous`, the running upstream of
    /// the same name whose definition changed: its calls in flight stay
    /// counted here until they end.
    pub async fn start_after(
        config: UpstreamConfig,
        previous: Option<&Upstream>,
    ) -> Result<Arc<Upstream>, String> {
        let tls = match &config.tls {
            Some(tls) if config.protocol == UpstreamProtocol::Grpc => Some(
                super::tls::grpc_connector(tls, config.connect_timeout, config.tls_server_name())
                    .map_err(|e| format!("upstreams.{}: TLS: {e}", config.name))?,
            ),
            _ => None,
        };
        let upstream = Arc::new(Upstream {
            tls,
            budget: RetryBudget::new(&config.retry),
            snapshot: RwLock::new(Arc::new(Snapshot::new(Vec::new(), false))),
            counter: AtomicUsize::new(0),
            in_flight: previous.map_or_else(Default::default, |p| p.in_flight.clone()),
            pending: previous.map_or_else(Default::default, |p| p.pending.clone()),
            rotation: tokio::sync::watch::Sender::new(()),
            config,
        });
        match &upstream.config.endpoints {
            EndpointSource::Static(list) | EndpointSource::File { initial: list, .. } => {
                upstream.set_endpoints(list.clone())?;
            }
            EndpointSource::Dns { host, port, .. } => {
                let lookup = tokio::net::lookup_host((host.as_str(), *port));
                match tokio::time::timeout(upstream.config.connect_timeout, lookup).await {
                    Ok(Ok(addrs)) => upstream.set_endpoints(dns_endpoints(addrs))?,
                    Ok(Err(e)) => {
                        tracing::warn!(upstream = %upstream.config.name, %host, error = %e, "the upstream's first DNS lookup failed (at startup, or the reload that changed it); retrying every dns_refresh")
                    }
                    Err(_) => {
                        tracing::warn!(upstream = %upstream.config.name, %host, "the upstream's first DNS lookup timed out (at startup, or the reload that changed it); retrying every dns_refresh")
                    }
                }
            }
        }
        // An endpoint out of rotation for failing its checks stays out
        // across the reload until the new config's checks have answered:
        // a config push must not show a sick instance as ready (`/readyz`,
        // the health service) for the new checks' first round or more.
        if let (Some(previous), Some(_)) = (previous, &upstream.config.health_check) {
            let before = previous.snapshot();
            let mut carried = false;
            for ep in &upstream.snapshot().endpoints {
                let failed = before
                    .endpoints
                    .iter()
                    .any(|old| old.address == ep.address && !old.healthy.load(Ordering::Relaxed));
                if failed {
                    ep.carry_failed_checks();
                    carried = true;
                }
            }
            if carried {
                upstream.rotation_changed();
            }
        }
        spawn_discovery(&upstream);
        health::spawn(&upstream);
        Ok(upstream)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Fires after each change of rotation (see the field).
    pub fn rotation_changes(&self) -> tokio::sync::watch::Receiver<()> {
        self.rotation.subscribe()
    }

    pub(crate) fn rotation_changed(&self) {
        self.rotation.send_replace(());
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the endpoint set. Endpoints that stay keep their connections
    /// and state; calls in flight on removed ones finish on them.
    pub fn set_endpoints(&self, mut list: Vec<WeightedAddr>) -> Result<(), String> {
        list.sort();
        list.dedup_by(|a, b| a.address == b.address);
        let old = self.snapshot();
        let mut endpoints = Vec::with_capacity(list.len());
        let mut new_weights = Vec::new();
        for w in &list {
            match old.endpoints.iter().find(|e| e.address == w.address) {
                Some(e) => {
                    if e.weight() != w.weight {
                        new_weights.push((e.clone(), w.weight));
                    }
                    endpoints.push(e.clone());
                }
                None => endpoints.push(Arc::new(self.endpoint(w)?)),
            }
        }
        // An endpoint whose weight alone changed stays, with its
        // connections, health and ejection.
        for (e, weight) in &new_weights {
            e.reweigh(*weight);
        }
        let same = new_weights.is_empty()
            && endpoints.len() == old.endpoints.len()
            && endpoints
                .iter()
                .zip(&old.endpoints)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return Ok(());
        }
        let hashing = matches!(self.config.balance, Balance::ConsistentHash(_));
        let addresses: Vec<&str> = endpoints.iter().map(|e| e.address.as_str()).collect();
        tracing::info!(upstream = %self.config.name, endpoints = ?addresses, "endpoints changed");
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(Snapshot::new(endpoints, hashing));
        self.rotation_changed();
        Ok(())
    }

    fn endpoint(&self, w: &WeightedAddr) -> Result<Endpoint, String> {
        let pool = match self.config.protocol {
            UpstreamProtocol::Grpc => Some(
                Pool::new(
                    &w.address,
                    self.config.authority().as_deref(),
                    self.config.connect_timeout,
                    &self.config.connection,
                    self.tls.clone(),
                    self.pending.clone(),
                    self.config.circuit_breaker.max_pending,
                )
                .map_err(|e| format!("upstreams.{}: {e}", self.config.name))?,
            ),
            UpstreamProtocol::Http => None,
        };
        Ok(Endpoint::new(w.address.clone(), w.weight, pool))
    }

    /// Refuses a call whose metadata is more than the backend is known to
    /// take: sent, the backend would fail the connection it shares with
    /// other clients' calls (HTTP/2 servers answer an oversized header
    /// block with GOAWAY), not just this call.
    fn check_header_bytes(&self, env: &Envelope) -> Result<(), GatewayError> {
        let limit = self.config.max_request_header_bytes;
        let metadata = crate::headers::header_list_bytes(&env.metadata);
        // The backend counts the whole header block: the fields the gateway
        // writes beside the metadata too.
        let bytes = metadata + sent_beside_metadata(env.target.path.as_str().len());
        if bytes <= limit {
            return Ok(());
        }
        Err(GatewayError::new(
            crate::error::ErrorKind::HeaderBytesTooLarge { limit },
            crate::error::Origin::Client,
            format!(
                "the headers for the backend are {bytes} bytes (each field's name, value and 32 bytes: {metadata} of the call's metadata, the rest the gateway's own fields), over upstreams.{}.max_request_header_bytes ({limit})",
                self.config.name
            ),
        ))
    }

    /// Makes a call: admits it (or sheds it), picks an endpoint, runs
    /// `attempt` on it, and retries on another endpoint when the failure
    /// allows, the budget has room and the deadline has time. `attempt`
    /// reads a unary call's reply to its end, so a backend's failed status
    /// after its headers fails the attempt (retried and counted against
    /// the endpoint like a status sent alone); a streaming reply holds the
    /// call's slots until its stream ends.
    pub async fn call<F, Fut>(
        self: &Arc<Self>,
        env: Envelope,
        attempt: F,
    ) -> Result<Reply, GatewayError>
    where
        F: Fn(Arc<Endpoint>, Envelope) -> Fut,
        Fut: Future<Output = Result<Reply, AttemptError>>,
    {
        self.check_header_bytes(&env)?;
        let admitted = self.admit()?;
        self.budget.deposit();
        let deadline = env.deadline();
        let key = self.hash_key(&env);
        let retry = &self.config.retry;
        let mut env = env;
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let mut retries = 0;
        // The failure a retry answers for, should no endpoint be left for it.
        let mut last_failure: Option<GatewayError> = None;
        loop {
            let (ep, retry_of) = match (self.pick(key, &tried), last_failure.take()) {
                (Ok(ep), retry_of) => (ep, retry_of),
                (Err(_), Some(failure)) => return Err(failure),
                (Err(e), None) => return Err(e),
            };
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // (A client that gave the call no time at all never gets
                    // here: the pipeline's `no_time` layer answered it.)
                    return Err(match tried.is_empty() {
                        // The policies (an identity service, Redis) took it all.
                        true => GatewayError::deadline_exceeded_before("the backend was called"),
                        false => GatewayError::deadline_exceeded(),
                    });
                }
                env.timeout = Some(left);
            }
            let spare = (retries < retry.max_retries)
                .then(|| env.try_clone())
                .flatten();
            let idempotent = env.target.idempotent;
            let unary = env.target.kind == crate::envelope::CallKind::Unary;
            let guard = ep.start();
            let record = env.ctx.record.clone();
            let call = env.ctx.aggregate_call;
            let started = record.attempt(
                &env.target,
                call,
                &ep.address,
                retries + 1,
                retry_of.as_ref(),
            );
            // The backend's spans are children of this attempt's.
            if let Some(parent) = started.traceparent() {
                env.metadata.insert(crate::headers::TRACEPARENT, parent);
                match started.tracestate() {
                    Some(state) => env.metadata.insert(crate::headers::TRACESTATE, state),
                    None => env.metadata.remove(crate::headers::TRACESTATE),
                };
            }
            // A unary attempt's reply has been read to its end (a failed
            // status after headers is a failed attempt); a streaming one
            // holds the call's slots until its stream is done with.
            match attempt(ep.clone(), env).await {
                Ok(mut reply) => {
                    record.attempt_done(started, None, None);
                    ep.record_success();
                    if !unary {
                        let held = (guard, admitted);
                        // A backend lost mid-stream is named as one lost
                        // before the reply is.
                        let upstream = self.config.name.clone();
                        reply.body = Box::pin(reply.body.map(move |frame| {
                            let _ = &held;
                            frame.map_err(|e| naming_upstream(e, &upstream))
                        }));
                    }
                    return Ok(reply);
                }
                Err(mut failed) => {
                    drop(guard);
                    failed.error = naming_upstream(failed.error, &self.config.name);
                    let ejected = if failed.endpoint_fault {
                        self.on_failure(&ep)
                    } else {
                        ep.record_success();
                        None
                    };
                    let shed = matches!(failed.error.kind, ErrorKind::Overloaded { .. });
                    if failed.unreached || shed {
                        record.attempt_unsent(call);
                    }
                    record.attempt_done(started, Some(&failed.error), ejected);
                    // A call shed because this endpoint's connections are
                    // full was never sent: it goes at once (no backoff, no
                    // budget) to an endpoint not tried yet, which may have
                    // a free stream, and fails when none is left. It is
                    // never retried otherwise: sent again after a backoff,
                    // it would wait instead of failing fast.
                    if shed {
                        tried.push(ep);
                        let now = now_millis();
                        let untried = self.snapshot().endpoints.iter().any(|e| {
                            e.is_available(now) && !tried.iter().any(|t| std::ptr::eq(&**t, &**e))
                        });
                        match spare {
                            Some(next) if untried => {
                                // A move counts as a retry: bounded by
                                // max_retries, numbered in the access log.
                                retries += 1;
                                last_failure = Some(failed.error);
                                env = next;
                                continue;
                            }
                            _ => return Err(failed.error),
                        }
                    }
                    let retryable = failed.unreached
                        || idempotent && retry.retry_on.contains(&failed.error.grpc_code());
                    let Some(next) = spare.filter(|_| retryable) else {
                        return Err(failed.error);
                    };
                    if !self.budget.withdraw() {
                        tracing::debug!(upstream = %self.config.name, "retry budget spent; not retrying");
                        return Err(failed.error);
                    }
                    let wait = retry::backoff(retry, retries);
                    if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                        return Err(failed.error);
                    }
                    tracing::info!(upstream = %self.config.name, endpoint = %ep.address, error = %failed.error.message, retry = retries + 1, "retrying the call (on another endpoint when one is in rotation)");
                    tokio::time::sleep(wait).await;
                    tried.push(ep);
                    retries += 1;
                    last_failure = Some(failed.error);
                    env = next;
                }
            }
        }
    }

    /// The circuit breaker: past `max_requests` calls at once, fail fast.
    fn admit(self: &Arc<Self>) -> Result<Admitted, GatewayError> {
        let max = self.config.circuit_breaker.max_requests;
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded(&self.config.name, "max_requests"));
        }
        Ok(Admitted(self.clone()))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// What the admin port shows: each endpoint's state and load.
    /// Endpoints calls may go to now: healthy and not ejected.
    pub fn in_rotation(&self) -> usize {
        self.snapshot().in_rotation()
    }

    pub fn status_json(&self) -> serde_json::Value {
        let now = now_millis();
        let endpoints: Vec<serde_json::Value> = self
            .snapshot()
            .endpoints
            .iter()
            .map(|e| {
                serde_json::json!({
                    "address": e.address,
                    "weight": e.weight(),
                    "healthy": e.healthy.load(Ordering::Relaxed),
                    "ejected": e.is_ejected(now),
                    "ejections": e.ejected_total.load(Ordering::Relaxed),
                    "in_flight": e.in_flight.load(Ordering::Relaxed),
                    "connections": e.pool.as_ref().map_or(0, Pool::connections),
                })
            })
            .collect();
        serde_json::json!({
            "name": self.config.name,
            "in_flight": self.in_flight(),
            "pending": self.pending.load(Ordering::Relaxed),
            "endpoints": endpoints,
        })
    }

    /// An endpoint for a call, never one already `tried` when another will
    /// do. Unavailable endpoints (ejected, failing checks) are skipped unless
    /// fewer than `panic_threshold_percent` are available: then all are used,
    /// as a mostly-sick set is likelier wrong about itself than all down.
    fn pick(
        &self,
        key: Option<u64>,
        tried: &[Arc<Endpoint>],
    ) -> Result<Arc<Endpoint>, GatewayError> {
        let snap = self.snapshot();
        let total = snap.endpoints.len();
        if total == 0 {
            return Err(GatewayError::new(
                ErrorKind::BackendUnavailable,
                Origin::Gateway,
                format!("upstream {} has no endpoints", self.config.name),
            ));
        }
        let now = now_millis();
        let available = snap
            .endpoints
            .iter()
            .filter(|e| e.is_available(now))
            .count();
        let panic = available * 100 < total * self.config.outlier.panic_threshold_percent as usize;
        let ok = |e: &Endpoint| panic || e.is_available(now);
        let fresh = |e: &Endpoint| !tried.iter().any(|t| std::ptr::eq(&**t, e));
        let choose = |usable: &dyn Fn(&Endpoint) -> bool| -> Option<Arc<Endpoint>> {
            match (&self.config.balance, key) {
                (Balance::RoundRobin, _) => snap.round_robin(&self.counter, usable),
                (Balance::ConsistentHash(_), Some(k)) => snap.by_hash(k, usable),
                _ => snap.least_request(usable),
            }
            .cloned()
        };
        // Ask for an untried endpoint only when one exists: a round-robin
        // ask that finds none still advances the counter, and two advances
        // a retry made a two-endpoint upstream retry the same endpoint
        // every time. (The fallback runs only if the untried one left
        // rotation in between.)
        let untried = !tried.is_empty() && snap.endpoints.iter().any(|e| ok(e) && fresh(e));
        let pick = if untried {
            choose(&|e| ok(e) && fresh(e)).or_else(|| choose(&ok))
        } else {
            choose(&ok)
        };
        pick.ok_or_else(|| {
            GatewayError::new(
                ErrorKind::BackendUnavailable,
                Origin::Gateway,
                format!("upstream {} has no available endpoint", self.config.name),
            )
        })
    }

    /// Passive outlier detection: after `consecutive_failures`, the endpoint
    /// is ejected, unless that would eject more than `max_ejection_percent`.
    /// Counts a failure against `ep`; returns how long it is ejected for,
    /// when this failure ejected it.
    fn on_failure(&self, ep: &Endpoint) -> Option<std::time::Duration> {
        let o = &self.config.outlier;
        let failures = ep.record_failure();
        if failures < o.consecutive_failures {
            return None;
        }
        let snap = self.snapshot();
        let now = now_millis();
        let ejected = snap.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        if (ejected + 1) * 100 > snap.endpoints.len() * o.max_ejection_percent as usize {
            // Once per run of failures, not on every failed call of it.
            if failures == o.consecutive_failures {
                tracing::warn!(upstream = %self.config.name, endpoint = %ep.address, "endpoint keeps failing but the ejection limit is reached; it stays in rotation (said once until it succeeds again)");
            }
            return None;
        }
        // Re-ejecting an endpoint already out (its calls in panic mode)
        // changes no one's rotation.
        let was = ep.is_available(now);
        let time = ep.eject(o.base_ejection_time);
        if was {
            self.rotation_changed();
        }
        tracing::warn!(upstream = %self.config.name, endpoint = %ep.address, ejected_for = ?time, "endpoint ejected after {} consecutive failures", o.consecutive_failures);
        Some(time)
    }

    fn hash_key(&self, env: &Envelope) -> Option<u64> {
        let Balance::ConsistentHash(key) = &self.config.balance else {
            return None;
        };
        match key {
            HashKey::Header(h) => env.ctx.headers.get(h).map(|v| pick::hash(v.as_bytes())),
            HashKey::Principal => env
                .ctx
                .principal
                .as_ref()
                .map(|p| pick::hash(p.subject.as_bytes())),
            HashKey::Field(_) => {
                let fields = env.target.hash_field.as_ref()?;
                let Payload::Unary(bytes) = &env.payload else {
                    return None;
                };
                let mut msg = prost_reflect::DynamicMessage::decode(
                    env.target.method.input(),
                    bytes.as_ref(),
                )
                .ok()?;
                let (last, path) = fields.split_last()?;
                for f in path {
                    msg = match msg.get_field(f).into_owned() {
                        prost_reflect::Value::Message(m) => m,
                        _ => return None,
                    };
                }
                if !msg.has_field(last) {
                    return None;
                }
                Some(match msg.get_field(last).as_ref() {
                    prost_reflect::Value::String(s) => pick::hash(s.as_bytes()),
                    prost_reflect::Value::Bytes(b) => pick::hash(b),
                    other => pick::hash(format!("{other:?}").as_bytes()),
                })
            }
        }
    }
}

/// A call counted by the circuit breaker until dropped.
struct Admitted(Arc<Upstream>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The error for a call shed by a circuit-breaker limit.
pub fn overloaded(upstream: &str, limit: &'static str) -> GatewayError {
    GatewayError::new(
        ErrorKind::Overloaded { limit },
        Origin::Gateway,
        format!("upstream {upstream} is at its circuit_breaker.{limit} limit; the call was shed, not queued"),
    )
}

/// Keeps DNS-named and file-listed endpoints current. The task ends when
/// the upstream is dropped.
fn spawn_discovery(upstream: &Arc<Upstream>) {
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    match upstream.config.endpoints.clone() {
        EndpointSource::Static(_) => {}
        EndpointSource::Dns {
            host,
            port,
            refresh,
        } => {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(refresh).await;
                    let resolved = tokio::net::lookup_host((host.as_str(), port)).await;
                    let Some(upstream) = weak.upgrade() else {
                        return;
                    };
                    match resolved {
                        Ok(addrs) => {
                            if let Err(e) = upstream.set_endpoints(dns_endpoints(addrs)) {
                                tracing::warn!(upstream = %upstream.config.name, error = %e, "bad DNS endpoint");
                            }
                        }
                        Err(e) => {
                            // Said as it is: with none known, calls fail
                            // until a lookup succeeds.
                            let known = upstream.snapshot().endpoints.len();
                            if known == 0 {
                                tracing::warn!(upstream = %upstream.config.name, %host, error = %e, "DNS lookup failed; the upstream has no endpoints until a lookup succeeds")
                            } else {
                                tracing::warn!(upstream = %upstream.config.name, %host, error = %e, known, "DNS lookup failed; keeping the known endpoints")
                            }
                        }
                    }
                }
            });
        }
        EndpointSource::File { path, .. } => {
            tokio::spawn(async move {
                let mut last = read_endpoints_file(&path).await;
                loop {
                    tokio::time::sleep(FILE_POLL).await;
                    let Some(upstream) = weak.upgrade() else {
                        return;
                    };
                    let now = read_endpoints_file(&path).await;
                    if now.is_none() || now == last {
                        continue;
                    }
                    let text = now.clone().unwrap_or_default();
                    match crate::config::parse_endpoints_file(&text)
                        .and_then(|list| upstream.set_endpoints(list))
                    {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(upstream = %upstream.config.name, file = %path.display(), error = %e, "endpoints file not applied; keeping the known endpoints")
                        }
                    }
                    last = now;
                }
            });
        }
    }
}

fn dns_endpoints(addrs: impl Iterator<Item = std::net::SocketAddr>) -> Vec<WeightedAddr> {
    addrs
        .map(|a| WeightedAddr {
            address: a.to_string(),
            weight: 1,
        })
        .collect()
}

/// How often an endpoints file is looked at.
const FILE_POLL: Duration = Duration::from_millis(500);

/// Reads an endpoints file off the runtime's threads: a slow or network
/// filesystem must not stall the calls that share the thread.
async fn read_endpoints_file(path: &std::path::Path) -> Option<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || crate::config::read_text(&path).ok())
        .await
        .ok()
        .flatten()
}

/// What the header fields the gateway writes for a call to `path` beside
/// its metadata count against a backend's header limit (name, value and 32
/// bytes each, as HTTP/2 counts): the pseudo-headers (an `:authority` of
/// up to 64 bytes), `content-type`, `te`, `grpc-timeout`, `user-agent`,
/// `grpc-accept-encoding` and a `traceparent`, at their longest.
fn sent_beside_metadata(path: usize) -> usize {
    const FIELD: usize = 32;
    let pseudo = (7 + 4 + FIELD) + (7 + 5 + FIELD) + (5 + path + FIELD) + (10 + 64 + FIELD);
    let own = (12 + 16 + FIELD)
        + (2 + 8 + FIELD)
        + (12 + 10 + FIELD)
        + (10 + 24 + FIELD)
        + (20 + 8 + FIELD)
        + (11 + 55 + FIELD);
    pseudo + own
}

/// A backend that could not be reached, named by its upstream: the
/// operator's first question (the endpoint is in the access log and the
/// retry line, not told to clients).
fn naming_upstream(mut err: GatewayError, upstream: &str) -> GatewayError {
    if matches!(err.kind, ErrorKind::BackendUnavailable) {
        err.message = err.message.replacen(
            "backend unavailable: ",
            &format!("backend unavailable (upstream {upstream}): "),
            1,
        );
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// An HTTP upstream (no connections are made) over `n` endpoints.
    async fn upstream(n: usize, outlier: &str) -> Arc<Upstream> {
        let endpoints: Vec<String> = (0..n).map(|i| format!("\"10.0.0.{i}:80\"")).collect();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nprotocol = \"http\"\nendpoints = [{}]\n[upstreams.u.outlier_detection]\n{outlier}\n[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"u\"\n",
            endpoints.join(", ")
        );
        let config = Config::from_toml(&text).unwrap();
        Upstream::start(config.upstreams[0].clone()).await.unwrap()
    }

    #[tokio::test]
    async fn ejection_stops_at_the_configured_share() {
        let u = upstream(4, "consecutive_failures = 1\nmax_ejection_percent = 50").await;
        let eps = u.snapshot().endpoints.clone();
        for e in &eps {
            u.on_failure(e);
        }
        let now = now_millis();
        let ejected = eps.iter().filter(|e| e.is_ejected(now)).count();
        assert_eq!(ejected, 2, "half of four");
    }

    #[tokio::test]
    async fn below_the_panic_threshold_every_endpoint_takes_calls() {
        let u = upstream(4, "panic_threshold_percent = 50").await;
        let eps = u.snapshot().endpoints.clone();
        eps[0].healthy.store(false, Ordering::Relaxed);
        // Three of four available: the sick one is skipped.
        for _ in 0..8 {
            assert_ne!(u.pick(None, &[]).unwrap().address, eps[0].address);
        }
        // One of four available (25% < 50%): all are used again.
        eps[1].healthy.store(false, Ordering::Relaxed);
        eps[2].healthy.store(false, Ordering::Relaxed);
        let picked: std::collections::HashSet<String> = (0..8)
            .map(|_| u.pick(None, &[]).unwrap().address.clone())
            .collect();
        assert_eq!(picked.len(), 4, "{picked:?}");
    }

    /// A call to Library.GetShelf, for `Upstream::call` with an attempt
    /// the test scripts.
    fn get_shelf() -> Envelope {
        let method = crate::fuzzing::demo_pool()
            .get_service_by_name("portico.demo.v1.Library")
            .unwrap()
            .methods()
            .find(|m| m.name() == "GetShelf")
            .unwrap();
        let target = Arc::new(crate::envelope::Target::for_method(method));
        Envelope {
            target,
            metadata: http::HeaderMap::new(),
            payload: Payload::Unary(bytes::Bytes::new()),
            timeout: None,
            ctx: crate::envelope::RequestCtx::new(None, Arc::new(http::HeaderMap::new())),
        }
    }

    #[tokio::test]
    async fn a_call_shed_on_a_full_endpoint_goes_to_another_at_once() {
        let u = upstream(2, "").await;
        let tried = Arc::new(std::sync::Mutex::new(Vec::new()));
        let attempts = tried.clone();
        // The first endpoint tried has no free stream; the other has.
        let reply = u
            .call(get_shelf(), move |ep, _env| {
                let attempts = attempts.clone();
                async move {
                    let mut seen = attempts.lock().unwrap();
                    seen.push(ep.address.clone());
                    if seen.len() == 1 {
                        Err(AttemptError {
                            error: overloaded("u", "max_pending"),
                            unreached: false,
                            endpoint_fault: false,
                        })
                    } else {
                        Ok(Reply::single(http::HeaderMap::new(), bytes::Bytes::new()))
                    }
                }
            })
            .await;
        assert!(reply.is_ok(), "{:?}", reply.err());
        let seen = tried.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_ne!(seen[0], seen[1], "another endpoint, not the full one again");

        // Every endpoint full: the call fails at once with the shed.
        let outcome = u
            .call(get_shelf(), |_ep, _env| async {
                Err::<Reply, _>(AttemptError {
                    error: overloaded("u", "max_pending"),
                    unreached: false,
                    endpoint_fault: false,
                })
            })
            .await;
        assert!(matches!(
            outcome.map(|_| ()).unwrap_err().kind,
            ErrorKind::Overloaded {
                limit: "max_pending"
            }
        ));
    }

    /// A reload that changes only an endpoint's weight keeps the endpoint:
    /// an ejected one stays out, an unhealthy one stays unhealthy, and the
    /// new weights shape the turns.
    #[tokio::test]
    async fn a_new_weight_keeps_the_endpoints_health_and_ejection() {
        // Six, so two out leave the rest above the panic threshold.
        let u = upstream(
            6,
            "consecutive_failures = 1\nmax_ejection_percent = 100\nbase_ejection_time = \"60s\"",
        )
        .await;
        let before = u.snapshot().endpoints.clone();
        assert!(u.on_failure(&before[1]).is_some(), "ejected");
        before[2].healthy.store(false, Ordering::Relaxed);
        let weighted = |weights: [u32; 6]| {
            weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| WeightedAddr {
                    address: format!("10.0.0.{i}:80"),
                    weight,
                })
                .collect::<Vec<_>>()
        };
        u.set_endpoints(weighted([1, 5, 5, 1, 1, 1])).unwrap();
        let after = u.snapshot();
        for (a, b) in after.endpoints.iter().zip(&before) {
            assert!(Arc::ptr_eq(a, b), "{} was replaced", a.address);
        }
        let weights: Vec<u32> = after.endpoints.iter().map(|e| e.weight()).collect();
        assert_eq!(weights, [1, 5, 5, 1, 1, 1]);
        assert!(after.endpoints[1].is_ejected(now_millis()));
        assert!(!after.endpoints[2].healthy.load(Ordering::Relaxed));
        for _ in 0..30 {
            let picked = u.pick(None, &[]).unwrap();
            assert!(
                !["10.0.0.1:80", "10.0.0.2:80"].contains(&picked.address.as_str()),
                "{} is out of rotation",
                picked.address
            );
        }
        // Back in rotation, its weight counts: 5 of the 9 units in rotation.
        after.endpoints[2].healthy.store(true, Ordering::Relaxed);
        let to_2 = (0..90)
            .filter(|_| u.pick(None, &[]).unwrap().address == "10.0.0.2:80")
            .count();
        assert!((40..=60).contains(&to_2), "{to_2} of 90");
    }

    #[tokio::test]
    async fn a_retry_avoids_the_endpoints_already_tried() {
        let u = upstream(2, "").await;
        let first = u.pick(None, &[]).unwrap();
        for _ in 0..4 {
            let again = u.pick(None, std::slice::from_ref(&first)).unwrap();
            assert_ne!(again.address, first.address);
        }
    }

    /// The reachability probe behind the health service and `/readyz`
    /// looks again when rotation changes, not at its interval (a minute
    /// here): an ejection, its end, a new endpoint list.
    #[tokio::test]
    async fn the_probe_looks_again_when_rotation_changes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nprotocol = \"http\"\nendpoints = [\"{}\"]\n[upstreams.u.outlier_detection]\nconsecutive_failures = 1\nmax_ejection_percent = 100\nbase_ejection_time = \"2s\"\n[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"u\"\n",
            listener.local_addr().unwrap()
        );
        let config = Config::from_toml(&text).unwrap();
        let u = Upstream::start(config.upstreams[0].clone()).await.unwrap();
        let mut reachable =
            crate::egress::probe::spawn(std::slice::from_ref(&u), Duration::from_secs(60))
                .remove(0);
        let mut next = async |want: bool| {
            let seen = tokio::time::timeout(
                Duration::from_secs(10),
                reachable.wait_for(|r| *r == Some(want)),
            )
            .await;
            assert!(
                seen.is_ok(),
                "the probe said {want} well before its interval"
            );
        };
        next(true).await;
        let ep = u.snapshot().endpoints[0].clone();
        assert!(u.on_failure(&ep).is_some(), "ejected");
        next(false).await;
        // The ejection ends by the clock (2 s, long enough for the probe to
        // have said false on a loaded machine); the probe wakes for it.
        next(true).await;
        // A new endpoint list: nothing listens there.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = dead.local_addr().unwrap().to_string();
        drop(dead);
        u.set_endpoints(vec![WeightedAddr { address, weight: 1 }])
            .unwrap();
        next(false).await;
        drop(listener);
    }
}
