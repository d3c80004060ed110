//! Intervals and buckets: interval units, validated intervals, bucket starts and rollups.

// The time modules are one concept split by concern: each sees the others' items through
// the parent, as when they were one file.
#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) const MAX_FIXED_MILLIS: i64 = 36_525 * MS_PER_DAY;
/// The shortest interval: 30 seconds.
pub(super) const MIN_FIXED_MILLIS: i64 = 30 * MS_PER_SECOND;

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
pub(super) fn floor_to(t: i64, l: i64) -> i64 {
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
