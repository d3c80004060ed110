//! Conversions between Python objects and the core's inputs and outputs.

use eventtally_core::engine::IngestStats;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};
use serde_json::Value as Json;

use crate::errors::to_py_err;

/// Bytes of one input batch, borrowed from `bytes`/`str` and copied from mutable buffers (which
/// Python code could change while the core reads them detached).
pub(crate) enum Input {
    Bytes(PyBackedBytes),
    Str(PyBackedStr),
    Owned(Vec<u8>),
}

impl Input {
    pub(crate) fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Input> {
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
}

impl AsRef<[u8]> for Input {
    fn as_ref(&self) -> &[u8] {
        match self {
            Input::Bytes(b) => b,
            Input::Str(s) => s.as_bytes(),
            Input::Owned(v) => v,
        }
    }
}

/// JSON text from Python (definitions, queries) as a value; `what` names it in the error.
pub(crate) fn parse_json(py: Python<'_>, text: &str, what: &str) -> PyResult<Json> {
    eventtally_core::config::parse_json_text(text, what).map_err(|e| to_py_err(py, &e))
}

/// Ingest stats as the dict `IngestStats._from_core` reads; drop reasons that did not happen
/// are left out.
pub(crate) fn stats_to_py<'py>(py: Python<'py>, s: &IngestStats) -> PyResult<Bound<'py, PyDict>> {
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
