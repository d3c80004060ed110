//! File ingestion: `.json`, `.ndjson`/`.jsonl` and their `.gz` forms (Segment's S3/GCS archives
//! are gzipped NDJSON), read in bounded memory.
//!
//! Guarantees:
//! - **No fresh copy of the file.** Bytes are read straight from the file (or the gzip decoder)
//!   into one reused buffer of about [`CHUNK_BYTES`]; a record that straddles a chunk's end is
//!   moved to the front of the buffer. Memory is the buffer (plus one record longer than it)
//!   and the state, never the file size. Files are not memory-mapped: a map of a file that is
//!   truncated while it is read raises `SIGBUS`, which cannot be ruled out from safe code.
//! - **A file that changes while it is read** is read as it was when it was opened, as far as
//!   its length goes: bytes appended later are not read, and a regular file that ends before
//!   the length it had when opened (truncated meanwhile) fails with an `Io` error saying so,
//!   never a crash and never a silently shorter ingest.
//! - A file is atomic like a batch: all chunks go into one delta that the caller applies only
//!   when the whole file parsed. Error offsets are byte offsets into the decompressed file and
//!   equal those of ingesting the whole file as one batch.
//! - **JSON array files** are cut into chunks at commas between top-level elements. The cut
//!   is found by looking at a small window near the chunk's end ([`guess_cut`]), not by
//!   tracking structure over every byte; the batch scanner then proves the guess (a chunk
//!   `[e1,...,ek]` that parses is only possible when the comma closed a top-level element, by
//!   induction from the file's start). If any chunk of a guessed file fails, the file is read
//!   again with cuts found by tracking every byte ([`ArraySplitter`]), and that exact pass
//!   gives the answer or the error; so a guess can only cost time, never change a result.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::config::Schema;
use crate::engine::{Delta, Plan};
use crate::error::{Error, Result};

/// Target size of one parsed chunk.
pub const CHUNK_BYTES: usize = 8 << 20;

/// How far [`guess_cut`] looks for a separator between top-level array elements.
pub const GUESS_WINDOW: usize = 256 << 10;

/// A guessed chunk that found no cut within this many chunk sizes gives up guessing.
const GUESS_LIMIT_CHUNKS: usize = 4;

/// A JSON file holding one object (not an array) may be at most this large.
const OBJECT_LIMIT: usize = 64 * CHUNK_BYTES;

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

/// How array files are cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cuts {
    /// Guess each cut from a window ([`guess_cut`]); the scanner proves it.
    Guess,
    /// Track structure over every byte ([`ArraySplitter`]).
    Exact,
}

/// How one read of a file goes: how array files are cut, and the sizes (tests shrink them to
/// cross many chunks with little data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub cuts: Cuts,
    /// Target size of one parsed chunk.
    pub chunk: usize,
    /// How far a guess looks for a separator.
    pub window: usize,
}

impl Reading {
    pub const GUESS: Reading = Reading {
        cuts: Cuts::Guess,
        chunk: CHUNK_BYTES,
        window: GUESS_WINDOW,
    };

    /// The same sizes with exact cuts.
    #[must_use]
    pub fn exact(self) -> Reading {
        Reading {
            cuts: Cuts::Exact,
            ..self
        }
    }
}

/// Why a read failed: an error that stands, or one that a guessed cut may have caused (the
/// exact pass decides).
#[derive(Debug)]
pub enum Failure {
    Error(Error),
    Guessed(Error),
}

