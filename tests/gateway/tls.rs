//! TLS on the main port: HTTPS clients get HTTP/2 or HTTP/1.1 by ALPN, a
//! plain-text client is turned away without harm, and a key that does not
//! fit the certificate is a startup error.

use crate::support;

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portico::app;
use portico::config::Config;

fn tls_section(key: &str) -> String {
    format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        support::fixture("tls/server.pem"),
        support::fixture(key)
    )
}

/// The harness config with TLS on the main port (a `[server.tls]` table
/// must follow `[server]`'s keys, so it goes right after them).
fn config(backend: std::net::SocketAddr, key: &str) -> String {
    support::config_text(backend, "", "").replacen(
        "admin = \"127.0.0.1:0\"\n",
        &format!("admin = \"127.0.0.1:0\"\n{}", tls_section(key)),
        1,
    )
}

async fn get(url: &str, http2_only: bool) -> (StatusCode, Version, String) {
    let connector = portico::egress::tls::https_connector(Some(std::path::Path::new(
        &support::fixture("tls/ca.pem"),
    )))
    .unwrap();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .build::<_, Empty<Bytes>>(connector);
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.version,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn https_clients_are_served_over_http2_or_http1_by_alpn() {
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gateway = app::start(Config::from_toml(&config(backend, "tls/server.key")).unwrap())
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}/v1/shelves/1", gateway.addr.port());

    let (status, version, body) = get(&url, true).await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert!(body.contains("Fiction"), "{body}");

    // A plain-text client on the TLS port gets no answer, and harms nothing.
    let plain = support::HttpClient::new(gateway.addr);
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        plain.client_error("/v1/shelves/1"),
    )
    .await
    .expect("the connection is closed promptly");
    assert!(attempt, "plain HTTP is not served on a TLS port");

    let (status, version, _) = get(&url, false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(matches!(version, Version::HTTP_2 | Version::HTTP_11));
}

#[tokio::test]
async fn a_key_that_does_not_fit_the_certificate_is_a_startup_error() {
    let text = config("127.0.0.1:1".parse().unwrap(), "jwt_rs256_private.pem");
    let err = match app::load(Config::from_toml(&text).unwrap()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a mismatched key was accepted"),
    };
    assert!(err.contains("server.tls.key_file"), "{err}");
    assert!(
        err.contains("jwt_rs256_private.pem: is not the key of the certificate in"),
        "{err}"
    );
    assert!(
        !err.contains("KeyMismatch"),
        "no library variant names: {err}"
    );
}

/// A chain written issuer first holds the key's certificate, just not
/// where it must be: the error blames the certificate file and says the
/// order, instead of calling the right key the wrong one.
#[tokio::test]
async fn a_chain_with_the_servers_certificate_last_is_blamed_on_its_order() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-chain-order-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chain = dir.join("issuer-first.pem");
    let issuer = std::fs::read_to_string(support::fixture("tls/ca.pem")).unwrap();
    let own = std::fs::read_to_string(support::fixture("tls/server.pem")).unwrap();
    std::fs::write(&chain, format!("{issuer}{own}")).unwrap();
    let text = config("127.0.0.1:1".parse().unwrap(), "tls/server.key").replace(
        &support::fixture("tls/server.pem"),
        &chain.display().to_string(),
    );
    let err = match app::load(Config::from_toml(&text).unwrap()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a chain in the wrong order was accepted"),
    };
    std::fs::remove_dir_all(&dir).ok();
    assert!(err.contains("server.tls.cert_file"), "{err}");
    assert!(
        err.contains("issuer-first.pem: the key in ")
            && err.contains("server.key is that of certificate 2 of the 2 here, not the first"),
        "{err}"
    );
    assert!(err.contains("own certificate first"), "{err}");
}

