//! The admin port: `/healthz` for liveness probes, `/routes` for the route
//! table as the gateway sees it, `/upstreams` for each endpoint's health,
//! ejection and load (JSON), `/metrics` (Prometheus), at `/` a live
//! dashboard fed by `/stats`, and the config: `GET /config` (the active
//! generation) and `POST /config/reload`. Kept off the main port so it can
//! be bound to a private address. Everything is read from the generation
//! being served when the request comes.

use crate::egress::upstream::Upstream;
use crate::observe::metrics::Usage;
use crate::routes::RouteTable;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Method, Response, StatusCode};
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

/// What the admin port shows and does, from the generation being served.
pub trait AdminSource: Send + Sync + 'static {
    fn routes(&self) -> Arc<RouteTable>;
    fn upstreams(&self) -> Arc<Vec<Arc<Upstream>>>;
    /// Per upstream, in config order: whether an endpoint in rotation
    /// accepts connections (`None` until first checked).
    fn reachable(&self) -> Vec<Option<bool>>;
    fn usage(&self) -> Arc<Usage>;
    /// The fleet, with `[redis]`.
    fn fleet(&self) -> Option<Arc<crate::fleet::Fleet>>;
    /// `{"digest","loaded_at","last_error","config"}`, secrets redacted.
    fn config_json(&self) -> serde_json::Value;
    /// Reloads the config; answers once the new generation serves (or not).
    fn reload(self: Arc<Self>) -> BoxFuture<'static, serde_json::Value>;
    /// `(successful, failed)` reloads.
    fn reload_counts(&self) -> (u64, u64);
    /// Each binding with its method, upstream and policies in order.
    fn route_table_json(&self) -> serde_json::Value;
    /// `{"digest","loaded_at","last_error","reloads_ok","reloads_failed"}`.
    fn generation_json(&self) -> serde_json::Value;
    /// The OpenAPI description of the REST API being served.
    fn openapi(&self) -> Arc<crate::openapi::ApiDescription>;
}

