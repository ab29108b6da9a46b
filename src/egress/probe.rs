//! The gateway's view of each upstream: reachable when at least one of its
//! endpoints accepts a TCP connection within the connect timeout, checked
//! on an interval. Feeds the gateway's own grpc.health.v1 service.

use crate::config::UpstreamConfig;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// One receiver per upstream, in config order; `true` while reachable.
pub fn spawn(upstreams: &[UpstreamConfig], interval: Duration) -> Vec<watch::Receiver<bool>> {
    upstreams
        .iter()
        .map(|u| {
            let (tx, rx) = watch::channel(false);
            let endpoints = u.seed_addresses();
            let timeout = u.connect_timeout;
            tokio::spawn(async move {
                loop {
                    let mut reachable = false;
                    for e in &endpoints {
                        if let Ok(Ok(_)) =
                            tokio::time::timeout(timeout, TcpStream::connect(e.as_str())).await
                        {
                            reachable = true;
                            break;
                        }
                    }
                    tx.send_if_modified(|v| std::mem::replace(v, reachable) != reachable);
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
