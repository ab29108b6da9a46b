//! The `portico` command: parse the command line, load config, run.

use clap::{Parser, Subcommand};
use portico::{app, config::Config, demo, descriptors, observe};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// Small, short-lived allocations (headers, envelopes, JSON) on every call:
// mimalloc's thread-local free lists cost less than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portico",
    version,
    about = "An API gateway for gRPC backends: JSON REST, WebSocket, gRPC, gRPC-Web, Connect and MCP clients on one port"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads that serve requests (`serve`, `demo`; the other commands
    /// use them to load the config). 1 runs everything on one thread, which
    /// costs the least CPU per request; more share the work between them.
    /// Default: one per CPU the process may use (its affinity and cgroup
    /// quota), so a gateway pinned to one core runs on one thread. At
    /// most 1024.
    #[arg(long, global = true, env = "PORTICO_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. SIGINT or SIGTERM drains and exits; SIGHUP, a change
    /// to the config file (or a file it names) or `POST /config/reload` on
    /// the admin port reloads the config without dropping calls.
    Serve {
        /// The config file (TOML); the paths it names are read from its folder.
        #[arg(long)]
        config: PathBuf,
    },
    /// Load config and schemas, print the route table, and exit.
    Check {
        /// The config file (TOML); the paths it names are read from its folder.
        #[arg(long)]
        config: PathBuf,
        /// Explain which binding serves a request, e.g. "GET /v1/shelves/1?x=1".
        #[arg(long)]
        explain: Option<String>,
    },
    /// Load config and schemas and print the OpenAPI 3.1 description of
    /// the REST API, exactly as `GET /openapi.json` serves it.
    Openapi {
        /// The config file (TOML); the paths it names are read from its folder.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the demo backends with the gateway in front of them.
    Demo {
        /// Where the gateway listens, an IP address and port (not a host
        /// name); the admin port is the next one.
        #[arg(long, default_value = "127.0.0.1:8080", value_parser = demo_listen)]
        listen: SocketAddr,
    },
    /// Compile .proto files into a FileDescriptorSet (no protoc needed).
    ///
    /// Built in, so never shipped: protobuf's own google/protobuf/*.proto,
    /// google/api/{annotations,http,httpbody}.proto and
    /// google/rpc/{code,status,error_details}.proto. The set holds every
    /// file imported (as protoc's --include_imports).
    Compile {
        /// Include folder (repeatable).
        #[arg(short = 'I', long = "proto-path", required = true)]
        proto_paths: Vec<PathBuf>,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
        /// Files to compile: relative to an include folder
        /// (`portico/v1/api.proto`), or a path to a file inside one
        /// (`proto/portico/v1/api.proto`, or an absolute path), as protoc takes them.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

/// The runtime for `threads` serving threads (default: one per usable CPU).
/// With one, a current-thread runtime: no work-stealing queues, no wake-ups
/// across threads; with mimalloc it takes about an eighth off the CPU of a
/// JSON call against the multi-threaded scheduler running one worker
/// (BENCHMARKS.md).
fn runtime(threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime(cli.threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portico: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A SIGHUP's default action ends the process: `serve` and `demo` hold
    // it from the first moment the runtime can, before anything else.
    let held = matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }).then(|| {
        let _entered = runtime.enter();
        app::hold_hangups()
    });
    observe::init(match cli.command {
        Command::Serve { .. } | Command::Demo { .. } => observe::LogStream::Stdout,
        _ => observe::LogStream::Stderr,
    });
    let result: Result<(), String> = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => {
                let config = Config::load(&config).map_err(|e| e.to_string())?;
                let gateway = app::start(config).await.map_err(|e| e.to_string())?;
                if let Some(held) = held {
                    gateway.answer_held_hangups(held);
                }
                gateway.run_until_signal().await;
                Ok(())
            }
            Command::Check { config, explain } => {
                let config = Config::load(&config).map_err(|e| e.to_string())?;
                let loaded = app::load(config).await.map_err(|e| e.to_string())?;
                // `serve` refuses a Redis it cannot use (unless degraded): so does `check`.
                if let Some(redis) = &loaded.config.redis {
                    match portico::fleet::Fleet::probe(redis).await {
                        Ok(()) => {}
                        Err(e) if redis.start_degraded => {
                            eprintln!("warning: redis: {e} (on_start_failure = \"degraded\": serve would start without it)")
                        }
                        Err(e) => return Err(format!("{}: redis: {e}", loaded.config.source)),
                    }
                }
                match explain {
                    Some(request) => {
                        let (method, target) = request
                            .trim()
                            .split_once(' ')
                            .ok_or("--explain takes \"METHOD /path?query\"")?;
                        let method = http::Method::from_bytes(method.as_bytes())
                            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
                        let target = target.trim();
                        // A fragment stays with the client: no request
                        // carries one, so the path is what comes before it.
                        let target = target.split_once('#').map_or(target, |(t, _)| t);
                        // A request target has no spaces: what follows one
                        // would never reach the gateway as part of the path.
                        if target.contains(char::is_whitespace) {
                            return Err(format!(
                                "--explain takes \"METHOD /path?query\": {target:?} has a space, which a request target cannot (write it %20)"
                            ));
                        }
                        // The absolute form (`http://host/path`), as a
                        // proxy would send it, names the same path.
                        let target = match target.split_once("://") {
                            Some((scheme, rest)) if !scheme.contains('/') => {
                                rest.find('/').map_or("/", |i| &rest[i..])
                            }
                            _ => target,
                        };
                        emit(&explain_request(&loaded, &method, target))?;
                    }
                    None => {
                        use std::fmt::Write as _;
                        let mut out = format!(
                            "{}: ok, {} bindings\n",
                            loaded.config.source,
                            loaded.routes.bindings().len()
                        );
                        out.push_str(&loaded.routes.listing());
                        out.push_str(&loaded.aggregates.listing());
                        let mcp: Vec<bool> = loaded.config.routes.iter().map(|r| r.mcp).collect();
                        let tools =
                            portico::ingress::mcp::tools::ToolTable::build(&loaded.routes, &mcp);
                        for warning in portico::ingress::dispatch::shadowed_bindings(
                            &loaded.routes,
                            &loaded.aggregates,
                            loaded.config.openapi.serve,
                            !tools.is_empty(),
                        ) {
                            eprintln!("warning: {warning}");
                        }
                        if mcp.contains(&true) {
                            let _ = writeln!(out, "\nMCP tools: {}", tools.len());
                            for warning in &tools.warnings {
                                eprintln!("warning: {warning}");
                            }
                        }
                        out.push_str("\npolicies, in pipeline order:\n");
                        for route in &loaded.config.routes {
                            // A service split over several routes: each
                            // names the methods it takes.
                            let name = match &route.methods {
                                Some(methods) => {
                                    format!("{} ({})", route.grpc_service, methods.join(", "))
                                }
                                None => route.grpc_service.clone(),
                            };
                            let _ = writeln!(
                                out,
                                "  {:<40} {}",
                                name,
                                loaded.config.policy_summary(route)
                            );
                        }
                        emit(&out)?;
                    }
                }
                Ok(())
            }
            Command::Openapi { config } => {
                let config = Config::load(&config).map_err(|e| e.to_string())?;
                let loaded = app::load(config).await.map_err(|e| e.to_string())?;
                let digest = app::generation::digest(&loaded.config, &loaded.pool);
                let spec = portico::openapi::generate(&portico::openapi::Sources {
                    config: &loaded.config,
                    routes: &loaded.routes,
                    aggregates: &loaded.aggregates,
                    digest: &digest,
                });
                let mut text = serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())?;
                text.push('\n');
                emit(&text)?;
                Ok(())
            }
            Command::Demo { listen } => {
                // Held for good: the demo's config is inline, there is no
                // file to reload, and the signal must not end it.
                let _held = held;
                demo::run(listen).await.map_err(|e| e.to_string())
            }
            Command::Compile {
                proto_paths,
                out,
                files,
            } => {
                for dir in &proto_paths {
                    if !dir.is_dir() {
                        return Err(format!(
                            "-I {}: {}",
                            dir.display(),
                            if dir.exists() { "is not a folder" } else { "does not exist" }
                        ));
                    }
                }
                // A file given by its path (absolute, or from the working
                // directory) inside an include folder, as its name there.
                let files = files
                    .iter()
                    .map(|f| {
                        descriptors::name_inside(std::path::Path::new(f), &proto_paths)
                            .map(|name| name.unwrap_or_else(|| f.clone()))
                            .map_err(|why| format!("{f}: {why}"))
                    })
                    .collect::<Result<Vec<String>, String>>()?;
                let set =
                    descriptors::compile_protos(&proto_paths, &files).map_err(|(_, e)| e.to_string())?;
                std::fs::write(&out, &set).map_err(|e| format!("{}: {e}", out.display()))?;
                emit(&format!("wrote {} ({} bytes)\n", out.display(), set.len()))?;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Startup and `check` errors are logs too: a password in a URL the
        // error is about is masked as a reload's error masks it.
        Err(e) => {
            eprintln!("portico: {}", portico::config::redact_text(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Writes a command's output. A reader that stops early (`portico check |
/// head`) is not an error: the rest is simply not wanted. Any other
/// failure (a full disk) is: the output is incomplete.
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write the output: {e}")),
    }
}

/// `check --explain`: what the gateway would make of one REST request,
/// the edge's checks first (path normalization and query escapes), then
/// aggregates, then the bindings, as the REST adapter takes them.
fn explain_request(loaded: &app::Loaded, method: &http::Method, target: &str) -> String {
    use portico::ingress::edge::path;
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    let refused = |e: portico::error::GatewayError| {
        format!(
            "{method} {target}: refused at the edge, {} / {:?}: {}\n",
            e.http_status().as_u16(),
            e.grpc_code(),
            e.message
        )
    };
    if let Err(e) =
        portico::ingress::edge::framing::target_length(target, &loaded.config.server.limits)
    {
        return refused(e);
    }
    let normal = match path::normalize(raw_path) {
        Ok(p) => p.into_owned(),
        Err(e) => return refused(e),
    };
    if let Err(e) = path::check_query(query, false) {
        return refused(e);
    }
    let mut out = String::new();
    if normal != raw_path {
        out.push_str(&format!("{raw_path} is normalized to {normal}\n"));
    }
    // An API key in the query is the key's header, not a field.
    let mut lifted = http::HeaderMap::new();
    let query = portico::headers::lift_query_credentials(
        Some(query),
        &loaded.config.metadata.query_credentials,
        &mut lifted,
    )
    .unwrap_or_default();
    for name in lifted.keys() {
        out.push_str(&format!(
            "a query parameter is the credential header {name}\n"
        ));
    }
    // What the gateway answers itself, before the routes: the description
    // and its docs page (a GET or HEAD), `/mcp` (any method, while it
    // serves MCP).
    let own = if (method == http::Method::GET || method == http::Method::HEAD)
        && loaded.config.openapi.serve
        && portico::openapi::docs::is_page(&normal)
    {
        Some(if normal == "/openapi.json" {
            "the OpenAPI description (`[openapi] serve = false` turns it off)"
        } else {
            "a file of the API docs page (`[openapi] serve = false` turns it off)"
        })
    } else if normal == portico::ingress::mcp::PATH
        && portico::ingress::mcp::served(&loaded.config, &loaded.routes)
    {
        Some("the MCP endpoint (a route has `mcp = true`), which takes POST; other methods are refused with 405")
    } else {
        None
    };
    if let Some(what) = own {
        out.push_str(&format!(
            "{method} {normal} is answered by the gateway itself, before the route table: {what}\n"
        ));
        if let portico::routes::MatchOutcome::Found(m) = loaded.routes.find(method, &normal) {
            out.push_str(&format!(
                "  the binding {} {} -> {} is shadowed for {method}\n",
                m.binding.method, m.binding.template_text, m.binding.target.path
            ));
        }
        return out;
    }
    // HEAD is answered as the GET, without its body; a stream has none.
    let (head_found, head_lookup) = loaded.routes.find_request(method, &normal);
    let lookup = if head_lookup != method {
        if let portico::routes::MatchOutcome::Found(m) = head_found {
            if m.binding.target.kind.server_streams() {
                out.push_str(&format!(
                    "HEAD {normal}: refused, 405: the GET is a stream, which has no HEAD; allowed: GET\n"
                ));
                return out;
            }
        }
        out.push_str("HEAD is answered as GET, without the body\n");
        http::Method::GET
    } else {
        method.clone()
    };
    if let portico::routes::aggregate::AggregateMatch::Found(plan, _) =
        loaded.aggregates.find(&lookup, &normal)
    {
        out.push_str(&format!(
            "{method} {normal} matches the aggregate {} {} ({} calls):\n",
            plan.config.method,
            plan.config.path,
            plan.config.calls.len()
        ));
        for (call, (target, _)) in plan.config.calls.iter().zip(&plan.targets) {
            out.push_str(&format!(
                "  call    {} -> {} on upstream {}\n",
                call.name, target.path, target.upstream_name
            ));
        }
        return out;
    }
    // Another method on a path an aggregate serves (alone or beside a
    // binding) is refused as the gateway refuses it.
    let bound = match loaded.routes.find(&lookup, &normal) {
        portico::routes::MatchOutcome::NotFound => Some(Vec::new()),
        portico::routes::MatchOutcome::MethodNotAllowed(allowed) => Some(allowed),
        portico::routes::MatchOutcome::Found(_) => None,
    };
    if let Some(bound) = bound {
        if !loaded.aggregates.methods_at(&normal).is_empty() {
            let whose = if bound.is_empty() {
                "the path is an aggregate's"
            } else {
                "the path matches a binding and an aggregate"
            };
            let list = loaded
                .aggregates
                .allowed_at(&loaded.routes, &normal, bound)
                .iter()
                .map(http::Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "{method} {normal}: {whose}, but only for {list}: refused, 405 (Allow: {list})\n"
            ));
            return out;
        }
    }
    let with_query = if query.is_empty() {
        normal
    } else {
        format!("{normal}?{query}")
    };
    out.push_str(&loaded.routes.explain(&lookup, &with_query));
    out
}

/// `demo --listen`: an address and port as the config's `listen` takes
/// them (never a host name to resolve), with a port after it left for the
/// admin port; a usage error otherwise, said as the config's would be.
fn demo_listen(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        let why = match text.rsplit_once(':') {
            None => "it has no port",
            Some((host, _))
                if host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_ipv6()) =>
            {
                "an IPv6 address is written in brackets, [::1]:8080"
            }
            Some((host, _))
                if host.parse::<std::net::Ipv4Addr>().is_ok()
                    || host.starts_with('[') && host.ends_with(']') =>
            {
                "its port is not a number from 0 to 65535"
            }
            Some(_) => {
                "listen addresses are never resolved: a host name such as localhost is not taken"
            }
        };
        format!("{text:?} is not an address like \"127.0.0.1:8080\": {why}")
    })?;
    demo::admin_port(addr.port())?;
    Ok(addr)
}
