//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) over the
//! gateway's schemas, answered as the protocol describes: a lookup that
//! finds nothing is an `error_response` on the stream, which goes on; a
//! file comes with the files it imports that this stream has not sent yet,
//! so a client needs one request per symbol; extensions are looked up.

use prost_reflect::{DescriptorPool, FileDescriptor, MessageDescriptor};
use std::collections::HashSet;
use std::sync::Arc;
use tonic::Code;

/// What reflection describes: the routed schemas and the gateway's own.
pub struct Schemas {
    /// Searched in order: the gateway's own schemas first, so a backend's
    /// copy of `grpc.health.v1` never describes the gateway's service.
    pools: [DescriptorPool; 2],
    /// What `list_services` answers, sorted.
    services: Vec<String>,
}

/// A lookup's failure, as an `error_response` carries it.
type Miss = (Code, String);

impl Schemas {
    /// The routed `services` of `routed`, and the gateway's own services.
    pub fn new(routed: DescriptorPool, mut services: Vec<String>) -> Schemas {
        services.extend(
            crate::routes::gateway::SERVICES
                .iter()
                .map(|s| (*s).to_owned()),
        );
        services.sort();
        services.dedup();
        Schemas {
            pools: [crate::routes::gateway::pool().clone(), routed],
            services,
        }
    }

    fn file_by_name(&self, name: &str) -> Result<FileDescriptor, Miss> {
        self.pools
            .iter()
            .find_map(|p| p.get_file_by_name(name))
            .ok_or_else(|| (Code::NotFound, format!("no file named {name:?}")))
    }

    /// The file declaring `symbol`: a service, a method
    /// (`pkg.Service.Method`), a message, an enum, an enum value (named
    /// beside its enum, `pkg.VALUE`), a field, a oneof or an extension.
    fn file_of_symbol(&self, symbol: &str) -> Result<FileDescriptor, Miss> {
        let symbol = symbol.trim_start_matches('.');
        for pool in &self.pools {
            if let Some(s) = pool.get_service_by_name(symbol) {
                return Ok(s.parent_file());
            }
            if let Some(m) = pool.get_message_by_name(symbol) {
                return Ok(m.parent_file());
            }
            if let Some(e) = pool.get_enum_by_name(symbol) {
                return Ok(e.parent_file());
            }
            if let Some(e) = pool.get_extension_by_name(symbol) {
                return Ok(e.parent_file());
            }
            if let Some((parent, member)) = symbol.rsplit_once('.') {
                if let Some(s) = pool.get_service_by_name(parent) {
                    if s.methods().any(|m| m.name() == member) {
                        return Ok(s.parent_file());
                    }
                }
                if let Some(m) = pool.get_message_by_name(parent) {
                    if m.get_field_by_name(member).is_some()
                        || m.oneofs().any(|o| o.name() == member)
                    {
                        return Ok(m.parent_file());
                    }
                }
            }
            // Rare enough to look through every enum for.
            if let Some(e) = pool
                .all_enums()
                .find(|e| e.values().any(|v| v.full_name() == symbol))
            {
                return Ok(e.parent_file());
            }
        }
        Err((Code::NotFound, format!("no symbol named {symbol:?}")))
    }

    fn message(&self, name: &str) -> Result<MessageDescriptor, Miss> {
        let name = name.trim_start_matches('.');
        self.pools
            .iter()
            .find_map(|p| p.get_message_by_name(name))
            .ok_or_else(|| (Code::NotFound, format!("no message type named {name:?}")))
    }

    fn file_of_extension(&self, extended: &str, number: i32) -> Result<FileDescriptor, Miss> {
        self.message(extended)?
            .extensions()
            .find(|e| e.number() as i32 == number)
            .map(|e| e.parent_file())
            .ok_or_else(|| {
                (
                    Code::NotFound,
                    format!("no extension {number} of {extended:?}"),
                )
            })
    }

    fn extension_numbers(&self, extended: &str) -> Result<Vec<i32>, Miss> {
        let mut numbers: Vec<i32> = self
            .message(extended)?
            .extensions()
            .map(|e| e.number() as i32)
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }
}

/// `file` first, then every file it imports, at any depth, that `sent`
/// does not hold yet; each as an encoded `FileDescriptorProto`.
fn with_imports(file: FileDescriptor, sent: &mut HashSet<String>) -> Vec<Vec<u8>> {
    sent.insert(file.name().to_owned());
    let mut out = vec![file.encode_to_vec()];
    let mut pending: Vec<FileDescriptor> = file.dependencies().collect();
    while let Some(dep) = pending.pop() {
        if sent.insert(dep.name().to_owned()) {
            out.push(dep.encode_to_vec());
            pending.extend(dep.dependencies());
        }
    }
    out
}

