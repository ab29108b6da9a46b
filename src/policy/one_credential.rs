//! One credential per request, on every route: two different
//! `Authorization` values, or two different values of an API key's header
//! (a header and a different key in its query parameter, which the edge
//! lifted beside it, or two of either), are refused before any other
//! policy, whether or not the route authenticates. A route without `auth`
//! leaves the check of the credential to its backend, which must get the
//! one the client chose, not whichever copy a forwarding rule kept. The
//! same value sent twice is one credential.

use crate::envelope::Envelope;
use crate::error::GatewayError;
use futures_util::future::{ready, Either, Ready};
use http::{HeaderMap, HeaderName};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// The layer: `headers` are where credentials travel (`authorization` and
/// each API-key authenticator's header).
#[derive(Clone)]
pub struct OneCredentialLayer(pub Arc<[HeaderName]>);

impl<S> Layer<S> for OneCredentialLayer {
    type Service = OneCredential<S>;
    fn layer(&self, inner: S) -> OneCredential<S> {
        OneCredential {
            inner,
            headers: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct OneCredential<S> {
    inner: S,
    headers: Arc<[HeaderName]>,
}

impl<S> Service<Envelope> for OneCredential<S>
where
    S: Service<Envelope, Error = GatewayError>,
{
    type Response = S::Response;
    type Error = GatewayError;
    type Future = Either<Ready<Result<S::Response, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, env: Envelope) -> Self::Future {
        match check(&env.ctx.headers, &self.headers) {
            Ok(()) => Either::Right(self.inner.call(env)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

/// Refuses headers carrying two different values of one credential.
pub fn check(headers: &HeaderMap, credentials: &[HeaderName]) -> Result<(), GatewayError> {
    for name in credentials {
        if crate::headers::values_differ(headers, name) {
            return Err(GatewayError::invalid_field(
                name.as_str(),
                format!("the request carries more than one credential (two different {name} values, in headers or the query); send one"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers::map_of as headers;

    #[test]
    fn one_credential_however_often_it_is_sent_passes_and_two_do_not() {
        let credentials = [
            http::header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
        ];
        let table: [(&[(&str, &str)], bool); 5] = [
            (&[("x-api-key", "a")], true),
            (&[("x-api-key", "a"), ("x-api-key", "a")], true),
            (
                &[
                    ("authorization", "Bearer t"),
                    ("x-other", "1"),
                    ("x-other", "2"),
                ],
                true,
            ),
            (&[("x-api-key", "a"), ("x-api-key", "b")], false),
            (
                &[("authorization", "Bearer t"), ("authorization", "Bearer u")],
                false,
            ),
        ];
        for (h, passes) in table {
            let result = check(&headers(h), &credentials);
            assert_eq!(result.is_ok(), passes, "{h:?}: {result:?}");
            if let Err(e) = result {
                assert!(
                    e.message.contains("more than one credential"),
                    "{}",
                    e.message
                );
            }
        }
    }
}
