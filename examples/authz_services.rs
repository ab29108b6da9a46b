//! Stand-in identity services for the policy benchmarks (and for trying
//! docs/identity.md by hand): an OAuth 2.0 introspection endpoint that
//! calls every token active, an Envoy `Authorization/Check` server that
//! allows every call, and a forward-auth endpoint that answers 200.
//!
//! ```text
//! cargo run --example authz_services -- 127.0.0.1:50190 127.0.0.1:50191 127.0.0.1:50192
//! #  introspection: http://127.0.0.1:50190/introspect
//! #  ext_authz:     grpc = "127.0.0.1:50191"
//! #  forward-auth:  http://127.0.0.1:50192/check
//! ```

use http_body_util::Full;
use hyper::service::service_fn;
use portico::policy::ext_authz::pb::envoy::service::auth::v3 as auth;
use portico::policy::ext_authz::pb::google::rpc::Status;

struct AllowAll;

#[tonic::async_trait]
impl auth::authorization_server::Authorization for AllowAll {
    async fn check(
        &self,
        _request: tonic::Request<auth::CheckRequest>,
    ) -> Result<tonic::Response<auth::CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(auth::CheckResponse {
            status: Some(Status::default()),
            ..Default::default()
        }))
    }
}

/// Serves HTTP/1.1 on `addr`, every request answered by `body`.
async fn http(addr: &str, body: &'static str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let svc = service_fn(
                move |_req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
                            .expect("a valid response"),
                    )
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "authz_services [INTROSPECTION] [EXT_AUTHZ] [FORWARD_AUTH]: stand-in identity services\n\
             (defaults 127.0.0.1:50190, 127.0.0.1:50191, 127.0.0.1:50192):\n\
             - an OAuth 2.0 introspection endpoint at http://INTROSPECTION/introspect that calls\n  every token active (sub \"bench\", scope \"library.read\");\n\
             - an Envoy Authorization/Check gRPC server on EXT_AUTHZ that allows every call;\n\
             - a forward-auth endpoint at http://FORWARD_AUTH/check that answers 200."
        );
        return Ok(());
    }
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let introspection = arg(0, "127.0.0.1:50190");
    let ext_authz: std::net::SocketAddr = arg(1, "127.0.0.1:50191").parse()?;
    let forward_auth = arg(2, "127.0.0.1:50192");
    println!("introspection http://{introspection}/introspect, ext_authz {ext_authz}, forward-auth http://{forward_auth}/check");
    let grpc = tonic::transport::Server::builder()
        .add_service(auth::authorization_server::AuthorizationServer::new(
            AllowAll,
        ))
        .serve(ext_authz);
    tokio::select! {
        r = http(&introspection, r#"{"active":true,"sub":"bench","scope":"library.read"}"#) => r?,
        r = http(&forward_auth, "") => r?,
        r = grpc => r?,
    }
    Ok(())
}
