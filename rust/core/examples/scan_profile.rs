//! Profiling aid: times `Plan::prepare` on a file of events (`cargo run --release --example
//! scan_profile -- FILE`), for perf/callgrind without Python in the way.
use eventtally_core::config::{FilterDef, IngestDef};
use eventtally_core::engine::Plan;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: scan_profile FILE [filter.json]");
    let data = std::fs::read(&path).expect("readable file");
    let ingest = IngestDef::from_json(&serde_json::json!({
        "id": "bench", "schema": "ARRAY_OF_EVENTS",
        "timestamp": {"source": "PROPERTY", "path": "@.receivedAt", "format": "ISO_8601"}
    }))
    .expect("valid ingest");
    let filters: Vec<FilterDef> = match std::env::args().nth(2) {
        Some(f) => {
            let text = std::fs::read_to_string(f).expect("readable filter file");
            let v: serde_json::Value = serde_json::from_str(&text).expect("filter JSON");
            v.as_array()
                .expect("a list")
                .iter()
                .map(|d| FilterDef::from_json(d).expect("valid filter"))
                .collect()
        }
        None => Vec::new(),
    };
    let plan = Plan::new(vec![ingest], filters).expect("valid plan");
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    for _ in 0..rounds {
        let t = std::time::Instant::now();
        let delta = plan.prepare(&data, 0, 0).expect("valid batch");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{:.2} M events/s, {:.2} GB/s",
            delta.stats.events as f64 / secs / 1e6,
            data.len() as f64 / secs / 1e9
        );
    }
}
