//! Shared by the fuzz targets: a small plan that reads a timestamp, groups, and runs every
//! calculation, so any event touches the whole pipeline.
#![allow(dead_code)]

use eventtally_core::config::{FilterDef, IngestDef};
use eventtally_core::engine::Plan;
use serde_json::json;

pub const NOW_MS: i64 = 1_715_644_800_000;

pub fn filter(condition: &str) -> serde_json::Value {
    json!({
        "id": "f", "name": "f", "filter": condition, "intervalType": "MINUTE", "intervalCount": 1,
        "groupingItems": [{"grouping": "@.type", "alias": null},
                          {"grouping": "@.context.device.type", "alias": null}],
        "aggregations": [
            {"id": 1, "name": "n", "calculations": ["COUNT"], "calculationField": null,
             "subFilter": null},
            {"id": 2, "name": "v", "calculations": ["SUM", "MIN", "MAX", "AVG"],
             "calculationField": "@.properties.revenue", "subFilter": null},
            {"id": 3, "name": "d", "calculations": ["APPROX_COUNT_DISTINCT"],
             "calculationField": "@.anonymousId", "subFilter": null},
            {"id": 4, "name": "p", "calculations": ["PERCENTILES"],
             "calculationField": "@.properties.value", "subFilter": null}
        ]
    })
}

pub fn plan_with(schema: &str, condition: &str) -> Option<Plan> {
    let ingest = IngestDef::from_json(&json!({
        "id": "i", "name": "i", "schema": schema,
        "timestamp": {"source": "PROPERTY", "path": "@.receivedAt", "format": "AUTO",
                      "onInvalid": "INGEST_TIME"},
    }))
    .expect("valid ingest");
    let filter = FilterDef::from_json(&filter(condition)).ok()?;
    Plan::new(vec![ingest], vec![filter]).ok()
}

pub fn plan(schema: &str) -> Plan {
    plan_with(schema, "@.type != 'identify'").expect("valid plan")
}
