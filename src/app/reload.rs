//! The live gateway: the generation being served behind an atomic pointer,
//! and the one way to replace it. A reload reads the config file again,
//! loads and checks it exactly as `portico check` does, builds a new
//! generation (taking over the running state where definitions are
//! unchanged) and swaps it in. Requests and streams already running keep
//! the generation they started with; a failed reload changes nothing.
//!
//! Triggers: SIGHUP, a change to the config file or any file it names
//! (watched through their folders, so atomic renames and ConfigMap symlink
//! swaps are seen; debounced), and `POST /config/reload` on the admin port.

use super::generation::{self, Carry, Generation};
use super::{load_with_stats, StartError};
use crate::config::{Config, ServerConfig};
use crate::egress::upstream::Upstream;
use crate::ingress::dispatch::Ingress;
use crate::observe::metrics::Usage;
use crate::routes::RouteTable;
use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How long file events are gathered before one reload: editors and
/// ConfigMap updates write several files, and each write is several events.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// The gateway's live state: the newest generation and what outlives it.
pub struct Live {
    current: ArcSwap<Generation>,
    pub carry: Carry,
    /// One reload at a time; a trigger during a reload waits for it.
    reloading: tokio::sync::Mutex<()>,
    last_error: Mutex<Option<String>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// The listener's settings as bound at start: what a reload cannot change.
    listener: ServerConfig,
    /// Files named by the last config that failed to load.
    attempted: Mutex<Vec<PathBuf>>,
    /// Bumped after every reload, whatever triggered it.
    reloaded: watch::Sender<u64>,
}

enum Prepared {
    Unchanged(String),
    Next(Box<Generation>),
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// A new generation serves.
    Swapped {
        digest: String,
        /// Settings bound to the listener that only a restart applies.
        needs_restart: Vec<&'static str>,
    },
    /// The config and every file it names are as they were.
    Unchanged {
        digest: String,
        /// As for `Swapped`: repeated until the restart.
        needs_restart: Vec<&'static str>,
    },
    /// Nothing changed; the reasons, each naming file, key and cause.
    Failed { errors: Vec<String> },
}

impl ReloadOutcome {
    /// The admin port's answer: `{"result":"ok","digest":...}` or
    /// `{"result":"error","errors":[...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ReloadOutcome::Swapped {
                digest,
                needs_restart,
            } => serde_json::json!({
                "result": "ok", "changed": true, "digest": digest, "needs_restart": needs_restart
            }),
            ReloadOutcome::Unchanged {
                digest,
                needs_restart,
            } => serde_json::json!({
                "result": "ok", "changed": false, "digest": digest, "needs_restart": needs_restart
            }),
            ReloadOutcome::Failed { errors } => {
                serde_json::json!({"result": "error", "errors": errors})
            }
        }
    }
}

