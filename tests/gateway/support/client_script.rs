//! Runs a client program written with a protocol's official SDK (a Python
//! or Node script) and collects what it printed.

use std::path::Path;

/// `Some(found)` when nothing is `missing`; otherwise a skip said on
/// stderr (`kind`: "node test"; `how`: how to set it up), or a failure
/// when the environment variable `required` is set, as CI sets it.
pub fn found_or_skip<T>(
    found: T,
    missing: Option<String>,
    kind: &str,
    required: &str,
    how: &str,
) -> Option<T> {
    match missing {
        None => Some(found),
        Some(why) if std::env::var_os(required).is_some() => {
            panic!("{kind} cannot run: {why}")
        }
        Some(why) => {
            // Past the test harness's capture, so a skip shows in `cargo test`.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "SKIPPED {kind}: {why}; {how}");
            None
        }
    }
}

pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

/// `interpreter script args...`, with `stdin` as its input, bounded in time.
pub async fn run(interpreter: &Path, script: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(interpreter)
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", interpreter.display()));
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(300),
        child.wait_with_output(),
    )
    .await
    .expect("the script ends in time")
    .unwrap();
    Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
