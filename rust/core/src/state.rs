//! Columnar aggregate state of one filter: one row per (bucket start, grouping-value tuple),
//! one set of columns per aggregation.
//!
//! Guarantees: every update is order-independent up to floating-point summation order
//! (COUNT, MIN, MAX and the sketches are exactly order-independent), and `merge_from` gives the
//! same state as replaying the other state's updates (the property snapshots, batch atomicity and
//! distributed merge rely on).
//!
//! Merges use checked arithmetic: a merge whose COUNT or numeric-value count would overflow is
//! refused with `Error::Limit` before any row changes (a wrapped counter would silently turn a
//! bucket into an empty one). [`FilterState::validate`] checks the invariants every state built
//! by ingestion and merges holds, for states that come from outside (snapshots).

use hashbrown::HashMap;

use crate::cells::SketchColumn;
use crate::config::{Calc, CalcSet, FilterDef};
use crate::error::{Error, Result};
use crate::sketch::{DistinctSketch, QuantileSketch};

/// Interned grouping-value tuples. A tuple is encoded as a sequence of (u32 LE length, bytes);
/// all tuples live in one byte arena so interning a new tuple costs no allocation of its own.
#[derive(Debug, Clone, Default)]
pub struct GroupTable {
    index: hashbrown::HashTable<u32>,
    arena: Vec<u8>,
    /// `ends[i]` is the arena offset where tuple `i` ends (it starts where `i - 1` ends).
    ends: Vec<usize>,
}

#[inline]
fn hash_key(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5EED).hash_one(key)
}

impl GroupTable {
    #[inline]
    pub fn intern(&mut self, key: &[u8]) -> u32 {
        let hash = hash_key(key);
        let (arena, ends) = (&self.arena, &self.ends);
        let slice = |id: u32| {
            let end = ends[id as usize];
            let start = if id == 0 { 0 } else { ends[id as usize - 1] };
            &arena[start..end]
        };
        if let Some(&id) = self.index.find(hash, |&id| slice(id) == key) {
            return id;
        }
        let id = self.ends.len() as u32;
        self.arena.extend_from_slice(key);
        self.ends.push(self.arena.len());
        let (arena, ends) = (&self.arena, &self.ends);
        self.index.insert_unique(hash, id, |&other| {
            let end = ends[other as usize];
            let start = if other == 0 {
                0
            } else {
                ends[other as usize - 1]
            };
            hash_key(&arena[start..end])
        });
        id
    }

    /// The id of an interned tuple, without interning it.
    #[must_use]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = hash_key(key);
        self.index.find(hash, |&id| self.key(id) == key).copied()
    }

    #[must_use]
    pub fn key(&self, id: u32) -> &[u8] {
        let end = self.ends[id as usize];
        let start = if id == 0 {
            0
        } else {
            self.ends[id as usize - 1]
        };
        &self.arena[start..end]
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.ends.capacity() * 8 + self.index.capacity() * 5
    }

    /// Decodes a tuple key into its values.
    #[must_use]
    pub fn decode(key: &[u8]) -> Vec<&str> {
        Self::try_decode(key).unwrap_or_default()
    }

    /// Decodes a tuple key, or `None` when it is not a well-formed sequence of UTF-8 values
    /// (snapshot loading checks every key with this).
    #[must_use]
    pub fn try_decode(key: &[u8]) -> Option<Vec<&str>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < key.len() {
            let len_bytes = key.get(i..i + 4)?;
            let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
            i += 4;
            let value = key.get(i..i.checked_add(len)?)?;
            out.push(std::str::from_utf8(value).ok()?);
            i += len;
        }
        Some(out)
    }

    /// Appends one value to a tuple key under construction.
    #[inline]
    pub fn push_component(key: &mut Vec<u8>, value: &str) {
        key.extend_from_slice(&(value.len() as u32).to_le_bytes());
        key.extend_from_slice(value.as_bytes());
    }
}

