//! Egress adapters: an [`Envelope`] becomes a backend call and its answer
//! a [`Reply`] or a [`GatewayError`]. [`Egress`] picks the adapter by the
//! upstream's protocol.

pub mod codec;
pub mod grpc;
pub mod http;
pub mod probe;
pub mod tls;

use crate::config::UpstreamProtocol;
use crate::envelope::{Envelope, Reply};
use crate::error::GatewayError;

#[derive(Clone)]
pub struct Egress {
    pub grpc: grpc::GrpcEgress,
    pub http: http::HttpEgress,
    /// Each upstream's protocol, by upstream index.
    pub protocols: std::sync::Arc<Vec<UpstreamProtocol>>,
}

impl Egress {
    pub async fn call(&self, env: Envelope) -> Result<Reply, GatewayError> {
        match self.protocols.get(env.target.upstream.0) {
            Some(UpstreamProtocol::Http) => self.http.call(env).await,
            _ => self.grpc.call(env).await,
        }
    }
}
