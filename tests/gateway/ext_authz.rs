//! External authorization through every protocol: a tonic server speaking
//! Envoy's `envoy.service.auth.v3.Authorization/Check` (as OPA-Envoy and
//! other ext_authz servers do) and an HTTP forward-auth service decide
//! whether calls reach the backend, what headers the backend gets, and
//! what a refused client is told.

use crate::support;
use support::RouteKeys;

use portico::policy::ext_authz::pb::envoy::config::core::v3 as core;
use portico::policy::ext_authz::pb::envoy::r#type::v3::HttpStatus;
use portico::policy::ext_authz::pb::envoy::service::auth::v3 as auth;
use portico::policy::ext_authz::pb::google::rpc::Status;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::protocols::{call, gateway, Protocol, EVERY_PROTOCOL};

/// An ext_authz server: allows tenant `acme` (adding a header for the
/// backend and removing another), refuses tenant `blocked` with a 429 and
/// a body, and anyone else with PERMISSION_DENIED and no HTTP details.
#[derive(Clone, Default)]
struct Authorizer {
    asked: Arc<Mutex<Vec<auth::CheckRequest>>>,
}

/// A header option with Envoy's newer `append_action` instead of `append`.
fn header_action(
    key: &str,
    value: &str,
    action: core::header_value_option::HeaderAppendAction,
) -> core::HeaderValueOption {
    core::HeaderValueOption {
        append_action: action as i32,
        ..header(key, value, None)
    }
}

