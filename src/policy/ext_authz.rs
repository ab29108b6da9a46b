//! External authorization: before each call of a route, ask a service
//! whether it may proceed. Two contracts:
//! - gRPC, Envoy's `envoy.service.auth.v3.Authorization/Check`, so existing
//!   ext_authz servers (OPA-Envoy and others) work unchanged;
//! - HTTP forward-auth: a GET whose 2xx answer allows.
//!
//! Both carry the same facts whatever protocol the client used: the gRPC
//! method as the path (`/pkg.Service/Method`), the principal, the client's
//! address, and the headers the config chooses. An allow may add or remove
//! headers for the backend; a refusal's status, headers and body reach the
//! client. A service that does not answer in time follows the configured
//! failure mode. Decisions may be cached per principal and method.

pub mod config;

use super::outbound::{NoAnswer, Outbound};
use super::per_route::{Next, Policy};
use crate::envelope::{Envelope, Reply};
use crate::error::{Denial, ErrorKind, GatewayError, Origin};
use bytes::Bytes;
use config::{ExtAuthzConfig, ExtAuthzService};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tower::Service;

/// Envoy's contract, generated from `proto/envoy/` (the fields Portico
/// uses, wire-compatible with Envoy's own definitions).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    pub mod envoy {
        pub mod config {
            pub mod core {
                pub mod v3 {
                    include!(concat!(env!("OUT_DIR"), "/envoy.config.core.v3.rs"));
                }
            }
        }
        pub mod r#type {
            pub mod v3 {
                include!(concat!(env!("OUT_DIR"), "/envoy.r#type.v3.rs"));
            }
        }
        pub mod service {
            pub mod auth {
                pub mod v3 {
                    include!(concat!(env!("OUT_DIR"), "/envoy.service.auth.v3.rs"));
                }
            }
        }
    }
    pub mod google {
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        }
    }
}

use pb::envoy::config::core::v3 as core;
use pb::envoy::service::auth::v3 as auth;

/// Counts of decisions, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExtAuthzStats {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    /// The service did not answer and the call was let through (fail open).
    pub failed_open: AtomicU64,
    /// The service did not answer and the call was refused (fail closed).
    pub failed_closed: AtomicU64,
    /// Decisions taken from the cache, without asking.
    pub cache_hits: AtomicU64,
}

/// One `[ext_authz.NAME]` service, as a pipeline policy.
pub struct ExtAuthz {
    config: ExtAuthzConfig,
    client: Client,
    decisions: Option<moka::future::Cache<(String, String), Arc<Decision>>>,
    pub stats: Arc<ExtAuthzStats>,
}

enum Client {
    Grpc(auth::authorization_client::AuthorizationClient<tonic::transport::Channel>),
    Http(Outbound),
}

/// What the service is told of a call, taken from the envelope before
/// asking (the envelope itself stays with the call).
struct Facts {
    /// `/pkg.Service/Method`.
    path: String,
    /// `pkg.Service.Method`.
    method: String,
    principal: Option<String>,
    client: Option<std::net::SocketAddr>,
    request_id: String,
    /// The chosen client headers.
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the service decided.
#[derive(Debug)]
enum Decision {
    Allow {
        /// Removed from the backend's metadata (and the policy view) first.
        remove: Vec<HeaderName>,
        add: Vec<(HeaderName, HeaderValue, Apply)>,
    },
    Deny(Denial),
}

/// How an allowing answer's header meets the call's (Envoy's
/// `HeaderValueOption`: `append` when set, else `append_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apply {
    /// Another value beside the call's (APPEND_IF_EXISTS_OR_ADD).
    Append,
    /// Only when the call has none (ADD_IF_ABSENT).
    AddIfAbsent,
    /// Replacing the call's values, or added (OVERWRITE_IF_EXISTS_OR_ADD).
    Overwrite,
    /// Replacing the call's values only when it has some (OVERWRITE_IF_EXISTS).
    OverwriteIfExists,
}

fn apply(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue, how: Apply) {
    match how {
        Apply::Append => {
            headers.append(name.clone(), value.clone());
        }
        Apply::AddIfAbsent if !headers.contains_key(name) => {
            headers.insert(name.clone(), value.clone());
        }
        Apply::Overwrite => {
            headers.insert(name.clone(), value.clone());
        }
        Apply::OverwriteIfExists if headers.contains_key(name) => {
            headers.insert(name.clone(), value.clone());
        }
        Apply::AddIfAbsent | Apply::OverwriteIfExists => {}
    }
}

