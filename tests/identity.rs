//! Identity beyond a self-contained JWT, each through every protocol:
//! opaque tokens vouched for by an OAuth 2.0 introspection endpoint, JWT
//! keys found from an OpenID Connect issuer, client certificates as
//! principals, and several authenticators on one route. The providers are
//! real servers on 127.0.0.1 that the tests start and count calls on.

mod support;

use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::protocols::{call, gateway, Protocol, EVERY_PROTOCOL};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A small HTTP/1.1 server on 127.0.0.1 answering with `handler`.
async fn serve<F, Fut>(handler: F) -> std::net::SocketAddr
where
    F: Fn(http::Request<bytes::Bytes>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<String>> + Send + 'static,
{
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let resp = handler(http::Request::from_parts(parts, body)).await;
                        Ok::<_, std::convert::Infallible>(
                            resp.map(|b| http_body_util::Full::new(bytes::Bytes::from(b))),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn json_response(status: u16, body: Value) -> http::Response<String> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap()
}

/// An RFC 7662 introspection endpoint: knows some tokens, counts the
/// questions, checks the gateway's client credentials, and can go down.
#[derive(Clone, Default)]
struct Introspection {
    tokens: Arc<Mutex<HashMap<String, Value>>>,
    asked: Arc<Mutex<Vec<String>>>,
    /// How the gateway authenticated each question: "basic" or "post".
    client_auth: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
}

impl Introspection {
    async fn start(&self) -> std::net::SocketAddr {
        let this = self.clone();
        serve(move |req| {
            let this = this.clone();
            async move { this.answer(req) }
        })
        .await
    }

    fn answer(&self, req: http::Request<bytes::Bytes>) -> http::Response<String> {
        if self.down.load(Ordering::SeqCst) {
            return json_response(503, json!({"error": "temporarily_unavailable"}));
        }
        let form: HashMap<String, String> =
            form_urlencoded::parse(req.body()).into_owned().collect();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("portico:s3cret")
        );
        let how = if req
            .headers()
            .get("authorization")
            .is_some_and(|v| v == basic.as_str())
        {
            "basic"
        } else if form.get("client_id").map(String::as_str) == Some("portico")
            && form.get("client_secret").map(String::as_str) == Some("s3cret")
        {
            "post"
        } else {
            return json_response(401, json!({"error": "invalid_client"}));
        };
        self.client_auth.lock().unwrap().push(how.to_owned());
        let token = form.get("token").cloned().unwrap_or_default();
        self.asked.lock().unwrap().push(token.clone());
        let answer = self
            .tokens
            .lock()
            .unwrap()
            .get(&token)
            .cloned()
            .unwrap_or(json!({"active": false}));
        json_response(200, answer)
    }

    fn times_asked(&self, token: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|t| *t == token)
            .count()
    }

    fn know(&self, token: &str, answer: Value) {
        self.tokens.lock().unwrap().insert(token.to_owned(), answer);
    }
}

fn introspection_section(addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[authenticators.opaque]\nkind = \"introspection\"\nintrospection_url = \"http://{addr}/introspect\"\nclient_id = \"portico\"\nclient_secret = \"s3cret\"\nforward_claims = {{ sub = \"x-user-id\", scope = \"x-scopes\" }}\n{extra}\n"
    )
}

#[tokio::test]
async fn an_introspected_token_is_judged_the_same_on_every_protocol() {
    let provider = Introspection::default();
    provider.know(
        "opaque-ada",
        json!({"active": true, "sub": "ada", "scope": "library.read", "exp": now() + 600}),
    );
    provider.know(
        "opaque-expired",
        json!({"active": true, "sub": "bob", "exp": now() - 10}),
    );
    let addr = provider.start().await;
    let h = gateway(&introspection_section(addr, ""), "auth = \"opaque\"").await;

    for protocol in EVERY_PROTOCOL {
        let ok = call(
            &h,
            protocol,
            &[("authorization", "Bearer opaque-ada")],
            "",
            None,
        )
        .await;
        assert_eq!(ok.code, 0, "{protocol:?}: an active token passes");
        assert_eq!(ok.metadata["x-user-id"], "ada", "{protocol:?}");
        assert_eq!(ok.metadata["x-scopes"], "library.read", "{protocol:?}");

        for (case, headers) in [
            (
                "an unknown token",
                vec![("authorization", "Bearer opaque-nobody")],
            ),
            (
                "an expired token",
                vec![("authorization", "Bearer opaque-expired")],
            ),
            ("no token", vec![]),
        ] {
            let seen = call(&h, protocol, &headers, "", None).await;
            assert_eq!(seen.code, 16, "{protocol:?}: {case} is UNAUTHENTICATED");
        }
    }
    // Five protocols, one question per token: the answers were cached,
    // the refusals too.
    assert_eq!(provider.times_asked("opaque-ada"), 1);
    assert_eq!(provider.times_asked("opaque-nobody"), 1);
    assert_eq!(provider.times_asked("opaque-expired"), 1);
    assert!(provider
        .client_auth
        .lock()
        .unwrap()
        .iter()
        .all(|h| h == "basic"));
}

