//! JWT authentication as a pipeline policy: the same verdict for REST, gRPC
//! and WebSocket callers, and a refused caller never reaches the backend.

use crate::support;
use support::RouteKeys;

use base64::Engine as _;
use http::{Method, StatusCode};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use portico::app;
use portico::config::Config;
use portico::demo::backends::pb;
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};
use support::{fixture, Harness};

const SECRET: &str = "a-test-secret-of-reasonable-length";
const ISSUER: &str = "https://id.portico.test";
const AUDIENCE: &str = "portico-tests";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> serde_json::Value {
    json!({"sub": "ada", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "nbf": now() - 10, "scope": "library.read feed.read", "tenant": "acme"})
}

fn hs256(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: &serde_json::Value) -> String {
    let pem = std::fs::read(fixture("jwt_rs256_private.pem")).unwrap();
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// The demo services with Probe behind an HS256 authenticator and Library
/// behind an RS256 one; Feed and Chat stay open.
async fn gateway() -> Harness {
    Harness::start_with_config(|backend| {
        let sections = format!(
            "[websocket]\ntoken_query_param = \"access_token\"\n\n\
             [authenticators.hs]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nleeway = \"1s\"\ncookie = \"session\"\n\n\
             [authenticators.rs]\nalgorithm = \"RS256\"\npublic_key_file = \"{}\"\nissuer = \"{ISSUER}\"\n",
            fixture("jwt_rs256_public.pem")
        );
        support::config_text(backend, &sections, "")
            .with_route_keys("Probe", "auth = \"hs\"")
            .with_route_keys("Library", "auth = \"rs\"\nauthorize = { scopes = [\"library.read\"], claims = { tenant = \"acme\" } }")
    })
    .await
}

async fn rest_with(h: &Harness, path: &str, token: &str) -> support::Reply {
    let auth = format!("Bearer {token}");
    h.client
        .send(Method::GET, path, &[("authorization", auth.as_str())], "")
        .await
}

#[tokio::test]
async fn a_valid_token_passes_over_rest_grpc_and_websocket() {
    let h = gateway().await;
    let token = hs256(&claims());
    let r = rest_with(&h, "/v1/probe/headers", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["metadata"]["authorization"],
        format!("Bearer {token}")
    );

    let channel = h.grpc_channel().await;
    let mut req = tonic::Request::new(pb::HeadersRequest {});
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert!(pb::probe_client::ProbeClient::new(channel.clone())
        .headers(req)
        .await
        .is_ok());

    let url = format!(
        "ws://{}/v1/probe/headers?access_token={token}",
        h.gateway.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(first.as_str().contains("\"result\""), "{first}");

    // RS256 on the other route.
    let r = rest_with(&h, "/v1/shelves/1", &rs256(&claims())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn no_token_is_401_with_a_challenge_and_the_backend_is_not_called() {
    let h = gateway().await;
    let r = h.client.get("/v1/probe/headers").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"portico\"")
    );
    assert_eq!(r.json()["code"], 16);
    // The route's authenticator also reads a session cookie: named too.
    assert_eq!(
        r.json()["message"],
        "this route needs a bearer token or the session cookie session"
    );
    // Another scheme is told that its header is not a bearer token, on a
    // route with one authenticator as on one with several.
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[("authorization", "Basic YWRhOnB3")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json()["message"],
        "the Authorization header is not a bearer token; this route needs a bearer token or the session cookie session"
    );
    // A Bearer with no token after it was seen, not missing: said so.
    for header in ["Bearer", "Bearer ", "Bearer\tabc"] {
        let r = h
            .client
            .send(
                http::Method::GET,
                "/v1/probe/headers",
                &[("authorization", header)],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(
            r.json()["message"],
            "the Authorization header names Bearer but carries no token after it (write \"Bearer\", one space, the token); this route needs a bearer token or the session cookie session",
            "{header:?}"
        );
    }

    let channel = h.grpc_channel().await;
    let err = pb::probe_client::ProbeClient::new(channel)
        .headers(pb::HeadersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert_eq!(h.backends.probe.calls(), 0);
    // Routes without an authenticator stay open.
    assert_eq!(
        h.client.get("/v1/feed?count=1").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_before_the_backend() {
    let h = gateway().await;
    let mut bad: Vec<(&str, String)> = Vec::new();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        hs256(&c)
    };
    bad.push(("expired", with(&|c| c["exp"] = json!(now() - 120))));
    bad.push(("not yet valid", with(&|c| c["nbf"] = json!(now() + 120))));
    bad.push((
        "wrong issuer",
        with(&|c| c["iss"] = json!("https://evil.test")),
    ));
    bad.push((
        "wrong audience",
        with(&|c| c["aud"] = json!("someone-else")),
    ));
    bad.push((
        "no expiry",
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
    ));
    bad.push((
        "exp of the wrong type",
        with(&|c| c["exp"] = json!("tomorrow")),
    ));
    bad.push(("iss of the wrong type", with(&|c| c["iss"] = json!(42))));
    // RFC 7519 makes `iss` one value: a list holding the issuer is not it.
    bad.push((
        "iss a list",
        with(&|c| c["iss"] = json!([ISSUER, "https://other.example"])),
    ));
    bad.push((
        "wrong key",
        encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"another-secret"),
        )
        .unwrap(),
    ));
    let good = hs256(&claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let tampered_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        json!({"sub": "root", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}).to_string(),
    );
    parts[1] = &tampered_claims;
    bad.push(("tampered", parts.join(".")));
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims().to_string());
    bad.push(("alg none", format!("{none_header}.{body}.")));
    bad.push(("garbage", "not.a.token".to_owned()));

    // The message says what was wrong in words, not the library's names.
    let says = |what: &str| match what {
        "expired" => "it has expired (exp)",
        "not yet valid" => "it is not valid yet (nbf)",
        "wrong issuer" => "it is from another issuer (iss)",
        "wrong audience" => "it is for another audience (aud)",
        "no expiry" => "it has no exp claim, which is required",
        "exp of the wrong type" => "its exp claim has the wrong type",
        "iss of the wrong type" | "iss a list" => "its iss claim has the wrong type",
        "wrong key" | "tampered" => "its signature does not verify",
        // Not the parser's list of the algorithms it knows.
        "alg none" => "it is signed with an algorithm this route does not accept",
        _ => "it is not a JWT",
    };
    for (what, token) in &bad {
        let r = rest_with(&h, "/v1/probe/headers", token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
        let message = r.json()["message"].as_str().unwrap_or("").to_owned();
        assert!(
            message.starts_with("invalid token: ") && message.contains(says(what)),
            "{what}: {message}"
        );
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }
    assert_eq!(
        h.backends.probe.calls(),
        0,
        "no bad token reached the backend"
    );

    // An HS256 token signed with the RS256 route's public key: the classic
    // algorithm confusion. The route only accepts RS256.
    let public = std::fs::read(fixture("jwt_rs256_public.pem")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let r = rest_with(&h, "/v1/shelves/1", &confused).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.text()
            .contains("signed with an algorithm this route does not accept"),
        "{}",
        r.text()
    );
    // And an HS256 token on the RS256 route, even with the right claims.
    assert_eq!(
        rest_with(&h, "/v1/shelves/1", &hs256(&claims()))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[test]
fn authenticator_config_errors_name_the_key() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n";
    let route = "[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"a\"\n";
    let err =
        portico::config::Config::from_toml(&format!("{base}{route}auth = \"nope\"\n")).unwrap_err();
    assert_eq!(err.key, "routes[0].auth");
    // Two key sources, or one of the wrong kind: the key at fault is named,
    // with what the algorithm takes.
    let secret = "secret = \"0123456789abcdef0123456789abcdef-long-enough\"\n";
    let pem = format!(
        "public_key_file = \"{}\"\n",
        fixture("jwt_rs256_public.pem")
    );
    let jwks_url = "jwks_url = \"https://id.example.com/jwks.json\"\n";
    let jwks_file = format!("jwks_file = \"{}\"\n", fixture("jwt_rs256_public.pem"));
    let cases: [(&str, String, &str, &str); 8] = [
        (
            "HS256",
            format!("{secret}{jwks_url}"),
            "jwks_url",
            "is given beside secret",
        ),
        (
            "HS256",
            format!("{secret}{jwks_file}"),
            "jwks_file",
            "is given beside secret",
        ),
        (
            "HS256",
            pem.clone(),
            "public_key_file",
            "HS256 verifies with a shared secret",
        ),
        (
            "HS256",
            "secret = \"\"\n".to_owned(),
            "secret",
            "HS256 needs a non-empty secret",
        ),
        (
            "HS384",
            String::new(),
            "secret",
            "HS384 needs a non-empty secret",
        ),
        (
            "RS256",
            secret.to_owned(),
            "secret",
            "RS256 verifies with a public key",
        ),
        (
            "RS256",
            format!("{pem}{jwks_url}"),
            "jwks_url",
            "is given beside public_key_file",
        ),
        (
            "ES256",
            String::new(),
            "public_key_file",
            "ES256 needs one of public_key_file",
        ),
    ];
    for (algorithm, keys, at, says) in cases {
        let err = portico::config::Config::from_toml(&format!(
            "{base}[authenticators.x]\nalgorithm = \"{algorithm}\"\n{keys}{route}"
        ))
        .unwrap_err();
        assert_eq!(
            err.key,
            format!("authenticators.x.{at}"),
            "{algorithm} {keys}: {err}"
        );
        assert!(err.reason.contains(says), "{algorithm} {keys}: {err}");
    }
    let err = portico::config::Config::from_toml(&format!(
        "{base}[authenticators.x]\nalgorithm = \"none\"\nsecret = \"s\"\n{route}"
    ))
    .unwrap_err();
    assert_eq!(err.key, "authenticators.x.algorithm");
    assert!(
        err.reason.starts_with("\"none\" is not one of HS256"),
        "said plainly, not as Some(..): {err}"
    );
}

#[test]
fn a_private_key_given_as_the_public_key_is_refused_naming_the_file() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"a\"\nauth = \"x\"\n";
    let private = fixture("jwt_rs256_private.pem");
    let err = portico::config::Config::from_toml(&format!(
        "{base}[authenticators.x]\nalgorithm = \"RS256\"\npublic_key_file = \"{private}\"\n"
    ))
    .unwrap_err();
    assert_eq!(err.key, "authenticators.x.public_key_file", "{err}");
    assert!(
        err.reason
            .contains(&format!("{private} holds a private key"))
            && err.reason.contains("openssl pkey -in KEY -pubout"),
        "{err}"
    );
    let inline = std::fs::read_to_string(&private).unwrap();
    let err = portico::config::Config::from_toml(&format!(
        "{base}[authenticators.x]\nalgorithm = \"RS256\"\npublic_key = '''{inline}'''\n"
    ))
    .unwrap_err();
    assert_eq!(err.key, "authenticators.x.public_key", "{err}");
    assert!(err.reason.starts_with("is a private key"), "{err}");
}

#[tokio::test]
async fn a_public_key_of_another_kind_than_the_algorithm_is_named() {
    // An RSA key where ES256 needs an EC key.
    let text = support::config_text(
        "127.0.0.1:1".parse().unwrap(),
        &format!(
            "[authenticators.x]\nalgorithm = \"ES256\"\npublic_key_file = \"{}\"\n",
            fixture("jwt_rs256_public.pem")
        ),
        "auth = \"x\"",
    );
    // Refused as the config is read, naming the file.
    let err = match portico::config::Config::from_toml(&text) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an RSA key was taken for ES256"),
    };
    assert!(
        err.contains("authenticators.x.public_key_file")
            && err.contains("jwt_rs256_public.pem is not a PEM EC public key, which ES256 needs"),
        "{err}"
    );
}

#[tokio::test]
async fn a_known_caller_without_the_scope_or_claim_is_forbidden() {
    let h = gateway().await;
    let mut missing_scope = claims();
    missing_scope["scope"] = json!("feed.read");
    let r = rest_with(&h, "/v1/shelves/1", &rs256(&missing_scope)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["code"], 7);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("library.read"));
    // RFC 6750 section 3.1: the challenge says which scopes the route needs.
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"portico\", error=\"insufficient_scope\", scope=\"library.read\"")
    );
    let mut channel_req = tonic::Request::new(pb::GetShelfRequest { shelf: "1".into() });
    channel_req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", rs256(&missing_scope)).parse().unwrap(),
    );
    let err = pb::library_client::LibraryClient::new(h.grpc_channel().await)
        .get_shelf(channel_req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.metadata()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("insufficient_scope")),
        "gRPC carries the challenge too: {:?}",
        err.metadata()
    );

    let mut other_tenant = claims();
    other_tenant["tenant"] = json!("globex");
    let channel = h.grpc_channel().await;
    let mut req = tonic::Request::new(pb::GetShelfRequest { shelf: "1".into() });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", rs256(&other_tenant)).parse().unwrap(),
    );
    let err = pb::library_client::LibraryClient::new(channel)
        .get_shelf(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // A claim, not a scope, is missing: no scope challenge.
    assert!(err.metadata().get("www-authenticate").is_none());

    // Scopes as an array, and a claim array that contains the value, pass.
    let mut arrays = claims();
    arrays["scope"] = json!(null);
    arrays["scp"] = json!(["library.read"]);
    arrays["tenant"] = json!(["globex", "acme"]);
    assert_eq!(
        rest_with(&h, "/v1/shelves/1", &rs256(&arrays)).await.status,
        StatusCode::OK
    );
    // No token at all is still a 401, not a 403.
    assert_eq!(
        h.client.get("/v1/shelves/1").await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// A JWKS endpoint whose key set the test can change.
/// A JWKS endpoint serving `set`, over TLS with the fixture certificate
/// (signed by `tests/fixtures/tls/ca.pem`) when `tls` is set.
async fn jwks_server(
    set: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
    tls: bool,
) -> std::net::SocketAddr {
    use hyper::service::service_fn;
    use rustls::pki_types::pem::PemObject;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.then(|| {
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(fixture("tls/server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(fixture("tls/server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    });
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let set = set.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let body = set.lock().unwrap().to_string();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match acceptor {
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                    }
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                    }
                };
            });
        }
    });
    addr
}

