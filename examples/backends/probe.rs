//! The Probe service: reports what the backend received and fails or
//! sleeps on request, so tests and the demo can see metadata, errors and
//! cancellation through the gateway.

use super::pb::{self, probe_server::Probe};
use super::rpc;
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Code, Request, Response, Status};

/// gRPC's base64 for binary metadata, padded or not.
const BINARY_METADATA: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

#[derive(Clone, Default)]
pub struct ProbeService {
    /// Sleep calls dropped before they finished (the client or gateway cancelled).
    cancelled: Arc<AtomicU64>,
    /// Calls received, of any method.
    calls: Arc<AtomicU64>,
    /// The address this instance serves on, sent back as `x-served-by` so
    /// a test behind a balancer can tell instances apart.
    served_by: Arc<std::sync::OnceLock<String>>,
}

impl ProbeService {
    pub fn cancelled_sleeps(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_served_by(&self, addr: String) {
        let _ = self.served_by.set(addr);
    }

    fn tagged<T>(&self, message: T) -> Response<T> {
        let mut resp = Response::new(message);
        if let Some(Ok(v)) = self.served_by.get().map(|a| a.parse()) {
            resp.metadata_mut().insert("x-served-by", v);
        }
        resp
    }
}

/// Counts a cancellation if dropped before `finish`.
struct CancelGuard(Option<Arc<AtomicU64>>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `x-reply-NAME: value` asks for reply metadata `NAME: value` (a
/// `set-cookie`, a `vary`, a `cache-control`; a binary `x-reply-x-data-bin`
/// in base64), so tests can see what the gateway does with them.
pub(crate) fn replies_asked_for(asked: &http::HeaderMap, into: &mut tonic::metadata::MetadataMap) {
    for (k, v) in asked {
        let Some(name) = k.as_str().strip_prefix("x-reply-") else {
            continue;
        };
        if name.ends_with("-bin") {
            let key = tonic::metadata::BinaryMetadataKey::from_bytes(name.as_bytes());
            let value = base64::Engine::decode(&BINARY_METADATA, v.as_bytes());
            if let (Ok(key), Ok(value)) = (key, value) {
                into.append_bin(
                    key,
                    tonic::metadata::BinaryMetadataValue::from_bytes(&value),
                );
            }
        } else if let Ok(name) = tonic::metadata::MetadataKey::from_bytes(name.as_bytes()) {
            if let Ok(value) = v.to_str().unwrap_or_default().parse() {
                into.append(name, value);
            }
        }
    }
}

#[tonic::async_trait]
impl Probe for ProbeService {
    async fn headers(
        &self,
        req: Request<pb::HeadersRequest>,
    ) -> Result<Response<pb::HeadersResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let headers = req.metadata().clone().into_headers();
        let metadata = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut resp = self.tagged(pb::HeadersResponse { metadata });
        replies_asked_for(&headers, resp.metadata_mut());
        Ok(resp)
    }

    async fn fail(&self, req: Request<pb::FailRequest>) -> Result<Response<()>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let asked = req.metadata().clone().into_headers();
        let r = req.into_inner();
        let code = Code::from_i32(r.code);
        let message = if r.message.is_empty() {
            format!("failing with {code:?} as asked")
        } else {
            r.message
        };
        let info = rpc::ErrorInfo {
            reason: "PROBE_FAILURE".to_owned(),
            domain: "demo.portico".to_owned(),
            metadata: [("code".to_owned(), r.code.to_string())]
                .into_iter()
                .collect(),
        };
        let status = rpc::Status {
            code: r.code,
            message: message.clone(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_owned(),
                value: info.encode_to_vec(),
            }],
        };
        let mut status = Status::with_details(code, message, status.encode_to_vec().into());
        // Error metadata of the backend's own, for the gateway to carry.
        status.metadata_mut().insert(
            "x-probe-failure",
            r.code.to_string().parse().expect("digits"),
        );
        replies_asked_for(&asked, status.metadata_mut());
        Err(status)
    }

    async fn sleep(
        &self,
        req: Request<pb::SleepRequest>,
    ) -> Result<Response<pb::SleepResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let asked = req.metadata().clone().into_headers();
        let millis = req.into_inner().millis.clamp(0, 60_000) as u64;
        let mut guard = CancelGuard(Some(self.cancelled.clone()));
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(millis)).await;
        guard.0 = None;
        let mut resp = self.tagged(pb::SleepResponse {
            slept_millis: started.elapsed().as_millis() as i64,
        });
        replies_asked_for(&asked, resp.metadata_mut());
        Ok(resp)
    }
}
