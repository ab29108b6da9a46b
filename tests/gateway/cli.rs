//! The `portico` command as a user runs it.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn portico() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portico"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[test]
fn check_prints_the_route_table() {
    let out = portico()
        .args(["check", "--config", "examples/library.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("examples/library.toml: ok"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("/v1/shelves/{shelf}"))
        .expect("GetShelf is listed");
    assert!(
        line.starts_with("GET")
            && line.contains("/portico.demo.v1.Library/GetShelf")
            && line.ends_with("demo"),
        "{line}"
    );
    assert!(text.contains("/portico.demo.v1.Library/Stats") && text.contains("(auto)"));
    let probe = text
        .lines()
        .find(|l| l.trim_start().starts_with("portico.demo.v1.Probe"))
        .expect("policies listed per route");
    assert!(probe.contains("timeout 5s"), "{probe}");
}

/// A thread count the host could not run is the command line's error
/// (exit 2, naming the flag), not a process that aborts trying.
#[test]
fn a_thread_count_out_of_range_is_a_usage_error() {
    for (flag, env) in [
        (Some("0"), None),
        (Some("1025"), None),
        (None, Some("65535")),
    ] {
        let mut c = portico();
        if let Some(n) = flag {
            c.args(["--threads", n]);
        }
        if let Some(n) = env {
            c.env("PORTICO_THREADS", n);
        }
        let out = c
            .args(["check", "--config", "examples/library.toml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag:?} {env:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("--threads"), "{said}");
    }
    let out = portico()
        .args([
            "--threads",
            "2",
            "check",
            "--config",
            "examples/library.toml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_lists_each_routes_policies_in_pipeline_order() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{proto}\"]\nprotos = [\"portico/demo/v1/library.proto\"]\n\
             [authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-signing-secret-for-the-cli-test\"\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nmethods = [\"GetShelf\", \"ListBooks\"]\nupstream = \"a\"\nauth = \"users\"\n\
             authorize = {{ scopes = [\"read\"] }}\nrate_limit = {{ requests_per_second = 5, key = \"principal\" }}\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nmethods = [\"GetBook\"]\nupstream = \"a\"\n",
            proto = support::proto_dir()
        ),
    )
    .unwrap();
    let out = portico()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // A service split over two routes: each line names its methods.
    let line = text
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("portico.demo.v1.Library (GetShelf, ListBooks)")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("authenticate (users) -> authorize (scope read) -> rate limit (5/s, burst 5, per principal) -> timeout 1m"),
        "{line}"
    );
    assert!(
        text.lines().any(|l| l
            .trim_start()
            .starts_with("portico.demo.v1.Library (GetBook) ")),
        "{text}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn every_sample_config_checks() {
    for config in ["examples/library.toml", "examples/protos.toml"] {
        let out = portico()
            .args(["check", "--config", config])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What `portico check --config CONFIG --explain REQUEST` prints; the
/// command must succeed.
fn explain(config: &str, request: &str) -> String {
    let out = portico()
        .args(["check", "--config", config, "--explain", request])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn explain_names_the_binding_and_what_fills_each_field() {
    let text = explain(
        "examples/library.toml",
        "PATCH /v1/shelves/1/books/2?updateMask=title",
    );
    assert!(
        text.contains("matches PATCH /v1/{book.name=shelves/*/books/*}"),
        "{text}"
    );
    assert!(
        text.contains("path    book.name = \"shelves/1/books/2\""),
        "{text}"
    );
    assert!(text.contains("body    field book"), "{text}");
    assert!(
        text.contains("query   updateMask = \"title\" sets update_mask"),
        "{text}"
    );
    assert!(!text.contains("refused"), "{text}");
}

#[test]
fn explain_follows_the_edge_head_and_aggregates_as_the_gateway_does() {
    let library = "examples/library.toml";
    let text = explain(library, "HEAD /v1/shelves/1");
    assert!(text.contains("HEAD is answered as GET"), "{text}");
    assert!(text.contains("matches GET /v1/shelves/{shelf}"), "{text}");
    // What the edge refuses is refused here, with its status.
    for request in [
        "GET /v1/shelves/%zz",
        "GET /v1/../../etc",
        "GET /v1/shelves/1?x=%FF",
        // No origin-form target: the server's parser refuses it.
        "GET v1/shelves/1",
    ] {
        let text = explain(library, request);
        assert!(
            text.contains("refused at the edge, 400"),
            "{request}: {text}"
        );
    }
    // A target past server.limits.max_request_target_bytes (8 KiB here).
    let long = format!("GET /v1/shelves/1?x={}", "a".repeat(9000));
    let text = explain(library, &long);
    assert!(
        text.contains("refused at the edge, 414")
            && text.contains("over server.limits.max_request_target_bytes (8192)"),
        "{text}"
    );
    // A fragment is the client's: the request never carries it.
    let text = explain(library, "GET /v1/shelves/1#top");
    assert!(text.contains("shelf = \"1\""), "{text}");
    let text = explain(library, "GET /v1//shelves/1");
    assert!(text.contains("is normalized to /v1/shelves/1"), "{text}");
    assert!(text.contains("matches GET /v1/shelves/{shelf}"), "{text}");
    // An aggregate's path is the aggregate's, not a binding's.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("aggregate.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{proto}\"]\nprotos = [\"portico/demo/v1/library.proto\", \"portico/demo/v1/feed.proto\"]\n\
             [upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n\
             [authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{keys}\"\nquery_param = \"key\"\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"a\"\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Feed\"\nupstream = \"a\"\n\
             [[aggregates]]\npath = \"/v1/shelves/{{shelf}}/overview\"\n\
             [[aggregates.calls]]\nname = \"shelf\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = {{ shelf = \"{{path.shelf}}\" }}\n",
            proto = support::proto_dir(),
            keys = support::fixture("api_keys.toml")
        ),
    )
    .unwrap();
    let text = explain(file.to_str().unwrap(), "GET /v1/shelves/1/overview");
    assert!(
        text.contains("matches the aggregate GET /v1/shelves/{shelf}/overview"),
        "{text}"
    );
    assert!(
        text.contains("-> /portico.demo.v1.Library/GetShelf"),
        "{text}"
    );
    let config = file.to_str().unwrap();
    let text = explain(config, "POST /v1/shelves/1/overview");
    assert!(
        text.contains("an aggregate's, but only for GET, HEAD: refused, 405 (Allow: GET, HEAD)"),
        "{text}"
    );
    // A binding's path with another method: the status and the Allow
    // header the request would get.
    let text = explain(config, "PUT /v1/shelves/1");
    assert!(
        text.contains("the path matches, but only for GET, HEAD: refused, 405 (Allow: GET, HEAD)"),
        "{text}"
    );
    // A PATCH without a body or a mask: refused as that request would be.
    let text = explain(config, "PATCH /v1/shelves/1/books/1?updateMask=");
    assert!(
        text.contains(
            "refused 400 / InvalidArgument: invalid value for book: names no field to update"
        ),
        "{text}"
    );
    // What the gateway answers itself, before the routes.
    for method in ["GET", "HEAD"] {
        let text = explain(config, &format!("{method} /openapi.json"));
        assert!(
            text.contains(&format!("{method} /openapi.json is answered by the gateway itself, before the route table: the OpenAPI description")),
            "{text}"
        );
    }
    // A stream has no HEAD; an API key in the query is no field.
    let text = explain(config, "HEAD /v1/feed?count=2");
    assert!(text.contains("refused, 405"), "{text}");
    let text = explain(config, "GET /v1/shelves/1?key=abc");
    assert!(text.contains("credential header x-api-key"), "{text}");
    assert!(!text.contains("refused"), "{text}");
    // The absolute form names the same path; a space is no request target.
    let text = explain(library, "GET http://gw.example:8080/v1/shelves/1");
    assert!(text.contains("matches GET /v1/shelves/{shelf}"), "{text}");
    let out = portico()
        .args([
            "check",
            "--config",
            library,
            "--explain",
            "GET /v1/shelves/1 extra",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has a space, which a request target cannot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A PATCH's URL is fine; without a body naming fields it is refused.
    let text = explain(library, "PATCH /v1/shelves/1/books/2");
    assert!(
        text.contains("  without a body: refused 400 / InvalidArgument: invalid value for book: names no field to update"),
        "{text}"
    );
    // The config with lines added to its first route.
    let variant = |name: &str, lines: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            std::fs::read_to_string(&file).unwrap().replacen(
                "upstream = \"a\"\n",
                &format!("upstream = \"a\"\n{lines}"),
                1,
            ),
        )
        .unwrap();
        path
    };
    // What `check` warns of, and the paths the description lists.
    let run = |command: &str, config: &std::path::Path| {
        let out = portico()
            .args([command, "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let warnings = |config| String::from_utf8_lossy(&run("check", config).stderr).into_owned();
    let paths = |config| {
        let doc: serde_json::Value =
            serde_json::from_slice(&run("openapi", config).stdout).unwrap();
        doc["paths"].clone()
    };

    // A binding the description shadows for GET: explain says so, `check`
    // warns of it, and the description leaves out the operation no GET
    // can reach.
    let shadowed = variant(
        "shadowed.toml",
        "http_rules.Stats = { get = \"/openapi.json\" }\n",
    );
    let text = explain(shadowed.to_str().unwrap(), "GET /openapi.json");
    assert!(
        text.contains(
            "the binding GET /openapi.json -> /portico.demo.v1.Library/Stats is shadowed for GET"
        ),
        "{text}"
    );
    let listed = paths(&shadowed);
    assert!(listed.get("/openapi.json").is_none(), "{listed}");
    assert!(listed.get("/v1/shelves/{shelf}").is_some());
    let warned = warnings(&shadowed);
    assert!(
        warned.contains("warning: the binding GET /openapi.json -> /portico.demo.v1.Library/Stats is never reached"),
        "{warned}"
    );

    // So is an aggregate on a page the gateway serves.
    let aggregated = dir.join("aggregated.toml");
    std::fs::write(
        &aggregated,
        std::fs::read_to_string(&file).unwrap()
            + "\n[[aggregates]]\npath = \"/docs\"\n[[aggregates.calls]]\nname = \"s\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\n",
    )
    .unwrap();
    let warned = warnings(&aggregated);
    assert!(
        warned.contains("warning: the aggregate GET /docs is never reached: the gateway serves its API description"),
        "{warned}"
    );
    let listed = paths(&aggregated);
    assert!(listed.get("/docs").is_none(), "{listed}");
    // A path a binding and an aggregate share: explain's 405 allows both's.
    let shared = dir.join("shared.toml");
    std::fs::write(
        &shared,
        std::fs::read_to_string(&file).unwrap()
            + "\n[[aggregates]]\npath = \"/portico.demo.v1.Library/Stats\"\n[[aggregates.calls]]\nname = \"s\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\n",
    )
    .unwrap();
    let text = explain(
        shared.to_str().unwrap(),
        "DELETE /portico.demo.v1.Library/Stats",
    );
    assert!(text.contains("405 (Allow: POST, GET, HEAD)"), "{text}");

    // `/mcp`, while a route offers tools, answers every method before the
    // routes: explain, the check and the description all say so.
    let mcp = variant(
        "mcp.toml",
        "mcp = true\nhttp_rules.Stats = { post = \"/mcp\", body = \"*\" }\n",
    );
    for request in ["POST /mcp", "GET /mcp"] {
        let text = explain(mcp.to_str().unwrap(), request);
        assert!(
            text.contains(&format!("{request} is answered by the gateway itself, before the route table: the MCP endpoint")),
            "{text}"
        );
    }
    let text = explain(mcp.to_str().unwrap(), "POST /mcp");
    assert!(
        text.contains(
            "the binding POST /mcp -> /portico.demo.v1.Library/Stats is shadowed for POST"
        ),
        "{text}"
    );
    let warned = warnings(&mcp);
    assert!(
        warned.contains("warning: the binding POST /mcp -> /portico.demo.v1.Library/Stats is never reached: /mcp is the MCP endpoint"),
        "{warned}"
    );
    let listed = paths(&mcp);
    assert!(listed.get("/mcp").is_none(), "{listed}");
    // Without MCP, `/mcp` is a path like any other.
    let text = explain(library, "POST /mcp");
    assert!(!text.contains("MCP endpoint"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn explain_says_which_query_parameters_the_gateway_would_refuse() {
    let explain = |request: &str| explain("examples/library.toml", request);
    // A field the message does not have, and one the path already binds.
    let text = explain("GET /v1/shelves/1/books?colour=red");
    assert!(
        text.contains("query   colour = \"red\" refused: it is not a field of"),
        "{text}"
    );
    assert!(text.contains("refused 400 / InvalidArgument:"), "{text}");
    let text = explain("GET /v1/shelves/1/books?parent=shelves/2");
    assert!(
        text.contains("refused: it is already bound by the path"),
        "{text}"
    );
    // A known field given a value it cannot hold.
    let text = explain("GET /v1/shelves/1/books?pageSize=many");
    assert!(
        text.contains("query   pageSize = \"many\" sets page_size"),
        "{text}"
    );
    assert!(text.contains("refused 400 / InvalidArgument:"), "{text}");
    assert!(text.contains("pageSize"), "{text}");
}

#[test]
fn explain_suggests_the_nearest_templates_when_nothing_matches() {
    let text = explain("examples/library.toml", "GET /v1/shelfs/1");
    assert!(text.contains("no binding matches"), "{text}");
    assert!(text.lines().count() >= 3, "{text}");
}

#[test]
fn a_bad_config_exits_non_zero_naming_file_key_and_reason() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:8080\"\n[upstreams.a]\nendpoints = [\"x:1\"]\n[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"b\"\n").unwrap();
    let out = portico()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("routes[0].upstream")
            && err.contains("no upstream named"),
        "{err}"
    );

    // A schema that does not compile: the config file and key, then the
    // .proto file with the line and column, then the reason.
    std::fs::write(
        dir.join("x.proto"),
        "syntax = \"proto3\";\npackage acme;\nmessage X {\n  strin g = 1;\n}\n",
    )
    .unwrap();
    let schema = dir.join("schema.toml");
    std::fs::write(
        &schema,
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"x.proto\"]\n[upstreams.a]\nendpoints = [\"x:1\"]\n[[routes]]\ngrpc_service = \"acme.S\"\nupstream = \"a\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = portico()
        .args(["check", "--config"])
        .arg(&schema)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "schema.toml: descriptors.protos[0]: x.proto:4:3: name 'strin' is not defined"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Mistakes in a `google.api.http` rule, as a team bringing annotations
/// from another gateway makes them: each error says which field is wrong.
#[test]
fn a_bad_http_rule_is_refused_naming_what_is_wrong_with_it() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-rule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            r#"{ gett: "/v1/{name}" }"#,
            "invalid value of type 'google.api.HttpRule' for option '(google.api.http)': field 'gett' not found for message 'google.api.HttpRule'",
        ),
        (
            r#"{ get: "/v1/{name}" post: "/v1/x" }"#,
            "a value is already set for oneof 'pattern'",
        ),
        (
            r#"{ post: "/v1/x" body: "sub.s" }"#,
            "body names \"sub.s\", a field path: it must name a top-level field of bad.v1.R",
        ),
    ];
    for (i, (rule, said)) in cases.iter().enumerate() {
        let proto = format!(
            "syntax = \"proto3\";\npackage bad.v1;\nimport \"google/api/annotations.proto\";\n\
             service S {{\n  rpc M(R) returns (R) {{ option (google.api.http) = {rule}; }}\n}}\n\
             message R {{ string name = 1; Sub sub = 2; }}\nmessage Sub {{ string s = 1; }}\n"
        );
        std::fs::write(dir.join(format!("rule{i}.proto")), proto).unwrap();
        let config = dir.join(format!("rule{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"rule{i}.proto\"]\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ngrpc_service = \"bad.v1.S\"\nupstream = \"a\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let out = portico()
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{rule}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{rule}: {err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `portico check` of a config with the demo's Probe service on one
/// upstream, `sections` and `route_extra` added, written as `file`:
/// whether it passed, and what it said on stderr.
fn check_probe_config(file: &std::path::Path, sections: &str, route_extra: &str) -> (bool, String) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{proto}\"]\nprotos = [\"portico/demo/v1/probe.proto\"]\n\
         [upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n{sections}\n\
         [[routes]]\ngrpc_service = \"portico.demo.v1.Probe\"\nupstream = \"a\"\n{route_extra}\n",
        proto = support::proto_dir()
    );
    std::fs::write(file, text).unwrap();
    let out = portico()
        .args(["check", "--config"])
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A service split between routes: `methods` lists that share no method
/// load; one that names a method an earlier route has is refused naming it.
#[test]
fn check_takes_a_split_service_and_names_a_method_routed_twice() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let second = |methods: &str| {
        format!(
            "methods = [\"Headers\"]\n\n[[routes]]\ngrpc_service = \"portico.demo.v1.Probe\"\nupstream = \"a\"\nmethods = [{methods}]"
        )
    };
    let (ok, err) = check_probe_config(&dir.join("split.toml"), "", &second("\"Fail\", \"Sleep\""));
    assert!(ok, "{err}");
    let (ok, err) = check_probe_config(
        &dir.join("split.toml"),
        "",
        &second("\"Sleep\", \"Headers\""),
    );
    assert!(!ok, "check passed: {err}");
    assert!(
        err.contains("routes[1].grpc_service")
            && err.contains("its method Headers is in an earlier route"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_refuses_a_missing_jwks_file_as_serve_would() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ok, err) = check_probe_config(
        &dir.join("jwks.toml"),
        "[authenticators.users]\nalgorithm = \"RS256\"\njwks_file = \"missing-jwks.json\"",
        "auth = \"users\"",
    );
    assert!(!ok, "check passed: {err}");
    assert!(
        err.contains("jwks.toml")
            && err.contains("authenticators.users")
            && err.contains("jwks_file: cannot read")
            && err.contains("missing-jwks.json"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_refuses_an_access_log_serve_could_not_open() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |log_path: &str| {
        check_probe_config(
            &dir.join("log.toml"),
            &format!("[access_log]\npath = \"{log_path}\""),
            "",
        )
    };
    // A named pipe would hold `serve` until a reader opened it.
    let made = Command::new("mkfifo")
        .arg(dir.join("log.fifo"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // A folder that does not exist, a folder where the file should be, a pipe.
    for (path, says) in [
        ("no-such-folder/access.log", "no-such-folder"),
        (".", "is a folder"),
        ("log.fifo", "is a named pipe or socket"),
    ] {
        let (ok, err) = check(path);
        assert!(!ok, "check passed an access log at {path}: {err}");
        assert!(
            err.contains("log.toml") && err.contains("access_log.path") && err.contains(says),
            "{err}"
        );
    }
    // A new file in a folder that exists passes, and is not created by the check.
    let (ok, err) = check("access.log");
    assert!(ok, "{err}");
    assert!(!dir.join("access.log").exists(), "check created the log");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_checked_in_descriptor_set_is_current() {
    let out_file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-demo-{}.binpb", std::process::id()));
    let status = portico()
        .args(["compile", "-I", "proto", "-o"])
        .arg(&out_file)
        .args([
            "portico/demo/v1/library.proto",
            "portico/demo/v1/feed.proto",
            "portico/demo/v1/chat.proto",
            "portico/demo/v1/probe.proto",
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let fresh = std::fs::read(&out_file).unwrap();
    let checked_in = std::fs::read("descriptors/demo.binpb").unwrap();
    std::fs::remove_file(out_file).ok();
    assert!(
        fresh == checked_in,
        "descriptors/demo.binpb is stale: regenerate it with the command in README.md"
    );
}

#[test]
fn compile_takes_a_file_by_its_path_as_protoc_does() {
    let out = |name: &str| {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("portico-{name}-{}.binpb", std::process::id()))
    };
    let absolute = format!(
        "{}/proto/portico/demo/v1/feed.proto",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut sets = Vec::new();
    for (name, file) in [
        ("by-name", "portico/demo/v1/feed.proto"),
        ("by-path", "proto/portico/demo/v1/feed.proto"),
        ("absolute", absolute.as_str()),
    ] {
        let o = portico()
            .args(["compile", "-I", "proto", "-o"])
            .arg(out(name))
            .arg(file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        sets.push(std::fs::read(out(name)).unwrap());
        std::fs::remove_file(out(name)).ok();
    }
    assert!(sets.iter().all(|s| s == &sets[0]), "one file, one set");

    // A file named by its path through an include folder that another,
    // earlier folder shadows under the same name is refused, as protoc
    // refuses it, instead of compiling the other file.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-shadowed-{}", std::process::id()));
    for (folder, field) in [("a", "from_a"), ("b", "from_b")] {
        std::fs::create_dir_all(dir.join(folder).join("s")).unwrap();
        std::fs::write(
            dir.join(folder).join("s/x.proto"),
            format!("syntax = \"proto3\";\npackage s;\nmessage M {{ string {field} = 1; }}\n"),
        )
        .unwrap();
    }
    let o = portico()
        .current_dir(&dir)
        .args([
            "compile",
            "-I",
            "a",
            "-I",
            "b",
            "-o",
            "out.binpb",
            "b/s/x.proto",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("b/s/x.proto: is shadowed by a/s/x.proto"),
        "{err}"
    );
    assert!(!dir.join("out.binpb").exists(), "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();

    let o = portico()
        .args(["compile", "-I", "no-such-folder", "-o"])
        .arg(out("missing"))
        .arg("a.proto")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("-I no-such-folder: does not exist"), "{err}");
}

#[tokio::test]
async fn the_demo_serves_its_tour() {
    let mut child = portico()
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Everything the demo prints (the tour, then its log) is kept and read
    // to the end, so its writes never meet a closed pipe and a failure
    // below can show them.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let printed = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("gateway on http://").nth(1) {
                let _ = addr_tx.send(rest.split(',').next().unwrap().to_owned());
            }
            all.push(line);
        }
        all.join("\n")
    });
    let addr = tokio::task::spawn_blocking(move || addr_rx.recv())
        .await
        .unwrap()
        .expect("the demo prints its address");
    let client = support::HttpClient::new(addr.parse().unwrap());
    let r = client.get("/v1/shelves/1").await;
    assert_eq!(r.json()["theme"], "Fiction");
    // The demo has no config file to reload: a SIGHUP is logged, and the
    // demo keeps serving instead of ending (the signal's default action).
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let still = child.try_wait().unwrap();
    let r = if still.is_none() && !client.client_error("/v1/shelves/2").await {
        Some(client.get("/v1/shelves/2").await)
    } else {
        None
    };
    child.kill().ok();
    child.wait().ok();
    let printed = printed.join().unwrap();
    assert!(
        still.is_none(),
        "the demo ended on SIGHUP: {still:?}; it printed:\n{printed}"
    );
    assert_eq!(
        r.map(|r| r.status),
        Some(http::StatusCode::OK),
        "the demo stopped answering after SIGHUP; it printed:\n{printed}"
    );
}

#[test]
fn check_refuses_a_redis_that_serve_could_not_use() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let write = |name: &str, extra: &str| {
        let text = std::fs::read_to_string("examples/library.toml")
            .unwrap()
            // Paths in a config are relative to its folder: this one moves.
            .replace("\"../", &format!("\"{}/", env!("CARGO_MANIFEST_DIR")))
            .replace(
                "[upstreams.",
                &format!(
                    "[redis]\nurl = \"redis://:secret-pw@{closed}\"\nconnect_timeout = \"300ms\"\n{extra}\n[upstreams."
                ),
            );
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let strict = write("strict.toml", "");
    let out = portico()
        .args(["check", "--config", strict.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed a Redis nobody answers");
    assert!(
        err.contains("redis") && err.contains(&format!("cannot use Redis at redis://{closed}")),
        "the error says where: {err}"
    );
    assert!(
        !err.contains("secret-pw"),
        "the password is never printed: {err}"
    );

    let degraded = write("degraded.toml", "on_start_failure = \"degraded\"");
    let out = portico()
        .args(["check", "--config", degraded.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: redis"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` says what `serve` would warn about an MCP route: how many tools
/// it offers, and each method it leaves out and why.
#[test]
fn check_names_the_methods_an_mcp_route_does_not_offer_as_tools() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-mcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("t.proto"),
        "syntax = \"proto3\";\npackage t;\nimport \"google/api/httpbody.proto\";\nimport \"google/protobuf/timestamp.proto\";\nimport \"google/protobuf/empty.proto\";\nservice T {\n  rpc Raw(google.api.HttpBody) returns (google.protobuf.Empty);\n  rpc At(google.protobuf.Timestamp) returns (google.protobuf.Empty);\n  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Empty);\n  rpc Up(stream google.protobuf.Empty) returns (google.protobuf.Empty);\n}\n// Two tools whose names meet.\nservice Foo_Bar { rpc Baz(google.protobuf.Empty) returns (google.protobuf.Empty); }\nservice Foo { rpc Bar_Baz(google.protobuf.Empty) returns (google.protobuf.Empty); }\n",
    )
    .unwrap();
    let file = dir.join("mcp.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[descriptors]\nproto_paths = [\"{}\"]\nprotos = [\"t.proto\"]\n[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ngrpc_service = \"t.T\"\nupstream = \"a\"\nmcp = true\n[[routes]]\ngrpc_service = \"t.Foo_Bar\"\nupstream = \"a\"\nmcp = true\n[[routes]]\ngrpc_service = \"t.Foo\"\nupstream = \"a\"\nmcp = true\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = portico()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    // Ping, and both of the names that meet, each with a suffix of its own.
    assert!(text.contains("MCP tools: 3"), "{text}");
    for path in ["/t.Foo_Bar/Baz", "/t.Foo/Bar_Baz"] {
        assert!(
            err.contains(&format!(
                "warning: {path} is offered as the MCP tool Foo_Bar_Baz_"
            )),
            "{err}"
        );
    }
    assert!(
        err.contains("warning: /t.T/Up is not offered as an MCP tool: it streams from the client"),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: /t.T/Raw is not offered as an MCP tool: its request body is google.api.HttpBody"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "warning: /t.T/At is not offered as an MCP tool: its request is not a JSON object"
        ),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `portico check | head` or `portico openapi | head`: the reader leaves
/// early, and the command neither panics nor fails for it.
#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    for args in [
        ["check", "--config", "examples/library.toml"],
        ["openapi", "--config", "examples/library.toml"],
    ] {
        let mut child = portico()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Closed before the command has loaded its config and written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// What `check` and `openapi` print is their product, for a file or a
/// pipe: a warning logged while the config loads goes to standard error,
/// never into the listing or the JSON document.
#[test]
fn warnings_while_loading_go_to_stderr_not_into_the_output() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-cli-streams-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("feed-cached.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[descriptors]\nproto_paths = [\"{proto}\"]\n\
             protos = [\"portico/demo/v1/library.proto\", \"portico/demo/v1/feed.proto\"]\n\
             [upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"a\"\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Feed\"\nupstream = \"a\"\ncache = {{ ttl = \"1s\" }}\n",
            proto = support::proto_dir()
        ),
    )
    .unwrap();
    for command in ["check", "openapi"] {
        let out = portico()
            .args([command, "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("WARN")
                && stderr.contains("no method of portico.demo.v1.Feed is cached"),
            "{command}: the warning is on stderr: {stderr}"
        );
        assert!(!stdout.contains("WARN"), "{command}: {stdout}");
    }
    let out = portico()
        .args(["openapi", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(doc["openapi"], "3.1.0");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn serve_logs_the_ports_it_bound_so_port_zero_is_found() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("portico-ports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ports.toml");
    std::fs::write(
        &file,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [descriptors]\nsets = [\"{}/descriptors/demo.binpb\"]\n\
             [upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n\
             [[routes]]\ngrpc_service = \"portico.demo.v1.Library\"\nupstream = \"a\"\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let mut child = portico()
        .args(["serve", "--config"])
        .arg(&file)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("portico listening") {
                let _ = line_tx.send(line);
            }
        }
    });
    let line = tokio::task::spawn_blocking(move || {
        line_rx.recv_timeout(std::time::Duration::from_secs(30))
    })
    .await
    .unwrap();
    let field = |line: &str, name: &str| -> Option<std::net::SocketAddr> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        line[at..].split_whitespace().next()?.parse().ok()
    };
    let answers = match &line {
        Ok(line) => {
            let (main, admin) = (field(line, "addr"), field(line, "admin"));
            let admin_ok = match admin {
                Some(a) if a.port() != 0 => {
                    support::HttpClient::new(a).get("/healthz").await.status == http::StatusCode::OK
                }
                _ => false,
            };
            Some((main.is_some_and(|m| m.port() != 0), admin_ok))
        }
        Err(_) => None,
    };
    child.kill().ok();
    child.wait().ok();
    reader.join().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        answers,
        Some((true, true)),
        "the listening line names both bound ports: {line:?}"
    );
}

/// A `demo --listen` the demo cannot take is a usage error (exit 2) that
/// says why, whatever is wrong with it.
#[test]
fn a_demo_listen_address_it_cannot_take_is_a_usage_error_saying_why() {
    for (listen, says) in [
        ("localhost:52170", "listen addresses are never resolved"),
        (
            "127.0.0.1:65535",
            "port 65535 leaves no port after it for the admin port",
        ),
        ("127.0.0.1", "it has no port"),
        (
            "127.0.0.1:70000",
            "its port is not a number from 0 to 65535",
        ),
        ("::1:8080", "an IPv6 address is written in brackets"),
    ] {
        let out = portico()
            .args(["demo", "--listen", listen])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{listen}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{listen}: {err}");
    }
}
