//! Retention tiers and exact compaction (decision 13).
//!
//! A filter with tiers keeps one [`FilterState`] whose rows are at different resolutions: tier
//! `i` holds the bucket starts in `[floors[i], floors[i - 1])` (tier 0 is unbounded above), each
//! at tier `i`'s interval. The floors are aligned to the next tier's buckets, so the ranges are
//! disjoint, every coarse bucket lies inside its tier's range, and a bucket start alone says
//! which tier (and resolution) a row has. Rows below the last floor are gone.
//!
//! Guarantees:
//! - Compaction merges cells exactly: a coarse cell equals the cell that would have seen all the
//!   events of the fine cells it replaced (COUNT/SUM add, MIN/MAX combine, the sketches merge),
//!   so a rollup coarser than a tier gives the numbers of an uncompacted state.
//! - Floors only move forward; a bucket leaves tier `i` once the whole tier-`i + 1` bucket
//!   holding it is older than tier `i`'s `keepSeconds` (the last tier: once its own end is).
//! - Late or replayed rows older than a floor are routed into the tier holding their time, at
//!   that tier's resolution, so they are counted once, where a query looks for them.
//! - Compaction releases the grouping tuples no remaining cell uses.

use hashbrown::HashMap;
use serde_json::{json, Value as Json};

use crate::config::{fit_default_retention, FilterDef, RetentionTier};
use crate::engine::{EngineState, Plan};
use crate::error::{Error, Result};
use crate::state::{AggColumns, FilterState, GroupTable};
use crate::time::{format_rfc3339, Interval, IntervalUnit};

/// Where a filter's rows sit: the tiers it was compacted with and each tier's lower bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierLayout {
    /// Interval of every tier, tier 0 (the filter's interval) first.
    pub intervals: Vec<Interval>,
    /// Inclusive lower bound of each tier's bucket starts; `i64::MIN` = not bounded yet.
    pub floors: Vec<i64>,
}

impl TierLayout {
    /// A layout with nothing compacted yet.
    #[must_use]
    pub fn new(tiers: &[RetentionTier]) -> Self {
        Self {
            intervals: tiers.iter().map(|t| t.interval).collect(),
            floors: vec![i64::MIN; tiers.len()],
        }
    }

    /// True when no floor has moved: every row is still at the filter's own interval.
    #[must_use]
    pub fn is_pristine(&self) -> bool {
        self.floors.iter().all(|f| *f == i64::MIN)
    }

    /// The tier holding bucket start `b`.
    #[must_use]
    pub fn tier_of(&self, b: i64) -> Option<usize> {
        self.floors.iter().position(|f| b >= *f)
    }

    /// Where a row at bucket start `b` belongs: its tier's bucket start, or `None` when it is
    /// older than the last tier keeps.
    #[inline]
    #[must_use]
    pub fn target(&self, b: i64) -> Option<i64> {
        if b >= self.floors[0] {
            return Some(b);
        }
        let t = self.tier_of(b)?;
        Some(self.intervals[t].bucket_start(b))
    }

    /// Half-open range `[lo, hi)` of bucket starts held by tier `t`.
    #[must_use]
    pub fn range(&self, t: usize) -> (i64, i64) {
        let hi = if t == 0 { i64::MAX } else { self.floors[t - 1] };
        (self.floors[t], hi)
    }

    /// The floors `tiers` ask for at `now_ms`, never behind the current ones.
    fn advanced(&self, tiers: &[RetentionTier], now_ms: i64) -> Vec<i64> {
        let n = tiers.len();
        (0..n)
            .map(|i| {
                let t = &tiers[i];
                let wanted = if t.keep_ms == 0 {
                    i64::MIN
                } else {
                    let cut = now_ms.saturating_sub(t.keep_ms);
                    // Aligned to the next tier's buckets so none is split between two tiers.
                    let align = tiers.get(i + 1).map_or(t.interval, |next| next.interval);
                    align.bucket_start(cut)
                };
                wanted.max(self.floors[i])
            })
            .collect()
    }
}

/// What one compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Fine cells merged into a coarser cell.
    pub cells_merged: u64,
    /// Cells older than the last tier keeps, dropped.
    pub cells_dropped: u64,
    /// Grouping tuples no remaining cell used, released.
    pub groups_released: u64,
    /// Approximate heap bytes released (`heap_bytes` before minus after).
    pub bytes_freed: u64,
    /// Filters compacted (ones with tiers).
    pub filters: u64,
    /// Filters left alone, with the reason (their recorded tiers differ from the definition's).
    pub skipped: Vec<(String, String)>,
}

/// Adds row `src` into row `dst` of the same columns (the in-place twin of the state merge).
fn merge_within(c: &mut AggColumns, dst: usize, src: usize) {
    c.matched[dst] += c.matched[src];
    if !c.numeric.is_empty() {
        c.numeric[dst] += c.numeric[src];
        c.sum[dst] += c.sum[src];
        c.min[dst] = c.min[dst].min(c.min[src]);
        c.max[dst] = c.max[dst].max(c.max[src]);
    }
    if !c.distinct.is_empty() {
        c.distinct.merge_within(dst, src);
    }
    if !c.quantile.is_empty() {
        c.quantile.merge_within(dst, src);
    }
}

/// Bucket start standing for "dropped" in a [`Move`]: no bucket starts there (event times are
/// validated dates), and it sorts first, so drops are done before the merges of a step.
const DROP: i64 = i64::MIN;

/// One out-of-place cell found by a scan: where it goes (`target`, or [`DROP`]) and where it
/// was (`bucket`, `group`, and `row`, a hint that is checked before use). Ordered by target
/// cell, then source bucket, so a sorted plan holds each coarse cell's sources in one run, in
/// chronological order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Move {
    target: i64,
    group: u32,
    bucket: i64,
    row: u32,
}

/// Appends a [`Move`] for every out-of-place row of `rows` (a range of `state`'s rows).
fn scan_rows(
    state: &FilterState,
    layout: &TierLayout,
    rows: std::ops::Range<usize>,
    out: &mut Vec<Move>,
) {
    let floor0 = layout.floors[0];
    for r in rows {
        let b = state.row_bucket[r];
        // Most rows are young: one comparison each.
        if b >= floor0 {
            continue;
        }
        let target = layout.target(b);
        if target == Some(b) {
            continue;
        }
        out.push(Move {
            target: target.unwrap_or(DROP),
            group: state.row_group[r],
            bucket: b,
            row: r as u32,
        });
    }
}

