//! File ingestion: `.json`, `.ndjson`/`.jsonl` and their `.gz` forms (Segment's S3/GCS archives
//! are gzipped NDJSON), read in bounded memory.
//!
//! Guarantees: the file is read in chunks of at most [`CHUNK_BYTES`] plus one record, so memory is
//! bounded by the chunk size and the state, not the file size; a file is atomic like a batch (all
//! chunks go into one delta that the caller applies only when the whole file parsed); error
//! offsets are byte offsets into the decompressed file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use crate::config::Schema;
use crate::engine::{Delta, Plan};
use crate::error::{Error, Result};

/// Target size of one parsed chunk.
pub const CHUNK_BYTES: usize = 8 << 20;

/// How the file's records are laid out, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Ndjson,
    Json,
}

impl FileKind {
    // The name is lowercased first, so the suffix comparisons are case-insensitive.
    #[allow(clippy::case_sensitive_file_extension_comparisons)]
    pub fn from_path(path: &str) -> Result<(FileKind, bool)> {
        let lower = path.to_ascii_lowercase();
        let (stem, gz) = match lower.strip_suffix(".gz") {
            Some(s) => (s.to_owned(), true),
            None => (lower.clone(), false),
        };
        let kind = if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") {
            FileKind::Ndjson
        } else if stem.ends_with(".json") {
            FileKind::Json
        } else {
            return Err(Error::Config {
                field: "path".into(),
                reason: format!(
                    "{path:?}: unsupported file type; expected .json, .ndjson or .jsonl, optionally .gz"
                ),
            });
        };
        Ok((kind, gz))
    }
}

