//! A gRPC backend, or a proxy or load balancer in front of it, may answer a
//! call with a plain HTTP error (401 from an auth proxy, 503 from a load
//! balancer) instead of gRPC. tonic would read that body as gRPC frames and
//! report INTERNAL whatever the status. This wrapper around the connection
//! turns such a reply into the trailers-only gRPC answer that gRPC's "HTTP
//! to gRPC status code mapping" gives, with the first bytes of the body in
//! the message, so the client learns what the proxy said. A gRPC reply's
//! status passes [`super::status_mend`] on its way to tonic.

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::Code;

/// How much of a non-gRPC reply's body goes into the message.
const QUOTED_BYTES: usize = 256;

/// gRPC's mapping of an HTTP status that came without a gRPC status
/// (grpc/doc/http-grpc-status-mapping.md).
pub fn grpc_code_of_http_reply(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[derive(Clone)]
pub struct NonGrpcReplies<S>(pub S);

impl<S> tower::Service<Request<Body>> for NonGrpcReplies<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let reply = self.0.call(req);
        Box::pin(async move {
            let resp = reply.await?;
            if resp.headers().contains_key(&crate::headers::GRPC_STATUS) {
                let (mut parts, body) = resp.into_parts();
                super::status_mend::mend_trailers_only(&mut parts.headers);
                return Ok(Response::from_parts(parts, body));
            }
            if resp.status() == StatusCode::OK {
                let (mut parts, body) = resp.into_parts();
                let body = super::status_mend::MendedReply::new(&mut parts.headers, body);
                return Ok(Response::from_parts(parts, Body::new(body)));
            }
            let status = resp.status();
            let quoted = first_bytes(resp.into_body()).await;
            let message = if quoted.is_empty() {
                format!("the backend answered HTTP {status} instead of gRPC")
            } else {
                format!("the backend answered HTTP {status} instead of gRPC: {quoted}")
            };
            Ok(tonic::Status::new(grpc_code_of_http_reply(status), message).into_http())
        })
    }
}

/// The start of a body as text, read for at most a second.
async fn first_bytes(mut body: Body) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while out.len() < QUOTED_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                _ => break,
            }
        }
    })
    .await;
    out.truncate(QUOTED_BYTES);
    String::from_utf8_lossy(&out).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_as_grpc_documents() {
        for (status, code) in [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (418, Code::Unknown),
        ] {
            assert_eq!(
                grpc_code_of_http_reply(StatusCode::from_u16(status).unwrap()),
                code,
                "{status}"
            );
        }
    }
}
