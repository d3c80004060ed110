//! The engine as threads share it: a compiled [`Plan`] and the aggregate [`EngineState`] behind their
//! own locks, so batches are parsed and evaluated concurrently and only the merge is serialized.
//! The Python binding wraps a [`SharedEngine`] and only converts; every rule below is decided
//! here, once.
//!
//! # The lock order
//!
//! The locks of this module, and the only order in which they may be nested:
//!
//! 0. [`SharedEngine`]'s compaction lock (`Mutex<()>`): held for a whole compaction, which
//!    takes the store lock for each bounded step only, after callers already waiting for it
//!    (counted in `store_waiters`) got it; nothing but a compaction takes it.
//! 1. [`PreparedBatch`]'s slot (`Mutex<Slot>`): held just long enough to move the slot between
//!    `Ready`, `Applying` and `Applied`; nothing else is locked or waited for while it is held,
//!    and a second `apply` of one batch is refused at once instead of waiting.
//! 2. [`SharedEngine`]'s store (`Mutex<EngineState>`): the aggregate state.
//! 3. [`SharedEngine`]'s pending queue (`Mutex<Pending>`): held only to look at, push to or take
//!    the queue (never while waiting for anything else); a batch takes it without the store
//!    lock, a compaction step while it holds the store lock.
//! 4. [`SharedEngine`]'s plan (`RwLock<Arc<Plan>>`): read (an `Arc` clone) under the store lock
//!    or the pending lock, written only by a definition edit, which holds the store lock first.
//!
//! [`SharedEngine::merge`] never holds two engines' store locks together: it clones the other
//! state first. No guard outlives a method of this module, and no callback a caller passes in
//! (file progress) is called while a lock is held, so a binding may run every method detached
//! from its interpreter and re-attach from a callback without risking a deadlock.
//!
//! # The prepare-again rule
//!
//! Input is evaluated against the plan current when it is read, without any lock; applying
//! takes the store lock and checks the plan is still the same. When the definitions changed in
//! between (a filter or an ingest was edited), the input is evaluated again against the new
//! plan, its ingest resolved by id (not by position), and the check repeats. This holds for
//! every way in: [`SharedEngine::ingest`], [`SharedEngine::apply`] of a [`PreparedBatch`],
//! [`SharedEngine::ingest_file`], [`SharedEngine::ingest_file_bytes`] and
//! [`SharedEngine::ingest_files`]. So an ingest never fails because a definition was edited
//! concurrently; it fails only when its own ingest was removed (`NotFound`) or when the new
//! filters refuse the input. Evaluating again runs outside the store lock, so a large file
//! being read again does not hold back other batches.
//!
//! # The pending queue: batches do not wait for a compaction
//!
//! A compaction runs in bounded steps, each under the store lock. While a step holds it, the
//! queue is *open*: a batch that finds it open (and was prepared against the current plan)
//! pushes its delta and returns its stats at once, without waiting for the lock. Before a step
//! releases the lock it closes the queue and applies what it holds, in order (all under the
//! store lock), so:
//!
//! - whenever the store lock is free the queue is empty, and every other holder (a query, a
//!   snapshot, `state_bytes`, a merge, `drop_before`, a definition edit) sees every batch whose
//!   ingest returned: read-your-writes holds without those holders draining anything;
//! - the stats a deferred batch returns are its own delta's, the same numbers applying it
//!   would return (applying only merges rows into place);
//! - the one thing deferred is the counter-overflow check of [`EngineState::apply`] (a COUNT
//!   past 2^64 - 1): a queued batch that would overflow is not applied when the step drains it,
//!   and is counted in the compaction report's `batches_refused` (one that is applied directly
//!   is refused with an error instead). `batches_deferred` counts the queued batches;
//! - the queue is closed when the step starts draining it: a batch arriving during the drain
//!   waits for the lock as before. So the drain is bounded by what arrived during the step
//!   (draining until the queue stays empty handed saturating ingest's whole apply work to the
//!   compaction thread: 7-9 s instead of 1-3 s for 1.44 M cells, benches/README.md);
//! - [`SharedEngine::state_bytes`] does not wait for a step either: it reports the state as of
//!   the step's start plus the queued deltas' bytes, so the state-limit check counts them.
//!
//! The WAL is unaffected: a batch is logged before its `apply`, and merges are order-
//! independent (up to floating-point summation order), so replay in log order gives the state.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value as Json};

use crate::config::{parse_retention, FilterDef, IngestDef};
use crate::engine::{Delta, EngineState, IngestStats, Plan};
use crate::error::{Error, Result};
use crate::query::{self, Query, ResultSet};
use crate::response::{self, AnswerLimits, ChunkedAnswer, MultiWriter};
use crate::state::FilterState;
use crate::{fanout, file, parallel, retention, snapshot, time};

/// Queries of a multi request evaluated together (and results held at once) at most.
const MULTI_WAVE: usize = 8;

/// Stored rows a wave of multi queries must read, together, before it is spread over threads:
/// below this the queries take well under a millisecond and a thread costs more than it saves.
const FANOUT_MIN_ROWS: usize = 50_000;

/// What one compaction step may do while holding the state lock: an old row scanned costs a
/// tier lookup and a push, a move (about 0.5 us) a merge and three index updates, so either
/// bound is about 0.1-0.2 ms of work; a batch waits for one step at most, and this keeps its
/// p99 near its usual value (benches/README.md, issue 10).
const COMPACT_STEP: retention::StepBudget = retention::StepBudget {
    scan: 4_096,
    moves: 256,
};

/// How long a compaction step gives way to callers waiting for the store lock before it takes
/// the lock anyway (so a steady stream of batches cannot starve a compaction).
const COMPACT_GIVE_WAY: Duration = Duration::from_millis(2);

/// A plan and its state, shared by threads (see the module docs for the locks and the rules).
#[derive(Debug)]
pub struct SharedEngine {
    plan: RwLock<Arc<Plan>>,
    store: Mutex<EngineState>,
    /// Held for a whole [`SharedEngine::compact`], so compactions run one at a time.
    compacting: Mutex<()>,
    /// Callers waiting for (or about to take) the store lock through `lock_store`: a
    /// compaction lets them go first between its steps, since the mutex is not fair and the
    /// compaction would otherwise take it back at once, step after step.
    store_waiters: AtomicUsize,
    /// Batches left for the compaction step holding the store lock (module docs).
    pending: Mutex<Pending>,
    /// [`EngineState::heap_bytes`] when the current compaction step took the store lock.
    step_bytes: AtomicUsize,
    /// Test hook: microseconds each compaction step keeps the store lock after its work, so
    /// tests can make every concurrent batch take the pending path.
    step_hold_us: AtomicU64,
    /// Test hook: while held, each compaction step keeps the store lock (the queue open) until
    /// a caller waits for it, so a batch the test sends meanwhile is queued whatever the timing.
    #[cfg(test)]
    step_gate: StepGate,
}

/// While held, each compaction step keeps the store lock (and the pending queue open) until a
/// caller waits for the store lock: a batch sent meanwhile is queued whatever the timing, and
/// the test's next query or snapshot lets the step go (a step held for a fixed time instead
/// may end before the test's batch arrives on a busy machine).
#[cfg(test)]
#[derive(Debug, Default)]
struct StepGate {
    held: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl StepGate {
    /// Holds the steps until the guard is dropped (also when the test panics, so the
    /// compaction it started can finish and be joined).
    fn hold(&self) -> HeldSteps<'_> {
        self.held.store(true, Ordering::SeqCst);
        HeldSteps(self)
    }

