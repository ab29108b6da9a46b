//! A WebSocket spoken byte by byte: for clients no library would be (one
//! that never answers a ping, one that breaks RFC 6455 on purpose).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A session in the JSON dialect at `/ws`, past its `101`.
pub async fn session(addr: std::net::SocketAddr) -> TcpStream {
    session_at(addr, "/ws").await
}

/// A session in the JSON dialect at `path` (a method's path makes it a
/// single-call session), past its `101`.
pub async fn session_at(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: portico.json.v1\r\n\r\n"
    );
    sock.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        sock.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    sock
}

/// A client frame, masked with a zero key (so the payload reads as is).
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}
