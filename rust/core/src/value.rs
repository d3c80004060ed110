//! Values extracted from an event by the batch scanner, and the typing rules applied to them.
//!
//! Guarantees: numbers keep their raw JSON text (nothing is lost before a rule needs it);
//! `numeric()` implements decision 6 (finite JSON numbers and strings that are exactly a finite JSON
//! number); `write_group_string()` implements decision 9 (grouping values as strings).

use std::borrow::Cow;
use std::fmt::Write as _;

/// A JSON value found at a path. Containers keep their raw text so they cost nothing unless used.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// Raw JSON number text, already validated by the scanner.
    Number(&'a str),
    /// A decoded string (borrowed when it had no escapes).
    Str(Cow<'a, str>),
    /// Raw JSON text of an array (brackets included) and its element count.
    Array {
        raw: &'a str,
        len: usize,
    },
    /// Raw JSON text of an object (braces included).
    Object {
        raw: &'a str,
    },
}

impl Value<'_> {
    /// The numeric value under decision 6, or `None` when the value does not count as a number.
    #[must_use]
    pub fn numeric(&self) -> Option<f64> {
        match self {
            Value::Number(raw) => parse_finite(raw),
            Value::Str(s) => {
                if is_json_number(s.as_bytes()) {
                    parse_finite(s)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Appends the grouping string form (decision 9) to `out`.
    pub fn write_group_string(&self, out: &mut String) {
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(raw) => write_number_string(raw, out),
            Value::Str(s) => out.push_str(s),
            Value::Array { raw, .. } | Value::Object { raw } => write_compact_json(raw, out),
        }
    }

    /// The grouping string form as a new `String`.
    #[must_use]
    pub fn group_string(&self) -> String {
        let mut s = String::new();
        self.write_group_string(&mut s);
        s
    }

    /// A one-byte type tag; distinct-count identity is (tag, string form).
    #[must_use]
    pub fn type_tag(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::Str(_) => 3,
            Value::Array { .. } => 4,
            Value::Object { .. } => 5,
        }
    }
}

fn parse_finite(raw: &str) -> Option<f64> {
    if let Some(v) = parse_short_decimal(raw.as_bytes()) {
        return Some(v);
    }
    raw.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// 10^0 to 10^15, every divisor a number of at most 15 digits can need (all exact in an `f64`,
/// which holds powers of ten exactly up to 10^22).
const EXACT_POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The common number of events, `-?digits[.digits]` with at most 15 digits in all, read without
/// the general decimal parser (Clinger's fast path): the digits make an integer below 2^53 and
/// the divisor a power of ten up to 10^15, both exact in an `f64`, so the one correctly rounded
/// division gives exactly the correctly rounded value that `str::parse` gives. `None` for
/// anything else (exponents, more digits, other bytes), which the caller parses in full.
#[inline]
fn parse_short_decimal(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut count = 0usize;
    let mut fraction: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                count += 1;
            }
            b'.' if fraction.is_none() && i > 0 => fraction = Some(i + 1),
            _ => return None,
        }
    }
    let scale = fraction.map_or(0, |f| digits.len() - f);
    if count > 15 || count == 0 || fraction.is_some_and(|f| f == digits.len()) {
        return None;
    }
    // An integer below 10^15 < 2^53 converts exactly.
    #[allow(clippy::cast_precision_loss)]
    let v = mantissa as f64 / EXACT_POWERS_OF_TEN[scale];
    Some(if negative { -v } else { v })
}

/// Where a JSON number that should start at a given offset breaks the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberFault {
    /// No integer digits (after an optional `-`).
    NoIntegerDigits,
    /// A `.` with no digit after it.
    NoFractionDigits,
    /// An `e`/`E` (and optional sign) with no digit after it.
    NoExponentDigits,
}

/// The one JSON number grammar (RFC 8259 `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`): the end
/// of the longest number starting at `start`, or the offset where it breaks and why. The batch
/// scanner, [`is_json_number`] and the `JPath` lexer all read numbers through it; each words its
/// own errors. A leading `0` ends the integer part, so `01` scans as `0` followed by `1`.
///
/// # Errors
/// The offset of the first byte that breaks the grammar, with the rule it breaks.
#[inline]
pub fn json_number_end(b: &[u8], start: usize) -> Result<usize, (usize, NumberFault)> {
    let digits_from = |mut i: usize| {
        while matches!(b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        i
    };
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_from(i + 1),
        _ => return Err((i, NumberFault::NoIntegerDigits)),
    }
    if b.get(i) == Some(&b'.') {
        let j = digits_from(i + 1);
        if j == i + 1 {
            return Err((j, NumberFault::NoFractionDigits));
        }
        i = j;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let j = digits_from(i);
        if j == i {
            return Err((j, NumberFault::NoExponentDigits));
        }
        i = j;
    }
    Ok(i)
}

/// True when `s` is exactly a JSON number (RFC 8259 grammar, no surrounding whitespace).
#[must_use]
pub fn is_json_number(s: &[u8]) -> bool {
    json_number_end(s, 0) == Ok(s.len())
}

/// Grouping form of a JSON number: integer text stays as written (minus a `-0` sign), everything
/// else becomes JavaScript's shortest round-trip form; non-finite values keep their raw text.
pub fn write_number_string(raw: &str, out: &mut String) {
    let bytes = raw.as_bytes();
    let is_plain_integer = bytes.iter().all(|b| b.is_ascii_digit() || *b == b'-');
    if is_plain_integer {
        if raw.trim_start_matches('-').bytes().all(|b| b == b'0') {
            out.push('0');
        } else {
            out.push_str(raw);
        }
        return;
    }
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() => write_js_number(v, out),
        _ => out.push_str(raw),
    }
}

