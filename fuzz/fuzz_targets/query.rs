//! Query parsing and answering: any JSON request is validated against the filter or refused
//! with an error, and a valid one is answered over a small real state without panicking.
#![no_main]

use eventtally_core::config::FilterDef;
use eventtally_core::query::{run, Query};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    thread_local! {
        static ENGINE: eventtally_core::engine::Engine = {
            let def = FilterDef::from_json(&common::filter("")).expect("filter");
            let plan = common::plan("NEWLINE_DELIMITED");
            let mut e = eventtally_core::engine::Engine::new(
                plan.ingests().cloned().collect(),
                vec![def],
            )
            .expect("engine");
            let mut body = String::new();
            for i in 0..300 {
                body.push_str(&format!(
                    "{{\"type\":\"t{}\",\"anonymousId\":\"u{}\",\"receivedAt\":\"2024-05-14T{:02}:{:02}:00Z\",\"context\":{{\"device\":{{\"type\":\"d{}\"}}}},\"properties\":{{\"revenue\":{},\"value\":{}}}}}\n",
                    i % 3, i % 17, (i / 60) % 24, i % 60, i % 2, i, i * 7 % 101
                ));
            }
            e.ingest(body.as_bytes(), None, common::NOW_MS).expect("ingest");
            e
        };
    }
    ENGINE.with(|e| {
        let lookup = |id: &str| e.plan.filter(id).cloned();
        for strict in [true, false] {
            let q = if strict {
                Query::from_json(&v, &lookup)
            } else {
                Query::for_groupings(&v, &lookup)
            };
            if let Ok(q) = q {
                if strict {
                    let def = e.plan.filter(&q.filter_id).expect("validated filter");
                    let state = &e.store.states[&q.filter_id];
                    let _ = run(def, state, &q, common::NOW_MS);
                }
            }
        }
    });
});
