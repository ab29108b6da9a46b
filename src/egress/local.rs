//! The gRPC services the gateway answers itself (health, server
//! reflection). A call of one of their methods resolves to a target whose
//! upstream is [`UpstreamId::GATEWAY`] ([`crate::routes::gateway`]); the
//! layer here answers it in process, outermost in the pipeline, so no
//! policy, metric or usage figure sees it, whichever protocol it came in on.

pub mod health;
pub mod reflection;

use super::grpc::GrpcEgress;
use crate::envelope::{Envelope, Reply, UpstreamId};
use crate::error::{GatewayError, Origin};
use futures_util::future::{BoxFuture, Either};
use http::{Request, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Code;
use tower::{Layer, Service};

/// A gRPC service the gateway answers itself.
pub type LocalService = tower::util::BoxCloneSyncService<
    Request<tonic::body::Body>,
    Response<tonic::body::Body>,
    Infallible,
>;

/// The gateway's services, each with the path prefix of its methods
/// (`/grpc.health.v1.Health/`).
pub struct LocalServices {
    pub services: Vec<(&'static str, LocalService)>,
    pub egress: GrpcEgress,
}

impl LocalServices {
    fn service(&self, path: &str) -> Option<LocalService> {
        self.services
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, service)| service.clone())
    }

    async fn call(self: Arc<Self>, env: Envelope) -> Result<Reply, GatewayError> {
        let Some(service) = self.service(env.target.path.as_str()) else {
            return Err(GatewayError::unknown_method(env.target.path.as_str()));
        };
        // A deadline that has passed (`grpc-timeout: 0S`) gets no answer,
        // as on any method: a health checker's zero is not a `SERVING`.
        if env
            .deadline()
            .is_some_and(|d| d <= std::time::Instant::now())
        {
            // (Answered before the pipeline's `no_time` layer.)
            return Err(match crate::policy::no_time::given_no_time(&env.ctx) {
                true => GatewayError::deadline_given_no_time("the gateway answered"),
                false => GatewayError::deadline_exceeded_before("the gateway answered"),
            });
        }
        self.egress.local(service, env).await.map_err(|mut e| {
            // The status is the gateway's own answer, not a backend's: a
            // question about something that is not there (an unknown
            // service, a symbol reflection does not know) is the client's,
            // logged as such, anything else the gateway's.
            if e.origin == Origin::Backend {
                e.origin = match e.grpc_code() {
                    Code::NotFound | Code::InvalidArgument | Code::Unimplemented => Origin::Client,
                    _ => Origin::Gateway,
                };
            }
            e
        })
    }
}

/// Answers the gateway's own methods before the rest of the pipeline.
#[derive(Clone)]
pub struct AnsweredLocally(pub Arc<LocalServices>);

impl<S> Layer<S> for AnsweredLocally {
    type Service = Local<S>;

    fn layer(&self, inner: S) -> Local<S> {
        Local {
            inner,
            services: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Local<S> {
    inner: S,
    services: Arc<LocalServices>,
}

impl<S> Service<Envelope> for Local<S>
where
    S: Service<Envelope, Response = Reply, Error = GatewayError>,
{
    type Response = Reply;
    type Error = GatewayError;
    // Every other call goes on unboxed: this layer costs it one comparison.
    type Future = Either<S::Future, BoxFuture<'static, Result<Reply, GatewayError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, env: Envelope) -> Self::Future {
        if env.target.upstream == UpstreamId::GATEWAY {
            Either::Right(Box::pin(self.services.clone().call(env)))
        } else {
            Either::Left(self.inner.call(env))
        }
    }
}
