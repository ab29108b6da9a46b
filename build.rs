//! Generates the tonic code of the demo backends (`examples/backends/`) and
//! of Envoy's external authorization contract (`policy::ext_authz`) from
//! `proto/`, compiled in-process by protox, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    text_order();
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

/// Optimized builds of the gateway lay out their code with the functions a
/// running gateway executes (`link/text-order.txt`, written by
/// `bench/text_order.sh`) side by side at the front. The kernel maps a
/// binary's code in 64 KiB windows around each page first run, so with the
/// default layout, which scatters those functions over all of `.text`,
/// nearly the whole of it ends up resident; packed, a few megabytes less
/// are. The option is LLD's (the linker Rust uses by default on x86-64
/// Linux since 1.90), so it is given only when a trial link with it
/// succeeds, with the same compiler, target, flags and linker as the build;
/// `PORTICO_NO_TEXT_ORDER=1` turns it off.
fn text_order() {
    println!("cargo:rerun-if-env-changed=PORTICO_NO_TEXT_ORDER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("link/text-order.txt");
    let order = order.display().to_string();
    // The whole path, as the link argument holds it: a checkout moved or
    // a target directory shared with another checkout then reruns this
    // script once that path is gone, instead of linking with a file that
    // is no longer there.
    println!("cargo:rerun-if-changed={order}");
    // A comma would split the linker argument.
    if var("PROFILE") != "release"
        || !var("PORTICO_NO_TEXT_ORDER").is_empty()
        || order.contains(',')
        || !std::path::Path::new(&order).exists()
    {
        return;
    }
    // Names that a build no longer has (another compiler or dependency
    // version) are skipped: the layout degrades, the build does not fail.
    let arg = format!("-Wl,--symbol-ordering-file={order},--no-warn-symbol-ordering");
    if links_with(&arg) {
        println!("cargo:rustc-link-arg-bin=portico={arg}");
    }
}

/// Whether an empty program links with `arg` as the gateway would: the same
/// rustc, target, `RUSTFLAGS` and linker (a linker set in a Cargo config
/// reaches build scripts as `RUSTC_LINKER`; changing it there does not
/// rerun this check, `cargo clean -p portico` does).
fn links_with(arg: &str) -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let dir = std::path::PathBuf::from(var("OUT_DIR")).join("link-probe");
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join("probe.rs"), "fn main() {}\n").is_err()
    {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let mut probe = std::process::Command::new(rustc);
    probe
        .current_dir(&dir)
        .args(["--edition", "2021", "--crate-type", "bin", "-o", "probe"])
        .args(["--target", &var("TARGET")])
        .arg(format!("-Clink-arg={arg}"))
        .args(
            var("CARGO_ENCODED_RUSTFLAGS")
                .split('\x1f')
                .filter(|f| !f.is_empty()),
        );
    let linker = var("RUSTC_LINKER");
    if !linker.is_empty() {
        probe.arg(format!("-Clinker={linker}"));
    }
    probe
        .arg("probe.rs")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
