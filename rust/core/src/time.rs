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
// Calendar arithmetic
// ---------------------------------------------------------------------------------------------

fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap_year(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of the civil date `y-m-d` (Howard Hinnant's `days_from_civil`).
///
/// The year is shifted to start in March so the leap day falls at the end of the year, which
/// turns the day-of-year into a closed formula; eras of 400 years repeat exactly.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (i64::from(m) + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day count since 1970-01-01 (Hinnant's
/// `civil_from_days`, the inverse of [`days_from_civil`]). Total over all `i64 / MS_PER_DAY`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    (yoe + era * 400 + i64::from(m <= 2), m as u32, d as u32)
}

// ---------------------------------------------------------------------------------------------
// ISO 8601 / RFC 3339
// ---------------------------------------------------------------------------------------------

/// Two ASCII digits at `i..i + 2`, or `None` when short or not digits.
#[inline]
fn two_digits(b: &[u8], i: usize) -> Option<u32> {
    let hi = b.get(i)?.wrapping_sub(b'0');
    let lo = b.get(i + 1)?.wrapping_sub(b'0');
    // wrapping_sub maps every non-digit byte to a value >= 10, so one comparison validates.
    if hi < 10 && lo < 10 {
        Some(u32::from(hi) * 10 + u32::from(lo))
    } else {
        None
    }
}

/// Parses an ISO 8601 / RFC 3339 timestamp into milliseconds since the epoch.
///
/// Grammar: `YYYY-MM-DD[(T|t| )hh:mm[:ss[.f{1,9}]][Z|z|±hh:mm|±hhmm|±hh]]`.
/// - A date alone is midnight UTC; a time without an offset is UTC.
/// - Fraction digits beyond the millisecond are floored (toward negative infinity).
/// - Fields are range-checked: month 1-12, the day must exist (leap years included), hour
///   0-23, minute 0-59, second 0-60, offset hours 0-23 and offset minutes 0-59.
/// - A leap second (`:60`, with any fraction) is clamped to `:59.999` of the same minute,
///   because POSIX time has no slot for it and clamping keeps it in the right bucket.
/// - The instant must lie in [`MIN_MILLIS`, `MAX_MILLIS`] after the offset is applied.
/// - No surrounding whitespace, no comma decimal separator, no expanded years.
#[must_use]
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // Fixed layout up to the minutes: check positions directly instead of scanning.
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i64::from(two_digits(b, 0)? * 100 + two_digits(b, 2)?);
    let month = two_digits(b, 5)?;
    let day = two_digits(b, 8)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let midnight = days_from_civil(year, month, day) * MS_PER_DAY;
    if b.len() == 10 {
        return Some(midnight);
    }

    if !matches!(b[10], b'T' | b't' | b' ') || b.get(13) != Some(&b':') {
        return None;
    }
    let hour = two_digits(b, 11)?;
    let minute = two_digits(b, 14)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut i = 16;

    // Milliseconds within the minute.
    let mut in_minute: i64 = 0;
    if b.get(i) == Some(&b':') {
        let second = two_digits(b, i + 1)?;
        i += 3;
        if second > 60 {
            return None;
        }
        let mut frac_ms: i64 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while let Some(&c) = b.get(i) {
                if !c.is_ascii_digit() {
                    break;
                }
                // Keep the first three digits; the rest are validated and dropped. Dropping is a
                // floor because the fraction is added to a whole (possibly negative) second.
                if i - start < 3 {
                    frac_ms = frac_ms * 10 + i64::from(c - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 || n > 9 {
                return None;
            }
            for _ in n..3 {
                frac_ms *= 10;
            }
        }
        in_minute = if second == 60 {
            59_999
        } else {
            i64::from(second) * MS_PER_SECOND + frac_ms
        };
    }

    // UTC offset in minutes east of UTC.
    let offset_minutes: i64 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = two_digits(b, i + 1)?;
            i += 3;
            let om = match b.get(i) {
                None => 0,
                Some(b':') => {
                    let om = two_digits(b, i + 1)?;
                    i += 3;
                    om
                }
                Some(_) => {
                    let om = two_digits(b, i)?;
                    i += 2;
                    om
                }
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = i64::from(oh * 60 + om);
            if sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        Some(_) => return None,
    };
    if i != b.len() {
        return None;
    }

    let t =
        midnight + i64::from(hour) * MS_PER_HOUR + i64::from(minute) * MS_PER_MINUTE + in_minute
            - offset_minutes * MS_PER_MINUTE;
    in_range(t)
}

/// Parses a Metrics API `startTime`/`endTime` (spec 7.2).
///
/// Exactly [`parse_iso8601`]: it already accepts what the known clients send, namely Grafana's
/// `2006-01-02T15:04:05Z`, .NET's seven fraction digits `2024-01-17T15:04:05.1234567Z`, and an
/// HTML `datetime-local` value without an offset (`2024-01-17T15:04:00`, read as UTC).
#[must_use]
pub fn parse_query_time(s: &str) -> Option<i64> {
    parse_iso8601(s)
}

#[inline]
fn in_range(t: i64) -> Option<i64> {
    (MIN_MILLIS..=MAX_MILLIS).contains(&t).then_some(t)
}

/// Formats `ms` as RFC 3339 UTC: `YYYY-MM-DDTHH:MM:SSZ`, with `.mmm` only when the
/// milliseconds are not zero. See [`write_rfc3339`].
#[must_use]
pub fn format_rfc3339(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339(ms, &mut out);
    out
}

/// Appends `ms` formatted as by [`format_rfc3339`] to `out` (no intermediate allocation).
///
/// Defined for every `i64`. Years outside 0000-9999, which no parser here produces, use the
/// ISO 8601 expanded form (`-0001-…`, `+10000-…`) so the output still sorts and reads sensibly.
pub fn write_rfc3339(ms: i64, out: &mut String) {
    let (y, mo, d) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let tod = ms.rem_euclid(MS_PER_DAY); // [0, 86_399_999]: pre-1970 times count forward too
    out.reserve(24);
    if (0..=9999).contains(&y) {
        push_digits(out, y as u32, 4);
    } else {
        let sign = if y < 0 { '-' } else { '+' };
        // Writing into a String cannot fail.
        let _ = write!(out, "{sign}{:04}", y.unsigned_abs());
    }
    out.push('-');
    push_digits(out, mo, 2);
    out.push('-');
    push_digits(out, d, 2);
    out.push('T');
    push_digits(out, (tod / MS_PER_HOUR) as u32, 2);
    out.push(':');
    push_digits(out, (tod / MS_PER_MINUTE % 60) as u32, 2);
    out.push(':');
    push_digits(out, (tod / MS_PER_SECOND % 60) as u32, 2);
    let frac = tod % MS_PER_SECOND;
    if frac != 0 {
        out.push('.');
        push_digits(out, frac as u32, 3);
    }
    out.push('Z');
}

/// Appends the last `width` decimal digits of `v`, zero-padded.
fn push_digits(out: &mut String, v: u32, width: u32) {
    for k in (0..width).rev() {
        let digit = v / 10u32.pow(k) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

// ---------------------------------------------------------------------------------------------
// Timestamp formats and Unix times
// ---------------------------------------------------------------------------------------------

/// `timestamp.format` of an ingest (semantics.md section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampFormat {
    /// `ISO_8601`: strings parsed by [`parse_iso8601`].
    Iso8601,
    /// `UNIX_SECONDS`
    UnixSeconds,
    /// `UNIX_MILLISECONDS`
    UnixMilliseconds,
    /// `UNIX_MICROSECONDS`
    UnixMicroseconds,
    /// `UNIX_NANOSECONDS`
    UnixNanoseconds,
    /// `AUTO`: ISO 8601 strings; numbers by magnitude: below 1e11 seconds, below 1e14
    /// milliseconds, below 1e17 microseconds, else nanoseconds.
    Auto,
}

impl TimestampFormat {
    /// Parses the JSON name (`ISO_8601`, `UNIX_SECONDS`, …, `AUTO`); exact and case-sensitive.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ISO_8601" => Self::Iso8601,
            "UNIX_SECONDS" => Self::UnixSeconds,
            "UNIX_MILLISECONDS" => Self::UnixMilliseconds,
            "UNIX_MICROSECONDS" => Self::UnixMicroseconds,
            "UNIX_NANOSECONDS" => Self::UnixNanoseconds,
            "AUTO" => Self::Auto,
            _ => return None,
        })
    }

    /// The JSON name, the inverse of [`TimestampFormat::from_name`].
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Iso8601 => "ISO_8601",
            Self::UnixSeconds => "UNIX_SECONDS",
            Self::UnixMilliseconds => "UNIX_MILLISECONDS",
            Self::UnixMicroseconds => "UNIX_MICROSECONDS",
            Self::UnixNanoseconds => "UNIX_NANOSECONDS",
            Self::Auto => "AUTO",
        }
    }

    /// The power of ten that turns a value of this unit into milliseconds, given the number of
    /// integer digits of the value for `Auto` (so `Auto` is exact on decimal text).
    fn ms_exponent(self, integer_digits: impl FnOnce() -> i64) -> Option<i64> {
        Some(match self {
            Self::Iso8601 => return None,
            Self::UnixSeconds => 3,
            Self::UnixMilliseconds => 0,
            Self::UnixMicroseconds => -3,
            Self::UnixNanoseconds => -6,
            // |v| < 10^11 exactly when v has at most 11 integer digits, and so on.
            Self::Auto => match integer_digits() {
                ..=11 => 3,
                12..=14 => 0,
                15..=17 => -3,
                _ => -6,
            },
        })
    }
}

