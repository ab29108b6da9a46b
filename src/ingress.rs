//! Ingress adapters: a client protocol in, an [`Envelope`](crate::envelope::Envelope)
//! to the pipeline, the reply back out in the same protocol.

pub mod body;
pub mod connect;
pub mod cors;
pub mod dispatch;
pub mod edge;
pub mod framed;
pub mod grpc;
pub mod mcp;
pub mod request_body;
pub mod rest;
pub mod server;
pub mod slot;
pub mod tls;
pub mod websocket;
