//! `Engine`: the Python face of [`SharedEngine`]. Each method converts its arguments while
//! attached, makes one core call through [`EnterCore::enter_core`] (detached) and converts the
//! result; the locks, the prepare-again rule, definition edits and merges are the core's
//! (`eventtally_core::shared`).

// pyo3 hands #[pymethods] their arguments as owned values; borrowing would only add conversions.
#![allow(clippy::needless_pass_by_value)]

use eventtally_core::config::{FilterDef, IngestDef};
use eventtally_core::engine::IngestStats;
use eventtally_core::error::Error;
use eventtally_core::response::AnswerLimits;
use eventtally_core::shared::{Answer, AnswerKind, SharedEngine};
use eventtally_core::wire;
use numpy::PyArray1;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::batch::PreparedBatch;
use crate::convert::{parse_json, stats_to_py, Input};
use crate::errors::{to_py_err, EnterCore};

#[pyclass(frozen, module = "eventtally._core")]
pub(crate) struct Engine {
    inner: SharedEngine,
}

/// A progress callback for the core's file ingests: calls `cb(done, total)` attached; the first
/// exception it raises is kept in `error` and stops the ingest.
fn progress_to<'a>(
    cb: Option<&'a Py<PyAny>>,
    error: &'a mut Option<PyErr>,
) -> impl FnMut(u64, u64) -> bool + 'a {
    move |done, total| {
        let Some(cb) = cb else { return true };
        match Python::attach(|py| cb.call1(py, (done, total)).map(|_| ())) {
            Ok(()) => true,
            Err(e) => {
                *error = Some(e);
                false
            }
        }
    }
}

/// The result of a file ingest that a progress callback may have stopped: the callback's own
/// exception wins over the core's "stopped" error.
fn file_result(
    py: Python<'_>,
    result: Result<IngestStats, Error>,
    callback_error: Option<PyErr>,
) -> PyResult<Bound<'_, PyDict>> {
    if let Some(e) = callback_error {
        return Err(e);
    }
    let stats = result.map_err(|e| to_py_err(py, &e))?;
    stats_to_py(py, &stats)
}

#[pymethods]
impl Engine {
    #[new]
    fn new(py: Python<'_>, ingests_json: &str, filters_json: &str) -> PyResult<Engine> {
        let ingests = parse_json(py, ingests_json, "ingest")?;
        let filters = parse_json(py, filters_json, "filters")?;
        let inner = py.enter_core(|| SharedEngine::from_json(&ingests, &filters))?;
        Ok(Engine { inner })
    }

    #[pyo3(signature = (data, ingest_id, now_ms))]
    fn prepare(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        ingest_id: Option<String>,
        now_ms: i64,
    ) -> PyResult<PreparedBatch> {
        let input = Input::extract(data)?;
        let inner = py.enter_core(|| self.inner.prepare(input, ingest_id.as_deref(), now_ms))?;
        Ok(PreparedBatch { inner })
    }

