//! Sketch columns of an aggregation ([`crate::state::AggColumns`]): one 64-bit word per row,
//! with the small cells inline.
//!
//! Guarantees:
//!
//! - **A cell is the sketch it stands for.** Every operation (add, merge of another cell, merge
//!   of one row into another, removal, retention of rows) leaves each cell in exactly the state
//!   the same operation gives a `Vec` of sketches, and [`SketchColumn::sketch`] returns that
//!   sketch; encodings, answers and merge-equals-replay are therefore those of `sketch`.
//! - **One word per row.** A cell holding one value (the usual cell of fine buckets: one event
//!   per minute and tuple) keeps it in its word: a quantile cell the value's bits, a distinct
//!   cell the value's hash. An empty cell is a reserved word. Any other cell's word indexes a
//!   side vector of full sketches that records each sketch's row, so removing a row stays
//!   O(1). A rollup over one-value cells reads 8 bytes per row, in row order, instead of one
//!   48-64-byte sketch per row (which bounded it by memory traffic, benches/README.md).
//! - **No value is refused for want of a word.** Quantile words reserve the NaN and infinity
//!   bit patterns (stored values are finite); distinct words reserve the 2^32 hashes whose top
//!   32 bits are all ones, and a one-value cell whose hash falls there is kept as a full sketch.
//!   Side-vector indexes are below 2^32 - 1 (rows are numbered in `u32`).

use std::borrow::Cow;

use crate::sketch::{DistinctMerger, DistinctSketch, QuantileMerger, QuantileSketch};

/// A sketch type a [`SketchColumn`] can hold, with its word encoding.
pub trait CellSketch: Clone + Default {
    /// The word of an empty cell.
    const EMPTY: u64;
    /// Words `BIG | i` index the side vector.
    const BIG: u64;
    /// Whether `word` is a one-value cell's word (not `EMPTY`, not a side-vector index).
    fn is_value(word: u64) -> bool;
    /// The one-value sketch of a value word.
    fn of_word(word: u64) -> Self;
    /// The word of a sketch that holds exactly one value with a value word, else `None`.
    fn word_of(&self) -> Option<u64>;
    /// Adds the value of a value word (as merging [`CellSketch::of_word`] would).
    fn absorb_word(&mut self, word: u64);
    fn merge_sketch(&mut self, other: &Self);
    fn heap_bytes(&self) -> usize;
}

// Quantile words: the bits of a finite `f64` (never -0.0: sketches turn it into +0.0). Words
// whose exponent bits are all ones (NaN, infinity) never hold a stored value.
const F64_EXPONENT: u64 = 0x7FF0_0000_0000_0000;

impl CellSketch for QuantileSketch {
    const EMPTY: u64 = 0x7FF8_0000_0000_0000;
    const BIG: u64 = 0xFFF8_0000_0000_0000;

    #[inline]
    fn is_value(word: u64) -> bool {
        word & F64_EXPONENT != F64_EXPONENT
    }

    fn of_word(word: u64) -> Self {
        let mut s = QuantileSketch::new();
        s.add(f64::from_bits(word));
        s
    }

    fn word_of(&self) -> Option<u64> {
        self.single_value().map(f64::to_bits)
    }

    fn absorb_word(&mut self, word: u64) {
        self.add(f64::from_bits(word));
    }

    fn merge_sketch(&mut self, other: &Self) {
        self.merge(other);
    }

    fn heap_bytes(&self) -> usize {
        QuantileSketch::heap_bytes(self)
    }
}

// Distinct words: the hash itself, unless its top 32 bits are all ones.
const DISTINCT_RESERVED: u64 = 0xFFFF_FFFF_0000_0000;

impl CellSketch for DistinctSketch {
    const EMPTY: u64 = u64::MAX;
    const BIG: u64 = DISTINCT_RESERVED;

    #[inline]
    fn is_value(word: u64) -> bool {
        word & DISTINCT_RESERVED != DISTINCT_RESERVED
    }

    fn of_word(word: u64) -> Self {
        let mut s = DistinctSketch::new();
        s.insert_hash(word);
        s
    }

    fn word_of(&self) -> Option<u64> {
        self.single_hash().filter(|&h| Self::is_value(h))
    }

    fn absorb_word(&mut self, word: u64) {
        self.insert_hash(word);
    }