impl fmt::Display for TimestampFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Converts a Unix time given as a JSON number to milliseconds, flooring.
///
/// `None` for `Iso8601` (a number is not an ISO string), for NaN and infinities, and when the
/// result is outside [`MIN_MILLIS`, `MAX_MILLIS`]. `Auto` picks the unit from `|v|`.
///
/// `v` is taken at its shortest round-trip decimal form (the digits a JSON encoder wrote), not
/// at its binary value: `1721491167.001` seconds is stored in binary as
/// `1721491167.000999927…`, and flooring that would lose the millisecond the sender meant.
/// When the raw JSON number text is at hand, prefer [`unix_str_to_millis`]: a nanosecond time
/// has more digits than an `f64` holds, so only the text is exact.
#[must_use]
pub fn unix_to_millis(v: f64, fmt: TimestampFormat) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let magnitude = v.abs();
    let exp = fmt.ms_exponent(|| {
        if magnitude < 1e11 {
            11
        } else if magnitude < 1e14 {
            14
        } else if magnitude < 1e17 {
            17
        } else {
            18
        }
    })?;
    // Fast path: below 2^53 an integral f64 is exactly its shortest decimal form, since
    // neighbouring doubles are at most 1 apart there. (Above it they are not: the double
    // nearest 1.721491167001e18 is 1721491167000999936, which would floor a millisecond low.)
    if magnitude < 9_007_199_254_740_992.0 && v.fract() == 0.0 {
        return scale_floor(v < 0.0, magnitude as u128, exp);
    }
    // Shortest round-trip digits in exponent form: at most 24 bytes, on the stack.
    let mut buf = StackBuf::default();
    write!(buf, "{v:e}").ok()?;
    let dec = parse_decimal(buf.as_bytes())?;
    scale_floor(dec.neg, dec.mant, dec.exp + exp)
}

