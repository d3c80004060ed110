//! Ingestion of many files on every core: worker threads (`std::thread::scope`) each fold whole
//! files, line-aligned ranges of a large uncompressed NDJSON file, or ranges between top-level
//! elements of a large uncompressed JSON array file, into a partial state of their own; the
//! partial states are merged exactly at the end.
//!
//! Guarantees:
//! - The result equals ingesting the files one by one (up to floating-point summation order, as
//!   for any merge: COUNT, MIN, MAX and the sketches are exact).
//! - All or nothing: the caller gets one [`Delta`] only when every file parsed; on the first
//!   error the other workers stop at their next unit and the error names the file and the byte
//!   offset (into the decompressed file).
//! - Array ranges start and end at guessed separators (`file::array_boundaries`), which the
//!   ranges' parses prove; if any worker's failure may come from a guess, the whole call runs
//!   again with exact cuts and no array ranges, and that pass gives the result or the error.
//! - Memory per worker is its reused read buffer (one chunk of [`crate::file::CHUNK_BYTES`] plus
//!   64 KiB) and its partial state, never a whole file.
//! - The caller's `poll` runs on the calling thread only, between waits, so a binding can hold
//!   its interpreter lock there; it can stop the work by returning `false`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::engine::{Delta, Plan};
use crate::error::{Error, Result};
use crate::file::{
    array_boundaries, line_boundaries, prepare_array_range, prepare_file_into,
    prepare_ndjson_range, starts_array, Cuts, Failure, FileKind, Reading, CHUNK_BYTES,
};

/// Uncompressed NDJSON files at least this large are split into ranges between workers.
pub const SPLIT_BYTES: u64 = 4 * CHUNK_BYTES as u64;

/// How often `poll` runs while workers are busy.
const POLL_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
enum Unit {
    File(usize),
    Range(usize, u64, u64),
    /// A range of a JSON array file between two guessed separators, and the file's length.
    ArrayRange(usize, u64, u64, u64),
}

/// The number of worker threads to use when the caller does not say: every core.
#[must_use]
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Names the file in errors that carry only an offset.
#[must_use]
pub fn in_file(e: Error, path: &str) -> Error {
    match e {
        Error::Json { offset, reason } => Error::Json {
            offset,
            reason: format!("{reason} (in {path})"),
        },
        Error::Format { offset, reason } => Error::Format {
            offset,
            reason: format!("{reason} (in {path})"),
        },
        Error::Limit { reason } if !reason.contains(path) => Error::Limit {
            reason: format!("{reason} (in {path})"),
        },
        other => other,
    }
}

fn in_file_failure(f: Failure, path: &str) -> Failure {
    match f {
        Failure::Error(e) => Failure::Error(in_file(e, path)),
        Failure::Guessed(e) => Failure::Guessed(in_file(e, path)),
    }
}

/// When and how finely uncompressed NDJSON files are split: files of `at` bytes or more, into
/// ranges of at least `min_part` bytes.
#[derive(Debug, Clone, Copy)]
struct Split {
    at: u64,
    min_part: u64,
    /// Chunk and guess sizes of each read.
    reading: Reading,
}

const DEFAULT_SPLIT: Split = Split {
    at: SPLIT_BYTES,
    min_part: CHUNK_BYTES as u64,
    reading: Reading::GUESS,
};

