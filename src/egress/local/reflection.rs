//! gRPC server reflection (`grpc.reflection.v1` and `v1alpha`) over the
//! gateway's schemas, answered as the protocol describes: a lookup that
//! finds nothing is an `error_response` on the stream, which goes on; a
//! file comes with the files it imports that this stream has not sent yet,
//! so a client needs one request per symbol; extensions are looked up.

use prost_reflect::{DescriptorPool, ExtensionDescriptor, FileDescriptor, MessageDescriptor};
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
    /// The files of the routed pool reflection describes: the built-in
    /// ones, those declaring a routed service, and every file they import,
    /// at any depth. The rest of a backend's schemas (a file of services
    /// the config leaves unrouted, and what only such files hold) is not
    /// the gateway's to show.
    visible: HashSet<String>,
}

/// A lookup's failure, as an `error_response` carries it.
type Miss = (Code, String);

impl Schemas {
    /// The routed `services` of `routed`, and the gateway's own services.
    pub fn new(routed: DescriptorPool, mut services: Vec<String>) -> Schemas {
        // The files the gateway holds compiled (google/api, google/rpc,
        // protobuf's well-known types) say nothing of a backend, and a
        // client needs them for what the gateway itself sends (the
        // google.rpc details of its errors, packed in an Any).
        let mut visible: HashSet<String> = crate::descriptors::builtin::pool()
            .files()
            .map(|f| f.name().to_owned())
            .collect();
        let mut next: Vec<FileDescriptor> = services
            .iter()
            .filter_map(|s| routed.get_service_by_name(s))
            .map(|s| s.parent_file())
            .collect();
        while let Some(file) = next.pop() {
            if visible.insert(file.name().to_owned()) {
                next.extend(file.dependencies());
            }
        }
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
            visible,
        }
    }

    /// The first of the pools' answers that reflection may show: any of
    /// the gateway's own, a routed one only from a visible file.
    fn shown<T>(
        &self,
        find: impl Fn(&DescriptorPool) -> Option<T>,
        file: impl Fn(&T) -> FileDescriptor,
    ) -> Option<T> {
        let [own, routed] = &self.pools;
        find(own).or_else(|| find(routed).filter(|t| self.visible.contains(file(t).name())))
    }

    fn file_by_name(&self, name: &str) -> Result<FileDescriptor, Miss> {
        self.shown(|p| p.get_file_by_name(name), FileDescriptor::clone)
            .ok_or_else(|| (Code::NotFound, format!("no file named {name:?}")))
    }

    /// The file declaring `symbol`: a service, a method
    /// (`pkg.Service.Method`), a message, an enum, an enum value (named
    /// beside its enum, `pkg.VALUE`), a field, a oneof or an extension.
    fn file_of_symbol(&self, symbol: &str) -> Result<FileDescriptor, Miss> {
        let symbol = symbol.trim_start_matches('.');
        self.shown(|pool| declaring_file(pool, symbol), FileDescriptor::clone)
            .ok_or_else(|| (Code::NotFound, format!("no symbol named {symbol:?}")))
    }

    fn message(&self, name: &str) -> Result<MessageDescriptor, Miss> {
        let name = name.trim_start_matches('.');
        self.shown(|p| p.get_message_by_name(name), |m| m.parent_file())
            .ok_or_else(|| (Code::NotFound, format!("no message type named {name:?}")))
    }

    fn file_of_extension(&self, extended: &str, number: i32) -> Result<FileDescriptor, Miss> {
        self.extensions(extended)?
            .into_iter()
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
            .extensions(extended)?
            .iter()
            .map(|e| e.number() as i32)
            .collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// The extensions of `extended` that reflection may show.
    fn extensions(&self, extended: &str) -> Result<Vec<ExtensionDescriptor>, Miss> {
        let message = self.message(extended)?;
        let own = self.pools[0]
            .get_message_by_name(message.full_name())
            .is_some();
        Ok(message
            .extensions()
            .filter(|e| own || self.visible.contains(e.parent_file().name()))
            .collect())
    }
}

