//! A minimal WebSocket client for trying the bridge: connects, sends each
//! line of standard input as a text frame, and prints every frame it
//! receives.
//!
//! On a method's path, the end of standard input ends the call's input
//! (an empty text frame without a subprotocol, where an empty line does
//! the same; `{"end":true}` with `portico.json.v1`), and replies keep
//! coming until the server closes. In a multiplexed session (`/ws`), where
//! calls are opened by `open` frames, the end of standard input closes the
//! session once every call it opened has ended (its `status` frame, or an
//! `error` frame refusing the `open`).
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
        empty line or the end of input ends the call's input; with portico.json.v1 on\n\
        a method's path, the end of input sends {\"end\":true}. In a /ws session, the\n\
        end of input closes the session once every call it opened has ended.";
    let url = args.next().ok_or(USAGE)?;
    if url == "--help" || url == "-h" {
        println!("{USAGE}");
        return Ok(());
    }
    // `/ws` is the multiplexed session's path; elsewhere a session is
    // recognised by its first `open` frame.
    let mut request = url.into_client_request()?;
    let mut session = request.uri().path() == "/ws";
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
    // A multiplexed session: the calls opened and not yet ended, and those
    // that have answered (an `error` for one that has not refused its open).
    let mut open: HashSet<String> = HashSet::new();
    let mut answered: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            line = lines.next_line(), if input_open => match line? {
                Some(line) => {
                    if let Some(id) = id_with(&line, "open") {
                        session = true;
                        answered.remove(&id);
                        open.insert(id);
                    }
                    tx.send(Message::text(line)).await?;
                }
                None => {
                    input_open = false;
                    if plain {
                        tx.send(Message::text("")).await?;
                    } else if !session {
                        tx.send(Message::text(r#"{"end":true}"#)).await?;
                    } else if open.is_empty() {
                        tx.send(Message::Close(None)).await?;
                    }
                }
            },
            frame = rx.next() => match frame.transpose()? {
                Some(Message::Text(t)) => {
                    println!("{t}");
                    let ended = id_with(&t, "status").or_else(|| {
                        // An `error` before any answer refused the open.
                        id_with(&t, "error").filter(|id| !answered.contains(id))
                    });
                    if let Some(id) = id_with(&t, "result").or_else(|| id_with(&t, "headers")) {
                        answered.insert(id);
                    }
                    if let Some(id) = ended {
                        if open.remove(&id) && session && !input_open && open.is_empty() {
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
