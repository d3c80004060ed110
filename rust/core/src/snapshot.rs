//! Snapshots: the whole engine (definitions and every filter's state) as versioned, checksummed
//! bytes.
//!
//! Layout (little-endian), documented in `docs/snapshot-format.md`:
//! ```text
//! magic   8 bytes  "ETALLY\x00\x01"
//! version u32      FORMAT_VERSION
//! length  u64      payload length
//! crc32   u32      CRC-32 (IEEE) of the payload
//! payload          definitions JSON, then one state block per filter, then (version 2)
//!                  the retention tier section
//! ```
//! Guarantees: a truncated, corrupt (checksum), foreign (magic) or newer (version) snapshot is
//! refused with `Error::Snapshot` naming the problem, before any state is built; decoding never
//! trusts a length field beyond the bytes present. Every version main ever wrote still loads:
//! version 1 keeps percentile bins only (see [`read_quantile`]) and has no tier section. A
//! well-formed snapshot holding a state no ingestion could produce (`FilterState::validate`: a
//! numeric count above the COUNT, counters that cannot sum, MIN/MAX without values) is refused
//! too, so forged bytes cannot make a later merge or query overflow.

use serde_json::{json, Value as Json};

use crate::codec::{DecodeError, Reader, Writer};
use crate::config::{Calc, CalcSet, FilterDef, IngestDef};
use crate::engine::{Engine, EngineState, Plan};
use crate::error::{Error, Result};
use crate::sketch::{DistinctSketch, QuantileSketch};
use crate::state::{AggColumns, FilterState, GroupTable};

pub const MAGIC: &[u8; 8] = b"ETALLY\x00\x01";
pub const FORMAT_VERSION: u32 = 2;
/// Oldest format version `decode` still reads (version 1: percentile bins only, no tier section).
pub const OLDEST_READABLE_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

fn bad(reason: impl Into<String>) -> Error {
    Error::Snapshot {
        reason: reason.into(),
    }
}

/// The definitions JSON stored in a snapshot (also used to compare engines before a merge).
#[must_use]
pub fn definitions_json(plan: &Plan) -> Json {
    json!({
        "ingests": plan.ingests().map(IngestDef::to_json).collect::<Vec<_>>(),
        "filters": plan.filters().map(FilterDef::to_json).collect::<Vec<_>>(),
    })
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        bad(match e {
            DecodeError::Truncated { at } | DecodeError::Varint { at } => {
                format!("truncated at payload byte {at}")
            }
            DecodeError::Length { n, at } => {
                format!("length {n} at payload byte {at} exceeds the data")
            }
        })
    }
}

fn write_state(w: &mut Writer, id: &str, s: &FilterState) {
    w.prefixed(id.as_bytes());
    w.u32(s.groups.len() as u32);
    for g in 0..s.groups.len() {
        w.prefixed(s.groups.key(g as u32));
    }
    w.u32(s.rows() as u32);
    w.i64s(&s.row_bucket);
    w.u32s(&s.row_group);
    w.u32(s.aggs.len() as u32);
    for a in &s.aggs {
        w.u8(a.calcs.bits());
        w.u64s(&a.matched);
        w.u8(u8::from(!a.numeric.is_empty()));
        if !a.numeric.is_empty() {
            w.u64s(&a.numeric);
            w.f64s(&a.sum);
            w.f64s(&a.min);
            w.f64s(&a.max);
        }
        w.u8(u8::from(!a.distinct.is_empty()));
        for r in 0..a.distinct.len() {
            a.distinct.sketch(r).encode(&mut w.out);
        }
        w.u8(u8::from(!a.quantile.is_empty()));
        for r in 0..a.quantile.len() {
            a.quantile.sketch(r).encode(&mut w.out);
        }
    }
}

/// The percentile state of one cell in the layout of format `version`: version 2 keeps small
/// cells' values (`QuantileSketch::decode`); version 1 had bins only
/// (`QuantileSketch::decode_v1`), so such cells load binned.
fn read_quantile(r: &mut Reader<'_>, version: u32) -> Result<QuantileSketch> {
    let input = &r.buf[r.pos..];
    let (q, used) = if version == 1 {
        QuantileSketch::decode_v1(input)
    } else {
        QuantileSketch::decode(input)
    }
    .map_err(bad)?;
    r.pos += used;
    Ok(q)
}

