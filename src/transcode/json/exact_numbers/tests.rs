use super::*;

fn search_request() -> MessageDescriptor {
    crate::fuzzing::demo_pool()
        .get_message_by_name("portico.demo.v1.SearchBooksRequest")
        .unwrap()
}

fn checked(json: &str) -> Result<Option<String>, String> {
    check(&search_request(), json.as_bytes())
        .map(|o| o.rewritten.map(|b| String::from_utf8(b).unwrap()))
        .map_err(|e| e.message)
}

#[test]
fn exact_values_are_read_from_the_text_not_a_double() {
    let int = |t| match exact_integer(t) {
        Exact::Integer(v) => Some(v),
        _ => None,
    };
    assert_eq!(int("1e18"), Some(1_000_000_000_000_000_000));
    assert_eq!(int("9.223372036854775807e18"), Some(i64::MAX.into()));
    assert_eq!(int("-9223372036854775809"), Some(i128::from(i64::MIN) - 1));
    assert_eq!(int("12.500e1"), Some(125));
    assert_eq!(int("-0.0"), Some(0));
    assert!(matches!(
        exact_integer("9007199254740993.5"),
        Exact::Fraction
    ));
    assert!(matches!(exact_integer("1e400"), Exact::TooLarge));
    assert!(matches!(exact_integer("1.5e-3"), Exact::Fraction));
    assert!(matches!(exact_integer("1e-400"), Exact::Fraction));
    assert!(matches!(
        exact_integer("1e99999999999999999999"),
        Exact::TooLarge
    ));
    assert!(matches!(
        exact_integer("1e-99999999999999999999"),
        Exact::Fraction
    ));
    assert_eq!(int("0.0e99999999999999999999"), Some(0));
    assert_eq!(int("1E+2"), Some(100));
}

#[test]
fn most_bodies_are_scanned_once_and_left_alone() {
    for body in [
        r#"{"query":"1e400 in a string","minPages":3,"minScore":1.5}"#,
        r#"{"minPages":9223372036854775807,"maxPages":"18446744073709551616"}"#,
        r#"{"minPages":100,"weight":3.4028234e38}"#,
        // A double takes any double, exponent or not.
        r#"{"minScore":1e300,"filter":{"language":"en"}}"#,
    ] {
        assert_eq!(checked(body), Ok(None), "{body}");
    }
}

