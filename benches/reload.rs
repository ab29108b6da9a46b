//! Building and swapping a generation of 5,000 routes (5,000 services, one
//! google.api.http binding each, from a descriptor set), against the
//! baseline of loading and checking the same config (what `portico check`
//! does), in the same run.

use criterion::{criterion_group, criterion_main, Criterion};
use portico::app;
use portico::config::Config;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROUTES: usize = 5000;

/// Writes the schema (compiled to a descriptor set) and returns the folder.
fn schema_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut proto = String::from(
        "syntax = \"proto3\";\npackage bench.v1;\nimport \"google/api/annotations.proto\";\n\
         message Req { string id = 1; string filter = 2; }\nmessage Res { string id = 1; string body = 2; }\n",
    );
    for i in 0..ROUTES {
        proto.push_str(&format!(
            "service S{i} {{ rpc Get(Req) returns (Res) {{ option (google.api.http) = {{ get: \"/v1/s{i}/items/{{id}}\" }}; }} }}\n"
        ));
    }
    std::fs::write(dir.join("bench.proto"), proto).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["compile", "-I"])
        .arg(&dir)
        .arg("-o")
        .arg(dir.join("bench.binpb"))
        .arg("bench.proto")
        .status();
    assert!(status.unwrap().success(), "portico compile failed");
    dir
}

/// The config, with `timeout` varied so that each write is a real change.
fn write_config(dir: &Path, timeout_ms: u64) -> PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nwatch_files = false\n\n[descriptors]\nsets = [\"{}\"]\n\n\
         [upstreams.backend]\nendpoints = [\"127.0.0.1:1\"]\n",
        dir.join("bench.binpb").display()
    );
    for i in 0..ROUTES {
        text.push_str(&format!(
            "\n[[routes]]\ngrpc_service = \"bench.v1.S{i}\"\nupstream = \"backend\"\ntimeout = \"{timeout_ms}ms\"\n"
        ));
    }
    let path = dir.join("portico.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn generation_of_5000_routes(c: &mut Criterion) {
    let dir = schema_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let path = write_config(&dir, 1000);
    let gateway =
        runtime.block_on(async { app::start(Config::load(&path).unwrap()).await.unwrap() });

    let mut group = c.benchmark_group("reload/5000-routes");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("check (load and validate: baseline)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let loaded = app::load(Config::load(&path).unwrap()).await.unwrap();
                assert_eq!(loaded.config.routes.len(), ROUTES);
            })
        })
    });
    let mut timeout = 1000;
    group.bench_function("reload (load, build, swap)", |b| {
        b.iter(|| {
            timeout += 1;
            write_config(&dir, timeout);
            runtime.block_on(async {
                let outcome = gateway.live.reload().await;
                assert!(
                    matches!(outcome, app::reload::ReloadOutcome::Swapped { .. }),
                    "{outcome:?}"
                );
            })
        })
    });
    group.finish();
    runtime.block_on(gateway.shutdown());
    std::fs::remove_dir_all(dir).ok();
}

criterion_group!(benches, generation_of_5000_routes);
criterion_main!(benches);