#[tokio::test]
async fn grpc_clients_call_over_tls_with_h2_by_alpn() {
    use portico::demo::backends::pb;
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gateway = app::start(Config::from_toml(&config(backend, "tls/server.key")).unwrap())
        .await
        .unwrap();
    let connector = portico::egress::tls::https_connector(Some(std::path::Path::new(
        &support::fixture("tls/ca.pem"),
    )))
    .unwrap();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build::<_, http_body_util::Full<Bytes>>(connector);
    let body = support::frame(&pb::GetShelfRequest { shelf: "2".into() });
    let req = http::Request::post(format!(
        "https://127.0.0.1:{}/portico.demo.v1.Library/GetShelf",
        gateway.addr.port()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(Bytes::from(body)))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("gRPC trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    let data = collected.to_bytes();
    let shelf = <pb::Shelf as prost::Message>::decode(&data[5..]).unwrap();
    assert_eq!(shelf.theme, "History");
}

/// A gateway whose Library route goes to `upstream` (the body of
/// `[upstreams.lib]`), schemas read by reflection from that upstream.
async fn gateway_to(upstream: &str) -> Result<portico::app::Gateway, String> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nreflect = [\"lib\"]\n[upstreams.lib]\n{upstream}\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"lib\"\n"
    );
    app::start(Config::from_toml(&text).unwrap())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_grpc_upstream_behind_tls_is_reached_with_its_ca_and_refused_without() {
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let secure = support::instances::tls_front(backend).await;

    // Schemas by reflection and every call go over TLS to the endpoint.
    let gw = gateway_to(&format!(
        "endpoints = [\"{secure}\"]\ntls_ca_file = \"{}\"",
        support::fixture("tls/ca.pem")
    ))
    .await
    .unwrap();
    let r = support::HttpClient::new(gw.addr).get("/v1/shelves/1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Fiction"));

    // Without the private CA the certificate does not verify: startup fails
    // (reflection is the first call), naming the upstream and the cause.
    let err = gateway_to(&format!("endpoints = [\"{secure}\"]\ntls = true"))
        .await
        .err()
        .expect("an unverifiable upstream certificate is refused");
    assert!(
        err.contains("upstream lib") && err.to_lowercase().contains("certificate"),
        "{err}"
    );

    // Plain text to it: the error says where TLS is asked for.
    let err = gateway_to(&format!("endpoints = [\"{secure}\"]"))
        .await
        .err()
        .expect("a TLS endpoint called in plain text is refused");
    assert!(
        err.contains("upstream lib") && err.contains("the upstream needs `tls = true`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_dns_upstream_behind_tls_is_verified_for_its_name_not_each_address() {
    // A backend whose certificate names only `localhost` (no IP address),
    // as certificates for a service's DNS name do: a `dns` upstream
    // connects to each address the name resolves to, and verifies (and
    // sends as SNI) the name.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-tls-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();

    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let secure = support::instances::tls_front_serving(
        backend,
        &cert.pem(),
        &key.serialize_pem(),
        None,
        Some(names.clone()),
    )
    .await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nsets = [\"{}/descriptors/demo.binpb\"]\n\
         [upstreams.lib]\ndns = \"localhost:{}\"\ntls_ca_file = \"{}\"\n\
         [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"lib\"\n",
        env!("CARGO_MANIFEST_DIR"),
        secure.port(),
        dir.join("ca.pem").display()
    );
    let gw = app::start(Config::from_toml(&text).unwrap()).await.unwrap();
    let r = support::HttpClient::new(gw.addr).get("/v1/shelves/1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("Fiction"));
    let names = names.lock().unwrap().clone();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "localhost"),
        "the name is sent as SNI: {names:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn tls_to_a_plain_text_backend_says_the_server_did_not_answer_in_tls() {
    let backends = portico::demo::backends::Backends::default();
    let (plain, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let hint =
        "did not answer in TLS: is it a plain-text server where TLS was asked for, by `tls = true`";

    // Schemas by reflection: startup fails, with the reason.
    let err = gateway_to(&format!("endpoints = [\"{plain}\"]\ntls = true"))
        .await
        .err()
        .expect("a plain-text endpoint behind tls = true is refused");
    assert!(err.contains("upstream lib") && err.contains(hint), "{err}");

    // Schemas from a file: the call fails, with the same reason.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nsets = [\"{}/descriptors/demo.binpb\"]\n[upstreams.lib]\nendpoints = [\"{plain}\"]\ntls = true\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"lib\"\n",
        env!("CARGO_MANIFEST_DIR")
    );
    let gw = app::start(Config::from_toml(&text).unwrap()).await.unwrap();
    let r = support::HttpClient::new(gw.addr).get("/v1/shelves/1").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.text().contains(hint), "{}", r.text());
}

/// A TLS server (rustls, with the fixture certificate) that answers a
/// plain-text client as any TLS server does, with a fatal alert, and then
/// keeps the connection open until the client closes it: what the gateway
/// reads first is the alert, never a reset that raced it.
async fn tls_server_holding_refused_connections() -> std::net::SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs =
        rustls::pki_types::CertificateDer::pem_file_iter(support::fixture("tls/server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(support::fixture("tls/server.key"))
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if acceptor.accept(&mut inbound).await.is_err() {
                    let _ = tokio::io::copy(&mut inbound, &mut tokio::io::sink()).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_plain_text_upstream_whose_server_answers_in_tls_says_so_on_every_protocol() {
    use support::protocols::{call, EVERY_PROTOCOL};
    let secure = tls_server_holding_refused_connections().await;
    let hint = "the server answered in TLS: is it a TLS server where plain text was asked for? \
                Set the upstream's `tls = true`";

    // Schemas by reflection: startup fails, naming the upstream and why.
    let err = gateway_to(&format!("endpoints = [\"{secure}\"]"))
        .await
        .err()
        .expect("a TLS endpoint of a plain-text upstream is refused");
    assert!(err.contains("upstream lib") && err.contains(hint), "{err}");

    // Schemas from files: each call fails as unavailable, with the reason.
    let h = support::Harness::start_with_config(|_| support::config_text(secure, "", "")).await;
    for protocol in EVERY_PROTOCOL {
        let seen = call(&h, protocol, &[], "", None).await;
        assert_eq!(seen.code, 14, "{protocol:?}: {}", seen.message);
        assert!(
            seen.message.contains(hint),
            "{protocol:?}: {}",
            seen.message
        );
    }
}

#[tokio::test]
async fn websocket_clients_connect_over_tls_too() {
    use futures_util::StreamExt;
    use rustls::pki_types::pem::PemObject;
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gateway = app::start(Config::from_toml(&config(backend, "tls/server.key")).unwrap())
        .await
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(support::fixture("tls/ca.pem")).unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    // A browser's wss:// handshake is HTTP/1.1 (ALPN offers only that).
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/v1/shelves/2", gateway.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let frame = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(frame.contains("History"), "{frame}");
}

#[tokio::test]
async fn an_upstream_requiring_mutual_tls_gets_the_gateways_client_certificate() {
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mutual = support::instances::mtls_front(backend).await;
    let ca = format!("tls_ca_file = \"{}\"", support::fixture("tls/ca.pem"));

    let gw = gateway_to(&format!(
        "endpoints = [\"{mutual}\"]\n{ca}\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        support::fixture("tls/client.pem"),
        support::fixture("tls/client.key")
    ))
    .await
    .unwrap();
    let r = support::HttpClient::new(gw.addr).get("/v1/shelves/2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().contains("History"));

    // Without a client certificate the endpoint refuses the handshake.
    let err = gateway_to(&format!("endpoints = [\"{mutual}\"]\n{ca}"))
        .await
        .err()
        .expect("an upstream demanding a client certificate refuses one without");
    assert!(
        err.contains("upstream lib") && err.contains("`tls_cert_file` and `tls_key_file`"),
        "{err}"
    );
}

#[test]
fn a_client_certificate_without_its_key_is_a_config_error() {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.lib]\nendpoints = [\"127.0.0.1:1\"]\ntls_cert_file = \"{}\"\n[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"lib\"\n",
        support::fixture("tls/client.pem")
    );
    let err = Config::from_toml(&text).unwrap_err().to_string();
    assert!(err.contains("upstreams.lib.tls_key_file"), "{err}");
}

#[tokio::test]
async fn with_a_client_ca_only_clients_holding_its_certificates_are_served() {
    use rustls::pki_types::pem::PemObject;
    let backends = portico::demo::backends::Backends::default();
    let (backend, _) = backends.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let text = config(backend, "tls/server.key").replacen(
        "[server.tls]\n",
        &format!(
            "[server.tls]\nclient_ca_file = \"{}\"\n",
            support::fixture("tls/client-ca.pem")
        ),
        1,
    );
    let gateway = app::start(Config::from_toml(&text).unwrap()).await.unwrap();
    let url = format!("https://127.0.0.1:{}/v1/shelves/1", gateway.addr.port());

    let client_with = |identity: bool| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(support::fixture("tls/ca.pem"))
            .unwrap()
        {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let tls = if identity {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(support::fixture(
                "tls/client.pem",
            ))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_file(support::fixture("tls/client.key"))
                    .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector)
    };
    let resp = client_with(true).get(url.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        client_with(false).get(url.parse().unwrap()).await.is_err(),
        "a client without a certificate is refused at the handshake"
    );
}

/// A served certificate past its `notAfter` still loads (a renewal may be
/// on its way), and the log says clients will refuse it.
#[test]
fn an_expired_server_certificate_is_named_in_the_log() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-tls-expired-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let config = dir.join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n\
             [descriptors]\nsets = [\"{1}/descriptors/demo.binpb\"]\n\
             [upstreams.lib]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"lib\"\n",
            dir.display(),
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("the certificate has expired"), "{said}");
    std::fs::remove_dir_all(dir).ok();
}
