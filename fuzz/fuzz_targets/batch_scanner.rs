//! The batch scanner against serde_json: whatever serde_json accepts as JSON the scanner must
//! not reject as malformed JSON, and whatever it rejects the scanner must reject too (the
//! implementation-defined corners, numbers out of f64 range, lone surrogates and nesting past
//! serde_json's limit, are left out). Error offsets must lie inside the input.
#![no_main]

use eventtally_core::error::Error;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn depth(data: &[u8]) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in data {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d);
            }
            b']' | b'}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static PLANS: [eventtally_core::engine::Plan; 2] =
            [common::plan("ARRAY_OF_EVENTS"), common::plan("NEWLINE_DELIMITED")];
    }
    PLANS.with(|plans| {
        let array = plans[0].prepare(data, 0, common::NOW_MS);
        let _ = plans[1].prepare(data, 0, common::NOW_MS);
        if let Err(Error::Json { offset, .. }) = &array {
            assert!(
                *offset <= data.len(),
                "offset {offset} past {} bytes",
                data.len()
            );
        }
        let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
        let serde = serde_json::from_slice::<serde_json::Value>(body);
        let corner = depth(body) > 100 || body.windows(3).any(|w| w.eq_ignore_ascii_case(b"\\ud"));
        match (&serde, &array) {
            (Ok(_), Err(Error::Json { offset, reason })) if !corner => {
                panic!("serde_json accepts, the scanner rejects at {offset}: {reason}")
            }
            (Err(e), Ok(_)) if !corner && !e.to_string().contains("out of range") => {
                panic!("serde_json rejects ({e}), the scanner accepts")
            }
            _ => {}
        }
    });
});