impl Failure {
    #[must_use]
    pub fn into_error(self) -> Error {
        match self {
            Failure::Error(e) | Failure::Guessed(e) => e,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Error(e)
    }
}

/// Reads `path` into a delta prepared by `plan`. `progress(done, total)` reports compressed
/// bytes read out of the file size after each chunk (from 0 again if the file is read twice).
pub fn prepare_file(
    plan: &Plan,
    path: &str,
    ingest: usize,
    now_ms: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Delta> {
    prepare_file_with(plan, path, ingest, now_ms, Reading::GUESS, progress)
}

/// [`prepare_file`] starting with `reading`; after a [`Failure::Guessed`] the file is read
/// again with exact cuts.
pub fn prepare_file_with(
    plan: &Plan,
    path: &str,
    ingest: usize,
    now_ms: i64,
    reading: Reading,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Delta> {
    let mut delta = plan.empty_delta();
    match prepare_file_into(plan, path, ingest, now_ms, reading, &mut delta, progress) {
        Ok(()) => Ok(delta),
        Err(Failure::Error(e)) => Err(e),
        Err(Failure::Guessed(_)) => {
            let mut delta = plan.empty_delta();
            let exact = reading.exact();
            prepare_file_into(plan, path, ingest, now_ms, exact, &mut delta, progress)
                .map_err(Failure::into_error)?;
            Ok(delta)
        }
    }
}

/// Like [`prepare_file`] read as `reading` says, accumulating into `delta` (which may hold part
/// of the file on failure; after a `Failure::Guessed` the caller reads again with
/// `Cuts::Exact` into a fresh delta).
pub fn prepare_file_into(
    plan: &Plan,
    path: &str,
    ingest: usize,
    now_ms: i64,
    reading: Reading,
    delta: &mut Delta,
    progress: &mut dyn FnMut(u64, u64),
) -> std::result::Result<(), Failure> {
    FileKind::from_path(path)?;
    let file = File::open(path).map_err(|e| io_err(path, &e))?;
    let meta = file.metadata().map_err(|e| io_err(path, &e))?;
    let total = meta.len();
    // Only a regular file has a length to hold it to; a pipe or device is read to its end.
    let expect = meta.is_file().then_some(total);
    let source = Snapshot::new(file, expect, path);
    prepare_source_into(
        plan, path, source, total, ingest, now_ms, reading, delta, progress,
    )
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
    prepare_file_bytes_with(plan, name, data, ingest, now_ms, Reading::GUESS)
}

/// [`prepare_file_bytes`] starting with `reading` (its sizes are kept for the exact pass).
pub fn prepare_file_bytes_with(
    plan: &Plan,
    name: &str,
    data: &[u8],
    ingest: usize,
    now_ms: i64,
    first: Reading,
) -> Result<Delta> {
    let run = |reading: Reading| {
        let mut delta = plan.empty_delta();
        prepare_source_into(
            plan,
            name,
            data,
            data.len() as u64,
            ingest,
            now_ms,
            reading,
            &mut delta,
            &mut |_, _| {},
        )
        .map(|()| delta)
    };
    match run(first) {
        Ok(d) => Ok(d),
        Err(Failure::Error(e)) => Err(e),
        Err(Failure::Guessed(_)) => run(first.exact()).map_err(Failure::into_error),
    }
}

/// What one run over a source needs besides the bytes.
struct Ctx<'a> {
    plan: &'a Plan,
    path: &'a str,
    ingest: usize,
    now_ms: i64,
    reading: Reading,
}

impl Ctx<'_> {
    fn parse(&self, data: &[u8], schema: Schema, base: usize, delta: &mut Delta) -> Result<()> {
        self.plan
            .prepare_chunk(data, self.ingest, schema, base, self.now_ms, delta)
    }
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
    reading: Reading,
    delta: &mut Delta,
    progress: &mut dyn FnMut(u64, u64),
) -> std::result::Result<(), Failure> {
    let (kind, gz) = FileKind::from_path(path)?;
    let counter = CountingReader {
        inner: source,
        count: std::rc::Rc::new(std::cell::Cell::new(0)),
    };
    let read_so_far = counter.count.clone();
    let mut reader: Box<dyn Read + '_> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(counter))
    } else {
        Box::new(counter)
    };
    let ctx = Ctx {
        plan,
        path,
        ingest,
        now_ms,
        reading,
    };
    let mut buf = ChunkBuf::new(reading.chunk);
    let mut report = |_reached: usize| progress(read_so_far.get(), total);
    match kind {
        FileKind::Ndjson => ndjson_chunks(&ctx, &mut reader, &mut buf, 0, delta, &mut report)?,
        FileKind::Json => {
            // Read until the first value's first byte says array or object.
            let lead = loop {
                let start = buf.filled;
                let eof = buf.fill(&mut reader, start + (1 << 16), path)?;
                let skip = |b: &&u8| b.is_ascii_whitespace() || matches!(**b, 0xEF | 0xBB | 0xBF);
                if let Some(p) = buf.data()[start..].iter().position(|b| !skip(&b)) {
                    break Some(start + p);
                }
                if eof {
                    break None;
                }
            };
            if lead.is_some_and(|p| buf.data()[p] == b'[') {
                let shape = Shape {
                    base: 0,
                    first_is_cut: false,
                    last_is_cut: false,
                };
                array_chunks(&ctx, &mut reader, &mut buf, shape, delta, &mut report)?;
            } else {
                // One object: the whole file is one batch.
                while !buf.fill(&mut reader, buf.filled + reading.chunk, path)? {
                    if buf.filled > OBJECT_LIMIT {
                        return Err(Error::Limit {
                            reason: format!(
                                "{path}: a single JSON object larger than {OBJECT_LIMIT} bytes"
                            ),
                        }
                        .into());
                    }
                }
                if buf.filled > 0 {
                    let schema = match plan.ingest_schema(ingest) {
                        // An object file follows the ingest when it names an event-array property.
                        Schema::ObjectWithArrayProperty => Schema::ObjectWithArrayProperty,
                        _ => Schema::SingleObject,
                    };
                    ctx.parse(buf.data(), schema, 0, delta)?;
                }
                report(buf.filled);
            }
        }
    }
    Ok(())
}

