//! The admin port: `/healthz` for liveness probes, `/routes` for the route
//! table as the gateway sees it, `/upstreams` for each endpoint's health,
//! ejection and load (JSON), `/metrics` (Prometheus), and at `/` a live
//! dashboard fed by `/stats`. Kept off the main port so it can be bound to
//! a private address.

use crate::egress::upstream::Upstream;
use crate::observe::metrics::Usage;
use crate::routes::RouteTable;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The live dashboard: a page that polls `/stats` every second.
const DASHBOARD: &str = include_str!("admin/dashboard.html");

pub fn spawn(
    listener: TcpListener,
    routes: Arc<RouteTable>,
    upstreams: Arc<Vec<Arc<Upstream>>>,
    usage: Arc<Usage>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                _ = shutdown.changed() => return,
            };
            let routes = routes.clone();
            let upstreams = upstreams.clone();
            let usage = usage.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let routes = routes.clone();
                    let upstreams = upstreams.clone();
                    let usage = usage.clone();
                    async move {
                        let text = "text/plain; charset=utf-8";
                        let (status, content_type, body) = match req.uri().path() {
                            "/healthz" => (StatusCode::OK, text, "ok\n".to_owned()),
                            "/routes" => (StatusCode::OK, text, routes.listing()),
                            "/" | "/dashboard" => (
                                StatusCode::OK,
                                "text/html; charset=utf-8",
                                DASHBOARD.to_owned(),
                            ),
                            "/stats" => (
                                StatusCode::OK,
                                "application/json",
                                crate::observe::metrics::stats_json(
                                    routes.targets(),
                                    &upstreams,
                                    &usage,
                                )
                                .to_string(),
                            ),
                            "/metrics" => (
                                StatusCode::OK,
                                "text/plain; version=0.0.4",
                                crate::observe::metrics::render(
                                    routes.targets(),
                                    &upstreams,
                                    &usage,
                                ),
                            ),
                            "/upstreams" => {
                                let all: Vec<_> =
                                    upstreams.iter().map(|u| u.status_json()).collect();
                                (
                                    StatusCode::OK,
                                    "application/json",
                                    serde_json::Value::Array(all).to_string(),
                                )
                            }
                            _ => (
                                StatusCode::NOT_FOUND,
                                text,
                                "not found; try /, /healthz, /routes, /upstreams, /stats or /metrics\n"
                                    .to_owned(),
                            ),
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(content_type),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
