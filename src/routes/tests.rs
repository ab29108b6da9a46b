use super::template::{parse, Segment};
use super::trie::{Lookup, Trie};
use http::Method;
use proptest::prelude::*;

#[test]
fn templates_parse_per_the_grammar() {
    let t = parse("/v1/{name=shelves/*/books/*}:archive").unwrap();
    assert_eq!(
        t.segments,
        vec![
            Segment::Literal("v1".into()),
            Segment::Literal("shelves".into()),
            Segment::Single,
            Segment::Literal("books".into()),
            Segment::Single
        ]
    );
    assert_eq!(t.variables[0].field_path, vec!["name"]);
    assert_eq!((t.variables[0].start, t.variables[0].end), (1, 5));
    assert_eq!(t.verb.as_deref(), Some("archive"));

    let t = parse("/v1/{book.name}/x/{rest=**}").unwrap();
    assert_eq!(t.variables[0].field_path, vec!["book", "name"]);
    assert_eq!(t.segments.last(), Some(&Segment::Multi));
    assert_eq!(
        parse("/v1/books:search").unwrap().verb.as_deref(),
        Some("search")
    );
    assert_eq!(parse("/v1/*/**").unwrap().segments.len(), 3);
}

#[test]
fn malformed_templates_say_where_and_why() {
    for (bad, why) in [
        ("v1/x", "starts with `/`"),
        ("/v1/**/x", "last segment"),
        ("/v1/{a={b}}", "cannot nest"),
        ("/v1/{a", "close the variable"),
        ("/v1/{}", "field name"),
        ("/v1/{a}/{a}", "bound twice"),
        ("/v1//x", "expected a segment"),
        ("/v1/x:", "verb"),
        ("/v1/../x", "a `..` segment never matches"),
        ("/v1/x/.", "a `.` segment never matches"),
        ("/v2/%41/{id}", "never matches"),
        ("/v2/a%zz/{id}", "never matches"),
        ("/v2/a/{id}:do%41", "never matches"),
    ] {
        let err = parse(bad).unwrap_err();
        assert!(err.reason.contains(why), "{bad}: {err}");
    }
    // A reserved character's escape is kept in request paths, so it is
    // how a literal holds one.
    parse("/v9/a%3Ab/{id}").unwrap();
}

fn trie(templates: &[(&str, Method)]) -> Trie {
    let mut t = Trie::default();
    for (i, (tpl, m)) in templates.iter().enumerate() {
        t.insert(&parse(tpl).unwrap(), m.clone(), i).unwrap();
    }
    t
}

fn segs(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').collect()
}

#[test]
fn literal_segments_win_over_variables() {
    let t = trie(&[
        ("/v1/shelves/{shelf}", Method::GET),
        ("/v1/shelves/featured", Method::GET),
    ]);
    assert_eq!(
        t.lookup(&Method::GET, &segs("/v1/shelves/featured")),
        Lookup::Found {
            id: 1,
            verb_split: false
        }
    );
    assert_eq!(
        t.lookup(&Method::GET, &segs("/v1/shelves/7")),
        Lookup::Found {
            id: 0,
            verb_split: false
        }
    );
}

#[test]
fn an_escape_in_a_literal_matches_in_either_case_of_hex() {
    // RFC 3986: `%3a` and `%3A` are one octet, in the template and in the
    // request alike.
    let t = trie(&[
        ("/v9/a%3Ab/{id}", Method::GET),
        ("/v9/c%3ad/{id}", Method::GET),
    ]);
    for (path, id) in [
        ("/v9/a%3Ab/x", 0),
        ("/v9/a%3ab/x", 0),
        ("/v9/c%3Ad/x", 1),
        ("/v9/c%3ad/x", 1),
    ] {
        assert_eq!(
            t.lookup(&Method::GET, &segs(path)),
            Lookup::Found {
                id,
                verb_split: false
            },
            "{path}"
        );
    }
    assert_eq!(
        t.lookup(&Method::GET, &segs("/v9/a%3Ac/x")),
        Lookup::NotFound
    );
}

#[test]
fn a_custom_verb_is_split_from_the_last_segment() {
    let t = trie(&[
        ("/v1/{name=books/*}", Method::POST),
        ("/v1/{name=books/*}:archive", Method::POST),
    ]);
    assert_eq!(
        t.lookup(&Method::POST, &segs("/v1/books/1:archive")),
        Lookup::Found {
            id: 1,
            verb_split: true
        }
    );
    assert_eq!(
        t.lookup(&Method::POST, &segs("/v1/books/1")),
        Lookup::Found {
            id: 0,
            verb_split: false
        }
    );
    // An unknown verb stays part of the segment.
    assert_eq!(
        t.lookup(&Method::POST, &segs("/v1/books/1:x")),
        Lookup::Found {
            id: 0,
            verb_split: false
        }
    );
}

