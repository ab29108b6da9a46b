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
/// are. Only where the linker is the LLD that Rust uses by default on
/// x86-64 Linux since 1.90 (the flag is LLD's); a linker of one's own
/// (`-C linker`, a linker variable) or `PORTICO_NO_TEXT_ORDER=1` builds
/// without it.
fn text_order() {
    println!("cargo:rerun-if-changed=link/text-order.txt");
    for name in [
        "PORTICO_NO_TEXT_ORDER",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={name}");
    }
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let optimized = var("PROFILE") == "release";
    let lld_target = var("TARGET") == "x86_64-unknown-linux-gnu";
    let own_linker = !var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        || var("CARGO_ENCODED_RUSTFLAGS").contains("link");
    if !optimized || !lld_target || own_linker || !var("PORTICO_NO_TEXT_ORDER").is_empty() {
        return;
    }
    if !rustc_links_with_lld() {
        return;
    }
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("link/text-order.txt");
    if order.exists() {
        // Names that a build no longer has (another compiler or dependency
        // version) are skipped: the layout degrades, the build does not fail.
        println!(
            "cargo:rustc-link-arg-bin=portico=-Wl,--symbol-ordering-file={},--no-warn-symbol-ordering",
            order.display()
        );
    }
}

/// Whether rustc is 1.90 or later, whose default linker on x86-64 Linux is
/// its own LLD.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = std::process::Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
