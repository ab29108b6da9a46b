//! OpenTelemetry traces: one server span per call, a client span per
//! upstream attempt, exported over OTLP (gRPC or HTTP/protobuf).
//!
//! Spans live on each call's [`CallRecord`](super::access_log::CallRecord),
//! which already follows the call from its adapter to its end; this module
//! owns the exporter and the queue in front of it. Export never holds up a
//! request: finished spans go into a bounded queue that a task drains in
//! batches; a span that finds it full is dropped and counted.

pub mod config;

pub use config::{OtlpProtocol, SamplerConfig, TracingConfig};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Spans handed to the collector, dropped at a full queue, and lost to a
/// failed export, over the process's life.
pub static EXPORTED: AtomicU64 = AtomicU64::new(0);
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
pub static FAILED: AtomicU64 = AtomicU64::new(0);

/// How often a failing export is logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How long a batch waits for more spans before it is sent.
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// The exporter of one generation.
pub struct Tracing {
    tracer: SdkTracer,
    // Kept so the tracer's spans still have somewhere to go.
    _provider: SdkTracerProvider,
    /// Asks the export task to send what it holds now.
    flush: mpsc::Sender<Queued>,
    /// `tracing.export_timeout`: the most a flush waits for.
    export_timeout: Duration,
}

/// What the export task receives: a span, or a request to send at once
/// everything queued before it (a graceful shutdown's), answered when sent.
/// A span is kept unboxed, as the queue held it before: the small variant
/// is sent once per process, a box would cost every span an allocation.
#[allow(clippy::large_enum_variant)]
enum Queued {
    Span(SpanData),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

impl Tracing {
    /// Builds the exporter (it connects lazily) and its queue's task; must
    /// run inside the Tokio runtime.
    pub fn start(config: &TracingConfig) -> Result<Arc<Tracing>, String> {
        let mut exporter = match config.protocol {
            OtlpProtocol::Grpc => {
                use opentelemetry_otlp::WithExportConfig;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(config.endpoint.clone())
                    .with_timeout(config.export_timeout)
                    .build()
            }
            OtlpProtocol::HttpProtobuf => {
                use opentelemetry_otlp::WithExportConfig;
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(config.endpoint.clone())
                    .with_timeout(config.export_timeout)
                    .build()
            }
        }
        .map_err(|e| {
            format!(
                "cannot build the OTLP exporter for {}: {e}",
                config.endpoint
            )
        })?;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(
                config
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        exporter.set_resource(&resource);
        let (spans, mut queue) = mpsc::channel::<Queued>(config.queue_size);
        let flush = spans.clone();
        let batch_size = config.batch_size;
        let timeout = config.export_timeout;
        let endpoint = config.endpoint.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(batch_size);
            let mut last_warned = None;
            while let Some(first) = queue.recv().await {
                let mut flushed = None;
                match first {
                    Queued::Span(s) => batch.push(s),
                    Queued::Flush(done) => flushed = Some(done),
                }
                let wait = tokio::time::sleep(BATCH_DELAY);
                tokio::pin!(wait);
                while batch.len() < batch_size && flushed.is_none() {
                    tokio::select! {
                        next = queue.recv() => match next {
                            Some(Queued::Span(s)) => batch.push(s),
                            Some(Queued::Flush(done)) => flushed = Some(done),
                            None => break,
                        },
                        _ = &mut wait => break,
                    }
                }
                if batch.is_empty() {
                    if let Some(done) = flushed {
                        let _ = done.send(());
                    }
                    continue;
                }
                let n = batch.len() as u64;
                let sent = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                let failure = match tokio::time::timeout(timeout, exporter.export(sent)).await {
                    Ok(Ok(())) => {
                        EXPORTED.fetch_add(n, Ordering::Relaxed);
                        None
                    }
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("no answer within {timeout:?}")),
                };
                if let Some(error) = failure {
                    FAILED.fetch_add(n, Ordering::Relaxed);
                    // A wrong collector address must show in the log, not
                    // only in a counter; once a minute is enough.
                    if last_warned.is_none_or(|t: tokio::time::Instant| t.elapsed() >= WARN_EVERY) {
                        last_warned = Some(tokio::time::Instant::now());
                        tracing::warn!(%error, endpoint = %endpoint, failed_total = FAILED.load(Ordering::Relaxed), dropped_total = DROPPED.load(Ordering::Relaxed), "span export failed (logged at most once a minute; see portico_trace_spans_total)");
                    }
                }
                if let Some(done) = flushed {
                    let _ = done.send(());
                }
            }
        });
        let root = |ratio: f64| Sampler::TraceIdRatioBased(ratio);
        let sampler = match &config.sampler {
            SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
            SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
            SamplerConfig::Ratio(r) => root(*r),
            SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerConfig::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerConfig::ParentBasedRatio(r) => Sampler::ParentBased(Box::new(root(*r))),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Queue { spans })
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        Ok(Arc::new(Tracing {
            tracer: provider.tracer("portico"),
            _provider: provider,
            flush,
            export_timeout: config.export_timeout,
        }))
    }

    /// Sends every span ended so far, waiting at most one export's time
    /// (a graceful shutdown's last step: the calls drained are not lost).
    pub async fn flush(&self) {
        let within = self.export_timeout + BATCH_DELAY;
        let (done, sent) = tokio::sync::oneshot::channel();
        let asked = async {
            if self.flush.send(Queued::Flush(done)).await.is_ok() {
                let _ = sent.await;
            }
        };
        let _ = tokio::time::timeout(within, asked).await;
    }

    /// A call's server span (or a WebSocket session's), child of `parent`.
    pub fn server_span(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        parent: &Context,
        start: SystemTime,
    ) -> Span {
        self.tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(&self.tracer, parent)
    }

    /// An upstream attempt's client span, child of the call's span.
    pub fn attempt_span(&self, name: String, parent: &SpanContext, attrs: Vec<KeyValue>) -> Span {
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            parent.trace_id(),
            parent.span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        ));
        self.tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &cx)
    }
}