    fn merge_sketch(&mut self, other: &Self) {
        self.merge(other);
    }

    fn heap_bytes(&self) -> usize {
        DistinctSketch::heap_bytes(self)
    }
}

/// One cell as stored.
#[derive(Debug)]
pub enum Cell<'a, S> {
    Empty,
    /// A one-value cell: its value word.
    One(u64),
    Sketch(&'a S),
}

// By hand: derived, these would require `S: Copy`, and a cell only borrows its sketch.
impl<S> Clone for Cell<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Cell<'_, S> {}

/// Where a cell lives, by its word.
#[derive(Clone, Copy)]
enum Slot {
    Empty,
    One(u64),
    Big(usize),
}

/// A column of sketch cells, one per row; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct SketchColumn<S> {
    words: Vec<u64>,
    big: Vec<S>,
    /// The row of each side-vector sketch.
    owner: Vec<u32>,
}

impl<S: CellSketch> SketchColumn<S> {
    #[must_use]
    pub fn len(&self) -> usize {
        self.words.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn slot(&self, row: usize) -> Slot {
        let w = self.words[row];
        if S::is_value(w) {
            Slot::One(w)
        } else if w == S::EMPTY {
            Slot::Empty
        } else {
            Slot::Big((w & 0xFFFF_FFFF) as usize)
        }
    }

    /// The cell of `row`.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    #[must_use]
    pub fn cell(&self, row: usize) -> Cell<'_, S> {
        match self.slot(row) {
            Slot::Empty => Cell::Empty,
            Slot::One(w) => Cell::One(w),
            Slot::Big(i) => Cell::Sketch(&self.big[i]),
        }
    }

