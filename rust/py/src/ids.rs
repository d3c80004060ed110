//! `message_ids`: each event's `messageId` of a batch, read by the core's batch grammar
//! (`eventtally_core::message_ids`), for `eventtally.durability.dedup`.

use eventtally_core::config::Schema;
use eventtally_core::message_ids::{message_ids as core_message_ids, MessageId};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::convert::Input;

/// One unit as Python receives it: `(start, end, kind, value)`; kind 0 structural line, 1 no id,
/// 2 string id (`value` the string), 3 other id (`value` its JSON text).
type PyUnit = (usize, usize, u8, Option<String>);

/// The units of `body` laid out as `schema` (a canonical schema name; `array_path` the ingest's
/// `arrayPath`), and the span of the event array for the array schemas; `None` when the engine
/// would refuse the batch (or the `arrayPath` does not compile), so the caller passes it on
/// untouched.
#[pyfunction]
#[pyo3(signature = (body, schema, array_path=None))]
#[allow(clippy::type_complexity)]
pub(crate) fn message_ids(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    schema: &str,
    array_path: Option<&str>,
) -> PyResult<Option<(Vec<PyUnit>, Option<(usize, usize)>)>> {
    let schema = Schema::from_name(schema)
        .ok_or_else(|| PyValueError::new_err(format!("unknown ingest schema {schema:?}")))?;
    let input = Input::extract(body)?;
    let array_path = array_path.map(str::to_owned);
    Ok(py.detach(|| {
        let path = match array_path
            .as_deref()
            .map(eventtally_core::jpath::parse_path)
        {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => return None,
        };
        let got = core_message_ids(input.as_ref(), schema, path.as_ref()).ok()?;
        let units = got
            .units
            .into_iter()
            .map(|u| match u.id {
                MessageId::Structural => (u.start, u.end, 0, None),
                MessageId::Absent => (u.start, u.end, 1, None),
                MessageId::Str(s) => (u.start, u.end, 2, Some(s.into_owned())),
                MessageId::Json(raw) => (u.start, u.end, 3, Some(raw.to_owned())),
            })
            .collect();
        Some((units, got.array))
    }))
}