fn io_err(path: &str, e: &std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Reads `path` into a delta prepared by `plan`. `progress(done, total)` reports compressed
/// bytes read out of the file size after each chunk.
pub fn prepare_file(
    plan: &Plan,
    path: &str,
    ingest: usize,
    now_ms: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Delta> {
    let mut delta = plan.empty_delta();
    prepare_file_into(plan, path, ingest, now_ms, &mut delta, progress)?;
    Ok(delta)
}

/// Like [`prepare_file`], accumulating into `delta` (which may hold part of the file on error).
pub fn prepare_file_into(
    plan: &Plan,
    path: &str,
    ingest: usize,
    now_ms: i64,
    delta: &mut Delta,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    FileKind::from_path(path)?;
    let file = File::open(path).map_err(|e| io_err(path, &e))?;
    let total = file.metadata().map_or(0, |m| m.len());
    prepare_source_into(plan, path, file, total, ingest, now_ms, delta, progress)
}

/// Reads the bytes of a whole file already in memory (fetched from object storage, say) as
/// [`prepare_file`] reads a file: `name` decides the kind (`.ndjson`, `.json`, `.gz`, ...) and
/// is the path errors name.
pub fn prepare_file_bytes(
    plan: &Plan,
    name: &str,
    data: &[u8],
    ingest: usize,
    now_ms: i64,
) -> Result<Delta> {
    let mut delta = plan.empty_delta();
    prepare_source_into(
        plan,
        name,
        data,
        data.len() as u64,
        ingest,
        now_ms,
        &mut delta,
        &mut |_, _| {},
    )?;
    Ok(delta)
}

/// Reads `source`, the raw (maybe compressed) bytes of the file `path`, `total` bytes long.
#[allow(clippy::too_many_arguments)]
fn prepare_source_into(
    plan: &Plan,
    path: &str,
    source: impl Read,
    total: u64,
    ingest: usize,
    now_ms: i64,
    delta: &mut Delta,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let (kind, gz) = FileKind::from_path(path)?;
    let counter = CountingReader {
        inner: source,
        count: std::rc::Rc::new(std::cell::Cell::new(0)),
    };
    let read_so_far = counter.count.clone();
    let reader: Box<dyn Read + '_> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(counter))
    } else {
        Box::new(counter)
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let mut chunk_offset = 0usize;
    match kind {
        FileKind::Ndjson => {
            let mut report = |_chunk: u64| progress(read_so_far.get(), total);
            ndjson_chunks(
                plan,
                path,
                &mut reader,
                0,
                ingest,
                now_ms,
                delta,
                &mut report,
            )?;
        }
        FileKind::Json => {
            let mut splitter = ArraySplitter::default();
            let mut first = true;
            let mut buf = vec![0u8; 1 << 20];
            let mut is_array = None;
            let mut whole = Vec::new();
            loop {
                let n = reader.read(&mut buf).map_err(|e| io_err(path, &e))?;
                let data = &buf[..n];
                if first && n > 0 {
                    let lead = data.iter().position(|b| {
                        !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF
                    });
                    if let Some(p) = lead {
                        is_array = Some(data[p] == b'[');
                        first = false;
                    }
                }
                match is_array {
                    Some(true) => {
                        // Track structure over the new bytes, remembering the last separator
                        // between top-level elements; once enough is buffered, everything up to
                        // that separator becomes one batch.
                        let mut last_cut = None;
                        for (i, &b) in data.iter().enumerate() {
                            if splitter.push(b) {
                                last_cut = Some(whole.len() + i);
                            }
                        }
                        whole.extend_from_slice(data);
                        if let Some(cut) = last_cut.filter(|_| whole.len() >= CHUNK_BYTES) {
                            // `whole[..cut]` is "[" + whole elements; the comma at `cut` is dropped,
                            // so check here what the split would hide: an element on each side.
                            check_elements_around(&whole, cut, chunk_offset)?;
                            let mut batch = Vec::with_capacity(cut + 1);
                            batch.extend_from_slice(&whole[..cut]);
                            batch.push(b']');
                            plan.prepare_chunk(
                                &batch,
                                ingest,
                                Schema::ArrayOfEvents,
                                chunk_offset,
                                now_ms,
                                delta,
                            )?;
                            chunk_offset += cut;
                            let rest = whole.split_off(cut + 1);
                            whole.clear();
                            whole.push(b'[');
                            whole.extend_from_slice(&rest);
                            progress(read_so_far.get(), total);
                        }
                    }
                    Some(false) | None => whole.extend_from_slice(data),
                }
                if n == 0 {
                    break;
                }
                if is_array == Some(false) && whole.len() > 64 * CHUNK_BYTES {
                    return Err(Error::Limit {
                        reason: format!(
                            "{path}: a single JSON object larger than {} bytes",
                            64 * CHUNK_BYTES
                        ),
                    });
                }
            }
            if !whole.is_empty() {
                if chunk_offset > 0 {
                    // The last split comma needs an element after it, not the closing `]`.
                    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
                    if let Some(i) = whole[1..].iter().position(|b| !is_ws(b)) {
                        if whole[1 + i] == b']' {
                            return Err(Error::Json {
                                offset: chunk_offset + 1 + i,
                                reason: "unexpected character ']', expected a JSON value".into(),
                            });
                        }
                    }
                }
                let schema = match (is_array, plan.ingest_schema(ingest)) {
                    (Some(true), _) => Schema::ArrayOfEvents,
                    // An object file follows the ingest when it names an event-array property.
                    (_, Schema::ObjectWithArrayProperty) => Schema::ObjectWithArrayProperty,
                    _ => Schema::SingleObject,
                };
                plan.prepare_chunk(&whole, ingest, schema, chunk_offset, now_ms, delta)?;
            }
            progress(read_so_far.get(), total);
        }
    }
    Ok(())
}

/// Parses newline-delimited records from `reader` in chunks of about [`CHUNK_BYTES`] (whole
/// lines), the first byte at file offset `base`; `report(chunk_bytes)` runs after each chunk.
#[allow(clippy::too_many_arguments)]
fn ndjson_chunks(
    plan: &Plan,
    path: &str,
    reader: &mut dyn BufRead,
    base: usize,
    ingest: usize,
    now_ms: i64,
    delta: &mut Delta,
    report: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + (1 << 16));
    let mut chunk_offset = base;
    loop {
        chunk.clear();
        while chunk.len() < CHUNK_BYTES {
            let n = reader
                .read_until(b'\n', &mut chunk)
                .map_err(|e| io_err(path, &e))?;
            if n == 0 {
                break;
            }
        }
        if chunk.is_empty() {
            return Ok(());
        }
        plan.prepare_chunk(
            &chunk,
            ingest,
            Schema::NewlineDelimited,
            chunk_offset,
            now_ms,
            delta,
        )?;
        chunk_offset += chunk.len();
        report(chunk.len() as u64);
    }
}

/// Reads bytes `start..end` of an uncompressed NDJSON file (both line starts, from
/// [`line_boundaries`]) into `delta`; error offsets are offsets into the whole file.
/// `progress(bytes)` reports the bytes of each chunk once it is parsed.
pub fn prepare_ndjson_range(
    plan: &Plan,
    path: &str,
    range: (u64, u64),
    ingest: usize,
    now_ms: i64,
    delta: &mut Delta,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let (start, end) = range;
    let mut file = File::open(path).map_err(|e| io_err(path, &e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| io_err(path, &e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(end - start));
    let base = usize::try_from(start).map_err(|_| Error::Limit {
        reason: format!("{path}: offset {start} does not fit in memory addresses"),
    })?;
    ndjson_chunks(
        plan,
        path,
        &mut reader,
        base,
        ingest,
        now_ms,
        delta,
        &mut |chunk| progress(chunk),
    )
}

/// Splits an uncompressed file of `len` bytes into at most `parts` ranges of at least
/// `min_part` bytes that start at line starts (a range boundary moves forward to just after the
/// next newline), so each range holds whole records.
pub fn line_boundaries(
    path: &str,
    len: u64,
    parts: usize,
    min_part: u64,
) -> Result<Vec<(u64, u64)>> {
    use std::io::{Seek, SeekFrom};
    let parts = (parts as u64).clamp(1, (len / min_part.max(1)).max(1));
    let mut file = File::open(path).map_err(|e| io_err(path, &e))?;
    let mut cuts = vec![0u64];
    let mut buf = vec![0u8; 64 << 10];
    for i in 1..parts {
        let mut pos = (len / parts * i).max(*cuts.last().expect("non-empty"));
        file.seek(SeekFrom::Start(pos))
            .map_err(|e| io_err(path, &e))?;
        // Move forward to the byte after the next newline (or the end of the file).
        loop {
            let n = file.read(&mut buf).map_err(|e| io_err(path, &e))?;
            if n == 0 {
                pos = len;
                break;
            }
            if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                pos += i as u64 + 1;
                break;
            }
            pos += n as u64;
        }
        if pos >= len {
            break;
        }
        if pos > *cuts.last().expect("non-empty") {
            cuts.push(pos);
        }
    }
    cuts.push(len);
    Ok(cuts
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(a, b)| b > a)
        .collect())
}

/// At a split comma (`buf[cut]`), JSON needs a value before it (after the opening `[`) and a
/// value after it (not `]`). Only whitespace so far after it is fine: the next split or the
/// final batch sees what follows as its own first element, which this check runs on again.
fn check_elements_around(buf: &[u8], cut: usize, base: usize) -> Result<()> {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    if buf[1..cut].iter().all(is_ws) {
        return Err(Error::Json {
            offset: base + cut,
            reason: "unexpected character ',', expected a JSON value".into(),
        });
    }
    if let Some(i) = buf[cut + 1..].iter().position(|b| !is_ws(b)) {
        if matches!(buf[cut + 1 + i], b']' | b',') {
            return Err(Error::Json {
                offset: base + cut + 1 + i,
                reason: format!(
                    "unexpected character '{}', expected a JSON value",
                    char::from(buf[cut + 1 + i])
                ),
            });
        }
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Tracks JSON structure byte by byte to find commas between top-level array elements.
#[derive(Debug, Default)]
struct ArraySplitter {
    depth: u32,
    in_string: bool,
    escaped: bool,
}

impl ArraySplitter {
    /// Consumes one byte; returns whether it was a separator between top-level elements.
    #[inline]
    fn push(&mut self, b: u8) -> bool {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return false;
        }
        match b {
            b'"' => self.in_string = true,
            b'[' | b'{' => self.depth += 1,
            b']' | b'}' => self.depth = self.depth.saturating_sub(1),
            b',' => return self.depth == 1,
            _ => {}
        }
        false
    }
}
