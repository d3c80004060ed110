//! Core errors as Python exceptions, and the one way into the core ([`EnterCore::enter_core`]).
//!
//! Every core error becomes an instance of the matching class of `eventtally.exceptions`, with
//! the error's structure as attributes (offsets, fields, expressions), not only its text. The
//! classes are looked up once per interpreter and cached, so converting an error does not import
//! a module.

use eventtally_core::error::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

/// The exception classes of `eventtally.exceptions`, one per core error kind.
struct Classes {
    json: Py<PyType>,
    format: Py<PyType>,
    path_syntax: Py<PyType>,
    config: Py<PyType>,
    query: Py<PyType>,
    not_found: Py<PyType>,
    snapshot: Py<PyType>,
    limit: Py<PyType>,
    io: Py<PyType>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let module = py.import("eventtally.exceptions")?;
        let class = |name: &str| -> PyResult<Py<PyType>> {
            Ok(module.getattr(name)?.cast_into::<PyType>()?.unbind())
        };
        Ok(Classes {
            json: class("JsonError")?,
            format: class("FormatError")?,
            path_syntax: class("PathSyntaxError")?,
            config: class("ConfigError")?,
            query: class("QueryError")?,
            not_found: class("NotFoundError")?,
            snapshot: class("SnapshotError")?,
            limit: class("LimitError")?,
            io: class("EventtallyIOError")?,
        })
    })
}

/// The single conversion point from core errors to Python exceptions (a failure to build the
/// exception, such as an import error, is raised instead).
pub(crate) fn to_py_err(py: Python<'_>, err: &Error) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let classes = classes(py)?;
        let kwargs = PyDict::new(py);
        let class = match err {
            Error::Json { offset, reason } => {
                kwargs.set_item("offset", offset)?;
                kwargs.set_item("reason", reason)?;
                &classes.json
            }
            Error::Format { offset, reason } => {
                kwargs.set_item("offset", offset)?;
                kwargs.set_item("reason", reason)?;
                &classes.format
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
                &classes.path_syntax
            }
            Error::Config { field, reason } => {
                kwargs.set_item("field", field)?;
                kwargs.set_item("reason", reason)?;
                &classes.config
            }
            Error::Query { field, reason } => {
                kwargs.set_item("field", field)?;
                kwargs.set_item("reason", reason)?;
                &classes.query
            }
            Error::NotFound { kind, id } => {
                kwargs.set_item("kind", kind)?;
                kwargs.set_item("id", id)?;
                &classes.not_found
            }
            Error::Snapshot { reason } => {
                kwargs.set_item("reason", reason)?;
                &classes.snapshot
            }
            Error::Limit { reason } => {
                kwargs.set_item("reason", reason)?;
                &classes.limit
            }
            Error::Io { path, reason } => {
                kwargs.set_item("path", path)?;
                kwargs.set_item("reason", reason)?;
                &classes.io
            }
        };
        let instance = class.bind(py).call((err.to_string(),), Some(&kwargs))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|e| e)
}

/// The one way the binding calls the core: detach from the interpreter, run `f`, and convert
/// its error once attached again (after the model of polars' `EnterPolarsExt::enter_polars`).
/// Every lock of the core is taken and released inside `f`, so no lock is ever waited for while
/// attached (the lock order in `eventtally_core::shared`).
pub(crate) trait EnterCore {
    fn enter_core<T, F>(self, f: F) -> PyResult<T>
    where
        F: Send + FnOnce() -> Result<T, Error>,
        T: Send;
}

impl EnterCore for Python<'_> {
    fn enter_core<T, F>(self, f: F) -> PyResult<T>
    where
        F: Send + FnOnce() -> Result<T, Error>,
        T: Send,
    {
        self.detach(f).map_err(|e| to_py_err(self, &e))
    }
}
