//! The Feed service: a server stream of events (optionally failing part
//! way) and a client stream that counts what it receives.

use super::pb::{self, feed_server::Feed};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone, Default)]
pub struct FeedService {
    /// Watch streams whose client went away before the stream ended.
    cancelled: Arc<AtomicU64>,
    /// Events handed to the transport, over all Watch streams.
    sent: Arc<AtomicU64>,
}

impl FeedService {
    pub fn cancelled_watches(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub fn sent_events(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Feed for FeedService {
    type WatchStream = EventStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<EventStream>, Status> {
        let asked = req.metadata().clone().into_headers();
        let r = req.into_inner();
        if r.count < 0 || r.interval_ms < 0 {
            return Err(Status::invalid_argument(
                "count and interval_ms must not be negative",
            ));
        }
        let count = if r.count == 0 {
            5
        } else {
            r.count.min(100_000)
        };
        let interval = Duration::from_millis(r.interval_ms.min(10_000) as u64);
        let topic = if r.topic.is_empty() {
            "news".to_owned()
        } else {
            r.topic
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let cancelled = self.cancelled.clone();
        let sent = self.sent.clone();
        let padding = r.padding.clamp(0, 65_536) as usize;
        tokio::spawn(async move {
            for seq in 1..=count as i64 {
                if r.fail_after > 0 && seq > r.fail_after as i64 {
                    let _ = tx
                        .send(Err(Status::aborted("feed interrupted by the backend")))
                        .await;
                    return;
                }
                let mut text = format!("event {seq} on {topic}");
                if text.len() < padding {
                    text.extend(std::iter::repeat_n('.', padding - text.len()));
                }
                let event = pb::Event {
                    seq,
                    topic: topic.clone(),
                    text,
                };
                if tx.send(Ok(event)).await.is_err() {
                    cancelled.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                if !interval.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = tx.closed() => {
                            cancelled.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        });
        let mut resp: Response<EventStream> =
            Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)));
        super::probe::replies_asked_for(&asked, resp.metadata_mut());
        Ok(resp)
    }

    async fn upload(
        &self,
        req: Request<Streaming<pb::Event>>,
    ) -> Result<Response<pb::UploadSummary>, Status> {
        let mut events = req.into_inner();
        let mut summary = pb::UploadSummary::default();
        while let Some(event) = events.next().await {
            let event = event?;
            summary.count += 1;
            summary.last_seq = event.seq;
            if !event.topic.is_empty() && !summary.topics.contains(&event.topic) {
                summary.topics.push(event.topic);
            }
        }
        Ok(Response::new(summary))
    }
}
