//! The plumbing every policy shares: a tower layer holding one policy
//! instance per route (or none), which hands each envelope of a route with a
//! policy to that policy along with the rest of the pipeline. A policy only
//! says what it does to a call.

use crate::envelope::{Envelope, Reply};
use crate::error::GatewayError;
use futures_util::future::{BoxFuture, Either};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The rest of the pipeline, as a policy sees it: already polled ready.
pub type Next = tower::util::BoxCloneSyncService<Envelope, Reply, GatewayError>;

/// One policy, acting on the calls of the routes it is attached to.
pub trait Policy: Send + Sync + 'static {
    /// Answers the call itself (refusal, cached reply) or passes it to `next`.
    fn call(
        self: Arc<Self>,
        env: Envelope,
        next: Next,
    ) -> BoxFuture<'static, Result<Reply, GatewayError>>;
}

/// A policy per route index (`None`: the route does not have it).
pub struct PerRoute<P> {
    by_route: Arc<Vec<Option<Arc<P>>>>,
}

impl<P> Clone for PerRoute<P> {
    fn clone(&self) -> Self {
        PerRoute {
            by_route: self.by_route.clone(),
        }
    }
}

impl<P> PerRoute<P> {
    pub fn new(by_route: Vec<Option<Arc<P>>>) -> Self {
        PerRoute {
            by_route: Arc::new(by_route),
        }
    }

    /// The policy of the route at `index`, if it has one.
    pub fn get(&self, index: usize) -> Option<&Arc<P>> {
        self.by_route.get(index).and_then(Option::as_ref)
    }
}

impl<P, S> Layer<S> for PerRoute<P> {
    type Service = PerRouteService<P, S>;

    fn layer(&self, inner: S) -> PerRouteService<P, S> {
        PerRouteService {
            inner,
            by_route: self.by_route.clone(),
        }
    }
}

pub struct PerRouteService<P, S> {
    inner: S,
    by_route: Arc<Vec<Option<Arc<P>>>>,
}

impl<P, S: Clone> Clone for PerRouteService<P, S> {
    fn clone(&self) -> Self {
        PerRouteService {
            inner: self.inner.clone(),
            by_route: self.by_route.clone(),
        }
    }
}

impl<P, S> Service<Envelope> for PerRouteService<P, S>
where
    P: Policy,
    S: Service<Envelope, Response = Reply, Error = GatewayError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Reply;
    type Error = GatewayError;
    /// A route without the policy passes straight on: no box of its own
    /// per call (the pipeline's innermost service boxes its future once,
    /// so these stay small however many policies are stacked).
    type Future = Either<BoxFuture<'static, Result<Reply, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, env: Envelope) -> Self::Future {
        match self.by_route.get(env.target.route) {
            Some(Some(policy)) => {
                // The service that was polled ready is the one to hand on.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                Either::Left(policy.clone().call(env, Next::new(ready)))
            }
            _ => Either::Right(self.inner.call(env)),
        }
    }
}
