use super::*;

const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"

[upstreams.backend]
endpoints = ["127.0.0.1:50051"]

[[routes]]
grpc_service = "foo.v1.Foo"
upstream = "backend"
"#;

#[test]
fn a_ten_line_config_gets_safe_defaults() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(c.server.limits, Limits::default());
    assert_eq!(c.routes[0].upstream, 0);
    assert!(c.routes[0].auto_mapping);
    assert!(c.json.reject_unknown_fields);
    assert!(c.metadata.allows("authorization"));
    assert!(!c.metadata.allows("cookie"));
}

#[test]
fn an_unknown_key_is_named_with_its_path() {
    let text = MINIMAL.replace("listen =", "lisen = \"x\"\nlisten =");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "server.lisen");
    assert!(err.reason.contains("unknown field"), "{err}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_type_as_the_reader_knows_it() {
    for (line, says) in [
        (
            "[server.limits]\nmax_connections = -1",
            "invalid value: integer `-1`, expected a whole number that is not negative (at most 18446744073709551615)",
        ),
        ("[access_log]\nsample = \"half\"", "expected a number"),
        (
            "cors = \"*\"",
            "invalid type: string \"*\", expected a table",
        ),
        ("[cors]\nallowed_origins = \"*\"", "expected a list"),
        ("[cors]\nallowed_origins = [[\"*\"]]", "invalid type: list"),
        (
            "[upstreams.other]\nendpoints = [\"127.0.0.1:1\"]\nhealth_check = 5",
            "invalid type: integer `5`, expected a table",
        ),
    ] {
        let text = format!("{MINIMAL}\n{line}\n");
        let err = Config::from_toml(&text).unwrap_err();
        assert!(err.reason.contains(says), "{line}: {err}");
        assert!(!err.reason.contains("File"), "{line}: {err}");
    }
    // A key that takes a string or a list of them.
    let text = MINIMAL.replacen("[[routes]]\n", "[[routes]]\nauth = 5\n", 1);
    let err = Config::from_toml(&text).unwrap_err();
    assert!(
        err.reason
            .contains("expected a string or a list of strings"),
        "{err}"
    );
}

#[test]
fn a_mistake_inside_an_endpoint_table_is_named_as_such() {
    for (entry, says) in [
        (
            r#"{ address = "127.0.0.1:1", wieght = 3 }"#,
            "unknown field `wieght`, expected `address` or `weight`",
        ),
        (
            r#"{ address = "127.0.0.1:1", weight = "3" }"#,
            "invalid type: string \"3\", expected a whole number that is not negative (at most 4294967295)",
        ),
        (
            "50051",
            r#"expected "host:port" or a table { address = "host:port", weight = N }"#,
        ),
    ] {
        let text = MINIMAL.replace(r#"["127.0.0.1:50051"]"#, &format!("[{entry}]"));
        let err = Config::from_toml(&text).unwrap_err();
        assert!(err.key.starts_with("upstreams.backend.endpoints"), "{err}");
        assert!(err.reason.contains(says), "{entry}: {err}");
    }
    let text = MINIMAL.replace(
        r#"["127.0.0.1:50051"]"#,
        r#"[{ address = "127.0.0.1:1", weight = 3 }, "127.0.0.1:2"]"#,
    );
    assert!(Config::from_toml(&text).is_ok());
    // A table without a weight weighs 1, as a plain address does.
    let text = MINIMAL.replace(
        r#"["127.0.0.1:50051"]"#,
        r#"[{ address = "127.0.0.1:1" }, "127.0.0.1:2"]"#,
    );
    let config = Config::from_toml(&text).unwrap();
    let crate::egress::upstream::config::EndpointSource::Static(list) =
        &config.upstreams[0].endpoints
    else {
        panic!("static endpoints")
    };
    assert!(list.iter().all(|e| e.weight == 1), "{list:?}");
}

#[test]
fn a_route_to_a_missing_upstream_names_the_route_and_the_known_ones() {
    let text = MINIMAL.replace("upstream = \"backend\"", "upstream = \"nope\"");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "routes[0].upstream");
    assert!(err.reason.contains("backend"), "{err}");
}

#[test]
fn bad_durations_and_addresses_say_what_was_expected() {
    let text = MINIMAL.replace(
        "[upstreams",
        "[server.limits]\nidle_timeout = \"soon\"\n\n[upstreams",
    );
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "server.limits.idle_timeout");

    let text = MINIMAL.replace("127.0.0.1:8080", "localhost");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "server.listen");

    let text = MINIMAL.replace("127.0.0.1:50051", "http://127.0.0.1:50051");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "upstreams.backend.endpoints[0]");

    // An endpoint listed twice would silently be one: refused, in the
    // config and in an endpoints file.
    let text = MINIMAL.replace(
        "[\"127.0.0.1:50051\"]",
        "[\"127.0.0.1:50051\", \"127.0.0.1:50052\", \"127.0.0.1:50051\"]",
    );
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "upstreams.backend.endpoints[2]");
    assert!(
        err.reason.contains("endpoints[0]") && err.reason.contains("weight"),
        "{err}"
    );
    let text = format!("{MINIMAL}\n[upstreams.backend.retry]\nmax_retries = 11\n");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "upstreams.backend.retry.max_retries", "{err}");
    let err = crate::config::parse_endpoints_file("a:1\nb:2 3\nA:1 2\n").unwrap_err();
    assert!(
        err.starts_with("line 3:") && err.contains("listed already"),
        "{err}"
    );
    let err = crate::config::parse_endpoints_file("a:1\nb:2 3 extra\n").unwrap_err();
    assert_eq!(
        err,
        "line 2: \"extra\" after the weight; a line is \"host:port [weight]\""
    );
}

#[test]
fn forwarded_headers_accept_prefixes_and_refuse_grpc_reserved_ones() {
    let text = format!("{MINIMAL}\n[metadata]\nforward = [\"X-Tenant-*\", \"authorization\"]\n");
    let c = Config::from_toml(&text).unwrap();
    assert!(c.metadata.allows("x-tenant-id"));
    assert!(!c.metadata.allows("x-request-id"));

    let text = format!("{MINIMAL}\n[metadata]\nforward = [\"grpc-timeout\"]\n");
    assert_eq!(
        Config::from_toml(&text).unwrap_err().key,
        "metadata.forward[0]"
    );
    // Every header the gateway never forwards is refused by name, and a
    // name that is none.
    for (name, says) in [
        ("user-agent", "never reaches a backend"),
        ("Content-Length", "never reaches a backend"),
        ("connection", "never reaches a backend"),
        ("x-http-method-override", "never reaches a backend"),
        ("x-original-url", "never reaches a backend"),
        ("sec-websocket-key", "never reaches a backend"),
        ("mcp-session-id", "never reaches a backend"),
        ("connect-*", "never reaches a backend"),
        ("x!y", "no name gRPC metadata can carry"),
        ("", "is not a header name"),
    ] {
        let text = format!("{MINIMAL}\n[metadata]\nforward = [\"x-ok\", {name:?}]\n");
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "metadata.forward[1]", "{name}: {err}");
        assert!(err.reason.contains(says), "{name}: {err}");
    }
    // A prefix that also matches such headers still forwards the others.
    let text = format!("{MINIMAL}\n[metadata]\nforward = [\"*\", \"x-*\"]\n");
    assert!(Config::from_toml(&text)
        .unwrap()
        .metadata
        .allows("x-tenant"));
}

