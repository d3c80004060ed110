//! The engine: compiles definitions into an extraction plan, turns batches into deltas, and
//! merges deltas into the stored state.
//!
//! Guarantees:
//! - A batch is atomic: [`Plan::prepare`] reads the whole batch into a [`Delta`] without touching
//!   the state, and fails without side effects on malformed input. [`EngineState::apply`] fails only
//!   when a counter would overflow (checked by [`EngineState::check_apply`] before anything changes).
//! - Each event is scanned once; only the paths some filter, grouping, aggregation or timestamp
//!   reads are extracted (one path trie for the root event, one per flattened array).
//! - Everything dropped is counted by reason in [`IngestStats`].

use std::sync::Arc;

use hashbrown::HashMap;

use crate::batch::{decode_utf8, PathTrie, Scanner};
use crate::config::{Calc, FilterDef, IngestDef, OnInvalid, Schema, TimestampRule};
use crate::error::{Error, Result};
use crate::jpath::{Condition, Slot, SlotResolver};
use crate::path::{Path, Root};
use crate::state::{FilterState, GroupTable};
use crate::time::{unix_str_to_millis, unix_to_millis, Iso8601Parser, TimestampFormat};
use crate::value::Value;

/// Input bytes per row reserved up front for a batch ([`Plan::prepare_chunk`]): about one
/// event of the Segment shape (`benches/segment_gen.py`), nearly each of which opens a row of
/// minute buckets. A hint, not a limit: rows beyond it grow by doubling as before.
const EVENT_BYTES_HINT: usize = 1024;
/// Rows reserved for even the smallest batch (saves the first few doublings).
const MIN_ROWS_HINT: usize = 64;
/// At most this many rows are reserved up front, so a huge input does not claim memory for
/// rows it may not have.
const MAX_ROWS_HINT: usize = 1 << 20;

/// Paths of one scope (root event or a flattened element), deduplicated, with their trie.
#[derive(Debug, Clone, Default)]
struct Registry {
    index: HashMap<Path, u32>,
    trie: PathTrie,
}

impl Registry {
    fn slot(&mut self, path: &Path) -> u32 {
        // `@` and `$` address the same object within one scope.
        let key = Path::new(Root::Current, path.segments.clone());
        if let Some(&s) = self.index.get(&key) {
            return s;
        }
        let s = self.index.len() as u32;
        self.trie.insert(&key, s);
        self.index.insert(key, s);
        s
    }
    fn len(&self) -> usize {
        self.index.len()
    }
}

struct FilterResolver<'r> {
    root: &'r mut Registry,
    element: Option<&'r mut Registry>,
}

impl SlotResolver for FilterResolver<'_> {
    fn resolve(&mut self, path: &Path) -> Slot {
        match (&mut self.element, path.root) {
            (Some(elem), Root::Current) => Slot::Element(elem.slot(path)),
            _ => Slot::Root(self.root.slot(path)),
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledAgg {
    sub_filter: Option<Condition>,
    field: Option<Slot>,
    wants_numeric: bool,
    wants_distinct: bool,
}

#[derive(Debug, Clone)]
struct Flatten {
    array_slot: u32,
    registry: Registry,
}

/// A filter definition compiled against the plan's slots.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    pub def: FilterDef,
    condition: Condition,
    grouping_slots: Vec<Slot>,
    aggs: Vec<CompiledAgg>,
    flatten: Option<Flatten>,
}

#[derive(Debug, Clone)]
struct CompiledIngest {
    def: IngestDef,
    timestamp_slot: Option<u32>,
    array_trie: Option<PathTrie>,
}

/// Immutable compiled definitions: cheap to share between threads preparing batches.
#[derive(Debug, Clone)]
pub struct Plan {
    ingests: Vec<CompiledIngest>,
    filters: Vec<CompiledFilter>,
    root: Registry,
}

/// Per-filter ingest counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterStats {
    pub filter_id: String,
    pub matched: u64,
    pub flattened_elements: u64,
    pub flatten_not_array: u64,
    pub flatten_element_not_object: u64,
}

/// What one batch did, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Elements seen in the batch (events, nulls and non-objects).
    pub events: u64,
    /// Events evaluated against the filters.
    pub accepted: u64,
    pub not_object: u64,
    pub timestamp_invalid: u64,
    pub timestamp_fallback: u64,
    pub per_filter: Vec<FilterStats>,
}

impl IngestStats {
    pub fn add(&mut self, other: &IngestStats) {
        self.events += other.events;
        self.accepted += other.accepted;
        self.not_object += other.not_object;
        self.timestamp_invalid += other.timestamp_invalid;
        self.timestamp_fallback += other.timestamp_fallback;
        for f in &other.per_filter {
            if let Some(mine) = self
                .per_filter
                .iter_mut()
                .find(|m| m.filter_id == f.filter_id)
            {
                mine.matched += f.matched;
                mine.flattened_elements += f.flattened_elements;
                mine.flatten_not_array += f.flatten_not_array;
                mine.flatten_element_not_object += f.flatten_element_not_object;
            } else {
                self.per_filter.push(f.clone());
            }
        }
    }
}