/// Converts a Unix time given as a numeric string to milliseconds, flooring, exactly.
///
/// The string must be exactly a JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`,
/// no whitespace, no `+`, no leading zeros), the same rule numeric strings follow elsewhere in
/// the engine. The arithmetic is decimal on `u128`, so `"1721491167001123456"` nanoseconds and
/// `"1721491167.001"` seconds convert without rounding. `Auto` picks the unit from the exact
/// magnitude. `None` for `Iso8601`, for non-numbers, and out of range.
#[must_use]
pub fn unix_str_to_millis(s: &str, fmt: TimestampFormat) -> Option<i64> {
    let dec = parse_decimal(s.as_bytes())?;
    let exp = fmt.ms_exponent(|| dec.integer_digits())?;
    scale_floor(dec.neg, dec.mant, dec.exp + exp)
}

/// Converts a timestamp string in the given format: `Iso8601` uses [`parse_iso8601`], the Unix
/// formats use [`unix_str_to_millis`], and `Auto` tries ISO 8601 first and then a numeric
/// string (the two grammars do not overlap: an ISO date has `-` at byte 4).
#[must_use]
pub fn str_to_millis(s: &str, fmt: TimestampFormat) -> Option<i64> {
    match fmt {
        TimestampFormat::Iso8601 => parse_iso8601(s),
        TimestampFormat::Auto => parse_iso8601(s).or_else(|| unix_str_to_millis(s, fmt)),
        _ => unix_str_to_millis(s, fmt),
    }
}