fn oct_jwk(kid: &str, secret: &[u8]) -> serde_json::Value {
    json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)})
}

fn signed_with(kid: Option<&str>, secret: &[u8]) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn a_rotated_key_from_the_jwks_url_is_picked_up() {
    let set = std::sync::Arc::new(std::sync::Mutex::new(
        json!({"keys": [oct_jwk("k1", b"first-secret")]}),
    ));
    let jwks = jwks_server(set.clone(), false).await;
    let h = Harness::start_with_config(|backend| {
        let sections = format!(
            "[authenticators.rotating]\nalgorithm = \"HS256\"\njwks_url = \"http://{jwks}/jwks.json\"\njwks_min_refresh = \"100ms\"\nissuer = \"{ISSUER}\"\n"
        );
        support::config_text(backend, &sections, "").with_route_keys("Probe", "auth = \"rotating\"")
    })
    .await;
    let path = "/v1/probe/headers";
    assert_eq!(
        rest_with(&h, path, &signed_with(Some("k1"), b"first-secret"))
            .await
            .status,
        StatusCode::OK
    );
    let k2 = signed_with(Some("k2"), b"second-secret");
    assert_eq!(
        rest_with(&h, path, &k2).await.status,
        StatusCode::UNAUTHORIZED,
        "k2 is not published yet"
    );
    assert_eq!(
        rest_with(&h, path, &signed_with(None, b"first-secret"))
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "no kid"
    );

    // The issuer rotates: k2 is published. After the minimum refresh
    // interval, a token naming the unknown kid makes the gateway refetch.
    *set.lock().unwrap() =
        json!({"keys": [oct_jwk("k1", b"first-secret"), oct_jwk("k2", b"second-secret")]});
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(rest_with(&h, path, &k2).await.status, StatusCode::OK);
}

