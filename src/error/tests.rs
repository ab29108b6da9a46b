use super::*;

#[test]
fn every_grpc_code_maps_to_the_standard_http_status() {
    let table = [
        (Code::InvalidArgument, 400),
        (Code::Unauthenticated, 401),
        (Code::PermissionDenied, 403),
        (Code::NotFound, 404),
        (Code::AlreadyExists, 409),
        (Code::Aborted, 409),
        (Code::ResourceExhausted, 429),
        (Code::Cancelled, 499),
        (Code::Unimplemented, 501),
        (Code::Unavailable, 503),
        (Code::DeadlineExceeded, 504),
        (Code::Internal, 500),
        (Code::FailedPrecondition, 400),
        (Code::OutOfRange, 400),
    ];
    for (code, http) in table {
        assert_eq!(http_status_of_grpc(code).as_u16(), http, "{code:?}");
    }
}

#[test]
fn client_errors_are_named_after_what_was_wrong() {
    let err = GatewayError::route_not_found("/v1/nowhere");
    assert_eq!(err.http_status(), StatusCode::NOT_FOUND);
    assert_eq!(err.origin, Origin::Client);
    assert!(err.message.contains("/v1/nowhere"));

    let err = GatewayError::invalid_field("inner.note", "expected a string");
    assert_eq!(err.grpc_code(), Code::InvalidArgument);
    assert_eq!(
        err.message,
        "invalid value for inner.note: expected a string"
    );
}

#[test]
fn a_backend_status_keeps_its_code_and_message() {
    let status = tonic::Status::new(Code::AlreadyExists, "book exists");
    let err = GatewayError::from_backend_status(&status);
    assert_eq!(err.http_status(), StatusCode::CONFLICT);
    assert_eq!(err.origin, Origin::Backend);
    assert_eq!(err.message, "book exists");
}

#[test]
fn a_transport_failure_names_its_cause() {
    // As the TLS layer under hyper hands it on: an io error holding
    // rustls's words.
    let refused = || {
        std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        ))
    };
    let mut status = tonic::Status::new(Code::Unknown, "transport error");
    status.set_source(refused());
    let err = GatewayError::from_backend_status(&status);
    assert_eq!(err.http_status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        err.message,
        "backend unavailable: transport error: received fatal alert: CertificateRequired (the server requires a client certificate: see the upstream's `tls_cert_file` and `tls_key_file`)"
    );
    // The same cause on a connection lost mid-call is named too.
    let mut lost = tonic::Status::new(Code::Cancelled, "h2 protocol error");
    lost.set_source(refused());
    let err = GatewayError::from_backend_status(&lost);
    assert_eq!(err.http_status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        err.message,
        "backend connection lost: received fatal alert: CertificateRequired (the server requires a client certificate: see the upstream's `tls_cert_file` and `tls_key_file`)"
    );
}