/// The reused read buffer: `buf[..filled]` holds file bytes; `buf` only grows (zeroed once),
/// so refills write into memory that is already there.
struct ChunkBuf {
    buf: Vec<u8>,
    filled: usize,
    chunk: usize,
}

impl ChunkBuf {
    fn new(chunk: usize) -> ChunkBuf {
        ChunkBuf {
            buf: Vec::new(),
            filled: 0,
            chunk,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// Reads until at least `target` bytes are held or the source ends; returns whether it
    /// ended.
    fn fill(&mut self, src: &mut dyn Read, target: usize, path: &str) -> Result<bool> {
        if self.buf.len() < target {
            // Grow to the chunk size at once so a file costs one allocation.
            self.buf.resize(target.max(self.chunk + (1 << 16)), 0);
        }
        while self.filled < target {
            match src.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Ok(true),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(path, &e)),
            }
        }
        Ok(false)
    }

    /// Drops `buf[..n]`, moving the rest to the front.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }
}

/// Parses newline-delimited records from `reader` in chunks of about [`CHUNK_BYTES`] (whole
/// lines), the first byte at file offset `base`; `report(offset)` runs after each chunk with
/// the file offset parsed up to.
fn ndjson_chunks(
    ctx: &Ctx<'_>,
    reader: &mut dyn Read,
    buf: &mut ChunkBuf,
    base: usize,
    delta: &mut Delta,
    report: &mut dyn FnMut(usize),
) -> Result<()> {
    let chunk = ctx.reading.chunk;
    let mut offset = base;
    let mut target = chunk;
    loop {
        let eof = buf.fill(reader, target, ctx.path)?;
        if eof {
            if buf.filled > 0 {
                ctx.parse(buf.data(), Schema::NewlineDelimited, offset, delta)?;
                report(offset + buf.filled);
            }
            return Ok(());
        }
        match memchr::memrchr(b'\n', buf.data()) {
            Some(nl) => {
                ctx.parse(&buf.data()[..=nl], Schema::NewlineDelimited, offset, delta)?;
                offset += nl + 1;
                buf.consume(nl + 1);
                target = chunk;
                report(offset);
            }
            // One line longer than the buffer: read on until it ends.
            None => target = buf.filled + chunk,
        }
    }
}

/// Where a run of array bytes sits in its file.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// File offset of the first byte read.
    base: usize,
    /// The first byte is a separator comma (a range after a cut), read as `[`.
    first_is_cut: bool,
    /// The last byte is a separator comma (a range before a cut), read as `]`.
    last_is_cut: bool,
}