/// Formats a finite `f64` as JavaScript's `Number.prototype.toString` does.
pub fn write_js_number(v: f64, out: &mut String) {
    if v == 0.0 {
        out.push('0');
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits; only the layout differs from JS.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i32;
    let n = exp + 1; // position of the decimal point relative to the digit string
    if v < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        for _ in 0..(n - k) {
            out.push('0');
        }
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        for _ in 0..(-n) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        let _ = write!(out, "e{}{}", if e >= 0 { '+' } else { '-' }, e.abs());
    }
}

/// Appends `raw` (valid JSON text) with insignificant whitespace removed.
pub fn write_compact_json(raw: &str, out: &mut String) {
    let mut in_string = false;
    let mut escaped = false;
    let mut run_start = 0;
    for (i, b) in raw.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            out.push_str(&raw[run_start..i]);
            run_start = i + 1;
        }
    }
    out.push_str(&raw[run_start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_decimals_parse_exactly_as_the_standard_library() {
        // Every digit count and decimal-point position up to the fast path's limit and past it,
        // with random digits (leading zeros too, as strings may carry them), both signs.
        let mut rng = crate::test_rng::Rng(0xBB67_AE85_84CA_A73B);
        let mut fast = 0;
        for _ in 0..200_000 {
            let n = 1 + rng.below(18);
            let mut text: String = (0..n)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            if rng.below(3) > 0 {
                text.insert(rng.below(n + 1), '.');
            }
            if rng.below(2) == 0 {
                text.insert(0, '-');
            }
            let want = text.parse::<f64>().ok().filter(|v| v.is_finite());
            let got = parse_finite(&text);
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{text}");
            fast += usize::from(parse_short_decimal(text.as_bytes()).is_some());
        }
        assert!(fast > 100_000, "{fast}");
        for text in [
            "-", ".", "-.5", "5.", "1.2.3", "1e5", "+1", "", "0.1", "-0", "-0.0",
        ] {
            let want = text.parse::<f64>().ok().filter(|v| v.is_finite());
            let got = parse_finite(text).map(f64::to_bits);
            assert_eq!(got, want.map(f64::to_bits), "{text}");
        }
    }

    #[test]
    fn one_number_grammar_ends_and_faults() {
        use NumberFault::{NoExponentDigits, NoFractionDigits, NoIntegerDigits};
        for (text, want) in [
            ("0", Ok(1)),
            ("-0", Ok(2)),
            ("01", Ok(1)),
            ("12.5e+3,", Ok(7)),
            ("1E9]", Ok(3)),
            ("-", Err((1, NoIntegerDigits))),
            ("+1", Err((0, NoIntegerDigits))),
            ("-.5", Err((1, NoIntegerDigits))),
            ("1.", Err((2, NoFractionDigits))),
            ("1.e5", Err((2, NoFractionDigits))),
            ("1e", Err((2, NoExponentDigits))),
            ("1e+", Err((3, NoExponentDigits))),
        ] {
            assert_eq!(json_number_end(text.as_bytes(), 0), want, "{text}");
        }
        assert_eq!(json_number_end(b"[-7]", 1), Ok(3));
        assert!(is_json_number(b"-1.5e-3"));
        assert!(!is_json_number(b"01"));
        assert!(!is_json_number(b"1 "));
    }

    fn js(v: f64) -> String {
        let mut s = String::new();
        write_js_number(v, &mut s);
        s
    }

    #[test]
    fn js_number_forms() {
        for (v, want) in [
            (1.5, "1.5"),
            (100.0, "100"),
            (1e-7, "1e-7"),
            (1.5e21, "1.5e+21"),
            (1e21, "1e+21"),
            (123_456_789_012_345_680_000.0, "123456789012345680000"),
            (0.000_001, "0.000001"),
            (-42.25, "-42.25"),
            (299.99, "299.99"),
        ] {
            assert_eq!(js(v), want, "{v}");
        }
    }

    #[test]
    fn numeric_rules() {
        assert_eq!(Value::Number("2").numeric(), Some(2.0));
        assert_eq!(Value::Number("1e999").numeric(), None);
        assert_eq!(Value::Str("19.99".into()).numeric(), Some(19.99));
        assert_eq!(Value::Str("1e3".into()).numeric(), Some(1000.0));
        assert_eq!(Value::Str(" 1".into()).numeric(), None);
        assert_eq!(Value::Str("000123".into()).numeric(), None);
        assert_eq!(Value::Str("true".into()).numeric(), None);
        assert_eq!(Value::Bool(true).numeric(), None);
        assert_eq!(Value::Null.numeric(), None);
    }

    #[test]
    fn group_strings() {
        assert_eq!(Value::Number("42").group_string(), "42");
        assert_eq!(Value::Number("-0").group_string(), "0");
        assert_eq!(Value::Number("1.50").group_string(), "1.5");
        assert_eq!(Value::Number("100.0").group_string(), "100");
        assert_eq!(Value::Number("1e999").group_string(), "1e999");
        assert_eq!(Value::Null.group_string(), "");
        assert_eq!(Value::Bool(false).group_string(), "false");
        assert_eq!(
            Value::Object {
                raw: "{ \"a b\" : [1, 2] }"
            }
            .group_string(),
            "{\"a b\":[1,2]}"
        );
    }
}
