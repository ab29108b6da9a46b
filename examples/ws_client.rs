//! A minimal WebSocket client for trying the bridge: connects, sends each
//! line of standard input as a text frame, and prints every frame it
//! receives.
//!
//! On a REST path (no subprotocol) an empty line, or the end of standard
//! input, ends the call's input with an empty text frame; replies keep
//! coming until the server closes. In a session (`portico.json.v1`), at the
//! end of standard input the client waits for every call it opened to end
//! (its `status` frame), then closes the session.
//!
//! ```text
//! cargo run --example ws_client -- 'ws://127.0.0.1:8080/v1/feed?count=3&interval_ms=500' < /dev/null
//! cargo run --example ws_client -- ws://127.0.0.1:8080/v1/chat portico.json.v1
//! ```

use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The `id` of a session frame, when it has the given key.
fn id_with(line: &str, key: &str) -> Option<String> {
    let frame: serde_json::Value = serde_json::from_str(line).ok()?;
    frame.get(key)?;
    Some(frame.get("id")?.as_str()?.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    const USAGE: &str = "usage: ws_client URL [SUBPROTOCOL]\n\n\
        Sends each line of standard input as a text frame and prints every frame\n\
        received. Without a SUBPROTOCOL (the plain dialect, on a method's path), an\n\
        empty line or the end of input ends the call's input. With portico.json.v1,\n\
        the end of input closes the session once every call opened has ended.";
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
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut input_open = true;
    // Calls opened and not yet ended (session dialects only).
    let mut open: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line? {
                Some(line) => {
                    if let Some(id) = id_with(&line, "open") {
                        open.insert(id);
                    }
                    tx.send(Message::text(line)).await?;
                }
                None => {
                    input_open = false;
                    if plain {
                        tx.send(Message::text("")).await?;
                    } else if open.is_empty() {
                        tx.send(Message::Close(None)).await?;
                    }
                }
            },
            frame = rx.next() => match frame.transpose()? {
                Some(Message::Text(t)) => {
                    println!("{t}");
                    if let Some(id) = id_with(&t, "status") {
                        open.remove(&id);
                        if !plain && !input_open && open.is_empty() {
                            tx.send(Message::Close(None)).await?;
                        }
                    }
                }
                Some(Message::Binary(b)) => println!("<{} bytes>", b.len()),
                Some(Message::Close(c)) => {
                    println!("closed: {c:?}");
                    break;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    Ok(())
}