/// The end of the run of `moves` starting at `start` that covers at least `budget` moves and
/// stops at a cell boundary (a coarse cell is never split between two runs).
fn run_end(moves: &[Move], start: usize, budget: usize) -> usize {
    let mut end = (start + budget.max(1)).min(moves.len());
    while end < moves.len() && end > start {
        let (a, b) = (moves[end - 1], moves[end]);
        if a.target == DROP || a.target != b.target || a.group != b.group {
            break;
        }
        end += 1;
    }
    end
}

/// What applying some moves did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Applied {
    merged: u64,
    dropped: u64,
    /// Sketch bytes released: the sources' sketches minus what their targets grew by.
    sketch_bytes_freed: u64,
    /// The same, signed (a merged sketch may outgrow its parts), for the running total of
    /// [`EngineState::heap_bytes`].
    sketch_bytes_change: i64,
}

/// Applies `moves` (sorted, whole cells) to `state`: merges each source into its target cell
/// in order, drops the ones without a target, then removes the sources. A source whose cell is
/// gone (merged or dropped by someone else since the scan) is skipped; a stale row hint is
/// resolved through the cell index. Costs O(moves), whatever the state's size.
fn apply_moves(state: &mut FilterState, moves: &[Move], remove: &mut Vec<u32>) -> Applied {
    let mut done = Applied::default();
    remove.clear();
    let mut freed: i64 = 0;
    for m in moves {
        let hinted = m.row as usize;
        let src = if state.row_bucket.get(hinted) == Some(&m.bucket)
            && state.row_group[hinted] == m.group
        {
            hinted
        } else if let Some(r) = state.find_row(m.bucket, m.group) {
            r
        } else {
            continue;
        };
        let src_bytes = state.row_sketch_bytes(src) as i64;
        if m.target == DROP {
            done.dropped += 1;
            freed += src_bytes;
        } else {
            // A target is aligned to its tier, so it maps to itself: never a source.
            let rows = state.rows();
            let dst = state.row(m.target, m.group);
            // A new target row's empty sketches were not counted before: they are growth.
            let before = if state.rows() > rows {
                0
            } else {
                state.row_sketch_bytes(dst) as i64
            };
            for c in &mut state.aggs {
                merge_within(c, dst, src);
            }
            freed += src_bytes + before - state.row_sketch_bytes(dst) as i64;
            done.merged += 1;
        }
        remove.push(src as u32);
    }
    remove.sort_unstable_by(|a, b| b.cmp(a));
    // Highest first: the last row, moved into each hole, is never one still to be removed.
    for &r in remove.iter() {
        state.swap_remove_row(r as usize);
    }
    done.sketch_bytes_freed = freed.max(0) as u64;
    done.sketch_bytes_change = -freed;
    done
}

/// Moves every row of `state` to where `layout` says it belongs, in one go: merges rows that
/// land in one cell (each coarse cell whole, in chronological order) and drops rows below the
/// last floor, then releases unused grouping tuples when they are a quarter of the table or
/// more. Returns (merged, dropped, groups released). For states nobody else waits on (a
/// batch's delta, a merge's copy); [`Compaction`] does the same in bounded steps.
pub fn relayout(state: &mut FilterState, layout: &TierLayout) -> (u64, u64, u64) {
    let mut moves = Vec::new();
    scan_rows(state, layout, 0..state.rows(), &mut moves);
    if moves.is_empty() {
        return (0, 0, 0);
    }
    moves.sort_unstable();
    let done = apply_moves(state, &moves, &mut Vec::new());
    let released = release_groups(state);
    state.shrink_if_sparse();
    (done.merged, done.dropped, released)
}

/// Rebuilds the grouping table with only the tuples rows still use; returns how many went.
fn release_groups(state: &mut FilterState) -> u64 {
    let before = state.groups.len();
    let mut used = vec![false; before];
    for &g in &state.row_group {
        used[g as usize] = true;
    }
    let unused = used.iter().filter(|u| !**u).count();
    // Renumbering tuples means re-keying every cell: worth it only for a real share of them.
    if unused == 0 || unused * 4 < before {
        return 0;
    }
    let mut groups = GroupTable::default();
    let mut remap: Vec<u32> = vec![u32::MAX; before];
    // Interned in old id order, so surviving tuples keep their relative order.
    for (g, u) in used.iter().enumerate() {
        if *u {
            remap[g] = groups.intern(state.groups.key(g as u32));
        }
    }
    for g in &mut state.row_group {
        *g = remap[*g as usize];
    }
    let released = before - groups.len();
    state.groups = groups;
    let unique = state.reindex();
    debug_assert!(unique, "renumbered tuples keep one row per cell");
    released as u64
}

/// The tiers compaction applies to `def`: its own, else the default fitted to its interval.
#[must_use]
pub fn effective_tiers(def: &FilterDef, default: &[RetentionTier]) -> Vec<RetentionTier> {
    if def.retention.is_empty() {
        fit_default_retention(default, def.interval)
    } else {
        def.retention.clone()
    }
}

/// Rows a [`Compaction`] step may scan and move while the caller holds the state lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepBudget {
    /// Rows checked for being out of place (about 1-2 ns each when young).
    pub scan: usize,
    /// Rows merged or dropped; a step ends at a cell boundary, so it may move up to one
    /// coarse cell's sources more.
    pub moves: usize,
}

impl StepBudget {
    /// No bound: one step does a filter's whole scan, or all its moves.
    pub const UNBOUNDED: StepBudget = StepBudget {
        scan: usize::MAX,
        moves: usize::MAX,
    };
}

/// What one [`Compaction::step`] did, for callers and tests that check a step's work is bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepWork {
    /// Rows checked by the scan.
    pub scanned: u64,
    /// Rows merged or dropped (or skipped because they were gone).
    pub moved: u64,
    /// Grouping tuples released (the last step of a filter rebuilds the table when worth it).
    pub released: u64,
}