/// The file of `pool` declaring `symbol` (see [`Schemas::file_of_symbol`]).
fn declaring_file(pool: &DescriptorPool, symbol: &str) -> Option<FileDescriptor> {
    if let Some(s) = pool.get_service_by_name(symbol) {
        return Some(s.parent_file());
    }
    if let Some(m) = pool.get_message_by_name(symbol) {
        return Some(m.parent_file());
    }
    if let Some(e) = pool.get_enum_by_name(symbol) {
        return Some(e.parent_file());
    }
    if let Some(e) = pool.get_extension_by_name(symbol) {
        return Some(e.parent_file());
    }
    if let Some((parent, member)) = symbol.rsplit_once('.') {
        if let Some(s) = pool.get_service_by_name(parent) {
            if s.methods().any(|m| m.name() == member) {
                return Some(s.parent_file());
            }
        }
        if let Some(m) = pool.get_message_by_name(parent) {
            if m.get_field_by_name(member).is_some() || m.oneofs().any(|o| o.name() == member) {
                return Some(m.parent_file());
            }
        }
    }
    // Rare enough to look through every enum for.
    pool.all_enums()
        .find(|e| e.values().any(|v| v.full_name() == symbol))
        .map(|e| e.parent_file())
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

    /// A routed service whose file imports `google/api/annotations.proto`,
    /// beside a service the config leaves unrouted.
    fn schemas() -> Schemas {
        let dir = crate::scratch::ScratchDir::new("reflection");
        std::fs::write(
            dir.join("routed.proto"),
            "syntax = \"proto3\";\npackage routed;\nimport \"google/api/annotations.proto\";\nmessage Ping {}\nservice Routed {\n  rpc Call(Ping) returns (Ping) { option (google.api.http) = { get: \"/v1/ping\" }; }\n}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("hidden.proto"),
            "syntax = \"proto3\";\npackage hidden;\nimport \"google/protobuf/descriptor.proto\";\nmessage Secret { string code = 1; }\nenum Level { LEVEL_UNSET = 0; LEVEL_TOP = 1; }\nservice Unrouted { rpc Get(Secret) returns (Secret); }\nextend google.protobuf.MethodOptions { string audit = 50001; }\n",
        )
        .unwrap();
        let set = crate::descriptors::compile_protos(
            &[&dir],
            &["routed.proto".to_owned(), "hidden.proto".to_owned()],
        )
        .map_err(|(_, e)| e.to_string())
        .unwrap();
        // As the gateway loads schemas: onto the built-in files.
        let mut pool = crate::descriptors::builtin::pool();
        crate::descriptors::add_set(&mut pool, &set, "test").unwrap();
        Schemas::new(pool, vec!["routed.Routed".into()])
    }

    #[test]
    fn what_only_an_unrouted_service_declares_is_not_described() {
        let s = schemas();
        assert_eq!(
            s.file_of_symbol("routed.Routed").unwrap().name(),
            "routed.proto"
        );
        for symbol in [
            "hidden.Unrouted",
            "hidden.Unrouted.Get",
            "hidden.Secret",
            "hidden.Secret.code",
            "hidden.Level",
            "hidden.LEVEL_TOP",
            "hidden.audit",
        ] {
            let (code, _) = s.file_of_symbol(symbol).unwrap_err();
            assert_eq!(code, Code::NotFound, "{symbol}");
        }
        assert!(s.file_by_name("hidden.proto").is_err());
        assert!(s.message("hidden.Secret").is_err());
        let numbers = s
            .extension_numbers("google.protobuf.MethodOptions")
            .unwrap();
        assert!(!numbers.contains(&50001), "{numbers:?}");
        assert!(s
            .file_of_extension("google.protobuf.MethodOptions", 50001)
            .is_err());
        assert!(!s.services.iter().any(|n| n.starts_with("hidden.")));
        // What the gateway's own errors carry, whatever is routed.
        assert_eq!(
            s.file_of_symbol("google.rpc.BadRequest").unwrap().name(),
            "google/rpc/error_details.proto"
        );
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