    /// The sketch of `row` (built for an inline cell).
    #[must_use]
    pub fn sketch(&self, row: usize) -> Cow<'_, S> {
        match self.cell(row) {
            Cell::Empty => Cow::Owned(S::default()),
            Cell::One(w) => Cow::Owned(S::of_word(w)),
            Cell::Sketch(s) => Cow::Borrowed(s),
        }
    }

    pub fn reserve(&mut self, rows: usize) {
        self.words.reserve(rows);
    }

    pub fn push_empty(&mut self) {
        self.words.push(S::EMPTY);
    }

    /// Appends a row holding `sketch`.
    pub fn push(&mut self, sketch: S) {
        let row = self.words.len();
        self.words.push(S::EMPTY);
        self.set(row, sketch);
    }

    /// Makes `sketch` the cell of `row`, inline when it has a value word.
    fn set(&mut self, row: usize, sketch: S) {
        let old = self.slot(row);
        if let Some(w) = sketch.word_of() {
            if let Slot::Big(i) = old {
                self.free_big(i);
            }
            self.words[row] = w;
        } else if let Slot::Big(i) = old {
            self.big[i] = sketch;
        } else {
            let i = self.big.len();
            debug_assert!(i < u32::MAX as usize, "rows are numbered in u32");
            self.big.push(sketch);
            self.owner.push(row as u32);
            self.words[row] = S::BIG | i as u64;
        }
    }

    /// Drops side-vector sketch `i`, moving the last one into its place.
    fn free_big(&mut self, i: usize) {
        self.big.swap_remove(i);
        self.owner.swap_remove(i);
        if let Some(&moved) = self.owner.get(i) {
            self.words[moved as usize] = S::BIG | i as u64;
        }
    }

    /// Adds the value of a value word into `row`.
    fn merge_word(&mut self, row: usize, w: u64) {
        match self.slot(row) {
            Slot::Empty => self.words[row] = w,
            Slot::One(v) => {
                let mut s = S::of_word(v);
                s.absorb_word(w);
                self.set(row, s);
            }
            Slot::Big(i) => self.big[i].absorb_word(w),
        }
    }

    fn merge_big(&mut self, row: usize, other: &S) {
        match self.slot(row) {
            Slot::Empty => self.set(row, other.clone()),
            Slot::One(v) => {
                let mut s = S::of_word(v);
                s.merge_sketch(other);
                self.set(row, s);
            }
            Slot::Big(i) => self.big[i].merge_sketch(other),
        }
    }

    /// Merges `cell` (of another column) into `row`.
    pub fn merge_cell(&mut self, row: usize, cell: Cell<'_, S>) {
        match cell {
            Cell::Empty => {}
            Cell::One(w) => self.merge_word(row, w),
            Cell::Sketch(s) => self.merge_big(row, s),
        }
    }

    /// Merges row `src` into row `dst` (`dst != src`) of this column.
    pub fn merge_within(&mut self, dst: usize, src: usize) {
        debug_assert_ne!(dst, src);
        match (self.slot(dst), self.slot(src)) {
            (_, Slot::Empty) => {}
            (_, Slot::One(w)) => self.merge_word(dst, w),
            (Slot::Big(i), Slot::Big(j)) => {
                let (d, s) = if i < j {
                    let (a, b) = self.big.split_at_mut(j);
                    (&mut a[i], &b[0])
                } else {
                    let (a, b) = self.big.split_at_mut(i);
                    (&mut b[0], &a[j])
                };
                d.merge_sketch(s);
            }
            (_, Slot::Big(j)) => {
                let s = self.big[j].clone();
                self.merge_big(dst, &s);
            }
        }
    }

    /// Removes row `r` by moving the last row into its place (as `Vec::swap_remove`).
    pub fn swap_remove(&mut self, r: usize) {
        if let Slot::Big(i) = self.slot(r) {
            self.free_big(i);
        }
        self.words.swap_remove(r);
        if let Some(Slot::Big(i)) = (r < self.words.len()).then(|| self.slot(r)) {
            self.owner[i] = r as u32;
        }
    }

    /// Keeps only the rows whose `keep` flag is set, in order.
    pub fn retain(&mut self, keep: &[bool]) {
        if self.words.is_empty() {
            return;
        }
        let mut new_row = vec![u32::MAX; self.words.len()];
        let mut n = 0u32;
        for (r, &k) in keep.iter().enumerate() {
            if k {
                new_row[r] = n;
                n += 1;
            }
        }
        let mut new_index = vec![u32::MAX; self.big.len()];
        let mut m = 0u32;
        for (i, &o) in self.owner.iter().enumerate() {
            if keep[o as usize] {
                new_index[i] = m;
                m += 1;
            }
        }
        let mut i = 0;
        let owner = &self.owner;
        self.big.retain(|_| {
            i += 1;
            keep[owner[i - 1] as usize]
        });
        self.owner.retain(|&o| keep[o as usize]);
        for o in &mut self.owner {
            *o = new_row[*o as usize];
        }
        let mut r = 0;
        self.words.retain(|_| {
            r += 1;
            keep[r - 1]
        });
        for w in &mut self.words {
            if !S::is_value(*w) && *w != S::EMPTY {
                *w = S::BIG | u64::from(new_index[(*w & 0xFFFF_FFFF) as usize]);
            }
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.words.shrink_to_fit();
        self.big.shrink_to_fit();
        self.owner.shrink_to_fit();
    }

    /// Bytes of the word column (its capacity): part of the fixed columns.
    #[must_use]
    pub fn word_bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    /// Bytes of the side vector: its sketches, their heap memory and their row numbers.
    #[must_use]
    pub fn sketch_bytes(&self) -> usize {
        self.big
            .iter()
            .map(|s| s.heap_bytes() + std::mem::size_of::<S>() + 4)
            .sum()
    }

    /// Row `r`'s part of [`SketchColumn::sketch_bytes`] (zero for an inline cell).
    #[must_use]
    pub fn row_bytes(&self, r: usize) -> usize {
        match self.slot(r) {
            Slot::Big(i) => self.big[i].heap_bytes() + std::mem::size_of::<S>() + 4,
            _ => 0,
        }
    }
}

impl SketchColumn<QuantileSketch> {
    /// Adds one value to `row`; NaN and infinities are ignored (as [`QuantileSketch::add`]).
    #[inline]
    pub fn add(&mut self, row: usize, x: f64) {
        if !x.is_finite() {
            return;
        }
        // As the sketch does: -0.0 is stored as +0.0.
        let x = x + 0.0;
        match self.slot(row) {
            Slot::Empty => self.words[row] = x.to_bits(),
            Slot::Big(i) => self.big[i].add(x),
            Slot::One(_) => self.merge_word(row, x.to_bits()),
        }
    }

