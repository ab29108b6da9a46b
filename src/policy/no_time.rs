//! A call whose client gave it no time (`grpc-timeout: 0S`,
//! `connect-timeout-ms: 0`) is refused before any policy waits on
//! anything (an identity provider, Redis): the client's doing, said the
//! same whichever policies the route has.

use crate::envelope::{Envelope, Reply, RequestCtx};
use crate::error::GatewayError;
use futures_util::future::{Either, Ready};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// Whether the client's own timeout left the call no time at all.
pub fn given_no_time(ctx: &RequestCtx) -> bool {
    ctx.client_timeout == Some(Duration::ZERO)
}

#[derive(Clone, Copy, Default)]
pub struct NoTimeLayer;

impl<S> Layer<S> for NoTimeLayer {
    type Service = NoTime<S>;
    fn layer(&self, inner: S) -> NoTime<S> {
        NoTime { inner }
    }
}

#[derive(Clone)]
pub struct NoTime<S> {
    inner: S,
}

impl<S> Service<Envelope> for NoTime<S>
where
    S: Service<Envelope, Response = Reply, Error = GatewayError>,
{
    type Response = Reply;
    type Error = GatewayError;
    type Future = Either<S::Future, Ready<Result<Reply, GatewayError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, env: Envelope) -> Self::Future {
        if given_no_time(&env.ctx) {
            return Either::Right(futures_util::future::ready(Err(
                GatewayError::deadline_given_no_time("the backend was called"),
            )));
        }
        Either::Left(self.inner.call(env))
    }
}
