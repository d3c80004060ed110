//! Timestamp parsing: ISO 8601 and query times never panic, and what parses formats back to
//! the same instant; Unix numbers in every unit; bucket starts contain their instant.
#![no_main]

use eventtally_core::time::{format_rfc3339, parse_iso8601, parse_query_time};
use eventtally_core::time::{
    str_to_millis, unix_to_millis, Interval, IntervalUnit, TimestampFormat,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ms) = parse_iso8601(s) {
        let back = format_rfc3339(ms);
        assert_eq!(parse_iso8601(&back), Some(ms), "{s:?} -> {ms} -> {back:?}");
    }
    let _ = parse_query_time(s);
    for name in [
        "ISO_8601",
        "UNIX_SECONDS",
        "UNIX_MILLISECONDS",
        "UNIX_MICROSECONDS",
        "UNIX_NANOSECONDS",
        "AUTO",
    ] {
        if let Some(fmt) = TimestampFormat::from_name(name) {
            let _ = str_to_millis(s, fmt);
            if let Ok(v) = s.trim().parse::<f64>() {
                let _ = unix_to_millis(v, fmt);
            }
        }
    }
    if data.len() >= 9 {
        let t = i64::from_le_bytes(data[..8].try_into().expect("8 bytes")) % 253_402_300_800_000;
        let t = t.abs();
        for unit in ["MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"] {
            let Some(u) = IntervalUnit::from_name(unit) else {
                continue;
            };
            let count = i64::from(data[8] % 60) + 1;
            if let Ok(iv) = Interval::new(u, count) {
                let start = iv.bucket_start(t);
                assert!(start <= t, "{unit}x{count}: start {start} after {t}");
                let next = iv.next_start(start);
                assert!(
                    next > t,
                    "{unit}x{count}: {t} not before the next start {next}"
                );
            }
        }
    }
});
