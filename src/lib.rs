//! Portico: an API gateway for gRPC backends.
//!
//! A request flows through four stages, each in its own module:
//!
//! 1. **ingress** ([`ingress`]): a protocol adapter (REST, WebSocket, gRPC,
//!    gRPC-Web, Connect) matches the request against the [`routes`] table and
//!    transcodes it ([`transcode`]) into a protocol-neutral
//!    [`envelope::Envelope`].
//! 2. **policy** ([`policy`]): the pipeline of tower layers every envelope
//!    passes, whatever protocol it came in on (authentication,
//!    authorization, rate limits, cache), and aggregation over it.
//! 3. **egress** ([`egress`]): the upstream picks an endpoint (balancing,
//!    health, retries, load shedding) and the call is made over pooled
//!    HTTP/2 (gRPC) or HTTP/1.1 (JSON backends).
//! 4. back through the same ingress adapter, which writes the reply in the
//!    client's protocol. Failures are [`error::GatewayError`]s, mapped to each
//!    protocol by one table.
//!
//! [`app`] is the only place that wires the stages together. Schemas come
//! from [`descriptors`]; configuration from [`config`]. [`headers`] and
//! [`bucket`] hold the small rules more than one stage shares, and
//! [`pem_problems`] says what is wrong with a PEM file either side reads.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod bucket;
pub mod config;
pub mod demo;
pub mod descriptors;
pub mod egress;
pub mod envelope;
pub mod error;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod ingress;
pub mod observe;
pub mod openapi;
pub mod pem_problems;
pub mod policy;
pub mod routes;
#[cfg(test)]
mod scratch;
pub mod transcode;
