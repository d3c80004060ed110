//! pyo3 bindings for eventtally-core. This crate only converts: Python inputs are taken while
//! attached to the interpreter, all work runs detached (`Python::detach`), and every core error
//! goes through the single conversion point [`to_py_err`].
//!
//! Thread safety: `Engine` is a frozen pyclass. Its compiled plan sits behind an `RwLock` (swapped
//! when filters change) and its state behind a `Mutex`; batches are parsed and evaluated without
//! holding either lock and only the merge takes the state lock.
//!
//! # The lock rule
//!
//! The Rust locks Python can reach, and the only order in which they may be nested:
//!
//! 1. `PreparedBatch::slot` (`Mutex<Slot>`): held just long enough to move the slot between
//!    `Ready`, `Applying` and `Applied`; nothing else is locked or waited for while it is held, and
//!    a second `apply` of one batch is refused at once instead of waiting.
//! 2. `Engine::store` (`Mutex<Store>`): the aggregate state.
//! 3. `Engine::plan` (`RwLock<Arc<Plan>>`): read (an `Arc` clone) under the store lock, written
//!    only by `replace_definitions`, which holds the store lock first.
//!
//! `merge` never holds two engines' store locks together: it clones the other state first.
//!
//! **No lock is ever taken, or waited for, while attached to Python**, and no guard lives across
//! a GIL release or re-acquisition: every `lock()`/`read()`/`write()` happens inside a
//! `py.detach` closure and its guard is dropped before the closure returns. A thread that waited
//! for a Rust lock while holding the GIL could block the lock's holder forever the moment it
//! needed the GIL back (to convert an error, or to call a progress callback). The only attach from
//! detached code is `ingest_file`'s progress callback, which runs while no lock is held.

// pyo3 hands #[pymethods] their arguments as owned values, and `map_err(to_py_err)` needs a
// by-value `fn(Error)`; borrowing would only add conversions.
#![allow(clippy::needless_pass_by_value)]

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use eventtally_core::config::{FilterDef, IngestDef};
use eventtally_core::engine::{Delta, IngestStats, Plan, Store};
use eventtally_core::error::Error;
use eventtally_core::query::{self, Query, ResultSet};
use eventtally_core::response::{self, AnswerLimits, ChunkedAnswer, MultiWriter};
use eventtally_core::retention;
use eventtally_core::snapshot;
use eventtally_core::time::write_rfc3339;
use numpy::{PyArray1, PyArrayMethods};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString};
use serde_json::{json, Map, Value as Json};

/// The single conversion point from core errors to the Python exception tree defined in
/// `eventtally.exceptions` (structured attributes, not only text).
fn to_py_err(err: Error) -> PyErr {
    Python::attach(|py| {
        let message = err.to_string();
        let build = || -> PyResult<PyErr> {
            let module = py.import("eventtally.exceptions")?;
            let kwargs = PyDict::new(py);
            let class = match &err {
                Error::Json { offset, reason } => {
                    kwargs.set_item("offset", offset)?;
                    kwargs.set_item("reason", reason)?;
                    "JsonError"
                }
                Error::Format { offset, reason } => {
                    kwargs.set_item("offset", offset)?;
                    kwargs.set_item("reason", reason)?;
                    "FormatError"
                }
                Error::PathSyntax {
                    field,
                    expression,
                    position,
                    reason,
                } => {
                    kwargs.set_item("field", field)?;
                    kwargs.set_item("expression", expression)?;
                    kwargs.set_item("position", position)?;
                    kwargs.set_item("reason", reason)?;
                    "PathSyntaxError"
                }
                Error::Config { field, reason } => {
                    kwargs.set_item("field", field)?;
                    kwargs.set_item("reason", reason)?;
                    "ConfigError"
                }
                Error::Query { field, reason } => {
                    kwargs.set_item("field", field)?;
                    kwargs.set_item("reason", reason)?;
                    "QueryError"
                }
                Error::NotFound { kind, id } => {
                    kwargs.set_item("kind", kind)?;
                    kwargs.set_item("id", id)?;
                    "NotFoundError"
                }
                Error::Snapshot { reason } => {
                    kwargs.set_item("reason", reason)?;
                    "SnapshotError"
                }
                Error::Limit { reason } => {
                    kwargs.set_item("reason", reason)?;
                    "LimitError"
                }
                Error::Io { path, reason } => {
                    kwargs.set_item("path", path)?;
                    kwargs.set_item("reason", reason)?;
                    "EventtallyIOError"
                }
            };
            let instance = module
                .getattr(class)?
                .call((message.clone(),), Some(&kwargs))?;
            Ok(PyErr::from_value(instance))
        };
        build().unwrap_or_else(|e| e)
    })
}

/// Bytes of one input batch, borrowed from `bytes`/`str` and copied from mutable buffers.
enum Input {
    Bytes(PyBackedBytes),
    Str(PyBackedStr),
    Owned(Vec<u8>),
}

