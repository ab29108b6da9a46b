//! Identity beyond a self-contained JWT, each through every protocol:
//! opaque tokens vouched for by an OAuth 2.0 introspection endpoint, JWT
//! keys found from an OpenID Connect issuer, client certificates as
//! principals, and several authenticators on one route. The providers are
//! real servers on 127.0.0.1 that the tests start and count calls on.

use crate::support;
use support::RouteKeys;

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
    /// How long each answer takes, in milliseconds.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Introspection {
    async fn start(&self) -> std::net::SocketAddr {
        let this = self.clone();
        serve(move |req| {
            let this = this.clone();
            async move {
                let delay = this.delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                this.answer(req)
            }
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
    // A subject found as `username` is the `sub` the claims forward.
    provider.know(
        "opaque-user",
        json!({"active": true, "username": "cy", "exp": now() + 600}),
    );
    // A `sub` that is no string is passed over for `username`, and the
    // claim forwarded is that subject too.
    provider.know(
        "opaque-numeric-sub",
        json!({"active": true, "sub": 5, "username": "dee", "exp": now() + 600}),
    );
    provider.know(
        "opaque-nobody-named",
        json!({"active": true, "exp": now() + 600}),
    );
    // Dates of another type than a number: refused, never read as absent.
    provider.know(
        "opaque-exp-text",
        json!({"active": true, "sub": "eve", "exp": (now() - 1000).to_string()}),
    );
    provider.know(
        "opaque-exp-null",
        json!({"active": true, "sub": "eve", "exp": null}),
    );
    // Past what 64 bits of seconds hold: it would never expire.
    provider.know(
        "opaque-exp-huge",
        json!({"active": true, "sub": "eve", "exp": 1e20}),
    );
    provider.know(
        "opaque-nbf-text",
        json!({"active": true, "sub": "eve", "exp": now() + 600, "nbf": (now() + 1000).to_string()}),
    );
    let addr = provider.start().await;
    let h = gateway(&introspection_section(addr, ""), "auth = \"opaque\"").await;
    let by_username = call(
        &h,
        Protocol::Rest,
        &[("authorization", "Bearer opaque-user")],
        "",
        None,
    )
    .await;
    assert_eq!(by_username.metadata["x-user-id"], "cy");
    for protocol in EVERY_PROTOCOL {
        let seen = call(
            &h,
            protocol,
            &[("authorization", "Bearer opaque-numeric-sub")],
            "",
            None,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert_eq!(seen.metadata["x-user-id"], "dee", "{protocol:?}");
    }
    let nameless = call(
        &h,
        Protocol::Rest,
        &[("authorization", "Bearer opaque-nobody-named")],
        "",
        None,
    )
    .await;
    assert_eq!(
        nameless.code, 16,
        "an answer naming no subject names no caller"
    );

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
            (
                "an exp written as text",
                vec![("authorization", "Bearer opaque-exp-text")],
            ),
            (
                "an exp of null",
                vec![("authorization", "Bearer opaque-exp-null")],
            ),
            (
                "an exp out of range",
                vec![("authorization", "Bearer opaque-exp-huge")],
            ),
            (
                "an nbf written as text",
                vec![("authorization", "Bearer opaque-nbf-text")],
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
async fn an_introspection_answer_without_the_required_issuer_or_audience_says_so() {
    let provider = Introspection::default();
    let exp = now() + 600;
    let cases = [
        (
            "good",
            json!({"active": true, "sub": "ada", "iss": "https://id.example", "aud": "api", "exp": exp}),
            None,
        ),
        (
            "no-iss",
            json!({"active": true, "sub": "ada", "aud": "api", "exp": exp}),
            Some("the answer names no issuer (iss), which is required"),
        ),
        (
            "other-iss",
            json!({"active": true, "sub": "ada", "iss": "https://evil.example", "aud": "api", "exp": exp}),
            Some("the token is from another issuer"),
        ),
        (
            "no-aud",
            json!({"active": true, "sub": "ada", "iss": "https://id.example", "exp": exp}),
            Some("the answer names no audience (aud), which is required"),
        ),
        (
            "other-aud",
            json!({"active": true, "sub": "ada", "iss": "https://id.example", "aud": "billing", "exp": exp}),
            Some("the token is for another audience"),
        ),
    ];
    for (token, answer, _) in &cases {
        provider.know(token, answer.clone());
    }
    let addr = provider.start().await;
    let h = gateway(
        &introspection_section(
            addr,
            "issuer = \"https://id.example\"\naudiences = [\"api\"]",
        ),
        "auth = \"opaque\"",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        for (token, _, refusal) in &cases {
            let bearer = format!("Bearer {token}");
            let seen = call(&h, protocol, &[("authorization", &bearer)], "", None).await;
            match refusal {
                None => assert_eq!(seen.code, 0, "{protocol:?} {token}: {}", seen.message),
                Some(why) => {
                    assert_eq!(seen.code, 16, "{protocol:?} {token}");
                    assert!(
                        seen.message.contains(why),
                        "{protocol:?} {token}: {}",
                        seen.message
                    );
                }
            }
        }
    }
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

    // JSON that is no object says nothing of the token: a broken endpoint,
    // not an inactive token, and not cached as one.
    for (token, answer) in [("opaque-null", Value::Null), ("opaque-list", json!([1]))] {
        provider.know(token, answer);
        let bearer = format!("Bearer {token}");
        for protocol in EVERY_PROTOCOL {
            let seen = call(&h, protocol, &[("authorization", &bearer)], "", None).await;
            assert_eq!(seen.code, 14, "{protocol:?}: {token}: {}", seen.message);
        }
        assert_eq!(provider.times_asked(token), EVERY_PROTOCOL.len(), "{token}");
    }
}

#[tokio::test]
async fn a_slow_introspection_endpoint_is_waited_on_no_longer_than_the_call_has_left() {
    // The endpoint answers within its own timeout (5 s) but after the
    // route's deadline (300 ms): the call ends at its deadline on every
    // protocol, and the backend is never called.
    let provider = Introspection::default();
    provider.know("opaque-ada", json!({"active": true, "sub": "ada"}));
    provider.delay_ms.store(3000, Ordering::SeqCst);
    let addr = provider.start().await;
    let h = gateway(
        &introspection_section(addr, "timeout = \"5s\""),
        "auth = \"opaque\"\ntimeout = \"300ms\"",
    )
    .await;
    support::protocols::assert_each_ends_at_its_deadline(
        &h,
        &[("authorization", "Bearer opaque-ada")],
        "deadline passed before its credential was verified",
    )
    .await;
    // The question goes on: its answer (3 s later) is kept for the calls
    // after it, and the endpoint was asked once for all of them.
    let answered = support::eventually_async(|| async {
        call(
            &h,
            Protocol::Rest,
            &[("authorization", "Bearer opaque-ada")],
            "",
            None,
        )
        .await
        .code
            == 0
    })
    .await;
    assert!(answered, "the late answer was kept");
    assert_eq!(provider.times_asked("opaque-ada"), 1);
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
        provider.times_asked("opaque-short"),
        1,
        "refused from the cached answer, without asking again"
    );
    assert_eq!(
        *provider.client_auth.lock().unwrap(),
        vec!["post".to_owned(); provider.asked.lock().unwrap().len()],
        "client_auth = \"post\" sends the credentials in the form"
    );
}

#[tokio::test]
async fn introspection_cache_ttls_of_zero_ask_about_every_call() {
    // A provider whose revocations must take effect at once: nothing kept.
    let provider = Introspection::default();
    provider.know("opaque-ada", json!({"active": true, "sub": "ada"}));
    provider.know("opaque-gone", json!({"active": false}));
    let addr = provider.start().await;
    let sections = introspection_section(addr, "cache_ttl = \"0s\"\nnegative_cache_ttl = \"0s\"");
    let h = gateway(&sections, "auth = \"opaque\"").await;
    for protocol in EVERY_PROTOCOL {
        let ada = [("authorization", "Bearer opaque-ada")];
        assert_eq!(
            call(&h, protocol, &ada, "", None).await.code,
            0,
            "{protocol:?}"
        );
        let gone = [("authorization", "Bearer opaque-gone")];
        assert_eq!(
            call(&h, protocol, &gone, "", None).await.code,
            16,
            "{protocol:?}"
        );
    }
    assert_eq!(provider.times_asked("opaque-ada"), EVERY_PROTOCOL.len());
    assert_eq!(provider.times_asked("opaque-gone"), EVERY_PROTOCOL.len());
}

#[tokio::test]
async fn two_identity_providers_on_one_route_each_verify_their_own_tokens() {
    // Two providers sign with HS256 (told apart by issuer) and a third
    // with RS256 (by algorithm): each token goes to its own authenticator,
    // whatever the order, on every protocol.
    let sections = format!(
        "[authenticators.staff]\nalgorithm = \"HS256\"\nsecret = \"the-staff-provider-signing-secret\"\nissuer = \"https://staff.example\"\nforward_claims = {{ sub = \"x-user-id\" }}\n\
         [authenticators.partners]\nalgorithm = \"HS256\"\nsecret = \"the-partner-provider-signing-secret\"\nissuer = \"https://partners.example\"\nforward_claims = {{ sub = \"x-user-id\" }}\n\
         [authenticators.machines]\nalgorithm = \"RS256\"\npublic_key_file = \"{}\"\nforward_claims = {{ sub = \"x-user-id\" }}\n",
        support::fixture("jwt_rs256_public.pem")
    );
    let h = gateway(&sections, "auth = [\"staff\", \"partners\", \"machines\"]").await;
    let hs256 = |secret: &str, claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let rsa = std::fs::read(support::fixture("jwt_rs256_private.pem")).unwrap();
    let rs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "build-bot", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    let staff = hs256(
        "the-staff-provider-signing-secret",
        json!({"sub": "sam", "iss": "https://staff.example", "exp": now() + 600}),
    );
    let partner = hs256(
        "the-partner-provider-signing-secret",
        json!({"sub": "pat", "iss": "https://partners.example", "exp": now() + 600}),
    );
    // A partner's token signed with the staff secret is the partners
    // authenticator's to refuse; a token no authenticator takes (HS384)
    // gets the first bearer authenticator's verdict.
    let forged = hs256(
        "the-staff-provider-signing-secret",
        json!({"sub": "pat", "iss": "https://partners.example", "exp": now() + 600}),
    );
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &json!({"sub": "x", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(
            b"a-secret-that-no-authenticator-here-knows-at-all-of-48b",
        ),
    )
    .unwrap();
    for protocol in EVERY_PROTOCOL {
        for (token, subject) in [(&staff, "sam"), (&partner, "pat"), (&rs256, "build-bot")] {
            let bearer = format!("Bearer {token}");
            let seen = call(&h, protocol, &[("authorization", &bearer)], "", None).await;
            assert_eq!(seen.code, 0, "{protocol:?} {subject}: {}", seen.message);
            assert_eq!(seen.metadata["x-user-id"], subject, "{protocol:?}");
        }
        for (token, says) in [
            (&forged, "its signature does not verify"),
            (
                &hs384,
                "signed with an algorithm this route does not accept",
            ),
        ] {
            let bearer = format!("Bearer {token}");
            let seen = call(&h, protocol, &[("authorization", &bearer)], "", None).await;
            assert_eq!(seen.code, 16, "{protocol:?}: {}", seen.message);
            assert!(
                seen.message.contains(says),
                "{protocol:?}: {}",
                seen.message
            );
        }
    }
}

/// One credential per request holds on a route of several JWT
/// authenticators too: a session cookie one of them reads and a bearer
/// token another takes are two, refused before either decides, on every
/// protocol; each alone passes.
#[tokio::test]
async fn a_cookie_for_one_authenticator_and_a_token_for_another_are_two_credentials() {
    let secret = "the-browser-session-signing-secret";
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\ncookie = \"session\"\nforward_claims = {{ sub = \"x-user-id\" }}\n\
         [authenticators.machines]\nalgorithm = \"RS256\"\npublic_key_file = \"{}\"\nforward_claims = {{ sub = \"x-user-id\" }}\n",
        support::fixture("jwt_rs256_public.pem")
    );
    let h = gateway(&sections, "auth = [\"users\", \"machines\"]").await;
    let session = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ulla", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let rsa = std::fs::read(support::fixture("jwt_rs256_private.pem")).unwrap();
    let machine = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "build-bot", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&rsa).unwrap(),
    )
    .unwrap();
    let cookie = format!("session={session}");
    let bearer = format!("Bearer {machine}");
    for protocol in EVERY_PROTOCOL {
        let both = call(
            &h,
            protocol,
            &[("cookie", &cookie), ("authorization", &bearer)],
            "",
            None,
        )
        .await;
        assert_eq!(both.code, 3, "{protocol:?}: {}", both.message);
        assert!(
            both.message.contains("more than one credential"),
            "{protocol:?}: {}",
            both.message
        );
        for (alone, subject) in [
            (("cookie", cookie.as_str()), "ulla"),
            (("authorization", bearer.as_str()), "build-bot"),
        ] {
            let seen = call(&h, protocol, &[alone], "", None).await;
            assert_eq!(seen.code, 0, "{protocol:?} {subject}: {}", seen.message);
            assert_eq!(seen.metadata["x-user-id"], subject, "{protocol:?}");
        }
    }
}

/// A session cookie holding a token no authenticator of the route applies
/// to (another issuer's) is told what is wrong with it, as a bearer token
/// is, not that the route needs a credential it was sent.
#[tokio::test]
async fn a_session_cookie_no_authenticator_applies_to_gets_its_authenticators_verdict() {
    let provider = Introspection::default();
    let addr = provider.start().await;
    let secret = "the-browser-session-signing-secret";
    let sections = format!(
        "{}[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\nissuer = \"https://id.example\"\ncookie = \"session\"\n",
        introspection_section(addr, ""),
    );
    let h = gateway(&sections, "auth = [\"users\", \"opaque\"]").await;
    let elsewhere = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ulla", "iss": "https://other.example", "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let cookie = format!("session={elsewhere}");
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("cookie", &cookie)], "", None).await;
        assert_eq!(seen.code, 16, "{protocol:?}: {}", seen.message);
        assert!(
            seen.message
                .contains("invalid token: it is from another issuer"),
            "{protocol:?}: {}",
            seen.message
        );
    }
    assert_eq!(provider.times_asked(&elsewhere), 0, "not a bearer token");
}