/// Where one filter's compaction is.
#[derive(Debug)]
enum Phase {
    /// Scanning rows `cursor..` for out-of-place ones.
    Scan { cursor: usize },
    /// The scan is complete; its moves are sorted between two steps, without the lock.
    Sort,
    /// Applying the sorted moves from `pos`.
    Move { pos: usize },
    /// Nothing left to do for this filter.
    Done,
}

/// One filter's part of a [`Compaction`].
#[derive(Debug)]
struct FilterJob {
    id: String,
    /// The layout the moves were planned for; a change (a merge moved the floors) re-plans.
    layout: TierLayout,
    /// The state's epoch after this job's last step; another change (rows moved to other
    /// indexes, tuples renumbered) makes the plan stale, and the job scans again.
    epoch: u64,
    phase: Phase,
    moves: Vec<Move>,
    fixed_bytes_before: usize,
    merged: u64,
    dropped: u64,
    sketch_bytes_freed: u64,
}

/// A compaction at one `now`, run in bounded steps by a caller that holds the state lock for
/// each [`Compaction::step`] only, and calls [`Compaction::between_steps`] without it.
///
/// The plan: each filter's rows are scanned in chunks (at most `budget.scan` rows a step) for
/// rows out of place; the list is sorted by target cell between steps (off the lock); then
/// each step applies at most `budget.moves` of them, whole coarse cells in chronological order,
/// finding each source by a checked row hint or the cell index. So a step costs O(its budget),
/// not O(the state): a batch waiting for the lock waits for one step.
///
/// Why the plan stays valid between steps: batches applied meanwhile are routed by the
/// already-advanced floors (their old rows land in coarse cells), so they add no row out of
/// place; their rows are appended, which moves no planned row. Anything else that moves rows
/// or renumbers tuples (`drop_before`, a merge, another relayout) changes the state's epoch,
/// and a layout change (a merge) changes the layout: the job then scans again (moves already
/// made stay made; merges are exact, so it only redoes what is left). A definition change
/// restarts the plan from the new definitions.
#[derive(Debug)]
pub struct Compaction {
    now_ms: i64,
    default: Vec<RetentionTier>,
    /// The plan the jobs were made for.
    plan: Option<std::sync::Arc<Plan>>,
    jobs: Vec<FilterJob>,
    current: usize,
    report: CompactReport,
    remove: Vec<u32>,
}

impl Compaction {
    /// A compaction at `now_ms`; `default` applies to filters without their own tiers.
    #[must_use]
    pub fn new(now_ms: i64, default: Vec<RetentionTier>) -> Self {
        Self {
            now_ms,
            default,
            plan: None,
            jobs: Vec::new(),
            current: 0,
            report: CompactReport::default(),
            remove: Vec::new(),
        }
    }

    /// What the compaction did so far (all of it once done).
    #[must_use]
    pub fn report(&self) -> &CompactReport {
        &self.report
    }

    /// Moves every filter's floors forward (idempotent) and makes one job per filter with tiers.
    fn start(&mut self, store: &mut EngineState, plan: &std::sync::Arc<Plan>) {
        self.jobs.clear();
        self.current = 0;
        self.report.filters = 0;
        self.report.skipped.clear();
        for def in plan.filters() {
            let tiers = effective_tiers(def, &self.default);
            if tiers.is_empty() || (tiers.len() == 1 && tiers[0].keep_ms == 0) {
                continue;
            }
            let layout = store
                .layouts
                .entry(def.id.clone())
                .or_insert_with(|| TierLayout::new(&tiers));
            let intervals: Vec<Interval> = tiers.iter().map(|t| t.interval).collect();
            if layout.intervals != intervals {
                if layout.is_pristine() {
                    *layout = TierLayout::new(&tiers);
                } else {
                    self.report.skipped.push((
                        def.id.clone(),
                        "its data was compacted with other tier intervals; tier intervals of \
                         a filter are fixed once it is compacted (keepSeconds may change)"
                            .to_owned(),
                    ));
                    continue;
                }
            }
            layout.floors = layout.advanced(&tiers, self.now_ms);
            self.report.filters += 1;
            let layout = layout.clone();
            let Some(state) = store.states.get(&def.id) else {
                continue;
            };
            self.jobs.push(FilterJob {
                id: def.id.clone(),
                layout,
                epoch: state.epoch(),
                phase: Phase::Scan { cursor: 0 },
                moves: Vec::new(),
                fixed_bytes_before: state.fixed_heap_bytes(),
                merged: 0,
                dropped: 0,
                sketch_bytes_freed: 0,
            });
        }
        self.plan = Some(plan.clone());
    }

    /// One bounded step, to be called with the state lock held (`store` and `plan` as they are
    /// now). Returns what the step did and whether the whole compaction is done.
    pub fn step(
        &mut self,
        store: &mut EngineState,
        plan: &std::sync::Arc<Plan>,
        budget: StepBudget,
    ) -> (StepWork, bool) {
        let mut work = StepWork::default();
        if !self
            .plan
            .as_ref()
            .is_some_and(|p| std::sync::Arc::ptr_eq(p, plan))
        {
            // First step, or the definitions changed: (re)plan from them.
            self.start(store, plan);
            return (work, self.jobs.is_empty());
        }
        while let Some(job) = self.jobs.get_mut(self.current) {
            let (Some(state), Some(layout)) =
                (store.states.get_mut(&job.id), store.layouts.get(&job.id))
            else {
                // Removed meanwhile: nothing to compact.
                self.current += 1;
                continue;
            };
            if *layout != job.layout
                || (state.epoch() != job.epoch && !matches!(job.phase, Phase::Done))
            {
                job.layout = layout.clone();
                job.phase = Phase::Scan { cursor: 0 };
                job.moves.clear();
            }
            match job.phase {
                Phase::Scan { cursor } => {
                    let end = cursor.saturating_add(budget.scan).min(state.rows());
                    scan_rows(state, &job.layout, cursor..end, &mut job.moves);
                    work.scanned += (end - cursor) as u64;
                    job.phase = if end == state.rows() {
                        Phase::Sort
                    } else {
                        Phase::Scan { cursor: end }
                    };
                    job.epoch = state.epoch();
                    return (work, false);
                }
                Phase::Sort => {
                    // `between_steps` was not called: sort here.
                    job.moves.sort_unstable();
                    job.phase = Phase::Move { pos: 0 };
                }
                Phase::Move { pos } => {
                    let end = run_end(&job.moves, pos, budget.moves);
                    let done = apply_moves(state, &job.moves[pos..end], &mut self.remove);
                    store.sketch_bytes = store
                        .sketch_bytes
                        .saturating_add_signed(done.sketch_bytes_change as isize);
                    work.moved += (end - pos) as u64;
                    job.merged += done.merged;
                    job.dropped += done.dropped;
                    job.sketch_bytes_freed += done.sketch_bytes_freed;
                    self.report.cells_merged += done.merged;
                    self.report.cells_dropped += done.dropped;
                    if end < job.moves.len() {
                        job.phase = Phase::Move { pos: end };
                        job.epoch = state.epoch();
                        return (work, false);
                    }
                    job.moves = Vec::new();
                    if job.merged + job.dropped > 0 {
                        let released = release_groups(state);
                        state.shrink_if_sparse();
                        work.released += released;
                        self.report.groups_released += released;
                    }
                    let fixed_after = state.fixed_heap_bytes();
                    self.report.bytes_freed += (job.fixed_bytes_before.saturating_sub(fixed_after)
                        as u64)
                        + job.sketch_bytes_freed;
                    job.phase = Phase::Done;
                    job.epoch = state.epoch();
                    self.current += 1;
                    return (work, self.current == self.jobs.len());
                }
                Phase::Done => self.current += 1,
            }
        }
        (work, true)
    }

