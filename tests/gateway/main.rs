//! Portico's integration tests: each module is a user's story told against
//! real gateways, backends and clients on 127.0.0.1. One binary instead of
//! one per file keeps the build small and the link count at one.

mod support;

mod aborted_uploads;
mod access_log;
mod aggregate;
mod auth;
mod balancing;
mod browser_chat;
mod browser_dashboard;
mod browser_docs;
mod browser_grpc_web;
mod cache;
mod cli;
mod connect;
mod connect_sdk;
mod edge_parity;
mod error_mapping;
mod errors;
mod ext_authz;
mod fleet;
mod framing;
mod fuzz_replay;
mod gateway_services;
mod grpc_edge;
mod grpc_proxy;
mod grpc_web;
mod http2_edge;
mod http_upstream;
mod identity;
mod json_mapping;
mod limits;
mod log_hygiene;
mod mcp;
mod metadata;
mod metrics;
mod observability;
mod one_thread;
mod openapi;
mod paths;
mod query_params;
mod rate_limit;
mod reload;
mod reload_errors;
mod rest_bindings;
mod schema_loading;
mod shutdown;
mod soak;
mod streaming;
mod timeouts;
mod tls;
mod tracing;
mod usage;
mod websocket_edge;
mod ws_to_grpc;
