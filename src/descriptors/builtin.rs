//! The schema files the gateway needs whatever the user ships: the
//! google.api HTTP annotations and HttpBody, and google.rpc Status and error
//! details. They are embedded in the binary and compiled at startup.

use prost_reflect::DescriptorPool;

pub const FILES: &[(&str, &str)] = &[
    (
        "google/api/http.proto",
        include_str!("../../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../../proto/google/api/annotations.proto"),
    ),
    (
        "google/api/httpbody.proto",
        include_str!("../../proto/google/api/httpbody.proto"),
    ),
    (
        "google/rpc/status.proto",
        include_str!("../../proto/google/rpc/status.proto"),
    ),
    (
        "google/rpc/error_details.proto",
        include_str!("../../proto/google/rpc/error_details.proto"),
    ),
];

/// Serves the embedded files to protox.
pub struct Resolver;

impl protox::file::FileResolver for Resolver {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match FILES.iter().find(|(n, _)| *n == name) {
            Some((n, source)) => protox::file::File::from_source(n, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A pool holding the built-in files and protobuf's well-known types.
pub fn pool() -> DescriptorPool {
    let mut chain = protox::file::ChainFileResolver::new();
    chain.add(Resolver);
    chain.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    for (name, _) in FILES {
        compiler
            .open_file(name)
            .expect("built-in schema files compile; covered by a unit test");
    }
    // The well-known types a JSON body may name in an Any.
    for wkt in [
        "google/protobuf/empty.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/duration.proto",
        "google/protobuf/field_mask.proto",
        "google/protobuf/struct.proto",
        "google/protobuf/wrappers.proto",
    ] {
        compiler
            .open_file(wkt)
            .expect("protox ships the well-known types");
    }
    compiler.descriptor_pool()
}
