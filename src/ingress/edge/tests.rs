use super::*;
use crate::config::Config;

use crate::headers::map_of as headers;

fn edge_for(metadata_section: &str) -> Edge {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{metadata_section}\n[upstreams.b]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\ngrpc_service = \"a.B\"\nupstream = \"b\"\n"
    );
    let config = Config::from_toml(&text).unwrap();
    Edge::new(config.metadata, None)
}

#[test]
fn by_default_every_header_but_the_gateways_and_the_browsers_own_is_forwarded() {
    let edge = edge_for("");
    let sent = headers(&[
        ("x-tenant", "acme"),
        ("authorization", "Bearer t"),
        ("accept-language", "fr"),
        ("cookie", "session=s"),
        ("origin", "https://app.example"),
        ("sec-fetch-mode", "cors"),
        ("content-type", "application/grpc"),
        ("grpc-timeout", "1S"),
        ("connect-protocol-version", "1"),
        ("te", "trailers"),
    ]);
    let md = edge.metadata(&sent);
    let mut names: Vec<&str> = md.keys().map(|k| k.as_str()).collect();
    names.sort();
    assert_eq!(names, ["accept-language", "authorization", "x-tenant"]);
}

#[test]
fn a_listed_browser_header_is_forwarded_and_a_list_replaces_the_default() {
    let edge = edge_for("[metadata]\nforward = [\"cookie\", \"x-tenant-*\"]\n");
    let sent = headers(&[
        ("cookie", "a=b"),
        ("x-tenant-id", "1"),
        ("x-other", "no"),
        ("authorization", "Bearer t"),
    ]);
    let md = edge.metadata(&sent);
    let mut names: Vec<&str> = md.keys().map(|k| k.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cookie", "x-tenant-id"]);
}

#[test]
fn the_client_deadline_comes_from_either_protocols_header() {
    let edge = edge_for("");
    let grpc = headers(&[("grpc-timeout", "250m")]);
    let connect = headers(&[("connect-timeout-ms", "300")]);
    let both = headers(&[("grpc-timeout", "2S"), ("connect-timeout-ms", "300")]);
    assert_eq!(edge.client_timeout(&grpc), Some(Duration::from_millis(250)));
    assert_eq!(
        edge.client_timeout(&connect),
        Some(Duration::from_millis(300))
    );
    assert_eq!(edge.client_timeout(&both), Some(Duration::from_millis(300)));
    let ignoring = edge_for("[metadata]\nhonour_client_timeout = false\n");
    assert_eq!(ignoring.client_timeout(&grpc), None);
}

#[test]
fn a_websocket_token_becomes_the_authorization_header_the_policies_read() {
    let edge = Edge::new(MetadataConfig::default(), Some("access_token".into()));
    let mut inbound = edge.inbound(&HeaderMap::new(), &http::Extensions::new());
    let mut query = vec![
        ("access_token".to_owned(), "abc".to_owned()),
        ("count".to_owned(), "2".to_owned()),
    ];
    edge.lift_websocket(&mut inbound, &[], &mut query).unwrap();
    assert_eq!(inbound.headers["authorization"], "Bearer abc");
    assert_eq!(query, vec![("count".to_owned(), "2".to_owned())]);

    let mut inbound = edge.inbound(&HeaderMap::new(), &http::Extensions::new());
    let entry = format!("{TOKEN_PREFIX}dG9r"); // base64url("tok")
    edge.lift_websocket(&mut inbound, &[entry], &mut Vec::new())
        .unwrap();
    assert_eq!(inbound.headers["authorization"], "Bearer tok");
}

#[test]
fn a_websocket_token_beside_a_different_header_or_unreadable_is_refused() {
    let edge = Edge::new(MetadataConfig::default(), Some("access_token".into()));
    let with_header = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", value.parse().unwrap());
        edge.inbound(&headers, &http::Extensions::new())
    };
    let token_in_query = || vec![("access_token".to_owned(), "abc".to_owned())];

    let mut inbound = with_header("Bearer other");
    let err = edge
        .lift_websocket(&mut inbound, &[], &mut token_in_query())
        .unwrap_err();
    assert_eq!(err.grpc_code(), tonic::Code::InvalidArgument);
    assert!(
        err.message.contains("more than one credential")
            && err.message.contains("\"access_token\""),
        "{}",
        err.message
    );

    // The same token twice is one credential.
    let mut inbound = with_header("Bearer abc");
    edge.lift_websocket(&mut inbound, &[], &mut token_in_query())
        .unwrap();
    assert_eq!(inbound.headers.get_all("authorization").iter().count(), 1);

    // A subprotocol token and a different query token: two credentials.
    let mut inbound = edge.inbound(&HeaderMap::new(), &http::Extensions::new());
    let entry = format!("{TOKEN_PREFIX}dG9r"); // base64url("tok")
    let err = edge
        .lift_websocket(&mut inbound, &[entry], &mut token_in_query())
        .unwrap_err();
    assert!(
        err.message.contains("more than one credential"),
        "{}",
        err.message
    );

    let entry = format!("{TOKEN_PREFIX}!!!");
    let mut inbound = edge.inbound(&HeaderMap::new(), &http::Extensions::new());
    let err = edge
        .lift_websocket(&mut inbound, &[entry], &mut Vec::new())
        .unwrap_err();
    assert!(err.message.contains("base64url"), "{}", err.message);
}

/// `X-Forwarded-Proto` names the scheme of the request's own connection,
/// not the config's: a reload that turns TLS on or off leaves connections
/// opened before it as they were.
#[test]
fn the_forwarded_scheme_is_the_requests_own_connections() {
    let edge = edge_for("");
    for (over_tls, scheme) in [(true, "https"), (false, "http")] {
        let inbound = Inbound {
            headers: headers(&[("host", "api.example")]),
            over_tls,
            ..Inbound::default()
        };
        let ctx = edge.context(
            inbound,
            Some("127.0.0.1:5000".parse().unwrap()),
            Instant::now(),
        );
        assert_eq!(
            ctx.headers.get("x-forwarded-proto").unwrap(),
            scheme,
            "over TLS: {over_tls}"
        );
    }
}
