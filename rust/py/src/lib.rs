//! pyo3 bindings for eventtally-core. This crate only converts: Python inputs are taken while
//! attached to the interpreter, each call runs detached through the one entry point
//! ([`errors::EnterCore::enter_core`]), and every core error goes through the single conversion
//! point ([`errors::to_py_err`]). What the engine does (its locks and their order, the
//! prepare-again rule, definition edits, merges, retention) is decided by
//! `eventtally_core::shared`.
//!
//! Modules: `errors` (error conversion and `enter_core`), `convert` (inputs and stats),
//! `engine` (the `Engine` class), `batch` (the `PreparedBatch` class), `ids` (`messageId`
//! extraction for deduplication), `crc` (the write-ahead log's `crc32`); this file is the module
//! table. Both classes are frozen: their state sits behind the core's own locks.
//!
//! **No lock is ever taken, or waited for, while attached to Python**: every core call runs
//! detached and the core drops its guards before returning. A thread that waited for a Rust lock
//! while holding the GIL could block the lock's holder forever the moment it needed the GIL back.
//! The only attach from detached code is a file ingest's progress callback, which the core calls
//! while it holds no lock.

mod batch;
mod convert;
mod crc;
mod engine;
mod errors;
mod ids;

use eventtally_core::snapshot;
use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    m.add_class::<batch::PreparedBatch>()?;
    m.add_function(wrap_pyfunction!(ids::message_ids, m)?)?;
    m.add_function(wrap_pyfunction!(crc::crc32, m)?)?;
    m.add("SNAPSHOT_FORMAT_VERSION", snapshot::FORMAT_VERSION)?;
    Ok(())
}