/// Significant digits kept in a [`Decimal`] mantissa: 36, so that one sticky digit still fits
/// in a `u128` (< 3.4e38). Any in-range time needs far fewer.
const MAX_SIG_DIGITS: i64 = 36;

/// `(-1)^neg * mant * 10^exp`, where `mant` may end in a sticky `1` standing for dropped
/// non-zero digits. A sticky digit sits below every kept digit, so it changes neither the
/// floor of a division by a power of ten nor the magnitude, but it makes negative values that
/// lost digits floor one further down, as they must.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    neg: bool,
    mant: u128,
    exp: i64,
    /// Number of significant digits in `mant`.
    sig: i64,
}

impl Decimal {
    /// Digits before the decimal point (may be zero or negative): |v| < 10^k iff this is <= k.
    fn integer_digits(&self) -> i64 {
        if self.mant == 0 {
            0
        } else {
            self.sig + self.exp
        }
    }

    fn push_digit(&mut self, d: u8, in_fraction: bool, sticky: &mut bool) {
        if self.mant == 0 && d == 0 {
            // Leading zero: no significant digit yet, only the scale moves.
            if in_fraction {
                self.exp -= 1;
            }
        } else if self.sig < MAX_SIG_DIGITS {
            self.mant = self.mant * 10 + u128::from(d);
            self.sig += 1;
            if in_fraction {
                self.exp -= 1;
            }
        } else {
            if !in_fraction {
                self.exp += 1;
            }
            *sticky |= d != 0;
        }
    }
}

