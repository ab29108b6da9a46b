//! A connection's place under `server.limits.max_connections`, shared by
//! the listener that grants it and the WebSocket upgrade that keeps it.

use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;

/// A connection's place under `max_connections`. A request carries it (as
/// an extension) so a WebSocket upgrade can take it over: the session then
/// counts as the connection it is, for as long as it lives.
#[derive(Clone)]
pub struct ConnectionSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl ConnectionSlot {
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        ConnectionSlot(Arc::new(std::sync::Mutex::new(Some(permit))))
    }

    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