impl ExtAuthz {
    pub fn new(config: &ExtAuthzConfig, stats: Arc<ExtAuthzStats>) -> Result<ExtAuthz, String> {
        let client = match &config.service {
            ExtAuthzService::Grpc(uri) => {
                let endpoint = tonic::transport::Endpoint::from(uri.clone()).tcp_nodelay(true);
                // As for upstreams: the plain-text connector bounds its
                // connect itself, without tonic's per-read timeout layer.
                let channel = if uri.scheme_str() == Some("https") {
                    let tls = crate::config::UpstreamTls::new(config.ca_file.clone(), None);
                    let connector = crate::egress::tls::grpc_connector(&tls, config.timeout, None)?;
                    endpoint
                        .connect_timeout(config.timeout)
                        .connect_with_connector_lazy(connector)
                } else {
                    endpoint.connect_with_connector_lazy(crate::egress::h2c::Connector::new(
                        config.timeout,
                    ))
                };
                Client::Grpc(auth::authorization_client::AuthorizationClient::new(
                    channel,
                ))
            }
            ExtAuthzService::Http(_) => {
                Client::Http(Outbound::new(config.ca_file.as_deref(), config.timeout)?)
            }
        };
        let decisions = config.cache_ttl.map(|ttl| {
            moka::future::Cache::builder()
                .max_capacity(config.cache_max_entries)
                .time_to_live(ttl)
                .build()
        });
        Ok(ExtAuthz {
            config: config.clone(),
            client,
            decisions,
            stats,
        })
    }

    /// Asks (or remembers) and applies the decision to the envelope. The
    /// service is waited on no longer than the call's deadline.
    pub async fn check(self: &Arc<Self>, env: &mut Envelope) -> Result<(), GatewayError> {
        let method = env.target.method.full_name().to_owned();
        // Only a known principal's decisions are kept: without one, the
        // service may be deciding on headers the cache key does not hold.
        let cache_key = env
            .ctx
            .principal
            .as_ref()
            .filter(|p| !p.subject.is_empty())
            .map(|p| (p.subject.clone(), method.clone()));
        let cached = match (&self.decisions, &cache_key) {
            (Some(cache), Some(key)) => cache.get(key).await,
            _ => None,
        };
        let decision = match cached {
            Some(d) => {
                self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                d
            }
            None => match self
                .ask_within(env.deadline(), self.facts(env, method), cache_key)
                .await?
            {
                Ok(d) => d,
                Err(NoAnswer(why)) if self.config.fail_open => {
                    self.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(authorizer = %self.config.name, error = %crate::config::redact_text(&why), "external authorization failed; letting the call through (failure_mode = \"open\")");
                    return Ok(());
                }
                Err(NoAnswer(why)) => {
                    self.stats.failed_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(authorizer = %self.config.name, error = %crate::config::redact_text(&why), "external authorization failed; refusing the call");
                    return Err(GatewayError::policy_service_unavailable(format!(
                        "the authorization service {} did not answer",
                        self.config.name
                    )));
                }
            },
        };
        match &*decision {
            Decision::Allow { add, remove } => {
                self.stats.allowed.fetch_add(1, Ordering::Relaxed);
                // The gateway's own headers stay the gateway's: the request
                // id, and the claims this route's authenticators write, are
                // never the service's to change.
                let claims = env.ctx.claim_headers.clone();
                let owned = |n: &HeaderName| {
                    *n == crate::ingress::edge::request_id::HEADER
                        || claims.as_ref().is_some_and(|c| c.contains(n))
                };
                let remove = remove.iter().filter(|n| !owned(n));
                // A `-bin` value that is not base64 would fail the
                // backend's call, as a client's is refused.
                let add = add.iter().filter(|(n, v, _)| {
                    !owned(n)
                        && (!n.as_str().ends_with("-bin") || crate::headers::is_binary_value(v))
                });
                for name in remove.clone() {
                    env.metadata.remove(name);
                }
                let mut add = add.peekable();
                let mut remove = remove.peekable();
                if add.peek().is_none() && remove.peek().is_none() {
                    return Ok(());
                }
                // The service may take out or replace a credential the
                // cache keys on: the client's headers are kept first, when
                // the answer touches one the client sent (forward-auth's
                // own headers, which a client does not send, cost no copy).
                // What it adds is the backend's to read: the cache keys on
                // it too.
                let sent = &env.ctx.headers;
                let touches_sent = remove.clone().any(|n| sent.contains_key(n))
                    || add.clone().any(|(n, _, _)| sent.contains_key(n));
                let mut set = Vec::new();
                let view = if touches_sent {
                    env.ctx.policy_headers_mut()
                } else {
                    Arc::make_mut(&mut env.ctx.headers)
                };
                for name in remove {
                    view.remove(name);
                }
                for (name, value, how) in add {
                    // A name gRPC metadata cannot carry (`x!y`) would fail
                    // the backend's call: the policies still see it, as a
                    // client's such header.
                    if crate::headers::is_grpc_key(name) {
                        apply(&mut env.metadata, name, value, *how);
                        set.push(name.clone());
                    }
                    apply(view, name, value, *how);
                }
                env.ctx.service_headers.extend(set);
                Ok(())
            }
            Decision::Deny(denial) => {
                self.stats.denied.fetch_add(1, Ordering::Relaxed);
                let text = String::from_utf8_lossy(&denial.body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("denied by the authorization service {}", self.config.name)
                } else {
                    text.chars().take(1024).collect()
                };
                Err(GatewayError::new(
                    ErrorKind::Denied(Box::new(denial.clone())),
                    Origin::Client,
                    message,
                ))
            }
        }
    }