/// Parses a top-level JSON array from `buf` and then `reader` in chunks cut at separators
/// between elements; each chunk is read as `[e1,...,ek]`, the separator commas standing in
/// for the brackets so every offset stays a file offset.
#[allow(clippy::too_many_arguments)]
fn array_chunks(
    ctx: &Ctx<'_>,
    reader: &mut dyn Read,
    buf: &mut ChunkBuf,
    shape: Shape,
    delta: &mut Delta,
    report: &mut dyn FnMut(usize),
) -> std::result::Result<(), Failure> {
    let path = ctx.path;
    let Reading {
        cuts,
        chunk,
        window,
    } = ctx.reading;
    let mut offset = shape.base;
    // Whether the chunk in `buf` starts at a cut: its first byte is a comma, read as `[`.
    let mut at_cut = shape.first_is_cut;
    let mut splitter = ArraySplitter::default();
    // Exact cuts: bytes of `buf` the splitter has seen, and the last separator among them.
    let mut scanned = 0usize;
    let mut last_sep: Option<usize> = None;
    let mut guessed = false;
    let mut target = chunk;
    // A failure once a guess was made may come from the guess.
    let fail = |guessed: bool, e: Error| {
        if guessed && !matches!(e, Error::Io { .. }) {
            Failure::Guessed(e)
        } else {
            Failure::Error(e)
        }
    };
    loop {
        let eof = buf
            .fill(reader, target, path)
            .map_err(|e| fail(guessed, e))?;
        if at_cut && buf.filled > 0 {
            buf.buf[0] = b'[';
        }
        if eof {
            if buf.filled == 0 {
                return Ok(());
            }
            let end = buf.filled - 1;
            let mut check = Ok(());
            if at_cut {
                check = check_after_cut(buf.data(), 0, offset);
            }
            if shape.last_is_cut {
                check = check.and_then(|()| check_before_cut(buf.data(), end, offset, at_cut));
                buf.buf[end] = b']';
            }
            let guessed = guessed || shape.first_is_cut || shape.last_is_cut;
            let parsed = ctx.parse(buf.data(), Schema::ArrayOfEvents, offset, delta);
            first_error(check, parsed).map_err(|e| fail(guessed, e))?;
            report(offset + buf.filled);
            return Ok(());
        }
        let cut = match cuts {
            Cuts::Exact => {
                if let Some(i) = splitter.scan_last(&buf.data()[scanned..]) {
                    last_sep = Some(scanned + i);
                }
                scanned = buf.filled;
                last_sep
            }
            Cuts::Guess => {
                let from = buf.filled.saturating_sub(window).max(1);
                let found = guess_cut(buf.data(), from, window);
                if found.is_none() && buf.filled >= GUESS_LIMIT_CHUNKS * chunk {
                    return Err(Failure::Guessed(Error::Limit {
                        reason: format!("{path}: no separator found near offset {offset}"),
                    }));
                }
                found
            }
        };
        let Some(cut) = cut else {
            // One element longer than the buffer (or none found): read on.
            target = buf.filled + chunk;
            continue;
        };
        guessed |= cuts == Cuts::Guess;
        let mut check = Ok(());
        if at_cut {
            check = check_after_cut(buf.data(), 0, offset);
        }
        let check = check
            .and_then(|()| check_before_cut(buf.data(), cut, offset, at_cut))
            .and_then(|()| check_after_cut(buf.data(), cut, offset));
        buf.buf[cut] = b']';
        let parsed = ctx.parse(&buf.data()[..=cut], Schema::ArrayOfEvents, offset, delta);
        first_error(check, parsed).map_err(|e| fail(guessed || shape.first_is_cut, e))?;
        offset += cut;
        buf.consume(cut);
        at_cut = true;
        scanned -= cut.min(scanned);
        last_sep = None;
        target = chunk;
        report(offset);
    }
}

/// Of a separator check and the chunk's parse, the error that comes first in the file: a
/// check looks at bytes around the cut, and the chunk may hold an earlier error (one batch
/// would report that one).
fn first_error(check: Result<()>, parsed: Result<()>) -> Result<()> {
    let at = |e: &Error| match e {
        Error::Json { offset, .. } | Error::Format { offset, .. } => Some(*offset),
        _ => None,
    };
    match (check, parsed) {
        (Ok(()), parsed) => parsed,
        (Err(c), Err(p)) if at(&p).is_none_or(|p| at(&c).is_none_or(|c| p < c)) => Err(p),
        (Err(c), _) => Err(c),
    }
}

const fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A cut at `cut` needs an element before it: some byte after the chunk's opening bracket
/// (the first byte when the chunk starts at a cut; else the first `[` after a BOM and
/// whitespace).
fn check_before_cut(buf: &[u8], cut: usize, base: usize, at_cut: bool) -> Result<()> {
    let open = if at_cut {
        0
    } else {
        buf.iter().position(|&b| b == b'[').unwrap_or(0)
    };
    if open < cut && buf[open + 1..cut].iter().all(|&b| is_ws(b)) {
        return Err(Error::Json {
            offset: base + cut,
            reason: "unexpected character ',', expected a JSON value".into(),
        });
    }
    Ok(())
}

/// The separator at `cut` needs an element after it, not `]` or another `,`. Only whitespace
/// so far is fine: the next chunk sees what follows as its own first element.
fn check_after_cut(buf: &[u8], cut: usize, base: usize) -> Result<()> {
    if let Some(i) = buf[cut + 1..].iter().position(|&b| !is_ws(b)) {
        let b = buf[cut + 1 + i];
        if matches!(b, b']' | b',') {
            return Err(Error::Json {
                offset: base + cut + 1 + i,
                reason: format!(
                    "unexpected character '{}', expected a JSON value",
                    char::from(b)
                ),
            });
        }
    }
    Ok(())
}

/// Guesses a comma between top-level elements of a JSON array at or after `from` in `buf`,
/// looking at most `window` bytes. The guess needs no state from before `from`:
/// - Where it starts, it is outside any string: just after a newline (a valid JSON string
///   holds no raw newline), or, on a line without one, by which of the two readings of the
///   quotes (outside or inside a string at `from`) puts every opening quote after one of
///   `{[,:` and every closing quote before one of `:,}]`.
/// - Top-level separators are the commas at the lowest depth seen in the window (the array's
///   own level lies between any two elements).
///
/// A wrong guess (an element larger than the window, say) is caught by the scanner.
#[must_use]
pub fn guess_cut(buf: &[u8], from: usize, window: usize) -> Option<usize> {
    let end = buf.len().min(from.saturating_add(window));
    if from >= end {
        return None;
    }
    let window = &buf[from..end];
    let (start, in_string) = if let Some(nl) = memchr::memchr(b'\n', window) {
        (from + nl + 1, false)
    } else {
        // A byte after a backslash may be escaped; start where none precedes.
        let mut s = from;
        while s < end && (buf[s - 1] == b'\\' || buf[s] == b'\\') {
            s += 1;
        }
        (s, quotes_say_inside(&buf[s..end])?)
    };
    let mut sp = ArraySplitter {
        depth: 1 << 20,
        in_string,
        escaped: false,
    };
    let mut best: Option<(u32, usize)> = None;
    for (i, &b) in buf[start..end].iter().enumerate() {
        if sp.in_string {
            sp.push(b);
            continue;
        }
        // The last comma at the lowest depth: the less is left to move to the next chunk.
        if b == b',' && best.is_none_or(|(d, _)| sp.depth <= d) {
            best = Some((sp.depth, start + i));
        }
        sp.push(b);
    }
    best.map(|(_, at)| at)
}

/// Whether `window` starts inside a string, judged by where its unescaped quotes stand; `None`
/// when both readings fit (or neither does).
fn quotes_say_inside(window: &[u8]) -> Option<bool> {
    let prev_ok = |p: usize| {
        window[..p]
            .iter()
            .rev()
            .find(|&&b| !is_ws(b))
            .is_none_or(|&b| matches!(b, b'{' | b'[' | b',' | b':'))
    };
    let next_ok = |p: usize| {
        window[p + 1..]
            .iter()
            .find(|&&b| !is_ws(b))
            .is_none_or(|&b| matches!(b, b':' | b',' | b'}' | b']'))
    };
    // Violations when the first quote opens (outside at the start) and when it closes.
    let (mut outside_bad, mut inside_bad, mut quotes) = (0u32, 0u32, 0usize);
    let mut backslashes = 0usize;
    for (p, &b) in window.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if b == b'"' && backslashes % 2 == 0 {
            let opens_if_outside = quotes % 2 == 0;
            let (as_open, as_close) = (!prev_ok(p), !next_ok(p));
            if opens_if_outside {
                outside_bad += u32::from(as_open);
                inside_bad += u32::from(as_close);
            } else {
                outside_bad += u32::from(as_close);
                inside_bad += u32::from(as_open);
            }
            quotes += 1;
            if quotes >= 64 {
                break;
            }
        }
        backslashes = 0;
    }
    match (outside_bad == 0, inside_bad == 0) {
        (true, false) => Some(false),
        (false, true) => Some(true),
        _ if quotes == 0 => Some(false),
        _ => None,
    }
}

