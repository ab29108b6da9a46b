//! A minimal WebSocket client for trying the bridge: connects, sends each
//! line of standard input as a text frame, and prints every frame it
//! receives until the server closes. On a REST path (no subprotocol) an
//! empty line, or the end of standard input, ends the call's input with an
//! empty text frame; replies keep coming until the server closes.
//!
//! ```text
//! cargo run --example ws_client -- 'ws://127.0.0.1:8080/v1/feed?count=3&interval_ms=500' < /dev/null
//! cargo run --example ws_client -- ws://127.0.0.1:8080/v1/chat portico.json.v1
//! ```

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    const USAGE: &str = "usage: ws_client URL [SUBPROTOCOL]\n\n\
        Sends each line of standard input as a text frame and prints every frame\n\
        received. Without a SUBPROTOCOL (the plain dialect, on a method's path), an\n\
        empty line or the end of input ends the call's input.";
    let url = args.next().ok_or(USAGE)?;
    if url == "--help" || url == "-h" {
        println!("{USAGE}");
        return Ok(());
    }
    let mut request = url.into_client_request()?;
    let protocol = args.next();
    let plain = protocol.is_none();
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.parse()?);
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(Message::text(line)).await.is_err() {
                return;
            }
        }
        if plain {
            let _ = tx.send(Message::text("")).await;
        }
        // The sending half stays open: dropping it would end the task
        // without a close frame, and the server is the one that closes.
        std::future::pending::<()>().await;
    });
    while let Some(frame) = rx.next().await {
        match frame? {
            Message::Text(t) => println!("{t}"),
            Message::Binary(b) => println!("<{} bytes>", b.len()),
            Message::Close(c) => {
                println!("closed: {c:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
