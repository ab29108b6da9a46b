//! One credential per request, on every route: two different
//! `Authorization` values, two different values of an API key's header
//! (a header and a different key in its query parameter, which the edge
//! lifted beside it, or two of either), several different values of a
//! session cookie, or a session cookie beside a different bearer token,
//! are refused before any other policy, whether or not the route
//! authenticates. A route without `auth` leaves the check of the credential
//! to its backend, which must get the one the client chose, not whichever
//! copy a forwarding rule kept. The same value sent twice is one
//! credential.

use crate::envelope::Envelope;
use crate::error::GatewayError;
use futures_util::future::{ready, Either, Ready};
use http::{HeaderMap, HeaderName};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Where the config's credentials travel.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `authorization` and each API-key authenticator's header, each with
    /// where the config lets a client send it, as a refusal says it
    /// ("in headers or the `api_key` query parameter").
    pub headers: Vec<(HeaderName, String)>,
    /// Each JWT authenticator's session `cookie`: a bearer token too.
    pub cookies: Vec<String>,
}

/// The layer, with where the config's credentials travel.
#[derive(Clone)]
pub struct OneCredentialLayer(pub Arc<Credentials>);

impl<S> Layer<S> for OneCredentialLayer {
    type Service = OneCredential<S>;
    fn layer(&self, inner: S) -> OneCredential<S> {
        OneCredential {
            inner,
            credentials: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct OneCredential<S> {
    inner: S,
    credentials: Arc<Credentials>,
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
        match check(&env.ctx.headers, &self.credentials) {
            Ok(()) => Either::Right(self.inner.call(env)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

/// Refuses headers carrying two different credentials.
pub fn check(headers: &HeaderMap, credentials: &Credentials) -> Result<(), GatewayError> {
    for (name, carried) in &credentials.headers {
        if crate::headers::values_differ(headers, name) {
            return Err(two_credentials(
                name.as_str(),
                &format!("two different {name} values, {carried}"),
            ));
        }
    }
    for name in &credentials.cookies {
        // Every cookie of that name counts, not the first: a browser sends
        // one per path and domain it was set for, in an order the client
        // picks.
        let mut values = crate::headers::cookie_values(headers, name);
        let Some(first) = values.next() else {
            continue;
        };
        if values.any(|other| other != first) {
            return Err(two_credentials(
                "cookie",
                &format!("several `{name}` cookies"),
            ));
        }
        if crate::headers::bearer_token(headers).is_some_and(|token| token != first) {
            return Err(two_credentials(
                "authorization",
                &format!("authorization and the session cookie `{name}`"),
            ));
        }
    }
    Ok(())
}

/// Two credentials where one is read; `field` is the header at fault.
pub fn two_credentials(field: &str, where_: &str) -> GatewayError {
    GatewayError::invalid_field(
        field,
        format!("the request carries more than one credential ({where_}); send one"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::headers::map_of as headers;

    #[test]
    fn one_credential_however_often_it_is_sent_passes_and_two_do_not() {
        let credentials = Credentials {
            headers: vec![
                (http::header::AUTHORIZATION, "in headers".to_owned()),
                (
                    HeaderName::from_static("x-api-key"),
                    "in headers or the `api_key` query parameter".to_owned(),
                ),
            ],
            cookies: vec!["session".to_owned()],
        };
        let table: [(&[(&str, &str)], bool); 12] = [
            (
                &[("cookie", "session=t; theme=dark"), ("cookie", "session=t")],
                true,
            ),
            (
                &[("cookie", "session=t"), ("authorization", "Bearer t")],
                true,
            ),
            // Another cookie whose name starts the same is not the session.
            (
                &[("cookie", "sessions=u"), ("authorization", "Bearer t")],
                true,
            ),
            (&[("cookie", "session=t; session=u")], false),
            (&[("cookie", "session=t"), ("cookie", "session=u")], false),
            (
                &[("cookie", "session=t"), ("authorization", "Bearer u")],
                false,
            ),
            // A name read as lenient servers read it: spaced, it is the same.
            (&[("cookie", "session=t; session =u")], false),
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
