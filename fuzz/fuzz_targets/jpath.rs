//! JPath conditions: parse and compile any text as a filter condition, then evaluate it on
//! an event; nothing may panic. The first line is the condition, the rest one JSON event.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (condition, event) = text.split_once('\n').unwrap_or((text, ""));
    if let Some(plan) = common::plan_with("SINGLE_OBJECT", condition) {
        let event = if event.trim().is_empty() {
            r#"{"type":"track","event":"a","context":{"device":{"type":"ios"}},"properties":{"revenue":2,"value":[1,"x",null]},"items":[{"a":1},{"a":"b"}]}"#
        } else {
            event
        };
        let _ = plan.prepare(event.as_bytes(), 0, common::NOW_MS);
    }
});
