//! Ingest and filter definitions: parsed from the camelCase JSON of the HTTP API and validated
//! once, when built.
//!
//! Guarantees: a definition that parses is valid (limits, unique ids and aliases, intervals in
//! range, every `JPath` compiles), so the hot path never re-checks it; every error names the field
//! (`aggregations[1].calculationField`). `to_json` gives back the spec 5.7 shape.

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::jpath::{parse_path, Condition, Slot, SlotResolver};
use crate::path::Path;
use crate::time::{Interval, IntervalUnit, TimestampFormat};

pub const MAX_GROUPINGS: usize = 10;
pub const MAX_AGGREGATIONS: usize = 10;
pub const MAX_ALIAS_CHARS: usize = 100;

/// The seven calculations of spec 5.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Calc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    ApproxCountDistinct,
    Percentiles,
}

impl Calc {
    pub const ALL: [Calc; 7] = [
        Calc::Count,
        Calc::Sum,
        Calc::Avg,
        Calc::Min,
        Calc::Max,
        Calc::ApproxCountDistinct,
        Calc::Percentiles,
    ];

    #[must_use]
    pub fn from_name(s: &str) -> Option<Calc> {
        Some(match s {
            "COUNT" => Calc::Count,
            "SUM" => Calc::Sum,
            "AVG" => Calc::Avg,
            "MIN" => Calc::Min,
            "MAX" => Calc::Max,
            "APPROX_COUNT_DISTINCT" => Calc::ApproxCountDistinct,
            "PERCENTILES" => Calc::Percentiles,
            _ => return None,
        })
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Calc::Count => "COUNT",
            Calc::Sum => "SUM",
            Calc::Avg => "AVG",
            Calc::Min => "MIN",
            Calc::Max => "MAX",
            Calc::ApproxCountDistinct => "APPROX_COUNT_DISTINCT",
            Calc::Percentiles => "PERCENTILES",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of calculations as a bit mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CalcSet(u8);

impl CalcSet {
    #[must_use]
    pub fn contains(self, c: Calc) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn insert(&mut self, c: Calc) {
        self.0 |= c.bit();
    }
    #[must_use]
    pub fn bits(self) -> u8 {
        self.0
    }
    #[must_use]
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & 0x7f)
    }
}

/// Ingest body formats (spec 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    ArrayOfEvents,
    NewlineDelimited,
    ObjectWithArrayProperty,
    SingleObject,
}

impl Schema {
    #[must_use]
    pub fn from_name(s: &str) -> Option<Schema> {
        Some(match s {
            "ARRAY_OF_EVENTS" => Schema::ArrayOfEvents,
            "NEWLINE_DELIMITED" => Schema::NewlineDelimited,
            "OBJECT_WITH_ARRAY_PROPERTY" => Schema::ObjectWithArrayProperty,
            "SINGLE_OBJECT" => Schema::SingleObject,
            _ => return None,
        })
    }
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Schema::ArrayOfEvents => "ARRAY_OF_EVENTS",
            Schema::NewlineDelimited => "NEWLINE_DELIMITED",
            Schema::ObjectWithArrayProperty => "OBJECT_WITH_ARRAY_PROPERTY",
            Schema::SingleObject => "SINGLE_OBJECT",
        }
    }
}