/// Whether the uncompressed `.json` file `path` holds an array: its first byte after a BOM and
/// whitespace is `[`.
pub fn starts_array(path: &str) -> Result<bool> {
    let mut file = File::open(path).map_err(|e| io_err(path, &e))?;
    let mut head = [0u8; 4096];
    loop {
        let n = match file.read(&mut head) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path, &e)),
        };
        if n == 0 {
            return Ok(false);
        }
        let skip = |b: &u8| is_ws(*b) || matches!(*b, 0xEF | 0xBB | 0xBF);
        if let Some(p) = head[..n].iter().position(|b| !skip(b)) {
            return Ok(head[p] == b'[');
        }
    }
}

/// Finds a comma between top-level elements in the array file `path` at or after each of
/// `parts - 1` evenly spaced offsets, so each range between two of them holds whole elements
/// (`(a, b)`: `a` is 0 or a separator, `b` a separator or `len`). The cuts are guesses, proved
/// when the ranges parse.
pub fn array_boundaries(
    path: &str,
    len: u64,
    parts: usize,
    min_part: u64,
    window: usize,
) -> Result<Vec<(u64, u64)>> {
    let parts = (parts as u64).clamp(1, (len / min_part.max(1)).max(1));
    let mut file = File::open(path).map_err(|e| io_err(path, &e))?;
    let mut cuts = vec![0u64];
    let look = window;
    let mut window = vec![0u8; look + 1];
    for i in 1..parts {
        // Start one byte early so the guess may look at the byte before.
        let pos = (len / parts * i).max(*cuts.last().expect("non-empty") + 1);
        if pos + 1 >= len {
            break;
        }
        file.seek(SeekFrom::Start(pos - 1))
            .map_err(|e| io_err(path, &e))?;
        let mut n = 0;
        while n < window.len() {
            match file.read(&mut window[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(path, &e)),
            }
        }
        if let Some(c) = guess_cut(&window[..n], 1, look) {
            let at = pos - 1 + c as u64;
            if at > *cuts.last().expect("non-empty") && at + 1 < len {
                cuts.push(at);
            }
        }
    }
    cuts.push(len);
    Ok(cuts.windows(2).map(|w| (w[0], w[1])).collect())
}

