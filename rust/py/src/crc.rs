//! `crc32`: the write-ahead log's record checksum (`eventtally_core::checksum::crc32`), equal to
//! `zlib.crc32`, computed detached from the interpreter for immutable `bytes` so the other
//! threads keep running while a 300 KB batch is checksummed.

use eventtally_core::checksum;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::Input;

/// The CRC-32 of `data` continuing from `value`, exactly as `zlib.crc32(data, value)`.
///
/// `bytes` is read in place while detached (it cannot change); any other buffer is copied first
/// while attached, since another thread could write to it meanwhile.
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

/// Below this many bytes the checksum takes less time than giving up and retaking the
/// interpreter (the threshold zlib's binding uses too).
const DETACH_FROM: usize = 5 * 1024;
