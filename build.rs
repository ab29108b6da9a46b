//! Generates the tonic code of the demo backends (`examples/backends/`) and
//! of Envoy's external authorization contract (`policy::ext_authz`) from
//! `proto/`, compiled in-process by protox, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "portico/demo/v1/library.proto",
        "portico/demo/v1/feed.proto",
        "portico/demo/v1/chat.proto",
        "portico/demo/v1/probe.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
        "google/api/http.proto",
    ];
    let mut compiler = protox::Compiler::new(["proto"])?;
    // Source info kept: the comments reach the gateway over reflection and
    // become the demo's API descriptions.
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(files)?;
    // The demo backends serve gRPC reflection from this set; it is written
    // from protox's own encoding because prost_types would drop the
    // google.api.http options.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("demo_descriptor_set.binpb"),
        compiler.encode_file_descriptor_set(),
    )?;
    compiler.open_files(["envoy/service/auth/v3/external_auth.proto"])?;
    let fds = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
