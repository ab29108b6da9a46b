//! Portico: an API gateway for gRPC backends.
//!
//! A request flows through four stages, each in its own module:
//!
//! 1. **ingress** ([`ingress`]): a protocol adapter (HTTP/JSON today) matches the
//!    request against the [`routes`] table and transcodes it ([`transcode`])
//!    into a protocol-neutral [`envelope::Envelope`].
//! 2. **policy** ([`policy`]): the pipeline of tower layers every envelope
//!    passes, whatever protocol it came in on.
//! 3. **egress** ([`egress`]): the backend call (gRPC over pooled HTTP/2).
//! 4. back through the same ingress adapter, which writes the reply in the
//!    client's protocol. Failures are [`error::GatewayError`]s, mapped to each
//!    protocol by one table.
//!
//! [`app`] is the only place that wires the stages together. Schemas come
//! from [`descriptors`]; configuration from [`config`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod demo;
pub mod descriptors;
pub mod egress;
pub mod envelope;
pub mod error;
pub mod headers;
pub mod ingress;
pub mod observe;
pub mod policy;
pub mod routes;
pub mod transcode;