    /// Merges `row` into a query-time merger (inlined into the rollup loops: one call per
    /// stored row).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn merge_into(&self, row: usize, merger: &mut QuantileMerger) {
        match self.cell(row) {
            Cell::Empty => {}
            Cell::One(w) => merger.add_value(f64::from_bits(w)),
            Cell::Sketch(s) => merger.add(s),
        }
    }

    /// [`QuantileSketch::quantile`] of `row`.
    #[must_use]
    pub fn quantile(&self, row: usize, p: f64) -> Option<f64> {
        match self.cell(row) {
            Cell::Empty => None,
            Cell::One(w) => QuantileSketch::quantile_of_one(f64::from_bits(w), p),
            Cell::Sketch(s) => s.quantile(p),
        }
    }
}

impl SketchColumn<DistinctSketch> {
    /// Adds one hash to `row` (as [`DistinctSketch::insert_hash`]).
    #[inline]
    pub fn insert_hash(&mut self, row: usize, h: u64) {
        match self.slot(row) {
            Slot::Empty if DistinctSketch::is_value(h) => self.words[row] = h,
            Slot::One(v) if v == h => {}
            Slot::Big(i) => self.big[i].insert_hash(h),
            _ => {
                let mut s = self.sketch(row).into_owned();
                s.insert_hash(h);
                self.set(row, s);
            }
        }
    }

