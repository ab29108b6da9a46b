//! gRPC egress: one multiplexed HTTP/2 channel per upstream (balanced over
//! its endpoints), the raw codec, and all four call kinds.
//!
//! A unary call's deadline is sent as `grpc-timeout` and also enforced here,
//! so a backend that ignores it is still cut off: dropping the call resets
//! the HTTP/2 stream, which the backend sees as a cancellation.

use super::codec::RawCodec;
use crate::config::{Limits, UpstreamConfig};
use crate::envelope::{CallKind, Envelope, MessageStream, Payload, Reply, ReplyBody};
use crate::error::{ErrorKind, GatewayError, Origin};
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
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
        let path = env.target.path.clone();
        let metadata = MetadataMap::from_headers(env.metadata);
        let timeout = env.timeout;
        match (env.target.kind, env.payload) {
            (CallKind::Unary, Payload::Unary(message)) => {
                let call = grpc.unary(grpc_request(metadata, timeout, message), path, RawCodec);
                let response = match env.timeout {
                    Some(t) => tokio::time::timeout(t, call)
                        .await
                        .map_err(|_| GatewayError::deadline_exceeded())?,
                    None => call.await,
                }
                .map_err(|s| GatewayError::from_backend_status(&s))?;
                let (metadata, message, _) = response.into_parts();
                Ok(Reply {
                    metadata: metadata.into_headers(),
                    body: ReplyBody::Unary(message),
                })
            }
            (CallKind::ServerStreaming, Payload::Unary(message)) => {
                let response = grpc
                    .server_streaming(grpc_request(metadata, timeout, message), path, RawCodec)
                    .await
                    .map_err(|s| GatewayError::from_backend_status(&s))?;
                let (metadata, stream, _) = response.into_parts();
                Ok(Reply {
                    metadata: metadata.into_headers(),
                    body: ReplyBody::Stream(Box::pin(ReplyStream::new(stream, None))),
                })
            }
            (CallKind::ClientStreaming, Payload::Stream(messages)) => {
                let (messages, mut client_failed) = guard_client_stream(messages);
                let call = grpc.client_streaming(
                    grpc_request(metadata, timeout, messages),
                    path,
                    RawCodec,
                );
                // A bad client message aborts the call (the backend sees a
                // cancellation) rather than half-closing it as if complete.
                let response = tokio::select! {
                    r = call => r.map_err(|s| GatewayError::from_backend_status(&s))?,
                    Ok(err) = &mut client_failed => return Err(err),
                };
                let (metadata, message, _) = response.into_parts();
                Ok(Reply {
                    metadata: metadata.into_headers(),
                    body: ReplyBody::Unary(message),
                })
            }
            (CallKind::Bidi, Payload::Stream(messages)) => {
                let (messages, client_failed) = guard_client_stream(messages);
                let response = grpc
                    .streaming(grpc_request(metadata, timeout, messages), path, RawCodec)
                    .await
                    .map_err(|s| GatewayError::from_backend_status(&s))?;
                let (metadata, stream, _) = response.into_parts();
                Ok(Reply {
                    metadata: metadata.into_headers(),
                    body: ReplyBody::Stream(Box::pin(ReplyStream::new(
                        stream,
                        Some(client_failed),
                    ))),
                })
            }
            (kind, _) => Err(GatewayError::internal(format!(
                "payload shape does not fit a {kind:?} call"
            ))),
        }
    }
}

fn grpc_request<T>(
    metadata: MetadataMap,
    timeout: Option<Duration>,
    payload: T,
) -> tonic::Request<T> {
    let mut r = tonic::Request::from_parts(metadata, Default::default(), payload);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

/// Turns the client's message stream into the plain stream tonic sends. On
/// the first bad message the error goes to the returned receiver and the
/// stream stays open without ending, so the call is aborted (the backend
/// sees a cancellation), never half-closed as if the input were complete.
fn guard_client_stream(
    messages: MessageStream,
) -> (GuardedStream, oneshot::Receiver<GatewayError>) {
    let (tx, rx) = oneshot::channel();
    (
        GuardedStream {
            inner: messages,
            failed: Some(tx),
        },
        rx,
    )
}

struct GuardedStream {
    inner: MessageStream,
    /// Taken when the client's stream fails; from then on the stream pends.
    failed: Option<oneshot::Sender<GatewayError>>,
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

/// A backend's response stream; ends after the first error, and ends with
/// the client's error if the client's own stream failed first.
struct ReplyStream {
    inner: tonic::Streaming<Bytes>,
    client_failed: Option<oneshot::Receiver<GatewayError>>,
    done: bool,
}

impl ReplyStream {
    fn new(
        inner: tonic::Streaming<Bytes>,
        client_failed: Option<oneshot::Receiver<GatewayError>>,
    ) -> Self {
        ReplyStream {
            inner,
            client_failed,
            done: false,
        }
    }
}

impl Stream for ReplyStream {
    type Item = Result<Bytes, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(rx) = self.client_failed.as_mut() {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(err)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(Err(_)) => self.client_failed = None,
                Poll::Pending => {}
            }
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(m))) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                Poll::Ready(Some(Err(GatewayError::from_backend_status(&status))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future as _;
