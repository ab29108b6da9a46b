//! Reads schemas from an upstream's gRPC server reflection service
//! (`grpc.reflection.v1`, falling back to `v1alpha` for older servers).

use super::SchemaError;
use crate::config::UpstreamConfig;
use prost::Message;
use prost_types::FileDescriptorProto;
use std::collections::{BTreeMap, HashSet};
use tonic::transport::{Channel, Endpoint};

/// Every file (with its imports) that defines the upstream's services, as
/// an encoded FileDescriptorSet (raw, so custom options survive).
pub async fn fetch(upstream: &UpstreamConfig) -> Result<Vec<u8>, SchemaError> {
    let source = format!("reflection of upstream {}", upstream.name);
    let seeds = upstream.seed_addresses();
    let endpoint = seeds
        .first()
        .ok_or_else(|| SchemaError::new(&source, None, "upstream has no endpoints"))?;
    let scheme = if upstream.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let builder = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
        .map_err(|e| SchemaError::new(&source, None, format!("bad endpoint {endpoint}: {e}")))?
        .connect_timeout(upstream.connect_timeout);
    let connected = match &upstream.tls {
        None => builder.connect().await,
        Some(tls) => {
            let connector = crate::egress::tls::grpc_connector(tls, upstream.connect_timeout)
                .map_err(|e| SchemaError::new(&source, None, e))?;
            builder.connect_with_connector(connector).await
        }
    };
    let channel = connected.map_err(|e| {
        SchemaError::new(
            &source,
            None,
            format!(
                "cannot connect to {endpoint}: {}",
                crate::error::with_causes(&e)
            ),
        )
    })?;
    let fail = |e: tonic::Status| {
        SchemaError::new(
            &source,
            None,
            format!("reflection call failed: {}", e.message()),
        )
    };
    let files = match v1::fetch(channel.clone()).await {
        Err(status) if status.code() == tonic::Code::Unimplemented => {
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

            async fn ask(
                client: &mut ServerReflectionClient<Channel>,
                requests: Vec<MessageRequest>,
            ) -> Result<Vec<MessageResponse>, tonic::Status> {
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
                while let Some(resp) = stream.message().await? {
                    match resp.message_response {
                        Some(MessageResponse::ErrorResponse(e)) => {
                            return Err(tonic::Status::new(
                                tonic::Code::from(e.error_code),
                                e.error_message,
                            ))
                        }
                        Some(other) => out.push(other),
                        None => {}
                    }
                }
                Ok(out)
            }

            /// Files by name, raw; fetched until every import is present.
            pub async fn fetch(
                channel: Channel,
            ) -> Result<BTreeMap<String, Vec<u8>>, tonic::Status> {
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
                services.retain(|s| !s.starts_with("grpc.reflection."));
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
                                let file = FileDescriptorProto::decode(bytes.as_slice())
                                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                                files.entry(file.name().to_owned()).or_insert(bytes);
                            }
                        }
                    }
                    // Servers may send a file without its imports: ask for those by name.
                    for bytes in files.values() {
                        let file = FileDescriptorProto::decode(bytes.as_slice())
                            .map_err(|e| tonic::Status::internal(e.to_string()))?;
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
