//! The HTTP client of policies that ask another service: token
//! introspection, OpenID Connect discovery and JWK sets, forward-auth. One
//! pooled client per configured service, TLS with the built-in roots plus
//! the service's own CA, every exchange bounded by a timeout and a body cap.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use std::path::Path;
use std::time::Duration;

/// Largest answer read from a policy's service.
const MAX_ANSWER_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct Outbound {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// A service's answer, read whole.
pub struct Answer {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Why a service gave no answer: it could not be reached, took too long,
/// or sent more than [`MAX_ANSWER_BYTES`].
#[derive(Debug, Clone)]
pub struct NoAnswer(pub String);

impl Outbound {
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Outbound, String> {
        let connector = crate::egress::tls::https_connector(ca_file)?;
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Outbound { client, timeout })
    }

    /// Sends `req` and reads the answer, all within the timeout.
    pub async fn send(&self, req: http::Request<Full<Bytes>>) -> Result<Answer, NoAnswer> {
        let uri = req.uri().clone();
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| NoAnswer(format!("{uri}: {}", crate::error::with_causes(&e))))?;
            let (parts, body) = resp.into_parts();
            let body = match http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                // A refusal is a refusal even when its body is unreadable:
                // it must not count as no answer (and pass a fail-open rule).
                Err(_) if !parts.status.is_success() => Bytes::new(),
                Err(e) => return Err(NoAnswer(format!("{uri}: reading the answer: {e}"))),
            };
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| NoAnswer(format!("{uri}: no answer within {:?}", self.timeout)))?
    }

    /// GETs a JSON document; anything but a 2xx JSON answer is an error.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let req = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| format!("{url}: {e}"))?;
        let answer = self.send(req).await.map_err(|e| e.0)?;
        if !answer.status.is_success() {
            return Err(format!("{url}: {}", answer.status));
        }
        serde_json::from_slice(&answer.body).map_err(|e| format!("{url}: not JSON: {e}"))
    }
}