/// The parent a client named in its `traceparent` (as
/// [`parse_traceparent`] read it) and `tracestate`, as a context; an empty
/// one when it named none.
///
/// [`parse_traceparent`]: super::call_record::parse_traceparent
pub fn remote_parent(traceparent: Option<(&str, &str, &str)>, tracestate: Option<&str>) -> Context {
    let Some((trace, span, flags)) = traceparent.and_then(ids) else {
        return Context::new();
    };
    let state = tracestate
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    Context::new().with_remote_span_context(SpanContext::new(trace, span, flags, true, state))
}

fn ids((trace, span, flags): (&str, &str, &str)) -> Option<(TraceId, SpanId, TraceFlags)> {
    Some((
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1),
    ))
}

/// The `traceparent` value naming `cx` as the parent.
pub fn traceparent(cx: &SpanContext) -> [u8; 55] {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&cx.trace_id().to_bytes(), &mut out[3..35]);
    hex_into(&cx.span_id().to_bytes(), &mut out[36..52]);
    hex_into(&[cx.trace_flags().to_u8()], &mut out[53..55]);
    out
}

/// Lowercase hex of `bytes` into `out` (twice as long), without `core::fmt`:
/// ids are written on every call.
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// The processor: hands finished spans to the export task, never waits.
#[derive(Debug)]
struct Queue {
    spans: mpsc::Sender<Queued>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(Queued::Span(span)).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::call_record::parse_traceparent;

    #[test]
    fn a_remote_parent_keeps_its_ids_flags_and_state() {
        let cx = remote_parent(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("vendor=abc"),
        );
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.trace_state().get("vendor"), Some("abc"));
        assert_eq!(
            &traceparent(&sc)[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let none = remote_parent(parse_traceparent("garbage"), None);
        assert!(!none.span().span_context().is_valid());
    }
}
