//! Timestamp formats and Unix times: numbers and numeric strings converted exactly.

// The time modules are one concept split by concern: each sees the others' items through
// the parent, as when they were one file.
#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) const MAX_SIG_DIGITS: i64 = 36;

/// `(-1)^neg * mant * 10^exp`, where `mant` may end in a sticky `1` standing for dropped
/// non-zero digits. A sticky digit sits below every kept digit, so it changes neither the
/// floor of a division by a power of ten nor the magnitude, but it makes negative values that
/// lost digits floor one further down, as they must.
#[derive(Debug, Clone, Copy)]
pub(super) struct Decimal {
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
pub(super) fn parse_decimal(b: &[u8]) -> Option<Decimal> {
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
pub(super) fn scale_floor(neg: bool, mant: u128, exp: i64) -> Option<i64> {
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
pub(super) struct StackBuf {
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