/// The columns of one aggregation. Only the columns its calculations need are non-empty.
#[derive(Debug, Clone, Default)]
pub struct AggColumns {
    pub calcs: CalcSet,
    /// Events that matched the filter and this aggregation's sub-filter (COUNT).
    pub matched: Vec<u64>,
    /// Numeric values seen (AVG's divisor; a row with 0 has no SUM/AVG/MIN/MAX).
    pub numeric: Vec<u64>,
    pub sum: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    /// Sketch columns store one-value cells inline (`cells` module): a rollup reads one word
    /// per row, not a sketch.
    pub distinct: SketchColumn<DistinctSketch>,
    pub quantile: SketchColumn<QuantileSketch>,
}

impl AggColumns {
    fn new(calcs: CalcSet) -> Self {
        Self {
            calcs,
            ..Self::default()
        }
    }

    pub(crate) fn needs_numeric(&self) -> bool {
        self.calcs.contains(Calc::Sum)
            || self.calcs.contains(Calc::Avg)
            || self.calcs.contains(Calc::Min)
            || self.calcs.contains(Calc::Max)
    }

    fn push_row(&mut self) {
        self.matched.push(0);
        if self.needs_numeric() {
            self.numeric.push(0);
            self.sum.push(0.0);
            self.min.push(f64::INFINITY);
            self.max.push(f64::NEG_INFINITY);
        }
        if self.calcs.contains(Calc::ApproxCountDistinct) {
            self.distinct.push_empty();
        }
        if self.calcs.contains(Calc::Percentiles) {
            self.quantile.push_empty();
        }
    }

    /// Reserves room for `additional` more rows in every column this aggregation uses.
    fn reserve_rows(&mut self, additional: usize) {
        self.matched.reserve(additional);
        if self.needs_numeric() {
            self.numeric.reserve(additional);
            self.sum.reserve(additional);
            self.min.reserve(additional);
            self.max.reserve(additional);
        }
        if self.calcs.contains(Calc::ApproxCountDistinct) {
            self.distinct.reserve(additional);
        }
        if self.calcs.contains(Calc::Percentiles) {
            self.quantile.reserve(additional);
        }
    }

    /// Records a numeric value in `row`.
    #[inline]
    pub fn add_numeric(&mut self, row: usize, v: f64) {
        if !self.numeric.is_empty() {
            self.numeric[row] += 1;
            self.sum[row] += v;
            if v < self.min[row] {
                self.min[row] = v;
            }
            if v > self.max[row] {
                self.max[row] = v;
            }
        }
        if !self.quantile.is_empty() {
            self.quantile.add(row, v);
        }
    }

    /// Whether `other`'s row `orow` can be added into row `row` (`None`: a row not created yet)
    /// without a counter overflowing.
    fn check_merge_row(&self, row: Option<usize>, other: &AggColumns, orow: usize) -> bool {
        let Some(row) = row else { return true };
        let fits = |mine: &[u64], theirs: &[u64]| {
            mine.is_empty() || mine[row].checked_add(theirs[orow]).is_some()
        };
        fits(&self.matched, &other.matched) && fits(&self.numeric, &other.numeric)
    }

    /// Adds `other`'s row `orow` into row `row`. Counters are added with checked arithmetic; an
    /// overflow leaves the row unchanged and returns `false` ([`FilterState::merge_from`] checks
    /// every row first, so a merge never stops halfway).
    fn merge_row(&mut self, row: usize, other: &AggColumns, orow: usize) -> bool {
        let Some(matched) = self.matched[row].checked_add(other.matched[orow]) else {
            return false;
        };
        let numeric = if self.numeric.is_empty() {
            0
        } else {
            match self.numeric[row].checked_add(other.numeric[orow]) {
                Some(n) => n,
                None => return false,
            }
        };
        self.matched[row] = matched;
        if !self.numeric.is_empty() {
            self.numeric[row] = numeric;
            self.sum[row] += other.sum[orow];
            self.min[row] = self.min[row].min(other.min[orow]);
            self.max[row] = self.max[row].max(other.max[orow]);
        }
        if !self.distinct.is_empty() {
            self.distinct.merge_cell(row, other.distinct.cell(orow));
        }
        if !self.quantile.is_empty() {
            self.quantile.merge_cell(row, other.quantile.cell(orow));
        }
        true
    }

    /// Sum of a counter column over every row, `None` when it does not fit in `u64`.
    fn total(column: &[u64]) -> Option<u64> {
        column.iter().try_fold(0u64, |acc, &n| acc.checked_add(n))
    }