impl Input {
    fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Input> {
        if obj.is_instance_of::<PyBytes>() {
            return Ok(Input::Bytes(obj.extract()?));
        }
        if obj.is_instance_of::<PyString>() {
            return Ok(Input::Str(obj.extract()?));
        }
        if let Ok(ba) = obj.cast::<PyByteArray>() {
            return Ok(Input::Owned(ba.to_vec()));
        }
        if let Ok(buf) = PyBuffer::<u8>::get(obj) {
            return Ok(Input::Owned(buf.to_vec(obj.py())?));
        }
        Err(PyTypeError::new_err(format!(
            "expected bytes, bytearray, memoryview or str, got {}",
            obj.get_type().name()?
        )))
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Input::Bytes(b) => b,
            Input::Str(s) => s.as_bytes(),
            Input::Owned(v) => v,
        }
    }
}

fn parse_json(text: &str, what: &str) -> PyResult<Json> {
    eventtally_core::config::parse_json_text(text, what).map_err(to_py_err)
}

fn defs_from_json(
    ingests: &Json,
    filters: &Json,
) -> Result<(Vec<IngestDef>, Vec<FilterDef>), Error> {
    let ingest_list: Vec<Json> = match ingests {
        Json::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let ingests = ingest_list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            IngestDef::from_json(v).map_err(|e| prefix_field(e, &format!("ingests[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let filter_list = filters.as_array().ok_or_else(|| Error::Config {
        field: "filters".into(),
        reason: "must be a list of filter definitions".into(),
    })?;
    let filters = filter_list
        .iter()
        .enumerate()
        .map(|(i, v)| {
            FilterDef::from_json(v).map_err(|e| prefix_field(e, &format!("filters[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ingests, filters))
}

fn prefix_field(e: Error, prefix: &str) -> Error {
    match e {
        Error::Config { field, reason } => Error::Config {
            field: format!("{prefix}.{field}"),
            reason,
        },
        Error::PathSyntax {
            field,
            expression,
            position,
            reason,
        } => Error::PathSyntax {
            field: format!("{prefix}.{field}"),
            expression,
            position,
            reason,
        },
        other => other,
    }
}

fn stats_to_py<'py>(py: Python<'py>, s: &IngestStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("events", s.events)?;
    d.set_item("accepted", s.accepted)?;
    let dropped = PyDict::new(py);
    if s.not_object > 0 {
        dropped.set_item("not_object", s.not_object)?;
    }
    if s.timestamp_invalid > 0 {
        dropped.set_item("timestamp_invalid", s.timestamp_invalid)?;
    }
    d.set_item("dropped", dropped)?;
    d.set_item("timestamp_fallback", s.timestamp_fallback)?;
    let per = PyDict::new(py);
    for f in &s.per_filter {
        let fd = PyDict::new(py);
        fd.set_item("matched", f.matched)?;
        fd.set_item("flattened_elements", f.flattened_elements)?;
        let fdrop = PyDict::new(py);
        if f.flatten_not_array > 0 {
            fdrop.set_item("flatten_not_array", f.flatten_not_array)?;
        }
        if f.flatten_element_not_object > 0 {
            fdrop.set_item("flatten_element_not_object", f.flatten_element_not_object)?;
        }
        fd.set_item("dropped", fdrop)?;
        per.set_item(&f.filter_id, fd)?;
    }
    d.set_item("per_filter", per)?;
    Ok(d)
}

/// Where a prepared batch is in its life: the one `apply` that takes it moves it from `Ready` to
/// `Applying`, and on to `Applied` (or back to `Ready` when applying failed and nothing changed).
enum Slot {
    Ready(Delta),
    Applying,
    Applied,
}

/// A batch parsed and evaluated against a plan, not yet applied.
#[pyclass(frozen, module = "eventtally._core")]
struct PreparedBatch {
    plan: Arc<Plan>,
    /// Lock 1 of the lock rule: held only to move the slot, never while another lock is waited for.
    slot: Mutex<Slot>,
    stats: IngestStats,
    data: Arc<Input>,
    /// The ingest the batch was prepared for, resolved to its id.
    ingest: String,
    now_ms: i64,
}

impl PreparedBatch {
    /// Takes the delta for the caller's `apply`; a second caller is refused at once (it never
    /// waits for the first one to finish).
    fn take_for_apply(&self) -> Result<Delta, Error> {
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
}

#[pymethods]
impl PreparedBatch {
    /// Stats the batch will report when applied.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, &self.stats)
    }
}

/// Rows one compaction step may move while holding the state lock (about 10 ms of work).
const COMPACT_STEP_ROWS: usize = 50_000;

#[pyclass(frozen, module = "eventtally._core")]
struct Engine {
    plan: RwLock<Arc<Plan>>,
    store: Mutex<Store>,
}

impl Engine {
    // A panic while a lock is held (a bug, surfaced to Python as PanicException) must not turn
    // every later call into a failure: the state is only changed by merges, which leave it
    // consistent row by row, so the data behind a poisoned lock is still usable.
    fn current_plan(&self) -> Arc<Plan> {
        self.plan
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock_store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_plan(plan: Plan, store: Store) -> Engine {
        Engine {
            plan: RwLock::new(Arc::new(plan)),
            store: Mutex::new(store),
        }
    }

    /// Rebuilds the plan from edited definitions, keeping the state of unchanged filters.
    fn replace_definitions(
        &self,
        edit: impl FnOnce(&mut Vec<IngestDef>, &mut Vec<FilterDef>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut store = self.lock_store();
        let mut plan_guard = self.plan.write().unwrap_or_else(PoisonError::into_inner);
        let mut ingests: Vec<IngestDef> = plan_guard.ingests().cloned().collect();
        let mut filters: Vec<FilterDef> = plan_guard.filters().cloned().collect();
        edit(&mut ingests, &mut filters)?;
        let plan = Plan::new(ingests, filters)?;
        store.sync(&plan);
        *plan_guard = Arc::new(plan);
        Ok(())
    }

    fn run_query(&self, query: &Json, now_ms: i64) -> Result<(Query, ResultSet, FilterDef), Error> {
        // State first, then plan (the lock order): the plan cannot change while the state of the
        // filter it names is read.
        let store = self.lock_store();
        let plan = self.current_plan();
        let lookup = |id: &str| plan.filter(id).cloned();
        let q = Query::from_json(query, &lookup)?;
        let def = plan.filter(&q.filter_id).expect("validated filter").clone();
        let state = store.states.get(&q.filter_id).expect("synced state");
        let rs = query::run(&def, state, &q, now_ms);
        Ok((q, rs, def))
    }
}

impl Engine {
    /// Distinct values of a groupings request's `groupingName` (spec 7.4).
    fn grouping_values(&self, q: &Json) -> Result<Vec<String>, Error> {
        let store = self.lock_store();
        let plan = self.current_plan();
        let lookup = |id: &str| plan.filter(id).cloned();
        let parsed = Query::for_groupings(q, &lookup)?;
        let def = plan.filter(&parsed.filter_id).expect("validated filter");
        let state = store.states.get(&parsed.filter_id).expect("synced state");
        query::grouping_values(def, state, &parsed)
    }

    /// Runs each query of a multi request and appends its compact rows; query errors name the
    /// query's index. Only one query's result is held at a time.
    fn write_multi(
        &self,
        list: &[Json],
        now_ms: i64,
        out: &mut ChunkedAnswer,
    ) -> Result<(), Error> {
        let mut writer = MultiWriter::start(out);
        for i in 0..list.len() {
            let (rs, qid) = self.run_multi_query(list, i, now_ms)?;
            writer.write_query(&rs, &qid, out)?;
        }
        writer.finish(out)
    }

    /// Runs query `i` of a multi request: its result and its label (its `queryId`, else `A`
    /// when alone, else `Q<i>`); a query error names the query's index.
    fn run_multi_query(
        &self,
        list: &[Json],
        i: usize,
        now_ms: i64,
    ) -> Result<(ResultSet, String), Error> {
        let (parsed, rs, _) = self.run_query(&list[i], now_ms).map_err(|e| match e {
            Error::Query { field, reason } => Error::Query {
                field: format!("[{i}].{field}"),
                reason,
            },
            other => other,
        })?;
        let qid = parsed.query_id.unwrap_or_else(|| {
            if list.len() == 1 {
                "A".to_owned()
            } else {
                format!("Q{i}")
            }
        });
        Ok((rs, qid))
    }
}

fn groupings_object(rs: &ResultSet, g: u32) -> Json {
    let mut m = Map::new();
    for (k, v) in rs.keys.iter().zip(rs.tuple(g)) {
        m.insert(k.clone(), Json::String(v.to_owned()));
    }
    Json::Object(m)
}

fn rows_json(rs: &ResultSet) -> Json {
    let mut out = Vec::with_capacity(rs.dt.len());
    let mut dt = String::new();
    for i in 0..rs.dt.len() {
        dt.clear();
        write_rfc3339(rs.dt[i], &mut dt);
        let groupings = if rs.keys.is_empty() && !rs.grouped {
            Json::Null
        } else {
            groupings_object(rs, rs.group[i])
        };
        out.push(json!({"dt": dt, "groupings": groupings, "value": rs.value[i]}));
    }
    Json::Array(out)
}

/// The compact `?multi=true` encoding (spec 7.3): per query, per series, one separator row
/// (`isSeperator`, base `dt`, non-null `groupings`) followed by value rows carrying seconds after
/// the base, the value and the query id.
fn multi_rows(rs: &ResultSet, query_id: &str, out: &mut Vec<Json>) {
    let mut series: Vec<Vec<usize>> = vec![Vec::new(); rs.tuples];
    for i in 0..rs.dt.len() {
        series[rs.group[i] as usize].push(i);
    }
    let mut dt = String::new();
    // Tuple ids are in ascending order of their values, so series come out sorted.
    for (g, rows) in series.iter().enumerate() {
        let Some(base) = rows.iter().map(|&i| rs.dt[i]).min() else {
            continue;
        };
        dt.clear();
        write_rfc3339(base, &mut dt);
        out.push(json!({
            "isSeperator": true,
            "dt": dt,
            "groupings": groupings_object(rs, g as u32),
        }));
        for &i in rows {
            out.push(json!({
                "dtSecLater": rs.dt[i].saturating_sub(base).div_euclid(1000),
                "val": rs.value[i],
                "queryId": query_id,
            }));
        }
    }
}

#[pymethods]
impl Engine {
    #[new]
    fn new(py: Python<'_>, ingests_json: &str, filters_json: &str) -> PyResult<Engine> {
        let ingests = parse_json(ingests_json, "ingest")?;
        let filters = parse_json(filters_json, "filters")?;
        py.detach(|| {
            let (i, f) = defs_from_json(&ingests, &filters)?;
            let plan = Plan::new(i, f)?;
            let mut store = Store::default();
            store.sync(&plan);
            Ok(Engine::with_plan(plan, store))
        })
        .map_err(to_py_err)
    }

    #[pyo3(signature = (data, ingest_id, now_ms))]
    fn prepare(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        ingest_id: Option<String>,
        now_ms: i64,
    ) -> PyResult<PreparedBatch> {
        let input = Arc::new(Input::extract(data)?);
        let (plan, delta, ingest) = py
            .detach(|| {
                let plan = self.current_plan();
                let idx = plan.ingest_index(ingest_id.as_deref())?;
                let delta = plan.prepare(input.as_bytes(), idx, now_ms)?;
                let ingest = plan.ingest_id(idx).to_owned();
                Ok((plan, delta, ingest))
            })
            .map_err(to_py_err)?;
        Ok(PreparedBatch {
            plan,
            stats: delta.stats.clone(),
            slot: Mutex::new(Slot::Ready(delta)),
            data: input,
            ingest,
            now_ms,
        })
    }

    fn apply<'py>(
        &self,
        py: Python<'py>,
        prepared: &Bound<'py, PreparedBatch>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let p = prepared.get();
        // Every lock below (the batch's slot, the state, the plan) is taken only while detached,
        // and no guard outlives the closure: see the lock rule at the top of this file.
        let stats = py
            .detach(|| -> Result<IngestStats, Error> {
                let delta = p.take_for_apply()?;
                let mut store = self.lock_store();
                let plan = self.current_plan();
                if Arc::ptr_eq(&plan, &p.plan) {
                    if let Err(e) = store.check_apply(&plan, &delta) {
                        // Not applied (a counter would overflow): the batch stays available.
                        p.set_slot(Slot::Ready(delta));
                        return Err(e);
                    }
                    let stats = store.apply(&plan, delta)?;
                    p.set_slot(Slot::Applied);
                    return Ok(stats);
                }
                // Definitions changed since the batch was prepared: evaluate it again against the
                // ingest it was prepared for (by id, not by position).
                let fresh = plan
                    .ingest_index(Some(&p.ingest))
                    .and_then(|idx| plan.prepare(p.data.as_bytes(), idx, p.now_ms));
                match fresh {
                    Ok(fresh) => match store.apply(&plan, fresh) {
                        Ok(stats) => {
                            p.set_slot(Slot::Applied);
                            Ok(stats)
                        }
                        Err(e) => {
                            p.set_slot(Slot::Ready(delta));
                            Err(e)
                        }
                    },
                    Err(e) => {
                        // Not applied: the batch stays available for a later `apply`.
                        p.set_slot(Slot::Ready(delta));
                        Err(e)
                    }
                }
            })
            .map_err(to_py_err)?;
        stats_to_py(py, &stats)
    }

    #[pyo3(signature = (data, ingest_id, now_ms))]
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        ingest_id: Option<String>,
        now_ms: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let input = Input::extract(data)?;
        let stats = py
            .detach(|| -> Result<IngestStats, Error> {
                let plan = self.current_plan();
                let idx = plan.ingest_index(ingest_id.as_deref())?;
                let delta = plan.prepare(input.as_bytes(), idx, now_ms)?;
                let mut store = self.lock_store();
                let current = self.current_plan();
                if Arc::ptr_eq(&plan, &current) {
                    store.apply(&plan, delta)
                } else {
                    // Definitions changed meanwhile: resolve the ingest again by id.
                    let id = plan.ingest_id(idx).to_owned();
                    let idx = current.ingest_index(Some(&id))?;
                    let delta = current.prepare(input.as_bytes(), idx, now_ms)?;
                    store.apply(&current, delta)
                }
            })
            .map_err(to_py_err)?;
        stats_to_py(py, &stats)
    }

    #[pyo3(signature = (path, ingest_id, now_ms, progress=None))]
    fn ingest_file<'py>(
        &self,
        py: Python<'py>,
        path: String,
        ingest_id: Option<String>,
        now_ms: i64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let result = py.detach(|| -> Result<Result<IngestStats, Error>, PyErr> {
            let plan = self.current_plan();
            let idx = match plan.ingest_index(ingest_id.as_deref()) {
                Ok(i) => i,
                Err(e) => return Ok(Err(e)),
            };
            let mut callback_error: Option<PyErr> = None;
            let mut report = |done: u64, total: u64| {
                if let (Some(cb), None) = (&progress, &callback_error) {
                    if let Err(e) = Python::attach(|py| cb.call1(py, (done, total)).map(|_| ())) {
                        callback_error = Some(e);
                    }
                }
            };
            let delta = eventtally_core::file::prepare_file(&plan, &path, idx, now_ms, &mut report);
            if let Some(e) = callback_error {
                return Err(e);
            }
            let delta = match delta {
                Ok(d) => d,
                Err(e) => return Ok(Err(e)),
            };
            let mut store = self.lock_store();
            if !Arc::ptr_eq(&plan, &self.current_plan()) {
                return Ok(Err(Error::Limit {
                    reason: "filters changed while the file was being read; ingest it again".into(),
                }));
            }
            Ok(store.apply(&plan, delta))
        })?;
        let stats = result.map_err(to_py_err)?;
        stats_to_py(py, &stats)
    }

    /// Ingests many files on `threads` workers (all cores when `None`) without the GIL; all or
    /// nothing. `progress(done, total)` (compressed bytes) runs on this thread, with the GIL,
    /// about every 100 ms and at the end; an exception it raises stops the work.
    #[pyo3(signature = (paths, ingest_id, now_ms, threads=None, progress=None))]
    fn ingest_files<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<String>,
        ingest_id: Option<String>,
        now_ms: i64,
        threads: Option<usize>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let stats = py.detach(|| {
            ingest_files_detached(
                self,
                &paths,
                ingest_id.as_deref(),
                now_ms,
                threads,
                progress.as_ref(),
            )
        })?;
        stats_to_py(py, &stats)
    }

    /// Ingests the raw bytes of one whole file (`name` gives its kind, as for `ingest_file`,
    /// and is the path errors name); atomic.
    #[pyo3(signature = (data, name, ingest_id, now_ms))]
    fn ingest_file_bytes<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        name: String,
        ingest_id: Option<String>,
        now_ms: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let input = Input::extract(data)?;
        let stats = py
            .detach(|| -> Result<IngestStats, Error> {
                let plan = self.current_plan();
                let idx = plan.ingest_index(ingest_id.as_deref())?;
                let delta = eventtally_core::file::prepare_file_bytes(
                    &plan,
                    &name,
                    input.as_bytes(),
                    idx,
                    now_ms,
                )
                .map_err(|e| eventtally_core::parallel::in_file(e, &name))?;
                let mut store = self.lock_store();
                if !Arc::ptr_eq(&plan, &self.current_plan()) {
                    return Err(Error::Limit {
                        reason: "filters changed while the file was being read; ingest it again"
                            .into(),
                    });
                }
                store.apply(&plan, delta)
            })
            .map_err(to_py_err)?;
        stats_to_py(py, &stats)
    }

    /// Rows of a plain query as a JSON array text.
    fn results_json(&self, py: Python<'_>, query_json: &str, now_ms: i64) -> PyResult<String> {
        let q = parse_json(query_json, "query")?;
        py.detach(|| {
            let (_, rs, _) = self.run_query(&q, now_ms)?;
            Ok(rows_json(&rs).to_string())
        })
        .map_err(to_py_err)
    }

    /// The query answer as arrays: (dt ms int64, tuple id per row uint32, values float64, keys,
    /// per-key sorted values, per-key code per row uint32, per-key code per tuple uint32,
    /// grouped). Every array is moved out of Rust without a copy.
    #[allow(clippy::type_complexity)]
    fn results_arrays<'py>(
        &self,
        py: Python<'py>,
        query_json: &str,
        now_ms: i64,
    ) -> PyResult<(
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray1<f64>>,
        Vec<String>,
        Vec<Vec<String>>,
        Vec<Bound<'py, PyArray1<u32>>>,
        Vec<Bound<'py, PyArray1<u32>>>,
        bool,
    )> {
        let q = parse_json(query_json, "query")?;
        let (rs, row_codes, tuple_codes) = py
            .detach(|| {
                self.run_query(&q, now_ms).map(|(_, rs, _)| {
                    let nk = rs.keys.len();
                    // One returned key: its codes are the tuple ids, shared below, not copied.
                    let shared = nk == 1 && rs.codes_are_tuple_ids();
                    let row_codes: Vec<Vec<u32>> = if shared {
                        Vec::new()
                    } else {
                        (0..nk).map(|k| rs.row_codes(k)).collect()
                    };
                    let tuple_codes: Vec<Vec<u32>> = (0..nk)
                        .map(|k| rs.tuple_codes.iter().skip(k).step_by(nk).copied().collect())
                        .collect();
                    (rs, row_codes, tuple_codes)
                })
            })
            .map_err(to_py_err)?;
        let group = PyArray1::from_vec(py, rs.group);
        let row_codes = if row_codes.is_empty() && rs.keys.len() == 1 {
            vec![group.clone()]
        } else {
            row_codes
                .into_iter()
                .map(|c| PyArray1::from_vec(py, c))
                .collect()
        };
        Ok((
            PyArray1::from_vec(py, rs.dt),
            group,
            PyArray1::from_vec(py, rs.value),
            rs.keys,
            rs.values,
            row_codes,
            tuple_codes
                .into_iter()
                .map(|c| PyArray1::from_vec(py, c))
                .collect(),
            rs.grouped,
        ))
    }

    /// The compact multi-query rows of spec 7.3 as JSON text.
    fn results_multi_json(
        &self,
        py: Python<'_>,
        queries_json: &str,
        now_ms: i64,
    ) -> PyResult<String> {
        let qs = parse_json(queries_json, "queries")?;
        py.detach(|| {
            let list = match &qs {
                Json::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            let mut out = Vec::new();
            for i in 0..list.len() {
                let (rs, qid) = self.run_multi_query(&list, i, now_ms)?;
                multi_rows(&rs, &qid, &mut out);
            }
            Ok(Json::Array(out).to_string())
        })
        .map_err(to_py_err)
    }

    /// A Metrics API answer as the server sends it: the request body in, the answer text out in
    /// chunks of about `chunk_bytes`, with no Python object per row. `kind` is `"results"`,
    /// `"multi"` or `"groupings"`. Returns `(status, chunks, length)`: status 0 answered; 1 the
    /// body is not strict JSON (the caller's own JSON parser decides what it is); 2 the body is
    /// JSON of the wrong shape (not an object, or for `"multi"` not an object or an array of
    /// objects). Bodies nested deeper than the core's limit raise `JsonError`; query errors and
    /// answers over `max_rows`/`max_bytes` (0: no cap) raise like the other query methods.
    #[pyo3(signature = (kind, body, now_ms, max_rows=0, max_bytes=0, chunk_bytes=1_048_576))]
    #[allow(clippy::too_many_arguments)]
    fn answer<'py>(
        &self,
        py: Python<'py>,
        kind: &str,
        body: &Bound<'py, PyAny>,
        now_ms: i64,
        max_rows: usize,
        max_bytes: usize,
        chunk_bytes: usize,
    ) -> PyResult<(u8, Bound<'py, PyList>, usize)> {
        #[derive(Clone, Copy)]
        enum Kind {
            Rows,
            Multi,
            Groupings,
        }
        let kind = match kind {
            "results" => Kind::Rows,
            "multi" => Kind::Multi,
            "groupings" => Kind::Groupings,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "kind must be \"results\", \"multi\" or \"groupings\", got {other:?}"
                )))
            }
        };
        let input = Input::extract(body)?;
        let limits = AnswerLimits {
            max_rows,
            max_bytes,
        };
        let answered = py
            .detach(|| -> Result<(u8, Vec<Vec<u8>>, usize), Error> {
                let bytes = input.as_bytes();
                response::check_depth(bytes)?;
                let Ok(request) = serde_json::from_slice::<Json>(bytes) else {
                    return Ok((1, Vec::new(), 0));
                };
                let mut out = ChunkedAnswer::new(chunk_bytes, limits);
                match (kind, &request) {
                    (Kind::Rows, Json::Object(_)) => {
                        let (_, rs, _) = self.run_query(&request, now_ms)?;
                        response::write_rows(&rs, &mut out)?;
                    }
                    (Kind::Groupings, Json::Object(_)) => {
                        let values = self.grouping_values(&request)?;
                        response::write_groupings(&values, &mut out)?;
                    }
                    (Kind::Multi, Json::Object(_)) => {
                        self.write_multi(std::slice::from_ref(&request), now_ms, &mut out)?;
                    }
                    (Kind::Multi, Json::Array(list)) if list.iter().all(Json::is_object) => {
                        self.write_multi(list, now_ms, &mut out)?;
                    }
                    _ => return Ok((2, Vec::new(), 0)),
                }
                let len = out.len();
                Ok((0, out.into_chunks(), len))
            })
            .map_err(to_py_err)?;
        let (status, chunks, len) = answered;
        let list = PyList::empty(py);
        // One chunk at a time: each Rust buffer is freed as soon as Python has its copy.
        for chunk in chunks {
            list.append(PyBytes::new(py, &chunk))?;
        }
        Ok((status, list, len))
    }

    /// Distinct values of the query's `groupingName` as JSON `[{"value": ...}]`.
    fn groupings_json(&self, py: Python<'_>, query_json: &str) -> PyResult<String> {
        let q = parse_json(query_json, "query")?;
        py.detach(|| {
            let values = self.grouping_values(&q)?;
            Ok(Json::Array(values.into_iter().map(|v| json!({"value": v})).collect()).to_string())
        })
        .map_err(to_py_err)
    }

    fn filter_definitions_json(&self, py: Python<'_>) -> String {
        py.detach(|| {
            let plan = self.current_plan();
            Json::Array(plan.filters().map(FilterDef::to_json).collect()).to_string()
        })
    }

    fn ingest_definitions_json(&self, py: Python<'_>) -> String {
        py.detach(|| {
            let plan = self.current_plan();
            Json::Array(plan.ingests().map(IngestDef::to_json).collect()).to_string()
        })
    }

    fn add_filter(&self, py: Python<'_>, filter_json: &str) -> PyResult<()> {
        let v = parse_json(filter_json, "filter")?;
        py.detach(|| {
            let def = FilterDef::from_json(&v)?;
            self.replace_definitions(|_, filters| {
                if filters.iter().any(|f| f.id == def.id) {
                    return Err(Error::Config {
                        field: "id".into(),
                        reason: format!("a filter with id {:?} already exists", def.id),
                    });
                }
                filters.push(def);
                Ok(())
            })
        })
        .map_err(to_py_err)
    }

    fn remove_filter(&self, py: Python<'_>, filter_id: String) -> PyResult<()> {
        py.detach(|| {
            self.replace_definitions(|_, filters| {
                let before = filters.len();
                filters.retain(|f| f.id != filter_id);
                if filters.len() == before {
                    return Err(Error::NotFound {
                        kind: "filter",
                        id: filter_id.clone(),
                    });
                }
                Ok(())
            })
        })
        .map_err(to_py_err)
    }

    fn add_ingest(&self, py: Python<'_>, ingest_json: &str) -> PyResult<()> {
        let v = parse_json(ingest_json, "ingest")?;
        py.detach(|| {
            let def = IngestDef::from_json(&v)?;
            self.replace_definitions(|ingests, _| {
                if ingests.iter().any(|i| i.id == def.id) {
                    return Err(Error::Config {
                        field: "id".into(),
                        reason: format!("an ingest with id {:?} already exists", def.id),
                    });
                }
                ingests.push(def);
                Ok(())
            })
        })
        .map_err(to_py_err)
    }

    fn remove_ingest(&self, py: Python<'_>, ingest_id: String) -> PyResult<()> {
        py.detach(|| {
            self.replace_definitions(|ingests, _| {
                let before = ingests.len();
                ingests.retain(|i| i.id != ingest_id);
                if ingests.len() == before {
                    return Err(Error::NotFound {
                        kind: "ingest",
                        id: ingest_id.clone(),
                    });
                }
                Ok(())
            })
        })
        .map_err(to_py_err)
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes = py.detach(|| {
            let store = self.lock_store();
            let plan = self.current_plan();
            snapshot::encode(&plan, &store)
        });
        PyBytes::new(py, &bytes)
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Engine> {
        let input = Input::extract(data)?;
        py.detach(|| {
            let engine = snapshot::decode(input.as_bytes())?;
            let plan = Arc::try_unwrap(engine.plan).unwrap_or_else(|arc| (*arc).clone());
            Ok(Engine::with_plan(plan, engine.store))
        })
        .map_err(to_py_err)
    }

    /// Adds `other`'s state into this engine; their definitions must be equal.
    fn merge(&self, py: Python<'_>, other: &Bound<'_, Engine>) -> PyResult<()> {
        let other = other.get();
        if std::ptr::eq(self, other) {
            return Err(to_py_err(Error::Config {
                field: "other".into(),
                reason: "an engine cannot be merged into itself".into(),
            }));
        }
        py.detach(|| {
            // Snapshot the other engine first so the two state locks are never held together.
            let (other_plan, other_store) = {
                let s = other.lock_store();
                (other.current_plan(), s.clone())
            };
            let mut store = self.lock_store();
            let plan = self.current_plan();
            // Same filters, in any order.
            let by_id = |p: &Plan| {
                p.filters()
                    .map(|f| (f.id.clone(), f.to_json()))
                    .collect::<std::collections::BTreeMap<_, _>>()
            };
            if by_id(&plan) != by_id(&other_plan) {
                return Err(Error::Config {
                    field: "other".into(),
                    reason: "engines with different filter definitions cannot be merged".into(),
                });
            }
            merge_stores(&mut store, &other_store)
        })
        .map_err(to_py_err)
    }

    #[pyo3(signature = (horizon_ms, filter_id=None))]
    fn drop_before(
        &self,
        py: Python<'_>,
        horizon_ms: i64,
        filter_id: Option<String>,
    ) -> PyResult<usize> {
        py.detach(|| {
            let mut store = self.lock_store();
            if let Some(id) = &filter_id {
                let state = store.states.get_mut(id).ok_or_else(|| Error::NotFound {
                    kind: "filter",
                    id: id.clone(),
                })?;
                return Ok(state.drop_before(horizon_ms));
            }
            Ok(store
                .states
                .values_mut()
                .map(|s| s.drop_before(horizon_ms))
                .sum())
        })
        .map_err(to_py_err)
    }

    fn state_bytes(&self, py: Python<'_>) -> usize {
        py.detach(|| self.lock_store().heap_bytes())
    }

    /// Compacts every filter with retention tiers at `now_ms`; `default_retention_json` is the
    /// tier list for filters without their own. Returns the report as JSON text.
    #[pyo3(signature = (now_ms, default_retention_json=None))]
    fn compact(
        &self,
        py: Python<'_>,
        now_ms: i64,
        default_retention_json: Option<&str>,
    ) -> PyResult<String> {
        let default = match default_retention_json {
            None => None,
            Some(text) => Some(parse_json(text, "default_retention")?),
        };
        py.detach(|| {
            let tiers = match &default {
                None | Some(Json::Null) => Vec::new(),
                Some(v) => eventtally_core::config::parse_retention(v, None, "default_retention")?,
            };
            // Bounded steps, the state lock released between them, so batches keep being
            // applied while a large compaction runs.
            let mut total = retention::CompactReport::default();
            loop {
                let (step, done) = {
                    let mut store = self.lock_store();
                    let plan = self.current_plan();
                    retention::compact_step(&mut store, &plan, now_ms, &tiers, COMPACT_STEP_ROWS)
                };
                retention::add_report(&mut total, &step);
                if done {
                    break;
                }
                std::thread::yield_now();
            }
            Ok(retention::report_json(&total).to_string())
        })
        .map_err(to_py_err)
    }

    /// The resolutions serving a query's window, finest first, as JSON text.
    fn resolutions_json(&self, py: Python<'_>, query_json: &str) -> PyResult<String> {
        let q = parse_json(query_json, "query")?;
        py.detach(|| {
            let store = self.lock_store();
            let plan = self.current_plan();
            let lookup = |id: &str| plan.filter(id).cloned();
            let parsed = Query::for_groupings(&q, &lookup)?;
            let def = plan.filter(&parsed.filter_id).expect("validated filter");
            let res = retention::resolutions_json(
                def,
                store.layouts.get(&parsed.filter_id),
                parsed.start_ms.unwrap_or(i64::MIN),
                parsed.end_ms.unwrap_or(i64::MAX),
            );
            Ok(res.to_string())
        })
        .map_err(to_py_err)
    }

    /// Per filter, per tier: interval, rows and approximate bytes, as JSON text.
    fn tier_usage_json(&self, py: Python<'_>) -> String {
        py.detach(|| {
            let store = self.lock_store();
            let plan = self.current_plan();
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
            Json::Object(out).to_string()
        })
    }
}

