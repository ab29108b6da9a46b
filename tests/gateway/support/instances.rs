//! Backend instances as real processes (the `demo_backend` example), so a
//! test can kill one outright and start it again on the same port, and a
//! delaying TCP proxy for slow-endpoint faults.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The `target/<profile>` folder this test binary was built into.
fn profile_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf()
}

pub struct Instance {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Instance {
    /// Starts the demo backends in their own process on `addr` (port 0 for any).
    pub async fn start(addr: &str) -> Instance {
        let bin = profile_dir().join("examples").join("demo_backend");
        assert!(
            bin.exists(),
            "{} is missing: `cargo test` builds the examples (or run `cargo build --examples`)",
            bin.display()
        );
        let mut child = Command::new(bin)
            .arg(addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the demo backend starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the backend says where it listens")
        .expect("readable stdout");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Instance {
            child: Some(child),
            addr,
        }
    }

    /// SIGKILL: connections are reset, nothing is drained.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts again on the same address.
    pub async fn restart(&mut self) {
        self.kill().await;
        let again = Instance::start(&self.addr.to_string()).await;
        *self = again;
    }
}

/// A TCP proxy that holds every chunk for `delay` before passing it on: a
/// slow endpoint, as a client sees it.
pub async fn slow_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let pump = |mut r: tokio::net::tcp::OwnedReadHalf,
                            mut w: tokio::net::tcp::OwnedWriteHalf| async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                tokio::time::sleep(delay).await;
                                if w.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                };
                let _ = tokio::join!(tokio::spawn(pump(ri, wo)), tokio::spawn(pump(ro, wi)));
            });
        }
    });
    addr
}

/// A TLS endpoint in front of a plain-text backend: terminates TLS with the
/// fixture certificate (for 127.0.0.1, signed by `tests/fixtures/tls/ca.pem`,
/// ALPN h2 and http/1.1) and passes the bytes on. An upstream that needs TLS.
pub async fn tls_front(target: SocketAddr) -> SocketAddr {
    tls_front_with(target, None).await
}

/// As [`tls_front`], also requiring a client certificate signed by
/// `tests/fixtures/tls/client-ca.pem` (mutual TLS).
pub async fn mtls_front(target: SocketAddr) -> SocketAddr {
    tls_front_with(target, Some("tls/client-ca.pem")).await
}

async fn tls_front_with(target: SocketAddr, client_ca: Option<&str>) -> SocketAddr {
    let cert = std::fs::read_to_string(super::fixture("tls/server.pem")).unwrap();
    let key = std::fs::read_to_string(super::fixture("tls/server.key")).unwrap();
    tls_front_serving(target, &cert, &key, client_ca, None).await
}

/// As [`tls_front`], with the certificate chain and key given as PEM text;
/// the server name each client sent (SNI) is pushed to `names`, if given.
pub async fn tls_front_serving(
    target: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
    names: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                rustls::pki_types::CertificateDer::pem_file_iter(super::fixture(ca)).unwrap()
            {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let names = names.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(inbound).await else {
                    return;
                };
                if let Some(names) = names {
                    let name = tls.get_ref().1.server_name().unwrap_or_default();
                    names.lock().unwrap().push(name.to_owned());
                }
                let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}
