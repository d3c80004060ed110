//! ISO 8601 / RFC 3339: parsing timestamps and formatting them.

// The time modules are one concept split by concern: each sees the others' items through
// the parent, as when they were one file.
#[allow(clippy::wildcard_imports)]
use super::*;

/// Two ASCII digits at `i..i + 2`, or `None` when short or not digits.
#[inline]
pub(super) fn two_digits(b: &[u8], i: usize) -> Option<u32> {
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
    if b.len() == 10 {
        return date_midnight(b);
    }
    parse_tail(b, minute_start(b)?)
}

/// Midnight UTC of the `YYYY-MM-DD` at the start of `b` (at least 10 bytes), range-checked.
#[inline]
fn date_midnight(b: &[u8]) -> Option<i64> {
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
    Some(days_from_civil(year, month, day) * MS_PER_DAY)
}

/// The instant (UTC, before any offset) of the `YYYY-MM-DD(T|t| )hh:mm` that opens `b`: the
/// first 16 bytes, which is all of a timestamp that repeats from one event to the next.
#[inline]
fn minute_start(b: &[u8]) -> Option<i64> {
    let midnight = date_midnight(b)?;
    if b.len() < 16 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return None;
    }
    let hour = two_digits(b, 11)?;
    let minute = two_digits(b, 14)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    Some(midnight + i64::from(hour) * MS_PER_HOUR + i64::from(minute) * MS_PER_MINUTE)
}

/// The rest of a timestamp after its first 16 bytes (seconds, fraction, offset), added to
/// `minute`, the instant [`minute_start`] read from those 16 bytes.
#[inline]
fn parse_tail(b: &[u8], minute: i64) -> Option<i64> {
    // The shape of almost every event timestamp, `:ss.sssZ` (24 bytes in all), read at fixed
    // places; it gives what the general code below gives for it (a leap second `:60` and
    // everything else go on below).
    if let Some(&[b':', s1, s2, b'.', f1, f2, f3, b'Z']) =
        b.get(16..).and_then(|t| t.first_chunk::<8>())
    {
        let d = [s1, s2, f1, f2, f3].map(|c| c.wrapping_sub(b'0'));
        if b.len() == 24 && d.iter().all(|&x| x < 10) && d[0] * 10 + d[1] < 60 {
            let second = i64::from(d[0] * 10 + d[1]);
            let frac = i64::from(d[2]) * 100 + i64::from(d[3]) * 10 + i64::from(d[4]);
            return in_range(minute + second * MS_PER_SECOND + frac);
        }
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

    in_range(minute + in_minute - offset_minutes * MS_PER_MINUTE)
}

/// [`parse_iso8601`] with a memory of the last timestamp's first 16 bytes (`YYYY-MM-DDThh:mm`):
/// the events of a batch mostly fall in the same minute, so their date and time of day need
/// not be read, range-checked and converted again. For every input, in every order,
/// [`Iso8601Parser::parse`] returns exactly what [`parse_iso8601`] returns: the remembered
/// prefix was read by the same [`minute_start`], and the rest goes through the same
/// [`parse_tail`].
#[derive(Debug, Clone, Default)]
pub struct Iso8601Parser {
    /// The last prefix read and the instant it stands for; `None` before the first.
    last: Option<(u128, i64)>,
}

impl Iso8601Parser {
    /// A parser that remembers nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Exactly `parse_iso8601(s)`.
    #[inline]
    pub fn parse(&mut self, s: &str) -> Option<i64> {
        let b = s.as_bytes();
        let Some(prefix) = b.first_chunk::<16>() else {
            return parse_iso8601(s);
        };
        // One 128-bit comparison, not a `memcmp` call.
        let prefix = u128::from_le_bytes(*prefix);
        let minute = match self.last {
            Some((seen, minute)) if seen == prefix => minute,
            _ => {
                let minute = minute_start(b)?;
                self.last = Some((prefix, minute));
                minute
            }
        };
        parse_tail(b, minute)
    }
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
pub(super) fn in_range(t: i64) -> Option<i64> {
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
pub(super) fn push_digits(out: &mut String, v: u32, width: u32) {
    for k in (0..width).rev() {
        let digit = v / 10u32.pow(k) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}