/// Only keys meant for the authenticator's algorithm and for verifying
/// are used, and of two keys under one kid the set's first: a token signed
/// with any other is refused, on every protocol.
#[tokio::test]
async fn keys_the_set_says_are_for_something_else_verify_nothing() {
    use support::protocols::{call, EVERY_PROTOCOL};
    let mut for_hs512 = oct_jwk(
        "k-512",
        b"hs512-secret-hs512-secret-hs512-secret-hs512-secret-64b",
    );
    for_hs512["alg"] = json!("HS512");
    let mut encrypts = oct_jwk("k-enc", b"encryption-secret");
    encrypts["key_ops"] = json!(["encrypt", "decrypt"]);
    let mut verifies = oct_jwk("k-ok", b"verifying-secret");
    verifies["key_ops"] = json!(["verify"]);
    let set = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": [
        for_hs512, encrypts, verifies,
        oct_jwk("k-twice", b"first-of-two"), oct_jwk("k-twice", b"second-of-two"),
    ]})));
    let jwks = jwks_server(set, false).await;
    let h = Harness::start_with_config(|backend| {
        let sections = format!(
            "[authenticators.set]\nalgorithm = \"HS256\"\njwks_url = \"http://{jwks}/jwks.json\"\nissuer = \"{ISSUER}\"\n"
        );
        support::config_text(backend, &sections, "").with_route_keys("Probe", "auth = \"set\"")
    })
    .await;
    for (kid, secret, verified) in [
        ("k-ok", &b"verifying-secret"[..], true),
        ("k-twice", b"first-of-two", true),
        ("k-twice", b"second-of-two", false),
        (
            "k-512",
            b"hs512-secret-hs512-secret-hs512-secret-hs512-secret-64b",
            false,
        ),
        ("k-enc", b"encryption-secret", false),
    ] {
        let bearer = format!("Bearer {}", signed_with(Some(kid), secret));
        for protocol in EVERY_PROTOCOL {
            let seen = call(&h, protocol, &[("authorization", &bearer)], "", None).await;
            let want = if verified { 0 } else { 16 };
            assert_eq!(seen.code, want, "{kid} {protocol:?}: {}", seen.message);
        }
    }
}

