//! The Chat service: one room. Every message a participant sends reaches
//! every participant connected at that time, stamped with the server time.
//! A participant's reply stream ends when it stops sending, after what
//! the room held for it at that moment, its own last message included.

use super::pb::{self, chat_server::Chat};
use std::pin::Pin;
use std::time::SystemTime;
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone)]
pub struct ChatService {
    room: broadcast::Sender<pb::ChatMessage>,
}

impl Default for ChatService {
    fn default() -> Self {
        ChatService {
            room: broadcast::channel(1024).0,
        }
    }
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::ChatMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Chat for ChatService {
    type ConverseStream = MessageStream;

    async fn converse(
        &self,
        req: Request<Streaming<pb::ChatMessage>>,
    ) -> Result<Response<MessageStream>, Status> {
        let mut inbound = req.into_inner();
        let mut room = self.room.subscribe();
        let sender = self.room.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    incoming = inbound.next() => match incoming {
                        Some(Ok(mut m)) => {
                            m.sent_at = Some(prost_types::Timestamp::from(SystemTime::now()));
                            let _ = sender.send(m);
                        }
                        // The client ended its side: what the room already
                        // holds for it, its own last message included, is
                        // still delivered, then the call ends.
                        None => {
                            for _ in 0..room.len() {
                                let m = match room.try_recv() {
                                    Ok(m) => Ok(m),
                                    Err(broadcast::error::TryRecvError::Lagged(n)) => Err(
                                        Status::resource_exhausted(format!("too slow: {n} messages dropped")),
                                    ),
                                    Err(_) => return,
                                };
                                let failed = m.is_err();
                                if tx.send(m).await.is_err() || failed {
                                    return;
                                }
                            }
                            return;
                        }
                        Some(Err(_)) => return,
                    },
                    delivered = room.recv() => match delivered {
                        Ok(m) => if tx.send(Ok(m)).await.is_err() { return },
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            let _ = tx.send(Err(Status::resource_exhausted(format!("too slow: {n} messages dropped")))).await;
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
