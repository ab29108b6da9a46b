//! Reads schemas from an upstream's gRPC server reflection service
//! (`grpc.reflection.v1`, falling back to `v1alpha` for older servers).

use super::SchemaError;
use crate::config::UpstreamConfig;
use prost::Message;
use prost_types::FileDescriptorProto;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long reading one endpoint's reflection may take, connecting
/// included: a backend that takes the connection and never answers must not
/// hold up startup, `portico check` or a reload (which would hold every
/// later reload behind it).
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Every file (with its imports) that defines the upstream's services, as
/// an encoded FileDescriptorSet (raw, so custom options survive). The
/// upstream's endpoints are tried in the order the config lists them, so
/// one endpoint down does not stop the schemas from loading.
pub async fn fetch(upstream: &UpstreamConfig) -> Result<Vec<u8>, SchemaError> {
    fetch_within(upstream, READ_TIMEOUT).await
}

async fn fetch_within(upstream: &UpstreamConfig, limit: Duration) -> Result<Vec<u8>, SchemaError> {
    let source = format!("reflection of upstream {}", upstream.name);
    let seeds = upstream.seed_addresses();
    if seeds.is_empty() {
        return Err(SchemaError::new(&source, None, "upstream has no endpoints"));
    }
    let mut failures = Vec::new();
    for endpoint in &seeds {
        match tokio::time::timeout(limit, from_endpoint(upstream, endpoint)).await {
            Ok(Ok(set)) => return Ok(set),
            Ok(Err(reason)) => failures.push(reason),
            Err(_) => failures.push(format!(
                "{endpoint}: no answer within {}s",
                limit.as_secs_f64()
            )),
        }
    }
    Err(SchemaError::new(&source, None, failures.join("; ")))
}

/// One endpoint's schemas, or why not (naming the endpoint).
async fn from_endpoint(upstream: &UpstreamConfig, endpoint: &str) -> Result<Vec<u8>, String> {
    let scheme = if upstream.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let builder = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
        .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?
        .connect_timeout(upstream.connect_timeout);
    let connected = match &upstream.tls {
        None => {
            builder
                .connect_with_connector(crate::egress::h2c::Connector::new(
                    upstream.connect_timeout,
                ))
                .await
        }
        Some(tls) => {
            let connector = crate::egress::tls::grpc_connector(tls, upstream.connect_timeout, None)
                .map_err(|e| format!("{endpoint}: {e}"))?;
            builder.connect_with_connector(connector).await
        }
    };
    let channel = connected.map_err(|e| {
        format!(
            "cannot connect to {endpoint}: {}",
            crate::error::with_causes(&e)
        )
    })?;
    let plain = upstream.tls.is_none();
    let fail = |failure: Failure| {
        let e = match failure {
            Failure::Answer(why) => return format!("{endpoint}: reflection answered: {why}"),
            Failure::Call(e) => e,
        };
        // Said by what the failure points at: a server without the
        // service, or a connection that never carried a call.
        let hint = match e.code() {
            tonic::Code::Unimplemented => " (does it serve gRPC server reflection?)",
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal if plain => {
                " (the call never got an answer: if the endpoint serves TLS, the upstream needs `tls = true`)"
            }
            _ => "",
        };
        format!(
            "{endpoint}: reflection call failed: {}{hint}",
            crate::error::status_with_causes(&e)
        )
    };
    let files = match v1::fetch(channel.clone()).await {
        Err(Failure::Call(status)) if status.code() == tonic::Code::Unimplemented => {
            v1alpha::fetch(channel).await.map_err(fail)?
        }
        other => other.map_err(fail)?,
    };
    // A FileDescriptorSet is `repeated FileDescriptorProto file = 1`: each
    // file's bytes, length-delimited under field 1.
    let mut set = Vec::new();
    for bytes in files.values() {
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut set);
        prost::encoding::encode_varint(bytes.len() as u64, &mut set);
        set.extend_from_slice(bytes);
    }
    Ok(set)
}

/// Why reading a backend's reflection failed.
enum Failure {
    /// The call itself: not served, or no answer.
    Call(tonic::Status),
    /// The backend answered, and the answer says why not (an
    /// `error_response`, naming what was asked) or cannot be read.
    Answer(String),
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Failure {
        Failure::Call(status)
    }
}

/// A file descriptor from a reflection answer, or why it cannot be read.
fn decode_file(bytes: &[u8]) -> Result<FileDescriptorProto, Failure> {
    FileDescriptorProto::decode(bytes).map_err(|e| {
        Failure::Answer(format!(
            "a file descriptor in the answer cannot be read as a FileDescriptorProto: {e}"
        ))
    })
}

