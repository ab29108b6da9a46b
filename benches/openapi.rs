//! Describing 1,000 methods in OpenAPI (10 services of 100 methods, each
//! with a google.api.http binding, nested messages, enums and comments),
//! against the baseline of building the route table for the same schemas
//! (work every generation already does), in the same run.

use criterion::{criterion_group, criterion_main, Criterion};
use portico::config::Config;
use portico::routes::aggregate::AggregateTable;
use portico::routes::RouteTable;
use std::time::Duration;

const SERVICES: usize = 10;
const METHODS: usize = 100;

fn one_thousand_methods(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-bench-openapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut proto = String::from(
        "syntax = \"proto3\";\npackage bench.v1;\nimport \"google/api/annotations.proto\";\n\
         import \"google/protobuf/timestamp.proto\";\n\
         // A kind.\nenum Kind { KIND_UNSPECIFIED = 0; A = 1; B = 2; }\n\
         // A filter.\nmessage Filter { string text = 1; Kind kind = 2; repeated string tags = 3; }\n",
    );
    for m in 0..METHODS {
        proto.push_str(&format!(
            "// Request {m}.\nmessage Req{m} {{ string id = 1; int64 n = 2; Filter filter = 3; \
             google.protobuf.Timestamp since = 4; oneof o {{ string a = 5; string b = 6; }} }}\n\
             // Reply {m}.\nmessage Res{m} {{ string id = 1; map<string, Filter> found = 2; repeated Kind kinds = 3; }}\n"
        ));
    }
    let mut config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[descriptors]\nprotos = [\"bench.proto\"]\nproto_paths = [\"{}\"]\n\n\
         [upstreams.backend]\nendpoints = [\"127.0.0.1:1\"]\n",
        dir.display()
    );
    for s in 0..SERVICES {
        proto.push_str(&format!("// Service {s}.\nservice S{s} {{\n"));
        for m in 0..METHODS {
            proto.push_str(&format!(
                "  // Method {m} of service {s}. It does one thing.\n  rpc M{m}(Req{m}) returns (Res{m}) {{ option (google.api.http) = {{ get: \"/v1/s{s}/m{m}/{{id}}\" }}; }}\n"
            ));
        }
        proto.push_str("}\n");
        config.push_str(&format!(
            "\n[[routes]]\ngrpc_service = \"bench.v1.S{s}\"\nupstream = \"backend\"\n"
        ));
    }
    std::fs::write(dir.join("bench.proto"), proto).unwrap();
    let config = Config::from_toml(&config).unwrap();
    let set = portico::descriptors::compile_protos(&[&dir], &["bench.proto".to_owned()]).unwrap();
    let mut pool = portico::descriptors::builtin::pool();
    portico::descriptors::add_set(&mut pool, &set, "bench.proto").unwrap();
    let routes = RouteTable::build(&config, &pool).unwrap();
    let aggregates = AggregateTable::build(&config, &routes).unwrap();
    assert_eq!(routes.targets().count(), SERVICES * METHODS);

    let mut group = c.benchmark_group("openapi_1000_methods");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("baseline_route_table", |b| {
        b.iter(|| RouteTable::build(&config, &pool).unwrap())
    });
    group.bench_function("describe", |b| {
        b.iter(|| {
            let spec = portico::openapi::generate(&portico::openapi::Sources {
                config: &config,
                routes: &routes,
                aggregates: &aggregates,
                digest: "0123456789ab",
            });
            serde_json::to_vec(&spec).unwrap()
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, one_thousand_methods);
criterion_main!(benches);
