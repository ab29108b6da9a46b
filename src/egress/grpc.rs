//! gRPC egress: one multiplexed HTTP/2 channel per upstream (balanced over
//! its endpoints), the raw codec, and every call made in streaming shape so
//! headers, messages and trailers reach the ingress as the backend sent them.
//!
//! The deadline covers the whole call: it is sent as `grpc-timeout` and also
//! enforced here, so a backend that ignores it is still cut off. Dropping a
//! call (deadline, client gone, bad client message) resets the HTTP/2
//! stream, which the backend sees as a cancellation.

use super::codec::RawCodec;
use crate::config::{Limits, UpstreamConfig};
use crate::envelope::{Envelope, MessageStream, Payload, Reply, ReplyFrame, ReplyStream};
use crate::error::{ErrorKind, GatewayError, Origin};
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tonic::client::Grpc;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct GrpcEgress {
    /// Indexed by [`UpstreamId`](crate::envelope::UpstreamId).
    channels: Vec<Channel>,
    max_message_bytes: usize,
}

impl GrpcEgress {
    /// Prepares a lazily-connecting channel per upstream. Must run inside a
    /// tokio runtime (balanced channels spawn a task).
    pub fn new(upstreams: &[UpstreamConfig], limits: &Limits) -> Result<GrpcEgress, String> {
        let mut channels = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            let mut endpoints = Vec::with_capacity(u.endpoints.len());
            for e in &u.endpoints {
                let endpoint = Endpoint::from_shared(format!("http://{e}"))
                    .map_err(|err| format!("upstreams.{}: bad endpoint {e}: {err}", u.name))?
                    .connect_timeout(u.connect_timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_timeout(Duration::from_secs(10))
                    .initial_stream_window_size(1 << 20)
                    .initial_connection_window_size(4 << 20);
                endpoints.push(endpoint);
            }
            let channel = if endpoints.len() == 1 {
                endpoints.remove(0).connect_lazy()
            } else {
                Channel::balance_list(endpoints.into_iter())
            };
            channels.push(channel);
        }
        Ok(GrpcEgress {
            channels,
            max_message_bytes: limits.max_grpc_message_bytes,
        })
    }

    pub async fn call(&self, env: Envelope) -> Result<Reply, GatewayError> {
        let channel = self
            .channels
            .get(env.target.upstream.0)
            .ok_or_else(|| GatewayError::internal("route names an upstream with no channel"))?
            .clone();
        let mut grpc = Grpc::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        grpc.ready().await.map_err(|e| {
            GatewayError::new(
                ErrorKind::BackendUnavailable,
                Origin::Backend,
                format!("backend unavailable: {e}"),
            )
        })?;

        let mut deadline = env
            .timeout
            .map(|t| Box::pin(tokio::time::sleep_until(Instant::now() + t)));
        let (messages, mut client_failed) = match env.payload {
            Payload::Unary(message) => (GuardedStream::single(message), None),
            Payload::Stream(messages) => {
                let (stream, rx) = GuardedStream::new(messages);
                (stream, Some(rx))
            }
        };
        let mut request = tonic::Request::from_parts(
            MetadataMap::from_headers(env.metadata),
            Default::default(),
            messages,
        );
        if let Some(t) = env.timeout {
            request.set_timeout(t);
        }
        let call = grpc.streaming(request, env.target.path.clone(), RawCodec);
        // The backend may answer only after the client's whole stream (client
        // streaming), so a bad client message and the deadline race the call.
        let response = tokio::select! {
            biased;
            Some(err) = client_error(&mut client_failed) => return Err(err),
            _ = expiry(&mut deadline) => return Err(GatewayError::deadline_exceeded()),
            r = call => r.map_err(|s| GatewayError::from_backend_status(&s))?,
        };
        let (metadata, inner, _) = response.into_parts();
        Ok(Reply {
            metadata: metadata.into_headers(),
            body: reply_stream(CallState {
                inner,
                client_failed,
                deadline,
                done: false,
            }),
        })
    }
}

/// Resolves with the client's stream error, or `None` once its stream ended
/// well (the receiver is then cleared, as a oneshot may not be polled again);
/// pends forever when there is nothing to watch.
async fn client_error(rx: &mut Option<oneshot::Receiver<GatewayError>>) -> Option<GatewayError> {
    let Some(receiver) = rx.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = receiver.await.ok();
    *rx = None;
    outcome
}

async fn expiry(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(d) => d.as_mut().await,
        None => std::future::pending().await,
    }
}

struct CallState {
    inner: tonic::Streaming<Bytes>,
    client_failed: Option<oneshot::Receiver<GatewayError>>,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
}

/// The backend's messages, then its trailers; or the first error (the
/// backend's status, the deadline, or the client's bad message).
fn reply_stream(state: CallState) -> ReplyStream {
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let outcome = tokio::select! {
                biased;
                failed = client_error(&mut st.client_failed) => match failed {
                    Some(err) => Err(err),
                    // The client's stream ended well; nothing more to watch.
                    None => continue,
                },
                _ = expiry(&mut st.deadline) => Err(GatewayError::deadline_exceeded()),
                m = st.inner.message() => m.map_err(|s| GatewayError::from_backend_status(&s)),
            };
            return match outcome {
                Ok(Some(message)) => Some((Ok(ReplyFrame::Message(message)), st)),
                Ok(None) => {
                    st.done = true;
                    let trailers = st
                        .inner
                        .trailers()
                        .await
                        .ok()
                        .flatten()
                        .map(MetadataMap::into_headers);
                    Some((Ok(ReplyFrame::Trailers(trailers.unwrap_or_default())), st))
                }
                Err(err) => {
                    st.done = true;
                    Some((Err(err), st))
                }
            };
        }
    }))
}

/// The client's messages as tonic sends them. On the first bad message the
/// error goes to the receiver and the stream stays open without ending, so
/// the call is aborted (the backend sees a cancellation), never half-closed
/// as if the input were complete.
struct GuardedStream {
    inner: MessageStream,
    /// Taken when the client's stream fails; from then on the stream pends.
    failed: Option<oneshot::Sender<GatewayError>>,
}

impl GuardedStream {
    fn new(inner: MessageStream) -> (GuardedStream, oneshot::Receiver<GatewayError>) {
        let (tx, rx) = oneshot::channel();
        (
            GuardedStream {
                inner,
                failed: Some(tx),
            },
            rx,
        )
    }

    fn single(message: Bytes) -> GuardedStream {
        let (tx, _) = oneshot::channel();
        GuardedStream {
            inner: Box::pin(futures_util::stream::once(async move { Ok(message) })),
            failed: Some(tx),
        }
    }
}

impl Stream for GuardedStream {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.failed.is_none() {
            return Poll::Pending;
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(bytes)),
            Poll::Ready(Some(Err(err))) => {
                if let Some(tx) = self.failed.take() {
                    let _ = tx.send(err);
                }
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
