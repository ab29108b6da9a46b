//! Aggregation: one REST request fans out to several methods and gets one
//! JSON object back, with slow and failing backends handled per the
//! aggregate's `on_error`.

use crate::support;
use support::RouteKeys;

use http::{Method, StatusCode};
use portico::app;
use portico::config::Config;
use std::time::{Duration, Instant};
use support::Harness;

const OVERVIEW: &str = r#"
[[aggregates]]
path = "/v1/shelves/{shelf}/overview"

[[aggregates.calls]]
name = "shelf"
method = "portico.demo.v1.Library/GetShelf"
request = { shelf = "{path.shelf}" }

[[aggregates.calls]]
name = "books"
method = "portico.demo.v1.Library/ListBooks"
request = { parent = "{shelf.name}", pageSize = "{query.limit}" }

[[aggregates.calls]]
name = "firstBook"
method = "portico.demo.v1.Library.GetBook"
request = { name = "{books.books.0.name}" }

[[aggregates.calls]]
name = "headers"
method = "portico.demo.v1.Probe/Headers"
"#;

#[tokio::test]
async fn an_overview_merges_replies_and_fills_requests_from_the_url_and_earlier_replies() {
    let h = Harness::start_with(OVERVIEW, "").await;
    let r = h.client.get("/v1/shelves/1/overview?limit=1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-aggregate-complete"), Some("true"));
    let j = r.json();
    assert_eq!(j["shelf"]["theme"], "Fiction");
    // pageSize came from the query, parent from the shelf call's reply.
    let books = j["books"]["books"].as_array().unwrap();
    assert_eq!(books.len(), 1);
    assert_eq!(j["firstBook"]["title"], "The Left Hand of Darkness");
    assert!(j["headers"]["metadata"].is_object());
    assert!(j.get("errors").is_none());
    // Keys come in the configured order.
    let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["shelf", "books", "firstBook", "headers"]);
}

#[tokio::test]
async fn an_aggregates_calls_carry_the_forwarding_headers_the_gateway_saw() {
    let h = Harness::start_with(OVERVIEW, "").await;
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/shelves/1/overview",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
                ("forwarded", "for=6.6.6.6"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = &r.json()["headers"]["metadata"];
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_ne!(seen["x-forwarded-host"], "evil.example", "{seen}");
    assert!(seen.get("forwarded").is_none(), "{seen}");
}

#[tokio::test]
async fn a_failed_call_fails_the_whole_request_by_default_and_skips_its_dependants() {
    let h = Harness::start_with(OVERVIEW, "").await;
    let r = h.client.get("/v1/shelves/9/overview").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("shelf (portico.demo.v1.Library.GetShelf):"),
        "{message}"
    );
    // The client's bad value is named as such.
    let r = h.client.get("/v1/shelves/1/overview?limit=many").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.text().contains("books"), "{}", r.text());
}

const FLAKY: &str = r#"
[[aggregates]]
path = "/v1/dashboard/{shelf}"
on_error = "{mode}"
timeout = "2s"

[[aggregates.calls]]
name = "shelf"
method = "portico.demo.v1.Library/GetShelf"
request = { shelf = "{path.shelf}" }

[[aggregates.calls]]
name = "slow"
method = "portico.demo.v1.Probe/Sleep"
request = { millis = 3000 }
timeout = "200ms"

[[aggregates.calls]]
name = "broken"
method = "portico.demo.v1.Probe/Fail"
request = { code = 14, message = "replica down" }

[[aggregates.calls]]
name = "afterBroken"
method = "portico.demo.v1.Library/GetShelf"
request = { shelf = "after {broken}" }
"#;

