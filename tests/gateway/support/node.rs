//! Node clients written with the protocols' official SDKs (connect-es),
//! from the packages `.ci/run` installs in `tests/node` with `npm ci`.

use std::path::{Path, PathBuf};

pub use super::client_script::Run;

/// The scripts folder.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// The oldest Node the packages take (connect-node's `engines`).
const OLDEST_NODE: u32 = 20;

/// Node with `packages` installed, or `None` (with a note) when it is not
/// set up here. CI sets PORTICO_REQUIRE_NODE, so there a missing one fails
/// the test instead of skipping it.
pub fn available(packages: &[&str]) -> Option<PathBuf> {
    let node = std::env::var_os("PORTICO_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"));
    let missing = match std::process::Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let major = version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            if major.is_none_or(|m| m < OLDEST_NODE) {
                Some(format!("node {version} is older than {OLDEST_NODE}"))
            } else {
                packages
                    .iter()
                    .find(|p| !scripts().join("node_modules").join(p).is_dir())
                    .map(|p| format!("no package {p} in tests/node/node_modules"))
            }
        }
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Some(format!("no {}: {e}", node.display())),
    };
    super::client_script::found_or_skip(
        node,
        missing,
        "node test",
        "PORTICO_REQUIRE_NODE",
        "(cd tests/node && npm ci) (.ci/run does)",
    )
}

/// Runs a script of the folder, bounded in time.
pub async fn run(node: &Path, script: &str, args: &[&str]) -> Run {
    super::client_script::run(node, &scripts().join(script), args, None).await
}