#[test]
fn a_cache_varies_on_named_headers_each_once_never_on_a_star() {
    let text = format!("{MINIMAL}cache = {{ ttl = \"30s\", vary = [\"X-A\", \"x-a\", \"B\"] }}\n");
    let c = Config::from_toml(&text).unwrap();
    let vary = &c.routes[0].cache.as_ref().unwrap().vary;
    assert_eq!(vary, &["x-a", "b"]);
    let text = format!("{MINIMAL}cache = {{ ttl = \"30s\", vary = [\"X-A\", \"*\"] }}\n");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "routes[0].cache.vary[1]", "{err}");
    assert!(err.reason.contains("every request its own entry"), "{err}");
}

#[test]
fn a_rate_limits_rate_and_burst_are_refused_with_their_range() {
    let limit = |body: &str| format!("{MINIMAL}rate_limit = {{ {body} }}\n");
    for (body, key, says) in [
        (
            "requests_per_second = inf",
            "requests_per_second",
            "inf is not a finite number greater than zero",
        ),
        (
            "requests_per_second = 0",
            "requests_per_second",
            "0 is not a finite number greater than zero",
        ),
        (
            "requests_per_second = 5, burst = 0",
            "burst",
            "0 is not a whole number from 1 to 4294967295",
        ),
        (
            "requests_per_second = 5, burst = -1",
            "burst",
            "-1 is not a whole number from 1 to 4294967295",
        ),
        (
            "requests_per_second = 5, burst = 4294967296",
            "burst",
            "4294967296 is not a whole number from 1 to 4294967295",
        ),
    ] {
        let err = Config::from_toml(&limit(body)).unwrap_err();
        assert_eq!(
            err.key,
            format!("routes[0].rate_limit.{key}"),
            "{body}: {err}"
        );
        assert!(err.reason.contains(says), "{body}: {err}");
    }
    let err = Config::from_toml(&limit("requests_per_second = 5, burst = 2.5")).unwrap_err();
    assert!(err.reason.contains("expected a whole number"), "{err}");
    assert!(!err.reason.contains("from 0"), "{err}");
    // The default burst, the rate rounded up, stops at the largest one.
    let c = Config::from_toml(&limit("requests_per_second = 5e9")).unwrap();
    assert_eq!(c.routes[0].rate_limit.as_ref().unwrap().burst, u32::MAX);
}

#[test]
fn per_route_json_options_override_the_global_ones() {
    let text = format!(
        "{MINIMAL}json = {{ use_proto_names = true }}\n\n[json]\nemit_unpopulated = true\n"
    );
    let c = Config::from_toml(&text).unwrap();
    assert!(c.json.emit_unpopulated && !c.json.use_proto_names);
    assert!(c.routes[0].json.emit_unpopulated && c.routes[0].json.use_proto_names);
}

#[test]
fn http_rules_in_the_config_take_exactly_one_pattern() {
    let text = format!("{MINIMAL}http_rules.Get = {{ get = \"/v1/things/{{id}}\", additional_bindings = [{{ post = \"/v1/things:get\", body = \"*\" }}] }}\n");
    let c = Config::from_toml(&text).unwrap();
    let rule = &c.routes[0].http_rules["Get"];
    assert_eq!(rule.additional_bindings.len(), 1);

    let text = format!("{MINIMAL}http_rules.Get = {{ get = \"/a\", post = \"/b\" }}\n");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "routes[0].http_rules.Get");
    assert!(err.reason.contains("exactly one"), "{err}");
}

