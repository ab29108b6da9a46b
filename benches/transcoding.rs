//! JSON <-> protobuf on the hot path: a JSON body into a request message, a
//! query string into one, and a response message into JSON.

mod common;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::Method;
use portico::routes::MatchOutcome;
use portico::transcode::request::{build, UrlParts};
use portico::transcode::response;
use prost::Message;
use prost_reflect::DynamicMessage;
use std::hint::black_box;

fn transcoding(c: &mut Criterion) {
    let table = common::demo_routes();
    let find = |m: Method, p: &'static str| match table.find(&m, p) {
        MatchOutcome::Found(m) => (
            m.binding.clone(),
            m.segments.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ),
        _ => panic!("{p} is routed"),
    };

    let (create, create_segs) = find(Method::POST, "/v1/shelves/1/books");
    let body = Bytes::from_static(
        br#"{"title":"The Dispossessed","author":"Ursula K. Le Guin","genre":"GENRE_FICTION","pages":"387","published":"1974-05-01T00:00:00Z","labels":{"series":"hainish","shelf":"a3"},"isbn":"978-0-06-051275-0"}"#,
    );
    let mut group = c.benchmark_group("json->proto");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("create-book-body", |b| {
        let segs: Vec<&str> = create_segs.iter().map(String::as_str).collect();
        b.iter(|| {
            build(
                &create,
                Some(UrlParts {
                    segments: &segs,
                    query: None,
                }),
                black_box(&body),
                None,
            )
            .unwrap()
        })
    });
    let (search, search_segs) = find(Method::GET, "/v1/books:search");
    let query = "query=left&genres=GENRE_FICTION&genres=2&pageSize=10&filter.language=en&publishedAfter=2020-01-01T00:00:00Z";
    group.bench_function("search-query-string", |b| {
        let segs: Vec<&str> = search_segs.iter().map(String::as_str).collect();
        b.iter(|| {
            build(
                &search,
                Some(UrlParts {
                    segments: &segs,
                    query: Some(black_box(query)),
                }),
                &Bytes::new(),
                None,
            )
            .unwrap()
        })
    });
    group.finish();

    // A Book body without its Timestamp and map, through both readers: what
    // reading JSON straight into wire bytes saves over a DynamicMessage.
    let plain_body = Bytes::from_static(
        br#"{"title":"The Dispossessed","author":"Ursula K. Le Guin","genre":"GENRE_FICTION","pages":"387","isbn":"978-0-06-051275-0"}"#,
    );
    let book = create.target.method.output();
    let mut group = c.benchmark_group("json->proto plain book");
    group.throughput(Throughput::Bytes(plain_body.len() as u64));
    group.bench_function("direct", |b| {
        b.iter(|| portico::transcode::json::to_wire::encode(&book, black_box(&plain_body)).unwrap())
    });
    group.bench_function("general", |b| {
        b.iter(|| {
            portico::transcode::json::decode(&book, black_box(&plain_body), &create.json)
                .unwrap()
                .encode_to_vec()
        })
    });
    group.finish();

    // A Book reply as the backend would encode it.
    let book_bytes = {
        let json = Bytes::from_static(
            br#"{"name":"shelves/1/books/7","title":"The Dispossessed","author":"Ursula K. Le Guin","genre":"GENRE_FICTION","pages":"387","published":"1974-05-01T00:00:00Z","labels":{"series":"hainish"},"isbn":"978-0-06-051275-0"}"#,
        );
        let desc = create.target.method.output();
        let msg = portico::transcode::json::decode(&desc, &json, &create.json).unwrap();
        Bytes::from(DynamicMessage::encode_to_vec(&msg))
    };
    let mut group = c.benchmark_group("proto->json");
    group.throughput(Throughput::Bytes(book_bytes.len() as u64));
    // Has a Timestamp and a map: the direct writer gives up at the
    // timestamp and the general path writes it.
    group.bench_function("book-reply", |b| {
        b.iter(|| response::unary(&create, black_box(&book_bytes)).unwrap())
    });
    group.finish();

    // The same reply without those two fields, through both paths: what
    // writing JSON straight from the wire saves over decoding first.
    let plain_book = {
        let json = Bytes::from_static(
            br#"{"name":"shelves/1/books/7","title":"The Dispossessed","author":"Ursula K. Le Guin","genre":"GENRE_FICTION","pages":"387","isbn":"978-0-06-051275-0"}"#,
        );
        let desc = create.target.method.output();
        let msg = portico::transcode::json::decode(&desc, &json, &create.json).unwrap();
        Bytes::from(DynamicMessage::encode_to_vec(&msg))
    };
    let desc = create.target.method.output();
    // Book's type has a Timestamp and a map, so its route keeps to the
    // general path; the writer is forced on here to measure it.
    let output = portico::transcode::json::output(&create.json, true);
    assert_eq!(
        output.direct(&desc, &plain_book).unwrap(),
        portico::transcode::json::encode(
            &DynamicMessage::decode(desc.clone(), &plain_book[..]).unwrap(),
            &output.serialize
        )
        .unwrap()
    );
    let mut group = c.benchmark_group("proto->json plain book");
    group.throughput(Throughput::Bytes(plain_book.len() as u64));
    group.bench_function("direct", |b| {
        b.iter(|| output.direct(&desc, black_box(&plain_book)).unwrap())
    });
    group.bench_function("general", |b| {
        b.iter(|| {
            let msg = DynamicMessage::decode(desc.clone(), black_box(&plain_book[..])).unwrap();
            portico::transcode::json::encode(&msg, &output.serialize).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, transcoding);
criterion_main!(benches);
