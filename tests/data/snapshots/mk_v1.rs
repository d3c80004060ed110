//! Writes a version-1 snapshot with today's main, as test data for later formats.
use eventtally_core::config::{FilterDef, IngestDef};
use eventtally_core::engine::Engine;
fn main() {
    let ingest: serde_json::Value = serde_json::from_str(r#"{"id":"i","timestamp":{"source":"PROPERTY","path":"$.t","format":"UNIX_MILLISECONDS"}}"#).unwrap();
    let filter: serde_json::Value = serde_json::from_str(r#"{"id":"f","intervalType":"MINUTE","intervalCount":1,"groupings":["$.g"],
      "aggregations":[{"id":1,"calculations":["COUNT","SUM","AVG","MIN","MAX","PERCENTILES"],"calculationField":"$.v"},
                      {"id":2,"calculations":["APPROX_COUNT_DISTINCT"],"calculationField":"$.u"}]}"#).unwrap();
    let mut e = Engine::new(vec![IngestDef::from_json(&ingest).unwrap()], vec![FilterDef::from_json(&filter).unwrap()]).unwrap();
    let t0: i64 = 1_704_067_200_000;
    let mut events = Vec::new();
    for i in 0..600i64 {
        let g = ["a", "b", "c"][(i % 3) as usize];
        events.push(format!(r#"{{"t":{},"g":"{g}","v":{},"u":"u{}"}}"#, t0 + i * 17_000, i % 97, i % 41));
    }
    e.ingest(format!("[{}]", events.join(",")).as_bytes(), None, t0).unwrap();
    let bytes = eventtally_core::snapshot::encode(&e.plan, &e.store);
    std::fs::write(std::env::args().nth(1).unwrap(), bytes).unwrap();
}