#[tokio::test]
async fn partial_results_carry_an_errors_section_for_the_slow_and_the_failing_call() {
    let h = Harness::start_with(&FLAKY.replace("{mode}", "partial"), "").await;
    let started = Instant::now();
    let r = h.client.get("/v1/dashboard/2").await;
    let took = started.elapsed();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-aggregate-complete"), Some("false"));
    let j = r.json();
    assert_eq!(j["shelf"]["theme"], "History");
    assert!(j.get("slow").is_none() && j.get("broken").is_none());
    let errors = &j["errors"];
    assert_eq!(errors["slow"]["code"], 4, "DEADLINE_EXCEEDED: {errors}");
    assert_eq!(errors["broken"]["code"], 14, "UNAVAILABLE: {errors}");
    assert!(errors["broken"]["message"]
        .as_str()
        .unwrap()
        .contains("replica down"));
    assert_eq!(
        errors["afterBroken"]["code"], 9,
        "FAILED_PRECONDITION: {errors}"
    );
    // The per-call timeout bounded the wait, and the slow call was cancelled
    // at the backend rather than left running.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(support::eventually(|| h.backends.probe.cancelled_sleeps() == 1).await);
}

#[tokio::test]
async fn fail_whole_answers_with_the_first_failure_without_waiting_for_the_slow_call() {
    let h = Harness::start_with(&FLAKY.replace("{mode}", "fail"), "").await;
    let started = Instant::now();
    let r = h.client.get("/v1/dashboard/2").await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.text().contains("broken"), "{}", r.text());
    assert!(support::eventually(|| h.backends.probe.cancelled_sleeps() == 1).await);
}

#[tokio::test]
async fn a_post_aggregate_takes_values_from_the_json_body() {
    let sections = r#"
[[aggregates]]
method = "POST"
path = "/v1/compare"
on_error = "partial"

[[aggregates.calls]]
name = "left"
method = "portico.demo.v1.Library/GetBook"
request = { name = "{body.left}" }

[[aggregates.calls]]
name = "right"
method = "portico.demo.v1.Library/GetBook"
request = { name = "{body.right}" }
"#;
    let h = Harness::start_with(sections, "").await;
    let r = h
        .client
        .json(
            Method::POST,
            "/v1/compare",
            r#"{"left": "shelves/1/books/2", "right": "shelves/2/books/1"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    assert_eq!(j["left"]["title"], "Solaris");
    assert_eq!(j["right"]["title"], "The Guns of August");

    let r = h
        .client
        .json(Method::POST, "/v1/compare", "{not json")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("the JSON is malformed"), "{}", r.text());
    // JSON that is not an object has no members for `{body.NAME}` to read.
    for body in ["[1,2]", "\"shelves/1/books/2\"", "null", "7"] {
        let r = h.client.json(Method::POST, "/v1/compare", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("must be a JSON object"),
            "{body}: {}",
            r.text()
        );
    }

    // A number no double holds is well-formed JSON, refused as such.
    let r = h
        .client
        .json(Method::POST, "/v1/compare", r#"{"left": 1e400}"#)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text().contains("is out of range") && !r.text().contains("malformed"),
        "{}",
        r.text()
    );

    // Too deep is refused in the words a binding's body gets.
    let deep = format!(
        "{{\"left\":\"x\",\"z\":{}{}}}",
        "[".repeat(128),
        "]".repeat(128)
    );
    let r = h.client.json(Method::POST, "/v1/compare", &deep).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("nests deeper than 127"), "{}", r.text());
}

