use super::stream::{LineSplitter, StreamFormat};

#[test]
fn ndjson_wraps_messages_so_the_error_line_is_unambiguous() {
    let f = StreamFormat::Ndjson;
    assert_eq!(
        &f.message(1, br#"{"error":"a field"}"#)[..],
        b"{\"result\":{\"error\":\"a field\"}}\n"
    );
    assert_eq!(
        &f.error(br#"{"code":10}"#)[..],
        b"{\"error\":{\"code\":10}}\n"
    );
    assert_eq!(f.end(), None);
}

#[test]
fn sse_names_error_and_end_events() {
    let f = StreamFormat::from_accept(Some("text/event-stream"));
    assert_eq!(f, StreamFormat::Sse);
    assert_eq!(&f.message(3, b"{}")[..], b"id: 3\ndata: {}\n\n");
    assert!(f.error(b"{}").starts_with(b"event: error\n"));
    assert!(f.end().unwrap().starts_with(b"event: end\n"));
}

#[test]
fn lines_split_across_chunks_come_out_whole() {
    let mut s = LineSplitter::default();
    assert!(s.push(b"{\"a\":").is_empty());
    let lines = s.push(b"1}\n\n{\"a\":2}\n{\"a\"");
    let lines: Vec<(usize, &[u8])> = lines.iter().map(|(n, l)| (*n, &l[..])).collect();
    // Blank lines are skipped but counted.
    assert_eq!(lines, vec![(1, &b"{\"a\":1}"[..]), (3, &b"{\"a\":2}"[..])]);
    assert_eq!(s.pending(), 4);
    assert_eq!(s.push(b":3}").len(), 0);
    let (n, last) = s.finish().unwrap();
    assert_eq!((n, &last[..]), (4, &b"{\"a\":3}"[..]));
}

#[test]
fn a_crlf_line_end_is_a_line_end_and_its_cr_is_not_counted() {
    let mut s = LineSplitter::default();
    assert!(s.push(b"{\"a\":1}\r").is_empty());
    assert_eq!(s.pending(), 7, "the CR that may start a CRLF");
    let lines = s.push(b"\n{\"a\":2}\r\n");
    let lines: Vec<&[u8]> = lines.iter().map(|(_, l)| &l[..]).collect();
    assert_eq!(lines, vec![&b"{\"a\":1}"[..], &b"{\"a\":2}"[..]]);
}

use super::framing::{frame, Deframer, FrameError};
use bytes::Bytes;

#[test]
fn frames_split_across_chunks_are_reassembled() {
    let (a, _) = frame(0, Bytes::from_static(b"hello"));
    let (b, _) = frame(0, Bytes::from_static(b""));
    let all = [&a[..], &b[..]].concat();
    let all = Bytes::from(all);
    let mut d = Deframer::new(1024);
    d.push(all.slice(..3));
    assert_eq!(d.next_message(), Ok(None));
    d.push(all.slice(3..));
    assert_eq!(d.next_message(), Ok(Some(Bytes::from_static(b"hello"))));
    assert_eq!(d.next_message(), Ok(Some(Bytes::new())));
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn whole_messages_are_sliced_from_their_chunk_and_a_split_one_is_gathered() {
    let (a, _) = frame(0, Bytes::from_static(b"first"));
    let (b, _) = frame(0, Bytes::from_static(b"second"));
    let (c, _) = frame(0, Bytes::from_static(b"third"));
    let all = Bytes::from([&a[..], &b[..], &c[..]].concat());
    // One chunk with the first message and part of the second, then the rest.
    let cut = a.len() + 4;
    let mut d = Deframer::new(1024);
    d.push(all.slice(..cut));
    let first = d.next_message().unwrap().unwrap();
    assert_eq!(first, "first");
    assert_eq!(
        first.as_ptr(),
        all[5..].as_ptr(),
        "a whole message is a slice of the chunk it came in"
    );
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.finish(), Err(FrameError::Truncated));
    d.push(all.slice(cut..));
    assert_eq!(d.next_message(), Ok(Some(Bytes::from_static(b"second"))));
    assert_eq!(d.next_message(), Ok(Some(Bytes::from_static(b"third"))));
    assert_eq!(d.next_message(), Ok(None));
    assert_eq!(d.finish(), Ok(()));
}

#[test]
fn oversized_compressed_and_truncated_frames_are_refused() {
    let mut d = Deframer::new(4);
    d.push(Bytes::from_static(&[0, 0, 0, 0, 9]));
    assert_eq!(
        d.next_message(),
        Err(FrameError::TooLarge { len: 9, limit: 4 })
    );
    let mut d = Deframer::new(4);
    d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 7]));
    assert_eq!(d.next_message(), Err(FrameError::Compressed));
    let mut d = Deframer::new(4);
    d.push(Bytes::from_static(&[0, 0, 0]));
    assert_eq!(d.finish(), Err(FrameError::Truncated));
}

#[test]
fn json_content_types_are_recognized_whatever_their_case() {
    use super::request::is_json;
    for ct in [
        None,
        Some(""),
        Some("application/json"),
        Some("Application/JSON; charset=utf-8"),
        Some(" text/plain ;charset=UTF-8"),
        Some("application/vnd.api+JSON"),
        Some("application/X-WWW-Form-Urlencoded"),
        Some("application/json; charset=\"utf-8\""),
        Some("application/json;charset=UTF8"),
        // Not read: a body that is not UTF-8 is malformed JSON.
        Some("text/plain; charset=ISO-8859-1"),
    ] {
        assert!(is_json(ct), "{ct:?}");
    }
    for ct in [
        "application/xml",
        "application/grpc",
        "image/png",
        "jsön",
        "json",
        // Only parameters.
        ";;;",
        "; charset=utf-8",
    ] {
        assert!(!is_json(Some(ct)), "{ct}");
    }
}
