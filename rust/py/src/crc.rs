//! `crc32`: the write-ahead log's record checksum (`eventtally_core::checksum::crc32`), equal to
//! `zlib.crc32`, computed detached from the interpreter for immutable `bytes` of 1 MiB or more
//! so the other threads keep running meanwhile (smaller ones are faster to checksum attached).

use eventtally_core::checksum;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::Input;

/// The CRC-32 of `data` continuing from `value`, exactly as `zlib.crc32(data, value)`.
///
/// `bytes` is read in place (detached from 1 MiB: it cannot change meanwhile); any other buffer
/// is copied first, since another thread could write to it.
#[pyfunction]
#[pyo3(signature = (data, value=0))]
pub(crate) fn crc32(py: Python<'_>, data: &Bound<'_, PyAny>, value: u32) -> PyResult<u32> {
    let immutable = data.is_instance_of::<PyBytes>();
    let input = Input::extract(data)?;
    let bytes = input.as_ref();
    if immutable && bytes.len() >= DETACH_FROM {
        return Ok(py.detach(|| checksum::crc32(input.as_ref(), value)));
    }
    Ok(checksum::crc32(bytes, value))
}

/// Below this many bytes the checksum (about 6 µs per 300 KB) takes less time than giving up
/// and retaking the interpreter, which with a busy worker pool costs a GIL handoff or more.
const DETACH_FROM: usize = 1 << 20;
