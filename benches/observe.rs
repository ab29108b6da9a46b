//! What one call's record costs: created when a REST request arrives,
//! filled in by the pipeline and the upstream (an attempt, its
//! `traceparent` for the backend), dropped when the reply is sent. The
//! baseline is the record with usage analytics only (always on); the rows
//! add tracing with the sampler at 0, the JSON access log to a file, and
//! both, in the same run. `bench/observe.sh` measures the same under load.

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use portico::config::Config;
use portico::observe::call_record::{CallRecord, ClientProtocol, Sinks};
use portico::routes::RouteTable;
use std::sync::Arc;

fn config(sections: &str, log: &std::path::Path) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[descriptors]\nsets = [\"{}/descriptors/demo.binpb\"]\n\n\
         [upstreams.demo]\nendpoints = [\"127.0.0.1:1\"]\n\n{}\n\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"demo\"\n",
        env!("CARGO_MANIFEST_DIR"),
        sections.replace("@LOG@", &log.display().to_string())
    );
    Config::from_toml(&text).unwrap()
}

fn one_call(sinks: &Sinks, target: &Arc<portico::envelope::Target>, headers: &HeaderMap) {
    let record = CallRecord::call(
        sinks,
        ClientProtocol::Rest,
        &Method::GET,
        "/v1/shelves/1",
        headers,
    );
    record.routed(target);
    record.route(|| "GET /v1/shelves/{shelf}".to_owned());
    record.client(Some("127.0.0.1:40000".parse().unwrap()));
    record.entered(target, 0, 0);
    let attempt = record.attempt(target, 0, "127.0.0.1:50051", 1, None);
    std::hint::black_box(attempt.traceparent());
    std::hint::black_box(attempt.tracestate());
    record.attempt_done(attempt, None, None);
    record.replied();
    record.add_bytes_out(48);
    record.ended(tonic::Code::Ok);
    record.http_status(http::StatusCode::OK);
    drop(record);
}

fn call_records(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-bench-observe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let tracing = "[tracing]\nendpoint = \"http://127.0.0.1:1\"\nsampler = \"parentbased_traceidratio\"\nsampler_arg = 0\n";
    let access_log = "[access_log]\npath = \"@LOG@\"\n";
    let base = config("", &log);
    let pool = runtime.block_on(portico::descriptors::load(&base)).unwrap();
    let routes = RouteTable::build(&base, &pool).unwrap();
    let target = routes
        .target("/portico.demo.v1.Library/GetShelf")
        .unwrap()
        .clone();
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-request-id",
        HeaderValue::from_static("5f0c6a3e9b1d4f2a8c7e6d5b4a392817"),
    );
    headers.insert("host", HeaderValue::from_static("127.0.0.1:18161"));
    headers.insert("user-agent", HeaderValue::from_static("wrk"));
    let usage = Arc::new(portico::observe::metrics::Usage::default());
    let sinks = |sections: &str| {
        let c = config(sections, &log);
        Sinks {
            log: c
                .access_log
                .as_ref()
                .map(|a| portico::observe::access_log::AccessLog::start(a).unwrap()),
            tracing: c
                .tracing
                .as_ref()
                .map(|t| portico::observe::traces::Tracing::start(t).unwrap()),
            usage: Some(usage.clone()),
        }
    };
    let rows = [
        ("baseline_usage_only", sinks("")),
        ("sampler_0", sinks(tracing)),
        ("access_log", sinks(access_log)),
        (
            "sampler_0_and_access_log",
            sinks(&format!("{tracing}{access_log}")),
        ),
    ];
    let mut group = c.benchmark_group("call_record");
    for (name, sinks) in &rows {
        group.bench_function(*name, |b| b.iter(|| one_call(sinks, &target, &headers)));
    }
    group.finish();
    drop(rows);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, call_records);
criterion_main!(benches);