    /// Asks, in a task of its own so that an answer that comes after the
    /// call's deadline is still remembered for the calls after it; the call
    /// waits no longer than its deadline. `Err` when that passed first
    /// (counted and logged as no answer, under the failure mode).
    async fn ask_within(
        self: &Arc<Self>,
        deadline: Option<std::time::Instant>,
        facts: Facts,
        cache_key: Option<(String, String)>,
    ) -> Result<Result<Arc<Decision>, NoAnswer>, GatewayError> {
        let this = self.clone();
        let asked = tokio::spawn(async move {
            let d = Arc::new(this.ask(facts).await?);
            if let (Some(cache), Some(key)) = (&this.decisions, cache_key) {
                cache.insert(key, d.clone()).await;
            }
            Ok(d)
        });
        let before = "the authorization service answered (the backend was not called)";
        match crate::policy::within_deadline(deadline, before, asked).await {
            Ok(answer) => Ok(answer
                .unwrap_or_else(|e| Err(NoAnswer(format!("the question was not asked: {e}"))))),
            Err(late) => {
                let counter = if self.config.fail_open {
                    &self.stats.failed_open
                } else {
                    &self.stats.failed_closed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(authorizer = %self.config.name, "external authorization did not answer within the call's deadline; the call ends there, whatever the failure mode");
                Err(late)
            }
        }
    }

    async fn ask(&self, facts: Facts) -> Result<Decision, NoAnswer> {
        match &self.client {
            Client::Grpc(client) => self.ask_grpc(client.clone(), facts).await,
            Client::Http(client) => self.ask_http(client, facts).await,
        }
    }

    fn facts(&self, env: &Envelope, method: String) -> Facts {
        let headers = self
            .config
            .include_headers
            .iter()
            .flat_map(|name| {
                env.ctx
                    .headers
                    .get_all(name)
                    .iter()
                    .map(move |v| (name.clone(), v.clone()))
            })
            .collect();
        Facts {
            path: env.target.path.as_str().to_owned(),
            method,
            principal: env.ctx.principal.as_ref().map(|p| p.subject.clone()),
            client: env.ctx.client_addr,
            request_id: env
                .ctx
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            headers,
        }
    }

    async fn ask_grpc(
        &self,
        mut client: auth::authorization_client::AuthorizationClient<tonic::transport::Channel>,
        facts: Facts,
    ) -> Result<Decision, NoAnswer> {
        let mut headers = std::collections::HashMap::new();
        for (name, value) in &facts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            // Cookies are joined as one `cookie` header writes them (RFC
            // 6265 section 5.4), as Envoy does: a policy parsing `a=1; b=2`
            // would read `a=1,b=2` as one cookie.
            let separator = if *name == http::header::COOKIE {
                "; "
            } else {
                ","
            };
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v: &mut String| {
                    v.push_str(separator);
                    v.push_str(&value)
                })
                .or_insert(value);
        }
        let path = facts.path.clone();
        headers.insert(":method".to_owned(), "POST".to_owned());
        headers.insert(":path".to_owned(), path.clone());
        let principal = facts.principal.clone().unwrap_or_default();
        let source = auth::attribute_context::Peer {
            address: facts.client.map(|a| core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: a.ip().to_string(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                        a.port().into(),
                    )),
                    ..Default::default()
                })),
            }),
            principal: principal.clone(),
            ..Default::default()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let request = auth::CheckRequest {
            attributes: Some(auth::AttributeContext {
                source: Some(source),
                request: Some(auth::attribute_context::Request {
                    time: Some(prost_types::Timestamp {
                        seconds: now.as_secs() as i64,
                        nanos: now.subsec_nanos() as i32,
                    }),
                    http: Some(auth::attribute_context::HttpRequest {
                        id: facts.request_id.clone(),
                        method: "POST".to_owned(),
                        headers,
                        path,
                        size: -1,
                        protocol: "HTTP/2".to_owned(),
                        ..Default::default()
                    }),
                }),
                context_extensions: [
                    ("portico.method".to_owned(), facts.method.clone()),
                    ("portico.principal".to_owned(), principal),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
        };
        let mut req = tonic::Request::new(request);
        req.set_timeout(self.config.timeout);
        let answer = tokio::time::timeout(self.config.timeout, client.check(req))
            .await
            .map_err(|_| NoAnswer(format!("no answer within {:?}", self.config.timeout)))?
            .map_err(|s| NoAnswer(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let code = answer.status.as_ref().map(|s| s.code).unwrap_or(0);
        if code == 0 {
            let (add, remove) = match answer.http_response {
                Some(auth::check_response::HttpResponse::OkResponse(ok)) => (
                    header_options(&ok.headers)
                        .into_iter()
                        .filter(|(name, _, _)| !crate::headers::is_framing(name))
                        .collect(),
                    ok.headers_to_remove
                        .iter()
                        .filter_map(|h| {
                            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()
                        })
                        // The call's own framing is the gateway's, not the service's to drop.
                        .filter(|h| !crate::headers::is_framing(h))
                        .collect(),
                ),
                _ => (Vec::new(), Vec::new()),
            };
            return Ok(Decision::Allow { add, remove });
        }
        let denial = match answer.http_response {
            Some(auth::check_response::HttpResponse::DeniedResponse(d)) => {
                let status = denial_status(d.status.map_or(0, |s| s.code.into()));
                let mut headers = HeaderMap::new();
                let mut content_type = None;
                for (name, value, _) in header_options(&d.headers) {
                    if name == http::header::CONTENT_TYPE {
                        content_type = Some(value);
                    } else if passes_to_client(&name) {
                        headers.append(name, value);
                    }
                }
                Denial {
                    status,
                    headers,
                    body: Bytes::from(d.body),
                    content_type,
                }
            }
            _ => Denial {
                status: StatusCode::FORBIDDEN,
                headers: HeaderMap::new(),
                body: answer
                    .status
                    .map(|s| Bytes::from(s.message))
                    .unwrap_or_default(),
                content_type: None,
            },
        };
        Ok(Decision::Deny(denial))
    }

    async fn ask_http(&self, client: &Outbound, facts: Facts) -> Result<Decision, NoAnswer> {
        let ExtAuthzService::Http(url) = &self.config.service else {
            return Err(NoAnswer("not an HTTP service".to_owned()));
        };
        let mut req = http::Request::get(url.clone());
        // The gateway's own headers are the gateway's: a client's copy of
        // one is not sent beside it.
        let mut cookies: Vec<&[u8]> = Vec::new();
        for (name, value) in &facts.headers {
            let own = name.as_str().starts_with("x-portico-")
                || matches!(
                    name.as_str(),
                    "x-forwarded-method" | "x-forwarded-uri" | "x-forwarded-for" | "x-request-id"
                );
            if *name == http::header::COOKIE {
                cookies.push(value.as_bytes());
            } else if !own {
                req = req.header(name, value);
            }
        }
        // One `cookie` header, as RFC 6265 section 5.4 has a client send.
        if !cookies.is_empty() {
            if let Ok(v) = HeaderValue::from_bytes(&cookies.join(&b"; "[..])) {
                req = req.header(http::header::COOKIE, v);
            }
        }
        req = req
            .header("x-forwarded-method", "POST")
            .header("x-forwarded-uri", facts.path.as_str())
            .header("x-portico-method", facts.method.as_str());
        if !facts.request_id.is_empty() {
            req = req.header("x-request-id", facts.request_id.as_str());
        }
        if let Some(addr) = facts.client {
            req = req.header("x-forwarded-for", addr.ip().to_string());
        }
        if let Some(p) = facts.principal.as_ref().filter(|p| !p.is_empty()) {
            // As a claim reaches a backend: a principal a header would not
            // carry exactly (`José`, ` admin`, a line break) goes base64.
            if crate::headers::carries_as_written(p.as_bytes()) {
                req = req.header("x-portico-principal", p.as_str());
            } else {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(p);
                req = req.header("x-portico-principal-bin", encoded);
            }
        }
        let req = req
            .body(http_body_util::Full::default())
            .map_err(|e| NoAnswer(format!("{url}: {e}")))?;
        let answer = client.send(req).await?;
        if answer.status.is_success() {
            // The client's own values of these headers never pass: they
            // are the service's to give, or nobody's.
            let add = self
                .config
                .upstream_headers
                .iter()
                .flat_map(|name| {
                    answer
                        .headers
                        .get_all(name)
                        .iter()
                        .map(move |v| (name.clone(), v.clone(), Apply::Append))
                })
                .collect();
            return Ok(Decision::Allow {
                add,
                remove: self.config.upstream_headers.clone(),
            });
        }
        let mut headers = HeaderMap::new();
        let hop_only = crate::headers::connection_named(&answer.headers);
        for (name, value) in &answer.headers {
            // The content type travels with the body (is_framing drops it
            // here); what its `Connection` names was for its hop alone.
            if passes_to_client(name) && !hop_only.contains(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Ok(Decision::Deny(Denial {
            status: denial_status(answer.status.as_u16().into()),
            headers,
            content_type: answer.headers.get(http::header::CONTENT_TYPE).cloned(),
            body: answer.body,
        }))
    }
}

/// The HTTP status a denial is answered with: the service's, when it is
/// one a denial can be (a redirect, a client or a server error); a
/// success or an interim status (a denial is never answered as one), a
/// `304` (it would tell the client to use a copy it kept, and carries no
/// body to say why), or a number HTTP defines no class for (600 and up),
/// is a 403.
fn denial_status(code: i64) -> StatusCode {
    u16::try_from(code)
        .ok()
        .filter(|c| (300..600).contains(c) && *c != 304)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::FORBIDDEN)
}

/// Envoy's header options as (name, value, append); bad ones are dropped.
fn header_options(options: &[core::HeaderValueOption]) -> Vec<(HeaderName, HeaderValue, Apply)> {
    options
        .iter()
        .filter_map(|o| {
            let h = o.header.as_ref()?;
            let name = HeaderName::from_bytes(h.key.to_ascii_lowercase().as_bytes()).ok()?;
            let value = if h.raw_value.is_empty() {
                HeaderValue::from_str(&h.value).ok()?
            } else {
                HeaderValue::from_bytes(&h.raw_value).ok()?
            };
            use core::header_value_option::HeaderAppendAction as Action;
            let how = match o.append {
                Some(true) => Apply::Append,
                Some(false) => Apply::Overwrite,
                None => match Action::try_from(o.append_action) {
                    Ok(Action::AddIfAbsent) => Apply::AddIfAbsent,
                    Ok(Action::OverwriteIfExistsOrAdd) => Apply::Overwrite,
                    Ok(Action::OverwriteIfExists) => Apply::OverwriteIfExists,
                    Ok(Action::AppendIfExistsOrAdd) | Err(_) => Apply::Append,
                },
            };
            Some((name, value, how))
        })
        .collect()
}

impl Policy for ExtAuthz {
    fn call(
        self: Arc<Self>,
        mut env: Envelope,
        mut next: Next,
    ) -> BoxFuture<'static, Result<Reply, GatewayError>> {
        Box::pin(async move {
            self.check(&mut env).await?;
            next.call(env).await
        })
    }
}
/// Whether a denial's header reaches the client: what a backend's reply
/// header may set, less the request id, which is the call's own on every
/// protocol (the service answered its own request, with its own id).
fn passes_to_client(name: &http::HeaderName) -> bool {
    *name != crate::ingress::edge::request_id::HEADER && crate::ingress::edge::reaches_client(name)
}
