use super::StreamFormat;

#[test]
fn the_accept_header_is_weighed_not_searched() {
    for (accept, sse) in [
        (None, false),
        (Some("text/event-stream"), true),
        (Some("Text/Event-Stream; charset=utf-8"), true),
        (Some("text/event-stream;q=0"), false),
        (Some("application/x-ndjson, text/event-stream;q=0.5"), false),
        (
            Some("application/json;q=0.2, text/event-stream;q=0.9"),
            true,
        ),
        (Some("*/*"), false),
    ] {
        assert_eq!(
            StreamFormat::from_accept(accept) == StreamFormat::Sse,
            sse,
            "{accept:?}"
        );
    }
}
