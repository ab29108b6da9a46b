//! A reload that fails changes nothing, whatever triggered it: the real
//! binary keeps serving its config and reports the failure in its log (file,
//! key or line, and reason), in `portico_config_reloads_total{result="error"}`
//! and in the admin port's `GET /config`.

use crate::support;

use http::{Method, StatusCode};
use portico::demo::backends::Backends;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::HttpClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug, Clone, Copy)]
enum Trigger {
    Sighup,
    AdminPost,
    FileChange,
}

#[derive(Debug, Clone, Copy)]
enum Bad {
    TomlSyntax,
    UnknownUpstream,
    MissingKeyFile,
    ProtoDoesNotCompile,
    MethodNotInProto,
}

struct Setup {
    dir: PathBuf,
    port: u16,
    admin: u16,
    backend: SocketAddr,
    watch: bool,
}

impl Setup {
    fn good(&self) -> String {
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\nwatch_files = {}\n\n\
             [descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"portico/demo/v1/probe.proto\"]\n\n\
             [upstreams.demo]\nendpoints = [\"{}\"]\n\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\n",
            self.port,
            self.admin,
            self.watch,
            support::proto_dir(),
            self.backend
        )
    }

    /// `config` with one more `.proto` to compile, `name` holding `text`,
    /// in a folder of its own beside the demo's.
    fn with_proto(&self, config: &str, name: &str, text: &str) -> String {
        let protos = self.dir.join("protos");
        std::fs::create_dir_all(&protos).unwrap();
        std::fs::write(protos.join(name), text).unwrap();
        let paths = format!("proto_paths = [\"{}\"]", support::proto_dir());
        config
            .replace(
                &paths,
                &format!(
                    "proto_paths = [\"{}\", \"{}\"]",
                    support::proto_dir(),
                    protos.display()
                ),
            )
            .replace(
                "protos = [\"portico/demo/v1/probe.proto\"]",
                &format!("protos = [\"portico/demo/v1/probe.proto\", \"{name}\"]"),
            )
    }

    /// A broken variant of the good config, and what its error must name.
    fn bad(&self, bad: Bad) -> (String, &'static [&'static str]) {
        let good = self.good();
        match bad {
            Bad::TomlSyntax => (
                good.replace("[upstreams.demo]", "[upstreams.demo"),
                &["portico.toml", "line 10"],
            ),
            Bad::UnknownUpstream => (
                good.replace("upstream = \"demo\"", "upstream = \"nowhere\""),
                &["portico.toml", "routes[0].upstream", "nowhere"],
            ),
            Bad::MissingKeyFile => (
                good.replace("upstream = \"demo\"\n", "upstream = \"demo\"\nauth = \"users\"\n")
                    + "\n[authenticators.users]\nalgorithm = \"RS256\"\npublic_key_file = \"missing.pem\"\n",
                &["portico.toml", "authenticators.users.public_key_file", "missing.pem"],
            ),
            Bad::ProtoDoesNotCompile => (
                self.with_proto(&good, "broken.proto", "syntax = \"proto3\";\nmessage {\n"),
                &["broken.proto"],
            ),
            // As after an edit of the .proto that dropped a routed method:
            // the error names the config key and the file that lacks it.
            Bad::MethodNotInProto => (
                self.with_proto(
                    &good,
                    "shop.proto",
                    "syntax = \"proto3\";\npackage shop;\nmessage M {}\n\
                     service Shop { rpc Kept(M) returns (M); }\n",
                ) + "\n[[routes]]\ngrpc_service = \"shop.Shop\"\nupstream = \"demo\"\nmethods = [\"Kept\", \"Dropped\"]\n",
                &["routes[1].methods[1]", "shop.Shop has no method Dropped", "shop.proto"],
            ),
        }
    }
}

fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

struct Running {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    client: HttpClient,
    admin: HttpClient,
}

async fn serve(config: &Path, setup: &Setup) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let client = HttpClient::new(format!("127.0.0.1:{}", setup.port).parse().unwrap());
    let admin = HttpClient::new(format!("127.0.0.1:{}", setup.admin).parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(admin.addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "portico did not start: {:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running {
        child,
        log,
        client,
        admin,
    }
}

fn reload_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("portico_config_reloads_total{result=\"error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn errors_so_far(r: &Running) -> u64 {
    reload_errors(&r.admin.get("/metrics").await.text())
}

async fn config_view(r: &Running) -> Value {
    r.admin.get("/config").await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_changes_nothing_and_says_why_through_every_trigger() {
    let (backend, _) = Backends::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for trigger in [Trigger::Sighup, Trigger::AdminPost, Trigger::FileChange] {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "portico-reload-errors-{}-{trigger:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let setup = Setup {
            dir: dir.clone(),
            port: free_port(),
            admin: free_port(),
            backend,
            watch: matches!(trigger, Trigger::FileChange),
        };
        let path = dir.join("portico.toml");
        replace(&path, &setup.good());
        let mut running = serve(&path, &setup).await;
        let digest = config_view(&running).await["digest"].clone();
        assert!(digest.is_string());

        for bad in [
            Bad::TomlSyntax,
            Bad::UnknownUpstream,
            Bad::MissingKeyFile,
            Bad::ProtoDoesNotCompile,
            Bad::MethodNotInProto,
        ] {
            let before = errors_so_far(&running).await;
            let logged_before = running.log.lock().unwrap().len();
            let (text, names) = setup.bad(bad);
            replace(&path, &text);
            match trigger {
                Trigger::Sighup => {
                    let pid = running.child.id().unwrap().to_string();
                    assert!(std::process::Command::new("kill")
                        .args(["-HUP", &pid])
                        .status()
                        .unwrap()
                        .success());
                }
                Trigger::AdminPost => {
                    let r = running
                        .admin
                        .send(Method::POST, "/config/reload", &[], "")
                        .await;
                    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
                    let body = r.json();
                    assert_eq!(body["result"], "error");
                    let errors = body["errors"].to_string();
                    for name in names {
                        assert!(errors.contains(name), "{bad:?}: {name} not in {errors}");
                    }
                }
                Trigger::FileChange => {}
            }
            // Counted once (SIGHUP within 2 s, a file change within 5 s).
            let deadline = Instant::now() + Duration::from_secs(5);
            while errors_so_far(&running).await == before {
                assert!(
                    Instant::now() < deadline,
                    "{trigger:?} {bad:?}: no failed reload counted"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let view = config_view(&running).await;
            assert_eq!(
                view["digest"], digest,
                "{trigger:?} {bad:?}: the generation changed"
            );
            let last_error = view["last_error"].as_str().unwrap_or_default().to_owned();
            for name in names {
                assert!(
                    last_error.contains(name),
                    "{trigger:?} {bad:?}: {name} not in {last_error}"
                );
            }
            // The log is read from the process's stderr, which may lag the
            // admin answer on a loaded machine.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let logged: Vec<String> = running.log.lock().unwrap()[logged_before..].to_vec();
                if logged
                    .iter()
                    .any(|l| l.contains("reload failed") && names.iter().all(|n| l.contains(n)))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{trigger:?} {bad:?}: no log line naming {names:?} in {logged:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Still serving the config it had.
            assert_eq!(
                running.client.get("/v1/probe/headers").await.status,
                StatusCode::OK
            );
            replace(&path, &setup.good());
        }
        running.child.kill().await.ok();
        std::fs::remove_dir_all(&dir).ok();
    }
}
