//! The gateway's view of each upstream for its own grpc.health.v1 service
//! and `/readyz`: reachable while at least one endpoint is in rotation
//! (healthy, not ejected) and accepts a TCP connection within the connect
//! timeout, checked on an interval over the endpoints as they are now (DNS
//! and file changes included). Without active health checks this is how a
//! dead single endpoint is noticed at all.

use super::upstream::Upstream;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// One receiver per upstream, in config order: `Some(true)` while
/// reachable, `None` until the first check has ended.
pub fn spawn(
    upstreams: &[Arc<Upstream>],
    interval: Duration,
) -> Vec<watch::Receiver<Option<bool>>> {
    upstreams
        .iter()
        .map(|u| {
            let (tx, rx) = watch::channel(None);
            let weak: Weak<Upstream> = Arc::downgrade(u);
            let timeout = u.config.connect_timeout;
            tokio::spawn(async move {
                loop {
                    let Some(upstream) = weak.upgrade() else {
                        return;
                    };
                    let now = super::upstream::endpoint::now_millis();
                    let candidates: Vec<String> = upstream
                        .snapshot()
                        .endpoints
                        .iter()
                        .filter(|e| e.is_available(now))
                        .map(|e| e.address.clone())
                        .collect();
                    drop(upstream);
                    let mut reachable = false;
                    for address in &candidates {
                        let connect = TcpStream::connect(address.as_str());
                        if let Ok(Ok(_)) = tokio::time::timeout(timeout, connect).await {
                            reachable = true;
                            break;
                        }
                    }
                    let now = Some(reachable);
                    tx.send_if_modified(|v| std::mem::replace(v, now) != now);
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = tx.closed() => return,
                    }
                }
            });
            rx
        })
        .collect()
}