    /// Called by a step holding the store lock. Bounded, so a test that fails while holding
    /// the steps cannot hang the compaction thread.
    fn pass(&self, store_waiters: &AtomicUsize) {
        let since = Instant::now();
        while self.held.load(Ordering::SeqCst) && store_waiters.load(Ordering::SeqCst) == 0 {
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "a held compaction step was never let go"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Lets the steps go when dropped.
#[cfg(test)]
struct HeldSteps<'a>(&'a StepGate);

#[cfg(test)]
impl Drop for HeldSteps<'_> {
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::SeqCst);
    }
}

/// The store lock as a compaction step holds it, with the pending queue open: dropping it
/// drains and closes the queue before the lock is released, also when the step panics (a
/// queued batch already returned, so it must not be left behind).
struct CompactionStep<'a> {
    engine: &'a SharedEngine,
    store: MutexGuard<'a, EngineState>,
    /// The plan, which cannot change while the store lock is held.
    plan: Arc<Plan>,
}

impl Drop for CompactionStep<'_> {
    fn drop(&mut self) {
        self.engine.drain_and_close(&mut self.store, &self.plan);
    }
}

/// The pending queue (module docs); lock 3 of the lock order.
#[derive(Debug, Default)]
struct Pending {
    /// True while a compaction step holds the store lock and will drain `queue` before it
    /// releases it; set and cleared by that step, under the store lock.
    open: bool,
    queue: Vec<Delta>,
    /// Approximate heap bytes of the queued deltas.
    bytes: usize,
    /// Batches queued, and queued batches refused when drained, since the compaction started.
    deferred: u64,
    refused: u64,
}

/// Where a prepared batch is in its life: the one `apply` that takes it moves it from `Ready` to
/// `Applying`, and on to `Applied` (or back to `Ready` when applying failed and nothing changed).
#[derive(Debug)]
enum Slot {
    Ready(Delta),
    Applying,
    Applied,
}

/// A batch parsed and evaluated against a plan, not yet applied; `D` holds the batch's bytes
/// (kept to evaluate it again if the definitions change before it is applied).
#[derive(Debug)]
pub struct PreparedBatch<D> {
    plan: Arc<Plan>,
    /// Lock 1 of the lock order.
    slot: Mutex<Slot>,
    stats: IngestStats,
    data: D,
    /// The ingest the batch was prepared for, resolved to its id.
    ingest: String,
    now_ms: i64,
}

impl<D: AsRef<[u8]>> PreparedBatch<D> {
    /// The stats the batch reports when applied (if the definitions do not change meanwhile).
    #[must_use]
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Takes the delta for the caller's `apply`; a second caller is refused at once (it never
    /// waits for the first one to finish).
    fn take_for_apply(&self) -> Result<Delta> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Applying) {
            Slot::Ready(delta) => Ok(delta),
            Slot::Applying => Err(Error::Config {
                field: "prepared".into(),
                reason: "this batch is being applied by another thread".into(),
            }),
            Slot::Applied => {
                *slot = Slot::Applied;
                Err(Error::Config {
                    field: "prepared".into(),
                    reason: "this batch was already applied".into(),
                })
            }
        }
    }

    fn set_slot(&self, next: Slot) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// Moves the batch's slot after an apply: `Applied`, or `Ready` again when nothing was
    /// applied (its delta evaluated again against its own plan, which accepted it before).
    fn settle(&self, applied: Result<IngestStats>) -> Result<IngestStats> {
        let batch = self;
        match applied {
            Ok(stats) => {
                batch.set_slot(Slot::Applied);
                Ok(stats)
            }
            Err(e) => {
                let again = batch
                    .plan
                    .ingest_index(Some(&batch.ingest))
                    .and_then(|i| batch.plan.prepare(batch.data.as_ref(), i, batch.now_ms));
                batch.set_slot(match again {
                    Ok(delta) => Slot::Ready(delta),
                    Err(_) => Slot::Applied,
                });
                Err(e)
            }
        }
    }
}

/// What [`SharedEngine::answer`] is asked for (spec 7.2, 7.3 and 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// Rows of one query.
    Rows,
    /// The compact `?multi=true` rows of one query or a list of them.
    Multi,
    /// Distinct values of a grouping.
    Groupings,
}

/// The outcome of [`SharedEngine::answer`] for a body that did not raise.
#[derive(Debug)]
pub enum Answer {
    /// The answer text in chunks, and its total length.
    Text(Vec<Vec<u8>>, usize),
    /// The body is not strict JSON (the caller's own JSON parser decides what it is).
    NotJson,
    /// The body is JSON of the wrong shape for the kind.
    WrongShape,
}