/// The effect of one batch: per-filter states to merge, plus its stats.
#[derive(Debug, Clone)]
pub struct Delta {
    pub states: Vec<FilterState>,
    pub stats: IngestStats,
}

impl Delta {
    /// Folds `other` (prepared by the same plan) into this delta; refused, changing nothing,
    /// when a counter would overflow.
    pub fn absorb(&mut self, other: &Delta) -> Result<()> {
        for (s, o) in self.states.iter().zip(&other.states) {
            s.check_merge(o)?;
        }
        for (s, o) in self.states.iter_mut().zip(&other.states) {
            s.merge_from(o)?;
        }
        self.stats.add(&other.stats);
        Ok(())
    }
}

impl Plan {
    pub fn new(ingests: Vec<IngestDef>, filters: Vec<FilterDef>) -> Result<Plan> {
        for (i, a) in ingests.iter().enumerate() {
            if ingests[..i].iter().any(|b| b.id == a.id) {
                return Err(Error::Config {
                    field: format!("ingests[{i}].id"),
                    reason: format!("duplicate ingest id {:?}", a.id),
                });
            }
        }
        for (i, a) in filters.iter().enumerate() {
            if filters[..i].iter().any(|b| b.id == a.id) {
                return Err(Error::Config {
                    field: format!("filters[{i}].id"),
                    reason: format!("duplicate filter id {:?}", a.id),
                });
            }
        }
        let mut root = Registry::default();
        let ingests = ingests
            .into_iter()
            .map(|def| {
                let timestamp_slot = match &def.timestamp {
                    TimestampRule::Ingest => None,
                    TimestampRule::Property { path, .. } => Some(root.slot(path)),
                };
                let array_trie = def.array_path.as_ref().map(|(_, p)| {
                    let mut t = PathTrie::new();
                    t.insert(p, 0);
                    t
                });
                CompiledIngest {
                    def,
                    timestamp_slot,
                    array_trie,
                }
            })
            .collect();
        let mut compiled = Vec::with_capacity(filters.len());
        for def in filters {
            let mut flatten = def.flatten.as_ref().map(|(_, p)| Flatten {
                array_slot: root.slot(p),
                registry: Registry::default(),
            });
            let mut resolver = FilterResolver {
                root: &mut root,
                element: flatten.as_mut().map(|f| &mut f.registry),
            };
            let condition =
                Condition::compile(&def.filter, &mut resolver).map_err(|e| e.under("filter"))?;
            let grouping_slots = def
                .groupings
                .iter()
                .map(|g| resolver.resolve(&g.path))
                .collect();
            let mut aggs = Vec::new();
            for (i, a) in def.aggregations.iter().enumerate() {
                let sub_filter = match &a.sub_filter {
                    Some(src) => Some(
                        Condition::compile(src, &mut resolver)
                            .map_err(|e| e.under(&format!("aggregations[{i}].subFilter")))?,
                    ),
                    None => None,
                };
                let needs_field = a.calc_list.iter().any(|c| *c != Calc::Count);
                let field = match (&a.field, needs_field) {
                    (Some((_, p)), true) => Some(resolver.resolve(p)),
                    _ => None,
                };
                aggs.push(CompiledAgg {
                    sub_filter,
                    field,
                    wants_numeric: [
                        Calc::Sum,
                        Calc::Avg,
                        Calc::Min,
                        Calc::Max,
                        Calc::Percentiles,
                    ]
                    .iter()
                    .any(|c| a.calcs.contains(*c)),
                    wants_distinct: a.calcs.contains(Calc::ApproxCountDistinct),
                });
            }
            compiled.push(CompiledFilter {
                def,
                condition,
                grouping_slots,
                aggs,
                flatten,
            });
        }
        Ok(Plan {
            ingests,
            filters: compiled,
            root,
        })
    }

    pub fn filters(&self) -> impl Iterator<Item = &FilterDef> {
        self.filters.iter().map(|f| &f.def)
    }

    #[must_use]
    pub fn filter(&self, id: &str) -> Option<&FilterDef> {
        self.filters.iter().map(|f| &f.def).find(|d| d.id == id)
    }

    pub fn ingests(&self) -> impl Iterator<Item = &IngestDef> {
        self.ingests.iter().map(|i| &i.def)
    }

    /// The id of ingest `index`.
    #[must_use]
    pub fn ingest_id(&self, index: usize) -> &str {
        &self.ingests[index].def.id
    }