/// Reads bytes `start..end` of an uncompressed array file (from [`array_boundaries`]) into
/// `delta`: the comma at `start` (unless 0) reads as `[`, the comma at `end` (unless the end
/// of the file) as `]`. Every failure is [`Failure::Guessed`] (the cuts are guesses).
#[allow(clippy::too_many_arguments)]
pub fn prepare_array_range(
    plan: &Plan,
    path: &str,
    range: (u64, u64),
    len: u64,
    ingest: usize,
    now_ms: i64,
    reading: Reading,
    delta: &mut Delta,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<(), Failure> {
    let (start, end) = range;
    let last_is_cut = end < len;
    let stop = if last_is_cut { end + 1 } else { end };
    let (mut source, base) = open_range(path, start, stop)?;
    let ctx = Ctx {
        plan,
        path,
        ingest,
        now_ms,
        reading,
    };
    let mut buf = ChunkBuf::new(reading.chunk);
    let mut seen = start;
    let mut report = |reached: usize| {
        progress((reached as u64).saturating_sub(seen));
        seen = seen.max(reached as u64);
    };
    let shape = Shape {
        base,
        first_is_cut: start > 0,
        last_is_cut,
    };
    let r = array_chunks(&ctx, &mut source, &mut buf, shape, delta, &mut report);
    match r {
        Ok(()) => {
            progress(stop.saturating_sub(seen));
            Ok(())
        }
        Err(Failure::Error(e @ Error::Io { .. })) => Err(Failure::Error(e)),
        Err(f) => Err(Failure::Guessed(f.into_error())),
    }
}

/// Bytes `start..stop` of the file at `path`, held to that length, and `start` as the base of
/// error offsets.
fn open_range(path: &str, start: u64, stop: u64) -> Result<(Snapshot<File>, usize)> {
    let mut file = File::open(path).map_err(|e| io_err(path, &e))?;
    file.seek(SeekFrom::Start(start))
        .map_err(|e| io_err(path, &e))?;
    let base = usize::try_from(start).map_err(|_| Error::Limit {
        reason: format!("{path}: offset {start} does not fit in memory addresses"),
    })?;
    Ok((Snapshot::new(file, Some(stop - start), path), base))
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
    let (start, end) = range;
    let (mut source, base) = open_range(path, start, end)?;
    let ctx = Ctx {
        plan,
        path,
        ingest,
        now_ms,
        reading: Reading::GUESS,
    };
    let mut buf = ChunkBuf::new(CHUNK_BYTES);
    let mut seen = start;
    ndjson_chunks(&ctx, &mut source, &mut buf, base, delta, &mut |reached| {
        progress((reached as u64).saturating_sub(seen));
        seen = seen.max(reached as u64);
    })
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

/// Holds a file to the length it had when opened: reads stop there, and an end before it
/// (the file was truncated meanwhile) is an error, not a silently shorter file.
struct Snapshot<R> {
    inner: R,
    left: Option<u64>,
    expected: u64,
    path: String,
}

impl<R: Read> Snapshot<R> {
    fn new(inner: R, len: Option<u64>, path: &str) -> Snapshot<R> {
        Snapshot {
            inner,
            left: len,
            expected: len.unwrap_or(0),
            path: path.to_owned(),
        }
    }
}

impl<R: Read> Read for Snapshot<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(left) = self.left else {
            return self.inner.read(buf);
        };
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(std::io::Error::other(format!(
                "{}: the file changed while it was read: it ended {} bytes short of the {} \
                 bytes it had when opened (truncated?)",
                self.path, left, self.expected
            )));
        }
        self.left = Some(left - n as u64);
        Ok(n)
    }
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
#[derive(Debug, Default, Clone)]
pub struct ArraySplitter {
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

    /// Consumes `data`; returns the index of its last top-level separator. Inside strings it
    /// jumps to the next quote or backslash.
    pub fn scan_last(&mut self, data: &[u8]) -> Option<usize> {
        let mut last = None;
        let mut i = 0;
        while i < data.len() {
            if self.in_string && !self.escaped {
                match memchr::memchr2(b'"', b'\\', &data[i..]) {
                    Some(k) => i += k,
                    None => return last,
                }
            }
            if self.push(data[i]) {
                last = Some(i);
            }
            i += 1;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_cuts(data: &[u8]) -> Vec<usize> {
        let mut sp = ArraySplitter::default();
        (0..data.len()).filter(|&i| sp.push(data[i])).collect()
    }

    #[test]
    fn scan_last_agrees_with_push() {
        let data = br#"[{"a":"x,\"y\\",b:[1,2]},{"c":"\\"},3,"s,"]"#;
        for split in 0..data.len() {
            let mut a = ArraySplitter::default();
            let (l, r) = data.split_at(split);
            let mut last = a.scan_last(l);
            if let Some(i) = a.scan_last(r) {
                last = Some(split + i);
            }
            assert_eq!(last, exact_cuts(data).last().copied(), "split {split}");
        }
    }

    #[test]
    fn guesses_land_on_top_level_commas() {
        let event = r#"{"type":"track","s":"a,b\"},{","context":{"x":[1,{"y":2}],"z":"q"}}"#;
        let one_line = format!("[{}]", vec![event; 200].join(","));
        let multi = format!("[\n  {}\n]", vec![event; 200].join(",\n  "));
        for data in [one_line.as_bytes(), multi.as_bytes()] {
            let exact = exact_cuts(data);
            for from in (1..data.len() - event.len() * 3).step_by(37) {
                if let Some(c) = guess_cut(data, from, GUESS_WINDOW) {
                    assert!(exact.contains(&c), "from {from}: {c} is not a separator");
                }
            }
        }
    }

    #[test]
    fn quote_readings() {
        assert_eq!(quotes_say_inside(br#"bc","d":"e"}"#), Some(true));
        assert_eq!(quotes_say_inside(br#","d":"e"}"#), Some(false));
        assert_eq!(quotes_say_inside(b"1,2,3"), Some(false));
    }
}
