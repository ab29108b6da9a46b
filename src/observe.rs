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

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colors only for a terminal: a log redirected to a file or a
    // collector gets plain text, not escape codes.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .event_format(request_scope::WithRequestId::default())
        .try_init();
}

/// Logs a failed request: client errors at `info`, backend and gateway
/// errors at `warn`, so an operator's warnings are about their systems.
pub fn request_failed(
    protocol: &str,
    path: &str,
    started: std::time::Instant,
    err: &crate::error::GatewayError,
) {
    let micros = started.elapsed().as_micros() as u64;
    match err.origin {
        crate::error::Origin::Client => {
            tracing::info!(target: "portico::access", protocol, path, micros, status = err.http_status().as_u16(), origin = "client", error = err.message.as_str())
        }
        origin => {
            tracing::warn!(target: "portico::access", protocol, path, micros, status = err.http_status().as_u16(), origin = origin.as_str(), error = err.message.as_str())
        }
    }
}
