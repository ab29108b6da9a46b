//! The gateway's view of each upstream for its own grpc.health.v1 service
//! and `/readyz`: reachable while at least one endpoint is in rotation
//! (healthy, not ejected) and accepts a TCP connection within the connect
//! timeout, checked on an interval over the endpoints as they are now (DNS
//! and file changes included), and again at once whenever an endpoint
//! leaves or rejoins rotation (a health check, an ejection and its end, a
//! new endpoint set), so the health service and `/readyz` move together.
//! Without active health checks this is how a dead single endpoint is
//! noticed at all.

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
            let mut changes = u.rotation_changes();
            tokio::spawn(async move {
                loop {
                    let Some(upstream) = weak.upgrade() else {
                        return;
                    };
                    changes.borrow_and_update();
                    let now = super::upstream::endpoint::now_millis();
                    let snapshot = upstream.snapshot();
                    drop(upstream);
                    let candidates: Vec<String> = snapshot
                        .endpoints
                        .iter()
                        .filter(|e| e.is_available(now))
                        .map(|e| e.address.clone())
                        .collect();
                    // An ejection ending is a change of rotation no one
                    // announces: look again when the first one ends.
                    let wait = snapshot
                        .endpoints
                        .iter()
                        .filter_map(|e| e.ejection_ends(now))
                        .min()
                        .map_or(interval, |end| {
                            interval.min(Duration::from_millis(end - now + 1))
                        });
                    drop(snapshot);
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
                        _ = tokio::time::sleep(wait) => {}
                        // An error: the upstream is gone, which the next
                        // turn sees.
                        _ = changes.changed() => {}
                        _ = tx.closed() => return,
                    }
                }
            });
            rx
        })
        .collect()
}