/// Adds `other`'s states into `store` (same definitions), fitting both to the later tier
/// floors first so rows of different resolutions never merge.
fn merge_stores(store: &mut Store, other: &Store) -> Result<(), Error> {
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

/// The body of `Engine.ingest_files`, run detached: no lock is held while the workers read and
/// while `progress` is called (it attaches from this, the calling, thread only); the state lock
/// is taken once, to apply the merged result.
fn ingest_files_detached(
    engine: &Engine,
    paths: &[String],
    ingest_id: Option<&str>,
    now_ms: i64,
    threads: Option<usize>,
    progress: Option<&Py<PyAny>>,
) -> PyResult<IngestStats> {
    let plan = engine.current_plan();
    let idx = plan.ingest_index(ingest_id).map_err(to_py_err)?;
    if !(eventtally_core::time::MIN_MILLIS..=eventtally_core::time::MAX_MILLIS).contains(&now_ms) {
        return Err(to_py_err(Error::Limit {
            reason: format!("ingest time {now_ms} ms is outside the years 0000-9999"),
        }));
    }
    let threads = match threads {
        Some(0) => {
            return Err(to_py_err(Error::Config {
                field: "threads".into(),
                reason: "must be at least 1".into(),
            }))
        }
        Some(n) => n,
        None => eventtally_core::parallel::default_threads(),
    };
    let mut callback_error: Option<PyErr> = None;
    let mut poll = |done: u64, total: u64| -> bool {
        let Some(cb) = progress else { return true };
        match Python::attach(|py| cb.call1(py, (done, total)).map(|_| ())) {
            Ok(()) => true,
            Err(e) => {
                callback_error = Some(e);
                false
            }
        }
    };
    let result =
        eventtally_core::parallel::prepare_files(&plan, paths, idx, now_ms, threads, &mut poll);
    if let Some(e) = callback_error {
        return Err(e);
    }
    let Some(delta) = result.map_err(to_py_err)? else {
        return Err(to_py_err(Error::Limit {
            reason: "ingest_files was stopped".into(),
        }));
    };
    // The guard is dropped before any error is converted (conversion attaches to Python).
    let applied = {
        let mut store = engine.lock_store();
        if Arc::ptr_eq(&plan, &engine.current_plan()) {
            store.apply(&plan, delta)
        } else {
            Err(Error::Limit {
                reason: "filters changed while the files were being read; ingest them again".into(),
            })
        }
    };
    applied.map_err(to_py_err)
}

/// Builds a list of row dicts directly (faster than JSON text for large answers).
#[pyfunction]
fn _rows_from_arrays<'py>(
    py: Python<'py>,
    dt: &Bound<'py, PyArray1<i64>>,
    values: &Bound<'py, PyArray1<f64>>,
) -> PyResult<Bound<'py, PyList>> {
    let dt = dt.readonly();
    let values = values.readonly();
    let list = PyList::empty(py);
    let mut s = String::new();
    for (d, v) in dt.as_slice()?.iter().zip(values.as_slice()?) {
        s.clear();
        write_rfc3339(*d, &mut s);
        list.append((s.as_str(), *v))?;
    }
    Ok(list)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_class::<PreparedBatch>()?;
    m.add_function(wrap_pyfunction!(_rows_from_arrays, m)?)?;
    m.add("SNAPSHOT_FORMAT_VERSION", snapshot::FORMAT_VERSION)?;
    Ok(())
}