/// The two versions of the protocol differ only in their package name, so
/// one body serves both.
macro_rules! reflection_client {
    ($version:ident) => {
        pub mod $version {
            use super::*;
            use tonic_reflection::pb::$version::{
                server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse, ServerReflectionRequest,
            };

            /// What a request asks for, for an error that answers it.
            fn asked(request: &MessageRequest) -> String {
                match request {
                    MessageRequest::FileByFilename(f) => format!("the file {f:?}"),
                    MessageRequest::FileContainingSymbol(s) => {
                        format!("the file declaring {s:?}")
                    }
                    MessageRequest::ListServices(_) => "the list of services".to_owned(),
                    MessageRequest::FileContainingExtension(e) => format!(
                        "the file declaring extension {} of {:?}",
                        e.extension_number, e.containing_type
                    ),
                    MessageRequest::AllExtensionNumbersOfType(t) => {
                        format!("the extension numbers of {t:?}")
                    }
                }
            }

            async fn ask(
                client: &mut ServerReflectionClient<Channel>,
                requests: Vec<MessageRequest>,
            ) -> Result<Vec<MessageResponse>, Failure> {
                let described: Vec<String> = requests.iter().map(asked).collect();
                let requests: Vec<ServerReflectionRequest> = requests
                    .into_iter()
                    .map(|r| ServerReflectionRequest {
                        host: String::new(),
                        message_request: Some(r),
                    })
                    .collect();
                let mut stream = client
                    .server_reflection_info(tokio_stream::iter(requests))
                    .await?
                    .into_inner();
                let mut out = Vec::new();
                let mut answered = 0;
                while let Some(resp) = stream.message().await? {
                    // Answers come in the order asked; the one that says
                    // what it answers is believed first.
                    let what = resp
                        .original_request
                        .and_then(|r| r.message_request)
                        .map(|r| asked(&r))
                        .or_else(|| described.get(answered).cloned())
                        .unwrap_or_else(|| "nothing more".to_owned());
                    answered += 1;
                    match resp.message_response {
                        Some(MessageResponse::ErrorResponse(e)) => {
                            let code = crate::observe::call_stats::CODES
                                .get(e.error_code as usize)
                                .unwrap_or(&"UNKNOWN");
                            return Err(Failure::Answer(format!(
                                "{code} ({:?}) to a request for {what}",
                                e.error_message,
                            )));
                        }
                        Some(other) => out.push(other),
                        None => {}
                    }
                }
                Ok(out)
            }

            /// Files by name, raw; fetched until every import is present.
            pub(super) async fn fetch(
                channel: Channel,
            ) -> Result<BTreeMap<String, Vec<u8>>, Failure> {
                let mut client = ServerReflectionClient::new(channel);
                let mut services = Vec::new();
                for resp in ask(
                    &mut client,
                    vec![MessageRequest::ListServices(String::new())],
                )
                .await?
                {
                    if let MessageResponse::ListServicesResponse(list) = resp {
                        services.extend(list.service.into_iter().map(|s| s.name));
                    }
                }
                // The gateway's own services are the gateway's, whatever a
                // backend serves under their names.
                services.retain(|s| {
                    !s.starts_with("grpc.reflection.")
                        && !crate::routes::gateway::SERVICES.contains(&s.as_str())
                });
                let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                let mut asked: HashSet<String> = HashSet::new();
                let mut requests: Vec<MessageRequest> = services
                    .into_iter()
                    .map(MessageRequest::FileContainingSymbol)
                    .collect();
                while !requests.is_empty() {
                    for resp in ask(&mut client, std::mem::take(&mut requests)).await? {
                        if let MessageResponse::FileDescriptorResponse(fd) = resp {
                            for bytes in fd.file_descriptor_proto {
                                let file = decode_file(&bytes)?;
                                files.entry(file.name().to_owned()).or_insert(bytes);
                            }
                        }
                    }
                    // Servers may send a file without its imports: ask for those by name.
                    for bytes in files.values() {
                        let file = decode_file(bytes)?;
                        for dep in file.dependency {
                            if !files.contains_key(&dep) && asked.insert(dep.clone()) {
                                requests.push(MessageRequest::FileByFilename(dep));
                            }
                        }
                    }
                }
                Ok(files)
            }
        }
    };
}

reflection_client!(v1);
reflection_client!(v1alpha);

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(endpoints: &[String]) -> UpstreamConfig {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nreflect = [\"b\"]\n[upstreams.b]\nendpoints = [{}]\nconnect_timeout = \"300ms\"\n[[routes]]\ngrpc_service = \"x.v1.S\"\nupstream = \"b\"\n",
            list.join(", ")
        );
        let config = crate::config::Config::from_toml(&text).expect("valid config");
        config.upstreams[0].clone()
    }

    #[tokio::test]
    async fn an_endpoint_that_takes_the_connection_and_never_answers_is_given_up_on() {
        // Accepts connections (the kernel does, from its backlog) and
        // never speaks.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let started = tokio::time::Instant::now();
        let err = fetch_within(
            &upstream(&[closed.clone(), silent_addr.clone()]),
            Duration::from_millis(500),
        )
        .await
        .expect_err("nothing to read");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let text = err.to_string();
        // Every endpoint tried, each with its reason.
        assert!(
            text.contains(&format!("cannot connect to {closed}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{silent_addr}: no answer within 0.5s")),
            "{text}"
        );
        drop(silent);
    }

    /// A backend that lists a service its reflection cannot describe: the
    /// error says what the backend answered and to which lookup, not that
    /// the call never got an answer.
    #[tokio::test]
    async fn a_lookup_answered_with_an_error_is_named_with_what_was_asked() {
        let schemas = crate::egress::local::reflection::Schemas::new(
            crate::descriptors::builtin::pool(),
            vec!["ghost.v1.Missing".into()],
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(crate::egress::local::reflection::v1::server(
                    std::sync::Arc::new(schemas),
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let err = fetch_within(
            &upstream(std::slice::from_ref(&addr)),
            Duration::from_secs(5),
        )
        .await
        .expect_err("a service it cannot describe");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "{addr}: reflection answered: NOT_FOUND (\"no symbol named \\\"ghost.v1.Missing\\\"\") to a request for the file declaring \"ghost.v1.Missing\""
            )),
            "{text}"
        );
        assert!(!text.contains("tls"), "{text}");
    }
}
