//! An OpenTelemetry collector's OTLP/gRPC trace receiver that counts the
//! spans it is sent and keeps nothing: the far end of `bench/observe.sh`.
//!
//!     cargo run --release --example otlp_sink -- 127.0.0.1:4317

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default, Clone)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::main]
async fn main() {
    let arg = std::env::args().nth(1);
    if matches!(arg.as_deref(), Some("-h" | "--help")) {
        println!(
            "otlp_sink [ADDRESS]: an OTLP/gRPC trace receiver (default 127.0.0.1:4317) that \
             counts the spans it receives and prints the total once a second when it changes.\n\
             Point the gateway at it with OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
             OTEL_EXPORTER_OTLP_ENDPOINT=http://ADDRESS."
        );
        return;
    }
    let arg = arg.unwrap_or_else(|| "127.0.0.1:4317".to_owned());
    let Ok(addr) = arg.parse::<std::net::SocketAddr>() else {
        eprintln!("otlp_sink: {arg:?} is not an address like 127.0.0.1:4317 (see --help)");
        std::process::exit(2);
    };
    let sink = Sink::default();
    let count = sink.0.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = count.load(Ordering::Relaxed);
            if now != seen {
                println!("spans received: {now}");
                seen = now;
            }
        }
    });
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve(addr)
        .await
        .expect("serve");
}