#[test]
fn url_credentials_are_masked_wherever_they_appear() {
    assert_eq!(
        redact_text("https://svc:pw@idp.example/jwks: connection refused"),
        "https://svc:[redacted]@idp.example/jwks: connection refused"
    );
    assert_eq!(
        redact_text("rediss://TOKEN@cache:6380 and http://plain/x"),
        "rediss://[redacted]@cache:6380 and http://plain/x"
    );
    assert_eq!(redact_text("no url here"), "no url here");
    // A URL too malformed to read still loses its password, in the error
    // that names it; an address keeps its name.
    assert_eq!(
        redact_text(r#"redis.url: "rediss//:Sup3rPW@127.0.0.1:6379" is not a URL"#),
        r#"redis.url: "rediss//:[redacted]@127.0.0.1:6379" is not a URL"#
    );
    assert_eq!(
        redact_text("htps://portico:S3cr3t@auth.example/x and ops@example.com"),
        "htps://portico:[redacted]@auth.example/x and ops@example.com"
    );
    // A credential in the query loses its value, whatever else is there.
    for (url, shown) in [
        (
            "http://authz:9000/check?tenant=acme&api_key=K1&token=T2#top",
            "http://authz:9000/check?tenant=acme&api_key=[redacted]&token=[redacted]#top",
        ),
        (
            "https://idp.example/keys?Access-Token=T&key=K&sig=S&page=2",
            "https://idp.example/keys?Access-Token=[redacted]&key=[redacted]&sig=[redacted]&page=2",
        ),
        (
            r#"introspection_url: "https://u:p@idp/x?client_secret=C" refused"#,
            r#"introspection_url: "https://u:[redacted]@idp/x?client_secret=[redacted]" refused"#,
        ),
        (
            "http://h/x?key=&q=1 http://h/y",
            "http://h/x?key=&q=1 http://h/y",
        ),
        // The sentence's punctuation stays the sentence's.
        (
            "https://idp/jwks?token=T: connection refused (http://h/x?sig=S).",
            "https://idp/jwks?token=[redacted]: connection refused (http://h/x?sig=[redacted]).",
        ),
        (
            "https://b.s3.example/o?X-Amz-Credential=C&X-Amz-Signature=S&subscription-key=K&sort=up",
            "https://b.s3.example/o?X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]&subscription-key=[redacted]&sort=up",
        ),
    ] {
        assert_eq!(redact_text(url), shown, "{url}");
    }
}

#[test]
fn the_config_view_redacts_secrets_by_key_and_in_urls() {
    let text = format!(
        "{MINIMAL}\n[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"s3cret-value-long-enough-for-hs256\"\n"
    );
    let c = Config::from_toml(&text).unwrap();
    let shown = c.redacted.to_string();
    assert!(!shown.contains("s3cret-value"), "{shown}");
    assert_eq!(
        c.redacted["authenticators"]["users"]["secret"],
        "[redacted]"
    );
    assert_eq!(c.redacted["server"]["listen"], "127.0.0.1:8080");
    let v = redact(
        serde_json::json!({"upstream": {"api_key": "k", "url": "redis://u:p@h:1", "http": "http://a/check?token=t"}}),
    );
    assert_eq!(
        v,
        serde_json::json!({"upstream": {"api_key": "[redacted]", "url": "redis://u:[redacted]@h:1", "http": "http://a/check?token=[redacted]"}})
    );
}

#[test]
fn a_toml_syntax_error_names_its_line_and_column() {
    let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\n[upstreams.a\n").unwrap_err();
    assert!(err.reason.starts_with("line 3, column "), "{err}");
}

#[test]
fn a_duration_that_cannot_be_read_exactly_is_refused_saying_why() {
    for (timeout, reason) in [
        (
            "500000000000years",
            "longer than the most allowed, a year (\"1y\")",
        ),
        ("366d", "longer than the most allowed, a year (\"1y\")"),
        ("-1s", "it is negative"),
        (
            "5",
            "the number needs a unit (ns, us, ms, s, m, h, d, w, M or y)",
        ),
        (
            "0",
            "the number needs a unit (ns, us, ms, s, m, h, d, w, M or y)",
        ),
        ("0.5ns", "no unit is smaller than ns"),
        ("0.5nsec", "no unit is smaller than ns"),
        (
            "1.0000000000001mins",
            "write it in a smaller unit (for example, \"1.001h\" as \"3603600ms\")",
        ),
        (
            "1.0000000001s",
            "write it in a smaller unit (for example, \"1.001h\" as \"3603600ms\")",
        ),
        (
            "1.001h",
            "write it in a smaller unit (for example, \"1.001h\" as \"3603600ms\")",
        ),
        ("400.5d", "longer than the most allowed, a year (\"1y\")"),
    ] {
        let text = format!("{MINIMAL}\n[server.limits]\nrequest_timeout = \"{timeout}\"\n");
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "server.limits.request_timeout", "{err}");
        assert!(err.reason.ends_with(reason), "{timeout}: {err}");
    }
    for longest in ["365d", "1y"] {
        let text = format!("{MINIMAL}\n[server.limits]\nrequest_timeout = \"{longest}\"\n");
        Config::from_toml(&text).unwrap();
    }
}

#[test]
fn values_that_could_never_work_are_refused_naming_their_key() {
    let cases = [
        (
            MINIMAL.replace(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"127.0.0.1:8080\"\nadmin = \"0.0.0.0:8080\"",
            ),
            "server.admin",
            "the admin port needs its own",
        ),
        (
            format!("{MINIMAL}\n[cors]\nallowed_origins = [\"https://app.example.com/\"]\n"),
            "cors.allowed_origins[0]",
            "ends in \"/\": write \"https://app.example.com\"",
        ),
        (
            format!(
                "{MINIMAL}\n[websocket]\nallowed_origins = [\"https://app.example.com/chat\"]\n"
            ),
            "websocket.allowed_origins[0]",
            "is not an origin",
        ),
        (
            format!("{MINIMAL}\n[cors]\nallowed_origins = [\"https://app.example.com:443\"]\n"),
            "cors.allowed_origins[0]",
            "default port, which a browser's Origin header never carries: write \"https://app.example.com\"",
        ),
        (
            format!("{MINIMAL}\n[websocket]\nallowed_origins = [\"http://[::1]:80\"]\n"),
            "websocket.allowed_origins[0]",
            "write \"http://[::1]\"",
        ),
        (
            format!("{MINIMAL}methods = []\n"),
            "routes[0].methods",
            "would serve nothing",
        ),
    ];
    for (text, key, says) in cases {
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.reason.contains(says), "{err}");
    }
    // Origins no browser sends would match nothing; CORS and WebSocket
    // read them alike.
    for (origin, says) in [
        (
            "https://*.example.com",
            "wildcards inside an origin are not supported",
        ),
        (
            "https://app.example.com:65536",
            "port \"65536\" is not a number from 1 to 65535",
        ),
        (
            "https://app.example.com:0",
            "is not a number from 1 to 65535",
        ),
        (
            "https://app.example.com:",
            "is not a number from 1 to 65535",
        ),
        ("http://[::1]x", "is not a number from 1 to 65535"),
        ("http://[::zz]", "IPv6 address"),
        ("https://user@app.example.com", "is not a host name"),
        ("https://bücher.example", "punycode"),
        (
            "https://app.example.com/path?q",
            "write \"https://app.example.com\"",
        ),
        (
            "http://localhost:03000",
            "browsers send the port \"03000\" as 3000",
        ),
        ("http://[0:0:0:0:0:0:0:1]", "as [::1]: write that"),
        (
            "http://[::FFFF:127.0.0.1]",
            "as [::ffff:7f00:1]: write that",
        ),
    ] {
        for table in ["cors", "websocket"] {
            let err = Config::from_toml(&format!(
                "{MINIMAL}\n[{table}]\nallowed_origins = [\"{origin}\"]\n"
            ))
            .unwrap_err();
            assert_eq!(err.key, format!("{table}.allowed_origins[0]"), "{err}");
            assert!(err.reason.contains(says), "{origin}: {err}");
        }
    }
    let ok = MINIMAL.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:8081\"",
    );
    Config::from_toml(&format!(
        "{ok}\n[cors]\nallowed_origins = [\"http://localhost:3000\", \"http://x.example:443\", \"https://[::1]:80\", \"http://my_frontend:3000\", \"http://[::ffff:7f00:1]\"]\n"
    ))
    .unwrap();
    // Origins are compared with their scheme and host in any case, and
    // written in any case too.
    let config = Config::from_toml(&format!(
        "{ok}\n[cors]\nallowed_origins = [\"HTTPS://App.Example.com\"]\n\
         [websocket]\nallowed_origins = [\"Http://App.Example.com\"]\n"
    ))
    .unwrap();
    assert!(config
        .cors
        .as_ref()
        .unwrap()
        .allows_origin("https://app.example.com"));
    assert_eq!(
        config.websocket.allowed_origins,
        ["Http://App.Example.com"],
        "kept as written, compared in any case"
    );
}

#[test]
fn a_duplicate_key_is_named() {
    let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n")
        .unwrap_err();
    assert_eq!(
        err.reason, "line 3, column 1: duplicate key `listen`",
        "{err}"
    );
    let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\n[server]\n").unwrap_err();
    assert!(err.reason.contains("`server`"), "{err}");
}

