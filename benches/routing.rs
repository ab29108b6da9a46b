//! Route matching: the demo table, and a table of 1,000 templates to show
//! that matching does not scan routes linearly.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use portico::routes::template::parse;
use portico::routes::trie::Trie;
use portico::routes::MatchOutcome;
use std::hint::black_box;

fn demo_table(c: &mut Criterion) {
    let table = common::demo_routes();
    let mut group = c.benchmark_group("match/demo");
    for (name, method, path) in [
        ("literal+var", Method::GET, "/v1/shelves/1"),
        ("sub-template", Method::GET, "/v1/shelves/1/books/2"),
        ("custom-verb", Method::POST, "/v1/shelves/1/books/2:archive"),
        ("double-wildcard", Method::GET, "/v1/files/a/b/c/d.txt"),
        (
            "auto-mapping",
            Method::POST,
            "/portico.demo.v1.Library/Stats",
        ),
        ("not-found", Method::GET, "/v2/nothing/here"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| match table.find(black_box(&method), black_box(path)) {
                MatchOutcome::Found(m) => black_box(m.segments.len()),
                _ => 0,
            })
        });
    }
    group.finish();
}

fn large_table(c: &mut Criterion) {
    let mut trie = Trie::default();
    for i in 0..1000 {
        trie.insert(
            &parse(&format!("/v1/resource{i}/{{id}}/items/{{item}}")).unwrap(),
            Method::GET,
            i,
        )
        .unwrap();
    }
    let segments = ["v1", "resource999", "42", "items", "7"];
    c.bench_function("match/1000-routes/last", |b| {
        b.iter(|| trie.lookup(black_box(&Method::GET), black_box(&segments)))
    });
}

criterion_group!(benches, demo_table, large_table);
criterion_main!(benches);