/// Serves the admin port until `stop`. While the gateway drains
/// (`draining`), every page still answers, so a liveness probe sees the
/// process alive and the drain's last counts can be scraped; `/readyz`
/// says 503 then, so a load balancer sends nothing new.
pub fn spawn<A: AdminSource>(
    listener: TcpListener,
    source: Arc<A>,
    draining: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                _ = stop.changed() => return,
            };
            let source = source.clone();
            let draining = draining.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let source = source.clone();
                    let draining = *draining.borrow();
                    async move {
                        let routes = source.routes();
                        let upstreams = source.upstreams();
                        let usage = source.usage();
                        let text = "text/plain; charset=utf-8";
                        let json = "application/json";
                        let req_path_is_reload = req.uri().path() == "/config/reload";
                        let (status, content_type, body) = match (req.method(), req.uri().path()) {
                            // A generation built now would start its tasks
                            // and log for a gateway about to exit.
                            (&Method::POST, "/config/reload") if draining => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                json,
                                r#"{"result":"error","errors":["the gateway is shutting down: no reload while it drains"]}"#.to_owned(),
                            ),
                            (&Method::POST, "/config/reload") => {
                                let outcome = source.clone().reload().await;
                                let status = if outcome["result"] == "ok" {
                                    StatusCode::OK
                                } else {
                                    StatusCode::UNPROCESSABLE_ENTITY
                                };
                                (status, json, outcome.to_string())
                            }
                            (_, "/config/reload") => (
                                StatusCode::METHOD_NOT_ALLOWED,
                                json,
                                r#"{"result":"error","errors":["POST /config/reload to reload"]}"#.to_owned(),
                            ),
                            // A page that does not exist is that, whatever the method.
                            (m, path) if m != Method::GET && m != Method::HEAD && !PAGES.contains(&path) => {
                                (StatusCode::NOT_FOUND, json, no_page(path))
                            }
                            // Every other page only reads.
                            (m, _) if m != Method::GET && m != Method::HEAD => (
                                StatusCode::METHOD_NOT_ALLOWED,
                                json,
                                admin_error(format!(
                                    "{m} is not allowed on the admin port's pages; GET them (POST only /config/reload)"
                                )),
                            ),
                            (_, "/config") => (StatusCode::OK, json, source.config_json().to_string()),
                            (_, path) => match path {
                            "/healthz" => (StatusCode::OK, text, "ok\n".to_owned()),
                            "/openapi.json" => (
                                StatusCode::OK,
                                json,
                                String::from_utf8_lossy(&source.openapi().json_async().await)
                                    .into_owned(),
                            ),
                            "/routes" => (StatusCode::OK, text, routes.listing()),
                            "/readyz" if draining => (
                                StatusCode::SERVICE_UNAVAILABLE,
                                json,
                                serde_json::json!({
                                    "ready": false,
                                    "reason": "the gateway is shutting down: calls in flight are draining, new ones should go elsewhere",
                                    "upstreams_without_endpoints": [],
                                })
                                .to_string(),
                            ),
                            "/readyz" => readiness(&routes, &upstreams, &source.reachable()),
                            "/" | "/dashboard" => (
                                StatusCode::OK,
                                "text/html; charset=utf-8",
                                DASHBOARD.to_owned(),
                            ),
                            "/stats" => {
                                let mut stats = crate::observe::metrics::stats_json(
                                    routes.targets(),
                                    &upstreams,
                                    &usage,
                                );
                                stats["recent"] = serde_json::json!(usage
                                    .book
                                    .recent()
                                    .into_iter()
                                    .map(|(method, steps)| serde_json::json!({"method": method, "steps": steps}))
                                    .collect::<Vec<_>>());
                                stats["consumers"] = serde_json::json!(usage
                                    .book
                                    .window_rows("1h")
                                    .into_iter()
                                    .take(50)
                                    .collect::<Vec<_>>());
                                // What /readyz goes by, per upstream: an
                                // endpoint can be in rotation yet refuse
                                // connections when nothing checks it.
                                let reachable = source.reachable();
                                if let Some(list) = stats["upstreams"].as_array_mut() {
                                    for (i, u) in list.iter_mut().enumerate() {
                                        u["reachable"] = serde_json::json!(reachable.get(i).copied().flatten());
                                    }
                                }
                                stats["routes"] = source.route_table_json();
                                stats["generation"] = source.generation_json();
                                (StatusCode::OK, "application/json", stats.to_string())
                            }
                            "/usage" => {
                                let formats: Vec<String> = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                                    .filter(|(k, _)| k == "format")
                                    .map(|(_, v)| v.into_owned())
                                    .collect();
                                match formats.first().map(String::as_str) {
                                    // Two answers asked for: neither is guessed at.
                                    _ if formats.len() > 1 => (
                                        StatusCode::BAD_REQUEST,
                                        json,
                                        admin_error("format is given more than once: give one, \"json\" (the default) or \"csv\""),
                                    ),
                                    Some("csv") => (StatusCode::OK, "text/csv; charset=utf-8", usage.book.csv()),
                                    None | Some("" | "json") => (StatusCode::OK, json, usage.book.json().to_string()),
                                    // A typo is told, not answered in the other format.
                                    Some(other) => (
                                        StatusCode::BAD_REQUEST,
                                        json,
                                        admin_error(format!("format={other:?} is not a format: \"json\" (the default) or \"csv\"")),
                                    ),
                                }
                            }
                            "/metrics" => (
                                StatusCode::OK,
                                "text/plain; version=0.0.4",
                                crate::observe::metrics::render(
                                    routes.targets(),
                                    &upstreams,
                                    &usage,
                                ) + &reload_metrics(source.reload_counts())
                                    + &reachable_metrics(&upstreams, &source.reachable())
                                    + &source.fleet().map(|f| {
                                        let mut out = String::new();
                                        f.render_metrics(&mut out);
                                        out
                                    }).unwrap_or_default(),
                            ),
                            "/fleet" => match source.fleet() {
                                Some(f) => (StatusCode::OK, json, f.status_json().to_string()),
                                None => (
                                    StatusCode::NOT_FOUND,
                                    json,
                                    admin_error("no [redis] section: this instance is not part of a fleet"),
                                ),
                            },
                            "/upstreams" => {
                                let all: Vec<_> =
                                    upstreams.iter().map(|u| u.status_json()).collect();
                                (
                                    StatusCode::OK,
                                    "application/json",
                                    serde_json::Value::Array(all).to_string(),
                                )
                            }
                            _ => (StatusCode::NOT_FOUND, json, no_page(path)),
                        },
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(content_type),
                        );
                        if status == StatusCode::METHOD_NOT_ALLOWED {
                            let allow = if req_path_is_reload {
                                "POST"
                            } else {
                                "GET, HEAD"
                            };
                            resp.headers_mut()
                                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
                        }
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

/// The admin port's pages (besides `/config/reload`, which is POSTed),
/// named in a 404 and telling a write to a page (405) from one to nowhere
/// (404); the handlers are the `match` above.
const PAGES: [&str; 12] = [
    "/",
    "/dashboard",
    "/healthz",
    "/readyz",
    "/routes",
    "/upstreams",
    "/stats",
    "/usage",
    "/metrics",
    "/config",
    "/fleet",
    "/openapi.json",
];

/// The 404 for a path that is no admin page, naming the pages.
fn no_page(path: &str) -> String {
    admin_error(format!(
        "no admin page {path}; the pages: {}, and POST /config/reload",
        PAGES
            .map(|p| if p == "/fleet" {
                "/fleet (with [redis])"
            } else {
                p
            })
            .join(", ")
    ))
}

/// Every admin page's refusal: `{"error": "..."}` (a reload's answer has
/// its own shape, `{"result","errors"}`).
fn admin_error(message: impl Into<String>) -> String {
    serde_json::json!({ "error": message.into() }).to_string()
}

