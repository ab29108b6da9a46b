//! The demo backends: plain tonic services with generated code, the kind of
//! gRPC server Portico is put in front of. `portico demo` runs them in
//! process; `cargo run --example demo_backend` runs them alone; the tests
//! use them as real backends.

pub mod chat;
pub mod feed;
pub mod library;
pub mod probe;

/// Generated code, nested by package as prost's relative paths expect.
#[allow(clippy::all, missing_docs)]
pub mod generated {
    pub mod portico {
        pub mod demo {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/portico.demo.v1.rs"));
            }
        }
    }
    pub mod google {
        pub mod api {
            include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
        }
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        }
    }
}

pub use generated::google::api::HttpBody;
/// google.rpc types, for error details.
pub use generated::google::rpc;
/// Messages and services of `proto/portico/demo/v1/*.proto`.
pub use generated::portico::demo::v1 as pb;

/// The demo services' descriptor set, served over gRPC reflection.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/demo_descriptor_set.binpb"));

use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The demo backend's services, with handles on the state tests look at.
#[derive(Clone, Default)]
pub struct Backends {
    pub library: library::LibraryService,
    pub feed: feed::FeedService,
    pub chat: chat::ChatService,
    pub probe: probe::ProbeService,
}

impl Backends {
    /// Serves every demo service, plus gRPC reflection, on `listener`.
    pub fn serve(&self, listener: TcpListener) -> JoinHandle<()> {
        self.serve_until(listener, std::future::pending())
    }

    /// Serves until `stop` resolves, then shuts down gracefully: HTTP/2
    /// GOAWAY, calls in flight finish, new ones go elsewhere.
    pub fn serve_until(
        &self,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .build_v1()
            .expect("the demo descriptor set is valid");
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("the demo descriptor set is valid");
        let (_, health) = tonic_health::server::health_reporter();
        // Generous stream limit: the gateway multiplexes many client calls onto one connection.
        let router = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(100_000))
            .add_service(pb::library_server::LibraryServer::new(self.library.clone()))
            .add_service(pb::feed_server::FeedServer::new(self.feed.clone()))
            .add_service(pb::chat_server::ChatServer::new(self.chat.clone()))
            .add_service(pb::probe_server::ProbeServer::new(self.probe.clone()))
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(health);
        tokio::spawn(async move {
            // tonic leaves its `tcp_nodelay` to the caller with an incoming
            // stream: without it a reply written in pieces (headers, then a
            // message) waits on the gateway's delayed ACK, 40 ms a call.
            use tokio_stream::StreamExt as _;
            let incoming =
                tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
                    if let Ok(stream) = &accepted {
                        let _ = stream.set_nodelay(true);
                    }
                    accepted
                });
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "demo backend stopped");
            }
        })
    }

    /// Binds `addr` (port 0 for any) and serves; returns the bound address.
    pub async fn bind(&self, addr: SocketAddr) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        self.probe.set_served_by(bound.to_string());
        Ok((bound, self.serve(listener)))
    }
}
