//! Logging. Access lines go to the `portico::access` target: failed
//! requests at `info` (client errors) or `warn` (backend and gateway
//! errors), successful ones at `debug`. Set `RUST_LOG` to change levels,
//! e.g. `RUST_LOG=info,portico::access=debug` to log every request.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .try_init();
}