impl Live {
    pub fn new(first: Generation, carry: Carry) -> Arc<Live> {
        carry.websocket.store(Some(first.ingress.websocket.clone()));
        Arc::new(Live {
            listener: first.config.server.clone(),
            attempted: Mutex::new(Vec::new()),
            reloaded: watch::channel(0).0,
            current: ArcSwap::from_pointee(first),
            carry,
            reloading: tokio::sync::Mutex::new(()),
            last_error: Mutex::new(None),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// The generation new requests take.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Reloads the config file the gateway was started from.
    pub async fn reload(self: &Arc<Self>) -> ReloadOutcome {
        // In a task of its own: a caller that gives up (an admin client that
        // disconnects) cannot leave a reload half done.
        let this = self.clone();
        match tokio::spawn(async move { this.reload_now().await }).await {
            Ok(outcome) => outcome,
            Err(e) => ReloadOutcome::Failed {
                errors: vec![format!("the reload failed: {e}")],
            },
        }
    }

    async fn reload_now(self: Arc<Self>) -> ReloadOutcome {
        // Without a file there is nothing to try: the answer says so, and it
        // is not a failed reload (no counter, no `last_error`).
        if self.current().config.path.is_none() {
            tracing::warn!("reload asked for: started from an inline config, there is no file to reload; still serving");
            return ReloadOutcome::Failed {
                errors: vec![
                    "the gateway was started from an inline config: there is no file to reload"
                        .to_owned(),
                ],
            };
        }
        let _one_at_a_time = self.reloading.lock().await;
        let started = std::time::Instant::now();
        // Loading is CPU work (compiling schemas, building thousands of
        // routes): it runs on a blocking thread, not on the threads that
        // serve requests. Tasks it starts still run on the runtime.
        let this = self.clone();
        let runtime = tokio::runtime::Handle::current();
        let prepared = tokio::task::spawn_blocking(move || runtime.block_on(this.prepare())).await;
        let outcome = match prepared {
            Ok(Ok(Prepared::Unchanged(digest))) => {
                let current = self.current();
                // No new generation opens the access log again: this does.
                if let Some(log) = &current.ingress.rest.edge.sinks.log {
                    log.reopen();
                }
                ReloadOutcome::Unchanged {
                    digest,
                    needs_restart: restart_keys(&self.listener, &current.config.server),
                }
            }
            Ok(Ok(Prepared::Next(next))) => {
                let needs_restart = restart_keys(&self.listener, &next.config.server);
                let digest = next.digest.clone();
                self.carry
                    .websocket
                    .store(Some(next.ingress.websocket.clone()));
                self.current.store(Arc::from(next));
                ReloadOutcome::Swapped {
                    digest,
                    needs_restart,
                }
            }
            // An error may quote a URL from the config: never its credentials.
            Ok(Err(e)) => ReloadOutcome::Failed {
                errors: vec![crate::config::redact_text(&e.to_string())],
            },
            Err(e) => ReloadOutcome::Failed {
                errors: vec![format!("the reload failed: {e}")],
            },
        };
        match &outcome {
            ReloadOutcome::Swapped {
                digest,
                needs_restart,
            } => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_error) = None;
                if needs_restart.is_empty() {
                    tracing::info!(%digest, millis = started.elapsed().as_millis() as u64, "config reloaded");
                } else {
                    tracing::warn!(%digest, millis = started.elapsed().as_millis() as u64, needs_restart = ?needs_restart, "config reloaded; these settings changed and take effect only after a restart");
                }
            }
            ReloadOutcome::Unchanged {
                digest,
                needs_restart,
            } => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_error) = None;
                if needs_restart.is_empty() {
                    tracing::info!(%digest, "config reload: nothing changed");
                } else {
                    tracing::warn!(%digest, needs_restart = ?needs_restart, "config reload: nothing changed; these settings changed and take effect only after a restart");
                }
            }
            ReloadOutcome::Failed { errors } => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_error) = Some(errors.join("; "));
                for e in errors {
                    tracing::error!(error = %e, "config reload failed; still serving the previous config");
                }
            }
        }
        if !matches!(outcome, ReloadOutcome::Failed { .. }) {
            lock(&self.attempted).clear();
        }
        // The file watcher follows what the config names now.
        self.reloaded.send_modify(|n| *n += 1);
        outcome
    }

    /// The files a reload should follow: those the serving config names, and
    /// those of a config that failed to load (so fixing one of them, or
    /// creating a missing key file, reloads by itself).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.current().config.files.clone();
        for f in lock(&self.attempted).iter() {
            if !files.contains(f) {
                files.push(f.clone());
            }
        }
        files
    }

    /// Loads and builds the next generation, or finds nothing changed.
    async fn prepare(&self) -> Result<Prepared, StartError> {
        let current = self.current();
        let Some(path) = current.config.path.clone() else {
            return Err(StartError::NoConfigFile);
        };
        // The same path as `portico check`, then the build.
        let config = Config::load(&path)?;
        *lock(&self.attempted) = config.files.clone();
        let loaded = load_with_stats(config, &|p, u| self.carry.stats(p, u)).await?;
        let digest = generation::digest(&loaded.config, &loaded.pool);
        if digest == current.digest {
            // The files are as they were, but the key sets were read again:
            // one the identity provider changed (a key withdrawn) is used
            // from now on by the authenticators serving, so a reload
            // revokes a key at once whatever else it finds; and cached
            // introspection answers are forgotten, as a new generation's.
            for (serving, fresh) in current.authenticators.iter().zip(&loaded.authenticators) {
                serving.refresh_from(fresh).await;
            }
            return Ok(Prepared::Unchanged(digest));
        }
        Ok(Prepared::Next(Box::new(
            generation::build(loaded, &self.carry).await?,
        )))
    }

    /// `(successful, failed)` reloads since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// The admin port's `GET /config`.
    pub fn config_json(&self) -> serde_json::Value {
        let g = self.current();
        let mut json = self.generation_json();
        // An inline config (the demo's) has no file to name.
        json["source"] = match &g.config.path {
            Some(_) => g.config.source.clone().into(),
            None => serde_json::Value::Null,
        };
        json["config"] = g.config.redacted.clone();
        json
    }

    /// Which config is served and how reloading went, without the config.
    pub fn generation_json(&self) -> serde_json::Value {
        let g = self.current();
        let loaded_at = g
            .loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let (ok, failed) = self.reload_counts();
        serde_json::json!({
            "digest": g.digest,
            "loaded_at": loaded_at,
            "last_error": *lock(&self.last_error),
            "reloads_ok": ok,
            "reloads_failed": failed,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The settings bound to the listening sockets, which only a restart
/// applies: compared with what the listener was started with, so they are
/// reported on every reload until then.
fn restart_keys(bound: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let (a, b) = (&bound.limits, &new.limits);
    [
        ("server.listen", bound.listen != new.listen),
        ("server.admin", bound.admin != new.admin),
        (
            "server.drain_timeout",
            bound.drain_timeout != new.drain_timeout,
        ),
        (
            "server.limits.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "server.limits.max_connections_per_ip",
            a.max_connections_per_ip != b.max_connections_per_ip,
        ),
        (
            "server.limits.max_concurrent_streams",
            a.max_concurrent_streams != b.max_concurrent_streams,
        ),
        (
            "server.limits.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        (
            "server.limits.max_header_bytes",
            a.max_header_bytes != b.max_header_bytes,
        ),
        (
            "server.limits.idle_timeout",
            a.idle_timeout != b.idle_timeout,
        ),
        (
            "server.limits.max_header_count",
            a.max_header_count != b.max_header_count,
        ),
        (
            "server.limits.http2_max_pending_resets",
            a.http2_max_pending_resets != b.http2_max_pending_resets,
        ),
        (
            "server.limits.http2_max_error_resets",
            a.http2_max_error_resets != b.http2_max_error_resets,
        ),
        (
            "server.limits.http2_stream_window_bytes",
            a.http2_stream_window_bytes != b.http2_stream_window_bytes,
        ),
        (
            "server.limits.http2_connection_window_bytes",
            a.http2_connection_window_bytes != b.http2_connection_window_bytes,
        ),
        (
            "server.limits.http2_max_send_buffer_bytes",
            a.http2_max_send_buffer_bytes != b.http2_max_send_buffer_bytes,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

impl crate::ingress::server::Serving for Live {
    fn ingress(&self) -> Arc<Ingress> {
        self.current.load().ingress.clone()
    }

    fn tls(&self) -> Option<TlsAcceptor> {
        self.current.load().tls.clone()
    }
}

impl crate::admin::AdminSource for Live {
    fn routes(&self) -> Arc<RouteTable> {
        self.current.load().routes.clone()
    }

    fn upstreams(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.current.load().upstreams.clone()
    }

    fn reachable(&self) -> Vec<Option<bool>> {
        self.current
            .load()
            .reachable
            .iter()
            .map(|r| *r.borrow())
            .collect()
    }

    fn usage(&self) -> Arc<Usage> {
        self.carry.usage.clone()
    }

    fn fleet(&self) -> Option<Arc<crate::fleet::Fleet>> {
        self.current.load().fleet.clone()
    }

    fn config_json(&self) -> serde_json::Value {
        Live::config_json(self)
    }

    fn reload(self: Arc<Self>) -> BoxFuture<'static, serde_json::Value> {
        Box::pin(async move {
            tracing::info!("POST /config/reload: reloading the config");
            Live::reload(&self).await.to_json()
        })
    }

    fn reload_counts(&self) -> (u64, u64) {
        Live::reload_counts(self)
    }

    fn generation_json(&self) -> serde_json::Value {
        Live::generation_json(self)
    }

    fn openapi(&self) -> Arc<crate::openapi::ApiDescription> {
        self.current().api.clone()
    }

    fn route_table_json(&self) -> serde_json::Value {
        let g = self.current();
        let rows: Vec<serde_json::Value> = g
            .routes
            .bindings()
            .iter()
            .map(|b| {
                let policies = g
                    .config
                    .routes
                    .get(b.target.route)
                    .map(|r| g.config.policy_summary(r))
                    .unwrap_or_default();
                serde_json::json!({
                    "verb": b.method.as_str(),
                    "template": b.template_text,
                    "method": b.target.path.as_str().trim_start_matches('/'),
                    "upstream": &*b.target.upstream_name,
                    "policies": policies,
                    "auto": b.auto,
                })
            })
            .collect();
        serde_json::Value::Array(rows)
    }
}

/// Starts the reload triggers (for a gateway started from a file): SIGHUP
/// and file changes. Ends at shutdown.
pub fn spawn_triggers(live: Arc<Live>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    // Registered before this returns, so a SIGHUP right after start reloads
    // rather than ending the process (the signal's default action).
    let mut hangup = hangup_signal();
    if live.current().config.path.is_none() {
        // No file to reload (the demo, an inline config), but a SIGHUP
        // must not end the process either: it is answered with a log line,
        // as `POST /config/reload` is with a 422.
        return tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = recv_hangup(&mut hangup) => {
                        tracing::warn!("SIGHUP: started from an inline config, there is no file to reload; still serving");
                    }
                }
            }
        });
    }
    let follow = |live: &Live, watcher: &mut FileWatch| {
        if live.current().config.server.watch_files {
            watcher.follow(&live.watched_files());
        } else {
            watcher.follow(&[]);
        }
    };
    // Watching starts before this returns, so a change made as soon as the
    // gateway answers is seen.
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher = FileWatch::new(events_tx);
    follow(&live, &mut watcher);
    tokio::spawn(async move {
        let mut reloaded = live.reloaded.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                // Reloaded from elsewhere (the admin port, the API).
                _ = reloaded.changed() => {}
                _ = recv_hangup(&mut hangup) => {
                    tracing::info!("SIGHUP: reloading the config");
                    if !reload_unless_shut_down(&live, &mut shutdown).await {
                        return;
                    }
                }
                Some(()) = events.recv() => {
                    // Gather the rest of a burst of writes into one reload.
                    tokio::time::sleep(DEBOUNCE).await;
                    while events.try_recv().is_ok() {}
                    tracing::info!("a config file changed: reloading the config");
                    if !reload_unless_shut_down(&live, &mut shutdown).await {
                        return;
                    }
                }
            }
            // A reload may name other files: watch what the config names now.
            follow(&live, &mut watcher);
        }
    })
}

