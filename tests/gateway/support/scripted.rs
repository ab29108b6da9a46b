//! A gRPC backend that answers every call with one scripted reply, written
//! with the `h2` crate directly: response headers the test picks, an
//! optional message, and the status in the trailers. For replies a tonic
//! server will not send (headers and then a failed status with no message;
//! messages a test encodes by hand, with no generated code behind them).

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One reply, sent to every call.
#[derive(Clone, Default)]
pub struct Script {
    /// Response headers besides `content-type: application/grpc`.
    pub headers: Vec<(&'static str, String)>,
    /// A wait before the reply starts (its headers and first message come
    /// together after it, as grpcio sends them).
    pub pause_before_reply: std::time::Duration,
    /// Messages' encoded bytes (each framed by the backend), in order.
    pub messages: Vec<Vec<u8>>,
    /// A wait between the messages and the status (a backend failing
    /// mid-stream, after the gateway has passed the messages on).
    pub pause_before_status: std::time::Duration,
    /// The gRPC status code in the trailers.
    pub status: u32,
    pub status_message: &'static str,
    /// More status fields, as written (`grpc-status-details-bin`...).
    pub trailers: Vec<(&'static str, &'static str)>,
    /// The status in the response headers, with no body (no messages).
    pub trailers_only: bool,
    /// How the reply ends after its messages: with the status (the
    /// default), or broken off.
    pub ending: Ending,
}

/// How a scripted reply ends after its messages.
#[derive(Clone, Copy, Default, Debug)]
pub enum Ending {
    /// The trailers with the status.
    #[default]
    Status,
    /// `RST_STREAM` with this reason instead of trailers.
    Reset(h2::Reason),
    /// Half of one more message's frame, then the stream's end, no status.
    InsideAMessage,
}

/// Serves `script` on a free port of 127.0.0.1; returns the address and a
/// count of the calls received.
pub async fn serve(script: Script) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counted = counted.clone();
            let script = script.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                // Each call on its own task: the connection is driven by
                // `accept` alone, which must keep running while a call waits.
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let script = script.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(script.pause_before_reply).await;
                        let mut response = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc");
                        for (name, value) in &script.headers {
                            response = response.header(*name, value.as_str());
                        }
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", script.status.into());
                        if !script.status_message.is_empty() {
                            trailers.insert("grpc-message", script.status_message.parse().unwrap());
                        }
                        for (name, value) in &script.trailers {
                            trailers.insert(*name, value.parse().unwrap());
                        }
                        if script.trailers_only {
                            let mut response = response.body(()).unwrap();
                            response.headers_mut().extend(trailers);
                            let _ = respond.send_response(response, true);
                            return;
                        }
                        let Ok(mut send) = respond.send_response(response.body(()).unwrap(), false)
                        else {
                            return;
                        };
                        for message in &script.messages {
                            let _ =
                                send.send_data(Bytes::from(super::frame_bytes(0, message)), false);
                        }
                        tokio::time::sleep(script.pause_before_status).await;
                        match script.ending {
                            Ending::Status => {
                                let _ = send.send_trailers(trailers);
                            }
                            Ending::Reset(reason) => send.send_reset(reason),
                            Ending::InsideAMessage => {
                                let framed = super::frame_bytes(0, b"\x0a\x05shelf");
                                let half = Bytes::from(framed[..framed.len() / 2].to_vec());
                                let _ = send.send_data(half, true);
                            }
                        }
                    });
                }
            });
        }
    });
    (addr, calls)
}
