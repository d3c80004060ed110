//! The Metrics API answers of spec 7.2–7.4 as JSON values, for callers that want a value (or
//! its text through `serde_json`) rather than the streamed text of `response`, which the server
//! sends. Both encode the same rows: `dt` in RFC 3339 UTC, `groupings` an object of grouping
//! name to value (`null` for an ungrouped query), values as the engine computed them.

use serde_json::{json, Map, Value as Json};

use crate::query::ResultSet;
use crate::time::write_rfc3339;

/// The `groupings` object of tuple `g`.
fn groupings_object(rs: &ResultSet, g: u32) -> Json {
    let mut m = Map::new();
    for (k, v) in rs.keys.iter().zip(rs.tuple(g)) {
        m.insert(k.clone(), Json::String(v.to_owned()));
    }
    Json::Object(m)
}

/// The rows of a plain query (spec 7.2): `[{"dt", "groupings", "value"}]`.
#[must_use]
pub fn rows_json(rs: &ResultSet) -> Json {
    let mut out = Vec::with_capacity(rs.dt.len());
    let mut dt = String::new();
    for i in 0..rs.dt.len() {
        dt.clear();
        write_rfc3339(rs.dt[i], &mut dt);
        let groupings = if rs.keys.is_empty() && !rs.grouped {
            Json::Null
        } else {
            groupings_object(rs, rs.group[i])
        };
        out.push(json!({"dt": dt, "groupings": groupings, "value": rs.value[i]}));
    }
    Json::Array(out)
}

/// Appends the compact `?multi=true` encoding of one query (spec 7.3): per series, one
/// separator row (`isSeperator`, base `dt`, non-null `groupings`) followed by value rows
/// carrying seconds after the base, the value and the query id.
pub fn multi_rows(rs: &ResultSet, query_id: &str, out: &mut Vec<Json>) {
    let mut series: Vec<Vec<usize>> = vec![Vec::new(); rs.tuples];
    for i in 0..rs.dt.len() {
        series[rs.group[i] as usize].push(i);
    }
    let mut dt = String::new();
    // Tuple ids are in ascending order of their values, so series come out sorted.
    for (g, rows) in series.iter().enumerate() {
        let Some(base) = rows.iter().map(|&i| rs.dt[i]).min() else {
            continue;
        };
        dt.clear();
        write_rfc3339(base, &mut dt);
        out.push(json!({
            "isSeperator": true,
            "dt": dt,
            "groupings": groupings_object(rs, g as u32),
        }));
        for &i in rows {
            out.push(json!({
                "dtSecLater": rs.dt[i].saturating_sub(base).div_euclid(1000),
                "val": rs.value[i],
                "queryId": query_id,
            }));
        }
    }
}

/// The distinct values of a groupings request (spec 7.4): `[{"value": ...}]`.
#[must_use]
pub fn groupings_json(values: Vec<String>) -> Json {
    Json::Array(values.into_iter().map(|v| json!({"value": v})).collect())
}