    fn column_heap_bytes(&self) -> usize {
        self.matched.capacity() * 8
            + self.numeric.capacity() * 8
            + (self.sum.capacity() + self.min.capacity() + self.max.capacity()) * 8
            + self.distinct.word_bytes()
            + self.quantile.word_bytes()
    }

    fn sketch_heap_bytes(&self) -> usize {
        self.distinct.sketch_bytes() + self.quantile.sketch_bytes()
    }

    /// Keeps only the rows whose `keep` flag is set (in order).
    fn retain_rows(&mut self, keep: &[bool]) {
        fn retain<T>(v: &mut Vec<T>, keep: &[bool]) {
            if v.is_empty() {
                return;
            }
            let mut i = 0;
            v.retain(|_| {
                let k = keep[i];
                i += 1;
                k
            });
        }
        retain(&mut self.matched, keep);
        retain(&mut self.numeric, keep);
        retain(&mut self.sum, keep);
        retain(&mut self.min, keep);
        retain(&mut self.max, keep);
        self.distinct.retain(keep);
        self.quantile.retain(keep);
    }
}

/// The state of one filter.
#[derive(Debug, Clone, Default)]
pub struct FilterState {
    pub groups: GroupTable,
    cells: HashMap<(i64, u32), u32, foldhash::fast::FixedState>,
    pub row_bucket: Vec<i64>,
    pub row_group: Vec<u32>,
    pub aggs: Vec<AggColumns>,
    /// One-entry cache: consecutive events often land in the same cell.
    last: Option<((i64, u32), u32)>,
    /// Bumped whenever rows move to other indexes or grouping ids are renumbered (appending
    /// rows does not bump it), so a stepped compaction can tell that its scan is stale.
    epoch: u64,
}

