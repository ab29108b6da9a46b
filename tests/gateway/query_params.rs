//! Every field not bound by the path or body is settable from the query
//! string, for every field kind the spec lists.

use crate::support;

use http::StatusCode;
use support::Harness;

#[tokio::test]
async fn every_scalar_and_well_known_kind_is_read_from_the_query() {
    let h = Harness::start().await;
    let query = [
        "query=le%20guin",
        "authors=a&authors=b",
        "genre=GENRE_HISTORY",
        "genres=1&genres=GENRE_SCIENCE",
        "in_print=true",
        "minPages=-9007199254740993",
        "maxPages=18446744073709551615",
        "minScore=2.5",
        "cursor=3q2-7w",
        "publishedAfter=2024-05-06T07:08:09Z",
        "maxReadTime=90.5s",
        "fields=title,author.name",
        "pageSize=25",
        "includeArchived=false",
        "filter.language=en",
        "filter.min_rating=4",
        "weight=-Infinity",
        "offset=-3",
        "token=7",
    ]
    .join("&");
    let r = h.client.get(&format!("/v1/books:search?{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = &r.json()["received"];
    assert_eq!(got["query"], "le guin");
    assert_eq!(got["authors"], serde_json::json!(["a", "b"]));
    assert_eq!(got["genre"], "GENRE_HISTORY");
    assert_eq!(
        got["genres"],
        serde_json::json!(["GENRE_FICTION", "GENRE_SCIENCE"])
    );
    assert_eq!(got["inPrint"], true);
    assert_eq!(got["minPages"], "-9007199254740993");
    assert_eq!(got["maxPages"], "18446744073709551615");
    assert_eq!(got["minScore"], 2.5);
    assert_eq!(got["cursor"], "3q2+7w==");
    assert_eq!(got["publishedAfter"], "2024-05-06T07:08:09Z");
    assert_eq!(got["maxReadTime"], "90.500s");
    assert_eq!(got["fields"], "title,author.name");
    assert_eq!(got["pageSize"], 25);
    assert_eq!(
        got["includeArchived"], false,
        "a wrapper set to false is present"
    );
    assert_eq!(
        got["filter"],
        serde_json::json!({"language": "en", "minRating": 4})
    );
    assert_eq!(got["weight"], "-Infinity");
    assert_eq!(got["offset"], -3);
    assert_eq!(got["token"], "7");
}

#[tokio::test]
async fn an_unknown_query_parameter_is_rejected_by_name() {
    let h = Harness::start().await;
    let calls = h.backends.probe.calls();
    let r = h.client.get("/v1/probe/headers?verbose=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.violated_field(), "verbose");
    assert!(r.json()["message"].as_str().unwrap().contains("verbose"));
    // A parameter with no name is said to have none.
    let r = h.client.get("/v1/probe/headers?=x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("a query parameter with an empty name is not a field of"),
        "{}",
        r.text()
    );
    // A `+` the form decoding made a space is pointed at where a field's
    // text never has one; a string keeps its space without a word.
    for (query, hinted) in [
        ("minPages=+5", true),
        ("publishedAfter=2020-01-01T02:00:00+02:00", true),
        ("genres=GENRE+X", false),
        // A space sent as %20 is no `+`: nothing to point at.
        ("minPages=%205", false),
    ] {
        let r = h.client.get(&format!("/v1/books:search?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        let message = r.json()["message"].as_str().unwrap().to_owned();
        assert_eq!(
            message.contains("write a plus sign as %2B"),
            hinted,
            "{query}: {message}"
        );
    }
    let r = h.client.get("/v1/books:search?minPages=%2B5").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A name whose escapes are no UTF-8 is named as sent.
    let r = h.client.get("/v1/books:search?q%FFuery=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.violated_field(), "q%FFuery");
    assert!(!r.text().contains('\u{FFFD}'), "{}", r.text());
    // A nested one is said of the message that lacks it.
    let r = h.client.get("/v1/books:search?filter.nope=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.violated_field(), "filter.nope");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("filter is a portico.demo.v1.SearchFilter, which has no field nope"),
        "{}",
        r.text()
    );
    assert_eq!(
        h.backends.probe.calls(),
        calls,
        "the backend is never called"
    );
}

#[tokio::test]
async fn unknown_query_parameters_can_be_ignored_by_config() {
    let h = Harness::start_with("[json]\nunknown_query_params = \"ignore\"\n", "").await;
    let r = h
        .client
        .get("/v1/shelves/1/books?utm_source=mail&pageSize=1")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["books"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_values_name_the_parameter() {
    let h = Harness::start().await;
    for (query, field) in [
        ("genre=GENRE_POETRY", "genre"),
        ("minScore=1e400", "minScore"),
        ("minScore=nan", "minScore"),
        ("weight=inf", "weight"),
        ("pageSize=ten", "pageSize"),
        ("minPages=1.5", "minPages"),
        ("inPrint=yes", "inPrint"),
        ("publishedAfter=yesterday", "publishedAfter"),
        ("maxReadTime=5", "maxReadTime"),
        ("cursor=***", "cursor"),
        ("filter=x", "filter"),
        ("query=a&query=b", "query"),
        ("offset=99999999999", "offset"),
    ] {
        let r = h.client.get(&format!("/v1/books:search?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        assert_eq!(r.violated_field(), field, "{query}");
    }
    // What to write instead, where a reader could not guess it.
    for (query, says) in [
        (
            "filter=x",
            "filter: names a message (portico.demo.v1.SearchFilter), which takes no value of its own: set its fields, as NAME.FIELD=value",
        ),
        (
            "fields=foo_bar",
            "(paths are comma-separated lowerCamelCase JSON names: publishedDate, not published_date)",
        ),
    ] {
        let r = h.client.get(&format!("/v1/books:search?{query}")).await;
        assert!(r.json()["message"].as_str().unwrap().contains(says), "{query}: {}", r.text());
    }
}

#[tokio::test]
async fn a_path_bound_field_cannot_be_overridden_from_the_query() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/shelves/1?shelf=2").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.violated_field(), "shelf");
}

#[tokio::test]
async fn a_whole_body_binding_takes_no_query_parameters() {
    let h = Harness::start().await;
    let r = h
        .client
        .json(
            http::Method::POST,
            "/v1/books:search?query=x",
            r#"{"query":"guns"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.violated_field(), "query");
}

#[tokio::test]
async fn a_singular_field_given_twice_is_refused_however_it_is_spelled() {
    let h = Harness::start().await;
    for query in ["query=a&query=b", "page_size=1&pageSize=2"] {
        let r = h.client.get(&format!("/v1/books:search?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("more than once"),
            "{query}: {}",
            r.text()
        );
    }
    // A repeated field takes both.
    let r = h
        .client
        .get("/v1/books:search?genres=GENRE_FICTION&genres=GENRE_HISTORY")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// proto3 enums are open: a number the enum does not declare reaches the
/// backend from the query as it does from a JSON body.
#[tokio::test]
async fn an_undeclared_enum_number_is_kept_as_in_a_json_body() {
    let h = Harness::start().await;
    let r = h.client.get("/v1/books:search?genre=42&genres=43").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["received"]["genre"], 42);
    assert_eq!(r.json()["received"]["genres"], serde_json::json!([43]));
    let r = h
        .client
        .json(http::Method::POST, "/v1/books:search", r#"{"genre":42}"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["received"]["genre"], 42);
}
