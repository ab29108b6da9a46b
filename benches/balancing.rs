//! Picking an endpoint: each algorithm over 1 and 8 endpoints, to show the
//! choice itself costs the same whatever the size of the set.

use criterion::{criterion_group, criterion_main, Criterion};
use portico::egress::upstream::endpoint::{now_millis, Endpoint};
use portico::egress::upstream::pick::{hash, Snapshot};
use std::hint::black_box;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

fn snapshot(n: usize, hashing: bool) -> Snapshot {
    let endpoints = (0..n)
        .map(|i| Arc::new(Endpoint::new(format!("10.0.0.{i}:50051"), 1, None)))
        .collect();
    Snapshot::new(endpoints, hashing)
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [1, 8] {
        let rr = snapshot(n, false);
        let counter = AtomicUsize::new(0);
        group.bench_function(format!("round_robin/{n}"), |b| {
            b.iter(|| {
                let now = now_millis();
                black_box(rr.round_robin(&counter, |e| e.is_available(now)).is_some())
            })
        });
        group.bench_function(format!("least_request/{n}"), |b| {
            b.iter(|| {
                let now = now_millis();
                black_box(rr.least_request(|e| e.is_available(now)).is_some())
            })
        });
        let ring = snapshot(n, true);
        let key = hash(b"user-1234");
        group.bench_function(format!("consistent_hash/{n}"), |b| {
            b.iter(|| {
                let now = now_millis();
                black_box(
                    ring.by_hash(black_box(key), |e| e.is_available(now))
                        .is_some(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