    /// The body format of ingest `index`.
    #[must_use]
    pub fn ingest_schema(&self, index: usize) -> Schema {
        self.ingests[index].def.schema
    }

    pub fn ingest_index(&self, id: Option<&str>) -> Result<usize> {
        match id {
            None if !self.ingests.is_empty() => Ok(0),
            None => Err(Error::NotFound {
                kind: "ingest",
                id: "(default: the engine has no ingest definitions)".to_owned(),
            }),
            Some(id) => self
                .ingests
                .iter()
                .position(|i| i.def.id == id)
                .ok_or_else(|| Error::NotFound {
                    kind: "ingest",
                    id: id.to_owned(),
                }),
        }
    }

    /// An empty delta shaped for this plan.
    #[must_use]
    pub fn empty_delta(&self) -> Delta {
        Delta {
            states: self
                .filters
                .iter()
                .map(|f| FilterState::new(&f.def))
                .collect(),
            stats: IngestStats {
                per_filter: self
                    .filters
                    .iter()
                    .map(|f| FilterStats {
                        filter_id: f.def.id.clone(),
                        ..FilterStats::default()
                    })
                    .collect(),
                ..IngestStats::default()
            },
        }
    }

    /// Parses and evaluates one batch in the ingest's format. `now_ms` is the ingest time.
    pub fn prepare(&self, data: &[u8], ingest: usize, now_ms: i64) -> Result<Delta> {
        let mut delta = self.empty_delta();
        self.prepare_into(data, ingest, now_ms, &mut delta)?;
        Ok(delta)
    }

    /// Like [`Plan::prepare`], accumulating into `delta`. On error `delta` may hold part of the
    /// batch: callers that need atomicity use a fresh delta per batch.
    pub fn prepare_into(
        &self,
        data: &[u8],
        ingest: usize,
        now_ms: i64,
        delta: &mut Delta,
    ) -> Result<()> {
        let schema = self.ingests[ingest].def.schema;
        self.prepare_chunk(data, ingest, schema, 0, now_ms, delta)
    }

    /// Prepares `data` laid out as `schema` (files override the ingest's format) whose first
    /// byte is at `base` in the caller's input, for error offsets.
    pub fn prepare_chunk(
        &self,
        data: &[u8],
        ingest: usize,
        schema: Schema,
        base: usize,
        now_ms: i64,
        delta: &mut Delta,
    ) -> Result<()> {
        if !(crate::time::MIN_MILLIS..=crate::time::MAX_MILLIS).contains(&now_ms) {
            return Err(Error::Limit {
                reason: format!("ingest time {now_ms} ms is outside the years 0000-9999"),
            });
        }
        let ing = &self.ingests[ingest];
        let (src, bom) = decode_utf8(data).map_err(|e| match e {
            Error::Json { offset, reason } => Error::Json {
                offset: offset + base,
                reason,
            },
            other => other,
        })?;
        let bom = bom + base;
        let mut work = Work::new(self, now_ms);
        // Nearly every matched event of fine buckets opens a row: reserving them once saves
        // the columns' and the cell index's growth (rehashes) during the batch.
        let hint = (data.len() / EVENT_BYTES_HINT).clamp(MIN_ROWS_HINT, MAX_ROWS_HINT);
        for s in &mut delta.states {
            s.reserve_rows(hint);
        }
        let scanned = self.scan_body(src, bom, ing, schema, &mut work, delta);
        for s in &mut delta.states {
            s.release_reserve();
        }
        scanned
    }

