//! A connection's place under the connection limits, shared by the
//! listener that grants it and the WebSocket upgrade that keeps it:
//! `server.limits.max_connections` in all and `max_connections_per_ip` per
//! client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedSemaphorePermit;

/// Open connections per client address.
#[derive(Default)]
pub struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// A place for one more connection from `ip`, unless it has `cap` open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<IpPlace> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpPlace {
            table: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's count under its address; given back when dropped.
pub struct IpPlace {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpPlace {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What a connection holds while it is open.
pub struct Held {
    _permit: OwnedSemaphorePermit,
    _ip: IpPlace,
}

/// A connection's places under the limits. A request carries it (as an
/// extension) so a WebSocket upgrade can take it over: the session then
/// counts as the connection it is, for as long as it lives.
#[derive(Clone)]
pub struct ConnectionSlot(Arc<Mutex<Option<Held>>>);

impl ConnectionSlot {
    pub fn new(permit: OwnedSemaphorePermit, ip: IpPlace) -> Self {
        ConnectionSlot(Arc::new(Mutex::new(Some(Held {
            _permit: permit,
            _ip: ip,
        }))))
    }

    pub fn take(&self) -> Option<Held> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