/// Reloads, unless a shutdown comes first: then the reload is no longer
/// waited for, as one `POST /config/reload` asked for is not, and the
/// shutdown goes on (a reflection source that never answers holds a
/// reload for its whole timeout). The reload runs in a task of its own, so
/// it is never left half done: it ends with the process. Whether it was
/// waited for to its end.
async fn reload_unless_shut_down(live: &Arc<Live>, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = live.reload() => true,
        _ = shutdown.changed() => {
            tracing::info!("shutting down: not waiting for the config reload under way");
            false
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn recv_hangup(h: &mut Hangup) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) {
    std::future::pending().await
}

/// Watches the folders holding the config's files (a file is replaced by
/// rename, and a ConfigMap swaps a symlink beside it, so the file itself
/// cannot be watched) and reports events that concern those files.
struct FileWatch {
    watcher: Option<notify::RecommendedWatcher>,
    /// The files and folders the config names, shared with the callback.
    wanted: Arc<Mutex<Vec<PathBuf>>>,
    /// Folders watched, and whether with their subfolders.
    watched: BTreeSet<(PathBuf, bool)>,
}

impl FileWatch {
    fn new(events: mpsc::UnboundedSender<()>) -> FileWatch {
        let wanted: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let filter = wanted.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let wanted = lock(&filter);
            if event.paths.iter().any(|p| concerns(p, &wanted)) {
                let _ = events.send(());
            }
        });
        match watcher {
            Ok(w) => FileWatch {
                watcher: Some(w),
                wanted,
                watched: BTreeSet::new(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP or POST /config/reload");
                FileWatch {
                    watcher: None,
                    wanted,
                    watched: BTreeSet::new(),
                }
            }
        }
    }

    /// Watches the folders of `files` (and named folders, recursively),
    /// afresh on every call: a folder replaced by another (a deploy's
    /// `rm -rf` and `mv`) is a new directory, which the old watch does not
    /// see into. A symlinked file is watched where its target lies too,
    /// since an edit there changes it; a folder that does not exist (yet)
    /// is watched through its nearest existing ancestor, which sees it come.
    fn follow(&mut self, files: &[PathBuf]) {
        use notify::Watcher as _;
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let mut wanted = Vec::new();
        for f in files {
            let f = absolute(f);
            if let Some(target) = std::fs::canonicalize(&f).ok().filter(|t| *t != f) {
                wanted.push(target);
            }
            wanted.push(f);
        }
        // A named folder (proto sources) is watched with what is under it; a
        // file's folder only by itself, as it may hold much else.
        let mut folders = BTreeSet::new();
        for f in &wanted {
            if f.is_dir() {
                folders.insert((f.clone(), true));
                // Where a symlink to it would be swapped (`ln -sfn`).
                if let Some(parent) = f.parent() {
                    folders.insert((existing_ancestor(parent), false));
                }
            } else if let Some(parent) = f.parent() {
                folders.insert((existing_ancestor(parent), false));
            }
        }
        *lock(&self.wanted) = wanted;
        // Folders no longer named are let go; every other is watched again
        // without being let go first, so no edit falls between the two.
        // Watching a path again follows it to the directory it now is.
        for (old, recursive) in &self.watched {
            if !folders.contains(&(old.clone(), *recursive)) {
                let _ = watcher.unwatch(old);
            }
        }
        for (folder, recursive) in &folders {
            let mode = if *recursive {
                notify::RecursiveMode::Recursive
            } else {
                notify::RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(folder, mode) {
                tracing::warn!(folder = %folder.display(), error = %e, "cannot watch folder for config changes");
            }
        }
        self.watched = folders;
    }
}

/// `folder`, or the nearest of its ancestors that exists.
fn existing_ancestor(folder: &Path) -> PathBuf {
    folder
        .ancestors()
        .find(|a| a.is_dir())
        .unwrap_or(folder)
        .to_path_buf()
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// An event path concerns the config when it is one of its files, lies in
/// a folder it names, holds one of them (a folder replaced, removed or
/// created), or is a ConfigMap's `..data` swap beside them.
fn concerns(path: &Path, wanted: &[PathBuf]) -> bool {
    let hidden_swap = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".."));
    wanted.iter().any(|w| {
        path.starts_with(w) || w.starts_with(path) || (hidden_swap && w.parent() == path.parent())
    })
}