#[tokio::test]
async fn jwt_or_introspection_or_api_key_the_first_that_applies_decides() {
    let provider = Introspection::default();
    provider.know("opaque-ada", json!({"active": true, "sub": "ada"}));
    let addr = provider.start().await;
    let secret = "a-route-with-several-authenticators";
    let sections = format!(
        "{}[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\ncookie = \"session\"\n[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
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
    // An unknown API key is not a bad bearer token: the challenge asks for
    // a token without saying one was invalid.
    let unknown = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[("x-api-key", "nope")],
            "",
        )
        .await;
    assert_eq!(unknown.status, 401);
    assert_eq!(
        unknown.header("www-authenticate"),
        Some("Bearer realm=\"portico\""),
        "{}",
        unknown.text()
    );
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
        // A header an authenticator writes is never the client's, even
        // when another authenticator (with no such claim) decides.
        let forged = call(
            &h,
            protocol,
            &[("authorization", &bearer_jwt), ("x-user-id", "admin")],
            "",
            None,
        )
        .await;
        assert_eq!(forged.code, 0, "{protocol:?}");
        assert!(
            !forged.metadata.contains_key("x-user-id"),
            "{protocol:?}: a client's x-user-id was forwarded: {:?}",
            forged.metadata
        );
        // Two kinds of credential in one call: refused, not guessed at.
        let two = call(
            &h,
            protocol,
            &[
                ("authorization", "Bearer opaque-ada"),
                ("x-api-key", "acme-key-123"),
            ],
            "",
            None,
        )
        .await;
        assert_eq!(
            two.code, 3,
            "{protocol:?}: two credentials are INVALID_ARGUMENT"
        );
        assert!(
            two.message.contains("more than one credential"),
            "{}",
            two.message
        );
        let none = call(&h, protocol, &[], "", None).await;
        assert_eq!(none.code, 16, "{protocol:?}");
        // Each way once, though two authenticators read bearer tokens.
        assert!(
            none.message.ends_with(
                "this route needs a bearer token or the session cookie session or an API key in x-api-key"
            ),
            "{protocol:?}: the refusal names what the route takes: {}",
            none.message
        );
        // Another scheme is told the same, and that its header is not one.
        let basic = call(
            &h,
            protocol,
            &[("authorization", "Basic YWRhOnB3")],
            "",
            None,
        )
        .await;
        assert_eq!(basic.code, 16, "{protocol:?}");
        assert!(
            basic.message.contains("not a bearer token")
                && basic.message.contains("an API key in x-api-key"),
            "{protocol:?}: {}",
            basic.message
        );
    }
    assert_eq!(
        provider.asked.lock().unwrap().len(),
        1,
        "JWTs never reach the introspection endpoint"
    );
}

