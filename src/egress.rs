//! Egress adapters: an [`Envelope`](crate::envelope::Envelope) becomes a
//! backend call and its answer a [`Reply`](crate::envelope::Reply) or a
//! [`GatewayError`](crate::error::GatewayError).

pub mod codec;
pub mod grpc;
pub mod probe;