/// What to do with an event whose timestamp property is missing or unparsable (decision 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    IngestTime,
    Drop,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TimestampRule {
    Ingest,
    Property {
        source: String,
        path: Path,
        format: TimestampFormat,
        on_invalid: OnInvalid,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestDef {
    pub id: String,
    pub name: String,
    pub schema: Schema,
    pub array_path: Option<(String, Path)>,
    pub timestamp: TimestampRule,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupingDef {
    pub source: String,
    pub path: Path,
    pub alias: Option<String>,
}

impl GroupingDef {
    /// The key results use: the alias when set, else the `JPath` as written.
    #[must_use]
    pub fn key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.source)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregationDef {
    pub id: i64,
    pub name: String,
    pub sub_filter: Option<String>,
    pub calc_list: Vec<Calc>,
    pub calcs: CalcSet,
    pub field: Option<(String, Path)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilterDef {
    pub id: String,
    pub name: String,
    pub filter: String,
    pub groupings: Vec<GroupingDef>,
    pub interval: Interval,
    pub aggregations: Vec<AggregationDef>,
    pub flatten: Option<(String, Path)>,
    /// Retention tiers (decision 13); empty when the definition has none. Tier 0 is `interval`.
    pub retention: Vec<RetentionTier>,
}

impl FilterDef {
    #[must_use]
    pub fn aggregation(&self, id: i64) -> Option<(usize, &AggregationDef)> {
        self.aggregations
            .iter()
            .enumerate()
            .find(|(_, a)| a.id == id)
    }
}

fn cfg(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

fn get_str<'a>(obj: &'a Map<String, Json>, key: &str, field: &str) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(cfg(field, "must be a string")),
    }
}

fn get_id(obj: &Map<String, Json>, field: &str) -> Result<String> {
    match obj.get("id") {
        Some(Json::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Json::Number(n)) => Ok(n.to_string()),
        Some(Json::String(_)) => Err(cfg(field, "must not be empty")),
        None | Some(Json::Null) => Err(cfg(field, "is required")),
        Some(_) => Err(cfg(field, "must be a string")),
    }
}

/// A resolver that only checks that paths compile (used to validate conditions).
struct NullResolver;
impl SlotResolver for NullResolver {
    fn resolve(&mut self, _path: &Path) -> Slot {
        Slot::Root(0)
    }
}

fn check_path(src: &str, field: &str) -> Result<Path> {
    if src.trim().is_empty() {
        return Err(cfg(field, "must not be empty"));
    }
    parse_path(src).map_err(|e| e.under(field))
}

fn check_condition(src: &str, field: &str) -> Result<()> {
    Condition::compile(src, &mut NullResolver)
        .map(|_| ())
        .map_err(|e| e.under(field))
}

impl IngestDef {
    pub fn from_json(v: &Json) -> Result<IngestDef> {
        let obj = v
            .as_object()
            .ok_or_else(|| cfg("ingest", "must be a JSON object"))?;
        let id = get_id(obj, "id")?;
        let name = get_str(obj, "name", "name")?.unwrap_or(&id).to_owned();
        let schema_name = get_str(obj, "schema", "schema")?.unwrap_or("ARRAY_OF_EVENTS");
        let schema = Schema::from_name(schema_name).ok_or_else(|| {
            cfg(
                "schema",
                format!("unknown schema {schema_name:?}; expected ARRAY_OF_EVENTS, NEWLINE_DELIMITED, OBJECT_WITH_ARRAY_PROPERTY or SINGLE_OBJECT"),
            )
        })?;
        let array_path = match (schema, get_str(obj, "arrayPath", "arrayPath")?) {
            (Schema::ObjectWithArrayProperty, Some(p)) => {
                Some((p.to_owned(), check_path(p, "arrayPath")?))
            }
            (Schema::ObjectWithArrayProperty, None) => {
                return Err(cfg(
                    "arrayPath",
                    "is required for OBJECT_WITH_ARRAY_PROPERTY",
                ))
            }
            _ => None,
        };
        let timestamp = match obj.get("timestamp") {
            None | Some(Json::Null) => TimestampRule::Ingest,
            Some(Json::Object(ts)) => {
                let source = get_str(ts, "source", "timestamp.source")?.unwrap_or("INGEST");
                match source {
                    "INGEST" => TimestampRule::Ingest,
                    "PROPERTY" => {
                        let src = get_str(ts, "path", "timestamp.path")?.ok_or_else(|| {
                            cfg("timestamp.path", "is required for source PROPERTY")
                        })?;
                        let path = check_path(src, "timestamp.path")?;
                        let fmt_name =
                            get_str(ts, "format", "timestamp.format")?.unwrap_or("ISO_8601");
                        let format = TimestampFormat::from_name(fmt_name).ok_or_else(|| {
                            cfg("timestamp.format", format!("unknown format {fmt_name:?}; expected ISO_8601, UNIX_SECONDS, UNIX_MILLISECONDS, UNIX_MICROSECONDS, UNIX_NANOSECONDS or AUTO"))
                        })?;
                        let on_invalid = match get_str(ts, "onInvalid", "timestamp.onInvalid")? {
                            None | Some("INGEST_TIME") => OnInvalid::IngestTime,
                            Some("DROP") => OnInvalid::Drop,
                            Some(other) => {
                                return Err(cfg(
                                    "timestamp.onInvalid",
                                    format!(
                                        "unknown policy {other:?}; expected INGEST_TIME or DROP"
                                    ),
                                ))
                            }
                        };
                        TimestampRule::Property {
                            source: src.to_owned(),
                            path,
                            format,
                            on_invalid,
                        }
                    }
                    other => {
                        return Err(cfg(
                            "timestamp.source",
                            format!("unknown source {other:?}; expected INGEST or PROPERTY"),
                        ))
                    }
                }
            }
            Some(_) => return Err(cfg("timestamp", "must be an object")),
        };
        Ok(IngestDef {
            id,
            name,
            schema,
            array_path,
            timestamp,
        })
    }

    #[must_use]
    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        o.insert("name".into(), json!(self.name));
        o.insert("schema".into(), json!(self.schema.name()));
        if let Some((src, _)) = &self.array_path {
            o.insert("arrayPath".into(), json!(src));
        }
        let ts = match &self.timestamp {
            TimestampRule::Ingest => json!({"source": "INGEST"}),
            TimestampRule::Property {
                source,
                format,
                on_invalid,
                ..
            } => json!({
                "source": "PROPERTY",
                "path": source,
                "format": format.name(),
                "onInvalid": match on_invalid { OnInvalid::IngestTime => "INGEST_TIME", OnInvalid::Drop => "DROP" },
            }),
        };
        o.insert("timestamp".into(), ts);
        Json::Object(o)
    }
}

impl FilterDef {
    pub fn from_json(v: &Json) -> Result<FilterDef> {
        let obj = v
            .as_object()
            .ok_or_else(|| cfg("filter", "must be a JSON object"))?;
        let id = get_id(obj, "id")?;
        let name = get_str(obj, "name", "name")?.unwrap_or(&id).to_owned();
        let filter = get_str(obj, "filter", "filter")?.unwrap_or("").to_owned();
        check_condition(&filter, "filter")?;

        let mut groupings = Vec::new();
        let mut list_field = "groupingItems";
        match (obj.get("groupingItems"), obj.get("groupings")) {
            (Some(Json::Array(items)), _) => {
                for (i, item) in items.iter().enumerate() {
                    let field = format!("groupingItems[{i}]");
                    let io = item
                        .as_object()
                        .ok_or_else(|| cfg(&field, "must be an object with grouping and alias"))?;
                    let src = get_str(io, "grouping", &format!("{field}.grouping"))?
                        .ok_or_else(|| cfg(format!("{field}.grouping"), "is required"))?;
                    let alias = get_str(io, "alias", &format!("{field}.alias"))?
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned);
                    groupings.push((format!("{field}.grouping"), field, src.to_owned(), alias));
                }
            }
            (None | Some(Json::Null), Some(Json::Array(items))) => {
                list_field = "groupings";
                for (i, item) in items.iter().enumerate() {
                    let field = format!("groupings[{i}]");
                    let src = item
                        .as_str()
                        .ok_or_else(|| cfg(&field, "must be a JPath string"))?;
                    groupings.push((field.clone(), field, src.to_owned(), None));
                }
            }
            (None | Some(Json::Null), None | Some(Json::Null)) => {}
            (Some(_), _) => return Err(cfg("groupingItems", "must be a list")),
            (_, Some(_)) => return Err(cfg("groupings", "must be a list")),
        }
        if groupings.len() > MAX_GROUPINGS {
            return Err(cfg(
                list_field,
                format!(
                    "at most {MAX_GROUPINGS} groupings are allowed, got {}",
                    groupings.len()
                ),
            ));
        }
        let mut parsed_groupings: Vec<GroupingDef> = Vec::new();
        for (path_field, field, src, alias) in groupings {
            let path = check_path(&src, &path_field)?;
            if parsed_groupings.iter().any(|g| g.path == path) {
                return Err(cfg(path_field, format!("duplicate grouping {src:?}")));
            }
            if let Some(a) = &alias {
                if a.chars().count() > MAX_ALIAS_CHARS {
                    return Err(cfg(
                        format!("{field}.alias"),
                        format!("at most {MAX_ALIAS_CHARS} characters"),
                    ));
                }
            }
            let g = GroupingDef {
                source: src,
                path,
                alias,
            };
            if parsed_groupings.iter().any(|o| o.key() == g.key()) {
                return Err(cfg(
                    format!("{field}.alias"),
                    format!("duplicate alias {:?}", g.key()),
                ));
            }
            parsed_groupings.push(g);
        }

        let unit_name = get_str(obj, "intervalType", "intervalType")?
            .ok_or_else(|| cfg("intervalType", "is required"))?;
        let unit = IntervalUnit::from_name(unit_name).ok_or_else(|| {
            cfg(
                "intervalType",
                format!("unknown interval {unit_name:?}; expected SECOND, MINUTE, HOUR, DAY, WEEK, MONTH or YEAR"),
            )
        })?;
        let count = match obj.get("intervalCount") {
            None | Some(Json::Null) => 1,
            Some(Json::Number(n)) => n
                .as_i64()
                .ok_or_else(|| cfg("intervalCount", "must be a whole number"))?,
            Some(_) => return Err(cfg("intervalCount", "must be a whole number")),
        };
        let interval = Interval::new(unit, count).map_err(|r| cfg("intervalCount", r))?;

        let aggs = match obj.get("aggregations") {
            Some(Json::Array(a)) => a,
            None | Some(Json::Null) => return Err(cfg("aggregations", "is required")),
            Some(_) => return Err(cfg("aggregations", "must be a list")),
        };
        if aggs.is_empty() {
            return Err(cfg("aggregations", "at least one aggregation is required"));
        }
        if aggs.len() > MAX_AGGREGATIONS {
            return Err(cfg(
                "aggregations",
                format!(
                    "at most {MAX_AGGREGATIONS} aggregations are allowed, got {}",
                    aggs.len()
                ),
            ));
        }
        let mut aggregations: Vec<AggregationDef> = Vec::new();
        for (i, a) in aggs.iter().enumerate() {
            let field = format!("aggregations[{i}]");
            let ao = a
                .as_object()
                .ok_or_else(|| cfg(&field, "must be an object"))?;
            let agg_id = match ao.get("id") {
                None | Some(Json::Null) => (i + 1) as i64,
                Some(Json::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| cfg(format!("{field}.id"), "must be a whole number"))?,
                Some(_) => return Err(cfg(format!("{field}.id"), "must be a whole number")),
            };
            if aggregations.iter().any(|o| o.id == agg_id) {
                return Err(cfg(
                    format!("{field}.id"),
                    format!("duplicate aggregation id {agg_id}"),
                ));
            }
            let agg_name = get_str(ao, "name", &format!("{field}.name"))?
                .unwrap_or("")
                .to_owned();
            let sub_filter = get_str(ao, "subFilter", &format!("{field}.subFilter"))?
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned);
            if let Some(sf) = &sub_filter {
                check_condition(sf, &format!("{field}.subFilter"))?;
            }
            let calc_names = match ao.get("calculations") {
                Some(Json::Array(c)) if !c.is_empty() => c,
                _ => {
                    return Err(cfg(
                        format!("{field}.calculations"),
                        "must be a non-empty list",
                    ))
                }
            };
            let mut calcs = CalcSet::default();
            let mut calc_list = Vec::new();
            for (j, c) in calc_names.iter().enumerate() {
                let cf = format!("{field}.calculations[{j}]");
                let name = c.as_str().ok_or_else(|| cfg(&cf, "must be a string"))?;
                let calc = Calc::from_name(name).ok_or_else(|| {
                    cfg(&cf, format!("unknown calculation {name:?}; expected COUNT, SUM, AVG, MIN, MAX, APPROX_COUNT_DISTINCT or PERCENTILES"))
                })?;
                if calcs.contains(calc) {
                    return Err(cfg(&cf, format!("duplicate calculation {name}")));
                }
                calcs.insert(calc);
                calc_list.push(calc);
            }
            let field_src = get_str(ao, "calculationField", &format!("{field}.calculationField"))?
                .filter(|s| !s.trim().is_empty());
            let only_count = calc_list.iter().all(|c| *c == Calc::Count);
            let calc_field = match field_src {
                Some(src) => Some((
                    src.to_owned(),
                    check_path(src, &format!("{field}.calculationField"))?,
                )),
                None if only_count => None,
                None => {
                    return Err(cfg(
                        format!("{field}.calculationField"),
                        "is required unless the only calculation is COUNT",
                    ))
                }
            };
            aggregations.push(AggregationDef {
                id: agg_id,
                name: agg_name,
                sub_filter,
                calc_list,
                calcs,
                field: calc_field,
            });
        }
        let flatten = match get_str(obj, "flattenPath", "flattenPath")? {
            Some(p) if !p.trim().is_empty() => Some((p.to_owned(), check_path(p, "flattenPath")?)),
            _ => None,
        };
        let retention = match obj.get("retention") {
            None | Some(Json::Null) => Vec::new(),
            Some(v) => parse_retention(v, Some(interval), "retention")?,
        };
        Ok(FilterDef {
            id,
            name,
            filter,
            groupings: parsed_groupings,
            interval,
            aggregations,
            flatten,
            retention,
        })
    }

    /// The spec 5.7 filter-definition JSON.
    #[must_use]
    pub fn to_json(&self) -> Json {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        o.insert("name".into(), json!(self.name));
        o.insert("filter".into(), json!(self.filter));
        o.insert(
            "groupings".into(),
            self.groupings.iter().map(|g| json!(g.source)).collect(),
        );
        o.insert(
            "groupingItems".into(),
            self.groupings
                .iter()
                .map(|g| json!({"grouping": g.source, "alias": g.alias}))
                .collect(),
        );
        o.insert("intervalType".into(), json!(self.interval.unit.name()));
        o.insert("intervalCount".into(), json!(self.interval.count));
        o.insert(
            "aggregations".into(),
            self.aggregations
                .iter()
                .map(|a| {
                    json!({
                        "id": a.id,
                        "name": a.name,
                        "subFilter": a.sub_filter,
                        "calculations": a.calc_list.iter().map(|c| c.name()).collect::<Vec<_>>(),
                        "calculationField": a.field.as_ref().map(|(s, _)| s),
                    })
                })
                .collect(),
        );
        if let Some((src, _)) = &self.flatten {
            o.insert("flattenPath".into(), json!(src));
        }
        if !self.retention.is_empty() {
            o.insert("retention".into(), retention_json(&self.retention));
        }
        Json::Object(o)
    }
}