/// An aggregate reads and writes floats as every protocol does: the
/// largest `float` is taken as that float, and a reply's `float` is
/// written in its shortest digits, as the same method's REST binding
/// writes it.
#[tokio::test]
async fn an_aggregate_reads_and_writes_floats_as_a_binding_does() {
    let sections = r#"
[[aggregates]]
method = "POST"
path = "/v1/weigh"

[[aggregates.calls]]
name = "search"
method = "portico.demo.v1.Library/SearchBooks"
request = { weight = "{body.weight}", maxWeight = "{body.maxWeight}" }
"#;
    let h = Harness::start_with(sections, "").await;
    for (weight, max_weight) in [
        ("0.1", "0.1"),
        ("3.4028235e38", "-3.4028235e38"),
        ("3.40282356e38", "1e-45"),
    ] {
        let body = format!(r#"{{"weight": {weight}, "maxWeight": {max_weight}}}"#);
        let direct = h.client.json(Method::POST, "/v1/books:search", &body).await;
        assert_eq!(direct.status, StatusCode::OK, "{body}: {}", direct.text());
        let aggregate = h.client.json(Method::POST, "/v1/weigh", &body).await;
        assert_eq!(
            aggregate.status,
            StatusCode::OK,
            "{body}: {}",
            aggregate.text()
        );
        let received = |j: serde_json::Value| {
            let r = &j["received"];
            (r["weight"].to_string(), r["maxWeight"].to_string())
        };
        let written = received(direct.json());
        assert_eq!(
            received(aggregate.json()["search"].clone()),
            written,
            "{body}"
        );
        if weight == "0.1" {
            assert_eq!(written, ("0.1".to_owned(), "0.1".to_owned()));
        }
    }
}

#[tokio::test]
async fn aggregated_calls_pass_their_routes_policies() {
    let sections = r#"
[authenticators.users]
kind = "api_key"
header = "x-api-key"
keys_file = "{keys}"

[[aggregates]]
path = "/v1/shelves/{shelf}/summary"

[[aggregates.calls]]
name = "shelf"
method = "portico.demo.v1.Library/GetShelf"
request = { shelf = "{path.shelf}" }
"#
    .replace("{keys}", &support::fixture("api_keys.toml"));
    let h = Harness::start_with(&sections, "auth = \"users\"").await;
    let r = h.client.get("/v1/shelves/1/summary").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = h
        .client
        .send(
            Method::GET,
            "/v1/shelves/1/summary",
            &[("x-api-key", "acme-key-123")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn bad_aggregates_are_refused_at_startup_naming_the_key() {
    let cases = [
        (
            "method = \"portico.demo.v1.Nope/Get\"",
            "aggregates[0].calls[0].method",
            "not served by any [[routes]]",
        ),
        (
            "method = \"portico.demo.v1.Feed/Watch\"",
            "aggregates[0].calls[0].method",
            "only unary methods",
        ),
        (
            "method = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"{later.name}\" }",
            "aggregates[0].calls[0].request",
            "listed before this one",
        ),
        (
            "method = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"{path.nope}\" }",
            "aggregates[0].calls[0].request",
            "no variable \"nope\"",
        ),
        (
            "method = \"portico.demo.v1.Library/GetShelf\"\nrequest = { nmae = \"x\" }",
            "aggregates[0].calls[0].request.nmae",
            "has no field",
        ),
        (
            "method = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = 5 }",
            "aggregates[0].calls[0].request",
            "shelf",
        ),
        (
            "method = \"portico.demo.v1.Library/ListBooks\"\nrequest = { parent = \"{path.id}\", genre = \"GENRE_NOPE\" }",
            "aggregates[0].calls[0].request",
            "genre",
        ),
    ];
    for (call, key, reason) in cases {
        let sections = format!(
            "[[aggregates]]\npath = \"/v1/x/{{id}}\"\n[[aggregates.calls]]\nname = \"one\"\n{call}\n"
        );
        let text = support::config_text("127.0.0.1:1".parse().unwrap(), &sections, "");
        let err = match Config::from_toml(&text) {
            Err(e) => e.to_string(),
            Ok(config) => match app::load(config).await {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{call} was accepted"),
            },
        };
        assert!(err.contains(key) && err.contains(reason), "{call}: {err}");
    }
    // Its own method: one OpenAPI can describe and a client can send.
    for method in ["CONNECT", "*", "OPTIONS", "FOO", "HEAD"] {
        let sections = format!(
            "[[aggregates]]\npath = \"/v1/x/{{id}}\"\nmethod = \"{method}\"\n[[aggregates.calls]]\nname = \"one\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\n"
        );
        let text = support::config_text("127.0.0.1:1".parse().unwrap(), &sections, "");
        let err = Config::from_toml(&text).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("aggregates[0].method")
                    && e.contains("GET (the default), POST, PUT, DELETE or PATCH")),
            "{method}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_reference_to_an_earlier_reply_must_name_what_that_reply_holds() {
    // Call "one" lists books; call "two" reads a value out of its reply.
    let after = |first: &str, reference: &str| {
        format!(
            "[[aggregates]]\npath = \"/v1/x/{{id}}\"\n\
             [[aggregates.calls]]\nname = \"one\"\nmethod = \"portico.demo.v1.Library/{first}\"\n\
             [[aggregates.calls]]\nname = \"two\"\nmethod = \"portico.demo.v1.Library/GetBook\"\nrequest = {{ name = \"{reference}\" }}\n"
        )
    };
    let case = |reference: &str| after("ListBooks", reference);
    let load = |sections: String| async move {
        let text = support::config_text("127.0.0.1:1".parse().unwrap(), &sections, "");
        match Config::from_toml(&text) {
            Err(e) => Err(e.to_string()),
            Ok(config) => app::load(config)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    };
    let refused = [
        (
            "{one.bokos.0.name}",
            "ListBooksResponse has no field \"bokos\"",
        ),
        ("{one.books.first.name}", "\"first\" is not an index"),
        ("{one.books.0.nmae}", "Book has no field \"nmae\""),
        ("{one.books.0.name.x}", "inside a string"),
        (
            "{one.books.0.published.seconds}",
            "inside a google.protobuf.Timestamp",
        ),
        (
            "shelf {one.books.0.genre.x}",
            "inside a portico.demo.v1.Genre",
        ),
    ];
    for (reference, reason) in refused {
        let err = load(case(reference)).await.expect_err(reference);
        assert!(
            err.contains("aggregates[0].calls[1].request.name") && err.contains(reason),
            "{reference}: {err}"
        );
    }
    // Replies are written in lowerCamelCase unless the route says otherwise.
    let err = load(after("GetShelf", "{one.book_count}"))
        .await
        .unwrap_err();
    assert!(
        err.contains("the reply writes it as \"bookCount\""),
        "{err}"
    );
    load(after("GetShelf", "{one.bookCount}")).await.unwrap();
    for fine in [
        "{one.books.0.name}",
        "{one.books.3.labels.any-key}",
        "{one.books.0.published}",
        "{one}",
        "{body.anything.at.all}",
    ] {
        load(case(fine))
            .await
            .unwrap_or_else(|e| panic!("{fine}: {e}"));
    }
}

/// A reply's value that the field it fills cannot hold (a number for a
/// string) is the template's mistake, not the client's: INTERNAL, naming
/// the call, the field and the reference.
#[tokio::test]
async fn a_reply_value_the_next_request_cannot_hold_is_the_templates_fault() {
    let h = Harness::start_with(
        "[[aggregates]]\npath = \"/v1/x/{id}\"\n\
         [[aggregates.calls]]\nname = \"one\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"{path.id}\" }\n\
         [[aggregates.calls]]\nname = \"two\"\nmethod = \"portico.demo.v1.Library/GetBook\"\nrequest = { name = \"{one.bookCount}\" }\n\
         [[aggregates]]\npath = \"/v1/y/{id}\"\n\
         [[aggregates.calls]]\nname = \"one\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"{path.id}\" }\n\
         [[aggregates.calls]]\nname = \"two\"\nmethod = \"portico.demo.v1.Library/SearchBooks\"\nrequest = { authors = [\"{query.missing}\", \"{one.name}\", \"{one.bookCount}\"] }\n",
        "",
    )
    .await;
    // An item with no value is left out of the list: the reference blamed
    // is the template's own, not the one the shortened list moved there.
    let r = h.client.get("/v1/y/1").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("takes {one.bookCount}"), "{message}");
    let r = h.client.get("/v1/x/1").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
    assert_eq!(r.json()["code"], 13, "{}", r.text());
    let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains(
            "two (portico.demo.v1.Library.GetBook): its request field name takes {one.bookCount}"
        ) && message.contains("the aggregate's request template needs fixing"),
        "{message}"
    );
}

#[tokio::test]
async fn url_text_fills_bool_and_enum_fields_with_their_json_type() {
    let h = Harness::start_with(
        r#"
[[aggregates]]
path = "/v1/search/{genre}"

[[aggregates.calls]]
name = "search"
method = "portico.demo.v1.Library/SearchBooks"
request = { query = "{query.q}", genre = "{path.genre}", inPrint = "{query.in_print}", minPages = "{query.min}", fields = "{query.fields}", genres = ["{query.g}", "GENRE_FICTION"] }
"#,
        "",
    )
    .await;
    let received = |r: &support::Reply| r.json()["search"]["received"].clone();

    // A bool from the query, an enum by number from the path, an int64 and
    // a string as text.
    let r = h
        .client
        .get("/v1/search/2?in_print=true&min=120&q=dune&fields=title&g=3")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = received(&r);
    assert_eq!(got["inPrint"], true, "{got}");
    assert_eq!(got["genre"], "GENRE_HISTORY", "{got}");
    assert_eq!(got["minPages"], "120", "{got}");
    assert_eq!(got["query"], "dune", "{got}");
    assert_eq!(got["fields"], "title", "{got}");
    // An item of a repeated enum written as a list is typed as one.
    assert_eq!(
        got["genres"],
        serde_json::json!(["GENRE_SCIENCE", "GENRE_FICTION"]),
        "{got}"
    );

    // An enum by name, and false.
    let r = h
        .client
        .get("/v1/search/GENRE_SCIENCE?in_print=false&g=GENRE_HISTORY")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = received(&r);
    assert_eq!(got["genre"], "GENRE_SCIENCE", "{got}");
    assert!(got.get("inPrint").is_none(), "false is the default: {got}");

    // Text that is not of the field's type is refused naming the field.
    let r = h.client.get("/v1/search/1?in_print=yes").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(
        r.text().contains("inPrint") || r.text().contains("in_print"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn check_lists_each_calls_deadline_as_the_smaller_of_its_own_and_its_routes() {
    let text = support::config_text("127.0.0.1:1".parse().unwrap(), OVERVIEW, "")
        .with_route_keys("Probe", "timeout = \"1s\"");
    let loaded = app::load(Config::from_toml(&text).unwrap()).await.unwrap();
    let listing = loaded.aggregates.listing();
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {listing}"))
            .to_owned()
    };
    // The Probe route's 1s is shorter than the aggregate's default.
    assert!(line("headers").contains("timeout 1s"), "{listing}");
    assert!(!line("shelf").contains("timeout 1s"), "{listing}");
}

#[tokio::test]
async fn head_on_an_aggregate_answers_as_get_without_the_body() {
    let h = Harness::start_with(OVERVIEW, "").await;
    let head = h
        .client
        .send(Method::HEAD, "/v1/shelves/1/overview", &[], "")
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-aggregate-complete"), Some("true"));
    assert!(head.body.is_empty());
}

/// A path served by a binding and an aggregate with other methods: a 405
/// there names both's methods in `Allow`.
#[tokio::test]
async fn allow_names_the_methods_of_a_binding_and_an_aggregate_on_one_path() {
    let aggregate = "[[aggregates]]\npath = \"/portico.demo.v1.Library/Stats\"\n\
                     [[aggregates.calls]]\nname = \"s\"\nmethod = \"portico.demo.v1.Library/GetShelf\"\nrequest = { shelf = \"1\" }\n";
    let h = Harness::start_with(aggregate, "").await;
    let r = h
        .client
        .send(Method::DELETE, "/portico.demo.v1.Library/Stats", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    let mut allow: Vec<&str> = r.header("allow").unwrap().split(", ").collect();
    allow.sort_unstable();
    assert_eq!(allow, ["GET", "HEAD", "POST"]);
    assert_eq!(
        h.client.get("/portico.demo.v1.Library/Stats").await.status,
        StatusCode::OK
    );
}

/// An aggregate counts as one call of its first method, in the access log
/// and `/usage` alike, and as the caller of that method: a later call that
/// authenticates someone else does not lend its principal to the first
/// method.
#[tokio::test]
async fn an_aggregate_is_counted_for_the_caller_of_its_first_method() {
    let sections = r#"
[authenticators.partners]
kind = "api_key"
header = "x-api-key"
keys_file = "{keys}"

[authenticators.staff]
kind = "api_key"
header = "x-staff-key"
keys_file = "{keys}"

[[aggregates]]
path = "/v1/shelves/{shelf}/audit"

[[aggregates.calls]]
name = "shelf"
method = "portico.demo.v1.Library/GetShelf"
request = { shelf = "{path.shelf}" }

[[aggregates.calls]]
name = "headers"
method = "portico.demo.v1.Probe/Headers"
"#
    .replace("{keys}", &support::fixture("api_keys.toml"));
    let h = Harness::start_with_config(|backend| {
        support::config_text(backend, &sections, "auth = \"partners\"").replace(
            "grpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\nmcp = true\nauth = \"partners\"",
            "grpc_service = \"portico.demo.v1.Probe\"\nupstream = \"demo\"\nmcp = true\nauth = \"staff\"",
        )
    })
    .await;
    for _ in 0..3 {
        let r = h
            .client
            .send(
                Method::GET,
                "/v1/shelves/1/audit",
                &[
                    ("x-api-key", "acme-key-123"),
                    ("x-staff-key", "globex-key-456"),
                ],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let admin = support::HttpClient::new(h.gateway.admin_addr.unwrap());
    let usage = admin.get("/usage").await.json();
    let rows = usage["windows"]["1m"].as_array().unwrap();
    let pairs: Vec<(&str, &str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["principal"].as_str().unwrap_or(""),
                r["method"].as_str().unwrap_or(""),
                r["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![("acme", "portico.demo.v1.Library/GetShelf", 3)],
        "{usage:#}"
    );
}

/// The client's deadline counts from the aggregate request's arrival for
/// every call made for it: a call that starts after another's reply has
/// only what is left, not a fresh deadline of its own.
#[tokio::test]
async fn a_client_deadline_bounds_the_whole_chain_of_calls() {
    let chain = r#"
[[aggregates]]
path = "/v1/chain"

[[aggregates.calls]]
name = "first"
method = "portico.demo.v1.Probe/Sleep"
request = { millis = 400 }

[[aggregates.calls]]
name = "second"
method = "portico.demo.v1.Probe/Sleep"
request = { millis = "{first.sleptMillis}" }
"#;
    let h = Harness::start_with(chain, "").await;
    for header in [("grpc-timeout", "600m"), ("connect-timeout-ms", "600")] {
        let started = Instant::now();
        let r = h.client.send(Method::GET, "/v1/chain", &[header], "").await;
        let took = started.elapsed();
        assert_eq!(
            r.status,
            StatusCode::GATEWAY_TIMEOUT,
            "{header:?}: {}",
            r.text()
        );
        assert!(
            r.json()["message"].as_str().unwrap().starts_with("second"),
            "{header:?}: {}",
            r.text()
        );
        assert!(
            took < Duration::from_millis(750),
            "{header:?}: took {took:?}"
        );
    }
    // Without a client deadline, each call has its own.
    let r = h.client.get("/v1/chain").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // It slept what the first did (timers run a little late, never early).
    let slept = |call: &str| -> u64 {
        r.json()[call]["sleptMillis"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(slept("second") >= slept("first"), "{}", r.text());
}