/// An ES256 key of an identity provider, and its public JWK.
struct SigningKey {
    kid: String,
    pem: String,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> SigningKey {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The uncompressed point: 0x04, then x and y.
        let raw = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        SigningKey {
            kid: kid.to_owned(),
            pem: key.serialize_pem(),
            jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(self.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

/// An OpenID Connect provider: a discovery document naming its JWK set.
#[derive(Clone, Default)]
struct Provider {
    /// What the discovery document says the issuer is.
    stated_issuer: Arc<Mutex<String>>,
    keys: Arc<Mutex<Vec<Value>>>,
    discoveries: Arc<Mutex<usize>>,
}

impl Provider {
    /// Starts it; returns its issuer URL (with a path, as Keycloak's are).
    async fn start(&self) -> String {
        let this = self.clone();
        let addr = serve(move |req| {
            let this = this.clone();
            async move {
                let issuer = this.stated_issuer.lock().unwrap().clone();
                if issuer == "down" {
                    return json_response(503, json!({"error": "down for maintenance"}));
                }
                match req.uri().path() {
                    "/realms/acme/.well-known/openid-configuration" => {
                        *this.discoveries.lock().unwrap() += 1;
                        let host = req.headers()["host"].to_str().unwrap().to_owned();
                        json_response(
                            200,
                            json!({"issuer": issuer, "jwks_uri": format!("http://{host}/realms/acme/certs"),
                                   "id_token_signing_alg_values_supported": ["ES256"]}),
                        )
                    }
                    "/realms/acme/certs" => {
                        json_response(200, json!({"keys": *this.keys.lock().unwrap()}))
                    }
                    _ => json_response(404, json!({})),
                }
            }
        })
        .await;
        let issuer = format!("http://{addr}/realms/acme");
        *self.stated_issuer.lock().unwrap() = issuer.clone();
        issuer
    }
}

/// A route that authenticates no one still forwards one credential: a
/// key in the header and another in the query is refused, so a backend
/// checking keys itself gets the one the client chose. The same key in both
/// places is one credential.
#[tokio::test]
async fn two_different_keys_are_refused_even_where_no_one_authenticates() {
    let sections = format!(
        "[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\nquery_param = \"api_key\"\n",
        support::fixture("api_keys.toml")
    );
    let h = gateway(&sections, "").await;
    // gRPC clients send no query string (a raw HTTP/2 one is covered by the
    // edge's own tests).
    for protocol in EVERY_PROTOCOL.into_iter().filter(|p| *p != Protocol::Grpc) {
        let seen = call(
            &h,
            protocol,
            &[("x-api-key", "key-one")],
            "api_key=key-two",
            None,
        )
        .await;
        assert_eq!(seen.code, 3, "{protocol:?}: {}", seen.message);
        let refused = seen.message;
        assert!(
            refused.contains("more than one credential"),
            "{protocol:?}: {refused}"
        );
        let seen = call(
            &h,
            protocol,
            &[("x-api-key", "key-one")],
            "api_key=key-one",
            None,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert_eq!(seen.metadata["x-api-key"], "key-one", "{protocol:?}");
    }
}

#[tokio::test]
async fn headers_authenticators_write_never_come_from_the_client_even_where_no_one_authenticates() {
    // Two authenticators write headers; the route checks neither (a backend
    // trusting x-user-id must still never see a client's).
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-keys\"\nforward_claims = {{ sub = \"x-user-id\" }}\n[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\nforward_claims = {{ consumer = \"x-consumer\" }}\n",
        support::fixture("api_keys.toml")
    );
    let h = gateway(&sections, "").await;
    for protocol in EVERY_PROTOCOL {
        let mut headers = vec![
            ("x-user-id", "admin"),
            ("x-consumer", "root"),
            ("x-tenant", "kept"),
            // Spelled with `_`, which CGI, WSGI, PHP and Rack backends read
            // as the same names: dropped at the edge.
            ("x_user_id", "admin"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x_http_method_override", "DELETE"),
            ("x_api_key", "key-one"),
            // A path override, which some frameworks route by.
            ("x-original-url", "/admin"),
        ];
        // The gRPC helper sends ASCII metadata only (the -bin twin is
        // covered on gRPC by the base64 claim test).
        if protocol != Protocol::Grpc {
            headers.push(("x-user-id-bin", "Zm9yZ2Vk"));
            // The binary twins of the headers credentials come in: no
            // policy checks them, so no backend is handed them.
            headers.push(("authorization-bin", "Zm9yZ2Vk"));
            headers.push(("x-api-key-bin", "Zm9yZ2Vk"));
        }
        let seen = call(&h, protocol, &headers, "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        for forged in [
            "x-user-id",
            "x-user-id-bin",
            "x-consumer",
            "x_user_id",
            "x_forwarded_for",
            "x_http_method_override",
            "x_api_key",
            "authorization-bin",
            "x-api-key-bin",
            "x-original-url",
        ] {
            assert!(
                !seen.metadata.contains_key(forged),
                "{protocol:?}: a client's {forged} reached the backend: {:?}",
                seen.metadata
            );
        }
        assert_eq!(seen.metadata["x-tenant"], "kept", "{protocol:?}");
    }
}

/// A deployment whose backends tell `_` from `-` (gRPC servers) may keep
/// headers named with `_`: then they are metadata like any other.
#[tokio::test]
async fn headers_named_with_underscores_pass_when_allowed() {
    let h = gateway("[metadata]\nheaders_with_underscores = \"allow\"\n", "").await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("x_tenant", "acme")], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert_eq!(seen.metadata["x_tenant"], "acme", "{protocol:?}");
    }
}

#[tokio::test]
async fn an_issuer_url_alone_finds_its_keys_by_discovery() {
    let provider = Provider::default();
    let k1 = SigningKey::new("k1");
    let k2 = SigningKey::new("k2");
    provider.keys.lock().unwrap().push(k1.jwk.clone());
    let issuer = provider.start().await;
    let sections = format!(
        "[authenticators.idp]\nissuer = \"{issuer}\"\nalgorithm = \"ES256\"\naudiences = [\"orders-api\"]\njwks_min_refresh = \"100ms\"\nforward_claims = {{ sub = \"x-user-id\" }}\n"
    );
    let h = gateway(&sections, "auth = \"idp\"").await;
    let claims =
        |iss: &str| json!({"sub": "ada", "iss": iss, "aud": "orders-api", "exp": now() + 600});
    let good = format!("Bearer {}", k1.sign(&claims(&issuer)));
    let elsewhere = format!("Bearer {}", k1.sign(&claims("http://other.example")));
    let unpublished = format!("Bearer {}", k2.sign(&claims(&issuer)));
    let mut old = claims(&issuer);
    old["exp"] = json!(now() - 120);
    let expired = format!("Bearer {}", k1.sign(&old));
    let mut anonymous = claims(&issuer);
    anonymous.as_object_mut().unwrap().remove("iss");
    let no_issuer = format!("Bearer {}", k1.sign(&anonymous));
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("authorization", &good)], "", None).await;
        assert_eq!(
            seen.code, 0,
            "{protocol:?}: a token signed by the issuer's key"
        );
        assert_eq!(seen.metadata["x-user-id"], "ada");
        for (case, token) in [
            ("another issuer", &elsewhere),
            ("an unpublished key", &unpublished),
            ("an expired token", &expired),
            ("no iss claim", &no_issuer),
        ] {
            let seen = call(&h, protocol, &[("authorization", token)], "", None).await;
            assert_eq!(seen.code, 16, "{protocol:?}: {case}");
        }
    }
    // Known keys are not fetched again: one discovery at startup, and one
    // per refresh an unknown kid caused (at most one per jwks_min_refresh).
    let discoveries = *provider.discoveries.lock().unwrap();
    for _ in 0..5 {
        let seen = call(&h, Protocol::Rest, &[("authorization", &good)], "", None).await;
        assert_eq!(seen.code, 0);
    }
    assert_eq!(*provider.discoveries.lock().unwrap(), discoveries);
    // The provider rotates in k2: an unknown kid makes the gateway read the
    // discovery document and the set again.
    provider.keys.lock().unwrap().push(k2.jwk.clone());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let seen = call(
        &h,
        Protocol::Grpc,
        &[("authorization", &unpublished)],
        "",
        None,
    )
    .await;
    assert_eq!(seen.code, 0, "a rotated key is found");
    assert!(*provider.discoveries.lock().unwrap() > discoveries);

