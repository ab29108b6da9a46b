//! The policy pipeline: the one path every envelope takes, whatever
//! protocol it came in on. Each policy is a tower layer over
//! `Service<Envelope>`; [`pipeline`] stacks them in their fixed order.

pub mod aggregate;
pub mod auth;
pub mod authorize;
pub mod cache;
pub mod ext_authz;
pub mod no_time;
pub mod one_credential;
pub mod outbound;
pub mod per_route;
pub mod rate_limit;

use crate::egress::Egress;
use crate::envelope::{Envelope, Reply};
use crate::error::GatewayError;
pub use per_route::PerRoute;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

/// The service ingress adapters call.
pub type Pipeline = BoxCloneSyncService<Envelope, Reply, GatewayError>;

/// Waits for `wait` (another service's answer: an identity provider,
/// Redis) no longer than the call's deadline: past it, the call is refused
/// with `DEADLINE_EXCEEDED` saying `before` what, and the backend is never
/// called. Without a deadline, the service's own timeout is the bound.
pub(crate) async fn within_deadline<T>(
    deadline: Option<std::time::Instant>,
    before: &str,
    wait: impl std::future::Future<Output = T>,
) -> Result<T, GatewayError> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at.into(), wait)
            .await
            .map_err(|_| GatewayError::deadline_exceeded_before(before)),
        None => Ok(wait.await),
    }
}

/// Builds the pipeline, outermost layer first. The order is fixed: the
/// gateway's own services answered -> count -> no time given -> one credential ->
/// authenticate -> authorize
/// -> external authorization -> rate limit -> cache -> egress.
#[allow(clippy::too_many_arguments)]
pub fn pipeline(
    credentials: one_credential::OneCredentialLayer,
    auth: PerRoute<auth::RouteAuth>,
    authorize: PerRoute<authorize::Rules>,
    ext_authz: PerRoute<ext_authz::ExtAuthz>,
    rate_limit: PerRoute<rate_limit::Limiter>,
    cache: PerRoute<cache::ResponseCache>,
    usage: std::sync::Arc<crate::observe::metrics::Usage>,
    local: crate::egress::local::AnsweredLocally,
    egress: Egress,
) -> Pipeline {
    // Shared, not cloned per call: the egress holds clients and pools.
    let egress = std::sync::Arc::new(egress);
    // Its future is boxed here, once: the layers above pass it on inline.
    let egress = tower::service_fn(move |env: Envelope| {
        let egress = egress.clone();
        let call: futures_util::future::BoxFuture<'static, Result<Reply, GatewayError>> =
            Box::pin(async move { egress.call(env).await });
        call
    });
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            // Before everything: the gateway's own services (health,
            // reflection) answer whoever asks, as probes and tools expect,
            // and are not the traffic the figures below describe.
            .layer(local)
            // Then every call is counted, including those a policy refuses.
            .layer(crate::observe::metrics::RecordLayer)
            // A call the client gave no time: refused before anything waits.
            .layer(no_time::NoTimeLayer)
            // On every route, authenticating or not: a backend (or the
            // authenticator) gets the one credential the client chose.
            .layer(credentials)
            // First: nothing else may run for a caller who is not who they claim.
            .layer(auth)
            // Right after authentication: the principal is known, and every
            // authenticated call counts, even one refused further on.
            .layer(crate::observe::metrics::UsageLayer(usage))
            // After authentication: a caller must be known before its rights are.
            .layer(authorize)
            // After the gateway's own rules: a call they refuse costs the
            // authorization service nothing, and it sees the principal.
            .layer(ext_authz)
            // After auth: a principal may be the limit's key, and refused
            // callers do not spend anyone's budget.
            .layer(rate_limit)
            // Last before the backend: only an authorized, admitted call
            // may be answered, even from the cache; the key holds the principal.
            .layer(cache)
            .service(egress),
    )
}