/// `GET /readyz`: ready once the schemas are loaded (the admin port only
/// serves after the first generation is built) and every upstream a route
/// sends calls to has an endpoint in rotation that accepts connections
/// (as last checked; before the first check, being in rotation is enough).
fn readiness(
    routes: &RouteTable,
    upstreams: &[Arc<Upstream>],
    reachable: &[Option<bool>],
) -> (StatusCode, &'static str, String) {
    let mut routed: Vec<usize> = routes.targets().map(|t| t.upstream.0).collect();
    routed.sort_unstable();
    routed.dedup();
    // Why each is not ready: no endpoints at all (a DNS name that resolves
    // to nothing), nothing in rotation (health checks, ejection), and
    // endpoints that refuse connections are three different faults.
    let mut no_endpoints: Vec<&str> = Vec::new();
    let mut out_of_rotation: Vec<&str> = Vec::new();
    let mut refusing: Vec<&str> = Vec::new();
    for (u, reached) in routed
        .iter()
        .filter_map(|&i| Some((upstreams.get(i)?, reachable.get(i).copied().flatten())))
    {
        // One snapshot, so a reload of the endpoint list between two reads
        // cannot give a reason that fits neither list.
        let snapshot = u.snapshot();
        if snapshot.endpoints.is_empty() {
            no_endpoints.push(u.name());
        } else if snapshot.in_rotation() == 0 {
            out_of_rotation.push(u.name());
        } else if reached == Some(false) {
            refusing.push(u.name());
        }
    }
    let empty: Vec<&str> = no_endpoints
        .iter()
        .chain(&out_of_rotation)
        .chain(&refusing)
        .copied()
        .collect();
    if empty.is_empty() {
        (
            StatusCode::OK,
            "application/json",
            r#"{"ready":true}"#.to_owned(),
        )
    } else {
        let reason = [
            (!no_endpoints.is_empty()).then(|| format!(
                "no endpoints at all (its DNS name has not resolved to any address) for upstream {}",
                no_endpoints.join(", ")
            )),
            (!out_of_rotation.is_empty()).then(|| format!(
                "no endpoint in rotation (each failing its health checks or ejected) for upstream {}",
                out_of_rotation.join(", ")
            )),
            (!refusing.is_empty()).then(|| format!(
                "no endpoint in rotation that accepts connections for upstream {}",
                refusing.join(", ")
            )),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
        let body = serde_json::json!({
            "ready": false,
            "reason": reason,
            "upstreams_without_endpoints": empty,
        });
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            body.to_string(),
        )
    }
}

/// `portico_upstream_reachable`: the probe `/readyz` goes by, per
/// upstream (absent until its first check has ended).
fn reachable_metrics(upstreams: &[Arc<Upstream>], reachable: &[Option<bool>]) -> String {
    let mut out = String::from(
        "# HELP portico_upstream_reachable Whether an endpoint of the upstream in rotation accepts TCP connections (what /readyz goes by).\n# TYPE portico_upstream_reachable gauge\n",
    );
    for (u, r) in upstreams.iter().zip(reachable) {
        if let Some(r) = r {
            out.push_str(&format!(
                "portico_upstream_reachable{{upstream=\"{}\"}} {}\n",
                crate::observe::metrics::label_value(u.name()),
                u8::from(*r)
            ));
        }
    }
    out
}

/// `portico_config_reloads_total`, by result.
fn reload_metrics((ok, failed): (u64, u64)) -> String {
    format!(
        "# HELP portico_config_reloads_total Config reloads, by result.\n\
         # TYPE portico_config_reloads_total counter\n\
         portico_config_reloads_total{{result=\"ok\"}} {ok}\n\
         portico_config_reloads_total{{result=\"error\"}} {failed}\n\
         # HELP portico_access_log_lines_total Access-log lines: written, or dropped (the writer fell behind or its write failed).\n\
         # TYPE portico_access_log_lines_total counter\n\
         portico_access_log_lines_total{{result=\"written\"}} {written}\n\
         portico_access_log_lines_total{{result=\"dropped\"}} {dropped}\n\
         # HELP portico_trace_spans_total Finished spans, by what became of them.\n\
         # TYPE portico_trace_spans_total counter\n\
         portico_trace_spans_total{{result=\"exported\"}} {exported}\n\
         portico_trace_spans_total{{result=\"dropped\"}} {spans_dropped}\n\
         portico_trace_spans_total{{result=\"failed\"}} {spans_failed}\n\
         # HELP portico_dropped_headers_with_underscores_total Client header fields dropped for a name holding `_` (metadata.headers_with_underscores).\n\
         # TYPE portico_dropped_headers_with_underscores_total counter\n\
         portico_dropped_headers_with_underscores_total {underscored}\n",
        exported = crate::observe::traces::EXPORTED.load(std::sync::atomic::Ordering::Relaxed),
        spans_dropped = crate::observe::traces::DROPPED.load(std::sync::atomic::Ordering::Relaxed),
        spans_failed = crate::observe::traces::FAILED.load(std::sync::atomic::Ordering::Relaxed),
        written = crate::observe::access_log::WRITTEN.load(std::sync::atomic::Ordering::Relaxed),
        dropped = crate::observe::access_log::DROPPED.load(std::sync::atomic::Ordering::Relaxed),
        underscored = crate::ingress::edge::UNDERSCORED_DROPPED.load(std::sync::atomic::Ordering::Relaxed),
    )
}