fn header(key: &str, value: &str, append: Option<bool>) -> core::HeaderValueOption {
    core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        }),
        append,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl auth::authorization_server::Authorization for Authorizer {
    async fn check(
        &self,
        request: tonic::Request<auth::CheckRequest>,
    ) -> Result<tonic::Response<auth::CheckResponse>, tonic::Status> {
        let req = request.into_inner();
        self.asked.lock().unwrap().push(req.clone());
        let http = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .cloned()
            .unwrap_or_default();
        let status = |code: i32, message: &str| Status {
            code,
            message: message.to_owned(),
            details: vec![],
        };
        let reply = match http.headers.get("x-tenant").map(String::as_str) {
            Some("acme") => auth::CheckResponse {
                status: Some(status(0, "")),
                http_response: Some(auth::check_response::HttpResponse::OkResponse(
                    auth::OkHttpResponse {
                        headers: vec![
                            header("x-tenant-plan", "gold", None),
                            header_action(
                                "x-tenant",
                                "acme-verified",
                                core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd,
                            ),
                            header_action(
                                "x-region",
                                "eu",
                                core::header_value_option::HeaderAppendAction::AddIfAbsent,
                            ),
                            // Headers only the gateway writes, and metadata
                            // no backend could read: never applied.
                            header("x-consumer", "ext-says-root", Some(false)),
                            header("x-request-id", "ext-request-id", Some(false)),
                            header("x-bad-bin", "not base64!!", None),
                        ],
                        headers_to_remove: vec!["x-drop-me".to_owned()],
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
            Some("slow") => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                auth::CheckResponse::default()
            }
            Some("blocked") => auth::CheckResponse {
                status: Some(status(8, "over quota")),
                http_response: Some(auth::check_response::HttpResponse::DeniedResponse(
                    auth::DeniedHttpResponse {
                        status: Some(HttpStatus { code: 429 }),
                        headers: vec![
                            header("x-quota-remaining", "0", None),
                            header("content-type", "text/plain", None),
                        ],
                        body: "tenant acme-blocked is over its quota".to_owned(),
                    },
                )),
                ..Default::default()
            },
            // A denial whose HTTP status HTTP defines no class for.
            Some("odd") => auth::CheckResponse {
                status: Some(status(7, "odd")),
                http_response: Some(auth::check_response::HttpResponse::DeniedResponse(
                    auth::DeniedHttpResponse {
                        status: Some(HttpStatus { code: 999 }),
                        body: "an odd refusal".to_owned(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
            _ => auth::CheckResponse {
                status: Some(status(7, "no tenant, no entry")),
                ..Default::default()
            },
        };
        Ok(tonic::Response::new(reply))
    }
}

impl Authorizer {
    async fn start(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = auth::authorization_server::AuthorizationServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn times_asked(&self) -> usize {
        self.asked.lock().unwrap().len()
    }
}

fn sections(name: &str, target: &str, extra: &str) -> String {
    format!(
        "[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\nforward_claims = {{ consumer = \"x-consumer\" }}\n[ext_authz.{name}]\n{target}\ninclude_headers = [\"x-tenant\"]\n{extra}\n",
        support::fixture("api_keys.toml")
    )
}

const KEY: (&str, &str) = ("x-api-key", "acme-key-123");

#[tokio::test]
async fn an_ext_authz_server_decides_the_same_on_every_protocol() {
    let authorizer = Authorizer::default();
    let addr = authorizer.start().await;
    let h = gateway(
        &sections("opa", &format!("grpc = \"{addr}\""), ""),
        "auth = \"keys\"\next_authz = \"opa\"",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(
            &h,
            protocol,
            &[
                KEY,
                ("x-tenant", "acme"),
                ("x-drop-me", "secret"),
                ("x-region", "us"),
            ],
            "",
            None,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}: allowed");
        assert_eq!(
            seen.metadata["x-tenant-plan"], "gold",
            "{protocol:?}: added"
        );
        assert_eq!(
            seen.metadata["x-tenant"], "acme-verified",
            "{protocol:?}: replaced"
        );
        assert!(
            seen.metadata.get("x-drop-me").is_none(),
            "{protocol:?}: removed"
        );
        assert_eq!(
            seen.metadata["x-region"], "us",
            "{protocol:?}: added only if absent"
        );
        assert_eq!(
            seen.metadata["x-consumer"], "acme",
            "{protocol:?}: a verified claim is not the service's to change"
        );
        assert!(seen.request_id.is_some(), "{protocol:?}");
        assert_eq!(
            seen.metadata["x-request-id"].as_str(),
            seen.request_id.as_deref(),
            "{protocol:?}: the request id stays the one the client gets back"
        );
        assert!(
            seen.metadata.get("x-bad-bin").is_none(),
            "{protocol:?}: a -bin value that is not base64 is dropped"
        );

        // REST gets the service's body as written (not a JSON error: the
        // protocol table's code is -1 then; its status is checked below).
        let rest = |code| if protocol == Protocol::Rest { -1 } else { code };
        let seen = call(&h, protocol, &[KEY, ("x-tenant", "blocked")], "", None).await;
        assert_eq!(
            seen.code,
            rest(8),
            "{protocol:?}: a 429 denial is RESOURCE_EXHAUSTED"
        );
        assert_eq!(
            seen.message, "tenant acme-blocked is over its quota",
            "{protocol:?}"
        );

        let seen = call(&h, protocol, &[KEY], "", None).await;
        assert_eq!(
            seen.code,
            rest(7),
            "{protocol:?}: a plain denial is PERMISSION_DENIED"
        );
        assert_eq!(seen.message, "no tenant, no entry", "{protocol:?}");

        // Unauthenticated calls never reach the service.
        let before = authorizer.times_asked();
        let seen = call(&h, protocol, &[("x-tenant", "acme")], "", None).await;
        assert_eq!(seen.code, 16, "{protocol:?}");
        assert_eq!(authorizer.times_asked(), before);
    }

    // The service was told the call as the gRPC method it is, whatever the
    // client's protocol, with the principal and the chosen headers only.
    let asked = authorizer.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 3 * EVERY_PROTOCOL.len());
    for req in &asked {
        let attrs = req.attributes.as_ref().unwrap();
        let http = attrs.request.as_ref().unwrap().http.as_ref().unwrap();
        assert_eq!(http.path, "/portico.demo.v1.Probe/Headers");
        assert_eq!(http.method, "POST");
        assert_eq!(attrs.source.as_ref().unwrap().principal, "acme");
        assert!(
            !http.headers.contains_key("x-api-key"),
            "only include_headers are sent"
        );
        assert_eq!(
            attrs.context_extensions["portico.method"],
            "portico.demo.v1.Probe.Headers"
        );
        let address = attrs.source.as_ref().unwrap().address.as_ref().unwrap();
        let Some(core::address::Address::SocketAddress(s)) = &address.address else {
            panic!("no socket address")
        };
        assert_eq!(s.address, "127.0.0.1");
    }

    // A REST client gets the denial as the service wrote it.
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[KEY, ("x-tenant", "blocked")],
            "",
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "tenant acme-blocked is over its quota");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-quota-remaining"), Some("0"));
    let r = h
        .client
        .send(http::Method::GET, "/v1/probe/headers", &[KEY], "")
        .await;
    assert_eq!(
        r.status, 403,
        "no denied_response: a 403 with the status message"
    );
    assert_eq!(r.text(), "no tenant, no entry");

    // On a route that authenticates no one, no authenticator writes
    // x-consumer: the service's value is applied (the request id is still
    // the gateway's).
    let h = gateway(
        &sections("opa", &format!("grpc = \"{addr}\""), ""),
        "ext_authz = \"opa\"",
    )
    .await;
    let seen = call(&h, Protocol::Rest, &[("x-tenant", "acme")], "", None).await;
    assert_eq!(seen.code, 0, "{}", seen.message);
    assert_eq!(seen.metadata["x-consumer"], "ext-says-root");
    assert_eq!(
        seen.metadata["x-request-id"].as_str(),
        seen.request_id.as_deref()
    );
}

#[tokio::test]
async fn a_silent_authorization_service_follows_the_failure_mode() {
    let authorizer = Authorizer::default();
    let addr = authorizer.start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for (mode, target, tenant, code) in [
        ("closed", format!("grpc = \"{dead}\""), "acme", 14),
        ("closed", format!("grpc = \"{addr}\""), "slow", 14),
        ("open", format!("grpc = \"{dead}\""), "acme", 0),
        ("open", format!("grpc = \"{addr}\""), "slow", 0),
    ] {
        let extra = format!("failure_mode = \"{mode}\"\ntimeout = \"300ms\"");
        let h = gateway(
            &sections("opa", &target, &extra),
            "auth = \"keys\"\next_authz = \"opa\"",
        )
        .await;
        for protocol in EVERY_PROTOCOL {
            let seen = call(&h, protocol, &[KEY, ("x-tenant", tenant)], "", None).await;
            assert_eq!(seen.code, code, "{protocol:?}, {mode}, {target}, {tenant}");
            if code == 14 {
                assert!(
                    seen.message.contains("authorization service opa"),
                    "{}",
                    seen.message
                );
            }
        }
        let metrics = reqwest_metrics(&h).await;
        let result = if mode == "open" {
            "failed_open"
        } else {
            "failed_closed"
        };
        assert!(
            metrics.contains(&format!(
                "portico_ext_authz_decisions_total{{authorizer=\"opa\",result=\"{result}\"}} {}",
                EVERY_PROTOCOL.len()
            )),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_slow_authorization_service_is_waited_on_no_longer_than_the_call_has_left() {
    // The service would answer within its own timeout (10 s) but after the
    // route's deadline (300 ms): the call ends at its deadline, as a call
    // waiting on Redis does, and never reaches the backend.
    let authorizer = Authorizer::default();
    let addr = authorizer.start().await;
    let h = gateway(
        &sections(
            "opa",
            &format!("grpc = \"{addr}\""),
            "timeout = \"10s\"\ncache_ttl = \"1m\"",
        ),
        "auth = \"keys\"\next_authz = \"opa\"\ntimeout = \"300ms\"",
    )
    .await;
    support::protocols::assert_each_ends_at_its_deadline(
        &h,
        &[KEY, ("x-tenant", "slow")],
        "deadline passed before the authorization service answered",
    )
    .await;
    // Counted as no answer, under the failure mode; and each question goes
    // on, so its answer (5 s later) is kept for the calls after it.
    let metrics = reqwest_metrics(&h).await;
    assert!(
        metrics.contains(&format!(
            "portico_ext_authz_decisions_total{{authorizer=\"opa\",result=\"failed_closed\"}} {}",
            EVERY_PROTOCOL.len()
        )),
        "{metrics}"
    );
    // (Not asked again meanwhile: a call asks while no answer is kept.)
    tokio::time::sleep(Duration::from_millis(5300)).await;
    let seen = call(&h, Protocol::Rest, &[KEY, ("x-tenant", "slow")], "", None).await;
    assert_eq!(seen.code, 0, "the late answer was kept: {}", seen.message);
    assert_eq!(authorizer.times_asked(), EVERY_PROTOCOL.len());
}

/// The admin port's `/metrics`.
async fn reqwest_metrics(h: &support::Harness) -> String {
    support::HttpClient::new(h.gateway.admin_addr.unwrap())
        .get("/metrics")
        .await
        .text()
}

#[tokio::test]
async fn decisions_are_cached_per_principal_and_method() {
    let authorizer = Authorizer::default();
    let addr = authorizer.start().await;
    let h = gateway(
        &sections("opa", &format!("grpc = \"{addr}\""), "cache_ttl = \"2s\""),
        "auth = \"keys\"\next_authz = \"opa\"",
    )
    .await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[KEY, ("x-tenant", "acme")], "", None).await;
        assert_eq!(seen.code, 0, "{protocol:?}");
        assert_eq!(
            seen.metadata["x-tenant-plan"], "gold",
            "{protocol:?}: the cached allow keeps its headers"
        );
    }
    assert_eq!(
        authorizer.times_asked(),
        1,
        "one question for a call per protocol"
    );
    // Another method is another decision.
    let seen = call(
        &h,
        Protocol::Rest,
        &[KEY, ("x-tenant", "acme")],
        "",
        Some(1),
    )
    .await;
    assert_eq!(seen.code, 0);
    assert_eq!(authorizer.times_asked(), 2);
    let metrics = reqwest_metrics(&h).await;
    assert!(
        metrics.contains(&format!(
            "portico_ext_authz_cache_hits_total{{authorizer=\"opa\"}} {}",
            EVERY_PROTOCOL.len() - 1
        )),
        "{metrics}"
    );
    // A decision lives for cache_ttl: then the service is asked again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let seen = call(
        &h,
        Protocol::WebSocket,
        &[KEY, ("x-tenant", "acme")],
        "",
        None,
    )
    .await;
    assert_eq!(seen.code, 0);
    assert_eq!(authorizer.times_asked(), 3, "the cached decision expired");
}

/// A forward-auth service: `Bearer letmein` passes (naming the user),
/// anything else is sent to a login page.
async fn forward_auth() -> (std::net::SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let seen: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    record.lock().unwrap().push(req.headers().clone());
                    let allowed = req
                        .headers()
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer letmein");
                    // A denial with the status the client asks for.
                    let decided = req
                        .headers()
                        .get("x-decide")
                        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok());
                    let resp = if let Some(status) = decided {
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(bytes::Bytes::from("an odd refusal")))
                    } else if allowed {
                        http::Response::builder()
                            .status(200)
                            .header("x-user-id", "u-42")
                            .header("x-internal", "not for the backend")
                            .body(Full::new(bytes::Bytes::new()))
                    } else {
                        http::Response::builder()
                            .status(302)
                            .header("location", "https://login.example/?rd=orders")
                            .header("content-type", "text/html")
                            .header("x-request-id", "id-from-authz-service")
                            // For the hop to the gateway alone.
                            .header("connection", "x-login-hint")
                            .header("x-login-hint", "for the gateway")
                            .body(Full::new(bytes::Bytes::from(
                                "<a href=\"https://login.example/\">log in</a>",
                            )))
                    };
                    async move { Ok::<_, std::convert::Infallible>(resp.unwrap()) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A denial's status HTTP defines no class for (600 to 999, which an HTTP
/// service can send and an Envoy `HttpStatus` can hold) is no status to
/// give a client: the call is refused with a 403 / PERMISSION_DENIED on
/// every protocol, the service's body still its message.
#[tokio::test]
async fn a_denial_status_http_does_not_define_is_a_403() {
    let authorizer = Authorizer::default();
    let grpc = authorizer.start().await;
    let (http, _) = forward_auth().await;
    for (service, target, headers) in [
        ("gRPC", format!("grpc = \"{grpc}\""), [("x-tenant", "odd")]),
        (
            "HTTP",
            format!("http = \"http://{http}/check\""),
            [("x-decide", "999")],
        ),
    ] {
        let sections =
            format!("[ext_authz.gate]\n{target}\ninclude_headers = [\"x-tenant\", \"x-decide\"]\n");
        let h = gateway(&sections, "ext_authz = \"gate\"").await;
        for protocol in EVERY_PROTOCOL {
            let seen = call(&h, protocol, &headers, "", None).await;
            if protocol == Protocol::Rest {
                // REST gets the service's body as written: its status tells.
                let r = h
                    .client
                    .send(http::Method::GET, "/v1/probe/headers", &headers, "")
                    .await;
                assert_eq!(r.status, 403, "{service}: {}", r.text());
                assert_eq!(r.text(), "an odd refusal", "{service}");
            } else {
                assert_eq!(seen.code, 7, "{service} {protocol:?}: {}", seen.message);
                assert!(
                    seen.message.contains("an odd refusal"),
                    "{service} {protocol:?}: {}",
                    seen.message
                );
            }
        }
    }
}

/// A client's cookies reach the authorization service as one `cookie`
/// header writes them, `a=1; b=2`, however many headers carried them.
#[tokio::test]
async fn cookies_reach_the_authorization_service_joined_as_one_cookie_header() {
    let authorizer = Authorizer::default();
    let addr = authorizer.start().await;
    let sections = format!(
        "[ext_authz.opa]\ngrpc = \"{addr}\"\ninclude_headers = [\"x-tenant\", \"cookie\", \"x-tag\"]\n"
    );
    let h = gateway(&sections, "ext_authz = \"opa\"").await;
    let headers = [
        ("x-tenant", "acme"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("x-tag", "one"),
        ("x-tag", "two"),
    ];
    let r = h
        .client
        .send(http::Method::GET, "/v1/probe/headers", &headers, "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let asked = authorizer.asked.lock().unwrap();
    let sent = &asked[0]
        .attributes
        .as_ref()
        .unwrap()
        .request
        .as_ref()
        .unwrap()
        .http
        .as_ref()
        .unwrap()
        .headers;
    assert_eq!(sent["cookie"], "a=1; b=2");
    assert_eq!(sent["x-tag"], "one,two", "other headers' values by commas");
}

/// A `304 Not Modified` would tell a REST client to use a copy it kept,
/// and has no body to say why: a denial with it is a 403 on every
/// protocol, with the usual error.
#[tokio::test]
async fn a_not_modified_denial_is_a_403() {
    let (http, _) = forward_auth().await;
    let sections = format!(
        "[ext_authz.gate]\nhttp = \"http://{http}/check\"\ninclude_headers = [\"x-decide\"]\n"
    );
    let h = gateway(&sections, "ext_authz = \"gate\"").await;
    let headers = [("x-decide", "304")];
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &headers, "", None).await;
        assert_eq!(seen.code, 7, "{protocol:?}: {}", seen.message);
        assert!(
            seen.message
                .contains("denied by the authorization service gate"),
            "{protocol:?}: {}",
            seen.message
        );
    }
    let r = h
        .client
        .send(http::Method::GET, "/v1/probe/headers", &headers, "")
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], 7, "{}", r.text());
}

#[tokio::test]
async fn forward_auth_allows_on_2xx_and_returns_anything_else_to_the_client() {
    let (addr, seen_by_service) = forward_auth().await;
    let sections = format!(
        "[ext_authz.gate]\nhttp = \"http://{addr}/check\"\ninclude_headers = [\"authorization\"]\nupstream_headers = [\"x-user-id\"]\n"
    );
    let h = gateway(&sections, "ext_authz = \"gate\"").await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(
            &h,
            protocol,
            &[
                ("authorization", "Bearer letmein"),
                ("x-user-id", "forged"),
                ("x-request-id", "req-7"),
            ],
            "",
            None,
        )
        .await;
        assert_eq!(seen.code, 0, "{protocol:?}");
        assert_eq!(
            seen.metadata["x-user-id"], "u-42",
            "{protocol:?}: the service's value, never the client's"
        );
        assert!(
            seen.metadata.get("x-internal").is_none(),
            "{protocol:?}: only upstream_headers"
        );
        let seen = call(&h, protocol, &[("authorization", "Bearer nope")], "", None).await;
        let expected = if protocol == Protocol::Rest { -1 } else { 7 };
        assert_eq!(
            seen.code, expected,
            "{protocol:?}: a redirect is PERMISSION_DENIED"
        );
    }
    let r = h
        .client
        .send(
            http::Method::GET,
            "/v1/probe/headers",
            &[("authorization", "Bearer nope")],
            "",
        )
        .await;
    assert_eq!(
        r.status, 302,
        "a REST client follows the service's redirect"
    );
    assert_eq!(
        r.header("location"),
        Some("https://login.example/?rd=orders")
    );
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.header("x-login-hint"), None, "named by its Connection");
    assert!(r.text().contains("log in"));
    // The denial's own request id is not the call's: each protocol's
    // client gets the call's, a WebSocket call's status trailers too.
    assert_ne!(r.header("x-request-id"), Some("id-from-authz-service"));
    let mut ws = support::json_v1_session(&h).await;
    let open = serde_json::json!({"id": "d", "open": "/portico.demo.v1.Probe/Headers",
        "metadata": {"authorization": "Bearer nope"}, "message": {}});
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::text(open.to_string()),
    )
    .await
    .unwrap();
    let status = loop {
        use futures_util::StreamExt;
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = ws.next().await else {
            panic!("the session ended before the call's status")
        };
        let frame: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        if frame.get("status").is_some() {
            break frame;
        }
    };
    assert_eq!(status["status"]["code"], 7, "{status}");
    assert_eq!(
        status["trailers"]["location"], "https://login.example/?rd=orders",
        "{status}"
    );
    assert!(
        status["trailers"].get("x-request-id").is_none(),
        "the service's id is not the call's: {status}"
    );

    let asked = seen_by_service.lock().unwrap();
    let first = &asked[0];
    assert_eq!(first["x-forwarded-uri"], "/portico.demo.v1.Probe/Headers");
    assert_eq!(first["x-portico-method"], "portico.demo.v1.Probe.Headers");
    assert_eq!(first["x-forwarded-for"], "127.0.0.1");
    assert_eq!(first["x-forwarded-method"], "POST");
    assert_eq!(first["x-request-id"], "req-7");
    assert_eq!(
        first["authorization"], "Bearer letmein",
        "an include_headers entry"
    );
    assert!(
        !first.contains_key("x-portico-principal"),
        "no principal on this route"
    );
    assert!(!first.contains_key("x-user-id"), "not in include_headers");
    // Each protocol's two calls, the REST redirect and the session's call.
    assert_eq!(asked.len(), 2 * EVERY_PROTOCOL.len() + 2);
}

/// The principal reaches a forward-auth service as the backend gets a
/// claim: as it is when a header carries it exactly, else base64 in
/// `X-Portico-Principal-Bin` (a space at either end, which HTTP trims, or
/// text that is not printable ASCII, a line break among it), on every
/// protocol.
#[tokio::test]
async fn a_principal_a_header_cannot_carry_exactly_goes_base64() {
    use base64::Engine as _;
    const SECRET: &str = "a-signing-secret-of-32-bytes-ok!";
    let (addr, seen_by_service) = forward_auth().await;
    let sections = format!(
        "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\nforward_claims = {{ sub = \"x-user-id\" }}\n\n\
         [ext_authz.gate]\nhttp = \"http://{addr}/check\"\ninclude_headers = [\"x-decide\"]\n"
    );
    let h = gateway(&sections, "auth = \"users\"\next_authz = \"gate\"").await;
    for subject in ["ada", " admin", "admin ", "José", "ada\r\nx-injected: 1"] {
        let bearer = support::hs256_bearer(SECRET, subject);
        let plain = subject.bytes().all(|b| (0x20..0x7f).contains(&b)) && subject.trim() == subject;
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(subject);
        for protocol in EVERY_PROTOCOL {
            seen_by_service.lock().unwrap().clear();
            // The service allows what asks it for a 200.
            let headers = [("authorization", bearer.as_str()), ("x-decide", "200")];
            let seen = call(&h, protocol, &headers, "", None).await;
            assert_eq!(seen.code, 0, "{subject:?} {protocol:?}: {}", seen.message);
            let asked = seen_by_service
                .lock()
                .unwrap()
                .pop()
                .expect("the service was asked");
            if plain {
                assert_eq!(asked["x-portico-principal"], subject, "{protocol:?}");
                assert_eq!(seen.metadata["x-user-id"], subject, "{protocol:?}");
            } else {
                assert!(
                    !asked.contains_key("x-portico-principal"),
                    "{subject:?} {protocol:?}"
                );
                assert_eq!(
                    asked["x-portico-principal-bin"],
                    encoded.as_str(),
                    "{subject:?} {protocol:?}"
                );
                assert!(
                    !seen.metadata.contains_key("x-user-id"),
                    "{subject:?} {protocol:?}"
                );
                assert_eq!(
                    seen.metadata["x-user-id-bin"],
                    encoded.as_str(),
                    "{subject:?} {protocol:?}"
                );
            }
        }
    }
}

/// A denial's own `x-request-id` is the service's, not the call's: a
/// Connect stream's end-stream metadata carries the call's id, as every
/// protocol's reply does.
#[tokio::test]
async fn a_denials_own_request_id_is_not_the_calls_on_a_connect_stream() {
    let (addr, _) = forward_auth().await;
    let sections = format!("[ext_authz.gate]\nhttp = \"http://{addr}/check\"\n");
    let h = support::Harness::start_with_config(|backend| {
        support::config_text(backend, &sections, "").with_route_keys("Feed", "ext_authz = \"gate\"")
    })
    .await;
    let r = h
        .client
        .send(
            http::Method::POST,
            "/portico.demo.v1.Feed/Watch",
            &[
                ("content-type", "application/connect+json"),
                ("authorization", "Bearer nope"),
                ("x-request-id", "the-calls-own"),
            ],
            support::frame_bytes(0, br#"{"count":1}"#),
        )
        .await;
    // The end-stream envelope (flag 2) is the body's last.
    let body = r.body.to_vec();
    assert!(body.len() > 5 && body[0] == 2, "{}", r.text());
    let end: serde_json::Value = serde_json::from_slice(&body[5..]).unwrap();
    assert_eq!(end["error"]["code"], "permission_denied", "{end}");
    assert_eq!(
        end["metadata"]["location"][0], "https://login.example/?rd=orders",
        "{end}"
    );
    assert!(
        end["metadata"].get("x-request-id").is_none(),
        "the service's id is not the call's: {end}"
    );
    assert_eq!(r.header("x-request-id"), Some("the-calls-own"));
}

/// An authorization service that names the caller's tenant for the
/// backend (`x-tenant-id`, from the bearer token or an `x-org` header) and
/// may take the token out, as one that trades a client's credential for
/// its own headers does.
#[derive(Clone)]
struct TenantTeller {
    tells_tenant: bool,
    takes_token: bool,
}

#[tonic::async_trait]
impl auth::authorization_server::Authorization for TenantTeller {
    async fn check(
        &self,
        request: tonic::Request<auth::CheckRequest>,
    ) -> Result<tonic::Response<auth::CheckResponse>, tonic::Status> {
        let headers = request
            .into_inner()
            .attributes
            .and_then(|a| a.request)
            .and_then(|r| r.http)
            .map(|h| h.headers)
            .unwrap_or_default();
        let tenant = headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .or(headers.get("x-org").map(String::as_str))
            .unwrap_or("none");
        let ok = auth::OkHttpResponse {
            headers: if self.tells_tenant {
                vec![header("x-tenant-id", tenant, Some(false))]
            } else {
                vec![]
            },
            headers_to_remove: if self.takes_token {
                vec!["authorization".to_owned()]
            } else {
                vec![]
            },
            ..Default::default()
        };
        Ok(tonic::Response::new(auth::CheckResponse {
            status: Some(Status::default()),
            http_response: Some(auth::check_response::HttpResponse::OkResponse(ok)),
            ..Default::default()
        }))
    }
}

/// A cached route behind an authorization service: the reply one caller's
/// answer shaped is never another caller's, whether the service took the
/// token out (the cache keys on the credential the client sent) or named
/// the tenant from a header the key does not hold (the cache keys on what
/// the service told the backend).
#[tokio::test]
async fn an_authorization_services_answer_keeps_callers_apart_in_the_cache() {
    let cases = [
        (
            "takes the token, tells the tenant",
            TenantTeller {
                tells_tenant: true,
                takes_token: true,
            },
            "authorization",
            ["Bearer acme", "Bearer globex"],
        ),
        (
            "takes the token, tells nothing",
            TenantTeller {
                tells_tenant: false,
                takes_token: true,
            },
            "authorization",
            ["Bearer acme", "Bearer globex"],
        ),
        (
            "tells the tenant from a header the key does not hold",
            TenantTeller {
                tells_tenant: true,
                takes_token: false,
            },
            "x-org",
            ["acme", "globex"],
        ),
    ];
    for (case, teller, name, values) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(auth::authorization_server::AuthorizationServer::new(
                    teller.clone(),
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let h = gateway(
            &format!(
                "[ext_authz.tenants]\ngrpc = \"{addr}\"\ninclude_headers = [\"authorization\", \"x-org\"]\n"
            ),
            "ext_authz = \"tenants\"\ncache = { ttl = \"30s\" }",
        )
        .await;
        for protocol in EVERY_PROTOCOL {
            let before = h.backends.probe.calls();
            // Tenants of the protocol's own: a reply cached from one
            // protocol is any other's.
            let values = values.map(|v| format!("{v}-{protocol:?}"));
            for (round, want) in [(1, "MISS"), (2, "HIT")] {
                for value in &values {
                    let seen = call(&h, protocol, &[(name, value)], "", None).await;
                    assert_eq!(seen.code, 0, "{case}, {protocol:?}: {}", seen.message);
                    assert_eq!(
                        seen.cache.as_deref(),
                        Some(want),
                        "{case}, {protocol:?}, {value} {round}"
                    );
                    let tenant = value.trim_start_matches("Bearer ");
                    if teller.tells_tenant {
                        assert_eq!(seen.metadata["x-tenant-id"], tenant, "{case}, {protocol:?}");
                    }
                    if teller.takes_token {
                        assert!(seen.metadata.get("authorization").is_none(), "{case}");
                    }
                }
            }
            assert_eq!(h.backends.probe.calls() - before, 2, "{case}, {protocol:?}");
        }
    }
}