fn read_state(r: &mut Reader<'_>, def: &FilterDef, version: u32) -> Result<FilterState> {
    let mut s = FilterState::new(def);
    let groups = r.count(4)?;
    for g in 0..groups {
        let key = r.prefixed()?;
        let well_formed =
            GroupTable::try_decode(key).is_some_and(|values| values.len() == def.groupings.len());
        if !well_formed {
            return Err(bad(format!(
                "grouping tuple {g} of filter {:?} is malformed",
                def.id
            )));
        }
        if s.groups.intern(key) as usize != g {
            return Err(bad(format!(
                "duplicate grouping tuple in filter {:?}",
                def.id
            )));
        }
    }
    let rows = r.count(12)?;
    s.row_bucket = r.i64s(rows)?;
    s.row_group = r.u32s(rows)?;
    if s.row_group.iter().any(|g| *g as usize >= groups) {
        return Err(bad(format!(
            "row refers to a missing grouping tuple in filter {:?}",
            def.id
        )));
    }
    let n_aggs = r.u32()? as usize;
    if n_aggs != def.aggregations.len() {
        return Err(bad(format!(
            "filter {:?} has {} aggregations but the snapshot holds {n_aggs}",
            def.id,
            def.aggregations.len()
        )));
    }
    for (i, adef) in def.aggregations.iter().enumerate() {
        let calcs = CalcSet::from_bits(r.u8()?);
        if calcs != adef.calcs {
            return Err(bad(format!(
                "aggregation {} of filter {:?} changed calculations",
                adef.id, def.id
            )));
        }
        let mut a = AggColumns {
            calcs,
            ..AggColumns::default()
        };
        a.matched = r.u64s(rows)?;
        if r.u8()? == 1 {
            a.numeric = r.u64s(rows)?;
            a.sum = r.f64s(rows)?;
            a.min = r.f64s(rows)?;
            a.max = r.f64s(rows)?;
        }
        if r.u8()? == 1 {
            a.distinct.reserve(rows);
            for _ in 0..rows {
                let (d, used) = DistinctSketch::decode(&r.buf[r.pos..]).map_err(bad)?;
                r.pos += used;
                a.distinct.push(d);
            }
        }
        if r.u8()? == 1 {
            a.quantile.reserve(rows);
            for _ in 0..rows {
                a.quantile.push(read_quantile(r, version)?);
            }
        }
        let has = |empty: bool, wanted: bool| rows == 0 || empty != wanted;
        let complete = has(a.numeric.is_empty(), a.needs_numeric())
            && has(
                a.distinct.is_empty(),
                calcs.contains(Calc::ApproxCountDistinct),
            )
            && has(a.quantile.is_empty(), calcs.contains(Calc::Percentiles));
        if !complete {
            return Err(bad(format!(
                "aggregation {} of filter {:?} lacks columns its calculations need",
                adef.id, def.id
            )));
        }
        s.aggs[i] = a;
    }
    if !s.reindex() {
        return Err(bad(format!(
            "filter {:?} holds two rows for one cell",
            def.id
        )));
    }
    s.validate()
        .map_err(|reason| bad(format!("filter {:?}: impossible state: {reason}", def.id)))?;
    Ok(s)
}

/// Serializes an engine's definitions and state.
#[must_use]
pub fn encode(plan: &Plan, store: &EngineState) -> Vec<u8> {
    let mut w = Writer { out: Vec::new() };
    let defs = serde_json::to_vec(&definitions_json(plan)).expect("definitions serialize");
    w.prefixed(&defs);
    let filters: Vec<&FilterDef> = plan.filters().collect();
    w.u32(filters.len() as u32);
    for f in filters {
        let empty;
        let state = if let Some(s) = store.states.get(&f.id) {
            s
        } else {
            empty = FilterState::new(f);
            &empty
        };
        write_state(&mut w, &f.id, state);
    }
    crate::retention::encode_layouts(&store.layouts, &mut w.out);
    let payload = w.out;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Rebuilds an engine from [`encode`]'s bytes.
pub fn decode(data: &[u8]) -> Result<Engine> {
    if data.len() < HEADER_LEN {
        return Err(bad(format!(
            "{} bytes is too short for a snapshot header",
            data.len()
        )));
    }
    if &data[..8] != MAGIC {
        return Err(bad("not an eventtally snapshot (bad magic bytes)"));
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(bad(format!(
            "format version {version} is not supported (this build reads versions \
             {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})"
        )));
    }
    let len = u64::from_le_bytes(data[12..20].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(data[20..24].try_into().expect("4 bytes"));
    let payload = &data[HEADER_LEN..];
    if (payload.len() as u64) < len {
        return Err(bad(format!(
            "truncated: header announces {len} payload bytes, {} present",
            payload.len()
        )));
    }
    if (payload.len() as u64) > len {
        return Err(bad("trailing bytes after the payload"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(bad("checksum mismatch: the snapshot is corrupt"));
    }
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let defs: Json = serde_json::from_slice(r.prefixed()?)
        .map_err(|e| bad(format!("definitions are not valid JSON: {e}")))?;
    let ingests = defs["ingests"]
        .as_array()
        .ok_or_else(|| bad("definitions lack ingests"))?
        .iter()
        .map(IngestDef::from_json)
        .collect::<Result<Vec<_>>>()
        .map_err(|e| bad(format!("stored ingest definition is invalid: {e}")))?;
    let filters = defs["filters"]
        .as_array()
        .ok_or_else(|| bad("definitions lack filters"))?
        .iter()
        .map(FilterDef::from_json)
        .collect::<Result<Vec<_>>>()
        .map_err(|e| bad(format!("stored filter definition is invalid: {e}")))?;
    let mut engine = Engine::new(ingests, filters)?;
    let n = r.u32()? as usize;
    let defs: Vec<FilterDef> = engine.plan.filters().cloned().collect();
    if n != defs.len() {
        return Err(bad(format!("{n} state blocks for {} filters", defs.len())));
    }
    for def in &defs {
        let id = std::str::from_utf8(r.prefixed()?).map_err(|_| bad("filter id is not UTF-8"))?;
        if id != def.id {
            return Err(bad(format!(
                "state block for {id:?} where {:?} was expected",
                def.id
            )));
        }
        let state = read_state(&mut r, def, version)?;
        engine.store.states.insert(def.id.clone(), state);
    }
    if version >= 2 {
        let (layouts, used) = crate::retention::decode_layouts(&r.buf[r.pos..], &engine.plan)?;
        r.pos += used;
        engine.store.layouts = layouts;
    }
    if r.pos != payload.len() {
        return Err(bad("unread bytes at the end of the payload"));
    }
    engine.store.recount_bytes();
    Ok(engine)
}
