//! File ingestion from bytes (`file.rs`): the first byte picks the file kind; the rest is
//! the file. Reading with tiny chunks (many cuts, guessed and exact) must give what parsing
//! the whole input as one batch gives: the same events or the same error offset. The same
//! bytes gzipped must read the same, and arbitrary bytes named `.gz` must fail cleanly.
#![no_main]

use std::io::Write;

use eventtally_core::config::Schema;
use eventtally_core::error::Error;
use eventtally_core::file::{prepare_file_bytes, prepare_file_bytes_with, Cuts, Reading};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn outcome(
    r: &eventtally_core::error::Result<eventtally_core::engine::Delta>,
) -> Option<(u64, u64)> {
    r.as_ref().ok().map(|d| (d.stats.events, d.stats.accepted))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    thread_local! {
        static PLAN: eventtally_core::engine::Plan = common::plan("ARRAY_OF_EVENTS");
    }
    PLAN.with(|plan| {
        let (name, schema) = if pick & 1 == 0 {
            ("f.json", Schema::ArrayOfEvents)
        } else {
            ("f.ndjson", Schema::NewlineDelimited)
        };
        let reading = Reading {
            cuts: if pick & 2 == 0 {
                Cuts::Guess
            } else {
                Cuts::Exact
            },
            chunk: 1 + usize::from(pick >> 2) % 64,
            window: 1 + usize::from(pick >> 4),
        };
        let file = prepare_file_bytes_with(plan, name, body, 0, common::NOW_MS, reading);
        let starts_array = body
            .iter()
            .find(|b| !b.is_ascii_whitespace() && !matches!(**b, 0xEF | 0xBB | 0xBF))
            == Some(&b'[');
        if schema == Schema::NewlineDelimited || starts_array {
            let mut whole = plan.empty_delta();
            let one = plan
                .prepare_chunk(body, 0, schema, 0, common::NOW_MS, &mut whole)
                .map(|()| whole);
            match (&file, &one) {
                (
                    Err(Error::Json {
                        offset: a,
                        reason: ra,
                    }),
                    Err(Error::Json {
                        offset: b,
                        reason: rb,
                    }),
                ) => {
                    // One batch checks UTF-8 over all its bytes before any syntax; a file is
                    // checked chunk by chunk, so a syntax error in an earlier chunk comes first.
                    let utf8 = ra.contains("UTF-8") || rb.contains("UTF-8");
                    assert!(a == b || utf8, "error offsets differ: {a} {ra} / {b} {rb}");
                }
                _ => assert_eq!(
                    outcome(&file),
                    outcome(&one),
                    "{name}: file {file:?} vs batch {one:?}"
                ),
            }
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let gz_name = format!("{name}.gz");
        let unzipped = prepare_file_bytes(plan, &gz_name, &gz, 0, common::NOW_MS);
        let plain = prepare_file_bytes(plan, name, body, 0, common::NOW_MS);
        assert_eq!(
            outcome(&unzipped),
            outcome(&plain),
            "gzip changes the result"
        );
        let _ = prepare_file_bytes(plan, &gz_name, body, 0, common::NOW_MS);
    });
});