#[test]
fn an_integer_field_gets_the_exact_digits_or_a_refusal_naming_it() {
    assert_eq!(
        checked(r#"{"minPages": 1e18, "maxPages":9.223372036854775807e18}"#),
        Ok(Some(
            r#"{"minPages": 1000000000000000000, "maxPages":9223372036854775807}"#.into()
        ))
    );
    for (body, why) in [
        (
            r#"{"minPages":-9223372036854775809}"#,
            "invalid value for minPages: -9223372036854775809 is out of range for int64",
        ),
        (
            r#"{"max_pages":18446744073709551616}"#,
            "invalid value for max_pages: 18446744073709551616 is out of range for uint64",
        ),
        (
            r#"{"minPages":9.223372036854775808e18}"#,
            "out of range for int64",
        ),
        (
            r#"{"minPages":9007199254740993.5}"#,
            "invalid value for minPages: 9007199254740993.5 is not an integer, which int64 needs",
        ),
        (
            r#"{"pageSize":1e20}"#,
            "invalid value for pageSize: 1e20 is out of range for int32",
        ),
        (r#"{"minPages":1e-400}"#, "1e-400 is not an integer"),
    ] {
        let refused = checked(body).unwrap_err();
        assert!(refused.contains(why), "{body}: {refused}");
    }
}

#[test]
fn an_exponent_past_64_bits_is_read_too_not_skipped() {
    // A zero with any exponent is zero; its neighbour still gets its
    // exact digits rather than the double's nearest end of the range.
    assert_eq!(
        checked(r#"{"minPages":9.2233720368547758e18,"maxPages":0.0e99999999999999999999}"#),
        Ok(Some(
            r#"{"minPages":9223372036854775800,"maxPages":0}"#.into()
        ))
    );
    let refused = checked(r#"{"minPages":1e30}"#).unwrap_err();
    assert!(refused.contains("out of range for int64"), "{refused}");
}

#[test]
fn a_float_just_past_its_largest_reads_as_the_largest() {
    assert_eq!(
        checked(r#"{"weight":-3.4028235e+38}"#),
        Ok(Some(r#"{"weight":-3.4028234663852886e38}"#.into()))
    );
    // Past what rounds to it: left for the parser to refuse.
    assert_eq!(checked(r#"{"weight":3.5e38}"#), Ok(None));
}

#[test]
fn a_number_in_quotes_past_a_float_or_double_is_refused_not_read_as_infinity() {
    for (body, why) in [
        (
            r#"{"weight":"3.5e38"}"#,
            r#""3.5e38" is out of range for a float"#,
        ),
        (
            r#"{"maxWeight":"-3.4028236e38"}"#,
            "out of range for a float",
        ),
        (
            r#"{"minScore":"1e400"}"#,
            r#""1e400" is out of range for a double"#,
        ),
    ] {
        let refused = checked(body).unwrap_err();
        assert!(refused.contains(why), "{body}: {refused}");
    }
    // What rounds to the largest float, the non-finite spellings, and a
    // string field holding such text are left as written.
    for body in [
        r#"{"weight":"3.4028235e38"}"#,
        r#"{"weight":"Infinity","minScore":"-Infinity","maxScore":"NaN"}"#,
        r#"{"query":"3.5e38","minScore":"1e300"}"#,
    ] {
        assert_eq!(checked(body), Ok(None), "{body}");
    }
}

#[test]
fn a_refused_body_is_diagnosed_in_words_at_the_number_at_fault() {
    let diagnosed = |json: &str| diagnose(&search_request(), json.as_bytes()).map(|e| e.message);
    for (body, why) in [
        (
            r#"{"offset":2147483648}"#,
            "offset: 2147483648 is out of range for sint32",
        ),
        (
            r#"{"maxPages":-1}"#,
            "maxPages: -1 is out of range for uint64",
        ),
        (
            r#"{"weight":3.5e38}"#,
            "weight: 3.5e38 is out of range for a float",
        ),
        (
            r#"{"minPages":"18446744073709551616"}"#,
            r#"minPages: "18446744073709551616" is out of range for int64"#,
        ),
        (
            r#"{"minPages":" 12"}"#,
            r#"minPages: " 12" is not an integer"#,
        ),
        (
            r#"{"filter":{"language":"en"},"pageSize":"1.0"}"#,
            r#"pageSize: "1.0" is not an integer"#,
        ),
    ] {
        let why_seen = diagnosed(body).unwrap_or_default();
        assert!(why_seen.contains(why), "{body}: {why_seen}");
    }
    // Numbers that fit (a sign in quotes as the parser takes it): the fault
    // is elsewhere, and the parser's own account stands.
    assert_eq!(
        diagnosed(r#"{"minPages":"+5","pageSize":3,"colour":1}"#),
        None
    );
}

#[test]
fn nesting_past_the_limit_is_refused_even_in_a_field_no_one_reads() {
    let nested = |n: usize| {
        format!(
            r#"{{"unknown":{}1{},"minPages":1e18}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let refused = checked(&nested(100_000)).unwrap_err();
    assert!(refused.contains("nests deeper than 127"), "{refused}");
    assert!(refused.contains("line 1 column 138"), "{refused}");
    // 127 levels are read (the object and 126 arrays); 128 are not.
    assert!(checked(&nested(126)).is_ok());
    assert!(checked(&nested(127)).is_err());
    let within = checked(&nested(100)).unwrap().unwrap();
    assert!(within.contains("1000000000000000000"), "{within}");
    // Not JSON: the parser will say so, not this.
    assert_eq!(checked(r#"{"minPages":1e18"#), Ok(None));
}
