//! The policy pipeline: the one path every envelope takes, whatever
//! protocol it came in on. Each policy is a tower layer over
//! `Service<Envelope>`; [`pipeline`] stacks them in their fixed order.

use crate::egress::Egress;
use crate::envelope::{Envelope, Reply};
use crate::error::GatewayError;
use tower::util::BoxCloneSyncService;

/// The service ingress adapters call.
pub type Pipeline = BoxCloneSyncService<Envelope, Reply, GatewayError>;

/// Builds the pipeline, outermost layer first. The order is fixed and
/// documented: authenticate -> authorize -> rate limit -> cache -> egress.
/// Only egress exists so far; each policy slots in above it.
pub fn pipeline(egress: Egress) -> Pipeline {
    BoxCloneSyncService::new(tower::service_fn(move |env: Envelope| {
        let egress = egress.clone();
        async move { egress.call(env).await }
    }))
}
