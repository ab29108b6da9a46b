//! A JSON number's exact value, read from its decimal text rather than
//! through a double.

pub(super) enum Exact {
    Integer(i128),
    /// Past 128 bits: past every integer field.
    TooLarge,
    Fraction,
    Unreadable,
}

/// A JSON number's exact value when it is an integer: its digits, fraction
/// and exponent taken as decimal text, not through a double.
pub(super) fn exact_integer(token: &str) -> Exact {
    let (negative, unsigned) = match token.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Exact::Unreadable;
            }
            // An exponent past i64 is past any integer's digits: huge, or
            // a fraction, unless every digit is zero.
            let e = e.parse::<i64>().unwrap_or(if e.starts_with('-') {
                i64::MIN / 2
            } else {
                i64::MAX / 2
            });
            (m, e)
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Exact::Unreadable;
    }
    // Every digit as one integer, times ten to `exponent`.
    let mut digits = format!("{whole}{fraction}");
    let mut exponent = exponent.saturating_sub(fraction.len() as i64);
    while exponent < 0 && digits.ends_with('0') {
        digits.pop();
        exponent += 1;
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Exact::Integer(0);
    }
    if exponent < 0 {
        return Exact::Fraction;
    }
    if digits.len() as i64 + exponent > 39 {
        return Exact::TooLarge;
    }
    let Ok(mut v) = digits.parse::<i128>() else {
        return Exact::TooLarge;
    };
    for _ in 0..exponent {
        match v.checked_mul(10) {
            Some(next) => v = next,
            None => return Exact::TooLarge,
        }
    }
    Exact::Integer(if negative { -v } else { v })
}