/// Parses a JSON number exactly (see [`unix_str_to_millis`] for the grammar).
fn parse_decimal(b: &[u8]) -> Option<Decimal> {
    let mut dec = Decimal {
        neg: false,
        mant: 0,
        exp: 0,
        sig: 0,
    };
    let mut sticky = false;
    let mut i = 0;
    if b.first() == Some(&b'-') {
        dec.neg = true;
        i = 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while let Some(&c @ b'0'..=b'9') = b.get(i) {
                dec.push_digit(c - b'0', false, &mut sticky);
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(&c @ b'0'..=b'9') = b.get(i) {
            dec.push_digit(c - b'0', true, &mut sticky);
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let neg_exp = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let start = i;
        let mut e: i64 = 0;
        while let Some(&c @ b'0'..=b'9') = b.get(i) {
            // Saturate: anything beyond 10^±100000 is out of range or floors to 0/-1 anyway.
            e = (e * 10 + i64::from(c - b'0')).min(100_000);
            i += 1;
        }
        if i == start {
            return None;
        }
        dec.exp += if neg_exp { -e } else { e };
    }
    if i != b.len() {
        return None;
    }
    if sticky {
        dec.mant = dec.mant * 10 + 1;
        dec.exp -= 1;
        dec.sig += 1;
    }
    Some(dec)
}

/// `floor((-1)^neg * mant * 10^exp)` as milliseconds, or `None` when out of range.
fn scale_floor(neg: bool, mant: u128, exp: i64) -> Option<i64> {
    if mant == 0 {
        return Some(0);
    }
    let (quotient, inexact) = if exp >= 0 {
        // mant >= 1, so 10^20 or more is out of range: no need to try larger powers.
        if exp > 20 {
            return None;
        }
        (mant.checked_mul(10u128.pow(exp as u32))?, false)
    } else if exp < -38 {
        // 10^38 > u128 mantissas of at most 37 digits: the value is a non-zero fraction.
        (0, true)
    } else {
        let p = 10u128.pow(exp.unsigned_abs() as u32);
        (mant / p, mant % p != 0)
    };
    // Past i128::MAX is far out of range; within it, -q - 1 cannot overflow.
    let q = i128::try_from(quotient).ok()?;
    let floored = if neg { -q - i128::from(inexact) } else { q };
    i64::try_from(floored).ok().and_then(in_range)
}

/// A fixed stack buffer for formatting one `f64` without allocating.
struct StackBuf {
    buf: [u8; 40],
    len: usize,
}

impl Default for StackBuf {
    fn default() -> Self {
        Self {
            buf: [0; 40],
            len: 0,
        }
    }
}

impl StackBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Intervals and buckets
// ---------------------------------------------------------------------------------------------

/// `intervalType` of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntervalUnit {
    Second,
    Minute,
    Hour,
    Day,
    /// Seven days from the epoch, so weeks start on Thursday 00:00 UTC (1970-01-01 was one).
    Week,
    /// Calendar month in UTC.
    Month,
    /// Calendar year in UTC.
    Year,
}

/// The longest interval: 100 years of 365.25 days.
const MAX_FIXED_MILLIS: i64 = 36_525 * MS_PER_DAY;
/// The shortest interval: 30 seconds.
const MIN_FIXED_MILLIS: i64 = 30 * MS_PER_SECOND;

impl IntervalUnit {
    /// Parses the JSON name (`SECOND` … `YEAR`); exact and case-sensitive.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "SECOND" => Self::Second,
            "MINUTE" => Self::Minute,
            "HOUR" => Self::Hour,
            "DAY" => Self::Day,
            "WEEK" => Self::Week,
            "MONTH" => Self::Month,
            "YEAR" => Self::Year,
            _ => return None,
        })
    }

    /// The JSON name, the inverse of [`IntervalUnit::from_name`].
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Second => "SECOND",
            Self::Minute => "MINUTE",
            Self::Hour => "HOUR",
            Self::Day => "DAY",
            Self::Week => "WEEK",
            Self::Month => "MONTH",
            Self::Year => "YEAR",
        }
    }

    /// Length of one unit in milliseconds; `None` for the calendar units `Month` and `Year`.
    #[must_use]
    pub fn millis(&self) -> Option<i64> {
        match self {
            Self::Second => Some(MS_PER_SECOND),
            Self::Minute => Some(MS_PER_MINUTE),
            Self::Hour => Some(MS_PER_HOUR),
            Self::Day => Some(MS_PER_DAY),
            Self::Week => Some(7 * MS_PER_DAY),
            Self::Month | Self::Year => None,
        }
    }

    /// The inclusive range of valid `intervalCount` values for this unit. Fixed units allow
    /// every count whose length is from 30 seconds to 36,525 days (100 years of 365.25 days):
    /// `SECOND` 30 to 3,155,760,000, `MINUTE` 1 to 52,596,000, `HOUR` 1 to 876,600, `DAY` 1 to
    /// 36,525, `WEEK` 1 to 5,217; `MONTH` 1 to 1200; `YEAR` 1 to 100.
    #[must_use]
    pub fn count_range(&self) -> (i64, i64) {
        match self.millis() {
            // Ceiling of 30 s / unit, at least 1; floor of 100 years / unit.
            Some(unit) => (
                ((MIN_FIXED_MILLIS + unit - 1) / unit).max(1),
                MAX_FIXED_MILLIS / unit,
            ),
            None if *self == Self::Month => (1, 1200),
            None => (1, 100),
        }
    }
}

impl fmt::Display for IntervalUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated bucket interval: `count` × `unit`.
///
/// Build it with [`Interval::new`]. The fields are public for reading; an `Interval` built by
/// hand with `count == 0` is treated as `count == 1` rather than panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    pub unit: IntervalUnit,
    pub count: u32,
}

