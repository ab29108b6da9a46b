//! The schema files the gateway needs whatever the user ships: the
//! google.api HTTP annotations and HttpBody, and google.rpc Code, Status
//! and error details. Their sources are embedded for `.proto` files that import them,
//! and their compiled set for every schema pool.

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
        "google/rpc/code.proto",
        include_str!("../../proto/google/rpc/code.proto"),
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

/// The built-in files and the well-known types a JSON body may name in an
/// `Any`, compiled: `builtin.binpb`, kept equal to what protox makes of the
/// sources above by a unit test (which rewrites it when run with
/// `PORTICO_BLESS=1`). Decoding it at startup and on every reload costs a
/// fraction of compiling the sources, and keeps the compiler's code out of
/// memory unless a config names `.proto` files.
pub const SET: &[u8] = include_bytes!("builtin.binpb");

/// A pool holding the built-in files and protobuf's well-known types.
/// Decoded once; each caller gets its own copy to add to (pools copy on
/// write).
pub fn pool() -> DescriptorPool {
    static POOL: std::sync::LazyLock<DescriptorPool> = std::sync::LazyLock::new(|| {
        DescriptorPool::decode(SET)
            .expect("the built-in descriptor set decodes; covered by a unit test")
    });
    POOL.clone()
}

/// What [`SET`] holds, compiled from the sources: the built-in files and
/// the well-known types with everything they import.
#[cfg(test)]
pub fn compile() -> Vec<u8> {
    let mut chain = protox::file::ChainFileResolver::new();
    chain.add(Resolver);
    chain.add(protox::file::GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    for (name, _) in FILES {
        compiler
            .open_file(name)
            .expect("built-in schema files compile");
    }
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
    compiler.encode_file_descriptor_set()
}
