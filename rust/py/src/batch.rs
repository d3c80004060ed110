//! `PreparedBatch`: a batch parsed and evaluated by `Engine.prepare`, applied by `Engine.apply`.

use eventtally_core::shared;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{stats_to_py, Input};

/// A batch parsed and evaluated against the engine's definitions, not yet applied.
#[pyclass(frozen, module = "eventtally._core")]
pub(crate) struct PreparedBatch {
    pub(crate) inner: shared::PreparedBatch<Input>,
}

#[pymethods]
impl PreparedBatch {
    /// Stats the batch will report when applied.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, self.inner.stats())
    }
}
