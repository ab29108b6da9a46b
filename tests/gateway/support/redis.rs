//! Real Redis servers for fleet tests: `redis-server` processes on free
//! ports of 127.0.0.1, standalone or as a three-node cluster, that a test
//! can kill and start again on the same port. Without `redis-server` on
//! the PATH the tests skip, saying so, unless `PORTICO_REQUIRE_REDIS` is
//! set (as `.ci/run` does), when they fail.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Whether the Redis tests can run here; prints why not when they cannot.
pub fn available(test: &str) -> bool {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var_os("PORTICO_REQUIRE_REDIS").is_some() {
            panic!("{test}: redis-server is not on the PATH and PORTICO_REQUIRE_REDIS is set");
        }
        // Written to stderr directly, past the test harness's capture, so
        // a skip shows in a plain `cargo test`.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: redis-server is not installed (apt install redis-server)"
        );
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
    /// Serves TLS only (the fixture certificate for 127.0.0.1).
    tls: bool,
}

impl RedisServer {
    /// A standalone server; `args` are extra `redis-server` options
    /// (`--requirepass secret`).
    pub async fn start(args: &[&str]) -> RedisServer {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "portico-redis-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            args: args.iter().map(|s| s.to_string()).collect(),
            dir,
            tls: false,
        };
        server.spawn().await;
        server
    }

    /// A server speaking only TLS, with `tests/fixtures/tls/server.pem`
    /// (signed by `tests/fixtures/tls/ca.pem`).
    pub async fn start_tls() -> RedisServer {
        let mut server = RedisServer::start(&[]).await;
        server.kill().await;
        server.tls = true;
        let f = super::fixture;
        server.args = vec![
            "--tls-cert-file".into(),
            f("tls/server.pem"),
            "--tls-key-file".into(),
            f("tls/server.key"),
            "--tls-ca-cert-file".into(),
            f("tls/ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let (plain, tls) = if self.tls {
            ("0".to_owned(), self.port.to_string())
        } else {
            (self.port.to_string(), "0".to_owned())
        };
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(plain)
            .arg("--tls-port")
            .arg(tls)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..200 {
            let up = if self.tls {
                tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            } else {
                ping(self.port).await
            };
            if up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on {} did not answer", self.port);
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: gone at once, with everything it held.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGSTOP (`true`) or SIGCONT: a Redis that holds its connections
    /// and answers nothing, then carries on.
    pub fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts again on the same port (empty: nothing is saved).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Runs `redis-cli` against this server.
    pub async fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether something answers RESP on `port` (a PONG, or an auth error).
async fn ping(port: u16) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf).await, Ok(n) if n > 0)
}

/// A three-node Redis Cluster (masters only), slots assigned.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cli(nodes[0].port, &args).await;
        assert!(
            out.contains("All 16384 slots covered"),
            "cluster create: {out}"
        );
        let cluster = RedisCluster { nodes };
        for _ in 0..200 {
            let mut ok = true;
            for n in &cluster.nodes {
                ok &= n
                    .cli(&["cluster", "info"])
                    .await
                    .contains("cluster_state:ok");
            }
            if ok {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the cluster did not reach cluster_state:ok");
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node id and port serving `slot`.
    pub async fn owner(&self, slot: u16) -> (String, u16) {
        let nodes = self.nodes[0].cli(&["cluster", "nodes"]).await;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port: u16 = fields[1]
                .split(['@', ':'])
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            for range in &fields[8..] {
                let (lo, hi) = match range.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap_or(1), b.parse().unwrap_or(0)),
                    None => (range.parse().unwrap_or(1), range.parse().unwrap_or(0)),
                };
                if (lo..=hi).contains(&slot) {
                    return (fields[0].to_owned(), port);
                }
            }
        }
        panic!("no node serves slot {slot}: {nodes}");
    }

    pub async fn node_id(&self, port: u16) -> String {
        cli(port, &["cluster", "myid"]).await.trim().to_owned()
    }

    /// Moves `slot` (and its keys) from its owner to another node, as
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE,
    /// then the new owner announced to every node.
    pub async fn move_slot(&self, slot: u16) {
        let (from_id, from_port) = self.owner(slot).await;
        let to = self.nodes.iter().find(|n| n.port != from_port).unwrap();
        let to_id = self.node_id(to.port).await;
        let s = slot.to_string();
        to.cli(&["cluster", "setslot", &s, "importing", &from_id])
            .await;
        cli(from_port, &["cluster", "setslot", &s, "migrating", &to_id]).await;
        for attempt in 0.. {
            assert!(attempt < 50, "the keys of slot {slot} would not migrate");
            let keys = cli(from_port, &["cluster", "getkeysinslot", &s, "100"]).await;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.port.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "keys"];
            args.extend(keys.iter().copied());
            cli(from_port, &args).await;
        }
        for n in &self.nodes {
            n.cli(&["cluster", "setslot", &s, "node", &to_id]).await;
        }
    }
}