fn plan_units(
    paths: &[String],
    threads: usize,
    split: Split,
    cuts: Cuts,
) -> Result<(Vec<Unit>, u64)> {
    let mut units = Vec::new();
    let mut total = 0u64;
    for (i, path) in paths.iter().enumerate() {
        let (kind, gz) = FileKind::from_path(path)?;
        let len = std::fs::metadata(path)
            .map_err(|e| Error::Io {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .len();
        total += len;
        let big = threads > 1 && !gz && len >= split.at;
        if big && kind == FileKind::Ndjson {
            let parts = threads * 2;
            for (a, b) in line_boundaries(path, len, parts, split.min_part)? {
                units.push(Unit::Range(i, a, b));
            }
        } else if big && cuts == Cuts::Guess && starts_array(path)? {
            // Guessed separators, proved when every range parses (else the exact pass runs).
            let window = split.reading.window;
            for (a, b) in array_boundaries(path, len, threads * 2, split.min_part, window)? {
                units.push(Unit::ArrayRange(i, a, b, len));
            }
        } else {
            units.push(Unit::File(i));
        }
    }
    // Big units first, so no worker starts a large file last while the others idle.
    let size = |u: &Unit| match u {
        Unit::File(i) => std::fs::metadata(&paths[*i]).map_or(0, |m| m.len()),
        Unit::Range(_, a, b) | Unit::ArrayRange(_, a, b, _) => b - a,
    };
    units.sort_by_key(|u| std::cmp::Reverse(size(u)));
    Ok((units, total))
}

/// Reads every file of `paths` into one delta on `threads` workers. `poll(done, total)` gets
/// the compressed bytes read so far out of the files' total size, on the calling thread, about
/// every 100 ms and once at the end; returning `false` stops the work (the result is then
/// `Ok(None)`).
pub fn prepare_files(
    plan: &Plan,
    paths: &[String],
    ingest: usize,
    now_ms: i64,
    threads: usize,
    poll: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Option<Delta>> {
    prepare_files_split(plan, paths, ingest, now_ms, threads, DEFAULT_SPLIT, poll)
}

fn prepare_files_split(
    plan: &Plan,
    paths: &[String],
    ingest: usize,
    now_ms: i64,
    threads: usize,
    split: Split,
    poll: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Option<Delta>> {
    match run_units(
        plan,
        paths,
        ingest,
        now_ms,
        threads,
        split,
        Cuts::Guess,
        poll,
    ) {
        Ok(r) => Ok(r),
        Err(Failure::Error(e)) => Err(e),
        // A guessed cut may have caused it: the exact pass decides.
        Err(Failure::Guessed(_)) => run_units(
            plan,
            paths,
            ingest,
            now_ms,
            threads,
            split,
            Cuts::Exact,
            poll,
        )
        .map_err(Failure::into_error),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_units(
    plan: &Plan,
    paths: &[String],
    ingest: usize,
    now_ms: i64,
    threads: usize,
    split: Split,
    cuts: Cuts,
    poll: &mut dyn FnMut(u64, u64) -> bool,
) -> std::result::Result<Option<Delta>, Failure> {
    let threads = threads.max(1);
    let (units, total) = plan_units(paths, threads, split, cuts)?;
    let workers = threads.min(units.len()).max(1);
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<std::result::Result<Delta, Failure>>();
    let mut results: Vec<std::result::Result<Delta, Failure>> = Vec::with_capacity(workers);
    let mut cancelled = false;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, done, stop, units) = (&next, &done, &stop, &units);
            scope.spawn(move || {
                let reading = Reading {
                    cuts,
                    ..split.reading
                };
                let result = work(
                    plan, paths, units, ingest, now_ms, reading, next, done, stop,
                );
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                // The receiver lives until every worker has reported.
                let _ = tx.send(result);
            });
        }
        drop(tx);
        while results.len() < workers {
            match rx.recv_timeout(POLL_EVERY) {
                Ok(r) => results.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !cancelled && !poll(done.load(Ordering::Relaxed), total) {
                cancelled = true;
                stop.store(true, Ordering::Relaxed);
            }
        }
    });
    if cancelled {
        return Ok(None);
    }
    // An error that stands wins over one a guess may have caused.
    if let Some(i) = results
        .iter()
        .position(|r| matches!(r, Err(Failure::Error(_))))
    {
        return Err(results.swap_remove(i).expect_err("an error"));
    }
    let mut merged: Option<Delta> = None;
    for r in results {
        let d = r?;
        match &mut merged {
            None => merged = Some(d),
            Some(m) => m.absorb(&d)?,
        }
    }
    if !poll(total, total) {
        return Ok(None);
    }
    Ok(Some(merged.unwrap_or_else(|| plan.empty_delta())))
}

#[allow(clippy::too_many_arguments)]
fn work(
    plan: &Plan,
    paths: &[String],
    units: &[Unit],
    ingest: usize,
    now_ms: i64,
    reading: Reading,
    next: &AtomicUsize,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> std::result::Result<Delta, Failure> {
    let mut delta = plan.empty_delta();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(unit) = units.get(i) else { break };
        match *unit {
            Unit::File(f) => {
                let path = &paths[f];
                let mut seen = 0u64;
                let mut report = |read: u64, _total: u64| {
                    done.fetch_add(read.saturating_sub(seen), Ordering::Relaxed);
                    seen = read;
                };
                prepare_file_into(plan, path, ingest, now_ms, reading, &mut delta, &mut report)
                    .map_err(|f| in_file_failure(f, path))?;
            }
            Unit::Range(f, a, b) => {
                let path = &paths[f];
                let mut report = |bytes: u64| {
                    done.fetch_add(bytes, Ordering::Relaxed);
                };
                prepare_ndjson_range(plan, path, (a, b), ingest, now_ms, &mut delta, &mut report)
                    .map_err(|e| in_file(e, path))?;
            }
            Unit::ArrayRange(f, a, b, len) => {
                let path = &paths[f];
                let mut report = |bytes: u64| {
                    done.fetch_add(bytes, Ordering::Relaxed);
                };
                prepare_array_range(
                    plan,
                    path,
                    (a, b),
                    len,
                    ingest,
                    now_ms,
                    reading,
                    &mut delta,
                    &mut report,
                )
                .map_err(|f| in_file_failure(f, path))?;
            }
        }
    }
    Ok(delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FilterDef, IngestDef};
    use crate::engine::EngineState;
    use serde_json::json;
    use std::io::Write;

    fn plan() -> Plan {
        let ingest = IngestDef::from_json(&json!({
            "id": "i", "name": "i", "schema": "NEWLINE_DELIMITED",
            "timestamp": {"source": "PROPERTY", "path": "$.t", "format": "UNIX_MILLISECONDS"},
        }))
        .expect("ingest");
        let filter = FilterDef::from_json(&json!({
            "id": "f", "name": "f", "filter": "", "intervalType": "MINUTE", "intervalCount": 1,
            "groupingItems": [{"grouping": "$.k", "alias": null}],
            "aggregations": [{"id": 1, "name": "a", "calculations": ["COUNT", "SUM", "MAX"],
                              "calculationField": "$.v", "subFilter": null}],
        }))
        .expect("filter");
        Plan::new(vec![ingest], vec![filter]).expect("plan")
    }

    fn write_lines(dir: &std::path::Path, name: &str, lines: usize, seed: usize) -> String {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("create");
        for i in 0..lines {
            let n = i * 7 + seed;
            writeln!(
                f,
                "{{\"t\":{},\"k\":\"k{}\",\"v\":{}}}",
                (n % 50) * 60_000,
                n % 13,
                n % 101
            )
            .expect("write");
        }
        path.to_string_lossy().into_owned()
    }

    fn sequential(plan: &Plan, paths: &[String]) -> EngineState {
        let mut store = EngineState::default();
        store.sync(plan);
        for p in paths {
            let d = crate::file::prepare_file(plan, p, 0, 0, &mut |_, _| {}).expect("file");
            store.apply(plan, d).expect("apply");
        }
        store
    }

    fn cells(plan: &Plan, store: &EngineState) -> Vec<(i64, Vec<u8>, u64, u64, u64)> {
        let _ = plan;
        let s = &store.states["f"];
        let mut out: Vec<_> = (0..s.rows())
            .map(|r| {
                let a = &s.aggs[0];
                (
                    s.row_bucket[r],
                    s.groups.key(s.row_group[r]).to_vec(),
                    a.matched[r],
                    a.sum[r].to_bits(),
                    a.max[r].to_bits(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn parallel_files_and_ranges_equal_sequential_ingestion() {
        let dir = std::env::temp_dir().join(format!("et-par-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let plan = plan();
        let mut paths: Vec<String> = (0..5)
            .map(|i| write_lines(&dir, &format!("p{i}.ndjson"), 2000 + i * 10, i))
            .collect();
        // One file big enough to be split into ranges.
        let big_lines = 40_000;
        paths.push(write_lines(&dir, "big.ndjson", big_lines, 3));
        let split = Split {
            at: 512 << 10,
            min_part: 64 << 10,
            reading: Reading::GUESS,
        };
        let (units, _) = plan_units(&paths, 3, split, Cuts::Guess).expect("units");
        assert!(
            units
                .iter()
                .filter(|u| matches!(u, Unit::Range(..)))
                .count()
                > 1
        );
        let expected = sequential(&plan, &paths);
        for threads in [1, 2, 3] {
            let mut polls = 0;
            let delta = prepare_files_split(&plan, &paths, 0, 0, threads, split, &mut |_, _| {
                polls += 1;
                true
            })
            .expect("parallel")
            .expect("not cancelled");
            assert!(polls >= 1);
            let mut store = EngineState::default();
            store.sync(&plan);
            let events = delta.stats.events;
            store.apply(&plan, delta).expect("apply");
            assert_eq!(
                cells(&plan, &store),
                cells(&plan, &expected),
                "threads={threads}"
            );
            assert_eq!(
                events,
                (0..5).map(|i| 2000 + i * 10).sum::<usize>() as u64 + big_lines as u64
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_error_names_the_file_and_the_offset() {
        let dir = std::env::temp_dir().join(format!("et-par-err-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = write_lines(&dir, "good.ndjson", 100, 0);
        let bad = dir.join("bad.ndjson");
        std::fs::write(&bad, b"{\"t\":1}\n{\"t\":\n").expect("write");
        let bad = bad.to_string_lossy().into_owned();
        let err = prepare_files(&plan(), &[good, bad.clone()], 0, 0, 2, &mut |_, _| true)
            .expect_err("malformed");
        match err {
            Error::Json { offset, reason } => {
                assert!(reason.contains(&bad), "{reason}");
                assert!((8..=15).contains(&offset), "offset {offset} is on line 2");
            }
            other => panic!("unexpected {other}"),
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn line_boundaries_start_at_line_starts() {
        let dir = std::env::temp_dir().join(format!("et-par-lb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = write_lines(&dir, "x.ndjson", 1000, 1);
        let bytes = std::fs::read(&p).expect("read");
        let ranges = line_boundaries(&p, bytes.len() as u64, 7, 100).expect("ranges");
        assert_eq!(ranges.first().expect("one").0, 0);
        assert_eq!(ranges.last().expect("one").1, bytes.len() as u64);
        for w in ranges.windows(2) {
            assert_eq!(w[0].1, w[1].0);
            assert_eq!(bytes[w[1].0 as usize - 1], b'\n');
        }
        assert!(ranges.len() > 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Events of the test plan, some with strings that look like structure.
    fn array_events(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let tricky = match i % 4 {
                    0 => r#""},{\"k\":\"zz\"},[""#.to_owned(),
                    1 => r#""a,b\\""#.to_owned(),
                    2 => format!(
                        r#"{{"deep":[{{"x":[1,2,{{"y":"{}"}}]}}]}}"#,
                        "p".repeat(i % 50)
                    ),
                    _ => "null".to_owned(),
                };
                format!(
                    r#"{{"t":{},"k":"k{}","v":{},"s":{tricky}}}"#,
                    (i % 50) * 60_000,
                    i % 13,
                    i % 101
                )
            })
            .collect()
    }

    /// Small chunks and guesses, so little data crosses many cuts.
    const SMALL: Reading = Reading {
        cuts: Cuts::Guess,
        chunk: 64 << 10,
        window: 8 << 10,
    };

    const SMALL_SPLIT: Split = Split {
        at: 256 << 10,
        min_part: 64 << 10,
        reading: SMALL,
    };

    fn in_memory(plan: &Plan, data: &[u8]) -> EngineState {
        let mut d = plan.empty_delta();
        plan.prepare_chunk(data, 0, crate::config::Schema::ArrayOfEvents, 0, 0, &mut d)
            .expect("in memory");
        let mut store = EngineState::default();
        store.sync(plan);
        store.apply(plan, d).expect("apply");
        store
    }

    fn memory_error(plan: &Plan, data: &[u8]) -> (usize, String) {
        let mut d = plan.empty_delta();
        match plan.prepare_chunk(data, 0, crate::config::Schema::ArrayOfEvents, 0, 0, &mut d) {
            Err(Error::Json { offset, reason }) => (offset, reason),
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn array_files_one_line_and_multi_line_equal_in_memory_ingest() {
        let dir = std::env::temp_dir().join(format!("et-par-arr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let plan = plan();
        let events = array_events(30_000);
        let one_line = format!("[{}]", events.join(","));
        let multi = format!("\u{feff}[\n  {}\n]\n", events.join(",\n  "));
        assert!(one_line.len() > 20 * SMALL.chunk, "{}", one_line.len());
        let split = SMALL_SPLIT;
        for (name, body) in [("one.json", &one_line), ("multi.json", &multi)] {
            let path = dir.join(name).to_string_lossy().into_owned();
            std::fs::write(&path, body).expect("write");
            let expected = cells(&plan, &in_memory(&plan, body.as_bytes()));
            // The guessed cuts hold on this data: no exact pass was needed.
            let mut delta = plan.empty_delta();
            crate::file::prepare_file_into(&plan, &path, 0, 0, SMALL, &mut delta, &mut |_, _| {})
                .expect("guessed cuts hold");
            assert_eq!(delta.stats.events, 30_000);
            let mut store = EngineState::default();
            store.sync(&plan);
            store.apply(&plan, delta).expect("apply");
            assert_eq!(cells(&plan, &store), expected, "{name} sequential");
            let (units, _) =
                plan_units(std::slice::from_ref(&path), 2, split, Cuts::Guess).expect("units");
            assert!(units.len() > 2, "{name}: {units:?}");
            for threads in [1, 2, 3] {
                let mut cut = 0;
                let delta = run_units(
                    &plan,
                    std::slice::from_ref(&path),
                    0,
                    0,
                    threads,
                    split,
                    Cuts::Guess,
                    &mut |_, _| {
                        cut += 1;
                        true
                    },
                )
                .expect("guessed ranges hold")
                .expect("not cancelled");
                let mut store = EngineState::default();
                store.sync(&plan);
                store.apply(&plan, delta).expect("apply");
                assert_eq!(cells(&plan, &store), expected, "{name} threads={threads}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn guesses_that_fail_fall_back_to_exact_cuts() {
        // Elements far larger than the guess window, each an array of objects: a guess inside
        // one picks an inner comma, which the scanner refuses; the exact pass answers.
        let dir = std::env::temp_dir().join(format!("et-par-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let plan = plan();
        let inner: Vec<String> = (0..2_000)
            .map(|i| format!(r#"{{"q":{i},"r":"x"}}"#))
            .collect();
        let big = format!(
            r#"{{"t":60000,"k":"big","v":1,"pad":[{}]}}"#,
            inner.join(",")
        );
        let mut events = array_events(2000);
        for i in (0..events.len()).step_by(250) {
            events[i] = big.clone();
        }
        let body = format!("[{}]", events.join(","));
        let path = dir.join("big.json").to_string_lossy().into_owned();
        std::fs::write(&path, &body).expect("write");
        let expected = cells(&plan, &in_memory(&plan, body.as_bytes()));
        let mut delta = plan.empty_delta();
        let guessed =
            crate::file::prepare_file_into(&plan, &path, 0, 0, SMALL, &mut delta, &mut |_, _| {});
        assert!(matches!(guessed, Err(Failure::Guessed(_))), "{guessed:?}");
        let delta = crate::file::prepare_file_with(&plan, &path, 0, 0, SMALL, &mut |_, _| {})
            .expect("file");
        let mut store = EngineState::default();
        store.sync(&plan);
        store.apply(&plan, delta).expect("apply");
        assert_eq!(cells(&plan, &store), expected);
        let split = SMALL_SPLIT;
        let delta = prepare_files_split(&plan, &[path], 0, 0, 2, split, &mut |_, _| true)
            .expect("parallel")
            .expect("not cancelled");
        let mut store = EngineState::default();
        store.sync(&plan);
        store.apply(&plan, delta).expect("apply");
        assert_eq!(cells(&plan, &store), expected);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn array_file_errors_keep_exact_offsets() {
        let dir = std::env::temp_dir().join(format!("et-par-aerr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let plan = plan();
        let events = array_events(8_000);
        let good = format!("[\n{}\n]", events.join(",\n"));
        let path = dir.join("bad.json").to_string_lossy().into_owned();
        let split = SMALL_SPLIT;
        let len = good.len();
        let chunk = SMALL.chunk;
        // Damage near a chunk end, in the middle, at a comma and in the last element.
        for at in [chunk - 3, chunk + 17, len / 2, len - 40] {
            for damage in [b'#', b',', b']', b'"'] {
                let mut body = good.clone().into_bytes();
                body[at] = damage;
                let mut d = plan.empty_delta();
                let schema = crate::config::Schema::ArrayOfEvents;
                if plan.prepare_chunk(&body, 0, schema, 0, 0, &mut d).is_ok() {
                    continue; // this damage happens to stay valid JSON
                }
                let want = memory_error(&plan, &body);
                std::fs::write(&path, &body).expect("write");
                let got =
                    match crate::file::prepare_file_with(&plan, &path, 0, 0, SMALL, &mut |_, _| {})
                    {
                        Err(Error::Json { offset, reason }) => (offset, reason),
                        other => panic!("at {at}: expected a JSON error, got {other:?}"),
                    };
                assert_eq!(got, want, "at {at} damage {}", char::from(damage));
                match prepare_files_split(
                    &plan,
                    std::slice::from_ref(&path),
                    0,
                    0,
                    2,
                    split,
                    &mut |_, _| true,
                ) {
                    Err(Error::Json { offset, .. }) => {
                        assert_eq!(offset, want.0, "parallel at {at}");
                    }
                    other => panic!("at {at}: expected a JSON error, got {other:?}"),
                }
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_file_truncated_while_read_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("et-par-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let plan = plan();
        let events = array_events(10_000);
        let array = format!("[{}]", events.join(","));
        let ndjson = events.join("\n");
        for (name, body) in [("t.json", &array), ("t.ndjson", &ndjson)] {
            let path = dir.join(name).to_string_lossy().into_owned();
            std::fs::write(&path, body).expect("write");
            let mut chunks = 0;
            // After the first chunk, the file loses its second half.
            let r = crate::file::prepare_file_with(&plan, &path, 0, 0, SMALL, &mut |_, _| {
                chunks += 1;
                if chunks == 1 {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .expect("open");
                    f.set_len(body.len() as u64 / 2).expect("truncate");
                }
            });
            match r {
                Err(Error::Io { reason, .. }) => {
                    assert!(reason.contains("changed while it was read"), "{reason}");
                }
                other => panic!("{name}: expected an Io error, got {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
