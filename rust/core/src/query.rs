//! Metrics API queries (spec 7.2–7.4) over a filter's state.
//!
//! Guarantees:
//! - The window is half-open over base-bucket starts: `startTime <= start < endTime` (decision 3);
//!   a rollup then groups the selected base buckets into epoch-truncated coarser buckets.
//! - Collapsing a grouping (`$__agg`, `returnGroupingValues: false`) and rolling up merge cells
//!   exactly as one cell that saw all their events would (COUNT/SUM add, MIN/MAX combine, AVG from
//!   sum and count, sketches merge).
//! - Work is proportional to the filter's rows plus its distinct grouping tuples; grouping-value
//!   filters are decided once per tuple, not once per row.
//! - Unknown request fields are ignored; an invalid field raises `Error::Query` naming it.

use hashbrown::HashMap;
use serde_json::{Map, Value as Json};

use crate::config::{Calc, FilterDef};
use crate::error::{Error, Result};
use crate::sketch::{DistinctMerger, QuantileMerger};
use crate::state::{AggColumns, FilterState, GroupTable};
use crate::time::{parse_iso8601, Interval, IntervalUnit, MS_PER_DAY};

/// The grouping value that means "aggregate across this grouping".
pub const AGGREGATE_ALL: &str = "$__agg";
/// Grafana's value for a variable's "All" option: keep every value.
pub const ALL_VALUES: &str = "$__all";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitType {
    Top,
    Bottom,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupingFilter {
    pub grouping: String,
    pub values: Option<Vec<String>>,
    pub collapse: bool,
}

/// A validated Metrics API request.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub filter_id: String,
    pub aggregation_id: i64,
    pub calculation: Calc,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub percentile: Option<f64>,
    pub grouping_filters: Vec<GroupingFilter>,
    pub limit: Option<usize>,
    pub limit_type: LimitType,
    pub exclude_empty_groupings: bool,
    pub include_incomplete_intervals: bool,
    pub rollup: Option<Interval>,
    pub query_id: Option<String>,
    pub grouping_name: Option<String>,
}