#[tokio::test]
async fn an_introspection_endpoint_that_does_not_answer_refuses_every_call() {
    let provider = Introspection::default();
    provider.know("opaque-ada", json!({"active": true, "sub": "ada"}));
    let addr = provider.start().await;
    // A port where nothing listens.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sections = introspection_section(addr, "")
        + &introspection_section(dead, "timeout = \"500ms\"")
            .replace("[authenticators.opaque]", "[authenticators.gone]");
    let h = gateway(&sections, "auth = \"gone\"").await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(
            &h,
            protocol,
            &[("authorization", "Bearer opaque-ada")],
            "",
            None,
        )
        .await;
        assert_eq!(
            seen.code, 14,
            "{protocol:?}: an unreachable endpoint is UNAVAILABLE, never a pass"
        );
        assert!(
            seen.message.contains("introspection"),
            "{protocol:?}: {}",
            seen.message
        );
    }

    // An endpoint that answers 503 is no answer either; nothing is cached,
    // so the token works again once the endpoint is back.
    let h = gateway(&introspection_section(addr, ""), "auth = \"opaque\"").await;
    provider.down.store(true, Ordering::SeqCst);
    for protocol in EVERY_PROTOCOL {
        let seen = call(
            &h,
            protocol,
            &[("authorization", "Bearer opaque-ada")],
            "",
            None,
        )
        .await;
        assert_eq!(
            seen.code, 14,
            "{protocol:?}: a failing endpoint is UNAVAILABLE"
        );
    }
    provider.down.store(false, Ordering::SeqCst);
    let seen = call(
        &h,
        Protocol::Grpc,
        &[("authorization", "Bearer opaque-ada")],
        "",
        None,
    )
    .await;
    assert_eq!(seen.code, 0);
}

#[tokio::test]
async fn a_cached_introspection_ends_at_the_tokens_exp() {
    let provider = Introspection::default();
    provider.know(
        "opaque-short",
        json!({"active": true, "sub": "ada", "exp": now() + 2}),
    );
    let addr = provider.start().await;
    let sections = introspection_section(addr, "client_auth = \"post\"");
    let h = gateway(&sections, "auth = \"opaque\"").await;
    let auth = [("authorization", "Bearer opaque-short")];
    assert_eq!(call(&h, Protocol::Rest, &auth, "", None).await.code, 0);
    assert_eq!(call(&h, Protocol::WebSocket, &auth, "", None).await.code, 0);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::WebSocket] {
        let seen = call(&h, protocol, &auth, "", None).await;
        assert_eq!(
            seen.code, 16,
            "{protocol:?}: the token expired while cached"
        );
    }
    assert_eq!(
        *provider.client_auth.lock().unwrap(),
        vec!["post".to_owned(); provider.asked.lock().unwrap().len()],
        "client_auth = \"post\" sends the credentials in the form"
    );
}

#[tokio::test]
async fn jwt_or_introspection_or_api_key_the_first_that_applies_decides() {
    let provider = Introspection::default();
    provider.know("opaque-ada", json!({"active": true, "sub": "ada"}));
    let addr = provider.start().await;
    let secret = "a-route-with-several-authenticators";
    let sections = format!(
        "{}[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        introspection_section(addr, ""),
        support::fixture("api_keys.toml")
    );
    let h = gateway(&sections, "auth = [\"jwt\", \"opaque\", \"keys\"]").await;
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "jay", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let bearer_jwt = format!("Bearer {jwt}");
    let forged = format!("Bearer {}x", &jwt[..jwt.len() - 1]);
    for protocol in EVERY_PROTOCOL {
        let jwt_call = call(&h, protocol, &[("authorization", &bearer_jwt)], "", None).await;
        assert_eq!(
            jwt_call.code, 0,
            "{protocol:?}: a JWT goes to the jwt authenticator"
        );
        let opaque = call(
            &h,
            protocol,
            &[("authorization", "Bearer opaque-ada")],
            "",
            None,
        )
        .await;
        assert_eq!(
            opaque.code, 0,
            "{protocol:?}: an opaque token to introspection"
        );
        let key = call(&h, protocol, &[("x-api-key", "acme-key-123")], "", None).await;
        assert_eq!(key.code, 0, "{protocol:?}: an API key to the key list");
        // The first that applies decides: a bad JWT is not retried as an
        // opaque token.
        let bad = call(&h, protocol, &[("authorization", &forged)], "", None).await;
        assert_eq!(bad.code, 16, "{protocol:?}");
        let none = call(&h, protocol, &[], "", None).await;
        assert_eq!(none.code, 16, "{protocol:?}");
        assert!(
            none.message.contains("bearer token") && none.message.contains("API key"),
            "{protocol:?}: the refusal names what the route takes: {}",
            none.message
        );
    }
    assert_eq!(
        provider.asked.lock().unwrap().len(),
        1,
        "JWTs never reach the introspection endpoint"
    );
}