    // The provider goes down (every answer a 503): the keys already known
    // keep working, a new one cannot be found.
    *provider.stated_issuer.lock().unwrap() = "down".to_owned();
    provider.keys.lock().unwrap().clear();
    let k3 = SigningKey::new("k3");
    let newer = format!("Bearer {}", k3.sign(&claims(&issuer)));
    tokio::time::sleep(Duration::from_millis(150)).await;
    for protocol in [Protocol::Rest, Protocol::Grpc, Protocol::WebSocket] {
        let seen = call(&h, protocol, &[("authorization", &good)], "", None).await;
        assert_eq!(
            seen.code, 0,
            "{protocol:?}: a known key survives the provider's outage"
        );
        let seen = call(&h, protocol, &[("authorization", &newer)], "", None).await;
        assert_eq!(seen.code, 16, "{protocol:?}");
    }
}

/// The demo config with `sections`, Probe's route given `probe_extra`,
/// loaded from a file so it can be reloaded; returns the file's folder
/// for the test to remove.
async fn gateway_from_a_file(
    sections: &str,
    probe_extra: &str,
) -> (support::Harness, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-identity-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("portico.toml");
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    std::fs::write(&path, support::config_text(backend, sections, probe_extra)).unwrap();
    let gw = portico::app::start(portico::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    let client = support::HttpClient::new(gw.addr);
    let h = support::Harness {
        backends,
        backend_addr: backend,
        gateway: gw,
        client,
    };
    (h, dir)
}

#[tokio::test]
async fn a_reload_revokes_a_key_the_provider_withdrew_at_once() {
    let provider = Provider::default();
    let k1 = SigningKey::new("k1");
    let k2 = SigningKey::new("k2");
    provider
        .keys
        .lock()
        .unwrap()
        .extend([k1.jwk.clone(), k2.jwk.clone()]);
    let issuer = provider.start().await;
    // Long refresh timers: only the reload reads the set again.
    let sections = format!(
        "[authenticators.idp]\nissuer = \"{issuer}\"\nalgorithm = \"ES256\"\naudiences = [\"orders-api\"]\njwks_min_refresh = \"1h\"\njwks_max_age = \"1d\"\n"
    );
    let (h, dir) = gateway_from_a_file(&sections, "auth = \"idp\"").await;
    let claims = json!({"sub": "ada", "iss": issuer, "aud": "orders-api", "exp": now() + 600});
    let by_k2 = format!("Bearer {}", k2.sign(&claims));
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("authorization", &by_k2)], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: k2 is published");
    }
    // The provider withdraws k2; the config file is untouched. The reload
    // finds the config as it was (its digest, its generation), and still
    // hands the authenticators serving the set it read.
    provider.keys.lock().unwrap().retain(|k| k["kid"] != "k2");
    let digest = h.gateway.live.current().digest.clone();
    match h.gateway.live.reload().await {
        portico::app::reload::ReloadOutcome::Unchanged { digest: d, .. } => assert_eq!(d, digest),
        other => panic!("the config did not change: {other:?}"),
    }
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("authorization", &by_k2)], "", None).await;
        assert_eq!(seen.code, 16, "{protocol:?}: k2 is revoked by the reload");
        let by_k1 = format!("Bearer {}", k1.sign(&claims));
        let seen = call(&h, protocol, &[("authorization", &by_k1)], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: k1 still verifies");
    }
    // The provider publishes k2 again: the next reload lets it back in.
    provider.keys.lock().unwrap().push(k2.jwk.clone());
    assert!(matches!(
        h.gateway.live.reload().await,
        portico::app::reload::ReloadOutcome::Unchanged { .. }
    ));
    let seen = call(&h, Protocol::Rest, &[("authorization", &by_k2)], "", None).await;
    assert_eq!(seen.code, 0, "k2 is published again");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload that finds nothing changed still starts the introspection
