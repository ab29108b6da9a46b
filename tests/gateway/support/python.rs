//! Python clients written with the protocols' official SDKs and tools (the
//! MCP SDK, schemathesis, an OpenAPI validator), from the virtualenv that
//! `.ci/run` builds from `tests/python/requirements.txt`.

use std::path::{Path, PathBuf};

/// The scripts folder.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python")
}

/// The interpreter with `modules` importable, or `None` (with a note) when
/// it is not set up here. CI sets PORTICO_REQUIRE_PYTHON, so there a
/// missing one fails the test instead of skipping it.
pub fn available(modules: &[&str]) -> Option<PathBuf> {
    let python = std::env::var_os("PORTICO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| scripts().join(".venv/bin/python"));
    let probe = std::process::Command::new(&python)
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .output();
    let missing = match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => Some(format!("no interpreter at {}: {e}", python.display())),
    };
    super::client_script::found_or_skip(
        python,
        missing,
        "python test",
        "PORTICO_REQUIRE_PYTHON",
        "python3 -m venv tests/python/.venv && tests/python/.venv/bin/pip install -r tests/python/requirements.txt (.ci/run does)",
    )
}

pub use super::client_script::Run;

/// Runs a script of the folder, bounded in time.
pub async fn run(python: &Path, script: &str, args: &[&str], stdin: Option<&[u8]>) -> Run {
    super::client_script::run(python, &scripts().join(script), args, stdin).await
}