fn qerr(field: &str, reason: impl Into<String>) -> Error {
    Error::Query {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn opt_bool(o: &Map<String, Json>, key: &str, default: bool) -> Result<bool> {
    match o.get(key) {
        None | Some(Json::Null) => Ok(default),
        Some(Json::Bool(b)) => Ok(*b),
        Some(_) => Err(qerr(key, "must be true or false")),
    }
}

fn opt_time(o: &Map<String, Json>, key: &str) -> Result<Option<i64>> {
    match o.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.is_empty() => Ok(None),
        Some(Json::String(s)) => parse_iso8601(s)
            .map(Some)
            .ok_or_else(|| qerr(key, format!("{s:?} is not an RFC 3339 timestamp"))),
        Some(_) => Err(qerr(key, "must be an RFC 3339 timestamp string")),
    }
}

fn int_of(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn string_list(v: &Json, field: &str) -> Result<Vec<String>> {
    match v {
        Json::Array(a) => a
            .iter()
            .map(|x| match x {
                Json::String(s) => Ok(s.clone()),
                // Numbers are matched in their grouping form (decision 9): 1.0 is "1".
                Json::Number(n) => {
                    let mut text = String::new();
                    crate::value::write_number_string(&n.to_string(), &mut text);
                    Ok(text)
                }
                Json::Bool(b) => Ok(b.to_string()),
                Json::Null => Ok(String::new()),
                _ => Err(qerr(field, "values must be strings")),
            })
            .collect(),
        Json::String(s) => Ok(vec![s.clone()]),
        Json::Null => Ok(Vec::new()),
        _ => Err(qerr(field, "must be a list of values")),
    }
}

impl Query {
    /// Parses and validates a request against the filter definitions it names.
    pub fn from_json(v: &Json, lookup: &dyn Fn(&str) -> Option<FilterDef>) -> Result<Query> {
        Self::parse(v, lookup, true)
    }

    /// Parses a `/metrics/groupings` request: the Grafana plugin's variable editor sends no
    /// usable aggregation (`aggregationId: 0`, `calculation: ""`), and none is needed to list
    /// grouping values, so those fields are only used when they are valid.
    pub fn for_groupings(v: &Json, lookup: &dyn Fn(&str) -> Option<FilterDef>) -> Result<Query> {
        Self::parse(v, lookup, false)
    }

    fn parse(v: &Json, lookup: &dyn Fn(&str) -> Option<FilterDef>, strict: bool) -> Result<Query> {
        let o = v
            .as_object()
            .ok_or_else(|| qerr("query", "must be a JSON object"))?;
        let filter_id = match o.get("filterId") {
            Some(Json::String(s)) if !s.is_empty() => s.clone(),
            Some(Json::Number(n)) => n.to_string(),
            None | Some(Json::Null) => return Err(qerr("filterId", "is required")),
            Some(_) => return Err(qerr("filterId", "must be a string")),
        };
        let def = lookup(&filter_id).ok_or_else(|| Error::NotFound {
            kind: "filter",
            id: filter_id.clone(),
        })?;
        if !strict {
            let agg = o
                .get("aggregationId")
                .and_then(int_of)
                .and_then(|id| def.aggregation(id))
                .or_else(|| def.aggregations.first().map(|a| (0, a)));
            let (aggregation_id, calculation) = match agg {
                Some((_, a)) => {
                    let calc = o
                        .get("calculation")
                        .and_then(Json::as_str)
                        .and_then(Calc::from_name)
                        .filter(|c| a.calcs.contains(*c))
                        .unwrap_or(a.calc_list[0]);
                    (a.id, calc)
                }
                None => (0, Calc::Count),
            };
            let mut lenient = o.clone();
            lenient.insert("aggregationId".into(), Json::from(aggregation_id));
            lenient.insert("calculation".into(), Json::from(calculation.name()));
            if calculation == Calc::Percentiles {
                lenient.insert("percentile".into(), Json::from(0.5));
            }
            return Self::parse(&Json::Object(lenient), lookup, true);
        }
        let aggregation_id = match o.get("aggregationId") {
            None | Some(Json::Null) => return Err(qerr("aggregationId", "is required")),
            Some(v) => int_of(v).ok_or_else(|| qerr("aggregationId", "must be an integer"))?,
        };
        let (_, agg) = def
            .aggregation(aggregation_id)
            .ok_or_else(|| Error::NotFound {
                kind: "aggregation",
                id: format!("{filter_id}/{aggregation_id}"),
            })?;
        let calc_name = match o.get("calculation") {
            Some(Json::String(s)) => s.as_str(),
            None | Some(Json::Null) => return Err(qerr("calculation", "is required")),
            Some(_) => return Err(qerr("calculation", "must be a string")),
        };
        let calculation = Calc::from_name(calc_name)
            .ok_or_else(|| qerr("calculation", format!("unknown calculation {calc_name:?}")))?;
        if !agg.calcs.contains(calculation) {
            return Err(qerr(
                "calculation",
                format!(
                    "{calc_name} is not a calculation of aggregation {aggregation_id} (it has {})",
                    agg.calc_list
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let start_ms = opt_time(o, "startTime")?;
        let end_ms = opt_time(o, "endTime")?;
        if let (Some(s), Some(e)) = (start_ms, end_ms) {
            if e < s {
                return Err(qerr("endTime", "must not be before startTime"));
            }
        }
        let percentile = match o.get("percentile") {
            None | Some(Json::Null) => None,
            Some(Json::Number(n)) => n.as_f64(),
            Some(Json::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => return Err(qerr("percentile", "must be a number")),
        };
        if calculation == Calc::Percentiles {
            match percentile {
                Some(p) if p > 0.0 && p <= 1.0 => {}
                Some(_) => return Err(qerr("percentile", "must satisfy 0 < p <= 1")),
                None => return Err(qerr("percentile", "is required for PERCENTILES")),
            }
        }
        let mut grouping_filters = Vec::new();
        match o.get("groupingFilters") {
            None | Some(Json::Null) => {}
            Some(Json::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("groupingFilters[{i}]");
                    let io = item
                        .as_object()
                        .ok_or_else(|| qerr(&field, "must be an object"))?;
                    let grouping = match io.get("grouping") {
                        Some(Json::String(s)) => s.clone(),
                        _ => return Err(qerr(&format!("{field}.grouping"), "is required")),
                    };
                    let values = match io.get("filters") {
                        None | Some(Json::Null) => Vec::new(),
                        Some(v) => string_list(v, &format!("{field}.filters"))?,
                    };
                    let ret = opt_bool(io, "returnGroupingValues", true).map_err(|_| {
                        qerr(
                            &format!("{field}.returnGroupingValues"),
                            "must be true or false",
                        )
                    })?;
                    grouping_filters
                        .push(build_grouping_filter(&def, &field, grouping, values, ret)?);
                }
            }
            // The v1.0 plugin sent {"<grouping>": ["v1", "v2"]}.
            Some(Json::Object(map)) => {
                for (g, v) in map {
                    let field = format!("groupingFilters.{g}");
                    let values = string_list(v, &field)?;
                    grouping_filters.push(build_grouping_filter(
                        &def,
                        &field,
                        g.clone(),
                        values,
                        true,
                    )?);
                }
            }
            Some(_) => return Err(qerr("groupingFilters", "must be a list or an object")),
        }
        let limit = match o.get("limit") {
            None | Some(Json::Null) => None,
            Some(v) => match int_of(v) {
                Some(n) if n >= 1 => Some(n as usize),
                Some(0) => None,
                _ => return Err(qerr("limit", "must be a positive integer")),
            },
        };
        let limit_type = match o.get("limitType") {
            None | Some(Json::Null) => LimitType::Top,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("top") => LimitType::Top,
            Some(Json::String(s)) if s.eq_ignore_ascii_case("bottom") => LimitType::Bottom,
            Some(_) => return Err(qerr("limitType", "must be \"Top\" or \"Bottom\"")),
        };
        let rollup = match o.get("recalculatedInterval") {
            None | Some(Json::Null) => None,
            Some(Json::Object(r)) => {
                // Decision 12 (docs/decisions.md): frequency 0 or null means no rollup, whatever
                // the type says. The Grafana plugin sends `int64(seconds)` of the panel
                // interval, 0 below a second. An absent frequency stays an error: that is a
                // typo rather than a client's way of saying "no rollup".
                let freq = match r.get("frequency") {
                    None => None,
                    Some(Json::Null) => Some(0),
                    Some(v) => int_of(v).filter(|f| *f >= 0),
                }
                .ok_or_else(|| {
                    qerr(
                        "recalculatedInterval.frequency",
                        "must be a non-negative integer (0 or null: no rollup)",
                    )
                })?;
                if freq == 0 {
                    None
                } else {
                    let unit_name = r
                        .get("type")
                        .and_then(Json::as_str)
                        .ok_or_else(|| qerr("recalculatedInterval.type", "is required"))?;
                    let unit = IntervalUnit::from_name(unit_name).ok_or_else(|| {
                        qerr(
                            "recalculatedInterval.type",
                            format!("unknown interval {unit_name:?}"),
                        )
                    })?;
                    match rollup_interval(def.interval, unit, freq) {
                        Err(reason) => return Err(qerr("recalculatedInterval.frequency", reason)),
                        Ok(r) => r,
                    }
                }
            }
            Some(_) => return Err(qerr("recalculatedInterval", "must be an object")),
        };
        let query_id = match o.get("queryId") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let grouping_name = match o.get("groupingName") {
            Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok(Query {
            filter_id,
            aggregation_id,
            calculation,
            start_ms,
            end_ms,
            percentile,
            grouping_filters,
            limit,
            limit_type,
            exclude_empty_groupings: opt_bool(o, "excludeEmptyGroupings", false)?,
            include_incomplete_intervals: opt_bool(o, "includeIncompleteIntervals", true)?,
            rollup,
            query_id,
            grouping_name,
        })
    }
}

fn grouping_index(def: &FilterDef, name: &str) -> Option<usize> {
    def.groupings
        .iter()
        .position(|g| g.source == name)
        .or_else(|| def.groupings.iter().position(|g| g.key() == name))
}

fn build_grouping_filter(
    def: &FilterDef,
    field: &str,
    grouping: String,
    values: Vec<String>,
    return_values: bool,
) -> Result<GroupingFilter> {
    if grouping_index(def, &grouping).is_none() {
        return Err(qerr(
            &format!("{field}.grouping"),
            format!("{grouping:?} is not a grouping of filter {:?}", def.id),
        ));
    }
    let collapse_all = values.iter().any(|v| v == AGGREGATE_ALL);
    // Grafana's "All" option of a variable arrives as `$__all`: no value filter.
    let all_values = values.iter().any(|v| v == ALL_VALUES);
    let values: Vec<String> = values
        .into_iter()
        .filter(|v| v != AGGREGATE_ALL && !all_values)
        .collect();
    Ok(GroupingFilter {
        grouping,
        values: if values.is_empty() {
            None
        } else {
            Some(values)
        },
        collapse: collapse_all || !return_values,
    })
}

/// A rollup coarser than the base interval; `None` when it would not coarsen anything.
/// `Ok(None)` when the rollup would not coarsen anything; `Err` when it is coarser but outside
/// the supported range (up to 100 years).
fn rollup_interval(
    base: Interval,
    unit: IntervalUnit,
    freq: i64,
) -> std::result::Result<Option<Interval>, String> {
    let rollup = rollup_candidate(base, unit, freq);
    if rollup.is_none() && coarser_than_range(base, unit, freq) {
        return Err(format!(
            "a rollup of {freq} {} is longer than the supported 100 years",
            unit.name()
        ));
    }
    Ok(rollup)
}

/// True when `freq` units is longer than 100 years (and so longer than any base).
fn coarser_than_range(_base: Interval, unit: IntervalUnit, freq: i64) -> bool {
    let days = match unit.millis() {
        Some(ms) => freq.saturating_mul(ms) / MS_PER_DAY,
        None if unit == IntervalUnit::Month => freq.saturating_mul(28),
        None => freq.saturating_mul(365),
    };
    days > 36_525
}

fn rollup_candidate(base: Interval, unit: IntervalUnit, freq: i64) -> Option<Interval> {
    let Some(unit_ms) = unit.millis() else {
        let months = |i: &Interval| match i.unit {
            IntervalUnit::Month => Some(i64::from(i.count)),
            IntervalUnit::Year => Some(12 * i64::from(i.count)),
            _ => None,
        };
        return Interval::new(unit, freq).ok().filter(|r| {
            let rollup_months = months(r).expect("calendar rollup");
            match (months(&base), base.fixed_millis()) {
                (Some(base_months), _) => rollup_months > base_months,
                // A calendar rollup coarsens a fixed base when even its shortest bucket
                // (28 days a month) is longer.
                (None, Some(len)) => rollup_months * 28 * MS_PER_DAY > len,
                (None, None) => false,
            }
        });
    };
    let len = unit_ms.saturating_mul(freq);
    // Calendar bases vary in length; a fixed rollup coarsens them when it exceeds their longest.
    let base_max = base.fixed_millis().unwrap_or_else(|| {
        let days = match base.unit {
            IntervalUnit::Month => 31 * i64::from(base.count),
            _ => 366 * i64::from(base.count),
        };
        days * MS_PER_DAY
    });
    if len > base_max {
        Interval::new(IntervalUnit::Second, len / 1000)
            .ok()
            .filter(|_| len % 1000 == 0)
    } else {
        None
    }
}

/// Query output: rows plus the grouping tuples they refer to.
///
/// Tuples are stored as codes into small per-key value tables, and tuple ids are in ascending
/// lexicographic order of their values, so ordering rows by tuple is ordering by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultSet {
    /// Keys of the returned groupings (alias or `JPath`), in filter order.
    pub keys: Vec<String>,
    /// Per key, its distinct values in ascending order.
    pub values: Vec<Vec<String>>,
    /// `keys.len()` codes per tuple (tuple `g` is `tuple_codes[g * keys.len()..]`).
    pub tuple_codes: Vec<u32>,
    /// Number of distinct output tuples.
    pub tuples: usize,
    pub dt: Vec<i64>,
    pub group: Vec<u32>,
    pub value: Vec<f64>,
    /// False when the filter has no groupings at all (rows carry `groupings: null`).
    pub grouped: bool,
}

impl ResultSet {
    /// The values of tuple `g`, one per key.
    pub fn tuple(&self, g: u32) -> impl Iterator<Item = &str> + '_ {
        let n = self.keys.len();
        let codes = &self.tuple_codes[g as usize * n..(g as usize + 1) * n];
        codes
            .iter()
            .zip(&self.values)
            .map(|(&c, vals)| vals[c as usize].as_str())
    }

    /// True when the one returned key's codes equal the tuple ids (always so with one key:
    /// tuples are its distinct values in order), so per-row codes are `group` itself.
    #[must_use]
    pub fn codes_are_tuple_ids(&self) -> bool {
        self.keys.len() == 1
            && self
                .tuple_codes
                .iter()
                .enumerate()
                .all(|(i, &c)| c as usize == i)
    }

    /// Per-row codes of key `k` (indexes into `values[k]`).
    #[must_use]
    pub fn row_codes(&self, k: usize) -> Vec<u32> {
        let n = self.keys.len();
        self.group
            .iter()
            .map(|&g| self.tuple_codes[g as usize * n + k])
            .collect()
    }
}

enum Acc {
    Count(u64),
    Sum(f64, u64),
    Min(f64, u64),
    Max(f64, u64),
    Distinct(DistinctMerger, u64),
    Quantile(QuantileMerger),
}

impl Acc {
    fn new(calc: Calc) -> Acc {
        match calc {
            Calc::Count => Acc::Count(0),
            Calc::Sum | Calc::Avg => Acc::Sum(0.0, 0),
            Calc::Min => Acc::Min(f64::INFINITY, 0),
            Calc::Max => Acc::Max(f64::NEG_INFINITY, 0),
            Calc::ApproxCountDistinct => Acc::Distinct(DistinctMerger::new(), 0),
            Calc::Percentiles => Acc::Quantile(QuantileMerger::new()),
        }
    }

    /// Back to the empty state, keeping any buffers for the next cell.
    fn reset(&mut self) {
        match self {
            Acc::Count(n) => *n = 0,
            Acc::Sum(s, n) => (*s, *n) = (0.0, 0),
            Acc::Min(m, n) => (*m, *n) = (f64::INFINITY, 0),
            Acc::Max(m, n) => (*m, *n) = (f64::NEG_INFINITY, 0),
            Acc::Distinct(d, n) => {
                d.clear();
                *n = 0;
            }
            Acc::Quantile(q) => q.clear(),
        }
    }

    // Saturating: every cell's counter fits in u64 (merges are checked), but the sum over a
    // window of cells merged in process need not.
    #[inline]
    fn add(&mut self, c: &AggColumns, row: usize) {
        match self {
            Acc::Count(n) => *n = n.saturating_add(c.matched[row]),
            Acc::Sum(s, n) => {
                *s += c.sum[row];
                *n = n.saturating_add(c.numeric[row]);
            }
            Acc::Min(m, n) => {
                *m = m.min(c.min[row]);
                *n = n.saturating_add(c.numeric[row]);
            }
            Acc::Max(m, n) => {
                *m = m.max(c.max[row]);
                *n = n.saturating_add(c.numeric[row]);
            }
            Acc::Distinct(d, n) => {
                c.distinct.merge_into(row, d);
                *n = n.saturating_add(c.matched[row]);
            }
            Acc::Quantile(q) => c.quantile.merge_into(row, q),
        }
    }

    fn value(&mut self, calc: Calc, p: f64) -> Option<f64> {
        match self {
            Acc::Count(n) => (*n > 0).then_some(*n as f64),
            Acc::Sum(s, n) if calc == Calc::Avg => (*n > 0).then(|| saturate(*s / *n as f64)),
            Acc::Sum(s, n) => (*n > 0).then(|| saturate(*s)),
            Acc::Min(m, n) | Acc::Max(m, n) => (*n > 0).then_some(*m),
            Acc::Distinct(d, n) => (*n > 0).then(|| round_estimate(d.estimate())),
            Acc::Quantile(q) => q.quantile(p),
        }
    }
}

/// `estimate.round()`, inline for the exact counts most cells have (for the baseline x86-64
/// target `f64::round` is a call into libm); estimates are never negative.
// An integral value is its own rounding, so bit-equality is the intended test.
#[allow(clippy::float_cmp)]
#[inline]
fn round_estimate(estimate: f64) -> f64 {
    if estimate < 4_503_599_627_370_496.0 && (estimate as i64) as f64 == estimate {
        estimate
    } else {
        estimate.round()
    }
}

/// A sum that overflowed `f64` is reported as the largest finite value of its sign: JSON (and
/// the Grafana plugin) cannot carry infinities, and every output form must agree.
fn saturate(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(f64::MIN, f64::MAX)
    }
}

/// Value of one stored row, without merging (the fast path: no rollup, no collapse).
fn row_value(c: &AggColumns, row: usize, calc: Calc, p: f64) -> Option<f64> {
    match calc {
        Calc::Count => (c.matched[row] > 0).then_some(c.matched[row] as f64),
        Calc::Sum => (c.numeric[row] > 0).then(|| saturate(c.sum[row])),
        Calc::Avg => (c.numeric[row] > 0).then(|| saturate(c.sum[row] / c.numeric[row] as f64)),
        Calc::Min => (c.numeric[row] > 0).then_some(c.min[row]),
        Calc::Max => (c.numeric[row] > 0).then_some(c.max[row]),
        Calc::ApproxCountDistinct => {
            (c.matched[row] > 0).then(|| round_estimate(c.distinct.estimate(row)))
        }
        Calc::Percentiles => c.quantile.quantile(row, p),
    }
}

struct GroupMapping {
    /// Per stored tuple: the output tuple index, or None when filtered out.
    map: Vec<Option<u32>>,
    keys: Vec<String>,
    values: Vec<Vec<String>>,
    tuple_codes: Vec<u32>,
    tuples: usize,
    /// True when two stored tuples can land in one output tuple.
    collapsing: bool,
}

/// Decides, once per stored grouping tuple, whether it passes the value filters and which output
/// tuple it lands in; output tuples get ids in ascending order of their values.
fn map_groups(
    def: &FilterDef,
    state: &FilterState,
    q: &Query,
    only: Option<usize>,
) -> GroupMapping {
    let n = def.groupings.len();
    let mut allowed: Vec<Option<hashbrown::HashSet<&str>>> = vec![None; n];
    let mut split = vec![true; n];
    for gf in &q.grouping_filters {
        let i = grouping_index(def, &gf.grouping).expect("validated grouping");
        if let Some(v) = &gf.values {
            allowed[i] = Some(v.iter().map(String::as_str).collect());
        }
        if gf.collapse {
            split[i] = false;
        }
    }
    if let Some(i) = only {
        split = vec![false; n];
        split[i] = true;
    }
    let split_keys: Vec<usize> = (0..n).filter(|&i| split[i]).collect();
    let nk = split_keys.len();
    let keys = split_keys
        .iter()
        .map(|&i| def.groupings[i].key().to_owned())
        .collect();
    let collapsing = nk < n;

    // Intern each returned key's values, then build one code tuple per output tuple.
    let mut interners: Vec<HashMap<&str, u32>> = vec![HashMap::new(); nk];
    let mut key_values: Vec<Vec<&str>> = vec![Vec::new(); nk];
    let mut out_index: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut codes: Vec<u32> = Vec::new();
    let mut tuples = 0u32;
    let mut map = Vec::with_capacity(state.groups.len());
    let mut tuple: Vec<u32> = Vec::with_capacity(nk);
    for g in 0..state.groups.len() {
        let vals = GroupTable::decode(state.groups.key(g as u32));
        let keep = vals.len() == n
            && vals.iter().enumerate().all(|(i, v)| {
                allowed[i].as_ref().is_none_or(|set| set.contains(v))
                    && !(q.exclude_empty_groupings && split[i] && v.is_empty())
            });
        if !keep {
            map.push(None);
            continue;
        }
        tuple.clear();
        for (k, &i) in split_keys.iter().enumerate() {
            let v = vals[i];
            let next = key_values[k].len() as u32;
            let code = *interners[k].entry(v).or_insert_with(|| {
                key_values[k].push(v);
                next
            });
            tuple.push(code);
        }
        let id = if collapsing {
            *out_index.entry(tuple.clone()).or_insert_with(|| {
                codes.extend_from_slice(&tuple);
                tuples += 1;
                tuples - 1
            })
        } else {
            codes.extend_from_slice(&tuple);
            tuples += 1;
            tuples - 1
        };
        map.push(Some(id));
    }

    // Rank every key's values, then renumber tuples in lexicographic order of those ranks.
    let mut values: Vec<Vec<String>> = Vec::with_capacity(nk);
    for (k, vals) in key_values.iter().enumerate() {
        let mut order: Vec<u32> = (0..vals.len() as u32).collect();
        order.sort_unstable_by(|a, b| vals[*a as usize].cmp(vals[*b as usize]));
        let mut rank = vec![0u32; vals.len()];
        for (r, &c) in order.iter().enumerate() {
            rank[c as usize] = r as u32;
        }
        for t in 0..tuples as usize {
            let c = &mut codes[t * nk + k];
            *c = rank[*c as usize];
        }
        values.push(order.iter().map(|&c| vals[c as usize].to_owned()).collect());
    }
    let mut order: Vec<u32> = (0..tuples).collect();
    if nk > 0 {
        order.sort_unstable_by(|a, b| {
            codes[*a as usize * nk..(*a as usize + 1) * nk]
                .cmp(&codes[*b as usize * nk..(*b as usize + 1) * nk])
        });
    }
    let mut new_id = vec![0u32; tuples as usize];
    let mut tuple_codes = Vec::with_capacity(codes.len());
    for (new, &old) in order.iter().enumerate() {
        new_id[old as usize] = new as u32;
        tuple_codes.extend_from_slice(&codes[old as usize * nk..(old as usize + 1) * nk]);
    }
    for m in map.iter_mut().flatten() {
        *m = new_id[*m as usize];
    }
    GroupMapping {
        map,
        keys,
        values,
        tuple_codes,
        tuples: tuples as usize,
        collapsing,
    }
}

/// Merges sketch cells into output cells: numbers the output cells, then visits each cell's rows
/// together (a counting sort by cell), so one accumulator, with its buffers, serves every cell
/// in turn instead of one growing buffer per cell.
#[allow(clippy::too_many_arguments)]
fn merge_sketch_cells(
    state: &FilterState,
    gp: &GroupMapping,
    cols: &AggColumns,
    q: &Query,
    p: f64,
    (start, end): (i64, i64),
    out_bucket: &dyn Fn(i64) -> i64,
    cells: &mut Vec<(i64, u32, f64)>,
) {
    let mut cell_index: HashMap<(i64, u32), u32> = HashMap::new();
    let mut keys: Vec<(i64, u32)> = Vec::new();
    let mut row_cell: Vec<(u32, u32)> = Vec::new();
    for (row, b, g) in selected_rows(state, gp, start, end) {
        let key = (out_bucket(b), g);
        let next = keys.len() as u32;
        let cell = *cell_index.entry(key).or_insert_with(|| {
            keys.push(key);
            next
        });
        row_cell.push((row as u32, cell));
    }
    let mut first = vec![0u32; keys.len() + 1];
    for &(_, c) in &row_cell {
        first[c as usize + 1] += 1;
    }
    for i in 1..first.len() {
        first[i] += first[i - 1];
    }
    let mut order = vec![0u32; row_cell.len()];
    let mut fill = first.clone();
    for &(row, c) in &row_cell {
        order[fill[c as usize] as usize] = row;
        fill[c as usize] += 1;
    }
    let mut acc = Acc::new(q.calculation);
    for (c, &(b, g)) in keys.iter().enumerate() {
        acc.reset();
        for &row in &order[first[c] as usize..first[c + 1] as usize] {
            acc.add(cols, row as usize);
        }
        if let Some(v) = acc.value(q.calculation, p) {
            cells.push((b, g, v));
        }
    }
}

/// Keeps, per time slice of `cells` (sorted by time, then tuple), the `limit` cells with the
/// largest (Top) or smallest (Bottom) values, ties to the lower tuple, in tuple order. One pass:
/// each slice is partially selected in place (`select_nth_unstable_by`), never sorted whole,
/// and survivors are moved down over the dropped cells.
fn keep_top_n(cells: &mut Vec<(i64, u32, f64)>, limit: usize, limit_type: LimitType) {
    let mut write = 0;
    let mut i = 0;
    while i < cells.len() {
        let mut j = i + 1;
        while j < cells.len() && cells[j].0 == cells[i].0 {
            j += 1;
        }
        let kept = select_top_n(&mut cells[i..j], limit, limit_type);
        cells.copy_within(i..i + kept, write);
        write += kept;
        i = j;
    }
    cells.truncate(write);
}

/// Moves the `limit` cells of one time slice (in tuple order) with the largest (Top) or
/// smallest (Bottom) values, ties to the lower tuple, to its front in tuple order; returns how
/// many are kept. The order is total (ties broken by tuple), so the kept set is exactly what a
/// full sort and truncate would keep.
fn select_top_n(slice: &mut [(i64, u32, f64)], limit: usize, limit_type: LimitType) -> usize {
    if slice.len() <= limit {
        return slice.len();
    }
    let rank = |a: &(i64, u32, f64), b: &(i64, u32, f64)| {
        let ord = a.2.total_cmp(&b.2);
        let ord = if limit_type == LimitType::Top {
            ord.reverse()
        } else {
            ord
        };
        ord.then(a.1.cmp(&b.1))
    };
    if limit <= SMALL_LIMIT {
        // Dashboards ask for a few series: one pass keeping the best `limit` in rank order,
        // where most cells cost one comparison with the worst kept (no partitioning).
        let mut best: smallvec::SmallVec<[(i64, u32, f64); SMALL_LIMIT]> =
            smallvec::SmallVec::new();
        let top = limit_type == LimitType::Top;
        debug_assert!(
            slice.windows(2).all(|w| w[0].1 < w[1].1),
            "slice in tuple order"
        );
        // The worst kept value once `limit` cells are kept (NaN until then: compares false).
        let mut worst = f64::NAN;
        for c in slice.iter() {
            if best.len() == limit {
                // IEEE `<` implies `total_cmp` less (NaN and signed zeros fall through to the
                // full comparison), so this only skips cells the rank would skip.
                if (top && c.2 < worst) || (!top && c.2 > worst) {
                    continue;
                }
                // A cell with the worst kept value's bits ties it in `total_cmp` and comes later
                // in tuple order, so it ranks below it: many tied counts skip here.
                if c.2.to_bits() == worst.to_bits() {
                    continue;
                }
                if rank(c, &best[limit - 1]).is_ge() {
                    continue;
                }
                best.pop();
            }
            let at = best.partition_point(|b| rank(b, c).is_lt());
            best.insert(at, *c);
            if best.len() == limit {
                worst = best[limit - 1].2;
            }
        }
        best.sort_unstable_by_key(|c| c.1);
        slice[..limit].copy_from_slice(&best);
        return limit;
    }
    slice.select_nth_unstable_by(limit - 1, rank);
    slice[..limit].sort_unstable_by_key(|c| c.1);
    limit
}

/// Sketch rollups stream with per-tuple accumulators up to this many output tuples.
const STREAM_SKETCH_TUPLES: usize = 4096;

/// Limits up to this many are selected by a one-pass insertion, larger ones by partitioning.
const SMALL_LIMIT: usize = 32;

/// What the dense merges do with each output bucket's cells as soon as they are complete, so
/// a Top/Bottom-N query never holds more than one bucket's cells beyond those it keeps.
struct SliceRule<'a> {
    limit: Option<(usize, LimitType)>,
    /// `Some(keep)`: a bucket is kept only when `keep(bucket start)` (complete intervals).
    keep: Option<&'a dyn Fn(i64) -> bool>,
}

impl SliceRule<'_> {
    fn wants(&self, bucket: i64) -> bool {
        self.keep.is_none_or(|keep| keep(bucket))
    }

    /// Trims the slice `cells[from..]` (one bucket, tuple order) to its Top/Bottom-N.
    fn finish(&self, cells: &mut Vec<(i64, u32, f64)>, from: usize) {
        if let Some((limit, lt)) = self.limit {
            let kept = select_top_n(&mut cells[from..], limit, lt);
            cells.truncate(from + kept);
        }
    }
}

/// What a [`TupleSink`] accumulates, fixed per query so the per-row code of [`merge_streaming`]
/// is compiled once per kind (no dispatch on the calculation per row).
const SINK_COUNT: u8 = 0;
/// SUM and AVG (the same sums and counts; AVG divides when a cell is emitted).
const SINK_SUM: u8 = 1;
const SINK_MIN: u8 = 2;
const SINK_MAX: u8 = 3;
const SINK_QUANTILE: u8 = 4;
const SINK_DISTINCT: u8 = 5;

fn sink_kind(calc: Calc) -> u8 {
    match calc {
        Calc::Count => SINK_COUNT,
        Calc::Sum | Calc::Avg => SINK_SUM,
        Calc::Min => SINK_MIN,
        Calc::Max => SINK_MAX,
        Calc::Percentiles => SINK_QUANTILE,
        Calc::ApproxCountDistinct => SINK_DISTINCT,
    }
}

/// Per-tuple accumulators of the output bucket being filled, for [`merge_streaming`]; only the
/// tuples touched in that bucket are visited when it is emitted, and every buffer is reused.
/// Only the accumulators of the query's kind are allocated.
struct TupleSink {
    calc: Calc,
    val: Vec<f64>,
    cnt: Vec<u64>,
    quantile: Vec<QuantileMerger>,
    /// Distinct mergers and the events they saw (a cell with none has no value).
    distinct: Vec<(DistinctMerger, u64)>,
    seen: Vec<bool>,
    touched: Vec<u32>,
}

impl TupleSink {
    fn new(calc: Calc, tuples: usize) -> TupleSink {
        let init = match calc {
            Calc::Min => f64::INFINITY,
            Calc::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        let mut sink = TupleSink {
            calc,
            val: Vec::new(),
            cnt: Vec::new(),
            quantile: Vec::new(),
            distinct: Vec::new(),
            seen: vec![false; tuples],
            touched: Vec::new(),
        };
        match sink_kind(calc) {
            SINK_QUANTILE => sink.quantile = (0..tuples).map(|_| QuantileMerger::new()).collect(),
            SINK_DISTINCT => {
                sink.distinct = (0..tuples).map(|_| (DistinctMerger::new(), 0)).collect();
            }
            _ => (sink.val, sink.cnt) = (vec![init; tuples], vec![0; tuples]),
        }
        sink
    }

    /// Adds stored `row` into tuple `g` (the same arithmetic, in the same row order, as
    /// [`DenseCells::merge_scalars`] and [`DenseCells::merge_sketches`]). `KIND` is
    /// `sink_kind(self.calc)`.
    #[inline]
    fn add<const KIND: u8>(&mut self, c: &AggColumns, row: usize, g: u32) {
        let g = g as usize;
        if !self.seen[g] {
            self.seen[g] = true;
            self.touched.push(g as u32);
        }
        match KIND {
            SINK_QUANTILE => c.quantile.merge_into(row, &mut self.quantile[g]),
            SINK_DISTINCT => {
                let (d, n) = &mut self.distinct[g];
                c.distinct.merge_into(row, d);
                *n = n.saturating_add(c.matched[row]);
            }
            SINK_COUNT => self.cnt[g] += c.matched[row],
            SINK_SUM => {
                self.val[g] += c.sum[row];
                self.cnt[g] += c.numeric[row];
            }
            SINK_MIN => {
                self.val[g] = self.val[g].min(c.min[row]);
                self.cnt[g] += c.numeric[row];
            }
            _ => {
                self.val[g] = self.val[g].max(c.max[row]);
                self.cnt[g] += c.numeric[row];
            }
        }
    }

    /// Appends the cells of bucket `b` in tuple order, trimmed by `rule`, and empties the sink.
    fn emit(&mut self, b: i64, p: f64, rule: &SliceRule<'_>, cells: &mut Vec<(i64, u32, f64)>) {
        // Usually already ascending (rows of a bucket are stored in tuple order): one pass.
        self.touched.sort_unstable();
        let from = cells.len();
        let init = match self.calc {
            Calc::Min => f64::INFINITY,
            Calc::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        let kind = sink_kind(self.calc);
        for &g in &self.touched {
            let gi = g as usize;
            self.seen[gi] = false;
            // The values `Acc::value` gives for the same rows.
            let value = match kind {
                SINK_QUANTILE => {
                    let q = &mut self.quantile[gi];
                    let v = q.quantile(p);
                    q.clear();
                    v
                }
                SINK_DISTINCT => {
                    let (merger, events) = &mut self.distinct[gi];
                    let v = (*events > 0).then(|| round_estimate(merger.estimate()));
                    merger.clear();
                    *events = 0;
                    v
                }
                _ => {
                    let (v, n) = (self.val[gi], self.cnt[gi]);
                    self.val[gi] = init;
                    self.cnt[gi] = 0;
                    (n != 0).then(|| match self.calc {
                        Calc::Count => n as f64,
                        Calc::Avg => saturate(v / n as f64),
                        Calc::Sum => saturate(v),
                        _ => v,
                    })
                }
            };
            if let Some(v) = value {
                cells.push((b, g, v));
            }
        }
        self.touched.clear();
        rule.finish(cells, from);
    }
}

/// Rollup and collapse in one pass over the stored rows when they come in ascending order of
/// output bucket (rows are stored in arrival order, and data mostly arrives in time order):
/// per-tuple accumulators for the current output bucket only, so the working set is one
/// bucket's tuples, not the whole (bucket x tuple) grid, and nothing is numbered or sorted.
/// Returns false, with `cells` partly filled, at the first row of an earlier output bucket;
/// the caller then clears `cells` and takes the general path.
#[allow(clippy::too_many_arguments)]
fn merge_streaming(
    state: &FilterState,
    gp: &GroupMapping,
    c: &AggColumns,
    (calc, p): (Calc, f64),
    window: (i64, i64),
    out_bucket: &dyn Fn(i64) -> i64,
    rule: &SliceRule<'_>,
    cells: &mut Vec<(i64, u32, f64)>,
) -> bool {
    let sink = TupleSink::new(calc, gp.tuples.max(1));
    let args = (state, gp, c, p, window, out_bucket, rule);
    match sink_kind(calc) {
        SINK_COUNT => stream_rows::<SINK_COUNT>(args, sink, cells),
        SINK_SUM => stream_rows::<SINK_SUM>(args, sink, cells),
        SINK_MIN => stream_rows::<SINK_MIN>(args, sink, cells),
        SINK_MAX => stream_rows::<SINK_MAX>(args, sink, cells),
        SINK_QUANTILE => stream_rows::<SINK_QUANTILE>(args, sink, cells),
        _ => stream_rows::<SINK_DISTINCT>(args, sink, cells),
    }
}

/// The inputs of [`stream_rows`]: the state, its group plan and aggregation columns, the
/// percentile, the window, the output bucket of a stored bucket, and the slice rule.
type StreamArgs<'a> = (
    &'a FilterState,
    &'a GroupMapping,
    &'a AggColumns,
    f64,
    (i64, i64),
    &'a dyn Fn(i64) -> i64,
    &'a SliceRule<'a>,
);

/// The loop of [`merge_streaming`], for sinks of kind `KIND`.
fn stream_rows<const KIND: u8>(
    (state, gp, c, p, (start, end), out_bucket, rule): StreamArgs<'_>,
    mut sink: TupleSink,
    cells: &mut Vec<(i64, u32, f64)>,
) -> bool {
    let mut current: Option<i64> = None;
    // (stored bucket, whether its output bucket is wanted), decided once per run of rows.
    let mut run: Option<(i64, bool)> = None;
    for (row, b, g) in selected_rows(state, gp, start, end) {
        let wanted = match run {
            Some((rb, w)) if rb == b => w,
            _ => {
                let ob = out_bucket(b);
                match current {
                    Some(cur) if ob < cur => return false,
                    Some(cur) if ob == cur => {}
                    Some(cur) => {
                        sink.emit(cur, p, rule, cells);
                        current = Some(ob);
                    }
                    None => current = Some(ob),
                }
                let w = rule.wants(ob);
                run = Some((b, w));
                w
            }
        };
        if wanted {
            sink.add::<KIND>(c, row, g);
        }
    }
    if let Some(cur) = current {
        sink.emit(cur, p, rule, cells);
    }
    true
}

/// Output cells of a rollup or collapse numbered densely: cell = (rank of its output bucket) x
/// tuples + tuple, so numbering is an array index and ascending ids are (time, tuple) order.
/// Only built when that grid is not much larger than the selected rows.
struct DenseCells {
    /// Output bucket start per bucket rank (ascending).
    buckets: Vec<i64>,
    tuples: usize,
    /// (row, cell) per selected row, in storage order.
    row_cell: Vec<(u32, u32)>,
}

impl DenseCells {
    fn build(
        state: &FilterState,
        gp: &GroupMapping,
        (start, end): (i64, i64),
        out_bucket: &dyn Fn(i64) -> i64,
    ) -> Option<DenseCells> {
        // Output bucket of each stored bucket, looked up once per run of equal buckets (rows
        // are stored in arrival order, so runs are long).
        let mut bucket_index: HashMap<i64, u32> = HashMap::new();
        let mut out: Vec<i64> = Vec::new();
        let mut last: Option<(i64, u32)> = None;
        let tuples = gp.tuples.max(1) as u64;
        // (row, first-seen bucket index x tuples + tuple), renumbered by bucket rank below.
        let mut row_cell: Vec<(u32, u32)> = Vec::new();
        for (row, b, g) in selected_rows(state, gp, start, end) {
            let idx = match last {
                Some((lb, li)) if lb == b => li,
                _ => {
                    let ob = out_bucket(b);
                    let next = out.len() as u32;
                    let li = *bucket_index.entry(ob).or_insert_with(|| {
                        out.push(ob);
                        next
                    });
                    last = Some((b, li));
                    li
                }
            };
            let cell = u64::from(idx) * tuples + u64::from(g);
            row_cell.push((row as u32, u32::try_from(cell).ok()?));
        }
        let grid = (out.len() as u64).checked_mul(tuples)?;
        if grid > 2 * row_cell.len() as u64 + (1 << 16) || grid >= u64::from(u32::MAX) {
            return None;
        }
        let tuples = tuples as usize;
        let mut order: Vec<u32> = (0..out.len() as u32).collect();
        order.sort_unstable_by_key(|&i| out[i as usize]);
        let mut rank = vec![0u32; out.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        let identity = rank.iter().enumerate().all(|(i, &r)| i as u32 == r);
        if !identity {
            for (_, cell) in &mut row_cell {
                let (idx, g) = (*cell as usize / tuples, *cell as usize % tuples);
                *cell = rank[idx] * tuples as u32 + g as u32;
            }
        }
        let buckets = order.iter().map(|&i| out[i as usize]).collect();
        Some(DenseCells {
            buckets,
            tuples,
            row_cell,
        })
    }

    fn cells(&self) -> usize {
        self.buckets.len() * self.tuples
    }

    /// COUNT, SUM, AVG, MIN, MAX: two flat arrays over the grid, rows in storage order.
    fn merge_scalars(
        &self,
        c: &AggColumns,
        calc: Calc,
        rule: &SliceRule<'_>,
        cells: &mut Vec<(i64, u32, f64)>,
    ) {
        let init = match calc {
            Calc::Min => f64::INFINITY,
            Calc::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        let mut val = vec![init; self.cells()];
        let mut cnt = vec![0u64; self.cells()];
        for &(row, cell) in &self.row_cell {
            let (row, cell) = (row as usize, cell as usize);
            match calc {
                Calc::Count => cnt[cell] += c.matched[row],
                Calc::Sum | Calc::Avg => {
                    val[cell] += c.sum[row];
                    cnt[cell] += c.numeric[row];
                }
                Calc::Min => {
                    val[cell] = val[cell].min(c.min[row]);
                    cnt[cell] += c.numeric[row];
                }
                Calc::Max => {
                    val[cell] = val[cell].max(c.max[row]);
                    cnt[cell] += c.numeric[row];
                }
                Calc::ApproxCountDistinct | Calc::Percentiles => unreachable!("scalar only"),
            }
        }
        for (r, &b) in self.buckets.iter().enumerate() {
            if !rule.wants(b) {
                continue;
            }
            let from = cells.len();
            let span = r * self.tuples..(r + 1) * self.tuples;
            for (g, (&v, &n)) in val[span.clone()].iter().zip(&cnt[span]).enumerate() {
                if n == 0 {
                    continue;
                }
                let value = match calc {
                    Calc::Count => n as f64,
                    Calc::Avg => saturate(v / n as f64),
                    Calc::Sum => saturate(v),
                    _ => v,
                };
                cells.push((b, g as u32, value));
            }
            rule.finish(cells, from);
        }
    }

    /// Sketches: rows grouped by cell with a counting sort, one reused accumulator per cell in
    /// turn (no buffer allocated per output cell).
    fn merge_sketches(
        &self,
        c: &AggColumns,
        (calc, p): (Calc, f64),
        rule: &SliceRule<'_>,
        cells: &mut Vec<(i64, u32, f64)>,
    ) {
        let mut first = vec![0u32; self.cells() + 1];
        for &(_, cell) in &self.row_cell {
            first[cell as usize + 1] += 1;
        }
        for i in 1..first.len() {
            first[i] += first[i - 1];
        }
        let mut fill = first.clone();
        let mut order = vec![0u32; self.row_cell.len()];
        for &(row, cell) in &self.row_cell {
            order[fill[cell as usize] as usize] = row;
            fill[cell as usize] += 1;
        }
        drop(fill);
        let mut acc = Acc::new(calc);
        for (r, &b) in self.buckets.iter().enumerate() {
            if !rule.wants(b) {
                continue;
            }
            let from = cells.len();
            for g in 0..self.tuples {
                let cell = r * self.tuples + g;
                let rows = &order[first[cell] as usize..first[cell + 1] as usize];
                if rows.is_empty() {
                    continue;
                }
                acc.reset();
                for &row in rows {
                    acc.add(c, row as usize);
                }
                if let Some(v) = acc.value(calc, p) {
                    cells.push((b, g as u32, v));
                }
            }
            rule.finish(cells, from);
        }
    }
}

/// The rows whose bucket starts in `[start, end)` and whose tuple passes the grouping filters, as
/// (row, bucket start, output tuple).
fn selected_rows<'s>(
    state: &'s FilterState,
    gp: &'s GroupMapping,
    start: i64,
    end: i64,
) -> impl Iterator<Item = (usize, i64, u32)> + 's {
    // Zipped columns: no bounds check per row (both have one entry per row).
    state
        .row_bucket
        .iter()
        .zip(&state.row_group)
        .enumerate()
        .filter_map(move |(row, (&b, &group))| {
            if b < start || b >= end {
                return None;
            }
            gp.map[group as usize].map(|g| (row, b, g))
        })
}

/// The rows of a plain answer (no rollup, no collapse) as the three output columns.
struct Columns {
    dt: Vec<i64>,
    group: Vec<u32>,
    value: Vec<f64>,
}

impl Columns {
    /// True when the rows are in (time, tuple) order, the order answers have.
    fn is_sorted(&self) -> bool {
        self.dt
            .windows(2)
            .zip(self.group.windows(2))
            .all(|(d, g)| d[0] < d[1] || (d[0] == d[1] && g[0] <= g[1]))
    }

    fn into_cells(self) -> Vec<(i64, u32, f64)> {
        self.dt
            .into_iter()
            .zip(self.group)
            .zip(self.value)
            .map(|((b, g), v)| (b, g, v))
            .collect()
    }

    fn into_result(self, gp: GroupMapping, grouped: bool) -> ResultSet {
        ResultSet {
            keys: gp.keys,
            values: gp.values,
            tuple_codes: gp.tuple_codes,
            tuples: gp.tuples,
            grouped,
            dt: self.dt,
            group: self.group,
            value: self.value,
        }
    }
}

/// One stored row per output row: the calculation is chosen once, outside the loop over rows,
/// and rows go straight into the output columns.
fn plain_columns(
    state: &FilterState,
    gp: &GroupMapping,
    c: &AggColumns,
    calc: Calc,
    p: f64,
    (start, end): (i64, i64),
) -> Columns {
    fn fill(
        state: &FilterState,
        gp: &GroupMapping,
        (start, end): (i64, i64),
        value: impl Fn(usize) -> Option<f64>,
    ) -> Columns {
        let n = state.rows();
        let mut out = Columns {
            dt: Vec::with_capacity(n),
            group: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
        };
        for (row, b, g) in selected_rows(state, gp, start, end) {
            if let Some(v) = value(row) {
                out.dt.push(b);
                out.group.push(g);
                out.value.push(v);
            }
        }
        // A narrow window over a long state leaves most of the capacity unused; large blocks
        // shrink in place (no copy), and the arrays live on in Python.
        if out.dt.len() < n / 2 {
            out.dt.shrink_to_fit();
            out.group.shrink_to_fit();
            out.value.shrink_to_fit();
        }
        out
    }
    let window = (start, end);
    match calc {
        Calc::Count => fill(state, gp, window, |r| {
            (c.matched[r] > 0).then_some(c.matched[r] as f64)
        }),
        Calc::Sum => fill(state, gp, window, |r| {
            (c.numeric[r] > 0).then(|| saturate(c.sum[r]))
        }),
        _ => fill(state, gp, window, |r| row_value(c, r, calc, p)),
    }
}

/// Answers a validated query. `now_ms` is the engine clock (for incomplete intervals).
#[must_use]
pub fn run(def: &FilterDef, state: &FilterState, q: &Query, now_ms: i64) -> ResultSet {
    let (agg_index, _) = def
        .aggregation(q.aggregation_id)
        .expect("validated aggregation");
    let cols = &state.aggs[agg_index];
    let gp = map_groups(def, state, q, None);
    let p = q.percentile.unwrap_or(0.5);
    let start = q.start_ms.unwrap_or(i64::MIN);
    let end = q.end_ms.unwrap_or(i64::MAX);
    let out_bucket = |b: i64| q.rollup.as_ref().map_or(b, |r| r.bucket_start(b));
    let bucket_end = |b: i64| match &q.rollup {
        Some(r) => r.next_start(b),
        None => def.interval.next_start(b),
    };

    let mut cells: Vec<(i64, u32, f64)> = Vec::new();
    if q.rollup.is_none() && !gp.collapsing {
        let columns = plain_columns(state, &gp, cols, q.calculation, p, (start, end));
        // The common plain answer (every interval complete or wanted, no limit, rows stored in
        // time then tuple order) is the columns as they are: no (time, tuple, value) vector.
        if q.include_incomplete_intervals && q.limit.is_none() && columns.is_sorted() {
            return columns.into_result(gp, !def.groupings.is_empty());
        }
        cells = columns.into_cells();
    } else {
        let sketch = matches!(q.calculation, Calc::ApproxCountDistinct | Calc::Percentiles);
        let complete = |b: i64| bucket_end(b) <= now_ms;
        let rule = SliceRule {
            limit: q.limit.map(|l| (l, q.limit_type)),
            keep: (!q.include_incomplete_intervals).then_some(&complete as &dyn Fn(i64) -> bool),
        };
        // Sketch accumulators hold buffers: past a few thousand tuples, one per tuple no longer
        // stays in cache and the numbered path (one reused accumulator, each cell's rows
        // together) is faster.
        let stream = !sketch || gp.tuples <= STREAM_SKETCH_TUPLES;
        let streamed = stream
            && merge_streaming(
                state,
                &gp,
                cols,
                (q.calculation, p),
                (start, end),
                &out_bucket,
                &rule,
                &mut cells,
            );
        // Streamed cells are in (time, tuple) order, complete and trimmed already.
        if !streamed {
            cells.clear();
            if let Some(dense) = DenseCells::build(state, &gp, (start, end), &out_bucket) {
                // Cells few enough to number densely: no hashing per row, and cells come out in
                // (time, tuple) order.
                if sketch {
                    dense.merge_sketches(cols, (q.calculation, p), &rule, &mut cells);
                } else {
                    dense.merge_scalars(cols, q.calculation, &rule, &mut cells);
                }
            } else if sketch {
                merge_sketch_cells(
                    state,
                    &gp,
                    cols,
                    q,
                    p,
                    (start, end),
                    &out_bucket,
                    &mut cells,
                );
            } else {
                // Scalar accumulators are small: one per output cell in a map, rows in storage order.
                let mut acc: HashMap<(i64, u32), Acc> = HashMap::new();
                for (row, b, g) in selected_rows(state, &gp, start, end) {
                    acc.entry((out_bucket(b), g))
                        .or_insert_with(|| Acc::new(q.calculation))
                        .add(cols, row);
                }
                cells
                    .extend(acc.into_iter().filter_map(|((b, g), mut a)| {
                        a.value(q.calculation, p).map(|v| (b, g, v))
                    }));
            }
        }
    }
    if !q.include_incomplete_intervals {
        cells.retain(|(b, _, _)| bucket_end(*b) <= now_ms);
    }
    // Deterministic order: by time, then by grouping tuple (tuple ids are in value order).
    // Storage order and the dense path are usually sorted already; checking is one pass.
    let by_cell = |a: &(i64, u32, f64), b: &(i64, u32, f64)| a.0.cmp(&b.0).then(a.1.cmp(&b.1));
    if !cells.is_sorted_by(|a, b| by_cell(a, b).is_le()) {
        cells.sort_unstable_by(by_cell);
    }
    if let Some(limit) = q.limit {
        keep_top_n(&mut cells, limit, q.limit_type);
    }
    let mut rs = ResultSet {
        keys: gp.keys,
        values: gp.values,
        tuple_codes: gp.tuple_codes,
        tuples: gp.tuples,
        grouped: !def.groupings.is_empty(),
        ..ResultSet::default()
    };
    rs.dt.reserve(cells.len());
    for (b, g, v) in cells {
        rs.dt.push(b);
        rs.group.push(g);
        rs.value.push(v);
    }
    rs
}

/// Distinct values of `q.grouping_name` in the window (spec 7.4), narrowed by the other
/// grouping filters, sorted.
pub fn grouping_values(def: &FilterDef, state: &FilterState, q: &Query) -> Result<Vec<String>> {
    let name = q
        .grouping_name
        .as_deref()
        .ok_or_else(|| qerr("groupingName", "is required"))?;
    let idx = grouping_index(def, name).ok_or_else(|| {
        qerr(
            "groupingName",
            format!("{name:?} is not a grouping of filter {:?}", def.id),
        )
    })?;
    let gp = map_groups(def, state, q, Some(idx));
    let start = q.start_ms.unwrap_or(i64::MIN);
    let end = q.end_ms.unwrap_or(i64::MAX);
    let mut seen = vec![false; gp.tuples];
    for (_, _, g) in selected_rows(state, &gp, start, end) {
        seen[g as usize] = true;
    }
    // One returned key: tuple g's only code indexes the sorted values.
    let mut out: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| **s)
        .map(|(g, _)| gp.values[0][gp.tuple_codes[g] as usize].clone())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full sort and truncate `keep_top_n` replaces.
    fn naive(cells: &[(i64, u32, f64)], limit: usize, lt: LimitType) -> Vec<(i64, u32, f64)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < cells.len() {
            let j = i + cells[i..].iter().take_while(|c| c.0 == cells[i].0).count();
            let mut slice = cells[i..j].to_vec();
            slice.sort_by(|a, b| {
                let ord = a.2.total_cmp(&b.2);
                let ord = if lt == LimitType::Top {
                    ord.reverse()
                } else {
                    ord
                };
                ord.then(a.1.cmp(&b.1))
            });
            slice.truncate(limit);
            slice.sort_unstable_by_key(|c| c.1);
            out.extend(slice);
            i = j;
        }
        out
    }

    #[test]
    fn round_estimate_is_round() {
        let mut x = 0.0f64;
        let mut edge = vec![
            0.0,
            0.5,
            1.0,
            1.5,
            2.5,
            1e15 + 0.5,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            9.1e15,
            1e300,
            f64::MAX,
            f64::INFINITY,
        ];
        for i in 0..200_000 {
            edge.push(x);
            x += 0.173 * f64::from(i % 7);
        }
        for v in edge {
            assert_eq!(round_estimate(v).to_bits(), v.round().to_bits(), "{v}");
        }
        assert!(round_estimate(f64::NAN).is_nan());
    }

    #[test]
    fn top_n_by_selection_keeps_what_a_full_sort_keeps() {
        // A small deterministic generator: many ties (values 0..5), slices of 0..30 cells.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..300 {
            let mut cells = Vec::new();
            for b in 0..next(6) as i64 {
                for g in 0..next(30) as u32 {
                    if next(3) > 0 {
                        // Values -2..2, zero as +0.0 or -0.0 (they rank apart).
                        let v = match next(6) {
                            5 => -0.0,
                            k => k as f64 - 2.0,
                        };
                        cells.push((b * 60_000, g, v));
                    }
                }
            }
            for limit in [1, 2, 3, 10, 40] {
                for lt in [LimitType::Top, LimitType::Bottom] {
                    let mut got = cells.clone();
                    keep_top_n(&mut got, limit, lt);
                    assert_eq!(got, naive(&cells, limit, lt));
                }
            }
        }
    }
}