/// Parses a JSON text into a value, mapping errors to a config error on `what`.
pub fn parse_json_text(text: &str, what: &str) -> Result<Json> {
    serde_json::from_str(text).map_err(|e| cfg(what, format!("is not valid JSON: {e}")))
}

/// One retention tier: buckets of `interval` kept while younger than `keep_ms` (0 = forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionTier {
    pub interval: Interval,
    pub keep_ms: i64,
}

/// True when every bucket of `coarse` is a whole number of `fine` buckets (both epoch- or
/// calendar-truncated), so fine buckets merge into coarse ones without splitting any.
#[must_use]
pub fn nests_in(fine: Interval, coarse: Interval) -> bool {
    let months = |i: Interval| match i.unit {
        IntervalUnit::Month => Some(i64::from(i.count)),
        IntervalUnit::Year => Some(12 * i64::from(i.count)),
        _ => None,
    };
    match (fine.fixed_millis(), coarse.fixed_millis()) {
        (Some(f), Some(c)) => c > f && c % f == 0,
        // Calendar buckets start at 00:00 UTC, so a fixed bucket nests when it divides a day.
        (Some(f), None) => crate::time::MS_PER_DAY % f == 0,
        (None, Some(_)) => false,
        (None, None) => {
            let (f, c) = (months(fine).unwrap_or(1), months(coarse).unwrap_or(1));
            c > f && c % f == 0
        }
    }
}

