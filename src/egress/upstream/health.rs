//! Active health checks: every `interval`, each endpoint is asked directly
//! (grpc.health.v1 `Check` for gRPC upstreams, `GET path` for HTTP ones).
//! `unhealthy_threshold` failures in a row take it out of rotation,
//! `healthy_threshold` successes bring it back.

use super::endpoint::Endpoint;
use super::Upstream;
use crate::config::{HealthCheckConfig, UpstreamProtocol};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub fn spawn(upstream: &Arc<Upstream>) {
    let Some(check) = upstream.config.health_check.clone() else {
        return;
    };
    let weak: Weak<Upstream> = Arc::downgrade(upstream);
    let protocol = upstream.config.protocol;
    let name = upstream.config.name.clone();
    let scheme = if upstream.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let connector = match super::super::tls::upstream_connector(
        upstream.config.tls.as_ref(),
        upstream.config.connect_timeout,
        upstream.config.tls_server_name(),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(upstream = %upstream.config.name, error = %e, "health checks not started");
            // No check will answer: a verdict carried over a reload would
            // keep its endpoint out for good.
            for ep in &upstream.snapshot().endpoints {
                if ep.verdict_carried.swap(false, Ordering::Relaxed) {
                    ep.healthy.store(true, Ordering::Relaxed);
                }
            }
            upstream.rotation_changed();
            return;
        }
    };
    tokio::spawn(async move {
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
        loop {
            let Some(upstream) = weak.upgrade() else {
                return;
            };
            let snapshot = upstream.snapshot();
            drop(upstream);
            let checks = snapshot.endpoints.iter().map(|ep| {
                let http = http.clone();
                let check = &check;
                let name = &name;
                let weak = &weak;
                async move {
                    let verdict = tokio::time::timeout(
                        check.timeout,
                        probe(ep, check, protocol, scheme, &http),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer within health_check.timeout ({})",
                            humantime::format_duration(check.timeout)
                        ))
                    });
                    let was = ep.is_available(super::endpoint::now_millis());
                    record(name, ep, check, verdict);
                    // Said as soon as this endpoint's verdict is in, not
                    // after the slowest endpoint's.
                    if ep.is_available(super::endpoint::now_millis()) != was {
                        if let Some(upstream) = weak.upgrade() {
                            upstream.rotation_changed();
                        }
                    }
                }
            });
            futures_util::future::join_all(checks).await;
            tokio::time::sleep(check.interval).await;
        }
    });
}

async fn probe(
    ep: &Endpoint,
    check: &HealthCheckConfig,
    protocol: UpstreamProtocol,
    scheme: &str,
    http: &hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Empty<bytes::Bytes>,
    >,
) -> Result<(), String> {
    // Why a check failed goes into the log line that takes the endpoint
    // out: a wrong service name must not read as a network outage.
    match (protocol, &ep.pool) {
        (UpstreamProtocol::Grpc, Some(pool)) => {
            let asked = format!("grpc.health.v1 Check of service {:?}", check.service);
            match HealthClient::new(pool.any())
                .check(HealthCheckRequest {
                    service: check.service.clone(),
                })
                .await
            {
                Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => Ok(()),
                Ok(r) => Err(format!(
                    "{asked}: {}",
                    ServingStatus::try_from(r.get_ref().status)
                        .map_or("an unknown status".to_owned(), |s| s
                            .as_str_name()
                            .to_owned())
                )),
                Err(status) => Err(format!(
                    "{asked}: {:?}: {}",
                    status.code(),
                    crate::error::status_with_causes(&status)
                )),
            }
        }
        _ => {
            let Ok(uri) = format!("{scheme}://{}{}", ep.address, check.path).parse::<http::Uri>()
            else {
                return Err(format!("{:?} is not a path to GET", check.path));
            };
            match http.get(uri).await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("GET {} answered {}", check.path, r.status())),
                Err(e) => Err(format!(
                    "GET {}: {}",
                    check.path,
                    crate::error::with_causes(&e)
                )),
            }
        }
    }
}

/// Counts one check's verdict.
fn record(upstream: &str, ep: &Endpoint, check: &HealthCheckConfig, verdict: Result<(), String>) {
    if ep.verdict_carried.swap(false, Ordering::Relaxed) {
        // Out of rotation since before a reload: the new config's first
        // answer decides, whatever its thresholds.
        match verdict {
            Ok(()) => {
                ep.check_successes.store(1, Ordering::Relaxed);
                ep.healthy.store(true, Ordering::Relaxed);
                tracing::info!(%upstream, endpoint = %ep.address, "endpoint passes the reloaded config's health check; back in rotation");
            }
            Err(why) => {
                ep.check_failures.store(1, Ordering::Relaxed);
                tracing::warn!(%upstream, endpoint = %ep.address, reason = %why, "endpoint fails the reloaded config's health check too; still out of rotation");
            }
        }
        return;
    }
    if verdict.is_ok() {
        ep.check_failures.store(0, Ordering::Relaxed);
        let n = ep.check_successes.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= check.healthy_threshold && !ep.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(%upstream, endpoint = %ep.address, "endpoint passes its health checks again");
        }
    } else {
        ep.check_successes.store(0, Ordering::Relaxed);
        let n = ep.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= check.unhealthy_threshold && ep.healthy.swap(false, Ordering::Relaxed) {
            let why = verdict.err().unwrap_or_default();
            tracing::warn!(%upstream, endpoint = %ep.address, reason = %why, "endpoint failed {n} health check(s) in a row; out of rotation");
        }
    }
}