/// cache empty: the operator's way to drop a token revoked meanwhile.
#[tokio::test]
async fn a_reload_forgets_cached_introspection_answers_even_when_nothing_changed() {
    let provider = Introspection::default();
    provider.know(
        "opaque-revoked-soon",
        json!({"active": true, "sub": "ada", "exp": now() + 600}),
    );
    let addr = provider.start().await;
    let (h, dir) = gateway_from_a_file(&introspection_section(addr, ""), "auth = \"opaque\"").await;
    let token = [("authorization", "Bearer opaque-revoked-soon")];
    for protocol in EVERY_PROTOCOL {
        assert_eq!(
            call(&h, protocol, &token, "", None).await.code,
            0,
            "{protocol:?}"
        );
    }
    assert_eq!(provider.times_asked("opaque-revoked-soon"), 1, "cached");
    provider.know("opaque-revoked-soon", json!({"active": false}));
    assert!(matches!(
        h.gateway.live.reload().await,
        portico::app::reload::ReloadOutcome::Unchanged { .. }
    ));
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &token, "", None).await;
        assert_eq!(
            seen.code, 16,
            "{protocol:?}: the reload dropped the cached answer"
        );
    }
    assert_eq!(provider.times_asked("opaque-revoked-soon"), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_discovery_document_for_another_issuer_is_a_startup_error() {
    let provider = Provider::default();
    provider
        .keys
        .lock()
        .unwrap()
        .push(SigningKey::new("k1").jwk);
    let issuer = provider.start().await;
    *provider.stated_issuer.lock().unwrap() = "https://impostor.example".to_owned();
    let backend = "127.0.0.1:1".parse().unwrap();
    let text = support::config_text(
        backend,
        &format!("[authenticators.idp]\nissuer = \"{issuer}\"\n"),
        "auth = \"idp\"",
    );
    let err = match portico::app::start(portico::config::Config::from_toml(&text).unwrap()).await {
        Ok(_) => panic!("a gateway started on an impostor's discovery document"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("authenticators.idp"), "{err}");
    assert!(err.contains("impostor.example"), "{err}");
}

/// A discovery document that is no object, or names no issuer, says so
/// at startup, rather than comparing an issuer it does not have.
#[tokio::test]
async fn a_discovery_document_without_an_issuer_says_what_is_wrong() {
    for (document, said) in [
        (json!([]), "is not a JSON object"),
        (json!({}), "has no issuer"),
        (json!({"issuer": 5}), "issuer is not a string"),
    ] {
        let served = document.clone();
        let addr = serve(move |_| {
            let served = served.clone();
            async move { json_response(200, served) }
        })
        .await;
        let text = support::config_text(
            "127.0.0.1:1".parse().unwrap(),
            &format!("[authenticators.idp]\nissuer = \"http://{addr}\"\n"),
            "auth = \"idp\"",
        );
        let err =
            match portico::app::start(portico::config::Config::from_toml(&text).unwrap()).await {
                Ok(_) => panic!("a gateway started on the discovery document {document}"),
                Err(e) => e.to_string(),
            };
        assert!(err.contains("authenticators.idp"), "{err}");
        assert!(err.contains(said), "{document}: {err}");
    }
}

/// A private PKI for mutual TLS: a CA, a server certificate for
/// 127.0.0.1, and client certificates, written where a config can name them.
struct Pki {
    dir: std::path::PathBuf,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "portico-identity-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Identity test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let pki = Pki { dir, ca };
        let server = pki.issue(
            "127.0.0.1",
            vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())],
        );
        std::fs::write(pki.dir.join("server.pem"), server.cert_pem).unwrap();
        std::fs::write(pki.dir.join("server.key"), server.key_pem).unwrap();
        pki
    }

    fn issue(&self, common_name: &str, sans: Vec<rcgen::SanType>) -> Identity {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Identity {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// A TLS client trusting the CA, presenting `identity` if given.
    fn client(&self, identity: Option<&Identity>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(
                    vec![id.cert.clone()],
                    rustls::pki_types::PrivateKeyDer::try_from(id.key_der.clone()).unwrap(),
                )
                .unwrap(),
        }
    }
}

