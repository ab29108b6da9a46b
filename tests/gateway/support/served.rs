//! `portico serve` as a real process on its own ports, for tests that need
//! what only a process has: its own memory and file descriptors to watch,
//! or several instances side by side.

use super::redis::free_port;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub struct Served {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Served {
    /// Writes `config` (whose `listen` and `admin` are `127.0.0.1:0`) with
    /// free ports filled in, starts `portico serve` on it with `RUST_LOG`
    /// at `log`, and waits until both ports answer.
    pub async fn start(config: &str, log: &str) -> Served {
        Served::start_with_env(config, log, &[]).await
    }

    /// As [`Served::start`], with these environment variables set too.
    pub async fn start_with_env(config: &str, log: &str, env: &[(&str, &str)]) -> Served {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "portico-served-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = config
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{addr}\""),
                1,
            )
            .replacen(
                "admin = \"127.0.0.1:0\"",
                &format!("admin = \"{admin}\""),
                1,
            );
        let path = dir.join("portico.toml");
        std::fs::write(&path, text).unwrap();
        let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", log)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("portico starts");
        let served = Served {
            child,
            addr,
            admin,
            dir,
        };
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(served.admin).await.is_ok()
                && tokio::net::TcpStream::connect(served.addr).await.is_ok()
            {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("portico serve did not come up on {addr}");
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// The config file it serves (its ports filled in).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("portico.toml")
    }

    /// Sends the process a signal (`HUP`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -s {name}");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Resident memory, in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Open file descriptors (Linux).
    pub fn open_fds(&self) -> usize {
        let pid = self.child.id().expect("running");
        std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
    }
}
