//! The official Connect SDK for TypeScript (connect-es, in Node) calling the
//! demo services through the gateway with every transport it offers: a
//! client built from a descriptor set at run time, as a user without
//! generated code would write it.

use crate::support;

use prost::Message as _;
use serde_json::{json, Value};
use support::node;

/// The demo's schemas and google.rpc's error details, as the SDK reads them.
fn descriptor_set() -> std::path::PathBuf {
    let files = [
        "portico/demo/v1/library.proto",
        "portico/demo/v1/feed.proto",
        "portico/demo/v1/chat.proto",
        "portico/demo/v1/probe.proto",
        "google/rpc/error_details.proto",
    ];
    let mut compiler = protox::Compiler::new([support::proto_dir()]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(files).unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-connect-sdk-{}.binpb", std::process::id()));
    std::fs::write(&path, compiler.file_descriptor_set().encode_to_vec()).unwrap();
    path
}

/// What the SDK's every transport must report, case by case.
fn expected(transport: &str) -> Vec<(&'static str, Value)> {
    let mut cases = vec![
        (
            "getShelf",
            json!({"reply": {"name": "shelves/1", "theme": "Fiction", "bookCount": 2}}),
        ),
        (
            "notFound",
            json!({"code": "NotFound", "message": "shelf shelves/9 not found"}),
        ),
        (
            "fail",
            json!({"code": "PermissionDenied", "message": "no entry"}),
        ),
        ("headers", json!({"sent": "books", "answered": "forty-two"})),
        ("deadline", json!({"code": "DeadlineExceeded"})),
        ("watch", json!({"seqs": [1, 2, 3]})),
        (
            "watchFails",
            json!({"seqs": [1, 2], "code": "Aborted", "message": "feed interrupted by the backend"}),
        ),
        (
            "watchCancelled",
            json!({"seqs": [1, 2], "code": "Canceled"}),
        ),
        (
            "upload",
            json!({"reply": {"count": 3, "topics": ["a", "b"], "lastSeq": "3"}}),
        ),
    ];
    // A bidirectional stream needs HTTP/2: over HTTP/1.1 a request is sent
    // whole before its reply is read.
    if !transport.ends_with("-h1") {
        cases.push(("converse", json!({"texts": ["hello", "again"]})));
    }
    cases
}

/// An outcome flattened to the keys `expected` names: the reply or stream
/// items as they are, an error's code and message beside them.
fn observed(outcome: &Value, wanted: &Value) -> Value {
    let mut flat = outcome.clone();
    if let Some(error) = outcome.get("error") {
        let flat = flat.as_object_mut().unwrap();
        flat.remove("error");
        flat.insert("code".into(), error["code"].clone());
        flat.insert("message".into(), error["message"].clone());
    }
    let keys = wanted.as_object().unwrap().keys();
    Value::Object(keys.map(|k| (k.clone(), flat[k].clone())).collect())
}

const TRANSPORTS: [&str; 7] = [
    "connect-json-h1",
    "connect-json-h2",
    "connect-proto-h2",
    "connect-get-h1",
    "grpc",
    "grpc-web-h1",
    "grpc-web-h2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_sdk_calls_through_the_gateway_with_every_transport() {
    let Some(node) = node::available(&["@connectrpc/connect-node", "@bufbuild/protobuf"]) else {
        return;
    };
    let h = support::Harness::start().await;
    let set = descriptor_set();
    let base = format!("http://{}", h.gateway.addr);
    let run = node::run(&node, "connect_client.mjs", &[&base, set.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&set);
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let result = run.json();

    for transport in TRANSPORTS {
        let cases = &result[transport];
        for (case, wanted) in expected(transport) {
            assert_eq!(
                observed(&cases[case], &wanted),
                wanted,
                "{transport} {case}: {}",
                cases[case]
            );
        }
        // The backend's error reaches the SDK whole: its details, read as
        // the SDK reads them, and its own metadata.
        let fail = &cases["fail"]["error"];
        assert_eq!(
            fail["details"][0]["reason"], "PROBE_FAILURE",
            "{transport}: {fail}"
        );
        assert_eq!(
            fail["metadata"]["x-probe-failure"], "7",
            "{transport}: {fail}"
        );
    }
    // With `useHttpGet`, the SDK sends a method marked NO_SIDE_EFFECTS as a
    // Connect GET and the rest as POST.
    assert_eq!(result["connect-get-h1"]["methods"], json!(["GET", "POST"]));
    assert_eq!(result["connect-json-h1"]["methods"], json!(["POST"]));

    // Every deadline the SDK set ended the backend's call too.
    let probe = &h.backends.probe;
    assert!(
        support::eventually(|| probe.cancelled_sleeps() == TRANSPORTS.len() as u64).await,
        "cancelled sleeps: {}",
        probe.cancelled_sleeps()
    );

    // A compressed request is refused by name, and the refusal says what
    // the gateway takes, in the header each protocol's client reads.
    for (transport, outcome) in result["compressed"].as_object().unwrap() {
        let error = &outcome["getShelf"]["error"];
        assert_eq!(error["code"], "Unimplemented", "{transport}: {outcome}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("send them uncompressed"),
            "{transport}: {message}"
        );
        for header in ["connect-accept-encoding", "grpc-accept-encoding"] {
            assert_eq!(
                error["metadata"][header], "identity",
                "{transport}: {error}"
            );
        }
    }
    assert_eq!(result["compressed"].as_object().unwrap().len(), 3);
}