#[tokio::test]
async fn a_key_the_issuer_removes_stops_verifying_on_every_protocol_once_the_set_is_older_than_its_max_age(
) {
    use support::protocols::{call, Protocol, EVERY_PROTOCOL};
    let set = std::sync::Arc::new(std::sync::Mutex::new(
        json!({"keys": [oct_jwk("k1", b"first-secret"), oct_jwk("k2", b"second-secret")]}),
    ));
    let jwks = jwks_server(set.clone(), false).await;
    let h = support::protocols::gateway(
        &format!(
            "[authenticators.rotating]\nalgorithm = \"HS256\"\njwks_url = \"http://{jwks}/jwks.json\"\njwks_min_refresh = \"100ms\"\njwks_max_age = \"300ms\"\nissuer = \"{ISSUER}\"\n"
        ),
        "auth = \"rotating\"",
    )
    .await;
    let old = format!("Bearer {}", signed_with(Some("k1"), b"first-secret"));
    let new = format!("Bearer {}", signed_with(Some("k2"), b"second-secret"));
    let with = |token: &str| vec![("authorization", token.to_owned())];
    async fn code(h: &Harness, protocol: Protocol, headers: &[(&str, String)]) -> (i64, String) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let seen = call(h, protocol, &headers, "", None).await;
        (seen.code, seen.message)
    }
    for protocol in EVERY_PROTOCOL {
        for token in [&old, &new] {
            assert_eq!(code(&h, protocol, &with(token)).await.0, 0, "{protocol:?}");
        }
    }

    // The issuer withdraws k1. No token names an unknown kid, so only the
    // set's age makes the gateway read it again; the k1 token, remembered
    // as verified, must not outlive the key.
    *set.lock().unwrap() = json!({"keys": [oct_jwk("k2", b"second-secret")]});
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    // The call that finds the set old is answered with the keys known
    // (the read runs in the background).
    let first = code(&h, Protocol::Rest, &with(&new)).await;
    assert_eq!(first.0, 0, "{first:?}");
    assert!(
        support::eventually_async(|| async { code(&h, Protocol::Rest, &with(&old)).await.0 == 16 })
            .await,
        "the k1 token still verifies after the set was read again"
    );
    for protocol in EVERY_PROTOCOL {
        let (refused, message) = code(&h, protocol, &with(&old)).await;
        assert_eq!(refused, 16, "{protocol:?}: {message}");
        assert!(
            message.contains("unknown key id \"k1\""),
            "{protocol:?}: {message}"
        );
        assert_eq!(code(&h, protocol, &with(&new)).await.0, 0, "{protocol:?}");
    }

    // A kid the client chose, outside ASCII, is in the message as sent, and
    // in the challenge as what a header may hold (RFC 6750 section 3): one
    // valid challenge on every protocol.
    let foreign = format!("Bearer {}", signed_with(Some("é\""), b"second-secret"));
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[("authorization", &foreign)], "", None).await;
        assert_eq!(seen.code, 16, "{protocol:?}: {}", seen.message);
        assert!(
            seen.message.contains("unknown key id \"é\\\"\""),
            "{protocol:?}: {}",
            seen.message
        );
        assert_eq!(
            seen.challenge.as_deref(),
            Some(
                "Bearer realm=\"portico\", error=\"invalid_token\", \
                 error_description=\"invalid token: unknown key id '?'''\""
            ),
            "{protocol:?}"
        );
    }
}