#[test]
fn a_cause_already_said_is_not_said_again() {
    #[derive(Debug)]
    struct Link(&'static str, Option<Box<Link>>);
    impl std::fmt::Display for Link {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Link {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }
    // tonic's shape: the status says the root's text, its source chain
    // says it again beneath "transport error".
    let chain = Link(
        "transport error",
        Some(Box::new(Link(
            "tcp connect error",
            Some(Box::new(Link("Connection refused (os error 111)", None))),
        ))),
    );
    assert_eq!(
        causes_after("tcp connect error".to_owned(), Some(&chain)),
        "tcp connect error: transport error: Connection refused (os error 111)"
    );
}

/// A TLS 1.3 server that wants a client certificate may close after the
/// handshake without an alert: the error says what that usually means.
#[test]
fn a_tls_connection_closed_unannounced_hints_at_a_client_certificate() {
    let eof = std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "peer closed connection without sending TLS close_notify: https://docs.rs/rustls/",
    );
    let said = causes_after("transport error".to_owned(), Some(&eof));
    assert!(said.contains("close_notify"), "{said}");
    assert!(
        said.contains("`tls_cert_file` and `tls_key_file`"),
        "{said}"
    );
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    assert!(!causes_after("transport error".to_owned(), Some(&refused)).contains("tls_cert_file"));
}

#[test]
fn a_long_message_is_cut_on_a_character_boundary_saying_how_much() {
    assert_eq!(super::shortened("short", 10), "short");
    assert_eq!(super::shortened("ééééé", 5), "éé... (6 more bytes)");
}

#[test]
fn a_call_cut_by_a_session_close_is_blamed_on_whoever_caused_the_close() {
    let table = [
        (WsClose::TooBig, Code::ResourceExhausted, Origin::Client),
        (
            WsClose::ProtocolError,
            Code::InvalidArgument,
            Origin::Client,
        ),
        (
            WsClose::InvalidPayload,
            Code::InvalidArgument,
            Origin::Client,
        ),
        (
            WsClose::PolicyViolation,
            Code::InvalidArgument,
            Origin::Client,
        ),
        (WsClose::InternalError, Code::Internal, Origin::Gateway),
        (WsClose::GoingAway, Code::Cancelled, Origin::Gateway),
    ];
    for (close, code, origin) in table {
        let err = close.cut_call("why", 1024);
        assert_eq!((err.grpc_code(), err.origin), (code, origin), "{close:?}");
        assert!(
            err.message.starts_with(&format!(
                "the session was closed with {} (why)",
                close.code()
            )),
            "{}",
            err.message
        );
    }
}

#[test]
fn a_message_quoting_a_huge_input_is_cut_in_its_middle() {
    let key = "k".repeat(3_000_000);
    let err = GatewayError::invalid_field(
        format!("body.{key}"),
        format!("unknown field `{key}`, expected one of `a`, `b`"),
    );
    assert!(
        err.message.len() <= MAX_MESSAGE_BYTES + 64,
        "{}",
        err.message.len()
    );
    assert!(err.message.starts_with("invalid value for body.kkk"));
    assert!(
        err.message.ends_with("expected one of `a`, `b`"),
        "the end says what was expected"
    );
    // The field's part and the description's, each cut once, the whole not again.
    assert_eq!(
        err.message.matches("bytes cut").count(),
        2,
        "{}",
        err.message
    );
    assert!(
        err.message.contains(": unknown field `k"),
        "{}",
        err.message
    );
    let ErrorKind::InvalidRequest { violations } = &err.kind else {
        panic!("{:?}", err.kind)
    };
    assert!(violations[0].field.len() <= MAX_FIELD_BYTES + 64);
    assert!(violations[0].description.len() <= MAX_MESSAGE_BYTES + 64);
    // On a character boundary, whatever the text.
    let cut = cut_in_middle("é".repeat(5000), 100);
    assert!(cut.contains("bytes cut"));
    // A backend's message is its own.
    let long = "b".repeat(10_000);
    let backend = GatewayError::new(ErrorKind::BadBackendReply, Origin::Backend, long.clone());
    assert_eq!(backend.message, long);
}

#[test]
fn an_invalid_token_challenge_is_printable_ascii_whatever_the_token_held() {
    let err = GatewayError::unauthenticated(
        false,
        "invalid token: unknown key id \"é\\\"\r\nx-injected: 1\"",
    );
    let challenge = err.www_authenticate().unwrap();
    assert_eq!(
        challenge,
        "Bearer realm=\"portico\", error=\"invalid_token\", \
         error_description=\"invalid token: unknown key id '?''??x-injected: 1'\""
    );
    // Every protocol carries it as a header value a strict client reads.
    let (_, value) = err
        .http_headers()
        .into_iter()
        .find(|(name, _)| name == http::header::WWW_AUTHENTICATE)
        .unwrap();
    assert_eq!(value.to_str().unwrap(), challenge);
}