impl FilterState {
    #[must_use]
    pub fn new(def: &FilterDef) -> Self {
        Self {
            aggs: def
                .aggregations
                .iter()
                .map(|a| AggColumns::new(a.calcs))
                .collect(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn rows(&self) -> usize {
        self.row_bucket.len()
    }

    /// Changes whenever rows moved to other indexes or grouping ids were renumbered; appending
    /// rows (ingest, merges) leaves it as it is.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The row of (bucket, group) when that cell exists.
    #[inline]
    #[must_use]
    pub fn find_row(&self, bucket: i64, group: u32) -> Option<usize> {
        self.cells.get(&(bucket, group)).map(|&r| r as usize)
    }

    /// The row of (bucket, group), created when new.
    #[inline]
    pub fn row(&mut self, bucket: i64, group: u32) -> usize {
        if let Some((k, r)) = self.last {
            if k == (bucket, group) {
                return r as usize;
            }
        }
        let next = self.row_bucket.len() as u32;
        let row = *self.cells.entry((bucket, group)).or_insert(next);
        if row == next {
            self.row_bucket.push(bucket);
            self.row_group.push(group);
            for a in &mut self.aggs {
                a.push_row();
            }
        }
        self.last = Some(((bucket, group), row));
        row as usize
    }

    /// Reserves room for `additional` more rows: the cell index, the row columns and every
    /// aggregation column, so a batch that opens many rows grows each of them once instead of
    /// doubling (and rehashing) its way up. [`FilterState::release_reserve`] gives back what a
    /// batch did not use.
    pub fn reserve_rows(&mut self, additional: usize) {
        self.cells.reserve(additional);
        self.row_bucket.reserve(additional);
        self.row_group.reserve(additional);
        for a in &mut self.aggs {
            a.reserve_rows(additional);
        }
    }

    /// After a batch that reserved rows up front ([`FilterState::reserve_rows`]): gives the
    /// capacity back when the rows used are far fewer than reserved, so a big batch with few
    /// rows does not keep its reservation (a delta moves into an empty store as it is, and a
    /// prepared batch may be held a while). What stays is at most what growth by doubling
    /// leaves: columns of at most twice the rows (four at least), and a cell index of at most
    /// four times the rows, since shrinking the index costs a rehash of every cell.
    pub fn release_reserve(&mut self) {
        let n = self.rows().max(2);
        if self.row_bucket.capacity() > 2 * n {
            self.shrink_row_columns();
        }
        if self.cells.capacity() > 4 * n {
            self.cells.shrink_to_fit();
        }
    }

    /// Capacity in rows of the row columns (the aggregation columns have the same or none).
    #[must_use]
    pub fn row_capacity(&self) -> usize {
        self.row_bucket.capacity()
    }

    /// Adds every row of `other` (a state of the same filter definition) into this one.
    ///
    /// Atomic: every cell is checked first, and a merge in which a COUNT or numeric-value
    /// counter would overflow is refused with `Error::Limit` naming the cell, changing nothing.
    pub fn merge_from(&mut self, other: &FilterState) -> Result<()> {
        self.check_merge(other)?;
        let mut group_map: Vec<Option<u32>> = vec![None; other.groups.len()];
        for orow in 0..other.rows() {
            let og = other.row_group[orow];
            let g = *group_map[og as usize]
                .get_or_insert_with(|| self.groups.intern(other.groups.key(og)));
            let row = self.row(other.row_bucket[orow], g);
            for (a, oa) in self.aggs.iter_mut().zip(&other.aggs) {
                let merged = a.merge_row(row, oa, orow);
                debug_assert!(merged, "check_merge admitted every row");
            }
        }
        Ok(())
    }

    /// Refuses a merge of `other` into this state in which any cell's counter would overflow.
    pub fn check_merge(&self, other: &FilterState) -> Result<()> {
        if self.rows() == 0 {
            return Ok(());
        }
        let mut group_map: Vec<Option<Option<u32>>> = vec![None; other.groups.len()];
        for orow in 0..other.rows() {
            let og = other.row_group[orow];
            let g = *group_map[og as usize]
                .get_or_insert_with(|| self.groups.find(other.groups.key(og)));
            let row = g.and_then(|g| {
                self.cells
                    .get(&(other.row_bucket[orow], g))
                    .map(|&r| r as usize)
            });
            for (i, (a, oa)) in self.aggs.iter().zip(&other.aggs).enumerate() {
                if !a.check_merge_row(row, oa, orow) {
                    return Err(Error::Limit {
                        reason: format!(
                            "merging would overflow the counters of the aggregation at index {i} in the cell \
                             of bucket {} ms, grouping {:?}",
                            other.row_bucket[orow],
                            GroupTable::decode(other.groups.key(og)),
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks the invariants ingestion and merges keep, for a state built from outside bytes:
    /// per aggregation and cell, the numeric-value count is at most the COUNT; per aggregation,
    /// the counters of all cells sum without overflow (queries over a window add them up); a
    /// cell without numeric values has no SUM/MIN/MAX, and one with values has finite
    /// `min <= max` (values are finite numbers). The error names the aggregation and cell.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (i, a) in self.aggs.iter().enumerate() {
            let cell = |row: usize| {
                format!(
                    "aggregation at index {i}, cell of bucket {} ms, grouping {:?}",
                    self.row_bucket[row],
                    GroupTable::decode(self.groups.key(self.row_group[row]))
                )
            };
            if AggColumns::total(&a.matched).is_none() {
                return Err(format!(
                    "the COUNT cells of the aggregation at index {i} sum beyond 2^64 - 1"
                ));
            }
            for row in 0..a.numeric.len() {
                let (n, m) = (a.numeric[row], a.matched[row]);
                if n > m {
                    return Err(format!(
                        "{}: {n} numeric values but a COUNT of {m}",
                        cell(row)
                    ));
                }
                let (sum, lo, hi) = (a.sum[row], a.min[row], a.max[row]);
                let empty = sum == 0.0 && lo == f64::INFINITY && hi == f64::NEG_INFINITY;
                if n == 0 && !empty {
                    return Err(format!(
                        "{}: SUM/MIN/MAX without any numeric value",
                        cell(row)
                    ));
                }
                if n > 0 && !(lo <= hi && lo.is_finite() && hi.is_finite()) {
                    return Err(format!(
                        "{}: MIN {lo} and MAX {hi} are not finite values with MIN <= MAX",
                        cell(row)
                    ));
                }
            }
        }
        Ok(())
    }

    /// Drops rows whose bucket starts before `horizon_ms`; returns how many were dropped.
    pub fn drop_before(&mut self, horizon_ms: i64) -> usize {
        let keep: Vec<bool> = self.row_bucket.iter().map(|&b| b >= horizon_ms).collect();
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped == 0 {
            return 0;
        }
        let mut i = 0;
        self.row_bucket.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        let mut i = 0;
        self.row_group.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        for a in &mut self.aggs {
            a.retain_rows(&keep);
        }
        self.epoch = self.epoch.wrapping_add(1);
        // Keep only the grouping tuples surviving rows use, so retention bounds memory.
        let mut groups = GroupTable::default();
        let mut remap: Vec<Option<u32>> = vec![None; self.groups.len()];
        for g in &mut self.row_group {
            let old = *g as usize;
            *g = *remap[old].get_or_insert_with(|| groups.intern(self.groups.key(*g)));
        }
        self.groups = groups;
        let unique = self.reindex();
        debug_assert!(unique, "retained rows keep distinct cells");
        dropped
    }

    /// Approximate bytes held by this state.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.fixed_heap_bytes()
            + self
                .aggs
                .iter()
                .map(AggColumns::sketch_heap_bytes)
                .sum::<usize>()
    }

    /// The part of [`FilterState::heap_bytes`] that is not the sketches: the grouping table, the
    /// cell index and the columns' capacity. Costs O(aggregations), not O(rows).
    #[must_use]
    pub fn fixed_heap_bytes(&self) -> usize {
        self.groups.heap_bytes()
            + self.cells.capacity() * 16
            + self.row_bucket.capacity() * 12
            + self
                .aggs
                .iter()
                .map(AggColumns::column_heap_bytes)
                .sum::<usize>()
    }

    /// The sketch bytes of row `r` (its part of [`FilterState::heap_bytes`] beyond the columns).
    #[must_use]
    pub fn row_sketch_bytes(&self, r: usize) -> usize {
        self.aggs
            .iter()
            .map(|a| {
                (if a.distinct.is_empty() {
                    0
                } else {
                    a.distinct.row_bytes(r)
                }) + (if a.quantile.is_empty() {
                    0
                } else {
                    a.quantile.row_bytes(r)
                })
            })
            .sum()
    }

    /// Rebuilds the cell index after the columns were filled directly (snapshot load); returns
    /// false when two rows claim the same (bucket, tuple) cell.
    pub fn reindex(&mut self) -> bool {
        self.cells.clear();
        self.last = None;
        self.epoch = self.epoch.wrapping_add(1);
        for (r, (&b, &g)) in self.row_bucket.iter().zip(&self.row_group).enumerate() {
            if self.cells.insert((b, g), r as u32).is_some() {
                return false;
            }
        }
        true
    }
}

/// Row surgery for retention compaction (`retention` module): work proportional to the rows
/// changed, not to the state, so a compaction step can be short.
impl FilterState {
    /// Removes row `r` by moving the last row into its place; the cell index follows the move.
    /// Row order is not kept (compaction orders its merges itself).
    pub fn swap_remove_row(&mut self, r: usize) {
        self.last = None;
        self.epoch = self.epoch.wrapping_add(1);
        let key = (self.row_bucket[r], self.row_group[r]);
        self.cells.remove(&key);
        let last = self.rows() - 1;
        if r != last {
            let moved = (self.row_bucket[last], self.row_group[last]);
            self.cells.insert(moved, r as u32);
        }
        self.row_bucket.swap_remove(r);
        self.row_group.swap_remove(r);
        for a in &mut self.aggs {
            fn remove<T>(v: &mut Vec<T>, r: usize) {
                if !v.is_empty() {
                    v.swap_remove(r);
                }
            }
            remove(&mut a.matched, r);
            remove(&mut a.numeric, r);
            remove(&mut a.sum, r);
            remove(&mut a.min, r);
            remove(&mut a.max, r);
            if !a.distinct.is_empty() {
                a.distinct.swap_remove(r);
            }
            if !a.quantile.is_empty() {
                a.quantile.swap_remove(r);
            }
        }
    }

    /// Shrinks the row columns and every aggregation column to their rows.
    fn shrink_row_columns(&mut self) {
        self.row_bucket.shrink_to_fit();
        self.row_group.shrink_to_fit();
        for a in &mut self.aggs {
            a.matched.shrink_to_fit();
            a.numeric.shrink_to_fit();
            a.sum.shrink_to_fit();
            a.min.shrink_to_fit();
            a.max.shrink_to_fit();
            a.distinct.shrink_to_fit();
            a.quantile.shrink_to_fit();
        }
    }

    /// Gives spare capacity back once the rows fell well below it.
    pub fn shrink_if_sparse(&mut self) {
        let n = self.rows();
        if n * 4 >= self.row_bucket.capacity() * 3 {
            return;
        }
        self.shrink_row_columns();
        if n * 2 < self.cells.capacity() {
            self.cells.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(calcs: &[&str]) -> FilterDef {
        FilterDef::from_json(&json!({
            "id": "f", "name": "f", "filter": "", "groupingItems": [],
            "intervalType": "MINUTE", "intervalCount": 1,
            "aggregations": [{"id": 1, "name": "a", "calculations": calcs,
                              "calculationField": "$.v", "subFilter": null}],
        }))
        .expect("valid filter")
    }

    fn one_cell(d: &FilterDef, matched: u64, numeric: u64, bucket: i64) -> FilterState {
        let mut s = FilterState::new(d);
        let g = s.groups.intern(&[]);
        let row = s.row(bucket, g);
        s.aggs[0].matched[row] = matched;
        if !s.aggs[0].numeric.is_empty() {
            s.aggs[0].numeric[row] = numeric;
            if numeric > 0 {
                s.aggs[0].sum[row] = 1.0;
                s.aggs[0].min[row] = 1.0;
                s.aggs[0].max[row] = 1.0;
            }
        }
        s
    }

    #[test]
    fn a_merge_that_would_wrap_a_count_is_refused_and_changes_nothing() {
        let d = def(&["COUNT"]);
        let forged = one_cell(&d, 1 << 63, 0, 0);
        let mut mine = forged.clone();
        let err = mine.merge_from(&forged).expect_err("2^63 + 2^63 overflows");
        assert!(
            matches!(&err, Error::Limit { reason } if reason.contains("overflow")),
            "{err}"
        );
        assert_eq!(mine.aggs[0].matched, vec![1 << 63]);
        // A cell the merge does not share is added as it is.
        let other_bucket = one_cell(&d, 1 << 63, 0, 60_000);
        mine.merge_from(&other_bucket)
            .expect("distinct cells do not add up");
        assert_eq!(mine.aggs[0].matched, vec![1 << 63, 1 << 63]);
    }

    #[test]
    fn numeric_counters_are_checked_too() {
        let d = def(&["SUM"]);
        let mut mine = one_cell(&d, u64::MAX, u64::MAX, 0);
        let mut other = one_cell(&d, 0, 1, 0);
        other.aggs[0].matched[0] = 0;
        assert!(mine.merge_from(&other).is_err());
        assert_eq!(mine.aggs[0].numeric, vec![u64::MAX]);
        let small = one_cell(&d, 2, 2, 0);
        let mut fine = one_cell(&d, 3, 1, 0);
        fine.merge_from(&small).expect("fits");
        assert_eq!((fine.aggs[0].matched[0], fine.aggs[0].numeric[0]), (5, 3));
    }

    #[test]
    fn validate_refuses_impossible_states() {
        let d = def(&["SUM"]);
        assert!(one_cell(&d, 3, 2, 0).validate().is_ok());
        let err = one_cell(&d, 2, 3, 0)
            .validate()
            .expect_err("numeric above count");
        assert!(err.contains("3 numeric values but a COUNT of 2"), "{err}");
        let mut two = one_cell(&d, u64::MAX, 0, 0);
        two.merge_from(&one_cell(&d, 1, 0, 60_000))
            .expect("cells fit");
        let err = two.validate().expect_err("cells cannot sum");
        assert!(err.contains("sum beyond"), "{err}");
        let mut no_values = one_cell(&d, 1, 0, 0);
        no_values.aggs[0].max[0] = 5.0;
        assert!(no_values.validate().is_err());
        let mut inverted = one_cell(&d, 1, 1, 0);
        inverted.aggs[0].min[0] = 2.0;
        assert!(inverted.validate().unwrap_err().contains("MIN 2 and MAX 1"));
    }
}