    fn apply<'py>(
        &self,
        py: Python<'py>,
        prepared: &Bound<'py, PreparedBatch>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let batch = &prepared.get().inner;
        let stats = py.enter_core(|| self.inner.apply(batch))?;
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
        let stats = py.enter_core(|| {
            self.inner
                .ingest(input.as_ref(), ingest_id.as_deref(), now_ms)
        })?;
        stats_to_py(py, &stats)
    }

    /// Ingests one archive file in bounded memory; `progress(done, total)` runs with the GIL as
    /// it is read, and an exception it raises stops the ingest (nothing is applied).
    #[pyo3(signature = (path, ingest_id, now_ms, progress=None))]
    fn ingest_file<'py>(
        &self,
        py: Python<'py>,
        path: String,
        ingest_id: Option<String>,
        now_ms: i64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut callback_error = None;
        let result = py.detach(|| {
            let mut report = progress_to(progress.as_ref(), &mut callback_error);
            self.inner
                .ingest_file(&path, ingest_id.as_deref(), now_ms, &mut report)
        });
        file_result(py, result, callback_error)
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
        let mut callback_error = None;
        let result = py.detach(|| {
            let mut poll = progress_to(progress.as_ref(), &mut callback_error);
            self.inner
                .ingest_files(&paths, ingest_id.as_deref(), now_ms, threads, &mut poll)
        });
        file_result(py, result, callback_error)
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
        let stats = py.enter_core(|| {
            self.inner
                .ingest_file_bytes(input.as_ref(), &name, ingest_id.as_deref(), now_ms)
        })?;
        stats_to_py(py, &stats)
    }

    /// Rows of a plain query as a JSON array text.
    fn results_json(&self, py: Python<'_>, query_json: &str, now_ms: i64) -> PyResult<String> {
        let q = parse_json(py, query_json, "query")?;
        py.enter_core(|| {
            let (_, rs) = self.inner.run_query(&q, now_ms)?;
            Ok(wire::rows_json(&rs).to_string())
        })
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
        let q = parse_json(py, query_json, "query")?;
        let (rs, row_codes, tuple_codes) = py.enter_core(|| {
            let (_, rs) = self.inner.run_query(&q, now_ms)?;
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
            Ok((rs, row_codes, tuple_codes))
        })?;
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
        let qs = parse_json(py, queries_json, "queries")?;
        py.enter_core(|| Ok(self.inner.multi_rows(&qs, now_ms)?.to_string()))
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
        let kind = match kind {
            "results" => AnswerKind::Rows,
            "multi" => AnswerKind::Multi,
            "groupings" => AnswerKind::Groupings,
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
        let answer = py.enter_core(|| {
            self.inner
                .answer(kind, input.as_ref(), now_ms, limits, chunk_bytes)
        })?;
        let list = PyList::empty(py);
        match answer {
            Answer::NotJson => Ok((1, list, 0)),
            Answer::WrongShape => Ok((2, list, 0)),
            Answer::Text(chunks, len) => {
                // One chunk at a time: each Rust buffer is freed as soon as Python has its copy.
                for chunk in chunks {
                    list.append(PyBytes::new(py, &chunk))?;
                }
                Ok((0, list, len))
            }
        }
    }

    /// Distinct values of the query's `groupingName` as JSON `[{"value": ...}]`.
    fn groupings_json(&self, py: Python<'_>, query_json: &str) -> PyResult<String> {
        let q = parse_json(py, query_json, "query")?;
        py.enter_core(|| Ok(wire::groupings_json(self.inner.grouping_values(&q)?).to_string()))
    }

    fn filter_definitions_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.inner.filter_definitions().to_string())
    }

    fn ingest_definitions_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.inner.ingest_definitions().to_string())
    }

    fn add_filter(&self, py: Python<'_>, filter_json: &str) -> PyResult<()> {
        let v = parse_json(py, filter_json, "filter")?;
        py.enter_core(|| self.inner.add_filter(FilterDef::from_json(&v)?))
    }

    fn remove_filter(&self, py: Python<'_>, filter_id: String) -> PyResult<()> {
        py.enter_core(|| self.inner.remove_filter(&filter_id))
    }

    fn add_ingest(&self, py: Python<'_>, ingest_json: &str) -> PyResult<()> {
        let v = parse_json(py, ingest_json, "ingest")?;
        py.enter_core(|| self.inner.add_ingest(IngestDef::from_json(&v)?))
    }

    fn remove_ingest(&self, py: Python<'_>, ingest_id: String) -> PyResult<()> {
        py.enter_core(|| self.inner.remove_ingest(&ingest_id))
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let bytes = py.detach(|| self.inner.to_snapshot());
        PyBytes::new(py, &bytes)
    }

    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Engine> {
        let input = Input::extract(data)?;
        let inner = py.enter_core(|| SharedEngine::from_snapshot(input.as_ref()))?;
        Ok(Engine { inner })
    }

    /// Adds `other`'s state into this engine; their definitions must be equal.
    fn merge(&self, py: Python<'_>, other: &Bound<'_, Engine>) -> PyResult<()> {
        let other = &other.get().inner;
        py.enter_core(|| self.inner.merge(other))
    }

    #[pyo3(signature = (horizon_ms, filter_id=None))]
    fn drop_before(
        &self,
        py: Python<'_>,
        horizon_ms: i64,
        filter_id: Option<String>,
    ) -> PyResult<usize> {
        py.enter_core(|| self.inner.drop_before(horizon_ms, filter_id.as_deref()))
    }

    fn state_bytes(&self, py: Python<'_>) -> usize {
        py.detach(|| self.inner.state_bytes())
    }

    /// Test hook: each compaction step keeps the state lock `micros` longer, so batches sent
    /// meanwhile take the pending path (0 turns it off).
    fn hold_compaction_steps(&self, micros: u64) {
        self.inner
            .hold_compaction_steps(std::time::Duration::from_micros(micros));
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
            Some(text) => Some(parse_json(py, text, "default_retention")?),
        };
        py.enter_core(|| Ok(self.inner.compact(now_ms, default.as_ref())?.to_string()))
    }

    /// The resolutions serving a query's window, finest first, as JSON text.
    fn resolutions_json(&self, py: Python<'_>, query_json: &str) -> PyResult<String> {
        let q = parse_json(py, query_json, "query")?;
        py.enter_core(|| Ok(self.inner.resolutions(&q)?.to_string()))
    }

    /// Per filter, per tier: interval, rows and approximate bytes, as JSON text.
    fn tier_usage_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.inner.tier_usage().to_string())
    }
}
