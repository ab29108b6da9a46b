//! The demo backends alone, for trying Portico's sample configs:
//!
//! ```text
//! cargo run --example demo_backend            # serves 127.0.0.1:50051
//! cargo run -- serve --config examples/library.toml
//! ```

use portico::demo::backends::Backends;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    if addr == "-h" || addr == "--help" {
        println!(
            "demo_backend [ADDRESS]: the demo's gRPC services (Library, Feed, Chat, Probe, \
             with reflection and health) on ADDRESS, default 127.0.0.1:50051."
        );
        return Ok(());
    }
    let addr = addr.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
    })?;
    let (bound, task) = Backends::default().bind(addr).await?;
    println!("demo backends (Library, Feed, Chat, Probe, reflection) on {bound}");
    let _ = task.await;
    Ok(())
}
