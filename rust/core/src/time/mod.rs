//! Timestamps and time buckets (docs/semantics.md sections 1, 3 and 4).
//!
//! Guarantees:
//! - Time is an `i64` count of milliseconds since 1970-01-01T00:00:00Z on the proleptic
//!   Gregorian calendar in UTC, without leap seconds (POSIX time).
//! - Every parser returns `None` unless the whole input matches its grammar, and every `Some` it
//!   returns lies in [`MIN_MILLIS`, `MAX_MILLIS`] (years 0000 to 9999), so it formats as a
//!   four-digit-year RFC 3339 string.
//! - Precision finer than a millisecond is floored toward negative infinity, also before 1970
//!   (`1969-12-31T23:59:59.9999Z` is `-1`, not `0`).
//! - Numeric strings are converted exactly (decimal arithmetic on `u128`), so nanosecond integers
//!   beyond 2^53 and decimal seconds such as `1721491167.001` land on the millisecond written.
//! - Every function is total: no input, not even `i64::MIN`, makes one panic. Parsing,
//!   conversion and bucketing never allocate (only formatting and error messages do).
//! - Buckets: for every interval and every time `t` in range,
//!   `s = bucket_start(t)` satisfies `s <= t < next_start(s)`, and `bucket_start(s) == s`.
//!
//! Only `std` is used: the calendar arithmetic is Howard Hinnant's `days_from_civil` and
//! `civil_from_days`, and byte-level parsing keeps per-event timestamp work cheap.

use std::fmt::{self, Write as _};

mod calendar;
mod interval;
mod iso8601;
mod unix;

use calendar::{civil_from_days, days_from_civil, days_in_month};
pub use interval::{rollup_start, Interval, IntervalUnit};
use iso8601::in_range;
pub use iso8601::{format_rfc3339, parse_iso8601, parse_query_time, write_rfc3339, Iso8601Parser};
pub use unix::{str_to_millis, unix_str_to_millis, unix_to_millis, TimestampFormat};