#[test]
fn a_proto_written_as_a_path_through_its_include_folder_is_found_from_any_working_directory() {
    let dir = crate::scratch::ScratchDir::new("protos");
    std::fs::create_dir_all(dir.join("proto/acme/v1")).unwrap();
    std::fs::write(
        dir.join("proto/acme/v1/echo.proto"),
        "syntax = \"proto3\";\n",
    )
    .unwrap();
    let absolute = dir.join("proto/acme/v1/echo.proto").display().to_string();
    for entry in [
        "acme/v1/echo.proto",
        "proto/acme/v1/echo.proto",
        absolute.as_str(),
    ] {
        let text =
            format!("{MINIMAL}\n[descriptors]\nproto_paths = [\"proto\"]\nprotos = [{entry:?}]\n");
        let c = Config::from_str_in(&text, "portico.toml", &dir).unwrap();
        assert_eq!(c.descriptors.protos, ["acme/v1/echo.proto"], "{entry}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_proto_named_through_a_folder_that_another_folder_shadows_is_refused() {
    // Two include folders hold s/x.proto: the compiler reads the first
    // folder's, so naming the second's by its path would load a schema
    // other than the one named.
    let dir = crate::scratch::ScratchDir::new("shadow");
    for folder in ["a", "b"] {
        std::fs::create_dir_all(dir.join(folder).join("s")).unwrap();
        std::fs::write(dir.join(folder).join("s/x.proto"), "syntax = \"proto3\";\n").unwrap();
    }
    let config = |entry: &str| {
        let text = format!(
            "{MINIMAL}\n[descriptors]\nproto_paths = [\"a\", \"b\"]\nprotos = [\"s/y.proto\", {entry:?}]\n"
        );
        Config::from_str_in(&text, "portico.toml", &dir)
    };
    let err = config("b/s/x.proto").unwrap_err();
    assert_eq!(err.key, "descriptors.protos[1]", "{err}");
    assert!(
        err.reason.starts_with("b/s/x.proto: is shadowed by ")
            && err.reason.contains("a/s/x.proto")
            && err.reason.contains("of the same name (s/x.proto)"),
        "{err}"
    );
    // The first folder's file by its path, or the name itself, is what the
    // compiler reads: no ambiguity.
    for entry in ["a/s/x.proto", "s/x.proto"] {
        let c = config(entry).unwrap();
        assert_eq!(c.descriptors.protos[1], "s/x.proto", "{entry}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_proto_path_that_is_not_a_folder_is_named() {
    let text = format!(
        "{MINIMAL}\n[descriptors]\nproto_paths = [\"proto\", \"no-such-folder\"]\nprotos = [\"a.proto\"]\n"
    );
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "descriptors.proto_paths[1]");
    assert!(
        err.reason.contains("no-such-folder: does not exist"),
        "{err}"
    );
    let text = text.replace("no-such-folder", "Cargo.toml");
    let err = Config::from_toml(&text).unwrap_err();
    assert!(err.reason.contains("is not a folder"), "{err}");
}

#[test]
fn a_missing_key_is_named_as_the_key() {
    let err = Config::from_toml("").unwrap_err();
    assert_eq!(err.key, "server");
    assert_eq!(err.reason, "is required");
    let text = MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "balance = \"round_robin\"",
    );
    let err = Config::from_toml(&text).unwrap_err();
    assert!(err.key.starts_with("upstreams"), "{err}");
}

#[test]
fn a_keys_file_that_does_not_parse_is_named_with_line_and_column() {
    let dir = crate::scratch::ScratchDir::new("keys");
    std::fs::write(
        dir.join("keys.toml"),
        "# consumers\nacme = \"ab\"\nbroken\n",
    )
    .unwrap();
    let text = format!(
        "{MINIMAL}\n[authenticators.k]\nkind = \"api_key\"\nheader = \"x-api-key\"\nkeys_file = \"keys.toml\"\n"
    );
    let err = Config::from_str_in(&text, "portico.toml", &dir).unwrap_err();
    assert_eq!(err.key, "authenticators.k.keys_file");
    assert!(err.reason.contains("line 3, column"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The edge takes an API key's query parameter out of every query: one
/// the gateway reads itself would be taken from it.
#[test]
fn an_api_key_parameter_the_gateway_reads_itself_is_refused() {
    let dir = crate::scratch::ScratchDir::new("keyparam");
    std::fs::write(
        dir.join("keys.toml"),
        format!("acme = \"{}\"\n", "a".repeat(64)),
    )
    .unwrap();
    for name in ["method", "message", "connect"] {
        let text = format!(
            "{MINIMAL}\n[authenticators.k]\nkind = \"api_key\"\nheader = \"x-api-key\"\nquery_param = {name:?}\nkeys_file = \"keys.toml\"\n"
        );
        let err = Config::from_str_in(&text, "portico.toml", &dir).unwrap_err();
        assert_eq!(err.key, "authenticators.k.query_param", "{name}: {err}");
        assert!(err.reason.contains("cannot carry an API key"), "{err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_claim_cannot_be_forwarded_as_a_credential_or_the_request_id() {
    for header in [
        "authorization",
        "cookie",
        "x-request-id",
        "x-forwarded-for",
        "grpc-timeout",
        "x!sub",
    ] {
        let text = format!(
            "{MINIMAL}\n[authenticators.u]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-signing\"\nforward_claims = {{ sub = \"{header}\" }}\n"
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(
            err.key, "authenticators.u.forward_claims.sub",
            "{header}: {err}"
        );
    }
}

#[test]
fn a_claim_cannot_be_forwarded_where_an_api_key_authenticator_reads_its_keys() {
    for (header, keys_header) in [("x-api-key", None), ("x-partner", Some("X-Partner"))] {
        let keys_header = keys_header.map_or(String::new(), |h| format!("header = \"{h}\"\n"));
        let text = format!(
            "{MINIMAL}\n[authenticators.u]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-signing\"\nforward_claims = {{ sub = \"{header}\" }}\n\n\
             [authenticators.keys]\nkind = \"api_key\"\n{keys_header}keys_file = \"{}\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/api_keys.toml")
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(
            err.key, "authenticators.u.forward_claims.sub",
            "{header}: {err}"
        );
        assert!(err.to_string().contains("\"keys\""), "{err}");
    }
}

#[test]
fn two_consumers_with_one_key_is_a_config_error() {
    let dir = crate::scratch::ScratchDir::new("dup-keys");
    let digest = "a8becd61".repeat(8);
    std::fs::write(
        dir.join("keys.toml"),
        format!("acme = \"{digest}\"\nglobex = \"sha256:{digest}\"\n"),
    )
    .unwrap();
    let text = format!(
        "{MINIMAL}\n[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{}\"\n",
        dir.join("keys.toml").display()
    );
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "authenticators.keys.keys_file", "{err}");
    assert!(
        err.to_string()
            .contains("acme and globex have the same key"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// What `serve` would refuse in an upstream's TLS files, the config
/// refuses at load (`check`, a reload), naming the key.
#[test]
fn upstream_tls_files_are_read_at_load_and_a_bad_one_names_its_key() {
    let fixture = |f: &str| format!("{}/tests/fixtures/{f}", env!("CARGO_MANIFEST_DIR"));
    let descriptors = fixture("../../descriptors/demo.binpb");
    let dir = crate::scratch::ScratchDir::new("client-chain");
    let issuer_first = dir.join("client-chain.pem");
    std::fs::write(
        &issuer_first,
        [fixture("tls/client-ca.pem"), fixture("tls/client.pem")]
            .map(|f| std::fs::read_to_string(f).unwrap())
            .concat(),
    )
    .unwrap();
    for (files, key, says) in [
        (
            format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
                issuer_first.display(),
                fixture("tls/client.key")
            ),
            "upstreams.backend.tls_cert_file",
            "client.key is that of certificate 2 of the 2 here, not the first",
        ),
        (
            format!("tls_ca_file = \"{descriptors}\""),
            "upstreams.backend.tls_ca_file",
            "holds no certificate",
        ),
        (
            format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{descriptors}\"",
                fixture("tls/client.pem")
            ),
            "upstreams.backend.tls_key_file",
            "no usable private key",
        ),
        (
            format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
                fixture("tls/client.pem"),
                fixture("tls/server.key")
            ),
            "upstreams.backend.tls_key_file",
            "is not the key of the certificate",
        ),
    ] {
        let text = MINIMAL.replace(
            "endpoints = [\"127.0.0.1:50051\"]",
            &format!("endpoints = [\"127.0.0.1:50051\"]\n{files}"),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, key, "{files}: {err}");
        assert!(err.to_string().contains(says), "{files}: {err}");
    }
    // The leaf written twice (`cat cert.pem fullchain.pem`) is first all
    // the same: loaded, as rustls takes it.
    let leaf_twice = dir.join("leaf-twice.pem");
    std::fs::write(
        &leaf_twice,
        std::fs::read_to_string(fixture("tls/client.pem"))
            .unwrap()
            .repeat(2),
    )
    .unwrap();
    Config::from_toml(&MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        &format!(
            "endpoints = [\"127.0.0.1:50051\"]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            leaf_twice.display(),
            fixture("tls/client.key")
        ),
    ))
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let good = MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        &format!(
            "endpoints = [\"127.0.0.1:50051\"]\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            fixture("tls/ca.pem"),
            fixture("tls/client.pem"),
            fixture("tls/client.key")
        ),
    );
    Config::from_toml(&good).unwrap();
}

/// A rotation rewrites an upstream's TLS files in place: the same paths,
/// new contents. The config read after it is a changed upstream, so a
/// reload connects with the new files instead of keeping the old ones.
#[test]
fn an_upstream_whose_tls_files_changed_in_place_is_a_changed_upstream() {
    let fixture = |f: &str| format!("{}/tests/fixtures/tls/{f}", env!("CARGO_MANIFEST_DIR"));
    let dir = crate::scratch::ScratchDir::new("rotate");
    let ca = dir.join("ca.pem");
    let text = MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        &format!(
            "endpoints = [\"127.0.0.1:50051\"]\ntls_ca_file = \"{}\"",
            ca.display()
        ),
    );
    std::fs::copy(fixture("ca.pem"), &ca).unwrap();
    let before = Config::from_toml(&text).unwrap();
    let again = Config::from_toml(&text).unwrap();
    assert_eq!(before.upstreams[0], again.upstreams[0], "nothing changed");
    std::fs::copy(fixture("client-ca.pem"), &ca).unwrap();
    let after = Config::from_toml(&text).unwrap();
    assert_ne!(before.upstreams[0], after.upstreams[0]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn waits_that_contradict_each_other_are_config_errors() {
    for (table, key) in [
        (
            "[upstreams.backend.health_check]\ninterval = \"1s\"\ntimeout = \"5s\"\n",
            "upstreams.backend.health_check.timeout",
        ),
        (
            "[upstreams.backend.retry]\nbackoff_base = \"2s\"\nbackoff_max = \"1s\"\n",
            "upstreams.backend.retry.backoff_base",
        ),
    ] {
        let text = MINIMAL.replace("[[routes]]", &format!("{table}\n[[routes]]"));
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.to_string().contains("is longer than"), "{err}");
    }
}

#[test]
fn the_policy_summary_says_what_a_cache_keys_on_and_covers() {
    let text = MINIMAL.replace(
        "upstream = \"backend\"",
        "upstream = \"backend\"\ncache = { ttl = \"30s\", vary = [\"Accept-Language\"], methods = [\"Get\"] }",
    );
    let c = Config::from_toml(&text).unwrap();
    let summary = c.policy_summary(&c.routes[0]);
    assert!(
        summary.contains("cache (ttl 30s, ")
            && summary.contains(", vary accept-language, methods Get)"),
        "{summary}"
    );
}

#[test]
fn an_http2_window_outside_the_rfc_range_names_the_range_whatever_its_size() {
    for value in ["1000", "2147483648", "4294967296", "99999999999", "-1"] {
        let text = MINIMAL.replace(
            "[upstreams",
            &format!("[server.limits]\nhttp2_stream_window_bytes = {value}\n\n[upstreams"),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(
            err.key, "server.limits.http2_stream_window_bytes",
            "{value}"
        );
        assert!(
            err.reason.contains("between 65535 and 2147483647"),
            "{value}: {err}"
        );
    }
    let text = MINIMAL.replace(
        "[upstreams",
        "[server.limits]\nhttp2_connection_window_bytes = 2147483647\n\n[upstreams",
    );
    let c = Config::from_toml(&text).unwrap();
    assert_eq!(c.server.limits.http2_connection_window_bytes, 2147483647);
}

#[test]
fn dns_refresh_without_dns_is_refused_naming_it() {
    let dir = crate::scratch::ScratchDir::new("dnsr");
    let file = dir.join("endpoints.txt");
    std::fs::write(&file, "127.0.0.1:1\n").unwrap();
    for source in [
        "endpoints = [\"127.0.0.1:1\"]".to_owned(),
        format!("endpoints_file = {:?}", file.display().to_string()),
    ] {
        let text = MINIMAL.replace(
            "endpoints = [\"127.0.0.1:50051\"]",
            &format!("{source}\ndns_refresh = \"1s\""),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "upstreams.backend.dns_refresh", "{source}: {err}");
        assert!(err.reason.contains("only applies with dns"), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_websocket_token_parameter_that_names_nothing_or_the_method_is_refused() {
    for name in ["", "method"] {
        let text = format!("{MINIMAL}\n[websocket]\ntoken_query_param = {name:?}\n");
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "websocket.token_query_param", "{err}");
        assert!(err.reason.contains("cannot carry a token"), "{err}");
    }
}

/// An API key's consumer holds no scopes: a route that asks its callers
/// for scopes and takes only keys would refuse everyone.
#[test]
fn scopes_on_a_route_that_takes_only_api_keys_are_a_config_error() {
    let keys = format!(
        "{}/tests/fixtures/api_keys.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let sections = format!(
        "[authenticators.keys]\nkind = \"api_key\"\nkeys_file = \"{keys}\"\n\
         [authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-keys\"\n"
    );
    let route = |auth: &str| {
        format!(
            "{}\n{sections}",
            MINIMAL.replace(
                "upstream = \"backend\"\n",
                &format!("upstream = \"backend\"\nauth = {auth}\nauthorize = {{ scopes = [\"read\"] }}\n"),
            )
        )
    };
    let err = Config::from_toml(&route("\"keys\"")).unwrap_err();
    assert_eq!(err.key, "routes[0].authorize.scopes", "{err}");
    assert!(err.reason.contains("hold no scopes"), "{err}");
    // With a token authenticator beside the keys, scopes can be held.
    Config::from_toml(&route("[\"keys\", \"users\"]")).unwrap();
    // Nor a claim but its `sub` and `consumer`.
    let claims = |auth: &str, claims: &str| {
        route(auth).replace(
            "authorize = { scopes = [\"read\"] }",
            &format!("authorize = {{ claims = {{ {claims} }} }}"),
        )
    };
    let err = Config::from_toml(&claims("\"keys\"", "tenant = \"acme\"")).unwrap_err();
    assert_eq!(err.key, "routes[0].authorize.claims.tenant", "{err}");
    assert!(err.reason.contains("sub, consumer"), "{err}");
    Config::from_toml(&claims("\"keys\"", "consumer = \"acme\"")).unwrap();
    Config::from_toml(&claims("[\"keys\", \"users\"]", "tenant = \"acme\"")).unwrap();
}

/// A scope no token can hold and a cookie no client can send would each
/// load and then refuse, or fail to read, every caller: both are named.
#[test]
fn a_scope_or_cookie_name_no_caller_can_meet_is_a_config_error() {
    let jwt = "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-keys\"\n";
    let config = |route: &str, extra: &str| {
        format!(
            "{}\n{jwt}{extra}",
            MINIMAL.replace(
                "upstream = \"backend\"\n",
                &format!("upstream = \"backend\"\nauth = \"users\"\n{route}\n"),
            )
        )
    };
    let scopes = |list: &str| config(&format!("authorize = {{ scopes = {list} }}"), "");
    let cookie = |name: &str| config("", &format!("cookie = {name:?}\n"));
    let cases = [
        (
            scopes(r#"["read", ""]"#),
            "routes[0].authorize.scopes[1]",
            "not one scope",
        ),
        (
            scopes(r#"["orders.read orders.write"]"#),
            "routes[0].authorize.scopes[0]",
            "split at spaces",
        ),
        (cookie(""), "authenticators.users.cookie", "no cookie name"),
        (
            cookie("a b;c"),
            "authenticators.users.cookie",
            "no cookie name",
        ),
    ];
    for (text, key, says) in cases {
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.reason.contains(says), "{err}");
    }
    Config::from_toml(&scopes(r#"["orders.read", "orders:write"]"#)).unwrap();
    Config::from_toml(&cookie("__Host-session")).unwrap();
}

#[test]
fn a_health_check_names_what_its_upstreams_protocol_checks() {
    for (protocol, check, key, says) in [
        (
            "grpc",
            "path = \"/healthz\"",
            "upstreams.backend.health_check.path",
            "name a `service` instead",
        ),
        (
            "http",
            "service = \"foo.v1.Foo\"",
            "upstreams.backend.health_check.service",
            "name a `path` instead",
        ),
        (
            "http",
            "path = \"healthz\"",
            "upstreams.backend.health_check.path",
            "must start with '/'",
        ),
        // Refused at load, not by every check at run time (which would
        // take every endpoint out of rotation).
        (
            "http",
            "path = \"/a b\"",
            "upstreams.backend.health_check.path",
            "\"/a b\" is not a path to GET",
        ),
        (
            "http",
            "path = \"/a#b\"",
            "upstreams.backend.health_check.path",
            "fragment",
        ),
        (
            "http",
            "path = \"/é\"",
            "upstreams.backend.health_check.path",
            "non-ASCII",
        ),
        (
            "http",
            "path = \"/a%zz\"",
            "upstreams.backend.health_check.path",
            "two hex digits",
        ),
    ] {
        let text = MINIMAL.replace(
            "endpoints = [\"127.0.0.1:50051\"]\n",
            &format!(
                "endpoints = [\"127.0.0.1:50051\"]\nprotocol = \"{protocol}\"\nhealth_check = {{ {check} }}\n"
            ),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, key, "{protocol}");
        assert!(err.reason.contains(says), "{protocol}: {err}");
    }
}

#[test]
fn a_message_bound_past_what_a_length_prefix_can_say_is_refused() {
    let with = |v: &str| {
        MINIMAL.replace(
            "[upstreams",
            &format!("[server.limits]\nmax_grpc_message_bytes = {v}\n\n[upstreams"),
        )
    };
    let err = Config::from_toml(&with("5000000000")).unwrap_err();
    assert_eq!(err.key, "server.limits.max_grpc_message_bytes");
    assert!(err.reason.contains("32-bit length prefix"), "{err}");
    let ok = Config::from_toml(&with("4294967295")).unwrap();
    assert_eq!(ok.server.limits.max_grpc_message_bytes, 4_294_967_295);
}

#[test]
fn a_request_target_bound_no_request_could_meet_or_reach_is_refused() {
    let with = |v: &str| {
        MINIMAL.replace(
            "[upstreams",
            &format!("[server.limits]\nmax_request_target_bytes = {v}\n\n[upstreams"),
        )
    };
    for v in ["10", "255", "65535", "100000"] {
        let err = Config::from_toml(&with(v)).unwrap_err();
        assert_eq!(err.key, "server.limits.max_request_target_bytes", "{v}");
        assert!(err.reason.contains("from 256"), "{v}: {err}");
    }
    for v in [256, 65534] {
        let ok = Config::from_toml(&with(&v.to_string())).unwrap();
        assert_eq!(ok.server.limits.max_request_target_bytes, v);
    }
}

/// A client certificate's principal has a fixed set of claims: a route
/// that only certificates authenticate, asking for another, would refuse
/// every caller.
#[test]
fn a_claim_rule_no_certificate_can_meet_is_a_config_error() {
    let fixture = |f: &str| format!("{}/tests/fixtures/tls/{f}", env!("CARGO_MANIFEST_DIR"));
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
        fixture("server.pem"),
        fixture("server.key"),
        fixture("client-ca.pem")
    );
    let route = |claims: &str| {
        MINIMAL
            .replace("[upstreams", &format!("{tls}\n[authenticators.mesh]\nkind = \"client_cert\"\n\n[upstreams"))
            .replace(
                "upstream = \"backend\"\n",
                &format!("upstream = \"backend\"\nauth = \"mesh\"\nauthorize = {{ claims = {{ {claims} }} }}\n"),
            )
    };
    let err = Config::from_toml(&route("tenant = \"acme\"")).unwrap_err();
    assert_eq!(err.key, "routes[0].authorize.claims.tenant", "{err}");
    assert!(err.reason.contains("no claim \"tenant\""), "{err}");
    assert!(err.reason.contains("x5t#S256"), "{err}");
    Config::from_toml(&route("san_dns = \"orders.svc\"")).unwrap();
}

/// No pings to a backend unless configured: stock gRPC servers close a
/// connection pinged more often than every 5 minutes without data
/// ("too many pings"), and every quiet stream on it with it.
#[test]
fn upstream_keepalive_pings_only_when_configured() {
    let interval =
        |text: &str| Config::from_toml(text).map(|c| c.upstreams[0].connection.keepalive_interval);
    assert_eq!(interval(MINIMAL).unwrap(), None);
    let with = |v: &str| {
        MINIMAL.replace(
            "endpoints = [\"127.0.0.1:50051\"]",
            &format!("endpoints = [\"127.0.0.1:50051\"]\nkeepalive_interval = \"{v}\""),
        )
    };
    assert_eq!(
        interval(&with("5m")).unwrap(),
        Some(std::time::Duration::from_secs(300))
    );
    let err = interval(&with("0s")).unwrap_err();
    assert_eq!(err.key, "upstreams.backend.keepalive_interval", "{err}");
    // A timeout for pings never sent would do nothing: said, as a
    // `dns_refresh` without `dns` is.
    let text = MINIMAL.replace(
        "endpoints = [\"127.0.0.1:50051\"]",
        "endpoints = [\"127.0.0.1:50051\"]\nkeepalive_timeout = \"5s\"",
    );
    let err = interval(&text).unwrap_err();
    assert_eq!(err.key, "upstreams.backend.keepalive_timeout", "{err}");
    assert!(
        err.to_string()
            .contains("only applies with keepalive_interval"),
        "{err}"
    );
}

#[test]
fn zero_is_taken_where_it_means_none() {
    use std::time::Duration;
    let text = MINIMAL
        .replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:8080\"\ndrain_timeout = \"0s\"",
        )
        .replace(
            "[[routes]]",
            "[upstreams.backend.retry]\nbackoff_base = \"0s\"\nbackoff_max = \"0s\"\n\
             [cors]\nallowed_origins = [\"https://app.example\"]\nmax_age = \"0s\"\n\
             [authenticators.opaque]\nkind = \"introspection\"\n\
             introspection_url = \"http://127.0.0.1:9/introspect\"\nclient_id = \"g\"\n\
             client_secret = \"s\"\ncache_ttl = \"0s\"\nnegative_cache_ttl = \"0s\"\n\
             [ext_authz.opa]\ngrpc = \"127.0.0.1:9\"\ncache_ttl = \"0s\"\n\
             [[routes]]",
        );
    let c = Config::from_toml(&text).unwrap();
    assert_eq!(c.server.drain_timeout, Duration::ZERO);
    assert_eq!(c.upstreams[0].retry.backoff_base, Duration::ZERO);
    assert_eq!(c.upstreams[0].retry.backoff_max, Duration::ZERO);
    assert_eq!(c.cors.as_ref().unwrap().max_age, Duration::ZERO);
    let crate::policy::auth::config::AuthMethod::Introspection(i) = &c.authenticators[0].method
    else {
        panic!("an introspection authenticator")
    };
    assert_eq!(
        (i.cache_ttl, i.negative_cache_ttl),
        (Duration::ZERO, Duration::ZERO)
    );
    assert_eq!(
        c.ext_authz[0].cache_ttl, None,
        "as with no cache_ttl: ask every call"
    );

    // Where zero would mean "never", it is refused, naming the key.
    let text = MINIMAL.replace(
        "[[routes]]",
        "[upstreams.backend.health_check]\ninterval = \"0s\"\n[[routes]]",
    );
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "upstreams.backend.health_check.interval", "{err}");
    assert!(
        err.to_string().contains("must be greater than zero"),
        "{err}"
    );
}

#[test]
fn limits_past_what_the_gateway_can_hold_are_refused_at_load() {
    for (table, key) in [
        (
            "[server.limits]\nmax_header_count = 1000000000000\n",
            "server.limits.max_header_count",
        ),
        (
            "[server.limits]\nmax_connections = 18446744073709551615\n",
            "server.limits.max_connections",
        ),
        (
            "[websocket]\nmax_in_flight = 18446744073709551615\n",
            "websocket.max_in_flight",
        ),
        (
            "[tracing]\nendpoint = \"http://127.0.0.1:4317\"\nqueue_size = 18446744073709551615\n",
            "tracing.queue_size",
        ),
    ] {
        let text = format!(
            "{table}{}",
            MINIMAL.replace("[server]\nlisten = \"127.0.0.1:8080\"\n", "")
        );
        let text = format!("[server]\nlisten = \"127.0.0.1:8080\"\n{text}");
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.to_string().contains("over the most allowed"), "{err}");
    }
}

#[test]
fn an_endpoint_is_a_host_and_port_a_uri_can_carry() {
    for bad in [
        "a b:50051",
        " 127.0.0.1:50051",
        "ex%61mple.com:50051",
        "bücher.example:50051",
        "example..com:50051",
        "127.0.0.1:050051",
        "127.0.0.1:0",
        "127.0.0.1:+50",
        "[::1:50051",
        "http://127.0.0.1:50051",
        "999.1.1.1:50051",
        "1.2.3:50051",
        "-a:50051",
        "a-.example:50051",
    ] {
        let text = MINIMAL.replace("127.0.0.1:50051", bad);
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "upstreams.backend.endpoints[0]", "{bad}: {err}");
        assert!(err.to_string().contains("is not \"host:port\""), "{err}");
    }
    for good in [
        "backend_1.internal:50051",
        "[::1]:50051",
        "10.0.0.7:1",
        "1password.example:50051",
        "x-1.example:50051",
    ] {
        let text = MINIMAL.replace("127.0.0.1:50051", good);
        assert!(Config::from_toml(&text).is_ok(), "{good}");
    }
}

#[test]
fn a_name_that_would_break_a_log_line_or_read_as_nothing_is_refused() {
    for (name, says) in [
        (r#""a\nb""#, "control character"),
        (r#""a\tb""#, "control character"),
        (r#""""#, "may not be empty"),
        (r#"" ""#, "may not be empty"),
    ] {
        let text = MINIMAL.replace(
            "[[routes]]",
            &format!("[upstreams.{name}]\nendpoints = [\"127.0.0.1:1\"]\n\n[[routes]]"),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert!(err.key.starts_with("upstreams."), "{name}: {err}");
        assert!(err.reason.contains(says), "{name}: {err}");
    }
    for table in ["authenticators", "ext_authz"] {
        let text = format!("{MINIMAL}\n[{table}.\"a\\nb\"]\n");
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, format!("{table}.\"a\\nb\""), "{err}");
    }
    // Any other printable name, spaces and non-ASCII letters too, loads.
    let text = MINIMAL.replace(
        "[[routes]]",
        "[upstreams.\"bibliothèque v2\"]\nendpoints = [\"127.0.0.1:1\"]\n\n[[routes]]",
    );
    Config::from_toml(&text).unwrap();
}

#[test]
fn a_retry_on_code_that_is_no_failure_is_refused_saying_so() {
    for (code, says) in [
        ("OK", "is a success, not a failure to retry"),
        ("UNAVAILBLE", "is not a gRPC code name like \"UNAVAILABLE\""),
    ] {
        let text = format!("{MINIMAL}\n[upstreams.backend.retry]\nretry_on = [\"{code}\"]\n");
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "upstreams.backend.retry.retry_on[0]", "{err}");
        assert!(err.reason.contains(says), "{code}: {err}");
    }
}

#[test]
fn an_authorization_service_address_is_quoted_as_written() {
    for (grpc, says) in [
        ("127.0.0.1", "\"127.0.0.1\" names no port (host:port)"),
        (
            "http://127.0.0.1:9/some/path",
            "\"http://127.0.0.1:9/some/path\" has a path",
        ),
        (
            "ftp://127.0.0.1:9",
            "\"ftp://127.0.0.1:9\" is not host:port or an http:// or https:// URL",
        ),
        (
            "127.0.0.1:99999",
            "\"127.0.0.1:99999\": its port \"99999\" is not a port from 1 to 65535",
        ),
        ("127.0.0.1:0", "its port \"0\""),
        ("127.0.0.1:052299", "its port \"052299\""),
        ("127.0.0.1:9#x", "\"127.0.0.1:9#x\" has a fragment"),
    ] {
        let text = MINIMAL.replace(
            "[[routes]]",
            &format!("[ext_authz.opa]\ngrpc = \"{grpc}\"\n[[routes]]"),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "ext_authz.opa.grpc", "{grpc}");
        assert!(err.reason.contains(says), "{grpc}: {err}");
    }
    for fine in ["127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9/"] {
        let text = MINIMAL.replace(
            "[[routes]]",
            &format!("[ext_authz.opa]\ngrpc = \"{fine}\"\n[[routes]]"),
        );
        assert!(Config::from_toml(&text).is_ok(), "{fine}");
    }
    // A forward-auth URL: a port no connection could use, or a fragment
    // no request carries.
    for (http, says) in [
        ("http://127.0.0.1:65536/check", "its port \"65536\""),
        ("http://127.0.0.1:0/check", "its port \"0\""),
        ("http://127.0.0.1:/check", "its port \"\""),
        ("http://[::1]:99999/check", "its port \"99999\""),
        ("http://127.0.0.1:9/check?t=1#part", "has a fragment"),
    ] {
        let text = MINIMAL.replace(
            "[[routes]]",
            &format!("[ext_authz.gate]\nhttp = \"{http}\"\n[[routes]]"),
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, "ext_authz.gate.http", "{http}");
        assert!(err.reason.contains(says), "{http}: {err}");
    }
    for fine in ["http://127.0.0.1/check", "https://[::1]:8443/check?t=1"] {
        let text = MINIMAL.replace(
            "[[routes]]",
            &format!("[ext_authz.gate]\nhttp = \"{fine}\"\n[[routes]]"),
        );
        assert!(Config::from_toml(&text).is_ok(), "{fine}");
    }
    // And Redis's.
    let text = format!("{MINIMAL}\n[redis]\nurl = \"redis://:pw@127.0.0.1:99999/0\"\n");
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "redis.url");
    assert!(err.reason.contains("its port \"99999\""), "{err}");
    assert!(!err.reason.contains("pw"), "redacted: {err}");
}

/// A wait the file does not write is the default's: an error about it says
/// so, since there is no such key in the file to fix.
#[test]
fn a_default_that_contradicts_a_written_wait_is_named_as_the_default() {
    for (section, key, says) in [
        (
            "[upstreams.backend.health_check]\ninterval = \"500ms\"\n",
            "upstreams.backend.health_check.timeout",
            "the default timeout, 1s, is longer than the interval (500ms)",
        ),
        (
            "[upstreams.backend.health_check]\ninterval = \"500ms\"\ntimeout = \"2s\"\n",
            "upstreams.backend.health_check.timeout",
            "2s is longer than the interval (500ms)",
        ),
        (
            "[upstreams.backend.health_check]\ntimeout = \"6s\"\n",
            "upstreams.backend.health_check.timeout",
            "6s is longer than the default interval (5s)",
        ),
        (
            "[upstreams.backend.retry]\nbackoff_max = \"10ms\"\n",
            "upstreams.backend.retry.backoff_base",
            "the default backoff_base, 25ms, is longer than backoff_max (10ms)",
        ),
        (
            "[upstreams.backend.retry]\nbackoff_base = \"1s\"\n",
            "upstreams.backend.retry.backoff_base",
            "1s is longer than the default backoff_max (250ms)",
        ),
    ] {
        let text = MINIMAL.replace("[[routes]]", &format!("{section}\n[[routes]]"));
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(err.key, key, "{section}");
        assert!(err.reason.starts_with(says), "{section}: {err}");
    }
}

#[test]
fn a_rate_is_summarised_as_a_person_would_write_it() {
    assert_eq!(rate_text(1e300), "1e300");
    assert_eq!(rate_text(2.5), "2.5");
    assert_eq!(rate_text(0.0000000317), "0.0000000317");
    assert_eq!(rate_text(1000.0), "1000");
}

/// While the edge drops client headers named with `_` (the default), a
/// setting that reads one would never see it: refused, naming the key.
#[test]
fn a_header_name_with_an_underscore_is_refused_while_such_headers_are_dropped() {
    let with_route = |extra: &str| {
        MINIMAL.replace(
            "upstream = \"backend\"\n",
            &format!("upstream = \"backend\"\n{extra}\n"),
        )
    };
    let cases = [
        (
            format!("[metadata]\nforward = [\"x-a\", \"x_tenant\"]\n{MINIMAL}"),
            "metadata.forward[1]",
        ),
        (
            with_route("rate_limit = { requests_per_second = 1, key = \"header:x_tenant\" }"),
            "routes[0].rate_limit.key",
        ),
        (
            with_route("cache = { ttl = \"1s\", vary = [\"x_tenant\"] }"),
            "routes[0].cache.vary[0]",
        ),
        (
            format!("[ext_authz.opa]\ngrpc = \"127.0.0.1:9191\"\ninclude_headers = [\"x_tenant\"]\n{MINIMAL}"),
            "ext_authz.opa.include_headers[0]",
        ),
        (
            format!("[ext_authz.gate]\nhttp = \"http://127.0.0.1:4181/check\"\nupstream_headers = [\"x_gate\"]\n{MINIMAL}"),
            "ext_authz.gate.upstream_headers[0]",
        ),
        (
            format!("[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-keys\"\nforward_claims = {{ sub = \"x_user_id\" }}\n{MINIMAL}"),
            "authenticators.users.forward_claims.sub",
        ),
        (
            MINIMAL.replace(
                "endpoints = [\"127.0.0.1:50051\"]",
                "endpoints = [\"127.0.0.1:50051\"]\nbalance = \"consistent_hash\"\nhash_key = \"header:x_tenant\"",
            ),
            "upstreams.backend.hash_key",
        ),
    ];
    for (text, key) in &cases {
        let err = Config::from_toml(text).unwrap_err();
        assert_eq!(err.key, *key, "{err}");
        assert!(err.reason.contains("holds `_`"), "{err}");
        assert!(err.reason.contains("name it with `-`"), "{err}");
        let allowed = format!("[metadata]\nheaders_with_underscores = \"allow\"\n{text}").replacen(
            "[metadata]\nforward",
            "forward",
            1,
        );
        Config::from_toml(&allowed).unwrap_or_else(|e| panic!("{key} when allowed: {e}"));
    }
    let err = Config::from_toml(&format!(
        "[metadata]\nheaders_with_underscores = \"keep\"\n{MINIMAL}"
    ))
    .unwrap_err();
    assert_eq!(err.key, "metadata.headers_with_underscores", "{err}");
    assert!(
        Config::from_toml(MINIMAL)
            .unwrap()
            .metadata
            .drop_underscored
    );
}

/// Settings that only a key source they belong to reads are refused
/// without it, as `jwks_ca_file` is.
#[test]
fn settings_with_nothing_to_apply_to_are_config_errors() {
    let fixture = |f: &str| format!("{}/tests/fixtures/{f}", env!("CARGO_MANIFEST_DIR"));
    let jwt = |extra: &str| {
        format!(
            "[authenticators.users]\nalgorithm = \"RS256\"\npublic_key_file = \"{}\"\n{extra}\n{MINIMAL}",
            fixture("jwt_rs256_public.pem")
        )
    };
    for at in ["jwks_min_refresh", "jwks_max_age"] {
        let err = Config::from_toml(&jwt(&format!("{at} = \"10m\""))).unwrap_err();
        assert_eq!(err.key, format!("authenticators.users.{at}"), "{err}");
        assert!(err.reason.contains("only applies with a JWK set"), "{err}");
    }
    Config::from_toml(&jwt("")).unwrap();
    let authz =
        |extra: &str| format!("[ext_authz.opa]\ngrpc = \"127.0.0.1:9191\"\n{extra}\n{MINIMAL}");
    for (extra, says) in [
        ("cache_max_entries = 100", "only applies with a cache_ttl"),
        (
            "cache_ttl = \"5s\"\ncache_max_entries = 0",
            "keeps no answer",
        ),
    ] {
        let err = Config::from_toml(&authz(extra)).unwrap_err();
        assert_eq!(err.key, "ext_authz.opa.cache_max_entries", "{err}");
        assert!(err.reason.contains(says), "{err}");
    }
    Config::from_toml(&authz("cache_ttl = \"5s\"\ncache_max_entries = 100")).unwrap();
}

/// A public key of another kind than the algorithm verifies with is
/// refused naming the file it came from.
#[test]
fn a_public_key_of_the_wrong_kind_names_its_file() {
    let fixture = format!(
        "{}/tests/fixtures/jwt_rs256_public.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = format!(
        "[authenticators.users]\nalgorithm = \"ES256\"\npublic_key_file = \"{fixture}\"\n{MINIMAL}"
    );
    let err = Config::from_toml(&text).unwrap_err();
    assert_eq!(err.key, "authenticators.users.public_key_file", "{err}");
    assert!(
        err.reason
            .contains("jwt_rs256_public.pem is not a PEM EC public key, which ES256 needs"),
        "{err}"
    );
}

/// A claim forwarded under a header a backend framework would act on (a
/// method or path override, `X-Real-IP`) would let a token's holder steer
/// the backend: refused, as forwarding headers are.
#[test]
fn a_forwarded_claim_may_not_take_an_override_or_forwarding_header() {
    for header in [
        "x-http-method-override",
        "x-original-url",
        "x-real-ip",
        "forwarded",
    ] {
        let text = format!(
            "[authenticators.users]\nalgorithm = \"HS256\"\nsecret = \"a-secret-long-enough-for-hs256-keys\"\nforward_claims = {{ sub = \"{header}\" }}\n{MINIMAL}"
        );
        let err = Config::from_toml(&text).unwrap_err();
        assert_eq!(
            err.key, "authenticators.users.forward_claims.sub",
            "{header}: {err}"
        );
        assert!(err.reason.contains("sets or reads"), "{header}: {err}");
    }
}