impl Interval {
    /// Validates `intervalCount` for `unit`: the interval must be from 30 seconds to 100 years
    /// (fixed units up to 36,525 days, `MONTH` 1 to 1200, `YEAR` 1 to 100).
    ///
    /// # Errors
    /// A message naming the unit and the allowed count range when `count` is outside it; the
    /// config layer wraps it in `Error::Config` for the `intervalCount` field.
    pub fn new(unit: IntervalUnit, count: i64) -> Result<Interval, String> {
        let (lo, hi) = unit.count_range();
        if (lo..=hi).contains(&count) {
            // hi <= 3_155_760_000 < u32::MAX, so the conversion cannot fail.
            if let Ok(count) = u32::try_from(count) {
                return Ok(Interval { unit, count });
            }
        }
        Err(format!(
            "intervalCount {count} is out of range for intervalType {unit}: allowed {lo} to {hi} \
             (intervals run from 30 seconds to 100 years)"
        ))
    }

    fn n(self) -> i64 {
        i64::from(self.count.max(1))
    }

    /// The interval length in milliseconds; `None` for `Month` and `Year`, whose length varies.
    #[must_use]
    pub fn fixed_millis(&self) -> Option<i64> {
        // u32::MAX weeks is below 2^62: no overflow for any count.
        self.unit.millis().map(|unit| unit * self.n())
    }

    /// Calendar index of the first month or year of the bucket holding `t` (calendar units
    /// only): the month or year count since January 1970, floored to a multiple of `count`.
    fn calendar_bucket(self, t_ms: i64) -> i64 {
        let (y, m, _) = civil_from_days(t_ms.div_euclid(MS_PER_DAY));
        let idx = if self.unit == IntervalUnit::Month {
            (y - 1970) * 12 + i64::from(m) - 1
        } else {
            y - 1970
        };
        let n = self.n();
        idx.div_euclid(n) * n
    }

    /// Start (00:00 UTC on the first day) of calendar index `idx`, as in `calendar_bucket`.
    fn calendar_start(self, idx: i64) -> i64 {
        let days = if self.unit == IntervalUnit::Month {
            days_from_civil(1970 + idx.div_euclid(12), idx.rem_euclid(12) as u32 + 1, 1)
        } else {
            days_from_civil(1970 + idx, 1, 1)
        };
        days.saturating_mul(MS_PER_DAY)
    }

    /// Start of the bucket that contains `t_ms`.
    ///
    /// Fixed units: `floor(t / L) * L` from the epoch, so custom lengths (13 minutes) count whole
    /// intervals since 1970 and weeks start on Thursdays. `Month`/`Year`: calendar months or
    /// years since January 1970, index `m` truncated to `floor(m / n) * n` (so `MONTH` × 3 gives
    /// calendar quarters), returned as 00:00 UTC of its first day. Works before 1970.
    #[must_use]
    pub fn bucket_start(&self, t_ms: i64) -> i64 {
        if let Some(l) = self.fixed_millis() {
            floor_to(t_ms, l)
        } else {
            self.calendar_start(self.calendar_bucket(t_ms))
        }
    }

    /// Start of the bucket after the one containing `start_ms` (which need not be aligned).
    #[must_use]
    pub fn next_start(&self, start_ms: i64) -> i64 {
        if let Some(l) = self.fixed_millis() {
            floor_to(start_ms, l).saturating_add(l)
        } else {
            self.calendar_start(self.calendar_bucket(start_ms) + self.n())
        }
    }
}

/// `t - (t mod l)` with a non-negative remainder, saturating instead of overflowing near
/// `i64::MIN` (far outside any parsed time) so the function stays total.
#[inline]
fn floor_to(t: i64, l: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(l))
}

/// Epoch truncation for rolled-up (`recalculatedInterval`) buckets: `floor(t / l) * l` with
/// `l` in milliseconds, the same rule as fixed filter intervals (spec 7.7, decision 3).
/// A non-positive `l` means no rollup and returns `t_ms` unchanged.
#[must_use]
pub fn rollup_start(t_ms: i64, l_ms: i64) -> i64 {
    if l_ms <= 0 {
        t_ms
    } else {
        floor_to(t_ms, l_ms)
    }
}

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