    /// Work done between two steps, without the state lock: sorting a finished scan's moves.
    pub fn between_steps(&mut self) {
        if let Some(job) = self.jobs.get_mut(self.current) {
            if matches!(job.phase, Phase::Sort) {
                job.moves.sort_unstable();
                job.phase = Phase::Move { pos: 0 };
            }
        }
    }

    /// True when every step is done.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.plan.is_some() && self.current >= self.jobs.len()
    }
}

/// Compacts every filter of `store` at `now_ms` in one go (a [`Compaction`] run to its end
/// with unbounded steps); `default` applies to filters without their own tiers.
pub fn compact_store(
    store: &mut EngineState,
    plan: &std::sync::Arc<Plan>,
    now_ms: i64,
    default: &[RetentionTier],
) -> CompactReport {
    let mut c = Compaction::new(now_ms, default.to_vec());
    loop {
        let (_, done) = c.step(store, plan, StepBudget::UNBOUNDED);
        if done {
            return c.report;
        }
        c.between_steps();
    }
}

/// Fits an incoming delta state (one batch) to the stored layout, so rows older than a floor
/// land at their tier's resolution. Cheap when nothing is old: one comparison per row.
pub fn route_delta(delta: &mut FilterState, layout: &TierLayout) {
    if layout.is_pristine() {
        return;
    }
    let floor0 = layout.floors[0];
    if delta.row_bucket.iter().all(|&b| b >= floor0) {
        return;
    }
    relayout(delta, layout);
}

/// Merges `other` (with its layout) into `mine` (with its layout): both move to the later
/// floors first, so coarse rows are only ever merged with rows of the same resolution.
pub fn merge_tiered(
    mine: &mut FilterState,
    mine_layout: Option<&mut TierLayout>,
    other: &FilterState,
    other_layout: Option<&TierLayout>,
) -> Result<Option<TierLayout>> {
    let combined = match (mine_layout.as_deref(), other_layout) {
        (None, None) => {
            mine.merge_from(other)?;
            return Ok(None);
        }
        (Some(a), None) => a.clone(),
        (None, Some(b)) => b.clone(),
        (Some(a), Some(b)) => {
            if a.intervals != b.intervals && !(a.is_pristine() || b.is_pristine()) {
                return Err(Error::Config {
                    field: "other".into(),
                    reason: "the engines' states were compacted with different tiers".into(),
                });
            }
            let base = if a.is_pristine() { b } else { a };
            let other_side = if a.is_pristine() { a } else { b };
            let floors = if base.intervals == other_side.intervals {
                base.floors
                    .iter()
                    .zip(&other_side.floors)
                    .map(|(x, y)| *x.max(y))
                    .collect()
            } else {
                base.floors.clone()
            };
            TierLayout {
                intervals: base.intervals.clone(),
                floors,
            }
        }
    };
    let mut theirs = other.clone();
    relayout(&mut theirs, &combined);
    relayout(mine, &combined);
    // `mine` is in the combined layout now, whether or not the merge below is refused.
    if let Some(l) = mine_layout {
        *l = combined.clone();
    }
    mine.merge_from(&theirs)?;
    Ok(Some(combined))
}

/// Per-tier rows and approximate bytes of one filter's state.
#[must_use]
pub fn tier_usage(state: &FilterState, layout: Option<&TierLayout>) -> Vec<(Interval, u64, u64)> {
    let fallback;
    let layout = if let Some(l) = layout {
        l
    } else {
        fallback = TierLayout {
            intervals: vec![Interval {
                unit: IntervalUnit::Second,
                count: 0,
            }],
            floors: vec![i64::MIN],
        };
        &fallback
    };
    let n = layout.intervals.len();
    let mut rows = vec![0u64; n];
    let mut sketch = vec![0u64; n];
    for r in 0..state.rows() {
        let Some(t) = layout.tier_of(state.row_bucket[r]) else {
            continue;
        };
        rows[t] += 1;
        for c in &state.aggs {
            if !c.distinct.is_empty() {
                sketch[t] += c.distinct.row_bytes(r) as u64;
            }
            if !c.quantile.is_empty() {
                sketch[t] += c.quantile.row_bytes(r) as u64;
            }
        }
    }
    // The columns and indexes are shared: spread them over the tiers by their rows.
    let total_rows = rows.iter().sum::<u64>().max(1);
    let fixed = (state.heap_bytes() as u64).saturating_sub(sketch.iter().sum());
    (0..n)
        .map(|t| {
            (
                layout.intervals[t],
                rows[t],
                sketch[t] + fixed * rows[t] / total_rows,
            )
        })
        .collect()
}

fn opt_time(ms: i64) -> Json {
    if ms == i64::MIN || ms == i64::MAX {
        Json::Null
    } else {
        json!(format_rfc3339(ms))
    }
}