/// Parses and validates a `retention` list for a filter whose interval is `base` (`None` for a
/// default list, whose first tier may be anything). `field` names the list in error messages
/// (`retention`, or a TOML default's name).
pub fn parse_retention(
    v: &Json,
    base: Option<Interval>,
    field: &str,
) -> Result<Vec<RetentionTier>> {
    let items = v
        .as_array()
        .ok_or_else(|| cfg(field, "must be a list of tiers"))?;
    if items.is_empty() {
        return Err(cfg(field, "must hold at least one tier (or be left out)"));
    }
    if items.len() > 8 {
        return Err(cfg(field, format!("at most 8 tiers, got {}", items.len())));
    }
    let mut tiers: Vec<RetentionTier> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let o = item.as_object().ok_or_else(|| {
            cfg(
                &f,
                "must be an object with intervalType, intervalCount and keepSeconds",
            )
        })?;
        let unit_name = get_str(o, "intervalType", &format!("{f}.intervalType"))?
            .ok_or_else(|| cfg(format!("{f}.intervalType"), "is required"))?;
        let unit = IntervalUnit::from_name(unit_name).ok_or_else(|| {
            cfg(
                format!("{f}.intervalType"),
                format!("unknown interval {unit_name:?}; expected SECOND, MINUTE, HOUR, DAY, WEEK, MONTH or YEAR"),
            )
        })?;
        let count = match o.get("intervalCount") {
            None | Some(Json::Null) => 1,
            Some(Json::Number(n)) => n
                .as_i64()
                .ok_or_else(|| cfg(format!("{f}.intervalCount"), "must be a whole number"))?,
            Some(_) => return Err(cfg(format!("{f}.intervalCount"), "must be a whole number")),
        };
        let interval =
            Interval::new(unit, count).map_err(|r| cfg(format!("{f}.intervalCount"), r))?;
        let keep = match o.get("keepSeconds") {
            Some(Json::Number(n)) => n.as_i64().filter(|k| *k >= 0).ok_or_else(|| {
                cfg(
                    format!("{f}.keepSeconds"),
                    "must be a whole number of seconds, 0 or more",
                )
            })?,
            None | Some(Json::Null) => return Err(cfg(format!("{f}.keepSeconds"), "is required")),
            Some(_) => {
                return Err(cfg(
                    format!("{f}.keepSeconds"),
                    "must be a whole number of seconds, 0 or more",
                ))
            }
        };
        if keep > 36_525 * 86_400 * 10 {
            return Err(cfg(
                format!("{f}.keepSeconds"),
                "must be at most 1000 years",
            ));
        }
        let keep_ms = keep * 1000;
        if let Some(base) = base.filter(|b| i == 0 && interval != *b) {
            return Err(cfg(
                format!("{f}.intervalCount"),
                format!(
                    "the first tier must be the filter's own interval ({} x {})",
                    base.count,
                    base.unit.name()
                ),
            ));
        }
        if let Some(prev) = tiers.last() {
            if !nests_in(prev.interval, interval) {
                return Err(cfg(
                    format!("{f}.intervalCount"),
                    format!(
                        "{count} x {unit_name} is not coarser than tier {} and an exact multiple of it",
                        i - 1
                    ),
                ));
            }
            if prev.keep_ms == 0 {
                return Err(cfg(
                    format!("{field}[{}].keepSeconds", i - 1),
                    "0 (forever) is only allowed on the last tier",
                ));
            }
            if keep_ms != 0 && keep_ms <= prev.keep_ms {
                return Err(cfg(
                    format!("{f}.keepSeconds"),
                    format!(
                        "must be larger than tier {}'s {} (ages grow from tier to tier)",
                        i - 1,
                        prev.keep_ms / 1000
                    ),
                ));
            }
        }
        tiers.push(RetentionTier { interval, keep_ms });
    }
    Ok(tiers)
}

