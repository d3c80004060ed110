//! Columnar aggregate state of one filter: one row per (bucket start, grouping-value tuple),
//! one set of columns per aggregation.
//!
//! Guarantees: every update is order-independent up to floating-point summation order
//! (COUNT, MIN, MAX and the sketches are exactly order-independent), and `merge_from` gives the
//! same state as replaying the other state's updates (the property snapshots, batch atomicity and
//! distributed merge rely on).

use hashbrown::HashMap;

use crate::config::{Calc, CalcSet, FilterDef};
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
    pub distinct: Vec<DistinctSketch>,
    pub quantile: Vec<QuantileSketch>,
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
            self.distinct.push(DistinctSketch::new());
        }
        if self.calcs.contains(Calc::Percentiles) {
            self.quantile.push(QuantileSketch::new());
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
        if let Some(q) = self.quantile.get_mut(row) {
            q.add(v);
        }
    }

    fn merge_row(&mut self, row: usize, other: &AggColumns, orow: usize) {
        self.matched[row] += other.matched[orow];
        if !self.numeric.is_empty() {
            self.numeric[row] += other.numeric[orow];
            self.sum[row] += other.sum[orow];
            self.min[row] = self.min[row].min(other.min[orow]);
            self.max[row] = self.max[row].max(other.max[orow]);
        }
        if !self.distinct.is_empty() {
            self.distinct[row].merge(&other.distinct[orow]);
        }
        if !self.quantile.is_empty() {
            self.quantile[row].merge(&other.quantile[orow]);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.matched.capacity() * 8
            + self.numeric.capacity() * 8
            + (self.sum.capacity() + self.min.capacity() + self.max.capacity()) * 8
            + self
                .distinct
                .iter()
                .map(|d| d.heap_bytes() + std::mem::size_of::<DistinctSketch>())
                .sum::<usize>()
            + self
                .quantile
                .iter()
                .map(|q| q.heap_bytes() + std::mem::size_of::<QuantileSketch>())
                .sum::<usize>()
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
        retain(&mut self.distinct, keep);
        retain(&mut self.quantile, keep);
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

    /// Adds every row of `other` (a state of the same filter definition) into this one.
    pub fn merge_from(&mut self, other: &FilterState) {
        let mut group_map: Vec<Option<u32>> = vec![None; other.groups.len()];
        for orow in 0..other.rows() {
            let og = other.row_group[orow];
            let g = *group_map[og as usize]
                .get_or_insert_with(|| self.groups.intern(other.groups.key(og)));
            let row = self.row(other.row_bucket[orow], g);
            for (a, oa) in self.aggs.iter_mut().zip(&other.aggs) {
                a.merge_row(row, oa, orow);
            }
        }
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
        self.groups.heap_bytes()
            + self.cells.capacity() * 16
            + self.row_bucket.capacity() * 12
            + self.aggs.iter().map(AggColumns::heap_bytes).sum::<usize>()
    }

    /// Rebuilds the cell index after the columns were filled directly (snapshot load); returns
    /// false when two rows claim the same (bucket, tuple) cell.
    pub fn reindex(&mut self) -> bool {
        self.cells.clear();
        self.last = None;
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
            remove(&mut a.distinct, r);
            remove(&mut a.quantile, r);
        }
    }

    /// Gives spare capacity back once the rows fell well below it.
    pub fn shrink_if_sparse(&mut self) {
        let n = self.rows();
        if n * 4 >= self.row_bucket.capacity() * 3 {
            return;
        }
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
        if n * 2 < self.cells.capacity() {
            self.cells.shrink_to_fit();
        }
    }
}