/// The resolutions that serve a query window `[start, end)`: one entry per tier whose range
/// meets the window, finest first, with the part of the window it serves (`null` = open).
#[must_use]
pub fn resolutions_json(
    def: &FilterDef,
    layout: Option<&TierLayout>,
    start: i64,
    end: i64,
) -> Json {
    let entry = |iv: Interval, lo: i64, hi: i64| {
        json!({
            "intervalType": iv.unit.name(),
            "intervalCount": iv.count,
            "startTime": opt_time(lo),
            "endTime": opt_time(hi),
        })
    };
    let Some(layout) = layout.filter(|l| !l.is_pristine()) else {
        return json!([entry(def.interval, start, end)]);
    };
    let mut out = Vec::new();
    for t in 0..layout.intervals.len() {
        let (lo, hi) = layout.range(t);
        let (lo, hi) = (lo.max(start), hi.min(end));
        if lo < hi {
            out.push(entry(layout.intervals[t], lo, hi));
        }
    }
    Json::Array(out)
}

// -- snapshot section (format version 2) -----------------------------------------------------

/// Appends the tier section: every filter's layout, keyed by filter id.
pub fn encode_layouts(layouts: &HashMap<String, TierLayout>, out: &mut Vec<u8>) {
    let mut ids: Vec<&String> = layouts.keys().collect();
    ids.sort();
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        let l = &layouts[id];
        out.extend_from_slice(&(id.len() as u32).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&(l.intervals.len() as u32).to_le_bytes());
        for (iv, floor) in l.intervals.iter().zip(&l.floors) {
            out.push(iv.unit as u8);
            out.extend_from_slice(&iv.count.to_le_bytes());
            out.extend_from_slice(&floor.to_le_bytes());
        }
    }
}

const UNITS: [IntervalUnit; 7] = [
    IntervalUnit::Second,
    IntervalUnit::Minute,
    IntervalUnit::Hour,
    IntervalUnit::Day,
    IntervalUnit::Week,
    IntervalUnit::Month,
    IntervalUnit::Year,
];

/// Reads the tier section written by [`encode_layouts`]; returns the layouts and the bytes
/// used. Every layout must name a filter of `plan`, start at its interval, nest, and have
/// non-increasing floors, else `Error::Snapshot` says which.
pub fn decode_layouts(buf: &[u8], plan: &Plan) -> Result<(HashMap<String, TierLayout>, usize)> {
    let bad = |reason: String| Error::Snapshot { reason };
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= buf.len())
            .ok_or_else(|| bad("tier section is truncated".into()))?;
        let s = &buf[pos..end];
        pos = end;
        Ok(s)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("4 bytes"));
    let count = u32_of(take(4)?) as usize;
    let mut out = HashMap::new();
    for _ in 0..count {
        let len = u32_of(take(4)?) as usize;
        let id = std::str::from_utf8(take(len)?)
            .map_err(|_| bad("tier section: filter id is not UTF-8".into()))?
            .to_owned();
        let def = plan
            .filter(&id)
            .ok_or_else(|| bad(format!("tier section names unknown filter {id:?}")))?;
        let n = u32_of(take(4)?) as usize;
        if n == 0 || n > 8 {
            return Err(bad(format!("filter {id:?} has {n} tiers")));
        }
        let mut layout = TierLayout {
            intervals: Vec::with_capacity(n),
            floors: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let unit = *UNITS
                .get(take(1)?[0] as usize)
                .ok_or_else(|| bad(format!("filter {id:?}: unknown tier unit")))?;
            let iv = Interval::new(unit, i64::from(u32_of(take(4)?)))
                .map_err(|r| bad(format!("filter {id:?}: {r}")))?;
            let floor = i64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            layout.intervals.push(iv);
            layout.floors.push(floor);
        }
        let nested = layout
            .intervals
            .windows(2)
            .all(|w| crate::config::nests_in(w[0], w[1]));
        let ordered = layout.floors.windows(2).all(|w| w[0] >= w[1]);
        if layout.intervals[0] != def.interval || !nested || !ordered {
            return Err(bad(format!(
                "filter {id:?} has an inconsistent tier layout"
            )));
        }
        out.insert(id, layout);
    }
    Ok((out, pos))
}

