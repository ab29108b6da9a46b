//! Opens many WebSocket calls and holds them open, for measuring the
//! gateway's memory per idle call (bench/ws_idle.sh drives it).
//!
//! Each connection opens one server-streaming `Feed.Watch` call (plain
//! dialect on `/v1/feed`) that sends its first event at once and the next
//! only after ten minutes: once the first event has arrived the call is
//! established end to end, and then it is idle. Prints `READY <n>` when all
//! are open, then holds them until stdin closes.

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let gateway = args.next().ok_or("usage: ws_idle HOST:PORT COUNT")?;
    let count: usize = args
        .next()
        .ok_or("usage: ws_idle HOST:PORT COUNT")?
        .parse()?;
    // With a third argument "sessions", open multiplexed sessions with no call
    // (the cost of the connection alone).
    let sessions_only = args.next().as_deref() == Some("sessions");
    let url = if sessions_only {
        format!("ws://{gateway}/ws")
    } else {
        format!("ws://{gateway}/v1/feed?count=2&interval_ms=600000&topic=idle")
    };
    let mut sockets = Vec::with_capacity(count);
    // Open in batches so the accept queue is never the bottleneck.
    for batch in (0..count).collect::<Vec<_>>().chunks(200) {
        let opened = futures_util::future::join_all(batch.iter().map(|_| {
            let url = url.clone();
            async move {
                use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                let mut request = url.into_client_request()?;
                if sessions_only {
                    request
                        .headers_mut()
                        .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
                    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
                    return Ok(ws);
                }
                let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(_))) => {
                            return Ok::<_, tokio_tungstenite::tungstenite::Error>(ws)
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(e),
                        None => {
                            return Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)
                        }
                    }
                }
            }
        }))
        .await;
        for ws in opened {
            sockets.push(ws?);
        }
    }
    println!("READY {}", sockets.len());
    // Hold the calls (answering pings) until told to stop.
    let hold = tokio::spawn(async move {
        let mut streams =
            futures_util::stream::select_all(sockets.into_iter().map(|ws| ws.boxed()));
        while streams.next().await.is_some() {}
    });
    let mut buf = [0u8; 1];
    let _ = tokio::io::stdin().read(&mut buf).await;
    hold.abort();
    Ok(())
}