/// The `retention` JSON of a tier list (the inverse of [`parse_retention`]).
#[must_use]
pub fn retention_json(tiers: &[RetentionTier]) -> Json {
    tiers
        .iter()
        .map(|t| {
            json!({
                "intervalType": t.interval.unit.name(),
                "intervalCount": t.interval.count,
                "keepSeconds": t.keep_ms / 1000,
            })
        })
        .collect()
}

/// Fits a default tier list (server or organization TOML) to a filter whose interval is
/// `base`: the filter's interval becomes tier 0 with the age of the finest default tier that
/// is not finer than it (else the first), then every later default tier that nests in the
/// tier before it. The last tier kept takes the default's last age, so a filter whose
/// interval fits no coarser default tier is not dropped sooner than the default's data.
/// Empty when the fitted list would not validate.
#[must_use]
pub fn fit_default_retention(default: &[RetentionTier], base: Interval) -> Vec<RetentionTier> {
    let Some(last) = default.last() else {
        return Vec::new();
    };
    let fits_under = |t: &RetentionTier| t.interval == base || nests_in(t.interval, base);
    let start = default.iter().rposition(fits_under).unwrap_or(0);
    let mut out = vec![RetentionTier {
        interval: base,
        keep_ms: default[start].keep_ms,
    }];
    for t in &default[start + 1..] {
        let prev = out.last().expect("tier 0");
        if nests_in(prev.interval, t.interval) && prev.keep_ms != 0 {
            out.push(*t);
        }
    }
    let n = out.len();
    out[n - 1].keep_ms = last.keep_ms;
    // Re-validate through the one parser so a fitted list obeys exactly the same rules.
    parse_retention(&retention_json(&out), Some(base), "retention").unwrap_or_default()
}