/// The report as JSON (the binding's and CLI's shape).
#[must_use]
pub fn report_json(r: &CompactReport) -> Json {
    json!({
        "cells_merged": r.cells_merged,
        "cells_dropped": r.cells_dropped,
        "groups_released": r.groups_released,
        "bytes_freed": r.bytes_freed,
        "filters": r.filters,
        "skipped": r.skipped.iter().map(|(id, why)| json!({"filter_id": id, "reason": why})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_retention, IngestDef};
    use crate::engine::Engine;
    use crate::query::{self, Query};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 86_400_000;
    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000;

    fn filter(retention: Option<Json>) -> Json {
        let mut f = json!({
            "id": "f", "intervalType": "MINUTE", "intervalCount": 1,
            "groupings": ["$.g"],
            "aggregations": [
                {"id": 1, "calculations": ["COUNT", "SUM", "AVG", "MIN", "MAX", "PERCENTILES"],
                 "calculationField": "$.v"},
                {"id": 2, "calculations": ["APPROX_COUNT_DISTINCT"], "calculationField": "$.u"}
            ]
        });
        if let Some(r) = retention {
            f["retention"] = r;
        }
        f
    }

    fn tiers() -> Json {
        json!([
            {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 86_400},
            {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 3 * 86_400},
            {"intervalType": "DAY", "intervalCount": 1, "keepSeconds": 0}
        ])
    }

    fn engine(f: &Json) -> Engine {
        let ingest = IngestDef::from_json(&json!({
            "id": "i", "timestamp": {"source": "PROPERTY", "path": "$.t", "format": "UNIX_MILLISECONDS"}
        }))
        .unwrap();
        Engine::new(vec![ingest], vec![FilterDef::from_json(f).unwrap()]).unwrap()
    }

    /// An engine with the test tiers that ingested five days of [`batches`].
    fn tiered_five_days() -> Engine {
        let mut e = engine(&filter(Some(tiers())));
        for b in batches(5) {
            e.ingest(&b, None, T0).unwrap();
        }
        e
    }

    /// Deterministic events: one every 7 minutes per group over `days`, values varying.
    fn batches(days: i64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut seed = 17u64;
        for d in 0..days {
            let mut events = Vec::new();
            let mut t = T0 + d * DAY;
            while t < T0 + (d + 1) * DAY {
                for g in ["a", "b", "c"] {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let v = (seed >> 40) % 1000;
                    let u = (seed >> 20) % 50;
                    events.push(format!(
                        r#"{{"t":{},"g":"{g}","v":{v}.25,"u":"u{u}"}}"#,
                        t + (seed % 60_000) as i64
                    ));
                }
                t += 7 * MIN;
            }
            out.push(format!("[{}]", events.join(",")).into_bytes());
        }
        out
    }

    fn run(e: &Engine, q: &Json) -> Vec<(i64, String, f64)> {
        let plan = e.plan.clone();
        let lookup = |id: &str| plan.filter(id).cloned();
        let q = Query::from_json(q, &lookup).unwrap();
        let def = plan.filter("f").unwrap();
        let rs = query::run(def, &e.store.states["f"], &q, i64::MAX);
        (0..rs.dt.len())
            .map(|i| {
                (
                    rs.dt[i],
                    rs.tuple(rs.group[i]).collect::<Vec<_>>().join("/"),
                    rs.value[i],
                )
            })
            .collect()
    }

    fn q(agg: i64, calc: &str, start: i64, end: i64, rollup: Option<&str>) -> Json {
        let mut v = json!({
            "filterId": "f", "aggregationId": agg, "calculation": calc, "percentile": 0.9,
            "startTime": format_rfc3339(start), "endTime": format_rfc3339(end),
        });
        if let Some(r) = rollup {
            v["recalculatedInterval"] = json!({"type": r, "frequency": 1});
        }
        v
    }

    const CALCS: [(i64, &str); 7] = [
        (1, "COUNT"),
        (1, "SUM"),
        (1, "AVG"),
        (1, "MIN"),
        (1, "MAX"),
        (1, "PERCENTILES"),
        (2, "APPROX_COUNT_DISTINCT"),
    ];

    #[test]
    fn compaction_is_exact_per_tier_and_drops_nothing_kept() {
        let mut tiered = engine(&filter(Some(tiers())));
        let mut plain = engine(&filter(None));
        for b in batches(6) {
            tiered.ingest(&b, None, T0).unwrap();
            plain.ingest(&b, None, T0).unwrap();
        }
        let now = T0 + 6 * DAY;
        let report = compact_store(&mut tiered.store, &tiered.plan, now, &[]);
        assert!(report.cells_merged > 0);
        assert_eq!(report.cells_dropped, 0, "the last tier keeps forever");
        let layout = &tiered.store.layouts["f"];
        // Minutes younger than a day (aligned to the hour), hours younger than 3 days (aligned
        // to the day), days forever.
        assert_eq!(layout.floors, vec![now - DAY, now - 3 * DAY, i64::MIN]);
        for (agg, calc) in CALCS {
            // Tier 0: minute buckets unchanged.
            let w = (now - DAY, now);
            assert_eq!(
                run(&tiered, &q(agg, calc, w.0, w.1, None)),
                run(&plain, &q(agg, calc, w.0, w.1, None)),
                "{calc} minutes"
            );
            // Tier 1: hour buckets equal the hourly rollup.
            let w = (now - 3 * DAY, now - DAY);
            assert_eq!(
                run(&tiered, &q(agg, calc, w.0, w.1, None)),
                run(&plain, &q(agg, calc, w.0, w.1, Some("HOUR"))),
                "{calc} hours"
            );
            // Tier 2, and a daily rollup over all tiers.
            assert_eq!(
                run(&tiered, &q(agg, calc, T0, now, Some("DAY"))),
                run(&plain, &q(agg, calc, T0, now, Some("DAY"))),
                "{calc} days"
            );
        }
        // Every row is at its tier's resolution.
        let s = &tiered.store.states["f"];
        for &b in &s.row_bucket {
            let t = layout.tier_of(b).unwrap();
            assert_eq!(layout.intervals[t].bucket_start(b), b);
        }
        // Compacting again at the same time does nothing.
        let again = compact_store(&mut tiered.store, &tiered.plan, now, &[]);
        assert_eq!((again.cells_merged, again.cells_dropped), (0, 0));
    }

    #[test]
    fn late_rows_land_in_their_tier_once() {
        let mut tiered = engine(&filter(Some(tiers())));
        let mut plain = engine(&filter(None));
        let all = batches(6);
        for b in &all[..5] {
            tiered.ingest(b, None, T0).unwrap();
            plain.ingest(b, None, T0).unwrap();
        }
        let now = T0 + 6 * DAY;
        compact_store(&mut tiered.store, &tiered.plan, now, &[]);
        // A replayed or late batch: day 1 (tier 2) and day 5 (tier 0) events.
        let late = br#"[{"t":1704160800000,"g":"a","v":5,"u":"x"},{"t":1704506400000,"g":"z","v":7,"u":"y"}]"#;
        tiered.ingest(late, None, T0).unwrap();
        plain.ingest(late, None, T0).unwrap();
        tiered.ingest(&all[5], None, T0).unwrap();
        plain.ingest(&all[5], None, T0).unwrap();
        for (agg, calc) in CALCS {
            assert_eq!(
                run(&tiered, &q(agg, calc, T0, now, Some("DAY"))),
                run(&plain, &q(agg, calc, T0, now, Some("DAY"))),
                "{calc}"
            );
        }
    }

    #[test]
    fn data_past_the_last_tier_is_dropped_and_groups_released() {
        let r = json!([
            {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 3600},
            {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 86_400}
        ]);
        let mut e = engine(&filter(Some(r)));
        e.ingest(
            br#"[{"t":1704067200000,"g":"old","v":1,"u":"a"}]"#,
            None,
            T0,
        )
        .unwrap();
        for b in batches(3) {
            e.ingest(&b, None, T0).unwrap();
        }
        let before = e.store.states["f"].groups.len();
        let now = T0 + 3 * DAY;
        let report = compact_store(&mut e.store, &e.plan, now, &[]);
        assert!(report.cells_dropped > 0);
        assert_eq!(
            report.groups_released, 1,
            "the \"old\" tuple has no cell left"
        );
        assert_eq!(e.store.states["f"].groups.len(), before - 1);
        assert!(report.bytes_freed > 0);
        let s = &e.store.states["f"];
        assert!(s.row_bucket.iter().all(|&b| b >= now - DAY - HOUR));
        // A batch older than the last tier adds nothing.
        let rows = s.rows();
        e.ingest(
            br#"[{"t":1704067200000,"g":"old","v":1,"u":"a"}]"#,
            None,
            T0,
        )
        .unwrap();
        assert_eq!(e.store.states["f"].rows(), rows);
    }

    #[test]
    fn snapshots_carry_the_layout() {
        let mut e = engine(&filter(Some(tiers())));
        for b in batches(4) {
            e.ingest(&b, None, T0).unwrap();
        }
        compact_store(&mut e.store, &e.plan, T0 + 4 * DAY, &[]);
        let bytes = crate::snapshot::encode(&e.plan, &e.store);
        let back = crate::snapshot::decode(&bytes).unwrap();
        assert_eq!(back.store.layouts, e.store.layouts);
        assert_eq!(back.store.states["f"].rows(), e.store.states["f"].rows());
    }

    #[test]
    fn default_tiers_fit_the_filter_interval() {
        let default = parse_retention(
            &json!([
                {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 604_800},
                {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 34_560_000},
                {"intervalType": "DAY", "intervalCount": 1, "keepSeconds": 0}
            ]),
            None,
            "retention",
        )
        .unwrap();
        let five = Interval::new(IntervalUnit::Minute, 5).unwrap();
        let fitted = fit_default_retention(&default, five);
        assert_eq!(fitted.len(), 3);
        assert_eq!(fitted[0].interval, five);
        assert_eq!(fitted[0].keep_ms, 604_800_000);
        let seven = Interval::new(IntervalUnit::Minute, 7).unwrap();
        let fitted = fit_default_retention(&default, seven);
        assert_eq!(fitted.len(), 1, "7 minutes nests in neither hours nor days");
        assert_eq!(
            fitted[0].keep_ms, 0,
            "kept as long as the default's last tier"
        );
        let hour = Interval::new(IntervalUnit::Hour, 1).unwrap();
        let fitted = fit_default_retention(&default, hour);
        assert_eq!(fitted.len(), 2);
        assert_eq!(fitted[0].keep_ms, 34_560_000_000);
    }

    #[test]
    fn retention_is_validated_with_the_field_named() {
        let base = Interval::new(IntervalUnit::Minute, 1).unwrap();
        let err = |v: Json| match parse_retention(&v, Some(base), "retention") {
            Err(Error::Config { field, reason }) => format!("{field}: {reason}"),
            other => panic!("expected an error, got {other:?}"),
        };
        let t = |unit: &str, count: i64, keep: i64| json!({"intervalType": unit, "intervalCount": count, "keepSeconds": keep});
        assert!(err(json!([t("HOUR", 1, 10)])).starts_with("retention[0].intervalCount"));
        assert!(err(json!([
            t("MINUTE", 1, 10),
            t("MINUTE", 7, 20),
            t("HOUR", 1, 30)
        ]))
        .starts_with("retention[2].intervalCount"));
        assert!(err(json!([t("MINUTE", 1, 100), t("HOUR", 1, 50)]))
            .starts_with("retention[1].keepSeconds"));
        assert!(err(json!([t("MINUTE", 1, 0), t("HOUR", 1, 50)]))
            .starts_with("retention[0].keepSeconds"));
        assert!(err(json!([t("MINUTE", 1, -1)])).starts_with("retention[0].keepSeconds"));
        assert!(err(json!([
            t("MINUTE", 1, 60),
            t("WEEK", 1, 600),
            t("MONTH", 1, 6000)
        ]))
        .starts_with("retention[2].intervalCount"));
        assert!(err(json!([t("MINUTE", 1, 60), {"intervalType": "HOUR"}]))
            .starts_with("retention[1].keepSeconds"));
        assert!(err(json!([])).starts_with("retention:"));
        let ok = parse_retention(
            &json!([
                t("MINUTE", 1, 60),
                t("DAY", 1, 600),
                t("MONTH", 3, 6000),
                t("YEAR", 1, 0)
            ]),
            Some(base),
            "retention",
        )
        .unwrap();
        assert_eq!(ok.len(), 4);
        // The definition round-trips through its JSON.
        let def = FilterDef::from_json(&filter(Some(tiers()))).unwrap();
        assert_eq!(FilterDef::from_json(&def.to_json()).unwrap(), def);
    }

    #[test]
    fn calendar_tiers_compact_into_months() {
        let r = json!([
            {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 86_400},
            {"intervalType": "MONTH", "intervalCount": 1, "keepSeconds": 0}
        ]);
        let mut tiered = engine(&filter(Some(r)));
        let mut plain = engine(&filter(None));
        for b in batches(40) {
            tiered.ingest(&b, None, T0).unwrap();
            plain.ingest(&b, None, T0).unwrap();
        }
        let now = T0 + 40 * DAY;
        compact_store(&mut tiered.store, &tiered.plan, now, &[]);
        // January is whole and older than a day: one month bucket per group.
        let feb = T0 + 31 * DAY;
        assert_eq!(tiered.store.layouts["f"].floors[0], feb);
        for (agg, calc) in CALCS {
            assert_eq!(
                run(&tiered, &q(agg, calc, T0, feb, None)),
                run(&plain, &q(agg, calc, T0, feb, Some("MONTH"))),
                "{calc}"
            );
        }
        let res = resolutions_json(
            tiered.plan.filter("f").unwrap(),
            tiered.store.layouts.get("f"),
            T0,
            now,
        );
        assert_eq!(res.as_array().unwrap().len(), 2);
        assert_eq!(res[0]["intervalType"], "MINUTE");
        assert_eq!(res[1]["intervalType"], "MONTH");
    }

    #[test]
    fn version_1_snapshots_of_main_still_load_and_compact() {
        // Written by `tests/data/snapshots/mk_v1.rs` with main at 71c3196 (format version 1).
        let v1 = include_bytes!("../../../tests/data/snapshots/v1-main-71c3196.etsnap");
        assert_eq!(&v1[8..12], &1u32.to_le_bytes());
        let mut e = crate::snapshot::decode(v1).unwrap();
        assert!(e.store.layouts.is_empty());
        let rows = e.store.states["f"].rows();
        assert!(rows > 0);
        let default = parse_retention(&tiers(), None, "default").unwrap();
        let now = T0 + 2 * DAY;
        let report = compact_store(&mut e.store, &e.plan, now, &default);
        assert!(report.cells_merged > 0);
        assert!(e.store.states["f"].rows() < rows);
        let again = crate::snapshot::decode(&crate::snapshot::encode(&e.plan, &e.store)).unwrap();
        assert_eq!(again.store.layouts, e.store.layouts);
    }

    /// Runs `c` to its end in steps of `budget`, calling `between(step, engine)` after each
    /// step (with the "lock" released); returns every step's work.
    fn stepped_run(
        e: &mut Engine,
        c: &mut Compaction,
        budget: StepBudget,
        mut between: impl FnMut(usize, &mut Engine),
    ) -> Vec<StepWork> {
        let mut works = Vec::new();
        loop {
            let plan = e.plan.clone();
            let (work, done) = c.step(&mut e.store, &plan, budget);
            works.push(work);
            if done {
                return works;
            }
            c.between_steps();
            between(works.len(), e);
        }
    }

    #[test]
    fn small_steps_give_the_one_step_answer() {
        let (mut stepped, mut whole) = (tiered_five_days(), tiered_five_days());
        let now = T0 + 5 * DAY;
        let one = compact_store(&mut whole.store, &whole.plan, now, &[]);
        let budget = StepBudget {
            scan: 97,
            moves: 41,
        };
        // Batches between two steps, old (routed into a coarse tier) and new, during the scan
        // and during the moves; `whole` gets them after its compaction.
        let late = |i: usize| {
            format!(
                r#"[{{"t":{},"g":"a","v":2,"u":"q{i}"}},{{"t":{},"g":"n{i}","v":3,"u":"r"}}]"#,
                1_704_200_000_000_i64 + i as i64 * 3_600_000,
                now - 1000
            )
        };
        let mut sent = Vec::new();
        let mut c = Compaction::new(now, Vec::new());
        let works = stepped_run(&mut stepped, &mut c, budget, |step, e| {
            if step % 7 == 3 {
                e.ingest(late(step).as_bytes(), None, T0).unwrap();
                sent.push(step);
            }
        });
        for i in &sent {
            whole.ingest(late(*i).as_bytes(), None, T0).unwrap();
        }
        assert!(works.len() > 30, "{} steps", works.len());
        assert!(works.iter().any(|w| w.scanned > 0) && works.iter().any(|w| w.moved > 0));
        assert_eq!(c.report().cells_merged, one.cells_merged);
        assert_eq!(c.report().cells_dropped, one.cells_dropped);
        for (agg, calc) in CALCS {
            for rollup in [None, Some("HOUR"), Some("DAY")] {
                assert_eq!(
                    run(&stepped, &q(agg, calc, T0, now, rollup)),
                    run(&whole, &q(agg, calc, T0, now, rollup)),
                    "{calc} {rollup:?}"
                );
            }
        }
    }

    #[test]
    fn each_step_is_bounded_by_its_budget_not_the_state() {
        let mut e = engine(&filter(Some(tiers())));
        for b in batches(6) {
            e.ingest(&b, None, T0).unwrap();
        }
        let rows = e.store.states["f"].rows() as u64;
        let budget = StepBudget {
            scan: 500,
            moves: 50,
        };
        let mut c = Compaction::new(T0 + 6 * DAY, Vec::new());
        let works = stepped_run(&mut e, &mut c, budget, |_, _| {});
        let scanned: u64 = works.iter().map(|w| w.scanned).sum();
        let moved: u64 = works.iter().map(|w| w.moved).sum();
        // One scan of the state, then every move once.
        assert_eq!(scanned, rows);
        assert_eq!(moved, c.report().cells_merged + c.report().cells_dropped);
        for w in &works {
            assert!(w.scanned <= 500, "{w:?}");
            assert!(
                w.scanned == 0 || w.moved == 0,
                "a step scans or moves: {w:?}"
            );
            // A step ends at a cell boundary: at most one coarse cell's sources past the
            // budget (a day cell of minutes has 1,439 sources besides its own row).
            assert!(w.moved <= 50 + 1439, "{w:?}");
        }
        // Cells here have about 206 sources (one event every 7 minutes per group and day): a
        // step that went past the budget did so by less than one cell.
        assert!(works.iter().all(|w| w.moved < 50 + 210), "{works:?}");
        // The plan moved every out-of-place row: nothing is left to do.
        let again = compact_store(&mut e.store, &e.plan, T0 + 6 * DAY, &[]);
        assert_eq!((again.cells_merged, again.cells_dropped), (0, 0));
    }

    #[test]
    fn a_plan_made_stale_between_steps_is_made_again() {
        let (mut stepped, mut whole) = (tiered_five_days(), tiered_five_days());
        let now = T0 + 5 * DAY;
        let budget = StepBudget {
            scan: 300,
            moves: 60,
        };
        // `drop_before` renumbers grouping tuples and moves rows: planned rows and tuple ids
        // are stale after it. Done once the moves have started.
        let mut c = Compaction::new(now, Vec::new());
        let mut dropped_at = None;
        let epoch = stepped.store.states["f"].epoch();
        stepped_run(&mut stepped, &mut c, budget, |step, e| {
            let state = e.store.states.get_mut("f").unwrap();
            if dropped_at.is_none() && state.epoch() != epoch {
                state.drop_before(T0 + 2 * DAY);
                dropped_at = Some(step);
            }
        });
        assert!(dropped_at.is_some());
        compact_store(&mut whole.store, &whole.plan, now, &[]);
        whole
            .store
            .states
            .get_mut("f")
            .unwrap()
            .drop_before(T0 + 2 * DAY);
        for (agg, calc) in CALCS {
            assert_eq!(
                run(&stepped, &q(agg, calc, T0, now, None)),
                run(&whole, &q(agg, calc, T0, now, None)),
                "{calc}"
            );
        }
        let again = compact_store(&mut stepped.store, &stepped.plan, now, &[]);
        assert_eq!((again.cells_merged, again.cells_dropped), (0, 0));
    }
}