#[test]
fn a_slash_before_a_custom_verb_is_a_trailing_slash_not_an_empty_segment() {
    let t = trie(&[
        ("/v1/stat/{path=**}:stat", Method::GET),
        ("/v1/{x}:verb", Method::GET),
    ]);
    let (found, segments) = t.match_path(&Method::GET, "/v1/stat/a/b/:stat");
    assert_eq!(
        found,
        Lookup::Found {
            id: 0,
            verb_split: true
        }
    );
    assert_eq!(segments, ["v1", "stat", "a", "b"]);
    // A single-segment variable is no more filled by it than before.
    assert_eq!(t.match_path(&Method::GET, "/v1/:verb").0, Lookup::NotFound);
    assert_eq!(
        t.match_path(&Method::GET, "/v1/x/:verb"),
        (
            Lookup::Found {
                id: 1,
                verb_split: true
            },
            vec!["v1", "x"]
        )
    );
}

#[test]
fn double_wildcard_takes_the_rest_of_the_path() {
    let t = trie(&[("/v1/files/{path=**}", Method::GET)]);
    assert_eq!(
        t.lookup(&Method::GET, &segs("/v1/files/a/b/c")),
        Lookup::Found {
            id: 0,
            verb_split: false
        }
    );
    assert_eq!(
        t.lookup(&Method::GET, &segs("/v1/files")),
        Lookup::Found {
            id: 0,
            verb_split: false
        }
    );
}

#[test]
fn a_known_path_with_another_method_is_not_allowed_rather_than_missing() {
    let t = trie(&[
        ("/v1/shelves/{s}", Method::GET),
        ("/v1/shelves/{s}", Method::DELETE),
    ]);
    assert_eq!(
        t.lookup(&Method::PUT, &segs("/v1/shelves/1")),
        Lookup::MethodNotAllowed(vec![Method::GET, Method::DELETE])
    );
    assert_eq!(
        t.lookup(&Method::GET, &segs("/v2/shelves/1")),
        Lookup::NotFound
    );
}

#[test]
fn two_bindings_of_the_same_shape_collide() {
    let mut t = Trie::default();
    t.insert(&parse("/v1/{a}").unwrap(), Method::GET, 0)
        .unwrap();
    assert_eq!(t.insert(&parse("/v1/{b}").unwrap(), Method::GET, 1), Err(0));
    assert!(t
        .insert(&parse("/v1/{b}").unwrap(), Method::POST, 2)
        .is_ok());
    assert!(t
        .insert(&parse("/v1/{b}:go").unwrap(), Method::GET, 3)
        .is_ok());
}

#[test]
fn empty_segments_do_not_match_variables() {
    let t = trie(&[("/v1/shelves/{s}", Method::GET)]);
    assert_eq!(
        t.lookup(&Method::GET, &segs("/v1/shelves/")),
        Lookup::NotFound
    );
}

proptest! {
    #[test]
    fn the_parser_never_panics(s in "\\PC{0,40}") {
        let _ = parse(&s);
    }

    #[test]
    fn the_parser_never_panics_on_template_like_input(s in "(/|\\{|\\}|\\*|=|:|\\.|[a-z]){0,30}") {
        let _ = parse(&s);
    }

    #[test]
    fn matching_never_panics(path in "(/|:|%|[a-z0-9]){0,40}", verb_heavy in any::<bool>()) {
        let t = trie(&[
            ("/v1/{name=shelves/*/books/*}:archive", Method::POST),
            ("/v1/files/{path=**}", Method::GET),
            ("/v1/{a}/{b=x/**}", Method::GET),
            ("/{x}", Method::GET),
        ]);
        let method = if verb_heavy { Method::POST } else { Method::GET };
        let _ = t.lookup(&method, &segs(&path));
    }
}

/// A path that binds two members of one oneof could match no request that
/// the backend would take: refused at load, naming both.
#[test]
fn a_path_binding_two_members_of_one_oneof_is_refused() {
    let method = crate::fuzzing::demo_pool()
        .get_service_by_name("portico.demo.v1.Library")
        .unwrap()
        .methods()
        .find(|m| m.name() == "CreateBook")
        .unwrap();
    let target = std::sync::Arc::new(crate::envelope::Target::for_method(method));
    let bind = |template: &str| {
        super::Binding::new(
            target.clone(),
            Method::POST,
            template,
            "",
            "",
            crate::config::JsonOptions::default(),
            false,
        )
    };
    let err = bind("/v1/x/{book.isbn}/{book.url}").unwrap_err();
    assert!(
        err.contains("book.isbn and book.url set two members of oneof identifier"),
        "{err}"
    );
    // One member, beside another field of the same message, is fine.
    bind("/v1/x/{book.isbn}/{book.title}").unwrap();
}