    /// Merges `row` into a query-time merger (inlined into the rollup loops: one call per
    /// stored row).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn merge_into(&self, row: usize, merger: &mut DistinctMerger) {
        match self.cell(row) {
            Cell::Empty => {}
            Cell::One(h) => merger.add_hash(h),
            Cell::Sketch(s) => merger.add(s),
        }
    }

    /// [`DistinctSketch::estimate`] of `row`.
    #[must_use]
    pub fn estimate(&self, row: usize) -> f64 {
        match self.cell(row) {
            Cell::Empty => 0.0,
            Cell::One(_) => 1.0,
            Cell::Sketch(s) => s.estimate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn big_index(slot: Slot) -> Option<usize> {
        match slot {
            Slot::Big(i) => Some(i),
            _ => None,
        }
    }

    fn encoded_q(s: &QuantileSketch) -> Vec<u8> {
        let mut out = Vec::new();
        s.encode(&mut out);
        out
    }

    fn encoded_d(s: &DistinctSketch) -> Vec<u8> {
        let mut out = Vec::new();
        s.encode(&mut out);
        out
    }

    // The row operations both column kinds share, applied to a column and to its reference
    // `Vec` alike, so the two property tests below differ only in what they add to cells.
    fn merge_two_rows<S: CellSketch>(
        col: &mut SketchColumn<S>,
        reference: &mut [S],
        rng: &mut Rng,
    ) {
        let n = reference.len();
        let (d, s) = (rng.below(n), rng.below(n));
        if d != s {
            col.merge_within(d, s);
            let src = reference[s].clone();
            reference[d].merge_sketch(&src);
        }
    }

    fn swap_remove_a_row<S: CellSketch>(
        col: &mut SketchColumn<S>,
        reference: &mut Vec<S>,
        rng: &mut Rng,
    ) {
        let r = rng.below(reference.len());
        col.swap_remove(r);
        reference.swap_remove(r);
    }

    /// Keeps each row with probability `1 - 1/drop_one_in`.
    fn retain_some_rows<S: CellSketch>(
        col: &mut SketchColumn<S>,
        reference: &mut Vec<S>,
        rng: &mut Rng,
        drop_one_in: usize,
    ) {
        let keep: Vec<bool> = (0..reference.len())
            .map(|_| rng.below(drop_one_in) != 0)
            .collect();
        col.retain(&keep);
        let mut i = 0;
        reference.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }

    /// Applies the same random operations to a column and to a `Vec` of sketches and checks
    /// every cell encodes the same after each step.
    #[test]
    fn a_quantile_column_behaves_as_a_vec_of_sketches() {
        let mut rng = Rng(7);
        let mut col = SketchColumn::<QuantileSketch>::default();
        let mut reference: Vec<QuantileSketch> = Vec::new();
        let mut other = SketchColumn::<QuantileSketch>::default();
        let mut other_ref: Vec<QuantileSketch> = Vec::new();
        for _ in 0..40 {
            other.push_empty();
            other_ref.push(QuantileSketch::new());
        }
        for (r, sketch) in other_ref.iter_mut().enumerate() {
            for _ in 0..(rng.below(4) * rng.below(3)) {
                let x = [0.0, -0.0, 1.5, -2.25, 1e300, f64::NAN, 7.0][rng.below(7)];
                other.add(r, x);
                sketch.add(x);
            }
        }
        for step in 0..4000 {
            let op = rng.below(100);
            let n = reference.len();
            if op < 15 || n < 2 {
                col.push_empty();
                reference.push(QuantileSketch::new());
            } else if op < 55 {
                let r = rng.below(n);
                let x = rng.below(50) as f64 - 10.0;
                col.add(r, x);
                reference[r].add(x);
            } else if op < 65 {
                let (r, o) = (rng.below(n), rng.below(40));
                col.merge_cell(r, other.cell(o));
                reference[r].merge(&other_ref[o]);
            } else if op < 80 {
                merge_two_rows(&mut col, &mut reference, &mut rng);
            } else if op < 92 {
                swap_remove_a_row(&mut col, &mut reference, &mut rng);
            } else if op < 95 {
                retain_some_rows(&mut col, &mut reference, &mut rng, 4);
            } else {
                let r = rng.below(n);
                let s = reference[r].clone();
                col.push(s.clone());
                reference.push(s);
            }
            assert_eq!(col.len(), reference.len());
            for (r, s) in reference.iter().enumerate() {
                assert_eq!(
                    encoded_q(&col.sketch(r)),
                    encoded_q(s),
                    "step {step} row {r}"
                );
                for p in [0.5, 0.99] {
                    let got = col.quantile(r, p).map(f64::to_bits);
                    assert_eq!(got, s.quantile(p).map(f64::to_bits), "step {step} row {r}");
                }
            }
            for (i, &o) in col.owner.iter().enumerate() {
                assert_eq!(big_index(col.slot(o as usize)), Some(i), "step {step}");
            }
        }
    }

    #[test]
    fn a_distinct_column_behaves_as_a_vec_of_sketches() {
        let mut rng = Rng(11);
        let mut col = SketchColumn::<DistinctSketch>::default();
        let mut reference: Vec<DistinctSketch> = Vec::new();
        // Hashes include 0 and ones in the reserved range, which must not be stored inline.
        let hashes = [
            0,
            1,
            2,
            3,
            u64::MAX,
            DISTINCT_RESERVED,
            DISTINCT_RESERVED | 5,
            1 << 40,
        ];
        for step in 0..3000 {
            let op = rng.below(100);
            let n = reference.len();
            if op < 15 || n < 2 {
                col.push_empty();
                reference.push(DistinctSketch::new());
            } else if op < 60 {
                let r = rng.below(n);
                let h = hashes[rng.below(hashes.len())];
                col.insert_hash(r, h);
                reference[r].insert_hash(h);
            } else if op < 80 {
                merge_two_rows(&mut col, &mut reference, &mut rng);
            } else if op < 92 {
                swap_remove_a_row(&mut col, &mut reference, &mut rng);
            } else {
                retain_some_rows(&mut col, &mut reference, &mut rng, 3);
            }
            for (r, s) in reference.iter().enumerate() {
                assert_eq!(
                    encoded_d(&col.sketch(r)),
                    encoded_d(s),
                    "step {step} row {r}"
                );
                assert_eq!(col.estimate(r).to_bits(), s.estimate().to_bits());
                let mut a = DistinctMerger::new();
                col.merge_into(r, &mut a);
                let mut b = DistinctMerger::new();
                b.add(s);
                assert_eq!(a.estimate().to_bits(), b.estimate().to_bits());
            }
        }
    }

    #[test]
    fn one_value_cells_are_inline_and_others_are_not() {
        let mut col = SketchColumn::<QuantileSketch>::default();
        col.push_empty();
        col.add(0, -0.0);
        assert!(matches!(col.cell(0), Cell::One(w) if w == 0.0f64.to_bits()));
        col.add(0, 1.0);
        assert!(matches!(col.cell(0), Cell::Sketch(s) if s.count() == 2));
        let mut d = SketchColumn::<DistinctSketch>::default();
        d.push_empty();
        d.insert_hash(0, DISTINCT_RESERVED | 9);
        assert!(
            matches!(d.cell(0), Cell::Sketch(_)),
            "a reserved hash is not a word"
        );
        d.push_empty();
        d.insert_hash(1, 42);
        d.insert_hash(1, 42);
        assert!(matches!(d.cell(1), Cell::One(42)));
    }
}
