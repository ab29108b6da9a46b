//! Egress adapters: an [`Envelope`] becomes a backend call and its answer
//! a [`Reply`] or a [`GatewayError`]. [`Egress`] picks the adapter by the
//! upstream's protocol.

pub mod codec;
pub mod counted;
pub mod grpc;
pub mod h2c;
pub mod http;
pub mod local;
pub mod non_grpc;
pub mod probe;
pub mod status_mend;
pub mod tls;
pub mod upstream;

use crate::config::UpstreamProtocol;
use crate::envelope::{Envelope, Reply};
use crate::error::GatewayError;
use std::sync::Arc;
use upstream::Upstream;

#[derive(Clone)]
pub struct Egress {
    pub grpc: grpc::GrpcEgress,
    pub http: http::HttpEgress,
    /// By [`UpstreamId`](crate::envelope::UpstreamId).
    pub upstreams: Arc<Vec<Arc<Upstream>>>,
}

impl Egress {
    pub async fn call(&self, env: Envelope) -> Result<Reply, GatewayError> {
        let upstream = self
            .upstreams
            .get(env.target.upstream.0)
            .ok_or_else(|| GatewayError::internal("route names an unknown upstream"))?;
        match upstream.config.protocol {
            UpstreamProtocol::Http => {
                upstream
                    .call(env, |ep, env| self.http.attempt(ep, env))
                    .await
            }
            UpstreamProtocol::Grpc => {
                upstream
                    .call(env, |ep, env| self.grpc.attempt(ep, env))
                    .await
            }
        }
    }
}