/// The one table of fixed unit lengths in milliseconds (`IntervalUnit::millis` reads it).
pub const MS_PER_SECOND: i64 = 1_000;
pub const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
pub const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
pub const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// The earliest time a parser returns: `0000-01-01T00:00:00Z`.
pub const MIN_MILLIS: i64 = -62_167_219_200_000;
/// The latest time a parser returns: `9999-12-31T23:59:59.999Z`.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a test literal that must be valid.
    fn p(s: &str) -> i64 {
        parse_iso8601(s).unwrap_or_else(|| panic!("{s:?} should parse"))
    }

    #[test]
    fn civil_round_trip_and_anchors() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2000, 3, 1, 11_017),
            (1969, 12, 31, -1),
            (0, 3, 1, -719_468),
            (0, 1, 1, -719_528),
            (9999, 12, 31, 2_932_896),
            (1600, 2, 29, -135_081),
        ] {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d), "{days}");
        }
        // Every day across a range wider than 0000-9999 maps back to itself and days advance
        // by one.
        let mut prev = civil_from_days(-800_001);
        for z in -800_000..=3_000_000 {
            let (y, m, d) = civil_from_days(z);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), z);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0 + i64::from(prev.1 / 12), prev.1 % 12 + 1, 1);
            assert!((y, m, d) == next_day || (y, m, d) == next_month, "{z}");
            prev = (y, m, d);
        }
        // Extremes stay total.
        for ms in [i64::MIN, i64::MAX, 0, -1] {
            let _ = civil_from_days(ms.div_euclid(MS_PER_DAY));
        }
    }

    #[test]
    fn iso_valid() {
        // Expected values from Python's datetime.
        let cases: &[(&str, i64)] = &[
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01", 0),
            ("2024-01-01T00:00:00Z", 1_704_067_200_000),
            ("2024-01-01", 1_704_067_200_000),
            ("2024-01-01T00:00", 1_704_067_200_000),
            ("2024-01-01 00:00:00", 1_704_067_200_000),
            ("2024-01-01t00:00:00z", 1_704_067_200_000),
            ("2023-10-15T03:53:25.459Z", 1_697_342_005_459),
            ("2023-10-16T21:03:49.46Z", 1_697_490_229_460),
            ("2024-05-14T09:21:00Z", 1_715_678_460_000),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("2000-02-29T12:34:56.789Z", 951_827_696_789),
            ("1600-02-29", -11_670_998_400_000),
            ("1969-07-20T20:17:40Z", -14_182_940_000),
            ("1900-01-01T00:00:00Z", -2_208_988_800_000),
            ("0001-01-01T00:00:00Z", -62_135_596_800_000),
            ("0000-01-01T00:00:00Z", MIN_MILLIS),
            ("0000-01-01", MIN_MILLIS),
            ("9999-12-31T23:59:59.999Z", MAX_MILLIS),
            ("9999-12-31T23:59:59.999999999Z", MAX_MILLIS),
            // Offsets in every accepted spelling.
            ("2024-03-10T02:30:00Z", 1_710_037_800_000),
            ("2024-03-10T02:30:00+00:00", 1_710_037_800_000),
            ("2024-03-10T02:30:00-00:00", 1_710_037_800_000),
            ("2024-03-10T02:30:00+0000", 1_710_037_800_000),
            ("2024-03-10T02:30:00+00", 1_710_037_800_000),
            ("2024-03-10T02:30:00-08:00", 1_710_066_600_000),
            ("2024-03-10T02:30:00-0800", 1_710_066_600_000),
            ("2024-03-10T02:30:00-08", 1_710_066_600_000),
            ("2024-03-10T02:30-08:00", 1_710_066_600_000),
            ("2024-03-10T02:30:00+05:30", 1_710_018_000_000),
            ("2024-03-10T02:30:00+0530", 1_710_018_000_000),
            ("2024-03-10T02:30:00+05", 1_710_019_800_000),
            ("2024-03-10T02:30:00+14:00", 1_709_987_400_000),
            ("2024-03-10T02:30:00-12:00", 1_710_081_000_000),
            ("2024-03-10T02:30:00+23:59", 1_709_951_460_000),
            ("2024-03-10T02:30:00-23:59", 1_710_124_140_000),
            // An offset may carry a time across a day or year boundary.
            ("2024-01-01T00:30:00+01:00", 1_704_067_200_000 - 1_800_000),
            // Leap seconds clamp to :59.999 of the same minute.
            ("2016-12-31T23:59:60Z", 1_483_228_799_999),
            ("2016-12-31T23:59:60.5Z", 1_483_228_799_999),
            ("2016-12-31T23:59:59.999Z", 1_483_228_799_999),
            // Pre-1970 fractions floor toward negative infinity.
            ("1969-12-31T23:59:59.9999Z", -1),
            ("1969-12-31T23:59:59.999999999Z", -1),
            ("1969-12-31T23:59:59.0001Z", -1_000),
            ("1969-12-31T23:59:59Z", -1_000),
        ];
        for &(s, want) in cases {
            assert_eq!(parse_iso8601(s), Some(want), "{s}");
        }
    }

    #[test]
    fn iso_fraction_digits() {
        let base = p("2024-01-17T15:04:05Z");
        let cases: &[(&str, i64)] = &[
            ("", 0),
            (".1", 100),
            (".12", 120),
            (".123", 123),
            (".1234", 123),
            (".12345", 123),
            (".123456", 123),
            (".1234567", 123),
            (".12345678", 123),
            (".123456789", 123),
            (".999999999", 999),
            (".000999999", 0),
            (".0", 0),
            (".05", 50),
        ];
        for &(frac, add) in cases {
            for offset in ["Z", "+00:00", ""] {
                let s = format!("2024-01-17T15:04:05{frac}{offset}");
                assert_eq!(parse_iso8601(&s), Some(base + add), "{s}");
            }
        }
    }

    #[test]
    fn iso_invalid() {
        let cases = [
            "",
            "2024",
            "2024-01",
            "2024-01-0",
            "garbage",
            "not-a-date",
            "2024-02-30",
            "2023-02-29",
            "1900-02-29",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-01-32",
            "2024-1-01",
            "2024/01/01",
            "+2024-01-01",
            "-0001-01-01",
            "10000-01-01",
            "２０２４-01-01",
            "2024-01-01T",
            "2024-01-01T00",
            "2024-01-01T0:00",
            "2024-01-01T24:00",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:60",
            "2024-01-01T23:59:61",
            "2024-01-01T23:59:5",
            "2024-01-01X00:00:00",
            "2024-01-01TT00:00:00",
            "2024-01-01T00:00.5",
            "2024-01-01T00:00:00.",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-01-01T00:00:00,5Z",
            "2024-01-01T00:00:00.12a",
            "2024-01-01T00:00:00ZZ",
            "2024-01-01T00:00:00Z ",
            " 2024-01-01T00:00:00Z",
            "2024-01-01Z",
            "2024-01-01 ",
            "2024-01-01T00:00:00+",
            "2024-01-01T00:00:00+5:00",
            "2024-01-01T00:00:00+05:",
            "2024-01-01T00:00:00+05:3",
            "2024-01-01T00:00:00+053",
            "2024-01-01T00:00:00+05:300",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+05:60",
            "2024-01-01T00:00:00UTC",
            "2024-01-01T00:00:00 Z",
            // Valid fields, but the instant leaves years 0000-9999.
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:00-00:01",
        ];
        for s in cases {
            assert_eq!(parse_iso8601(s), None, "{s:?}");
        }
    }

    #[test]
    fn remembering_parser_equals_parse_iso8601_in_every_order() {
        // Timestamps that share their first 16 bytes or differ just inside them, valid and
        // invalid, each mutated at every position: the parser must answer as the pure function
        // whatever it parsed before (a pair of every string after every other one).
        let seeds = [
            "2024-05-14T02:35:26.383Z",
            "2024-05-14T02:35:59.999Z",
            "2024-05-14T02:36:00Z",
            "2024-05-14t02:35:26+01:30",
            "2024-05-14 02:35",
            "2024-02-29T23:59:60.5Z",
            "2023-02-29T00:00:00Z",
            "2024-05-14T24:35:26Z",
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59.999-00:00",
            "2024-05-14",
            "2024-05-14T02:3",
        ];
        let mut rng = crate::test_rng::Rng(0x6A09_E667_F3BC_C908);
        let mut corpus: Vec<String> = seeds.iter().map(|s| (*s).to_owned()).collect();
        for s in seeds {
            for at in 0..s.len() {
                let mut b = s.as_bytes().to_vec();
                b[at] = b"0123456789:-.TZ+ x"[rng.below(18)];
                corpus.push(String::from_utf8(b).expect("ascii"));
            }
        }
        for first in &corpus {
            for second in &corpus {
                let mut parser = Iso8601Parser::new();
                assert_eq!(parser.parse(first), parse_iso8601(first), "{first}");
                assert_eq!(
                    parser.parse(second),
                    parse_iso8601(second),
                    "{first} {second}"
                );
            }
        }
        let mut one = Iso8601Parser::new();
        let mut order: Vec<&String> = corpus.iter().collect();
        for _ in 0..20 {
            rng.shuffle(&mut order);
            for s in &order {
                assert_eq!(one.parse(s), parse_iso8601(s), "{s}");
            }
        }
        assert!(corpus.iter().filter(|s| parse_iso8601(s).is_some()).count() > 50);
    }

    #[test]
    fn query_time_formats() {
        let cases: &[(&str, i64)] = &[
            ("2024-01-17T15:04:05.1234567Z", 1_705_503_845_123),
            ("2024-01-17T15:04:05.123Z", 1_705_503_845_123),
            ("2024-01-17T15:04:00", 1_705_503_840_000),
            ("2024-01-17T15:04", 1_705_503_840_000),
            ("2024-01-17T15:04:00Z", 1_705_503_840_000),
            ("2024-01-17T16:04:00+01:00", 1_705_503_840_000),
        ];
        for &(s, want) in cases {
            assert_eq!(parse_query_time(s), Some(want), "{s}");
        }
        assert_eq!(parse_query_time("yesterday"), None);
    }

    #[test]
    fn format_table() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-1_000, "1969-12-31T23:59:59Z"),
            (1_715_678_460_000, "2024-05-14T09:21:00Z"),
            (1_697_490_229_460, "2023-10-16T21:03:49.460Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00Z"),
            (-14_182_940_000, "1969-07-20T20:17:40Z"),
            (MIN_MILLIS, "0000-01-01T00:00:00Z"),
            (MAX_MILLIS, "9999-12-31T23:59:59.999Z"),
            (MIN_MILLIS - 1, "-0001-12-31T23:59:59.999Z"),
            (MAX_MILLIS + 1, "+10000-01-01T00:00:00Z"),
        ];
        for &(ms, want) in cases {
            assert_eq!(format_rfc3339(ms), want, "{ms}");
        }
        // Appends, and never panics at the extremes.
        let mut out = String::from("dt=");
        write_rfc3339(0, &mut out);
        assert_eq!(out, "dt=1970-01-01T00:00:00Z");
        for ms in [i64::MIN, i64::MIN + 1, i64::MAX] {
            assert!(format_rfc3339(ms).ends_with('Z'));
        }
    }

    #[test]
    fn round_trips() {
        // format(parse(x)) == x for canonical strings.
        for s in [
            "1970-01-01T00:00:00Z",
            "2024-05-14T09:21:00Z",
            "2024-02-29T23:59:59.999Z",
            "2023-10-15T03:53:25.459Z",
            "1969-12-31T23:59:59.999Z",
            "1900-03-01T00:00:00.001Z",
            "0000-02-29T12:00:00Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            assert_eq!(format_rfc3339(p(s)), s);
        }
        // parse(format(t)) == t across the whole range (a deterministic pseudo-random walk).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let span = (MAX_MILLIS - MIN_MILLIS) as u64 + 1;
            let t = MIN_MILLIS + (x % span) as i64;
            assert_eq!(parse_iso8601(&format_rfc3339(t)), Some(t), "{t}");
            // Second-aligned values exercise the no-fraction form.
            let t = t - t.rem_euclid(1_000);
            assert_eq!(parse_iso8601(&format_rfc3339(t)), Some(t), "{t}");
        }
    }

    #[test]
    fn timestamp_format_names() {
        let all = [
            (TimestampFormat::Iso8601, "ISO_8601"),
            (TimestampFormat::UnixSeconds, "UNIX_SECONDS"),
            (TimestampFormat::UnixMilliseconds, "UNIX_MILLISECONDS"),
            (TimestampFormat::UnixMicroseconds, "UNIX_MICROSECONDS"),
            (TimestampFormat::UnixNanoseconds, "UNIX_NANOSECONDS"),
            (TimestampFormat::Auto, "AUTO"),
        ];
        for (fmt, name) in all {
            assert_eq!(fmt.name(), name);
            assert_eq!(fmt.to_string(), name);
            assert_eq!(TimestampFormat::from_name(name), Some(fmt));
        }
        for bad in ["", "iso_8601", "ISO8601", "UNIX_MILLIS", "auto", " AUTO"] {
            assert_eq!(TimestampFormat::from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unix_numbers() {
        use TimestampFormat::{
            Auto, Iso8601, UnixMicroseconds, UnixMilliseconds, UnixNanoseconds, UnixSeconds,
        };
        let cases: &[(f64, TimestampFormat, Option<i64>)] = &[
            (0.0, UnixSeconds, Some(0)),
            (-0.0, UnixSeconds, Some(0)),
            (1_721_491_167.0, UnixSeconds, Some(1_721_491_167_000)),
            // Decimal seconds keep the millisecond written, despite binary rounding.
            (1_721_491_167.001, UnixSeconds, Some(1_721_491_167_001)),
            (1_721_491_167.999_9, UnixSeconds, Some(1_721_491_167_999)),
            (1.5, UnixSeconds, Some(1_500)),
            (-1.5, UnixSeconds, Some(-1_500)),
            (-0.000_1, UnixSeconds, Some(-1)),
            (-1.000_1, UnixSeconds, Some(-1_001)),
            (
                1_721_491_167_001.0,
                UnixMilliseconds,
                Some(1_721_491_167_001),
            ),
            (
                1_721_491_167_001.9,
                UnixMilliseconds,
                Some(1_721_491_167_001),
            ),
            (-0.5, UnixMilliseconds, Some(-1)),
            (
                1_721_491_167_001_999.0,
                UnixMicroseconds,
                Some(1_721_491_167_001),
            ),
            (-1.0, UnixMicroseconds, Some(-1)),
            (
                1.721_491_167_001e18,
                UnixNanoseconds,
                Some(1_721_491_167_001),
            ),
            (-1.0, UnixNanoseconds, Some(-1)),
            // Auto, one per magnitude band and at the band edges.
            (1_721_491_167.0, Auto, Some(1_721_491_167_000)),
            (-1_000_000_000.0, Auto, Some(-1_000_000_000_000)),
            (99_999_999_999.0, Auto, Some(99_999_999_999_000)),
            (1e11, Auto, Some(100_000_000_000)),
            (1_721_491_167_001.0, Auto, Some(1_721_491_167_001)),
            (1e14, Auto, Some(100_000_000_000)),
            (1_721_491_167_001_000.0, Auto, Some(1_721_491_167_001)),
            (1e17, Auto, Some(100_000_000_000)),
            (1.721_491_167_001e18, Auto, Some(1_721_491_167_001)),
            (0.0, Auto, Some(0)),
            // Rejections.
            (1_721_491_167.0, Iso8601, None),
            (f64::NAN, UnixSeconds, None),
            (f64::INFINITY, Auto, None),
            (f64::NEG_INFINITY, UnixMilliseconds, None),
            (1e300, UnixNanoseconds, None),
            (1e300, Auto, None),
            (253_402_300_800.0, UnixSeconds, None),
            (253_402_300_799.999, UnixSeconds, Some(MAX_MILLIS)),
            (-62_167_219_200.0, UnixSeconds, Some(MIN_MILLIS)),
            (-62_167_219_200.001, UnixSeconds, None),
            (5e-324, UnixSeconds, Some(0)),
            (-5e-324, UnixSeconds, Some(-1)),
        ];
        for &(v, fmt, want) in cases {
            assert_eq!(unix_to_millis(v, fmt), want, "{v:e} {fmt}");
        }
    }

    #[test]
    fn unix_strings_valid() {
        use TimestampFormat::{
            Auto, UnixMicroseconds, UnixMilliseconds, UnixNanoseconds, UnixSeconds,
        };
        let cases: &[(&str, TimestampFormat, Option<i64>)] = &[
            ("1721491167", UnixSeconds, Some(1_721_491_167_000)),
            ("1721491167.001", UnixSeconds, Some(1_721_491_167_001)),
            ("1.721491167001e9", UnixSeconds, Some(1_721_491_167_001)),
            ("1.721491167001E+9", UnixSeconds, Some(1_721_491_167_001)),
            ("-1.5", UnixSeconds, Some(-1_500)),
            ("-0.0001", UnixSeconds, Some(-1)),
            ("-0", UnixSeconds, Some(0)),
            ("0", UnixSeconds, Some(0)),
            ("0.0", UnixSeconds, Some(0)),
            ("1721491167001", UnixMilliseconds, Some(1_721_491_167_001)),
            (
                "1721491167001.999",
                UnixMilliseconds,
                Some(1_721_491_167_001),
            ),
            ("1E3", UnixMilliseconds, Some(1_000)),
            ("1e-3", UnixMilliseconds, Some(0)),
            ("-1e-3", UnixMilliseconds, Some(-1)),
            (
                "1721491167001999",
                UnixMicroseconds,
                Some(1_721_491_167_001),
            ),
            ("-1", UnixMicroseconds, Some(-1)),
            // Nanosecond integers beyond 2^53 are exact: f64 would round these.
            (
                "1721491167001999999",
                UnixNanoseconds,
                Some(1_721_491_167_001),
            ),
            (
                "1721491167002000000",
                UnixNanoseconds,
                Some(1_721_491_167_002),
            ),
            (
                "1721491167001999999.999",
                UnixNanoseconds,
                Some(1_721_491_167_001),
            ),
            ("-1", UnixNanoseconds, Some(-1)),
            ("-1000000", UnixNanoseconds, Some(-1)),
            ("-1000001", UnixNanoseconds, Some(-2)),
            ("253402300799999999999", UnixNanoseconds, Some(MAX_MILLIS)),
            ("253402300800000000000", UnixNanoseconds, None),
            // Digits beyond the kept 36 still floor correctly (sticky digit).
            (
                "1721491167001.99999999999999999999999999999999999999999",
                UnixMilliseconds,
                Some(1_721_491_167_001),
            ),
            (
                "-0.000000000000000000000000000000000000000000000000000001",
                UnixMilliseconds,
                Some(-1),
            ),
            (
                "-1721491167001.00000000000000000000000000000000000000001",
                UnixMilliseconds,
                Some(-1_721_491_167_002),
            ),
            (
                "-1721491167001.00000000000000000000000000000000000000000",
                UnixMilliseconds,
                Some(-1_721_491_167_001),
            ),
            ("1e-100000000000", UnixSeconds, Some(0)),
            ("-1e-100000000000", UnixSeconds, Some(-1)),
            ("0e100000000000", UnixSeconds, Some(0)),
            ("1e400", UnixNanoseconds, None),
            ("1e21", UnixNanoseconds, None),
            // Auto by exact magnitude, including band edges.
            ("1721491167", Auto, Some(1_721_491_167_000)),
            ("99999999999.999", Auto, Some(99_999_999_999_999)),
            ("100000000000", Auto, Some(100_000_000_000)),
            ("1e11", Auto, Some(100_000_000_000)),
            ("1721491167001", Auto, Some(1_721_491_167_001)),
            ("1721491167001123", Auto, Some(1_721_491_167_001)),
            ("1721491167001123456", Auto, Some(1_721_491_167_001)),
            ("-1721491167", Auto, Some(-1_721_491_167_000)),
            ("0.5", Auto, Some(500)),
            ("1721491167001000000000000000000000000000", Auto, None),
        ];
        for &(s, fmt, want) in cases {
            assert_eq!(unix_str_to_millis(s, fmt), want, "{s:?} {fmt}");
        }
    }

    #[test]
    fn unix_strings_invalid() {
        use TimestampFormat::{Auto, Iso8601, UnixSeconds};
        // Not JSON numbers, or the wrong format.
        let cases: &[(&str, TimestampFormat, Option<i64>)] = &[
            ("1721491167", Iso8601, None),
            ("", UnixSeconds, None),
            ("-", UnixSeconds, None),
            ("+1", UnixSeconds, None),
            ("01", UnixSeconds, None),
            ("1.", UnixSeconds, None),
            (".5", UnixSeconds, None),
            ("1e", UnixSeconds, None),
            ("1e+", UnixSeconds, None),
            ("1.5.5", UnixSeconds, None),
            (" 1", UnixSeconds, None),
            ("1 ", UnixSeconds, None),
            ("abc", UnixSeconds, None),
            ("NaN", Auto, None),
            ("inf", Auto, None),
            ("0x10", UnixSeconds, None),
            ("1_000", UnixSeconds, None),
            ("2024-01-01", UnixSeconds, None),
        ];
        for &(s, fmt, want) in cases {
            assert_eq!(unix_str_to_millis(s, fmt), want, "{s:?} {fmt}");
        }
    }

    #[test]
    fn str_dispatch() {
        use TimestampFormat::{Auto, Iso8601, UnixMilliseconds, UnixSeconds};
        let cases: &[(&str, TimestampFormat, Option<i64>)] = &[
            ("2024-01-01T00:00:00Z", Iso8601, Some(1_704_067_200_000)),
            ("2024-01-01T00:00:00Z", Auto, Some(1_704_067_200_000)),
            ("2024-01-01", Auto, Some(1_704_067_200_000)),
            ("1704067200", Auto, Some(1_704_067_200_000)),
            ("1704067200000", Auto, Some(1_704_067_200_000)),
            ("1704067200", UnixSeconds, Some(1_704_067_200_000)),
            ("1704067200", Iso8601, None),
            ("2024-01-01T00:00:00Z", UnixMilliseconds, None),
            ("soon", Auto, None),
        ];
        for &(s, fmt, want) in cases {
            assert_eq!(str_to_millis(s, fmt), want, "{s:?} {fmt}");
        }
    }

    #[test]
    fn interval_unit_names() {
        use IntervalUnit::{Day, Hour, Minute, Month, Second, Week, Year};
        for (unit, name) in [
            (Second, "SECOND"),
            (Minute, "MINUTE"),
            (Hour, "HOUR"),
            (Day, "DAY"),
            (Week, "WEEK"),
            (Month, "MONTH"),
            (Year, "YEAR"),
        ] {
            assert_eq!(unit.name(), name);
            assert_eq!(unit.to_string(), name);
            assert_eq!(IntervalUnit::from_name(name), Some(unit));
        }
        for bad in ["", "minute", "MINUTES", "QUARTER"] {
            assert_eq!(IntervalUnit::from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn interval_validation() {
        use IntervalUnit::{Day, Hour, Minute, Month, Second, Week, Year};
        let cases: &[(IntervalUnit, i64, bool)] = &[
            (Second, 29, false),
            (Second, 30, true),
            (Second, 3_155_760_000, true),
            (Second, 3_155_760_001, false),
            (Minute, 0, false),
            (Minute, 1, true),
            (Minute, 15, true),
            (Minute, 52_596_000, true),
            (Minute, 52_596_001, false),
            (Hour, 876_600, true),
            (Hour, 876_601, false),
            (Day, 36_525, true),
            (Day, 36_526, false),
            (Week, 5_217, true),
            (Week, 5_218, false),
            (Month, 0, false),
            (Month, 1, true),
            (Month, 1_200, true),
            (Month, 1_201, false),
            (Year, 0, false),
            (Year, 1, true),
            (Year, 100, true),
            (Year, 101, false),
            (Minute, -5, false),
            (Second, i64::MIN, false),
            (Second, i64::MAX, false),
            (Year, i64::from(u32::MAX) + 1, false),
        ];
        for &(unit, count, ok) in cases {
            let got = Interval::new(unit, count);
            assert_eq!(got.is_ok(), ok, "{unit} {count}: {got:?}");
            match got {
                Ok(iv) => assert_eq!((iv.unit, i64::from(iv.count)), (unit, count)),
                Err(msg) => {
                    let (lo, hi) = unit.count_range();
                    assert!(msg.contains(&format!("allowed {lo} to {hi}")), "{msg}");
                    assert!(
                        msg.contains(unit.name()) && msg.contains("30 seconds"),
                        "{msg}"
                    );
                }
            }
        }
        assert_eq!(
            Interval::new(Minute, 5).unwrap().fixed_millis(),
            Some(300_000)
        );
        assert_eq!(Interval::new(Month, 3).unwrap().fixed_millis(), None);
        assert_eq!(Interval::new(Year, 1).unwrap().fixed_millis(), None);
    }

    /// `(unit, count, event time, expected bucket start)`, all as RFC 3339 strings.
    #[test]
    fn bucket_starts() {
        use IntervalUnit::{Day, Hour, Minute, Month, Second, Week, Year};
        let cases: &[(IntervalUnit, u32, &str, &str)] = &[
            // Spec 5.4 worked examples.
            (Minute, 5, "2024-01-01T00:07:30Z", "2024-01-01T00:05:00Z"),
            (Minute, 5, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
            (Minute, 5, "2024-01-01T00:13:05Z", "2024-01-01T00:10:00Z"),
            (Minute, 13, "2024-01-01T00:07:30Z", "2024-01-01T00:06:00Z"),
            (Minute, 13, "2024-01-01T00:00:00Z", "2023-12-31T23:53:00Z"),
            (Minute, 13, "2024-01-01T00:13:05Z", "2024-01-01T00:06:00Z"),
            // Other fixed units.
            (
                Second,
                30,
                "2024-05-14T09:21:59.999Z",
                "2024-05-14T09:21:30Z",
            ),
            (Minute, 15, "2024-05-14T09:21:00Z", "2024-05-14T09:15:00Z"),
            (Hour, 1, "2024-05-14T09:21:00+02:00", "2024-05-14T07:00:00Z"),
            (Hour, 5, "1970-01-01T04:59:59.999Z", "1970-01-01T00:00:00Z"),
            (Day, 1, "2024-02-29T23:59:59.999Z", "2024-02-29T00:00:00Z"),
            // Weeks start on Thursday (1970-01-01, 2024-05-09 and 1969-12-25 are Thursdays).
            (Week, 1, "1970-01-07T23:59:59.999Z", "1970-01-01T00:00:00Z"),
            (Week, 1, "2024-05-15T12:00:00Z", "2024-05-09T00:00:00Z"),
            (Week, 1, "2024-05-16T00:00:00Z", "2024-05-16T00:00:00Z"),
            (Week, 1, "1969-12-31T23:59:59.999Z", "1969-12-25T00:00:00Z"),
            (Week, 2, "1970-01-15T00:00:00Z", "1970-01-15T00:00:00Z"),
            // Pre-1970 floors toward negative infinity.
            (
                Minute,
                5,
                "1969-12-31T23:59:59.999Z",
                "1969-12-31T23:55:00Z",
            ),
            (Minute, 13, "1969-12-31T23:59:59Z", "1969-12-31T23:47:00Z"),
            (Second, 30, "1969-12-31T23:59:30Z", "1969-12-31T23:59:30Z"),
            (Day, 1, "1900-02-28T12:00:00Z", "1900-02-28T00:00:00Z"),
            // Calendar months: monthly, quarterly (index counted from 1970-01), others.
            (Month, 1, "2024-05-14T09:21:00Z", "2024-05-01T00:00:00Z"),
            (Month, 1, "2024-02-29T12:00:00Z", "2024-02-01T00:00:00Z"),
            (Month, 1, "2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z"),
            (Month, 1, "2024-02-29T23:59:59.999Z", "2024-02-01T00:00:00Z"),
            (Month, 3, "2024-05-14T09:21:00Z", "2024-04-01T00:00:00Z"),
            (Month, 3, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
            (Month, 3, "2024-12-31T23:59:59.999Z", "2024-10-01T00:00:00Z"),
            (Month, 5, "2024-05-14T00:00:00Z", "2024-03-01T00:00:00Z"),
            (Month, 12, "2024-05-14T00:00:00Z", "2024-01-01T00:00:00Z"),
            (Month, 1, "1969-02-15T00:00:00Z", "1969-02-01T00:00:00Z"),
            (Month, 3, "1969-12-31T23:59:59.999Z", "1969-10-01T00:00:00Z"),
            (Month, 3, "1969-02-28T00:00:00Z", "1969-01-01T00:00:00Z"),
            (Month, 7, "1969-06-30T00:00:00Z", "1969-06-01T00:00:00Z"),
            (Month, 7, "1969-05-31T00:00:00Z", "1968-11-01T00:00:00Z"),
            (Month, 1200, "2024-05-14T00:00:00Z", "1970-01-01T00:00:00Z"),
            (Month, 1200, "1969-05-14T00:00:00Z", "1870-01-01T00:00:00Z"),
            (Month, 1, "0000-02-29T00:00:00Z", "0000-02-01T00:00:00Z"),
            (Month, 1, "9999-12-31T23:59:59.999Z", "9999-12-01T00:00:00Z"),
            // Calendar years.
            (Year, 1, "2024-05-14T09:21:00Z", "2024-01-01T00:00:00Z"),
            (Year, 1, "2024-12-31T23:59:59.999Z", "2024-01-01T00:00:00Z"),
            (Year, 1, "1969-12-31T23:59:59.999Z", "1969-01-01T00:00:00Z"),
            (Year, 3, "2024-05-14T00:00:00Z", "2024-01-01T00:00:00Z"),
            (Year, 3, "2026-05-14T00:00:00Z", "2024-01-01T00:00:00Z"),
            (Year, 3, "1969-05-14T00:00:00Z", "1967-01-01T00:00:00Z"),
            (Year, 10, "2024-05-14T00:00:00Z", "2020-01-01T00:00:00Z"),
            (Year, 10, "1969-05-14T00:00:00Z", "1960-01-01T00:00:00Z"),
            (Year, 100, "2024-05-14T00:00:00Z", "1970-01-01T00:00:00Z"),
            (Year, 100, "1969-05-14T00:00:00Z", "1870-01-01T00:00:00Z"),
            (Year, 1, "0000-06-01T00:00:00Z", "0000-01-01T00:00:00Z"),
        ];
        for &(unit, count, t, want) in cases {
            let iv = Interval::new(unit, i64::from(count)).unwrap();
            let got = format_rfc3339(iv.bucket_start(p(t)));
            assert_eq!(got, want, "{count} {unit} of {t}");
        }
    }

    #[test]
    fn weekly_buckets_start_on_thursday() {
        let week = Interval::new(IntervalUnit::Week, 1).unwrap();
        for day in -1_000..1_000 {
            let start = week.bucket_start(day * MS_PER_DAY + 12 * MS_PER_HOUR);
            let days = start.div_euclid(MS_PER_DAY);
            // Day 0 (1970-01-01) was a Thursday; 0 = Sunday in this numbering.
            assert_eq!((days + 4).rem_euclid(7), 4, "day {day}");
            assert_eq!(start.rem_euclid(MS_PER_DAY), 0);
        }
    }

    #[test]
    fn next_starts() {
        use IntervalUnit::{Minute, Month, Week, Year};
        let cases: &[(IntervalUnit, u32, &str, &str)] = &[
            (Minute, 5, "2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z"),
            (Minute, 5, "2024-01-01T00:07:30Z", "2024-01-01T00:10:00Z"),
            (Minute, 13, "2023-12-31T23:53:00Z", "2024-01-01T00:06:00Z"),
            (Week, 1, "2024-05-09T00:00:00Z", "2024-05-16T00:00:00Z"),
            (Month, 1, "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"),
            (Month, 1, "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
            (Month, 1, "2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            (Month, 3, "2024-10-01T00:00:00Z", "2025-01-01T00:00:00Z"),
            (Month, 3, "2024-05-14T09:21:00Z", "2024-07-01T00:00:00Z"),
            (Month, 3, "1969-10-01T00:00:00Z", "1970-01-01T00:00:00Z"),
            (Month, 7, "1968-11-01T00:00:00Z", "1969-06-01T00:00:00Z"),
            (Year, 1, "1969-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
            (Year, 10, "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z"),
            (
                Year,
                100,
                "9999-12-31T23:59:59.999Z",
                "+10070-01-01T00:00:00Z",
            ),
        ];
        for &(unit, count, s, want) in cases {
            let iv = Interval::new(unit, i64::from(count)).unwrap();
            let got = format_rfc3339(iv.next_start(p(s)));
            assert_eq!(got, want, "{count} {unit} after {s}");
        }
    }

    #[test]
    fn bucket_invariants() {
        use IntervalUnit::{Day, Hour, Minute, Month, Second, Week, Year};
        let intervals: [(IntervalUnit, u32); 14] = [
            (Second, 30),
            (Second, 45),
            (Minute, 13),
            (Hour, 7),
            (Day, 1),
            (Week, 1),
            (Week, 3),
            (Month, 1),
            (Month, 3),
            (Month, 7),
            (Month, 1200),
            (Year, 1),
            (Year, 3),
            (Year, 100),
        ];
        let mut x: u64 = 12_345;
        for _ in 0..3_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let t = MIN_MILLIS + (x % (MAX_MILLIS - MIN_MILLIS) as u64) as i64;
            for (unit, count) in intervals {
                let iv = Interval::new(unit, i64::from(count)).unwrap();
                let s = iv.bucket_start(t);
                let next = iv.next_start(s);
                assert!(s <= t && t < next, "{iv:?} {t}");
                assert_eq!(iv.bucket_start(s), s, "{iv:?} {t}");
                assert_eq!(iv.bucket_start(next), next, "{iv:?} {t}");
                assert_eq!(iv.bucket_start(next - 1), s, "{iv:?} {t}");
                assert_eq!(iv.next_start(t), next, "{iv:?} {t}");
            }
        }
        // Total at the extremes, including a hand-built count of 0.
        for (unit, count) in intervals {
            let iv = Interval { unit, count };
            for t in [i64::MIN, i64::MAX, 0] {
                let _ = (iv.bucket_start(t), iv.next_start(t));
            }
        }
        let zero = Interval {
            unit: Month,
            count: 0,
        };
        assert_eq!(zero.bucket_start(p("2024-05-14")), p("2024-05-01"));
    }

    #[test]
    fn rollups() {
        let cases: &[(i64, i64, i64)] = &[
            (
                p("2024-01-01T00:07:30Z"),
                300_000,
                p("2024-01-01T00:05:00Z"),
            ),
            (
                p("2024-01-01T00:00:00Z"),
                780_000,
                p("2023-12-31T23:53:00Z"),
            ),
            (
                p("2024-01-01T00:13:05Z"),
                780_000,
                p("2024-01-01T00:06:00Z"),
            ),
            (-1, 60_000, -60_000),
            (-60_000, 60_000, -60_000),
            (59_999, 60_000, 0),
            (12_345, 0, 12_345),
            (12_345, -1_000, 12_345),
            (i64::MIN, 7, i64::MIN),
        ];
        for &(t, l, want) in cases {
            assert_eq!(rollup_start(t, l), want, "{t} {l}");
        }
    }
}