/// A certificate and its key.
struct Identity {
    cert: rustls::pki_types::CertificateDer<'static>,
    cert_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_client_certificate_is_the_principal_on_every_protocol() {
    let pki = Pki::new();
    let spiffe = "spiffe://acme.example/ns/prod/sa/orders";
    let orders = pki.issue(
        "orders",
        vec![rcgen::SanType::URI(spiffe.try_into().unwrap())],
    );
    let legacy = pki.issue("legacy-client", vec![]);
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nclient_cert = \"optional\"\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    );
    // A route that takes a certificate or, failing one, a token.
    let sections = "[authenticators.mesh]\nkind = \"client_cert\"\nforward_claims = { sub = \"x-client-identity\", serial = \"x-client-serial\", san_dns = \"x-client-dns\" }\n[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-tokens\"\n";
    // The demo config with TLS on the main port.
    let mut h = support::Harness::start_with_config(|backend| {
        support::config_text(backend, sections, "")
            .replacen(
                "admin = \"127.0.0.1:0\"\n",
                &format!("admin = \"127.0.0.1:0\"\n{tls}"),
                1,
            )
            .with_route_keys("Probe", &format!("auth = [\"mesh\", \"users\"]\nauthorize = {{ consumers = [\"{spiffe}\", \"O=Acme,CN=legacy-client\"] }}"))
    })
    .await;
    let addr = h.gateway.addr;

    for protocol in EVERY_PROTOCOL {
        h.client = support::HttpClient::tls(addr, pki.client(Some(&orders)), false);
        let seen = call(&h, protocol, &[], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: the URI SAN is the principal");
        assert_eq!(seen.metadata["x-client-identity"], spiffe, "{protocol:?}");
        // The connection is TLS, and the backend is told so.
        assert_eq!(
            seen.metadata["x-forwarded-proto"], "https",
            "{protocol:?}: {:?}",
            seen.metadata
        );
        // The certificate decided: a token beside it was verified by no
        // one, so the backend never gets it.
        let forged = [(
            "authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.",
        )];
        let seen = call(&h, protocol, &forged, "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert_eq!(seen.metadata["x-client-identity"], spiffe, "{protocol:?}");
        assert!(
            seen.metadata.get("authorization").is_none(),
            "{protocol:?}: an unverified token reached the backend: {:?}",
            seen.metadata
        );
        // A header cannot stand in for the certificate.
        h.client = support::HttpClient::tls(addr, pki.client(None), false);
        let seen = call(&h, protocol, &[("x-client-identity", spiffe)], "", None).await;
        assert_eq!(seen.code, 16, "{protocol:?}: no certificate, no principal");
        assert!(
            seen.message.contains("client certificate"),
            "{protocol:?}: {}",
            seen.message
        );
        // Without a SAN, the subject names the caller.
        h.client = support::HttpClient::tls(addr, pki.client(Some(&legacy)), false);
        let seen = call(&h, protocol, &[], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        assert_eq!(
            seen.metadata["x-client-identity"],
            "O=Acme,CN=legacy-client"
        );
        assert!(seen.metadata["x-client-serial"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        // No DNS name to forward: no header, not an empty one.
        assert!(
            seen.metadata.get("x-client-dns").is_none(),
            "{protocol:?}: {:?}",
            seen.metadata
        );
        // A certificate the route's rules do not list is known but refused.
        let stranger = pki.issue(
            "stranger",
            vec![rcgen::SanType::DnsName(
                "stranger.acme.example".try_into().unwrap(),
            )],
        );
        h.client = support::HttpClient::tls(addr, pki.client(Some(&stranger)), false);
        let seen = call(&h, protocol, &[], "", None).await;
        assert_eq!(
            seen.code, 7,
            "{protocol:?}: PERMISSION_DENIED for a principal not allowed"
        );
    }
    // An expired certificate does not get past the handshake, on any route.
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe.try_into().unwrap())];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &pki.ca).unwrap();
    let expired = Identity {
        cert: cert.der().clone(),
        cert_pem: cert.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    };
    let client = support::HttpClient::tls(addr, pki.client(Some(&expired)), false);
    assert!(
        client.client_error("/v1/probe/headers").await,
        "a handshake with an expired certificate fails"
    );
}

#[test]
fn identity_config_errors_name_the_key_and_the_reason() {
    let backend = "127.0.0.1:1".parse().unwrap();
    let keys = support::fixture("api_keys.toml");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-empty-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty_secret = dir.join("secret.txt");
    std::fs::write(&empty_secret, "\n").unwrap();
    let empty_secret = empty_secret.display().to_string();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "a secret from an empty file, named as the file",
            format!("[authenticators.o]\nkind = \"introspection\"\nintrospection_url = \"http://127.0.0.1:9/i\"\nclient_id = \"p\"\nclient_secret_file = \"{empty_secret}\"\n"),
            "authenticators.o.client_secret_file",
            "secret.txt is empty",
        ),
        (
            "an empty issuer, which no token has",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\nissuer = \"\"\n".into(),
            "authenticators.jwt.issuer",
            "is empty",
        ),
        (
            "an empty audience list, which would check nothing",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\naudiences = []\n".into(),
            "authenticators.jwt.audiences",
            "is an empty list",
        ),
        (
            "an API key read from the bearer token's header",
            format!("[authenticators.k]\nkind = \"api_key\"\nkeys_file = \"{keys}\"\nheader = \"Authorization\"\n"),
            "authenticators.k.header",
            "bearer tokens",
        ),
        (
            "an API key read from the WebSocket token's parameter",
            format!("[websocket]\ntoken_query_param = \"access_token\"\n[authenticators.k]\nkind = \"api_key\"\nkeys_file = \"{keys}\"\nquery_param = \"access_token\"\n"),
            "authenticators.k.query_param",
            "websocket.token_query_param",
        ),
        (
            "a client_cert authenticator without mutual TLS",
            "[authenticators.mesh]\nkind = \"client_cert\"\n".into(),
            "authenticators.mesh.kind",
            "server.tls.client_ca_file",
        ),
        (
            "a key of another kind",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"s\"\nclient_id = \"x\"\n".into(),
            "authenticators.jwt.client_id",
            "introspection",
        ),
        (
            "an HS256 secret shorter than the hash",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"short-secret\"\n".into(),
            "authenticators.jwt.secret",
            "is 12 bytes; HS256 needs a secret of at least 32 bytes",
        ),
        (
            "an HS512 secret long enough for HS256 only",
            "[authenticators.jwt]\nalgorithm = \"HS512\"\nsecret = \"a-secret-of-forty-bytes-for-hs256-only!!\"\n".into(),
            "authenticators.jwt.secret",
            "HS512 needs a secret of at least 64 bytes",
        ),
        (
            "a leeway that keeps expired tokens valid",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\nleeway = \"1h\"\n".into(),
            "authenticators.jwt.leeway",
            "\"1h\" is longer than 5m",
        ),
        (
            "two claims forwarded in one header",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\nforward_claims = { iss = \"x-a\", sub = \"X-A\" }\n".into(),
            "authenticators.jwt.forward_claims.sub",
            "already carries the claim \"iss\"",
        ),
        (
            "discovery with a shared-secret algorithm",
            "[authenticators.idp]\nissuer = \"https://id.example.com\"\nalgorithm = \"HS256\"\n".into(),
            "authenticators.idp.algorithm",
            "public-key",
        ),
        (
            "an ext_authz gRPC address without a port",
            "[ext_authz.a]\ngrpc = \"opa.internal\"\n".into(),
            "ext_authz.a.grpc",
            "port",
        ),
        (
            "an unknown identity",
            "[authenticators.mesh]\nkind = \"client_cert\"\nidentity = [\"uri\", \"ip\"]\n".into(),
            "authenticators.mesh.identity[1]",
            "\"ip\"",
        ),
        (
            "a claim no certificate has",
            "[authenticators.mesh]\nkind = \"client_cert\"\nforward_claims = { nonexist = \"x-foo\" }\n".into(),
            "authenticators.mesh.forward_claims.nonexist",
            "has no claim \"nonexist\"",
        ),
        (
            "a certificate's credential to strip",
            "[authenticators.mesh]\nkind = \"client_cert\"\nstrip_credential = true\n".into(),
            "authenticators.mesh.strip_credential",
            "nothing to strip",
        ),
        (
            "introspection without a client secret",
            "[authenticators.o]\nkind = \"introspection\"\nintrospection_url = \"http://127.0.0.1:9/i\"\nclient_id = \"p\"\n".into(),
            "authenticators.o.client_secret",
            "client_secret_env",
        ),
        (
            "two client secrets",
            "[authenticators.o]\nkind = \"introspection\"\nintrospection_url = \"http://127.0.0.1:9/i\"\nclient_id = \"p\"\nclient_secret = \"a\"\nclient_secret_env = \"B\"\n".into(),
            "authenticators.o.client_secret",
            "one of",
        ),
        (
            "a secret from an unset variable",
            "[authenticators.o]\nkind = \"introspection\"\nintrospection_url = \"http://127.0.0.1:9/i\"\nclient_id = \"p\"\nclient_secret_env = \"PORTICO_TEST_UNSET_SECRET\"\n".into(),
            "authenticators.o.client_secret_env",
            "PORTICO_TEST_UNSET_SECRET",
        ),
        (
            "an introspection URL that is not one",
            "[authenticators.o]\nkind = \"introspection\"\nintrospection_url = \"ldap://x\"\nclient_id = \"p\"\nclient_secret = \"a\"\n".into(),
            "authenticators.o.introspection_url",
            "http",
        ),
        (
            "an issuer to discover that is not a URL",
            "[authenticators.idp]\nissuer = \"acme\"\n".into(),
            "authenticators.idp.issuer",
            "URL",
        ),
        (
            "an ext_authz with two services",
            "[ext_authz.a]\ngrpc = \"127.0.0.1:9\"\nhttp = \"http://127.0.0.1:9/\"\n".into(),
            "ext_authz.a.http",
            "not both",
        ),
        (
            "an ext_authz with none",
            "[ext_authz.a]\ntimeout = \"1s\"\n".into(),
            "ext_authz.a.grpc",
            "required",
        ),
        (
            "a bad failure mode",
            "[ext_authz.a]\ngrpc = \"127.0.0.1:9\"\nfailure_mode = \"maybe\"\n".into(),
            "ext_authz.a.failure_mode",
            "\"open\"",
        ),
        (
            "a claim forwarded in a -bin header",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\nforward_claims = { sub = \"x-user-id-bin\" }\n".into(),
            "authenticators.jwt.forward_claims.sub",
            "ends in -bin",
        ),
        (
            "a claim forwarded in a client protocol's header",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\nforward_claims = { scope = \"connect-protocol-version\" }\n".into(),
            "authenticators.jwt.forward_claims.scope",
            "a client protocol's framing",
        ),
        (
            "a claim forwarded in an MCP header",
            "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\nforward_claims = { tier = \"mcp-session-id\" }\n".into(),
            "authenticators.jwt.forward_claims.tier",
            "a client protocol's framing",
        ),
        (
            "upstream_headers on a gRPC service",
            "[ext_authz.a]\ngrpc = \"127.0.0.1:9\"\nupstream_headers = [\"x-user\"]\n".into(),
            "ext_authz.a.upstream_headers",
            "forward-auth",
        ),
    ];
    for (case, section, key, reason) in cases {
        let text = support::config_text(backend, &section, "");
        let err = portico::config::Config::from_toml(&text)
            .err()
            .unwrap_or_else(|| panic!("{case}: accepted"));
        assert_eq!(err.key, key, "{case}: {err:?}");
        assert!(err.reason.contains(reason), "{case}: {}", err.reason);
    }
    std::fs::remove_dir_all(&dir).ok();
    // No leeway at all is a choice, not a mistake.
    let strict = "[authenticators.jwt]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-of-32-bytes-ok!\"\nleeway = \"0s\"\n";
    portico::config::Config::from_toml(&support::config_text(backend, strict, ""))
        .expect("a leeway of 0s");

    let route_cases = [
        ("auth = [\"keys\", \"nobody\"]", "auth", "nobody"),
        ("auth = [\"keys\", \"keys\"]", "auth", "twice"),
        ("ext_authz = \"nobody\"", "ext_authz", "nobody"),
    ];
    for (route, key, reason) in route_cases {
        let sections =
            format!("[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{keys}\"\n");
        let text = support::config_text(backend, &sections, route);
        let err = portico::config::Config::from_toml(&text).err().unwrap();
        assert_eq!(err.key, format!("routes[0].{key}"), "{route}");
        assert!(err.reason.contains(reason), "{route}: {}", err.reason);
    }

    // A forward-auth service and an authenticator of one route writing one
    // header: refused, naming both. On different routes they may.
    let sections = format!(
        "[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{keys}\"\nforward_claims = {{ consumer = \"x-user-id\" }}\n[ext_authz.gate]\nhttp = \"http://127.0.0.1:9/check\"\nupstream_headers = [\"x-tenant\", \"X-User-Id\"]\n"
    );
    let text = support::config_text(backend, &sections, "auth = \"keys\"\next_authz = \"gate\"");
    let err = portico::config::Config::from_toml(&text).err().unwrap();
    assert_eq!(err.key, "routes[0].ext_authz");
    assert!(
        err.reason.contains("ext_authz.gate.upstream_headers[1]")
            && err
                .reason
                .contains("authenticators.keys.forward_claims.consumer"),
        "{}",
        err.reason
    );
    let apart = support::config_text(backend, &sections, "")
        .with_route_keys("Probe", "ext_authz = \"gate\"")
        .with_route_keys("Library", "auth = \"keys\"");
    assert!(
        apart.contains("ext_authz = \"gate\"") && apart.contains("auth = \"keys\""),
        "{apart}"
    );
    portico::config::Config::from_toml(&apart).expect("one writer per route");
}

#[tokio::test]
async fn a_claim_grpc_metadata_cannot_carry_goes_base64_in_a_bin_header() {
    let provider = Introspection::default();
    provider.know(
        "opaque-jose",
        json!({"active": true, "sub": "José Müller", "scope": "read"}),
    );
    let addr = provider.start().await;
    let h = gateway(&introspection_section(addr, ""), "auth = \"opaque\"").await;
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("José Müller");
    for protocol in EVERY_PROTOCOL {
        let mut headers = vec![
            ("authorization", "Bearer opaque-jose"),
            // A client's own copy of the claim's header is never believed.
            ("x-user-id-bin", "Zm9yZ2Vk"),
        ];
        if protocol == Protocol::Grpc {
            // tonic sends no binary metadata through this helper; a raw
            // HTTP/2 client does.
            headers.push(("grpc-timeout", "30S"));
        }
        let seen = call(&h, protocol, &headers, "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}");
        assert_eq!(
            seen.metadata["x-user-id-bin"],
            encoded.as_str(),
            "{protocol:?}"
        );
        assert!(!seen.metadata.contains_key("x-user-id"), "{protocol:?}");
        assert_eq!(
            seen.metadata["x-scopes"], "read",
            "{protocol:?}: ASCII claims as they are"
        );
    }
}

/// With client certificates on, no TLS session is resumed: a resumed
/// session shows no certificate, so one that has expired since (or whose
/// CA the config no longer trusts) would go on opening connections for as
/// long as its session lived.
#[tokio::test]
async fn a_session_with_client_certificates_is_never_resumed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let orders = pki.issue("orders", vec![]);
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\nclient_cert = \"optional\"\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem")
    );
    let h = support::Harness::start_with_config(|backend| {
        support::config_text(backend, "", "").replacen(
            "admin = \"127.0.0.1:0\"\n",
            &format!("admin = \"127.0.0.1:0\"\n{tls}"),
            1,
        )
    })
    .await;
    // One client config, which keeps sessions to resume (rustls does by
    // default).
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client(Some(&orders))));
    let mut handshakes = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(h.gateway.addr)
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::IpAddress(h.gateway.addr.ip().into());
        let mut conn = connector.connect(name, tcp).await.unwrap();
        handshakes.push(conn.get_ref().1.handshake_kind());
        // A whole exchange: a TLS 1.3 server offers its session tickets
        // after the handshake.
        conn.write_all(b"GET /v1/shelves/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply).await;
        assert!(
            reply.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_eq!(
        handshakes,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Full)
        ]
    );
}

