//! Native gRPC clients through the gateway: tonic's generated clients for
//! the demo services, pointed at the gateway's one port.

use crate::support;

use portico::demo::backends::pb;
use std::time::Duration;
use support::{eventually, Harness};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn channel(h: &Harness) -> Channel {
    Channel::from_shared(format!("http://{}", h.gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn unary_calls_pass_through_with_metadata_both_ways() {
    let h = Harness::start().await;
    let mut library = pb::library_client::LibraryClient::new(channel(&h).await);
    let shelf = library
        .get_shelf(pb::GetShelfRequest { shelf: "2".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shelf.theme, "History");

    let mut probe = pb::probe_client::ProbeClient::new(channel(&h).await);
    let mut req = Request::new(pb::HeadersRequest {});
    req.metadata_mut()
        .insert("x-tenant", "acme".parse().unwrap());
    req.metadata_mut().insert_bin(
        "trace-bin",
        tonic::metadata::MetadataValue::from_bytes(b"\x00\x01"),
    );
    let md = probe.headers(req).await.unwrap().into_inner().metadata;
    assert_eq!(
        md.get("x-tenant").map(String::as_str),
        Some("acme"),
        "{md:?}"
    );
    assert!(md.contains_key("trace-bin"));

    // Response metadata (here a header the backend set) comes back.
    let resp = library
        .update_book(pb::UpdateBookRequest {
            book: Some(pb::Book {
                name: "shelves/1/books/1".into(),
                pages: 5,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["pages".into()],
            }),
        })
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-update-mask").unwrap(), "pages");
}

#[tokio::test]
async fn server_streams_arrive_message_by_message() {
    let h = Harness::start().await;
    let mut feed = pb::feed_client::FeedClient::new(channel(&h).await);
    let mut stream = feed
        .watch(pb::WatchRequest {
            count: 4,
            interval_ms: 10,
            fail_after: 0,
            topic: "t".into(),
            padding: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(event) = stream.next().await {
        seqs.push(event.unwrap().seq);
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_mid_stream_error_keeps_its_status() {
    let h = Harness::start().await;
    let mut feed = pb::feed_client::FeedClient::new(channel(&h).await);
    let mut stream = feed
        .watch(pb::WatchRequest {
            count: 5,
            interval_ms: 0,
            fail_after: 2,
            topic: String::new(),
            padding: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    assert!(stream.next().await.unwrap().is_ok());
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(err.message(), "feed interrupted by the backend");
}

#[tokio::test]
async fn client_streams_are_forwarded() {
    let h = Harness::start().await;
    let mut feed = pb::feed_client::FeedClient::new(channel(&h).await);
    let events = (1..=3).map(|seq| pb::Event {
        seq,
        topic: format!("t{}", seq % 2),
        text: String::new(),
    });
    let summary = feed
        .upload(tokio_stream::iter(events))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.count, 3);
    assert_eq!(summary.last_seq, 3);
    assert_eq!(summary.topics, ["t1", "t0"]);
}

/// A client that ends its input right after its last message still gets
/// that message's echo before the call ends (the demo chat delivers what
/// the room holds for it before it closes the call).
#[tokio::test]
async fn a_chat_closed_right_after_a_message_still_gets_its_echo() {
    let h = Harness::start().await;
    let mut chat = pb::chat_client::ChatClient::new(channel(&h).await);
    for round in 0..20 {
        let message = pb::ChatMessage {
            user: "ann".into(),
            text: format!("bye {round}"),
            sent_at: None,
        };
        let mut replies = chat
            .converse(tokio_stream::iter([message]))
            .await
            .unwrap()
            .into_inner();
        let mut texts = Vec::new();
        while let Some(reply) = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .unwrap()
        {
            texts.push(reply.unwrap().text);
        }
        assert_eq!(texts, [format!("bye {round}")], "round {round}");
    }
}

#[tokio::test]
async fn bidi_streams_are_interactive() {
    let h = Harness::start().await;
    let mut chat = pb::chat_client::ChatClient::new(channel(&h).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = chat
        .converse(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for text in ["one", "two"] {
        tx.send(pb::ChatMessage {
            user: "ann".into(),
            text: text.into(),
            sent_at: None,
        })
        .await
        .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.text, text);
        assert!(reply.sent_at.is_some());
    }
    drop(tx);
    assert!(tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn the_client_deadline_reaches_the_backend() {
    let h = Harness::start().await;
    let mut probe = pb::probe_client::ProbeClient::new(channel(&h).await);
    let mut req = Request::new(pb::HeadersRequest {});
    req.set_timeout(Duration::from_secs(3));
    let md = probe.headers(req).await.unwrap().into_inner().metadata;
    let timeout = portico::headers::parse_grpc_timeout(&md["grpc-timeout"]).unwrap();
    assert!(
        timeout <= Duration::from_secs(3) && timeout > Duration::from_secs(2),
        "{timeout:?}"
    );
}

#[tokio::test]
async fn the_route_deadline_ends_the_call_and_cancels_the_backend() {
    let h = Harness::start_with("", "timeout = \"200ms\"").await;
    let mut probe = pb::probe_client::ProbeClient::new(channel(&h).await);
    let err = probe
        .sleep(pb::SleepRequest { millis: 5000 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let backend = h.backends.probe.clone();
    assert!(eventually(|| backend.cancelled_sleeps() == 1).await);
}

#[tokio::test]
async fn a_client_that_cancels_cancels_the_backend_stream() {
    let h = Harness::start().await;
    let mut feed = pb::feed_client::FeedClient::new(channel(&h).await);
    let mut stream = feed
        .watch(pb::WatchRequest {
            count: 1000,
            interval_ms: 20,
            fail_after: 0,
            topic: String::new(),
            padding: 0,
        })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    let backend = h.backends.feed.clone();
    assert!(eventually(|| backend.cancelled_watches() == 1).await);
}

#[tokio::test]
async fn messages_of_4_mib_pass_and_larger_ones_are_refused() {
    let h = Harness::start().await;
    let mut library = pb::library_client::LibraryClient::new(channel(&h).await)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let path = "p".repeat((4 << 20) - 64);
    let file = library
        .get_file(pb::GetFileRequest { path: path.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(file.path.len(), path.len());
    let err = library
        .get_file(pb::GetFileRequest {
            path: "p".repeat(5 << 20),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("server.limits.max_grpc_message_bytes (4194304 bytes)"),
        "the refusal names the limit: {err:?}"
    );
}

#[tokio::test]
async fn errors_come_back_trailers_only_with_details() {
    let h = Harness::start().await;
    let mut probe = pb::probe_client::ProbeClient::new(channel(&h).await);
    let err = probe
        .fail(pb::FailRequest {
            code: 5,
            message: "gone 100% ✗".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "gone 100% ✗");
    assert!(
        !err.details().is_empty(),
        "google.rpc.Status details pass through"
    );
}

#[tokio::test]
async fn the_gateways_own_bad_request_names_the_field_in_its_details() {
    let sections = format!(
        "[authenticators.partners]\nkind = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"{}\"\n",
        support::fixture("api_keys.toml")
    );
    let h = support::protocols::gateway(&sections, "auth = \"partners\"").await;
    let mut req = Request::new(pb::HeadersRequest {});
    req.metadata_mut()
        .append("x-api-key", "acme-key-123".parse().unwrap());
    req.metadata_mut()
        .append("x-api-key", "globex-key-456".parse().unwrap());
    let err = pb::probe_client::ProbeClient::new(channel(&h).await)
        .headers(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A google.rpc.Status whose one detail is a BadRequest, as the JSON
    // error body of every other protocol has it.
    let details = String::from_utf8_lossy(err.details()).into_owned();
    assert!(
        details.contains("type.googleapis.com/google.rpc.BadRequest")
            && details.contains("x-api-key")
            && details.contains("more than one credential"),
        "{details:?}"
    );
    assert_eq!(h.backends.probe.calls(), 0);
}

#[tokio::test]
async fn an_unrouted_method_is_unimplemented() {
    let backend = portico::demo::backends::Backends::default();
    let (addr, _) = backend.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let only_library = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n[upstreams.demo]\nendpoints = [\"{addr}\"]\n[[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"demo\"\n",
        support::proto_dir()
    );
    let gw = portico::app::start(portico::config::Config::from_toml(&only_library).unwrap())
        .await
        .unwrap();
    let ch = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = pb::probe_client::ProbeClient::new(ch)
        .headers(pb::HeadersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("/portico.demo.v1.Probe/Headers"));
    assert_eq!(backend.probe.calls(), 0);
}

#[tokio::test]
async fn the_gateway_serves_reflection_for_its_routes() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let h = Harness::start().await;
    let mut client = ServerReflectionClient::new(channel(&h).await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "portico.demo.v1.Library".into(),
            )),
        },
    ];
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in support::SERVICES {
        assert!(names.contains(&s.to_string()), "{names:?}");
    }
    assert!(names.contains(&"grpc.health.v1.Health".to_string()));
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a file descriptor");
    };
    let file = <prost_types::FileDescriptorProto as prost::Message>::decode(
        files.file_descriptor_proto[0].as_slice(),
    )
    .unwrap();
    assert_eq!(file.name(), "portico/demo/v1/library.proto");
}

#[tokio::test]
async fn the_health_service_reports_each_routed_service() {
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    let h = Harness::start().await;
    let mut health = HealthClient::new(channel(&h).await);
    let mut serving = false;
    for _ in 0..100 {
        let r = health
            .check(HealthCheckRequest {
                service: "portico.demo.v1.Library".into(),
            })
            .await;
        if matches!(r, Ok(ref r) if r.get_ref().status == ServingStatus::Serving as i32) {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        serving,
        "Library is reported serving once its upstream is reachable"
    );
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(overall.get_ref().status, ServingStatus::Serving as i32);
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
