//! Snapshot decoding and merging: arbitrary bytes decode to an engine or a clear error, never
//! a panic; a decoded engine encodes to bytes that decode to the same encoding; merging a
//! state into a copy of itself is either refused up front (`check_merge`) or succeeds.
#![no_main]

use eventtally_core::snapshot::{decode, encode};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // Half the inputs start from a real snapshot with the fuzz bytes spliced in, so the
    // decoder gets past its header checks.
    let input: Vec<u8> = if data.first().is_some_and(|b| b & 1 == 1) {
        let mut e = eventtally_core::engine::Engine::new(vec![], vec![]).expect("empty engine");
        let plan = common::plan("NEWLINE_DELIMITED");
        e.plan = std::sync::Arc::new(plan);
        e.store.sync(&e.plan);
        let events = b"{\"type\":\"track\",\"anonymousId\":\"a\",\"receivedAt\":\"2024-05-14T00:00:01Z\",\"properties\":{\"revenue\":3,\"value\":2}}\n{\"type\":\"page\",\"anonymousId\":\"b\",\"properties\":{\"revenue\":\"1.5\",\"value\":9}}\n";
        e.ingest(events, None, common::NOW_MS).expect("ingest");
        let mut bytes = encode(&e.plan, &e.store);
        if data.len() >= 3 {
            let at = usize::from(u16::from_le_bytes([data[1], data[2]])) % bytes.len().max(1);
            let end = (at + data.len() - 3).min(bytes.len());
            bytes.splice(at..end, data[3..].iter().copied());
        }
        bytes
    } else {
        data.to_vec()
    };
    let Ok(engine) = decode(&input) else {
        return;
    };
    let again = encode(&engine.plan, &engine.store);
    let twice = decode(&again).expect("a re-encoded snapshot decodes");
    assert_eq!(
        encode(&twice.plan, &twice.store),
        again,
        "encoding is stable"
    );
    for state in engine.store.states.values() {
        let mut mine = state.clone();
        if mine.check_merge(state).is_ok() {
            mine.merge_from(state)
                .expect("a merge that check_merge allows succeeds");
        }
    }
});
