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
        // Ranges are not media types: only the types named count.
        (Some("application/*;q=0.9, text/event-stream;q=0.8"), true),
    ] {
        assert_eq!(
            StreamFormat::from_accept(accept) == StreamFormat::Sse,
            sse,
            "{accept:?}"
        );
    }
}

#[test]
fn repeated_accept_fields_are_one_list() {
    for (fields, sse) in [
        (vec!["application/json", "text/event-stream"], true),
        (vec!["text/event-stream", "application/x-ndjson"], true),
        (
            vec!["text/event-stream;q=0.4", "application/json;q=0.5"],
            false,
        ),
    ] {
        assert_eq!(
            StreamFormat::from_accept(fields.iter().copied()) == StreamFormat::Sse,
            sse,
            "{fields:?}"
        );
    }
}