/// The two versions of the protocol differ only in their package name, so
/// one body serves both.
macro_rules! reflection_server {
    ($version:ident) => {
        pub mod $version {
            use super::*;
            use futures_util::{Stream, StreamExt};
            use std::pin::Pin;
            use tonic::{Request, Response, Status, Streaming};
            use tonic_reflection::pb::$version::{
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
                server_reflection_server::{ServerReflection, ServerReflectionServer},
                ErrorResponse, ExtensionNumberResponse, FileDescriptorResponse,
                ListServiceResponse, ServerReflectionRequest, ServerReflectionResponse,
                ServiceResponse,
            };

            pub fn server(schemas: Arc<Schemas>) -> ServerReflectionServer<Reflection> {
                ServerReflectionServer::new(Reflection(schemas))
            }

            pub struct Reflection(Arc<Schemas>);

            type Replies =
                Pin<Box<dyn Stream<Item = Result<ServerReflectionResponse, Status>> + Send>>;

            #[tonic::async_trait]
            impl ServerReflection for Reflection {
                type ServerReflectionInfoStream = Replies;

                async fn server_reflection_info(
                    &self,
                    request: Request<Streaming<ServerReflectionRequest>>,
                ) -> Result<Response<Replies>, Status> {
                    let schemas = self.0.clone();
                    let mut sent = HashSet::new();
                    let replies = request
                        .into_inner()
                        .map(move |r| r.map(|r| answer(&schemas, &mut sent, r)));
                    Ok(Response::new(Box::pin(replies)))
                }
            }

            fn answer(
                schemas: &Schemas,
                sent: &mut HashSet<String>,
                request: ServerReflectionRequest,
            ) -> ServerReflectionResponse {
                let files = |found: Result<FileDescriptor, Miss>, sent: &mut HashSet<String>| {
                    found.map(|file| {
                        MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                            file_descriptor_proto: with_imports(file, sent),
                        })
                    })
                };
                let outcome = match &request.message_request {
                    Some(MessageRequest::ListServices(_)) => {
                        Ok(MessageResponse::ListServicesResponse(ListServiceResponse {
                            service: schemas
                                .services
                                .iter()
                                .map(|name| ServiceResponse { name: name.clone() })
                                .collect(),
                        }))
                    }
                    Some(MessageRequest::FileByFilename(name)) => {
                        files(schemas.file_by_name(name), sent)
                    }
                    Some(MessageRequest::FileContainingSymbol(symbol)) => {
                        files(schemas.file_of_symbol(symbol), sent)
                    }
                    Some(MessageRequest::FileContainingExtension(e)) => files(
                        schemas.file_of_extension(&e.containing_type, e.extension_number),
                        sent,
                    ),
                    Some(MessageRequest::AllExtensionNumbersOfType(name)) => {
                        schemas.extension_numbers(name).map(|numbers| {
                            MessageResponse::AllExtensionNumbersResponse(ExtensionNumberResponse {
                                base_type_name: name.trim_start_matches('.').to_owned(),
                                extension_number: numbers,
                            })
                        })
                    }
                    None => Err((
                        Code::InvalidArgument,
                        "a reflection request names no question".to_owned(),
                    )),
                };
                let response = outcome.unwrap_or_else(|(code, message)| {
                    MessageResponse::ErrorResponse(ErrorResponse {
                        error_code: code as i32,
                        error_message: message,
                    })
                });
                ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request),
                    message_response: Some(response),
                }
            }
        }
    };
}

reflection_server!(v1);
reflection_server!(v1alpha);

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> Schemas {
        Schemas::new(
            crate::descriptors::builtin::pool(),
            vec!["google.longrunning.Operations".into()],
        )
    }

    #[test]
    fn a_symbol_is_found_by_any_of_its_names() {
        let s = schemas();
        for symbol in [
            "grpc.health.v1.Health",
            "grpc.health.v1.Health.Check",
            "grpc.health.v1.HealthCheckRequest",
            "grpc.health.v1.HealthCheckRequest.service",
            "grpc.health.v1.HealthCheckResponse.ServingStatus",
            "grpc.health.v1.HealthCheckResponse.SERVICE_UNKNOWN",
            ".grpc.health.v1.Health",
        ] {
            let file = s
                .file_of_symbol(symbol)
                .unwrap_or_else(|e| panic!("{symbol}: {e:?}"));
            assert!(
                file.name().ends_with("health.proto"),
                "{symbol}: {}",
                file.name()
            );
        }
        assert_eq!(
            s.file_by_name("grpc/health/v1/health.proto")
                .unwrap()
                .name(),
            "grpc/health/v1/health.proto",
            "named as grpc names it"
        );
        let (code, message) = s.file_of_symbol("no.Such").unwrap_err();
        assert_eq!(code, Code::NotFound);
        assert!(message.contains("no.Such"), "{message}");
    }

    #[test]
    fn a_file_comes_with_its_imports_once_per_stream() {
        let s = schemas();
        // google/api/annotations.proto imports http.proto and descriptor.proto.
        let file = s.file_by_name("google/api/annotations.proto").unwrap();
        let mut sent = HashSet::new();
        let names = |encoded: Vec<Vec<u8>>| -> Vec<String> {
            encoded
                .iter()
                .map(|b| {
                    <prost_types::FileDescriptorProto as prost::Message>::decode(b.as_slice())
                        .unwrap()
                        .name()
                        .to_owned()
                })
                .collect()
        };
        let first = names(with_imports(file.clone(), &mut sent));
        assert_eq!(first[0], "google/api/annotations.proto");
        let mut imports = first[1..].to_vec();
        imports.sort();
        assert_eq!(
            imports,
            ["google/api/http.proto", "google/protobuf/descriptor.proto"]
        );
        // Asked again on the same stream: the file itself, not its imports.
        assert_eq!(names(with_imports(file, &mut sent)), first[..1]);
    }

    #[test]
    fn extensions_of_a_type_are_listed_and_found() {
        let s = schemas();
        let numbers = s
            .extension_numbers("google.protobuf.MethodOptions")
            .unwrap();
        // google.api.http is extension 72295728 of MethodOptions.
        assert!(numbers.contains(&72295728), "{numbers:?}");
        let file = s
            .file_of_extension("google.protobuf.MethodOptions", 72295728)
            .unwrap();
        assert_eq!(file.name(), "google/api/annotations.proto");
        assert!(s
            .file_of_extension("google.protobuf.MethodOptions", 1)
            .is_err());
    }
}