/// Definitions from JSON: `ingests` is one ingest definition or a list, `filters` a list.
/// Errors name the definition's index (`ingests[1].schema`).
pub fn definitions_from_json(
    ingests: &Json,
    filters: &Json,
) -> Result<(Vec<IngestDef>, Vec<FilterDef>)> {
    let ingest_list = match ingests {
        Json::Array(a) => a.as_slice(),
        other => std::slice::from_ref(other),
    };
    let ingests = ingest_list
        .iter()
        .enumerate()
        .map(|(i, v)| IngestDef::from_json(v).map_err(|e| e.under(&format!("ingests[{i}]"))))
        .collect::<Result<Vec<_>>>()?;
    let filter_list = filters.as_array().ok_or_else(|| Error::Config {
        field: "filters".into(),
        reason: "must be a list of filter definitions".into(),
    })?;
    let filters = filter_list
        .iter()
        .enumerate()
        .map(|(i, v)| FilterDef::from_json(v).map_err(|e| e.under(&format!("filters[{i}]"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((ingests, filters))
}

/// Refuses an ingest time outside the years the calendar handles.
fn check_now(now_ms: i64) -> Result<()> {
    if (time::MIN_MILLIS..=time::MAX_MILLIS).contains(&now_ms) {
        Ok(())
    } else {
        Err(Error::Limit {
            reason: format!("ingest time {now_ms} ms is outside the years 0000-9999"),
        })
    }
}

impl SharedEngine {
    /// An engine for these definitions, with empty state.
    pub fn new(ingests: Vec<IngestDef>, filters: Vec<FilterDef>) -> Result<SharedEngine> {
        let plan = Plan::new(ingests, filters)?;
        let mut store = EngineState::default();
        store.sync(&plan);
        Ok(SharedEngine::from_parts(plan, store))
    }

    /// An engine from JSON definitions (see [`definitions_from_json`]).
    pub fn from_json(ingests: &Json, filters: &Json) -> Result<SharedEngine> {
        let (i, f) = definitions_from_json(ingests, filters)?;
        SharedEngine::new(i, f)
    }

    fn from_parts(plan: Plan, mut store: EngineState) -> SharedEngine {
        store.recount_bytes();
        SharedEngine {
            plan: RwLock::new(Arc::new(plan)),
            store: Mutex::new(store),
            compacting: Mutex::new(()),
            store_waiters: AtomicUsize::new(0),
            pending: Mutex::new(Pending::default()),
            step_bytes: AtomicUsize::new(0),
            step_hold_us: AtomicU64::new(0),
            #[cfg(test)]
            step_gate: StepGate::default(),
        }
    }

    // A panic while a lock is held (a bug) must not turn every later call into a failure: the
    // state is only changed by merges, which leave it consistent row by row, so the data behind
    // a poisoned lock is still usable.

    /// The current plan.
    #[must_use]
    pub fn plan(&self) -> Arc<Plan> {
        self.plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_store(&self) -> MutexGuard<'_, EngineState> {
        self.store_waiters.fetch_add(1, Ordering::SeqCst);
        let guard = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        self.store_waiters.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    fn lock_pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store lock for one compaction step, with the pending queue opened: first lets every
    /// caller already waiting for the lock take it (for up to [`COMPACT_GIVE_WAY`]; queries and
    /// snapshots wait for it, batches do not).
    fn lock_store_for_compaction(&self) -> CompactionStep<'_> {
        let since = Instant::now();
        while self.store_waiters.load(Ordering::SeqCst) > 0 && since.elapsed() < COMPACT_GIVE_WAY {
            std::thread::yield_now();
        }
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let plan = self.plan();
        self.step_bytes.store(store.heap_bytes(), Ordering::SeqCst);
        self.lock_pending().open = true;
        CompactionStep {
            engine: self,
            store,
            plan,
        }
    }

    /// Closes the pending queue and applies what it held, in order; called by a compaction
    /// step before it releases `store` (whose plan is `plan`: it cannot change while the store
    /// lock is held, and only batches of this plan are queued). Batches arriving from now on
    /// wait for the lock, so the drain is bounded by what arrived during the step.
    fn drain_and_close(&self, store: &mut EngineState, plan: &Plan) {
        let queued = {
            let mut pending = self.lock_pending();
            pending.open = false;
            pending.bytes = 0;
            std::mem::take(&mut pending.queue)
        };
        let mut refused = 0;
        for delta in queued {
            // The batch already returned: an overflow can only be counted now.
            if store.apply(plan, delta).is_err() {
                refused += 1;
            }
        }
        if refused > 0 {
            self.lock_pending().refused += refused;
        }
    }

    /// Leaves `delta` (prepared against `plan`) to the compaction step holding the store lock,
    /// when one does and `plan` is current; returns its stats then, else gives the delta back.
    fn defer(&self, plan: &Arc<Plan>, delta: Delta) -> std::result::Result<IngestStats, Delta> {
        let mut pending = self.lock_pending();
        // `open` means a compaction step holds the store lock, so no edit can change the plan
        // until it is closed.
        if !pending.open || !Arc::ptr_eq(plan, &self.plan()) {
            return Err(delta);
        }
        let stats = delta.stats.clone();
        pending.bytes += delta
            .states
            .iter()
            .map(FilterState::heap_bytes)
            .sum::<usize>();
        pending.deferred += 1;
        pending.queue.push(delta);
        Ok(stats)
    }

    /// Test hook: each compaction step keeps the store lock `hold` longer, so a concurrent
    /// batch finds the pending queue open (tests of the pending path; zero turns it off).
    pub fn hold_compaction_steps(&self, hold: Duration) {
        let us = u64::try_from(hold.as_micros()).unwrap_or(u64::MAX);
        self.step_hold_us.store(us, Ordering::SeqCst);
    }

    // ---- ingest ------------------------------------------------------------------------------

    /// Applies `delta`, evaluated against `plan` for the ingest `ingest`, under the
    /// prepare-again rule (module docs): `again` evaluates the input against a newer plan.
    fn commit(
        &self,
        mut plan: Arc<Plan>,
        mut delta: Delta,
        ingest: &str,
        mut again: impl FnMut(&Plan, usize) -> Result<Delta>,
    ) -> Result<IngestStats> {
        loop {
            delta = match self.defer(&plan, delta) {
                Ok(stats) => return Ok(stats),
                Err(delta) => delta,
            };
            {
                let mut store = self.lock_store();
                let current = self.plan();
                if Arc::ptr_eq(&plan, &current) {
                    return store.apply(&plan, delta);
                }
                plan = current;
            }
            let idx = plan.ingest_index(Some(ingest))?;
            delta = again(&plan, idx)?;
        }
    }

    /// Ingests one batch atomically.
    pub fn ingest(&self, data: &[u8], ingest_id: Option<&str>, now_ms: i64) -> Result<IngestStats> {
        let plan = self.plan();
        let idx = plan.ingest_index(ingest_id)?;
        let delta = plan.prepare(data, idx, now_ms)?;
        let ingest = plan.ingest_id(idx).to_owned();
        self.commit(plan, delta, &ingest, |p, i| p.prepare(data, i, now_ms))
    }

    /// Parses and evaluates a batch without touching the state.
    pub fn prepare<D: AsRef<[u8]>>(
        &self,
        data: D,
        ingest_id: Option<&str>,
        now_ms: i64,
    ) -> Result<PreparedBatch<D>> {
        let plan = self.plan();
        let idx = plan.ingest_index(ingest_id)?;
        let delta = plan.prepare(data.as_ref(), idx, now_ms)?;
        Ok(PreparedBatch {
            ingest: plan.ingest_id(idx).to_owned(),
            plan,
            stats: delta.stats.clone(),
            slot: Mutex::new(Slot::Ready(delta)),
            data,
            now_ms,
        })
    }

    /// Applies a prepared batch once; `ingest(x)` is `apply(prepare(x))`. A batch that is
    /// refused (a counter would overflow, its ingest was removed) stays available.
    pub fn apply<D: AsRef<[u8]>>(&self, batch: &PreparedBatch<D>) -> Result<IngestStats> {
        let delta = match self.defer(&batch.plan, batch.take_for_apply()?) {
            Ok(stats) => return batch.settle(Ok(stats)),
            Err(delta) => delta,
        };
        {
            let mut store = self.lock_store();
            if Arc::ptr_eq(&batch.plan, &self.plan()) {
                // Routed and checked here, then merged without a second check, so a refused batch
                // keeps its (routed) delta.
                let mut delta = delta;
                store.route(&batch.plan, &mut delta);
                if let Err(e) = store.check_apply(&batch.plan, &delta) {
                    drop(store);
                    batch.set_slot(Slot::Ready(delta));
                    return Err(e);
                }
                let applied = store.merge_checked(&batch.plan, delta);
                drop(store);
                return batch.settle(applied);
            }
        }
        let data = batch.data.as_ref();
        let applied = self.commit(batch.plan.clone(), delta, &batch.ingest, |p, i| {
            p.prepare(data, i, batch.now_ms)
        });
        batch.settle(applied)
    }

    /// Ingests one archive file in bounded memory, atomically. `progress(done, total)` is called
    /// (without any lock held) as the file is read; once it returns `false` it is not called
    /// again and nothing is applied: the ingest fails with a `Limit` error saying it was
    /// stopped (the file is still read to its end).
    pub fn ingest_file(
        &self,
        path: &str,
        ingest_id: Option<&str>,
        now_ms: i64,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<IngestStats> {
        let go = Cell::new(true);
        let mut report = |done: u64, total: u64| {
            if go.get() {
                go.set(progress(done, total));
            }
        };
        let plan = self.plan();
        let idx = plan.ingest_index(ingest_id)?;
        let delta = file::prepare_file(&plan, path, idx, now_ms, &mut report)?;
        let ingest = plan.ingest_id(idx).to_owned();
        let stopped = || Error::Limit {
            reason: "ingest_file was stopped".into(),
        };
        if !go.get() {
            return Err(stopped());
        }
        self.commit(plan, delta, &ingest, |p, i| {
            let delta = file::prepare_file(p, path, i, now_ms, &mut report)?;
            if go.get() {
                Ok(delta)
            } else {
                Err(stopped())
            }
        })
    }

    /// Ingests the raw bytes of one whole file (`name` gives its kind and is the path errors
    /// name), atomically.
    pub fn ingest_file_bytes(
        &self,
        data: &[u8],
        name: &str,
        ingest_id: Option<&str>,
        now_ms: i64,
    ) -> Result<IngestStats> {
        let read = |p: &Plan, i: usize| {
            file::prepare_file_bytes(p, name, data, i, now_ms)
                .map_err(|e| parallel::in_file(e, name))
        };
        let plan = self.plan();
        let idx = plan.ingest_index(ingest_id)?;
        let delta = read(&plan, idx)?;
        let ingest = plan.ingest_id(idx).to_owned();
        self.commit(plan, delta, &ingest, read)
    }

    /// Ingests many files on `threads` workers (all cores when `None`), all or nothing.
    /// `poll(done, total)` runs on this thread (without any lock held) about every 100 ms;
    /// returning `false` stops the work, applies nothing and fails with a `Limit` error.
    pub fn ingest_files(
        &self,
        paths: &[String],
        ingest_id: Option<&str>,
        now_ms: i64,
        threads: Option<usize>,
        poll: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<IngestStats> {
        let plan = self.plan();
        let idx = plan.ingest_index(ingest_id)?;
        check_now(now_ms)?;
        let threads = match threads {
            Some(0) => {
                return Err(Error::Config {
                    field: "threads".into(),
                    reason: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => parallel::default_threads(),
        };
        let mut read = |p: &Plan, i: usize| {
            parallel::prepare_files(p, paths, i, now_ms, threads, poll)?.ok_or_else(|| {
                Error::Limit {
                    reason: "ingest_files was stopped".into(),
                }
            })
        };
        let delta = read(&plan, idx)?;
        let ingest = plan.ingest_id(idx).to_owned();
        self.commit(plan, delta, &ingest, read)
    }

    // ---- queries -----------------------------------------------------------------------------

    /// Runs one query (spec 7.2) at `now_ms`.
    pub fn run_query(&self, query: &Json, now_ms: i64) -> Result<(Query, ResultSet)> {
        // State first, then plan (the lock order): the plan cannot change while the state of the
        // filter it names is read.
        let store = self.lock_store();
        let plan = self.plan();
        let q = Self::parse_query(&plan, query)?;
        let rs = Self::answer_query(&store, &plan, &q, now_ms);
        Ok((q, rs))
    }

    fn parse_query(plan: &Plan, query: &Json) -> Result<Query> {
        let lookup = |id: &str| plan.filter(id).cloned();
        Query::from_json(query, &lookup)
    }

    /// Evaluates a query parsed against `plan` (whose filters `store` has states for).
    fn answer_query(store: &EngineState, plan: &Plan, q: &Query, now_ms: i64) -> ResultSet {
        let def = plan.filter(&q.filter_id).expect("validated filter");
        let state = store.states.get(&q.filter_id).expect("synced state");
        query::run(def, state, q, now_ms)
    }
    /// Distinct values of a groupings request's `groupingName` (spec 7.4).
    pub fn grouping_values(&self, q: &Json) -> Result<Vec<String>> {
        let store = self.lock_store();
        let plan = self.plan();
        let lookup = |id: &str| plan.filter(id).cloned();
        let parsed = Query::for_groupings(q, &lookup)?;
        let def = plan.filter(&parsed.filter_id).expect("validated filter");
        let state = store.states.get(&parsed.filter_id).expect("synced state");
        query::grouping_values(def, state, &parsed)
    }

    /// Runs the queries of a multi request and hands `emit` each one's result and label (its
    /// `queryId`, else `A` when alone, else `Q<i>`) in request order, stopping at the first
    /// error, which names the query's index. The answer is the one running the queries one
    /// after the other gives.
    ///
    /// Queries run in waves of [`MULTI_WAVE`] under one hold of the store lock (so a wave sees
    /// one state), spread over the cores by [`fanout::map`] when the wave reads enough rows to
    /// be worth a thread; the lock is released before `emit` writes a wave out, and at most one
    /// wave's results are held at a time.
    fn for_each_multi(
        &self,
        list: &[Json],
        now_ms: i64,
        emit: &mut dyn FnMut(ResultSet, String) -> Result<()>,
    ) -> Result<()> {
        let label = |i: usize, parsed: Option<String>| {
            parsed.unwrap_or_else(|| {
                if list.len() == 1 {
                    "A".to_owned()
                } else {
                    format!("Q{i}")
                }
            })
        };
        for wave in (0..list.len()).step_by(MULTI_WAVE) {
            let ids = wave..list.len().min(wave + MULTI_WAVE);
            let results: Vec<Result<(ResultSet, Option<String>)>> = {
                let guard = self.lock_store();
                let store: &EngineState = &guard;
                let plan = self.plan();
                let parsed: Vec<Result<Query>> = ids
                    .clone()
                    .map(|i| {
                        Self::parse_query(&plan, &list[i]).map_err(|e| e.under(&format!("[{i}]")))
                    })
                    .collect();
                let rows: usize = parsed
                    .iter()
                    .filter_map(|q| q.as_ref().ok())
                    .map(|q| store.states.get(&q.filter_id).map_or(0, FilterState::rows))
                    .sum();
                let run = |j: usize| -> Result<(ResultSet, Option<String>)> {
                    let q = parsed[j].as_ref().map_err(Clone::clone)?;
                    Ok((
                        Self::answer_query(store, &plan, q, now_ms),
                        q.query_id.clone(),
                    ))
                };
                if parsed.len() > 1 && rows >= FANOUT_MIN_ROWS {
                    fanout::map(parsed.len(), run)
                } else {
                    (0..parsed.len()).map(run).collect()
                }
            };
            for (i, r) in ids.zip(results) {
                let (rs, qid) = r?;
                emit(rs, label(i, qid))?;
            }
        }
        Ok(())
    }

    /// Runs each query of a multi request and appends its compact rows; query errors name the
    /// query's index.
    pub fn write_multi(&self, list: &[Json], now_ms: i64, out: &mut ChunkedAnswer) -> Result<()> {
        let mut writer = MultiWriter::start(out);
        self.for_each_multi(list, now_ms, &mut |rs, qid| {
            writer.write_query(&rs, &qid, out)
        })?;
        writer.finish(out)
    }

    /// A Metrics API answer as the server sends it: the request body in, the answer text out
    /// in chunks of about `chunk_bytes`. A body that is not strict JSON, or JSON of the wrong
    /// shape (not an object, or for `Multi` not an object or an array of objects), is reported,
    /// not raised; bodies nested deeper than the core's limit, query errors and answers over
    /// `limits` are errors.
    pub fn answer(
        &self,
        kind: AnswerKind,
        body: &[u8],
        now_ms: i64,
        limits: AnswerLimits,
        chunk_bytes: usize,
    ) -> Result<Answer> {
        response::check_depth(body)?;
        let Ok(request) = serde_json::from_slice::<Json>(body) else {
            return Ok(Answer::NotJson);
        };
        let mut out = ChunkedAnswer::new(chunk_bytes, limits);
        match (kind, &request) {
            (AnswerKind::Rows, Json::Object(_)) => {
                let (_, rs) = self.run_query(&request, now_ms)?;
                response::write_rows(&rs, &mut out)?;
            }
            (AnswerKind::Groupings, Json::Object(_)) => {
                let values = self.grouping_values(&request)?;
                response::write_groupings(&values, &mut out)?;
            }
            (AnswerKind::Multi, Json::Object(_)) => {
                self.write_multi(std::slice::from_ref(&request), now_ms, &mut out)?;
            }
            (AnswerKind::Multi, Json::Array(list)) if list.iter().all(Json::is_object) => {
                self.write_multi(list, now_ms, &mut out)?;
            }
            _ => return Ok(Answer::WrongShape),
        }
        let len = out.len();
        Ok(Answer::Text(out.into_chunks(), len))
    }

    /// The compact multi-query rows of spec 7.3 for `queries` (one query or a list).
    pub fn multi_rows(&self, queries: &Json, now_ms: i64) -> Result<Json> {
        let list = match queries {
            Json::Array(a) => a.as_slice(),
            other => std::slice::from_ref(other),
        };
        let mut out = Vec::new();
        self.for_each_multi(list, now_ms, &mut |rs, qid| {
            crate::wire::multi_rows(&rs, &qid, &mut out);
            Ok(())
        })?;
        Ok(Json::Array(out))
    }

    // ---- definitions -------------------------------------------------------------------------

    /// Rebuilds the plan from edited definitions, keeping the state of unchanged filters.
    fn edit_definitions(
        &self,
        edit: impl FnOnce(&mut Vec<IngestDef>, &mut Vec<FilterDef>) -> Result<()>,
    ) -> Result<()> {
        let mut store = self.lock_store();
        let mut plan_guard = self.plan.write().unwrap_or_else(PoisonError::into_inner);
        let mut ingests: Vec<IngestDef> = plan_guard.ingests().cloned().collect();
        let mut filters: Vec<FilterDef> = plan_guard.filters().cloned().collect();
        edit(&mut ingests, &mut filters)?;
        let plan = Plan::new(ingests, filters)?;
        store.sync(&plan);
        store.recount_bytes();
        *plan_guard = Arc::new(plan);
        Ok(())
    }

    /// Adds a filter; its id must be new.
    pub fn add_filter(&self, def: FilterDef) -> Result<()> {
        self.edit_definitions(|_, filters| {
            if filters.iter().any(|f| f.id == def.id) {
                return Err(Error::Config {
                    field: "id".into(),
                    reason: format!("a filter with id {:?} already exists", def.id),
                });
            }
            filters.push(def);
            Ok(())
        })
    }

    /// Removes a filter and its state.
    pub fn remove_filter(&self, filter_id: &str) -> Result<()> {
        self.edit_definitions(|_, filters| {
            let before = filters.len();
            filters.retain(|f| f.id != filter_id);
            if filters.len() == before {
                return Err(Error::NotFound {
                    kind: "filter",
                    id: filter_id.to_owned(),
                });
            }
            Ok(())
        })
    }

    /// Adds an ingest; its id must be new.
    pub fn add_ingest(&self, def: IngestDef) -> Result<()> {
        self.edit_definitions(|ingests, _| {
            if ingests.iter().any(|i| i.id == def.id) {
                return Err(Error::Config {
                    field: "id".into(),
                    reason: format!("an ingest with id {:?} already exists", def.id),
                });
            }
            ingests.push(def);
            Ok(())
        })
    }

    /// Removes an ingest.
    pub fn remove_ingest(&self, ingest_id: &str) -> Result<()> {
        self.edit_definitions(|ingests, _| {
            let before = ingests.len();
            ingests.retain(|i| i.id != ingest_id);
            if ingests.len() == before {
                return Err(Error::NotFound {
                    kind: "ingest",
                    id: ingest_id.to_owned(),
                });
            }
            Ok(())
        })
    }

    /// The filter definitions as a JSON list.
    #[must_use]
    pub fn filter_definitions(&self) -> Json {
        Json::Array(self.plan().filters().map(FilterDef::to_json).collect())
    }

    /// The ingest definitions as a JSON list.
    #[must_use]
    pub fn ingest_definitions(&self) -> Json {
        Json::Array(self.plan().ingests().map(IngestDef::to_json).collect())
    }

    // ---- snapshots and merges ----------------------------------------------------------------

    /// The engine's definitions and state in the snapshot format.
    #[must_use]
    pub fn to_snapshot(&self) -> Vec<u8> {
        let store = self.lock_store();
        let plan = self.plan();
        snapshot::encode(&plan, &store)
    }

    /// An engine from a snapshot.
    pub fn from_snapshot(data: &[u8]) -> Result<SharedEngine> {
        let engine = snapshot::decode(data)?;
        let plan = Arc::try_unwrap(engine.plan).unwrap_or_else(|arc| (*arc).clone());
        Ok(SharedEngine::from_parts(plan, engine.store))
    }

    /// Adds `other`'s state into this engine. Their filter definitions must be equal (in any
    /// order), and a filter compacted in both must have the same tiers; a refused merge changes
    /// nothing.
    pub fn merge(&self, other: &SharedEngine) -> Result<()> {
        if std::ptr::eq(self, other) {
            return Err(Error::Config {
                field: "other".into(),
                reason: "an engine cannot be merged into itself".into(),
            });
        }
        // Clone the other engine first so the two state locks are never held together.
        let (other_plan, other_store) = {
            let s = other.lock_store();
            (other.plan(), s.clone())
        };
        let mut store = self.lock_store();
        let plan = self.plan();
        let by_id = |p: &Plan| {
            p.filters()
                .map(|f| (f.id.clone(), f.to_json()))
                .collect::<BTreeMap<_, _>>()
        };
        if by_id(&plan) != by_id(&other_plan) {
            return Err(Error::Config {
                field: "other".into(),
                reason: "engines with different filter definitions cannot be merged".into(),
            });
        }
        let merged = merge_stores(&mut store, &other_store);
        // Counted again even when refused: `mine` may have moved to the combined layout.
        store.recount_bytes();
        merged
    }

    // ---- retention ---------------------------------------------------------------------------

    /// Drops buckets before `horizon_ms` (of one filter, or of all); returns the rows dropped.
    pub fn drop_before(&self, horizon_ms: i64, filter_id: Option<&str>) -> Result<usize> {
        let mut store = self.lock_store();
        if let Some(id) = filter_id {
            let state = store.states.get_mut(id).ok_or_else(|| Error::NotFound {
                kind: "filter",
                id: id.to_owned(),
            })?;
            let dropped = state.drop_before(horizon_ms);
            store.recount_bytes();
            return Ok(dropped);
        }
        let dropped = store
            .states
            .values_mut()
            .map(|s| s.drop_before(horizon_ms))
            .sum();
        store.recount_bytes();
        Ok(dropped)
    }

    /// Approximate heap bytes of the state, O(filters): it does not wait for a compaction step
    /// (it then counts the state as the step found it plus the deltas queued since).
    #[must_use]
    pub fn state_bytes(&self) -> usize {
        {
            let pending = self.lock_pending();
            if pending.open {
                return self.step_bytes.load(Ordering::SeqCst) + pending.bytes;
            }
        }
        self.lock_store().heap_bytes()
    }

    /// Compacts every filter with retention tiers at `now_ms`; `default_retention` (JSON `null`
    /// or a tier list) applies to filters without their own. Returns the report.
    pub fn compact(&self, now_ms: i64, default_retention: Option<&Json>) -> Result<Json> {
        let tiers = match default_retention {
            None | Some(Json::Null) => Vec::new(),
            Some(v) => parse_retention(v, None, "default_retention")?,
        };
        // One compaction at a time: a second one would only re-plan after the first's moves.
        let _only = self
            .compacting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded steps, the state lock released between them (the sort of the plan runs
        // without it) and handed to waiting batches first, so a batch waits for one step at
        // most, never for the compaction.
        // Batches arriving during a step are queued and applied by the step (module docs).
        let mut compaction = retention::Compaction::new(now_ms, tiers);
        {
            let mut pending = self.lock_pending();
            pending.deferred = 0;
            pending.refused = 0;
        }
        loop {
            let (_, done) = {
                let mut step = self.lock_store_for_compaction();
                let CompactionStep { store, plan, .. } = &mut step;
                let stepped = compaction.step(store, plan, COMPACT_STEP);
                let hold = self.step_hold_us.load(Ordering::SeqCst);
                if hold > 0 {
                    std::thread::sleep(Duration::from_micros(hold));
                }
                #[cfg(test)]
                self.step_gate.pass(&self.store_waiters);
                // Dropping the step drains the queue, then releases the lock.
                stepped
            };
            if done {
                break;
            }
            compaction.between_steps();
        }
        let (deferred, refused) = {
            let pending = self.lock_pending();
            (pending.deferred, pending.refused)
        };
        let mut report = retention::report_json(compaction.report());
        report["batches_deferred"] = json!(deferred);
        report["batches_refused"] = json!(refused);
        Ok(report)
    }

    /// The resolutions serving a query's window, finest first.
    pub fn resolutions(&self, query: &Json) -> Result<Json> {
        let store = self.lock_store();
        let plan = self.plan();
        let lookup = |id: &str| plan.filter(id).cloned();
        let parsed = Query::for_groupings(query, &lookup)?;
        let def = plan.filter(&parsed.filter_id).expect("validated filter");
        Ok(retention::resolutions_json(
            def,
            store.layouts.get(&parsed.filter_id),
            parsed.start_ms.unwrap_or(i64::MIN),
            parsed.end_ms.unwrap_or(i64::MAX),
        ))
    }

    /// Per filter, per tier: interval, rows and approximate bytes.
    #[must_use]
    pub fn tier_usage(&self) -> Json {
        let store = self.lock_store();
        let plan = self.plan();
        let mut out = Map::new();
        for def in plan.filters() {
            let Some(state) = store.states.get(&def.id) else {
                continue;
            };
            let layout = store.layouts.get(&def.id);
            let tiers: Vec<Json> = retention::tier_usage(state, layout)
                .into_iter()
                .enumerate()
                .map(|(t, (iv, rows, bytes))| {
                    let iv = if layout.is_some() { iv } else { def.interval };
                    json!({
                        "tier": t,
                        "intervalType": iv.unit.name(),
                        "intervalCount": iv.count,
                        "rows": rows,
                        "bytes": bytes,
                    })
                })
                .collect();
            out.insert(def.id.clone(), Json::Array(tiers));
        }
        Json::Object(out)
    }
}

/// Adds `other`'s states into `store` (same definitions), fitting both to the later tier
/// floors first so rows of different resolutions never merge.
fn merge_stores(store: &mut EngineState, other: &EngineState) -> Result<()> {
    // Check every filter before changing any, so a refused merge leaves the state as it was.
    for (id, layout) in &other.layouts {
        if let Some(mine) = store.layouts.get(id) {
            if mine.intervals != layout.intervals && !mine.is_pristine() && !layout.is_pristine() {
                return Err(Error::Config {
                    field: "other".into(),
                    reason: format!("filter {id:?} was compacted with different tiers"),
                });
            }
        }
    }
    for (id, state) in &other.states {
        if let Some(mine) = store.states.get(id) {
            mine.check_merge(state)?;
        }
    }
    for (id, state) in &other.states {
        let Some(mine) = store.states.get_mut(id) else {
            continue;
        };
        let mine_layout = store.layouts.get_mut(id);
        let had = mine_layout.is_some();
        let combined = retention::merge_tiered(mine, mine_layout, state, other.layouts.get(id))?;
        if let (false, Some(l)) = (had, combined) {
            store.layouts.insert(id.clone(), l);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &[u8] = br#"[{"t":1704067200000,"k":"a"},{"t":1704067260000,"k":"b"}]"#;

    fn filter(id: &str) -> FilterDef {
        FilterDef::from_json(&json!({
            "id": id, "intervalType": "MINUTE", "intervalCount": 1,
            "aggregations": [{"id": 1, "calculations": ["COUNT"]}]
        }))
        .unwrap()
    }

    fn engine() -> SharedEngine {
        let ingest = IngestDef::from_json(&json!({
            "id": "i",
            "timestamp": {"source": "PROPERTY", "path": "$.t", "format": "UNIX_MILLISECONDS"}
        }))
        .unwrap();
        SharedEngine::new(vec![ingest], vec![filter("f")]).unwrap()
    }

    fn count(e: &SharedEngine, filter_id: &str) -> f64 {
        let q = json!({
            "filterId": filter_id, "aggregationId": 1, "calculation": "COUNT",
            "startTime": "2024-01-01T00:00:00Z", "endTime": "2024-01-02T00:00:00Z"
        });
        let (_, rs) = e.run_query(&q, 1_704_153_600_000).unwrap();
        rs.value.iter().sum()
    }

    fn matched(stats: &IngestStats, filter_id: &str) -> Option<u64> {
        stats
            .per_filter
            .iter()
            .find(|f| f.filter_id == filter_id)
            .map(|f| f.matched)
    }

    fn temp_file(name: &str, data: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("et-shared-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        path.to_str().unwrap().to_owned()
    }

    #[test]
    fn a_prepared_batch_is_evaluated_again_when_a_filter_was_added() {
        let e = engine();
        let batch = e.prepare(BATCH, None, 0).unwrap();
        assert_eq!(matched(batch.stats(), "g"), None);
        e.add_filter(filter("g")).unwrap();
        let stats = e.apply(&batch).unwrap();
        assert_eq!(matched(&stats, "g"), Some(2));
        assert!((count(&e, "g") - 2.0).abs() < f64::EPSILON);
        assert!(e.apply(&batch).is_err(), "a batch applies once");
    }

    #[test]
    fn a_batch_whose_ingest_was_removed_stays_available() {
        let e = engine();
        let batch = e.prepare(BATCH, Some("i"), 0).unwrap();
        let other = IngestDef::from_json(&json!({"id": "j"})).unwrap();
        e.add_ingest(other).unwrap();
        e.remove_ingest("i").unwrap();
        assert!(matches!(
            e.apply(&batch),
            Err(Error::NotFound { kind: "ingest", .. })
        ));
        // Not consumed: it is refused for the same reason again, not as "already applied".
        assert!(matches!(e.apply(&batch), Err(Error::NotFound { .. })));
    }

    #[test]
    fn a_file_ingest_survives_a_filter_edited_while_it_is_read() {
        let e = engine();
        let path = temp_file("edit.json", BATCH);
        let edited = Cell::new(false);
        // The progress callback runs without any lock held, so it can edit the definitions: the
        // deterministic form of an edit from another thread while the file is read.
        let mut progress = |_: u64, _: u64| {
            if !edited.replace(true) {
                e.add_filter(filter("g")).unwrap();
            }
            true
        };
        let stats = e.ingest_file(&path, None, 0, &mut progress).unwrap();
        assert!(edited.get());
        assert_eq!(matched(&stats, "f"), Some(2));
        assert_eq!(matched(&stats, "g"), Some(2));
        assert!((count(&e, "g") - 2.0).abs() < f64::EPSILON);
        assert!((count(&e, "f") - 2.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_multi_file_ingest_survives_a_filter_removed_while_it_is_read() {
        let e = engine();
        e.add_filter(filter("g")).unwrap();
        let paths = vec![
            temp_file("a.json", BATCH),
            temp_file("b.ndjson", b"{\"t\":1704067200000}\n"),
        ];
        let edited = Cell::new(false);
        let mut poll = |_: u64, _: u64| {
            if !edited.replace(true) {
                e.remove_filter("g").unwrap();
            }
            true
        };
        let stats = e.ingest_files(&paths, None, 0, Some(2), &mut poll).unwrap();
        assert!(edited.get());
        assert_eq!(matched(&stats, "g"), None);
        assert_eq!(matched(&stats, "f"), Some(3));
        assert!((count(&e, "f") - 3.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_stopped_file_ingest_applies_nothing() {
        let e = engine();
        let path = temp_file("stop.json", BATCH);
        let err = e
            .ingest_file(&path, None, 0, &mut |_, _| false)
            .unwrap_err();
        assert!(matches!(err, Error::Limit { .. }), "{err}");
        assert!(count(&e, "f").abs() < f64::EPSILON);
        let err = e
            .ingest_files(&[path], None, 0, Some(1), &mut |_, _| false)
            .unwrap_err();
        assert!(matches!(err, Error::Limit { .. }), "{err}");
        assert!(count(&e, "f").abs() < f64::EPSILON);
    }

    #[test]
    fn merge_refuses_itself_and_different_filters_and_adds_state() {
        let a = engine();
        let b = engine();
        a.ingest(BATCH, None, 0).unwrap();
        b.ingest(BATCH, None, 0).unwrap();
        assert!(a.merge(&a).is_err());
        a.merge(&b).unwrap();
        assert!((count(&a, "f") - 4.0).abs() < f64::EPSILON);
        b.add_filter(filter("g")).unwrap();
        let before = count(&a, "f");
        assert!(matches!(a.merge(&b), Err(Error::Config { .. })));
        assert!((count(&a, "f") - before).abs() < f64::EPSILON);
    }

    const T0: i64 = 1_704_067_200_000;
    const MIN: i64 = 60_000;

    /// An engine whose filter keeps minutes for an hour, then hours, with every calculation.
    fn tiered() -> SharedEngine {
        let ingest = IngestDef::from_json(&json!({
            "id": "i",
            "timestamp": {"source": "PROPERTY", "path": "$.t", "format": "UNIX_MILLISECONDS"}
        }))
        .unwrap();
        let f = FilterDef::from_json(&json!({
            "id": "f", "intervalType": "MINUTE", "intervalCount": 1, "groupings": ["$.g"],
            "aggregations": [
                {"id": 1, "calculations": ["COUNT", "SUM", "MIN", "MAX", "PERCENTILES"],
                 "calculationField": "$.v"},
                {"id": 2, "calculations": ["APPROX_COUNT_DISTINCT"], "calculationField": "$.u"}
            ],
            "retention": [
                {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 3600},
                {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 0}
            ]
        }))
        .unwrap();
        SharedEngine::new(vec![ingest], vec![f]).unwrap()
    }

    /// Batch `n`: events spread over the first `minutes` minutes after `T0`, ten groups.
    fn tiered_batch(n: i64, minutes: i64) -> Vec<u8> {
        let events: Vec<Json> = (0..40)
            .map(|i| {
                let k = n * 40 + i;
                json!({"t": T0 + (k * 7919 % minutes) * MIN, "g": format!("g{}", k % 10),
                       "v": (k % 613) as f64 / 8.0, "u": format!("u{}", k % 97)})
            })
            .collect();
        serde_json::to_vec(&events).unwrap()
    }

    /// Every calculation's answer, per bucket and grouping, over the whole range.
    fn answers(e: &SharedEngine) -> Vec<Json> {
        let mut out = Vec::new();
        for (agg, calc) in [
            (1, "COUNT"),
            (1, "SUM"),
            (1, "MIN"),
            (1, "MAX"),
            (1, "PERCENTILES"),
            (2, "APPROX_COUNT_DISTINCT"),
        ] {
            let mut q = json!({
                "filterId": "f", "aggregationId": agg, "calculation": calc,
                "startTime": "2023-12-31T00:00:00Z", "endTime": "2024-01-03T00:00:00Z"
            });
            if calc == "PERCENTILES" {
                q["percentile"] = json!(0.9);
            }
            out.push(e.multi_rows(&q, T0 + 2 * 86_400_000).unwrap());
        }
        out
    }

    fn walked_bytes(e: &SharedEngine) -> usize {
        e.lock_store()
            .states
            .values()
            .map(FilterState::heap_bytes)
            .sum()
    }

    /// Waits (bounded) until a compaction step holds the store lock with the queue open;
    /// false when `finished` (the compaction ended) first.
    fn wait_open(e: &SharedEngine, finished: impl Fn() -> bool) -> bool {
        let since = Instant::now();
        while !e.lock_pending().open {
            if finished() {
                return false;
            }
            assert!(
                since.elapsed() < Duration::from_secs(20),
                "no step opened the queue"
            );
            std::thread::yield_now();
        }
        true
    }

    /// Runs `inside` while a compaction (to six hours after `T0`) holds its first step open
    /// (`inside` must not wait for the store lock: that would let the step go), then lets
    /// every step go and returns the compaction's report.
    fn inside_a_held_step(e: &SharedEngine, inside: impl FnOnce()) -> serde_json::Value {
        std::thread::scope(|scope| {
            let held = e.step_gate.hold();
            let compaction = scope.spawn(|| e.compact(T0 + 6 * 3_600_000, None).unwrap());
            assert!(wait_open(e, || false));
            inside();
            drop(held);
            compaction.join().unwrap()
        })
    }

    #[test]
    fn batches_during_a_step_are_queued_drained_and_seen_by_the_next_query() {
        let raced = tiered();
        let serial = tiered();
        let old: Vec<Vec<u8>> = (0..30).map(|n| tiered_batch(n, 300)).collect();
        for b in &old {
            raced.ingest(b, None, 0).unwrap();
            serial.ingest(b, None, 0).unwrap();
        }
        let now = T0 + 6 * 3_600_000;
        let during: Vec<Vec<u8>> = (100..140).map(|n| tiered_batch(n, 360)).collect();
        // Each step holds the queue open until the query after its batch (a step held for a
        // fixed time may end first on a busy machine, and no batch would be queued).
        let mut queued = 0;
        let mut seen = count(&raced, "f"); // before the first step holds the store lock
        let report = std::thread::scope(|scope| {
            let held = raced.step_gate.hold();
            let compaction = scope.spawn(|| raced.compact(now, None).unwrap());
            for b in &during {
                let expected = raced.plan().prepare(b, 0, 0).unwrap().stats;
                // The batches after the last step come after the compaction: the queue must be
                // empty then.
                let open = wait_open(&raced, || compaction.is_finished());
                let stats = raced.ingest(b, None, 0).unwrap();
                assert_eq!(stats, expected, "a queued batch reports its own stats");
                queued += usize::from(open);
                // Read-your-writes: the next query sees the batch (it lets the step go, and
                // the step drained it).
                let after = count(&raced, "f");
                assert!(
                    (after - seen - 40.0).abs() < f64::EPSILON,
                    "{after} vs {seen}"
                );
                seen = after;
            }
            drop(held);
            compaction.join().unwrap()
        });
        assert_eq!(report["batches_deferred"], queued, "{report}");
        assert!(
            queued >= 2 && queued < during.len(),
            "{queued} of {}",
            during.len()
        );
        assert_eq!(report["batches_refused"], 0);
        for b in &during {
            serial.ingest(b, None, 0).unwrap();
        }
        let serial_report = serial.compact(now, None).unwrap();
        assert_eq!(serial_report["batches_deferred"], 0);
        assert!(serial_report["cells_merged"].as_u64().unwrap() > 0);
        let again = raced.compact(now, None).unwrap();
        assert_eq!(again["cells_merged"], 0, "{again}");
        assert_eq!(answers(&raced), answers(&serial));
        // The running byte total stayed equal to a walk of every sketch.
        assert_eq!(raced.state_bytes(), walked_bytes(&raced));
        assert_eq!(serial.state_bytes(), walked_bytes(&serial));
    }

    #[test]
    fn prepared_batches_keep_the_running_byte_total_and_the_answers_of_ingest() {
        // `apply` routes, checks once and merges without a second check; the running total is
        // counted from the rows found before the merge plus the rows it appended.
        let (prepared, ingested) = (tiered(), tiered());
        let horizon = T0 + 6 * 3_600_000;
        for n in 0..30 {
            if n == 15 {
                // Later batches hit tiered rows: routed into the HOUR tier before the merge.
                prepared.compact(horizon, None).unwrap();
                ingested.compact(horizon, None).unwrap();
            }
            // Cells the state has (grown sketches), then a cell of its own: a new row whose
            // sketches hold 200 values each (heap bytes a merge appends).
            let mut events: Vec<Json> = serde_json::from_slice(&tiered_batch(n, 300)).unwrap();
            events.extend((0..200).map(|i| {
                json!({"t": T0 + (400 + n) * MIN, "g": "new", "v": f64::from(i) * 1.5,
                       "u": format!("n{n}u{i}")})
            }));
            let b = serde_json::to_vec(&events).unwrap();
            let batch = prepared.prepare(&b[..], None, 0).unwrap();
            prepared.apply(&batch).unwrap();
            ingested.ingest(&b, None, 0).unwrap();
            assert_eq!(
                prepared.state_bytes(),
                walked_bytes(&prepared),
                "after batch {n}"
            );
        }
        assert_eq!(prepared.state_bytes(), ingested.state_bytes());
        assert_eq!(answers(&prepared), answers(&ingested));
    }

    #[test]
    fn the_running_byte_total_follows_applies() {
        let e = tiered();
        for n in 0..30 {
            e.ingest(&tiered_batch(n, 300), None, 0).unwrap();
            assert_eq!(e.state_bytes(), walked_bytes(&e), "after batch {n}");
        }
        e.compact(T0 + 6 * 3_600_000, None).unwrap();
        assert_eq!(e.state_bytes(), walked_bytes(&e), "after the compaction");
    }

    #[test]
    fn state_bytes_counts_queued_batches_without_waiting_for_a_step() {
        let e = tiered();
        for n in 0..30 {
            e.ingest(&tiered_batch(n, 300), None, 0).unwrap();
        }
        inside_a_held_step(&e, || {
            let before = e.state_bytes();
            e.ingest(&tiered_batch(500, 360), None, 0).unwrap();
            // Still inside the held step: the queued delta is counted, nothing waited.
            assert!(e.lock_pending().open, "the step is held until released");
            assert!(e.state_bytes() > before);
        });
        assert_eq!(e.state_bytes(), walked_bytes(&e));
        e.drop_before(T0 + 3_600_000, None).unwrap();
        assert_eq!(e.state_bytes(), walked_bytes(&e));
    }

    #[test]
    fn a_closed_queue_takes_no_batch_and_the_lock_free_queue_is_empty() {
        let e = tiered();
        for n in 0..30 {
            e.ingest(&tiered_batch(n, 300), None, 0).unwrap();
        }
        inside_a_held_step(&e, || {
            e.ingest(&tiered_batch(600, 360), None, 0).unwrap();
        });
        // Once the compaction is done (the lock free), nothing is queued and a batch is
        // applied directly.
        {
            let pending = e.lock_pending();
            assert!(!pending.open && pending.queue.is_empty() && pending.bytes == 0);
        }
        let plan = e.plan();
        let delta = plan.prepare(&tiered_batch(601, 360), 0, 0).unwrap();
        assert!(
            e.defer(&plan, delta).is_err(),
            "a closed queue gives the delta back"
        );
        assert_eq!(e.state_bytes(), walked_bytes(&e));
    }

    #[test]
    fn a_queued_batch_that_would_overflow_is_refused_and_counted() {
        let e = tiered();
        e.ingest(&tiered_batch(0, 300), None, 0).unwrap();
        let young = br#"[{"t":1704088800000,"g":"g0","v":1,"u":"x"}]"#;
        e.ingest(young, None, 0).unwrap();
        {
            let mut store = e.lock_store();
            let state = store.states.get_mut("f").unwrap();
            let g = state.groups.find(&{
                let mut k = Vec::new();
                crate::state::GroupTable::push_component(&mut k, "g0");
                k
            });
            let row = state.find_row(1_704_088_800_000, g.unwrap()).unwrap();
            state.aggs[0].matched[row] = u64::MAX;
        }
        // Applied directly, the batch is refused with an error.
        assert!(matches!(e.ingest(young, None, 0), Err(Error::Limit { .. })));
        let report = inside_a_held_step(&e, || {
            e.ingest(young, None, 0)
                .expect("queued: the overflow is found when drained");
        });
        assert_eq!(report["batches_deferred"], 1, "{report}");
        assert_eq!(report["batches_refused"], 1, "{report}");
        let store = e.lock_store();
        let state = &store.states["f"];
        assert!(
            state.aggs[0].matched.contains(&u64::MAX),
            "the cell is unchanged"
        );
    }

    #[test]
    fn definition_errors_name_their_index() {
        let err = SharedEngine::from_json(&json!({"id": "i"}), &json!([{"id": "f"}])).unwrap_err();
        match err {
            Error::Config { field, .. } => assert!(field.starts_with("filters[0]."), "{field}"),
            other => panic!("{other}"),
        }
    }
}