    /// The body of [`Plan::prepare_chunk`]: `src` (after its byte order mark, at `bom` in the
    /// caller's input) scanned as `schema` into `delta`.
    fn scan_body<'a>(
        &self,
        src: &'a str,
        bom: usize,
        ing: &CompiledIngest,
        schema: Schema,
        work: &mut Work<'a>,
        delta: &mut Delta,
    ) -> Result<()> {
        match schema {
            Schema::ArrayOfEvents => {
                let mut sc = open_body(src, bom, b'[', "expected a JSON array of events")?;
                self.scan_array(&mut sc, ing, work, delta)?;
                expect_end(&mut sc)?;
            }
            Schema::SingleObject => {
                let mut sc = open_body(src, bom, b'{', "expected a single JSON object")?;
                delta.stats.events += 1;
                self.scan_event(&mut sc, ing, work, delta)?;
                expect_end(&mut sc)?;
            }
            Schema::ObjectWithArrayProperty => {
                let mut sc = open_body(
                    src,
                    bom,
                    b'{',
                    "expected a JSON object holding the event array",
                )?;
                let trie = ing.array_trie.as_ref().expect("validated arrayPath");
                let mut slot = [None];
                sc.extract_object(trie, &mut slot)?;
                expect_end(&mut sc)?;
                let array_src = ing.def.array_path.as_ref().map_or("", |(s, _)| s.as_str());
                match slot[0].take() {
                    Some(Value::Array { raw, .. }) => {
                        let base = raw.as_ptr() as usize - src.as_ptr() as usize;
                        let mut inner = Scanner::new(raw, bom + base);
                        // The object and the members on the path enclose the array.
                        inner.set_nesting(
                            ing.def
                                .array_path
                                .as_ref()
                                .map_or(1, |(_, p)| p.segments.len()),
                        );
                        self.scan_array(&mut inner, ing, work, delta)?;
                    }
                    Some(_) => {
                        return Err(Error::Format {
                            offset: bom,
                            reason: format!("{array_src} is not an array"),
                        })
                    }
                    None => {
                        return Err(Error::Format {
                            offset: bom,
                            reason: format!("{array_src} is missing"),
                        })
                    }
                }
            }
            Schema::NewlineDelimited => {
                let mut line_start = 0usize;
                let mut sc = Scanner::new("", 0);
                let bytes = src.as_bytes();
                while line_start < bytes.len() {
                    let end = memchr::memchr(b'\n', &bytes[line_start..])
                        .map_or(bytes.len(), |i| line_start + i);
                    let (lo, hi) = ndjson_record_span(bytes, line_start, end);
                    line_start = end + 1;
                    let body = &src[lo..hi];
                    if body.is_empty() || body == "[" || body == "]" {
                        continue;
                    }
                    sc.rebase(body, bom + lo);
                    delta.stats.events += 1;
                    if body.starts_with('{') {
                        self.scan_event(&mut sc, ing, work, delta)?;
                    } else {
                        sc.skip_value()?;
                        delta.stats.not_object += 1;
                    }
                    expect_end(&mut sc)?;
                }
            }
        }
        Ok(())
    }

    fn scan_array<'a>(
        &self,
        sc: &mut Scanner<'a>,
        ing: &CompiledIngest,
        work: &mut Work<'a>,
        delta: &mut Delta,
    ) -> Result<()> {
        sc.skip_ws();
        sc.enter()?; // '['
        sc.skip_ws();
        if sc.peek() == Some(b']') {
            sc.leave();
            return Ok(());
        }
        loop {
            sc.skip_ws();
            delta.stats.events += 1;
            if sc.peek() == Some(b'{') {
                self.scan_event(sc, ing, work, delta)?;
            } else {
                sc.skip_value()?;
                delta.stats.not_object += 1;
            }
            sc.skip_ws();
            match sc.peek() {
                Some(b',') => sc.set_position(sc.position() + 1),
                Some(b']') => {
                    sc.leave();
                    return Ok(());
                }
                _ => return Err(sc.error_here("expected ',' or ']' after an array element")),
            }
        }
    }

    fn scan_event<'a>(
        &self,
        sc: &mut Scanner<'a>,
        ing: &CompiledIngest,
        work: &mut Work<'a>,
        delta: &mut Delta,
    ) -> Result<()> {
        // Reset in place: the slots stay as many from one event to the next, and an inline
        // loop costs less than the `clear` + `resize` call pair (callgrind).
        if work.root.len() == self.root.len() {
            for slot in &mut work.root {
                *slot = None;
            }
        } else {
            work.root.clear();
            work.root.resize(self.root.len(), None);
        }
        sc.extract_object(&self.root.trie, &mut work.root)?;
        let ts = match (&ing.def.timestamp, ing.timestamp_slot) {
            (
                TimestampRule::Property {
                    format, on_invalid, ..
                },
                Some(slot),
            ) => match work.root[slot as usize]
                .as_ref()
                .and_then(|v| timestamp_of(v, *format, &mut work.iso8601))
            {
                Some(t) => t,
                None => match on_invalid {
                    OnInvalid::IngestTime => {
                        delta.stats.timestamp_fallback += 1;
                        work.now_ms
                    }
                    OnInvalid::Drop => {
                        delta.stats.timestamp_invalid += 1;
                        return Ok(());
                    }
                },
            },
            _ => work.now_ms,
        };
        delta.stats.accepted += 1;
        for (fi, f) in self.filters.iter().enumerate() {
            let state = &mut delta.states[fi];
            let fstats = &mut delta.stats.per_filter[fi];
            match &f.flatten {
                None => {
                    if f.condition.eval(&work.root, &[]) {
                        fstats.matched += 1;
                        update(f, state, &work.root, &[], ts, &mut work.scratch);
                    }
                }
                Some(flat) => {
                    let Some(Value::Array { raw, .. }) = work.root[flat.array_slot as usize] else {
                        fstats.flatten_not_array += 1;
                        continue;
                    };
                    let raw: &'a str = raw;
                    let es = &mut work.element_scanner;
                    es.rebase(raw, 0);
                    es.set_position(1);
                    loop {
                        es.skip_ws();
                        match es.peek() {
                            Some(b']') | None => break,
                            Some(b',') => es.set_position(es.position() + 1),
                            Some(b'{') => {
                                work.element.clear();
                                work.element.resize(flat.registry.len(), None);
                                es.extract_object(&flat.registry.trie, &mut work.element)?;
                                fstats.flattened_elements += 1;
                                if f.condition.eval(&work.root, &work.element) {
                                    fstats.matched += 1;
                                    update(
                                        f,
                                        state,
                                        &work.root,
                                        &work.element,
                                        ts,
                                        &mut work.scratch,
                                    );
                                }
                            }
                            Some(_) => {
                                es.skip_value()?;
                                fstats.flatten_element_not_object += 1;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A scanner at the body's first value, which must open with `open` (else a format error).
pub(crate) fn open_body<'a>(
    src: &'a str,
    base: usize,
    open: u8,
    expected: &str,
) -> Result<Scanner<'a>> {
    let mut sc = Scanner::new(src, base);
    sc.skip_ws();
    if sc.peek() == Some(open) {
        Ok(sc)
    } else {
        Err(format_error(&sc, expected))
    }
}

/// The error for a body whose first value has the wrong shape: a JSON error when the body is not
/// JSON at all, else a format error ("Incorrect event format").
/// The span of one newline-delimited record within `bytes[start..end]` (a line without its
/// `\n`): ASCII whitespace trimmed at both ends, and one trailing comma with the whitespace before
/// it, because the upstream docs' example ends lines with a comma and wraps them in `[ ]`. Only
/// ASCII bytes are trimmed, so both ends stay char boundaries. The engine and the `messageId`
/// reader share it so that they see the same records.
pub(crate) fn ndjson_record_span(bytes: &[u8], start: usize, end: usize) -> (usize, usize) {
    let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let (mut lo, mut hi) = (start, end);
    while lo < hi && is_ws(bytes[lo]) {
        lo += 1;
    }
    while hi > lo && is_ws(bytes[hi - 1]) {
        hi -= 1;
    }
    if hi > lo && bytes[hi - 1] == b',' {
        hi -= 1;
        while hi > lo && is_ws(bytes[hi - 1]) {
            hi -= 1;
        }
    }
    (lo, hi)
}

fn format_error(sc: &Scanner<'_>, reason: &str) -> Error {
    if sc.at_end() {
        return sc.error_here("empty body");
    }
    let mut probe = Scanner::new(sc.source(), sc.base());
    probe.set_position(sc.position());
    if let Err(e) = probe.skip_value() {
        return *e;
    }
    if let Err(e) = expect_end(&mut probe) {
        return e;
    }
    match sc.error_here(reason) {
        Error::Json { offset, reason } => Error::Format { offset, reason },
        other => other,
    }
}

pub(crate) fn expect_end(sc: &mut Scanner<'_>) -> Result<()> {
    sc.skip_ws();
    if sc.at_end() {
        Ok(())
    } else {
        Err(sc.error_here("unexpected data after the end of the JSON value"))
    }
}

/// Reusable per-batch buffers.
struct Work<'a> {
    element_scanner: Scanner<'a>,
    root: Vec<Option<Value<'a>>>,
    element: Vec<Option<Value<'a>>>,
    scratch: Scratch,
    /// Remembers the last timestamp's minute: a batch's events mostly share it.
    iso8601: Iso8601Parser,
    now_ms: i64,
}

#[derive(Default)]
struct Scratch {
    key: Vec<u8>,
    text: String,
}

impl Work<'_> {
    fn new(plan: &Plan, now_ms: i64) -> Self {
        Self {
            element_scanner: Scanner::new("", 0),
            root: Vec::with_capacity(plan.root.len()),
            element: Vec::new(),
            scratch: Scratch::default(),
            iso8601: Iso8601Parser::new(),
            now_ms,
        }
    }
}

fn timestamp_of(
    v: &Value<'_>,
    format: TimestampFormat,
    iso8601: &mut Iso8601Parser,
) -> Option<i64> {
    match (format, v) {
        (TimestampFormat::Iso8601, Value::Str(s)) => iso8601.parse(s),
        (TimestampFormat::Iso8601, _) => None,
        (TimestampFormat::Auto, Value::Str(s)) => {
            iso8601.parse(s).or_else(|| unix_str_to_millis(s, format))
        }
        (_, Value::Number(raw)) => unix_str_to_millis(raw, format).or_else(|| {
            raw.parse::<f64>()
                .ok()
                .and_then(|f| unix_to_millis(f, format))
        }),
        (_, Value::Str(s)) => unix_str_to_millis(s, format),
        _ => None,
    }
}

#[inline]
fn slot_value<'v, 'a>(
    slot: Slot,
    root: &'v [Option<Value<'a>>],
    element: &'v [Option<Value<'a>>],
) -> Option<&'v Value<'a>> {
    match slot {
        Slot::Root(i) => root.get(i as usize).and_then(Option::as_ref),
        Slot::Element(i) => element.get(i as usize).and_then(Option::as_ref),
    }
}

#[inline]
fn update(
    f: &CompiledFilter,
    state: &mut FilterState,
    root: &[Option<Value<'_>>],
    element: &[Option<Value<'_>>],
    ts: i64,
    scratch: &mut Scratch,
) {
    let bucket = f.def.interval.bucket_start(ts);
    scratch.key.clear();
    for &slot in &f.grouping_slots {
        match slot_value(slot, root, element) {
            Some(Value::Str(s)) => GroupTable::push_component(&mut scratch.key, s),
            Some(v) => {
                scratch.text.clear();
                v.write_group_string(&mut scratch.text);
                GroupTable::push_component(&mut scratch.key, &scratch.text);
            }
            None => GroupTable::push_component(&mut scratch.key, ""),
        }
    }
    let group = state.groups.intern(&scratch.key);
    let row = state.row(bucket, group);
    for (agg, cols) in f.aggs.iter().zip(state.aggs.iter_mut()) {
        if let Some(sub) = &agg.sub_filter {
            if !sub.eval(root, element) {
                continue;
            }
        }
        cols.matched[row] += 1;
        let Some(field) = agg.field else { continue };
        let Some(v) = slot_value(field, root, element) else {
            continue;
        };
        if agg.wants_numeric {
            if let Some(x) = v.numeric() {
                cols.add_numeric(row, x);
            }
        }
        if agg.wants_distinct && !matches!(v, Value::Null) {
            let h = match v {
                Value::Str(s) => distinct_hash(3, s.as_bytes()),
                other => {
                    scratch.text.clear();
                    other.write_group_string(&mut scratch.text);
                    distinct_hash(other.type_tag(), scratch.text.as_bytes())
                }
            };
            cols.distinct.insert_hash(row, h);
        }
    }
}

/// Distinct-count identity: the value's type and string form. Seeded xxh3 is a stable, specified
/// hash, so sketches built on different machines merge.
#[inline]
#[must_use]
pub fn distinct_hash(type_tag: u8, bytes: &[u8]) -> u64 {
    let h = xxhash_rust::xxh3::xxh3_64(bytes);
    if type_tag == 3 {
        return h; // strings, the common case
    }
    // Other types go through the splitmix64 finalizer (a bijection with full avalanche) keyed by
    // the tag, so `102` and `"101"` cannot collide the way a linearly mixed seed lets them.
    let mut z = h ^ u64::from(type_tag).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The aggregate state of every filter, keyed by filter id.
#[derive(Debug, Clone, Default)]
pub struct EngineState {
    pub states: HashMap<String, FilterState>,
    /// Retention layout of every filter that has been compacted (`retention` module).
    pub layouts: HashMap<String, crate::retention::TierLayout>,
    /// The sketch part of every state's [`FilterState::heap_bytes`], kept as a running total
    /// by [`EngineState::apply`] and the compaction steps so [`EngineState::heap_bytes`] costs
    /// O(filters), not a walk of every sketch (the server checks it before each batch). Any
    /// other change of `states` is followed by [`EngineState::recount_bytes`].
    pub(crate) sketch_bytes: usize,
}

/// Whether rows of `s` hold sketches (whose bytes vary per row).
fn has_sketches(s: &FilterState) -> bool {
    s.aggs
        .iter()
        .any(|a| a.calcs.contains(Calc::ApproxCountDistinct) || a.calcs.contains(Calc::Percentiles))
}

/// The rows of `mine` that `delta`'s rows land in and that exist already, with their sketch
/// bytes. Costs O(delta rows) lookups: the delta's cells are distinct, so no row is listed twice.
fn touched_rows(mine: &FilterState, delta: &FilterState) -> (Vec<usize>, usize) {
    let mut group_map: Vec<Option<Option<u32>>> = vec![None; delta.groups.len()];
    let mut rows = Vec::with_capacity(delta.rows());
    let mut bytes = 0;
    for r in 0..delta.rows() {
        let og = delta.row_group[r];
        let g =
            *group_map[og as usize].get_or_insert_with(|| mine.groups.find(delta.groups.key(og)));
        if let Some(row) = g.and_then(|g| mine.find_row(delta.row_bucket[r], g)) {
            bytes += mine.row_sketch_bytes(row);
            rows.push(row);
        }
    }
    (rows, bytes)
}

/// Merges `delta` into `mine` (already checked) and returns the change of the sketch bytes of
/// the rows it touched. A merge only appends rows (`FilterState::epoch`), so the rows found
/// before keep their indexes and the new ones are the tail: the bytes after the merge need no
/// second lookup of each cell.
fn merge_counting_sketches(mine: &mut FilterState, delta: &FilterState) -> Result<(usize, usize)> {
    let (rows, before) = touched_rows(mine, delta);
    let old_rows = mine.rows();
    mine.merge_from(delta)?;
    let after = rows
        .iter()
        .map(|&r| mine.row_sketch_bytes(r))
        .sum::<usize>()
        + (old_rows..mine.rows())
            .map(|r| mine.row_sketch_bytes(r))
            .sum::<usize>();
    Ok((before, after))
}

impl EngineState {
    /// Makes sure every filter of `plan` has a state and drops states of removed filters.
    pub fn sync(&mut self, plan: &Plan) {
        self.states
            .retain(|id, _| plan.filters.iter().any(|f| &f.def.id == id));
        self.layouts
            .retain(|id, _| plan.filters.iter().any(|f| &f.def.id == id));
        for f in &plan.filters {
            self.states
                .entry(f.def.id.clone())
                .or_insert_with(|| FilterState::new(&f.def));
        }
    }

    /// Refuses a delta whose merge would overflow a counter of this store.
    pub fn check_apply(&self, plan: &Plan, delta: &Delta) -> Result<()> {
        for (f, s) in plan.filters.iter().zip(&delta.states) {
            if let Some(mine) = self.states.get(&f.def.id) {
                mine.check_merge(s)?;
            }
        }
        Ok(())
    }

    /// Merges a delta prepared by `plan` (the plan this store is synced to). A state that is
    /// still empty takes the delta's state as it is, without copying. Rows older than a tier's
    /// horizon are routed into that tier first. Atomic: refused, changing nothing, when a counter
    /// would overflow.
    pub fn apply(&mut self, plan: &Plan, mut delta: Delta) -> Result<IngestStats> {
        self.route(plan, &mut delta);
        self.check_apply(plan, &delta)?;
        self.merge_checked(plan, delta)
    }

    /// Routes the rows of `delta` older than a tier's horizon into that tier (the first step of
    /// [`EngineState::apply`]). A routed delta routes to the same rows again, so a caller may
    /// keep one that [`EngineState::check_apply`] refused and apply it later.
    pub fn route(&self, plan: &Plan, delta: &mut Delta) {
        for (f, s) in plan.filters.iter().zip(delta.states.iter_mut()) {
            if let (true, Some(layout)) = (s.rows() > 0, self.layouts.get(&f.def.id)) {
                crate::retention::route_delta(s, layout);
            }
        }
    }

    /// The merge of [`EngineState::apply`] for a delta already routed and admitted by
    /// [`EngineState::check_apply`] (with the store locked in between), so a caller that checks
    /// first, to keep a refused delta, does not pay for the check twice.
    pub fn merge_checked(&mut self, plan: &Plan, delta: Delta) -> Result<IngestStats> {
        for (f, s) in plan.filters.iter().zip(delta.states) {
            if s.rows() == 0 {
                continue;
            }
            match self.states.get_mut(&f.def.id) {
                Some(mine) if mine.rows() > 0 => {
                    if has_sketches(&s) {
                        let (before, after) = merge_counting_sketches(mine, &s)?;
                        self.sketch_bytes = (self.sketch_bytes + after).saturating_sub(before);
                    } else {
                        mine.merge_from(&s)?;
                    }
                }
                // An empty state has no sketch bytes: the delta's become the state's.
                Some(mine) => {
                    self.sketch_bytes += s.heap_bytes() - s.fixed_heap_bytes();
                    *mine = s;
                }
                None => {
                    self.sketch_bytes += s.heap_bytes() - s.fixed_heap_bytes();
                    self.states.insert(f.def.id.clone(), s);
                }
            }
        }
        Ok(delta.stats)
    }

    /// Approximate heap bytes of every state: O(filters x aggregations) (the sketch part is a
    /// running total), equal to the sum of [`FilterState::heap_bytes`].
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.states
            .values()
            .map(FilterState::fixed_heap_bytes)
            .sum::<usize>()
            + self.sketch_bytes
    }

    /// Recomputes the running sketch total by walking every state: after a change of `states`
    /// other than [`EngineState::apply`] and the compaction steps (a merge, `drop_before`, a
    /// definition edit, a snapshot load).
    pub fn recount_bytes(&mut self) {
        self.sketch_bytes = self
            .states
            .values()
            .map(|s| s.heap_bytes() - s.fixed_heap_bytes())
            .sum();
    }
}

/// A single-threaded engine: a plan and its store. The Python binding splits the two so batches
/// can be prepared concurrently; this type serves Rust users and tests.
#[derive(Debug, Clone)]
pub struct Engine {
    pub plan: Arc<Plan>,
    pub store: EngineState,
}

impl Engine {
    pub fn new(ingests: Vec<IngestDef>, filters: Vec<FilterDef>) -> Result<Engine> {
        let plan = Arc::new(Plan::new(ingests, filters)?);
        let mut store = EngineState::default();
        store.sync(&plan);
        Ok(Engine { plan, store })
    }

    pub fn ingest(
        &mut self,
        data: &[u8],
        ingest_id: Option<&str>,
        now_ms: i64,
    ) -> Result<IngestStats> {
        let idx = self.plan.ingest_index(ingest_id)?;
        let delta = self.plan.prepare(data, idx, now_ms)?;
        self.store.apply(&self.plan, delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An engine counting, summing, distinct-counting and taking percentiles of `$.v` per
    /// minute and `$.g`.
    fn engine() -> Engine {
        let ingest = IngestDef::from_json(&json!({
            "id": "i", "timestamp": {"source": "PROPERTY", "path": "$.t", "format": "UNIX_MILLISECONDS"}
        }))
        .unwrap();
        let filter = FilterDef::from_json(&json!({
            "id": "f", "name": "f", "filter": "", "groupingItems": [{"grouping": "$.g"}],
            "intervalType": "MINUTE", "intervalCount": 1,
            "aggregations": [{"id": 1, "name": "a",
                              "calculations": ["COUNT", "SUM", "APPROX_COUNT_DISTINCT", "PERCENTILES"],
                              "calculationField": "$.v", "subFilter": null}],
        }))
        .unwrap();
        Engine::new(vec![ingest], vec![filter]).unwrap()
    }

    /// `events` events of about 1 KB each (a padding string), in `cells` distinct cells.
    fn batch(events: usize, cells: usize) -> Vec<u8> {
        let pad = "x".repeat(1000);
        let body: Vec<String> = (0..events)
            .map(|i| {
                let t = (i % cells) * 60_000;
                format!(r#"{{"t":{t},"g":"a","v":{i},"pad":"{pad}"}}"#)
            })
            .collect();
        format!("[{}]", body.join(",")).into_bytes()
    }

    #[test]
    fn a_big_batch_with_few_rows_does_not_keep_the_reserved_capacity() {
        let mut e = engine();
        let data = batch(2000, 3);
        assert!(
            data.len() / EVENT_BYTES_HINT > 1000,
            "the hint reserves many rows"
        );
        let delta = e.plan.prepare(&data, 0, 0).unwrap();
        let s = &delta.states[0];
        assert_eq!(s.rows(), 3);
        assert!(s.row_capacity() <= 4, "capacity {}", s.row_capacity());
        for a in &s.aggs {
            assert!(a.matched.capacity() <= 4);
            assert!(a.sum.capacity() <= 4);
            assert!(a.distinct.word_bytes() <= 4 * 8);
            assert!(a.quantile.word_bytes() <= 4 * 8);
        }
        // The delta moves into the empty store as it is: the store keeps no reservation either.
        let bytes = s.fixed_heap_bytes();
        assert!(bytes < 1024, "{bytes} bytes for 3 rows");
        e.store.apply(&e.plan, delta).unwrap();
        let stored = &e.store.states["f"];
        assert_eq!(stored.rows(), 3);
        assert_eq!(stored.fixed_heap_bytes(), bytes);
    }

    #[test]
    fn a_batch_that_fills_its_reservation_keeps_it_and_answers_the_same() {
        let data = batch(2000, 2000);
        let delta = engine().plan.prepare(&data, 0, 0).unwrap();
        let s = &delta.states[0];
        assert_eq!(s.rows(), 2000);
        assert!(
            s.row_capacity() <= 2 * 2000,
            "capacity {}",
            s.row_capacity()
        );
        // Reserved or grown, the rows hold the same: one event each.
        for a in &s.aggs {
            assert!(a.matched.iter().all(|&m| m == 1));
            let sums: Vec<u64> = a.sum.iter().map(|x| x.to_bits()).collect();
            let expected: Vec<u64> = (0..2000).map(|i| f64::from(i).to_bits()).collect();
            assert_eq!(sums, expected);
        }
        // Many small batches (each below the floor) add up to the same rows.
        let mut e = engine();
        for chunk in 0..20 {
            let part: Vec<String> = (chunk * 100..chunk * 100 + 100)
                .map(|i| format!(r#"{{"t":{},"g":"a","v":{i}}}"#, i * 60_000))
                .collect();
            e.ingest(format!("[{}]", part.join(",")).as_bytes(), None, 0)
                .unwrap();
        }
        let stored = &e.store.states["f"];
        assert_eq!(stored.rows(), 2000);
        assert_eq!(stored.row_bucket, s.row_bucket);
        assert_eq!(stored.aggs[0].sum, s.aggs[0].sum);
    }
}