#[test]
fn a_jwks_max_age_shorter_than_its_min_refresh_is_refused() {
    let err = portico::config::Config::from_toml(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n\
         [authenticators.x]\nalgorithm = \"RS256\"\njwks_file = \"keys.json\"\njwks_min_refresh = \"1m\"\njwks_max_age = \"30s\"\n\
         [[routes]]\ngrpc_service = \"a.B\"\nupstream = \"a\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key, "authenticators.x.jwks_max_age");
    assert!(
        err.to_string().contains("shorter than jwks_min_refresh"),
        "{err}"
    );
}

#[tokio::test]
async fn api_keys_name_consumers_and_claims_can_be_forwarded_or_the_credential_stripped() {
    let h = Harness::start_with_config(|backend| {
        let sections = format!(
            "[authenticators.partners]\nkind = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\nforward_claims = {{ consumer = \"x-consumer\" }}\nstrip_credential = true\n\n\
             [authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\nforward_claims = {{ sub = \"x-user-id\", tenant = \"x-tenant\" }}\nstrip_credential = true\n",
            fixture("api_keys.toml")
        );
        support::config_text(backend, &sections, "")
            .with_route_keys("Probe", "auth = \"partners\"")
            .with_route_keys("Library", "auth = \"users\"")
    })
    .await;
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("x-api-key", "acme-key-123")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let md = &r.json()["metadata"];
    assert_eq!(md["x-consumer"], "acme");
    assert!(
        md.get("x-api-key").is_none(),
        "the key was stripped before the backend"
    );

    let channel = h.grpc_channel().await;
    let mut req = tonic::Request::new(pb::HeadersRequest {});
    req.metadata_mut()
        .insert("x-api-key", "globex-key-456".parse().unwrap());
    let md = pb::probe_client::ProbeClient::new(channel)
        .headers(req)
        .await
        .unwrap()
        .into_inner()
        .metadata;
    assert_eq!(md.get("x-consumer").map(String::as_str), Some("globex"));

    for bad in [None, Some("wrong-key")] {
        let headers: Vec<(&str, &str)> = bad.map(|k| ("x-api-key", k)).into_iter().collect();
        let r = h
            .client
            .send(Method::GET, "/v1/probe/headers", &headers, "")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(
            r.header("www-authenticate"),
            None,
            "{bad:?}: a route that takes only API keys challenges for no bearer token"
        );
    }
    assert_eq!(h.backends.probe.calls(), 2);

    assert_eq!(
        rest_with(&h, "/v1/shelves/1", &hs256(&claims()))
            .await
            .status,
        StatusCode::OK
    );

    // JWT claims forwarded as metadata, the token itself stripped: what the backend saw.
    let h = Harness::start_with_config(|backend| {
        let sections = format!(
            "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\nforward_claims = {{ sub = \"x-user-id\", tenant = \"x-tenant\" }}\nstrip_credential = true\n"
        );
        support::config_text(backend, &sections, "").with_route_keys("Probe", "auth = \"users\"")
    })
    .await;
    let r = rest_with(&h, "/v1/probe/headers", &hs256(&claims())).await;
    let md = &r.json()["metadata"];
    assert_eq!(
        (md["x-user-id"].as_str(), md["x-tenant"].as_str()),
        (Some("ada"), Some("acme"))
    );
    assert!(
        md.get("authorization").is_none(),
        "the token was stripped: {md}"
    );
}

#[tokio::test]
async fn a_remembered_token_still_stops_working_at_its_expiry() {
    let h = gateway().await;
    let mut short = claims();
    short["exp"] = json!(now() + 2);
    let token = hs256(&short);
    assert_eq!(
        rest_with(&h, "/v1/probe/headers", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        rest_with(&h, "/v1/probe/headers", &token).await.status,
        StatusCode::OK,
        "served from the verified-token cache"
    );
    // Timestamps are whole seconds and the leeway is 1 s: past second exp + 1,
    // the remembered token is dropped and fails verification.
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    assert_eq!(
        rest_with(&h, "/v1/probe/headers", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_browser_session_cookie_can_carry_the_token() {
    let h = gateway().await;
    let cookie = format!("theme=dark; session={}", hs256(&claims()));
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("cookie", cookie.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("cookie", "session=forged.token.value")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("cookie", "theme=dark")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.backends.probe.calls(), 1);

    // A browser's WebSocket handshake carries the same cookie to the same policy.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/v1/probe/headers", h.gateway.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let frame = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(frame.contains("\"result\""), "{frame}");
    assert_eq!(h.backends.probe.calls(), 2);
}

#[tokio::test]
async fn a_jwks_url_over_https_is_trusted_through_the_configured_ca() {
    let set = std::sync::Arc::new(std::sync::Mutex::new(
        json!({"keys": [oct_jwk("k1", b"first-secret")]}),
    ));
    let jwks = jwks_server(set.clone(), true).await;
    let sections = |ca: &str| {
        format!(
            "[authenticators.secure]\nalgorithm = \"HS256\"\njwks_url = \"https://{jwks}/jwks.json\"\n{ca}issuer = \"{ISSUER}\"\n"
        )
    };
    let route = "grpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\n";
    let secured = format!("{route}auth = \"secure\"\n");

    // The fixture CA is not among the built-in roots: startup fails, naming
    // the authenticator and the certificate problem.
    let text = support::config_text("127.0.0.1:1".parse().unwrap(), &sections(""), "")
        .replacen(route, &secured, 1);
    let err = match app::start(Config::from_toml(&text).unwrap()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an untrusted JWKS server was accepted"),
    };
    assert!(
        err.contains("authenticators.secure") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    let ca = format!("jwks_ca_file = \"{}\"\n", fixture("tls/ca.pem"));
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, &sections(&ca), "").replacen(route, &secured, 1)
    })
    .await;
    let path = "/v1/probe/headers";
    let k1 = signed_with(Some("k1"), b"first-secret");
    assert_eq!(rest_with(&h, path, &k1).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_api_key_may_come_in_the_query_and_a_route_may_admit_only_some_consumers() {
    let h = Harness::start_with_config(|backend| {
        let sections = format!(
            "[authenticators.partners]\nkind = \"api_key\"\nheader = \"x-api-key\"\nquery_param = \"api_key\"\nkeys_file = \"{}\"\n",
            fixture("api_keys.toml")
        );
        support::config_text(backend, &sections, "").with_route_keys("Probe", "auth = \"partners\"\nauthorize = { consumers = [\"acme\"] }")
    })
    .await;
    // The key leaves the query (strict query parsing never sees it) and
    // reaches the policy, and the backend, as the x-api-key header.
    let r = h.client.get("/v1/probe/headers?api_key=acme-key-123").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["metadata"]["x-api-key"], "acme-key-123");

    // A known consumer that the route does not admit.
    let r = h
        .client
        .get("/v1/probe/headers?api_key=globex-key-456")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("not an allowed consumer"), "{}", r.text());

    // A WebSocket handshake carries it the same way.
    let url = format!(
        "ws://{}/v1/probe/headers?api_key=acme-key-123",
        h.gateway.addr
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::StreamExt;
    let frame = ws.next().await.unwrap().unwrap();
    let text = frame.into_text().unwrap();
    assert!(text.contains("acme-key-123"), "{text}");
    assert_eq!(h.backends.probe.calls(), 2);

    // Two different keys are refused before the upgrade, as REST refuses
    // them, whichever of them is good; the backend is not called.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    for (header, query) in [
        (Some("acme-key-123"), "?api_key=globex-key-456"),
        (Some("not-a-key"), "?api_key=acme-key-123"),
        (Some("not-a-key"), "?api_key=also-not-a-key"),
        (None, "?api_key=acme-key-123&api_key=globex-key-456"),
    ] {
        let mut req = format!("ws://{}/v1/probe/headers{query}", h.gateway.addr)
            .into_client_request()
            .unwrap();
        if let Some(key) = header {
            req.headers_mut().insert("x-api-key", key.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{header:?} {query}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(
                    body.contains("more than one credential")
                        && body.contains("in headers or the `api_key` query parameter"),
                    "{body}"
                );
            }
            other => panic!("{header:?} {query}: upgraded or failed otherwise: {other:?}"),
        }
        let r = h
            .client
            .send(
                Method::GET,
                &format!("/v1/probe/headers{query}"),
                &header
                    .map(|k| ("x-api-key", k))
                    .into_iter()
                    .collect::<Vec<_>>(),
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "REST: {}", r.text());
    }
    // Two key headers on one handshake, too.
    let mut req = format!("ws://{}/v1/probe/headers", h.gateway.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .append("x-api-key", "acme-key-123".parse().unwrap());
    req.headers_mut()
        .append("x-api-key", "globex-key-456".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400),
        "{refused:?}"
    );
    assert_eq!(h.backends.probe.calls(), 2, "no refused call reached it");
}

#[tokio::test]
async fn a_public_key_may_be_given_inline_in_the_config() {
    let pem = std::fs::read_to_string(fixture("jwt_rs256_public.pem")).unwrap();
    let h = Harness::start_with_config(|backend| {
        let sections = format!(
            "[authenticators.inline]\nalgorithm = \"RS256\"\npublic_key = \"\"\"\n{pem}\"\"\"\nissuer = \"{ISSUER}\"\n"
        );
        support::config_text(backend, &sections, "").with_route_keys("Probe", "auth = \"inline\"")
    })
    .await;
    let r = rest_with(&h, "/v1/probe/headers", &rs256(&claims())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = rest_with(&h, "/v1/probe/headers", &hs256(&claims())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// A WebSocket session on an authenticated method's path is judged at the
/// handshake: no credential, or a bad one, is a 401 with the JSON error as
/// HTTP, never a `101` followed by a close; a good one is upgraded. A
/// multiplexed session (`/ws`) authenticates each call it opens.
#[tokio::test]
async fn a_websocket_handshake_on_an_authenticated_path_is_refused_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::Error;
    let h = gateway().await;
    let handshake = |query: String| {
        let url = format!("ws://{}/v1/probe/headers{query}", h.gateway.addr);
        async move { tokio_tungstenite::connect_async(url).await }
    };
    for (query, why) in [
        (String::new(), "no credential"),
        ("?access_token=not.a.jwt".to_owned(), "a bad token"),
        (
            format!(
                "?access_token={}",
                hs256(&json!({"sub": "ada", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 60}))
            ),
            "an expired token",
        ),
    ] {
        match handshake(query).await {
            Err(Error::Http(resp)) => {
                assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{why}");
                let body: serde_json::Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], 16, "{why}: {body}");
                assert!(resp.headers().contains_key("www-authenticate"), "{why}");
            }
            other => panic!("{why}: refused with a 401 before the upgrade, got {other:?}"),
        }
    }
    assert_eq!(h.backends.probe.calls(), 0, "the backend was never called");
    let (mut ws, _) = handshake(format!("?access_token={}", hs256(&claims())))
        .await
        .expect("a good token is upgraded");
    use futures_util::StreamExt;
    let frame = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(frame.contains("\"result\""), "{frame}");
}

#[tokio::test]
async fn tokens_without_a_subject_or_with_critical_extensions_are_refused() {
    let h = gateway().await;
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut numeric_sub = claims();
    numeric_sub["sub"] = json!(4242);
    let mut empty_sub = claims();
    empty_sub["sub"] = json!("");
    let mut crit_header = Header::new(Algorithm::HS256);
    crit_header.crit = Some(vec!["exp-unknown-ext".to_owned()]);
    let crit = encode(
        &crit_header,
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for (name, token, says) in [
        ("no sub", hs256(&no_sub), "no subject"),
        ("a numeric sub", hs256(&numeric_sub), "no subject"),
        ("an empty sub", hs256(&empty_sub), "no subject"),
        ("a crit header", crit, "critical extensions"),
    ] {
        let r = rest_with(&h, "/v1/probe/headers", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.text());
        assert!(
            r.json()["message"].as_str().unwrap().contains(says),
            "{name}: {}",
            r.text()
        );
    }
    assert_eq!(h.backends.probe.calls(), 0);
}

#[tokio::test]
async fn strip_credential_removes_the_session_cookie_that_authenticated() {
    let h = Harness::start_with_config(|backend| {
        support::config_text(
            backend,
            &format!(
                "[metadata]\nforward = [\"*\", \"cookie\"]\n\n\
                 [authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\ncookie = \"session\"\nstrip_credential = true\n"
            ),
            "",
        )
        .with_route_keys("Probe", "auth = \"users\"")
    })
    .await;
    let cookie = format!("theme=dark; session={}; other=1", hs256(&claims()));
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("cookie", cookie.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["metadata"]["cookie"], "theme=dark; other=1");
    // Only the session cookie: no cookie header at all.
    let only = format!("session={}", hs256(&claims()));
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/probe/headers",
            &[("cookie", only.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["metadata"].get("cookie").is_none(), "{}", r.text());
}