/// An API key header holding bytes that are not visible ASCII is told
/// apart from a missing key: "unknown API key", saying why, on every
/// protocol that can carry such a header over HTTP/1.1 as it came.
#[tokio::test]
async fn an_api_key_that_is_not_ascii_text_is_an_unknown_key_saying_why() {
    let sections = format!(
        "[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        support::fixture("api_keys.toml")
    );
    let h = gateway(&sections, "auth = \"keys\"").await;
    let grpc_web_body = "\0\0\0\0\0";
    for (protocol, head, body) in [
        ("REST", "GET /v1/probe/headers HTTP/1.1\r\n", ""),
        (
            "Connect",
            "POST /portico.demo.v1.Probe/Headers HTTP/1.1\r\ncontent-type: application/json\r\n",
            "{}",
        ),
        (
            "gRPC-Web",
            "POST /portico.demo.v1.Probe/Headers HTTP/1.1\r\ncontent-type: application/grpc-web+proto\r\n",
            grpc_web_body,
        ),
    ] {
        let mut request = format!(
            "{head}host: g\r\nconnection: close\r\ncontent-length: {}\r\nx-api-key: caf",
            body.len()
        )
        .into_bytes();
        request.push(0xe9);
        request.extend_from_slice(format!("\r\n\r\n{body}").as_bytes());
        let answer = support::http1_exchange(h.gateway.addr, &request).await;
        assert!(
            answer.contains("unknown API key: the x-api-key header holds bytes that are not visible ASCII text"),
            "{protocol}: {answer}"
        );
        assert!(
            answer.contains("401") || answer.contains("grpc-status: 16"),
            "{protocol}: {answer}"
        );
    }
}

