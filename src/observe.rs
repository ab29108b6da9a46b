//! Logging and metrics. Access lines go to the `portico::access` target:
//! failed requests at `info` (client errors) or `warn` (backend and gateway
//! errors), successful ones at `debug`. Set `RUST_LOG` to change levels,
//! e.g. `RUST_LOG=info,portico::access=debug` to log every request.
//! [`metrics`] counts every call and serves them on the admin port.

pub mod access_log;
pub mod call_record;
pub mod call_stats;
pub mod metrics;
pub mod request_scope;
pub mod traces;
pub mod usage;

use tracing_subscriber::EnvFilter;

/// Where log lines go. A running gateway's log is its standard output; a
/// command whose standard output is its product (`check`'s listing,
/// `openapi`'s document) logs to standard error, so that product can be
/// redirected to a file or piped whole.
#[derive(Clone, Copy)]
pub enum LogStream {
    Stdout,
    Stderr,
}

pub fn init(stream: LogStream) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colors only for a terminal: a log redirected to a file or a
    // collector gets plain text, not escape codes.
    let terminal = match stream {
        LogStream::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
        LogStream::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .event_format(request_scope::WithRequestId::default());
    let _ = match stream {
        LogStream::Stdout => subscriber.try_init(),
        LogStream::Stderr => subscriber.with_writer(std::io::stderr).try_init(),
    };
}

/// A `tracing` event about a failed call at the level its origin calls
/// for: `info` for the client's mistakes, `warn` for the backend's and the
/// gateway's, so an operator's warnings are about their own systems.
macro_rules! failure_event {
    ($origin:expr, $($event:tt)+) => {
        match $origin {
            $crate::error::Origin::Client => tracing::info!($($event)+),
            _ => tracing::warn!($($event)+),
        }
    };
}
pub(crate) use failure_event;

/// Logs a failed request: client errors at `info`, backend and gateway
/// errors at `warn`, so an operator's warnings are about their systems.
/// `status` is the HTTP status the client got (200 for gRPC and
/// gRPC-Web, whose outcome is in `grpc-status`).
pub fn request_failed(
    protocol: call_record::ClientProtocol,
    path: &str,
    started: std::time::Instant,
    status: http::StatusCode,
    err: &crate::error::GatewayError,
) {
    // A client that left is no failure of the gateway's or the backend's:
    // the access log and the metrics have it, as `CANCELLED`.
    if err.is_client_gone() {
        return;
    }
    let micros = started.elapsed().as_micros() as u64;
    let protocol = protocol.as_str();
    let status = status.as_u16();
    let code = err.grpc_code() as i32;
    let origin = err.origin.as_str();
    failure_event!(err.origin, target: "portico::access", protocol, path, micros, status, code, origin, error = err.message.as_str());
}

/// Logs a call that failed after its reply started (a stream's error),
/// at the levels of [`request_failed`]. The reply is sent outside the
/// request's scope, so the call's id is passed in (from
/// [`request_scope::current`], taken while the request was served).
pub fn stream_failed(
    protocol: call_record::ClientProtocol,
    path: &str,
    request_id: Option<&http::HeaderValue>,
    err: &crate::error::GatewayError,
) {
    if err.is_client_gone() {
        return;
    }
    let log = || {
        let protocol = protocol.as_str();
        let code = err.grpc_code() as i32;
        let origin = err.origin.as_str();
        failure_event!(err.origin, target: "portico::access", protocol, path, code, origin, error = err.message.as_str(), "call ended with an error after its reply started");
    };
    match request_id {
        Some(id) => request_scope::with(id.clone(), log),
        None => log(),
    }
}