#[tokio::test]
async fn an_array_claims_items_reach_the_backend_each_whole_on_every_protocol() {
    // A backend splitting `x-roles` on commas must get the token's roles
    // back, never one more: an item holding a comma is not two items.
    let secret = "a-secret-long-enough-for-hs256-tokens";
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\nforward_claims = {{ roles = \"x-roles\" }}\n"
    );
    let h = gateway(&sections, "auth = \"users\"").await;
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "ada", "exp": exp, "roles": ["reader", "b,admin", "50%", 7, ["x", "y"], " admin"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let bearer = format!("Bearer {token}");
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("authorization", &bearer)], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
        let roles = seen.metadata["x-roles"].as_str().unwrap_or_default();
        assert_eq!(
            roles, r#"reader,b%2Cadmin,50%25,7,["x"%2C"y"],%20admin"#,
            "{protocol:?}"
        );
        let items: Vec<&str> = roles.split(',').collect();
        assert_eq!(items.len(), 6, "{protocol:?}: {roles}");
        assert!(
            !items.iter().any(|i| i.trim() == "admin"),
            "{protocol:?}: {roles}"
        );
    }
}

/// A session cookie is a credential wherever it is sent: two different
/// values of it, or one beside a different bearer token, are refused on
/// every protocol, on a route that does not authenticate too (its backend
/// must get the one the client chose), and on the multiplexed `/ws`
/// handshake before the upgrade, as two tokens are.
#[tokio::test]
async fn a_session_cookie_twice_or_beside_another_token_is_two_credentials_everywhere() {
    let sections = "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"the-browser-session-signing-secret\"\ncookie = \"session\"\n";
    // Probe is open: the authenticator guards no route it serves.
    let h = gateway(sections, "").await;
    let refused: [(&[(&str, &str)], &str); 4] = [
        (
            &[("cookie", "session=one; theme=dark; session=two")],
            "several `session` cookies",
        ),
        // No WebSocket token parameter is configured: headers are the
        // only place a bearer token travels, and the refusal says so.
        (
            &[
                ("authorization", "Bearer one"),
                ("authorization", "Bearer two"),
            ],
            "(two different authorization values, in headers)",
        ),
        (
            &[("cookie", "session=one"), ("cookie", "session=two")],
            "several `session` cookies",
        ),
        (
            &[("cookie", "session=one"), ("authorization", "Bearer two")],
            "authorization and the session cookie `session`",
        ),
    ];
    for protocol in EVERY_PROTOCOL {
        for (headers, says) in refused {
            let seen = call(&h, protocol, headers, "", None).await;
            assert_eq!(seen.code, 3, "{protocol:?} {headers:?}: {}", seen.message);
            assert!(
                seen.message.contains("more than one credential") && seen.message.contains(says),
                "{protocol:?} {headers:?}: {}",
                seen.message
            );
        }
        // One credential, however often it is sent, goes through.
        let once: &[(&str, &str)] = &[
            ("cookie", "session=one; session=one"),
            ("authorization", "Bearer one"),
        ];
        let seen = call(&h, protocol, once, "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}: {}", seen.message);
    }
    assert_eq!(
        h.backends.probe.calls(),
        EVERY_PROTOCOL.len() as u64,
        "no refused call reached the backend"
    );

    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    for (headers, says) in refused {
        let mut req = format!("ws://{}/ws", h.gateway.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", "portico.json.v1".parse().unwrap());
        for (name, value) in headers {
            req.headers_mut()
                .append(*name, http::HeaderValue::from_str(value).unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 400, "{headers:?}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains(says), "{headers:?}: {body}");
            }
            other => panic!("{headers:?}: upgraded or failed otherwise: {other:?}"),
        }
    }
}
