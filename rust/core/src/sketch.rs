//! Mergeable sketches behind `APPROX_COUNT_DISTINCT` and PERCENTILES (docs/semantics.md §6).
//!
//! Guarantees:
//!
//! - **Merge == replay.** The state of either sketch is a pure function of the multiset of
//!   inputs it has seen, so `a.merge(&b)` equals (by `PartialEq`, and by `encode` bytes) the
//!   sketch built by feeding all of `a`'s and `b`'s inputs into one sketch, in any order and
//!   under any split (a quantile sketch read from a version-1 snapshot counts as binned).
//!   The single exception is [`QuantileSketch::sum`], a plain `f64` sum whose
//!   last bits depend on addition order because float addition is not associative.
//! - **[`DistinctSketch`]** is exact (a set of 64-bit hashes) up to [`EXACT_LIMIT`] distinct
//!   hashes; the first hash beyond that converts it to a dense `HyperLogLog` with 2^16 registers,
//!   read with Ertl's improved estimator (standard error about 0.41 %, no bias tables, no
//!   small-range switch-over). Hash collisions of the caller's 64-bit hash are not detected.
//! - **[`QuantileSketch`]** answers `PERCENTILE_CONT` (numpy's `linear` method, decision 11 in
//!   docs/decisions.md): the value at the 0-based rank `p * (n - 1)`, interpolated linearly
//!   between the two ranks around it. It keeps the values themselves, and answers exactly (bit
//!   for bit as `numpy.quantile`), while it holds at most [`QUANTILE_EXACT_LIMIT`] = 100
//!   values; the first value beyond (by add or by merge) moves them all into a `DDSketch` with
//!   relative accuracy [`QUANTILE_ALPHA`] = 0.5 %. Binned, each of the two ranks reads as its
//!   bin's value, within 0.5 % (relative) of the true value at that rank unless it lies in a
//!   collapsed bin (see below), and the answer is interpolated between them, so it never
//!   leaves the values of those two ranks widened by 0.5 %. Exact `count`, `min`, `max` are
//!   kept beside it, rank 0 and the last rank read as them, and every answer is clamped to
//!   `[min, max]`. Whether a cell is exact depends only on how many values it holds, so
//!   merging stays equal to replaying.
//! - **Bounded memory.** An empty sketch owns no heap memory. A distinct sketch owns at most
//!   32 KiB (exact table) or 64 KiB (registers); a quantile sketch at most 100 `f64` values
//!   or two stores of [`QUANTILE_MAX_BINS`] `u64` counters. When a store would need more
//!   bins it folds its lowest keys (the magnitudes closest to zero) into the lowest kept bin, the
//!   "collapsing lowest" convention of `DDSketch`, applied to the positive and the negative
//!   store alike since both are keyed by `|x|`. 4096 bins span a magnitude ratio of about
//!   6e17, so only values that many times smaller than the largest value of the same sign lose
//!   accuracy (they read as that bin's value, too large in magnitude).
//! - **Safe codecs.** `encode` is little-endian, compact and versionless (the snapshot file
//!   carries the version). `decode` returns `Err` on truncated, non-canonical or inconsistent
//!   input and never panics; every length field is checked against the bytes remaining
//!   before anything is allocated.

use smallvec::SmallVec;
use std::fmt;

// ---------------------------------------------------------------------------------------
// Distinct count
// ---------------------------------------------------------------------------------------

/// Distinct hashes kept exactly before the sketch turns into a `HyperLogLog`.
pub const EXACT_LIMIT: usize = 2048;
/// `HyperLogLog` precision: 2^16 registers.
pub const HLL_PRECISION: u32 = 16;
const HLL_REGISTERS: usize = 1 << HLL_PRECISION;
/// Hash bits left after the register index; register values range over `0..=HLL_Q + 1`.
const HLL_Q: u32 = 64 - HLL_PRECISION;
const HLL_MAX_RANK: u8 = HLL_Q as u8 + 1;
/// Six bits hold any rank up to 63 (the maximum is 64 - p + 1), so four registers pack into
/// three bytes.
const HLL_PACKED_BYTES: usize = HLL_REGISTERS / 4 * 3;

const TAG_EXACT: u8 = 0;
/// Registers a decoded sparse `HyperLogLog` must have set (see `decode`).
const MIN_SPARSE_REGISTERS: u64 = (EXACT_LIMIT / 2) as u64;
const TAG_HLL_DENSE: u8 = 1;
const TAG_HLL_SPARSE: u8 = 2;

/// Approximate distinct counter over caller-supplied 64-bit hashes (xxh3-64 of the value).
#[derive(Clone)]
pub struct DistinctSketch {
    repr: DistinctRepr,
}

#[derive(Clone)]
enum DistinctRepr {
    Exact(ExactSet),
    // A fixed-size array lets the compiler prove `hash >> 50` in bounds on the hot path.
    Hll(Box<[u8; HLL_REGISTERS]>),
}

/// Open-addressing hash set of non-zero hashes with linear probing.
///
/// The hashes are already uniformly mixed, so the low bits index the table directly and no
/// rehashing is needed. Zero doubles as the empty-slot marker, which is why the zero hash is
/// a separate flag. The table starts with no allocation and grows by doubling at 3/4 load, so
/// it peaks at 4096 slots (32 KiB) just before the switch to the 64 KiB `HyperLogLog`.
/// The slot layout depends on insertion order; equality and encoding therefore go through
/// set membership and a sorted dump, never the raw slots.
#[derive(Clone, Default)]
struct ExactSet {
    /// Four slots inline: a cell with up to three distinct values allocates nothing.
    slots: SmallVec<[u64; 4]>,
    /// Occupied slots; excludes the zero hash.
    stored: u32,
    has_zero: bool,
}

impl ExactSet {
    fn len(&self) -> usize {
        self.stored as usize + usize::from(self.has_zero)
    }

    /// Returns whether `h` was new.
    #[inline]
    fn insert(&mut self, h: u64) -> bool {
        if h == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            return new;
        }
        if !self.slots.is_empty() {
            let mask = self.slots.len() - 1;
            let mut i = h as usize & mask;
            loop {
                let s = self.slots[i];
                if s == h {
                    return false;
                }
                if s == 0 {
                    if (self.stored as usize + 1) * 4 <= self.slots.len() * 3 {
                        self.slots[i] = h;
                        self.stored += 1;
                        return true;
                    }
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        self.grow();
        self.place(h);
        self.stored += 1;
        true
    }

    fn contains(&self, h: u64) -> bool {
        if h == 0 {
            return self.has_zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            match self.slots[i] {
                0 => return false,
                s if s == h => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Puts a non-zero hash known to be absent into a table known to have a free slot.
    fn place(&mut self, h: u64) {
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = h;
    }

    #[cold]
    fn grow(&mut self) {
        let new_len = (self.slots.len() * 2).max(4);
        let old = std::mem::replace(&mut self.slots, smallvec::smallvec![0; new_len]);
        for &h in old.iter().filter(|&&h| h != 0) {
            self.place(h);
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.has_zero
            .then_some(0)
            .into_iter()
            .chain(self.slots.iter().copied().filter(|&h| h != 0))
    }

    fn sorted(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.iter().collect();
        v.sort_unstable();
        v
    }
}

#[inline]
/// A zeroed register array built on the heap (64 KiB would be a large stack temporary).
fn zeroed_registers() -> Box<[u8; HLL_REGISTERS]> {
    vec![0u8; HLL_REGISTERS]
        .into_boxed_slice()
        .try_into()
        .expect("exactly HLL_REGISTERS bytes")
}

fn hll_insert(regs: &mut [u8; HLL_REGISTERS], h: u64) {
    let idx = (h >> HLL_Q) as usize;
    // The sentinel bit just below the 50 remaining bits caps the rank at Q + 1 without a branch.
    let rank = ((h << HLL_PRECISION) | (1 << (HLL_PRECISION - 1))).leading_zeros() as u8 + 1;
    let r = &mut regs[idx];
    if rank > *r {
        *r = rank;
    }
}

/// Ertl (2017), "New cardinality estimation algorithms for `HyperLogLog` sketches", algorithm 6.
fn hll_estimate(regs: &[u8; HLL_REGISTERS]) -> f64 {
    let hist = rank_histogram(regs);
    let m = HLL_REGISTERS as f64;
    let q = HLL_Q as usize;
    let mut z = m * ertl_tau((m - f64::from(hist[q + 1])) / m);
    for &c in hist[1..=q].iter().rev() {
        z = 0.5 * (z + f64::from(c));
    }
    z += m * ertl_sigma(f64::from(hist[0]) / m);
    let alpha_inf = 0.5 / std::f64::consts::LN_2;
    alpha_inf * m * m / z
}

/// How many registers hold each rank. Sketches of a few thousand values leave most registers
/// zero, so eight zero registers (one word) count at once; the others go to four interleaved
/// histograms, so runs of equal ranks do not wait on one counter.
fn rank_histogram(regs: &[u8; HLL_REGISTERS]) -> [u32; HLL_MAX_RANK as usize + 1] {
    let mut parts = [[0u32; HLL_MAX_RANK as usize + 1]; 4];
    let mut zero_words = 0u32;
    for word in regs.chunks_exact(8) {
        let bytes: [u8; 8] = word.try_into().expect("chunks of 8");
        if u64::from_ne_bytes(bytes) == 0 {
            zero_words += 1;
            continue;
        }
        for (i, &r) in bytes.iter().enumerate() {
            parts[i % 4][usize::from(r)] += 1;
        }
    }
    let mut hist = [0u32; HLL_MAX_RANK as usize + 1];
    for (k, h) in hist.iter_mut().enumerate() {
        *h = parts.iter().map(|p| p[k]).sum();
    }
    hist[0] += 8 * zero_words;
    hist
}

// Both series are iterated until the partial sum stops changing in floating point, which is
// exact convergence, so bit-equality is the intended test.
#[allow(clippy::float_cmp)]
fn ertl_sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if prev == z {
            return z;
        }
    }
}

#[allow(clippy::float_cmp)]
fn ertl_tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if prev == z {
            return z / 3.0;
        }
    }
}

impl DistinctSketch {
    /// An empty exact sketch; allocates nothing.
    #[must_use]
    pub fn new() -> Self {
        Self {
            repr: DistinctRepr::Exact(ExactSet::default()),
        }
    }

    /// Adds one value, given as its well-mixed 64-bit hash.
    #[inline]
    pub fn insert_hash(&mut self, h: u64) {
        match &mut self.repr {
            DistinctRepr::Exact(set) => {
                if set.insert(h) && set.len() > EXACT_LIMIT {
                    self.convert_to_hll();
                }
            }
            DistinctRepr::Hll(regs) => hll_insert(regs, h),
        }
    }

    #[cold]
    fn convert_to_hll(&mut self) {
        if let DistinctRepr::Exact(set) = &self.repr {
            let mut regs = zeroed_registers();
            for h in set.iter() {
                hll_insert(&mut regs, h);
            }
            self.repr = DistinctRepr::Hll(regs);
        }
    }

    /// Whether the sketch still holds its hashes exactly (estimate is then the exact count).
    #[must_use]
    pub fn is_exact(&self) -> bool {
        matches!(self.repr, DistinctRepr::Exact(_))
    }

    /// The one hash of a sketch that holds exactly one (`None` otherwise).
    #[must_use]
    pub fn single_hash(&self) -> Option<u64> {
        match &self.repr {
            DistinctRepr::Exact(set) if set.len() == 1 => set.iter().next(),
            _ => None,
        }
    }

    /// Folds `other` in; the result equals the sketch of the union of both inputs.
    pub fn merge(&mut self, other: &Self) {
        match (&mut self.repr, &other.repr) {
            (_, DistinctRepr::Exact(theirs)) => {
                for h in theirs.iter() {
                    self.insert_hash(h);
                }
            }
            (DistinctRepr::Exact(mine), DistinctRepr::Hll(theirs)) => {
                let mut regs = theirs.clone();
                for h in mine.iter() {
                    hll_insert(&mut regs, h);
                }
                self.repr = DistinctRepr::Hll(regs);
            }
            (DistinctRepr::Hll(mine), DistinctRepr::Hll(theirs)) => {
                for (a, &b) in mine.iter_mut().zip(theirs.iter()) {
                    *a = (*a).max(b);
                }
            }
        }
    }

    /// Number of distinct hashes: exact in exact mode, Ertl's estimate afterwards.
    #[must_use]
    pub fn estimate(&self) -> f64 {
        match &self.repr {
            DistinctRepr::Exact(set) => set.len() as f64,
            DistinctRepr::Hll(regs) => hll_estimate(regs),
        }
    }

    /// Approximate heap memory owned by the sketch, in bytes.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            DistinctRepr::Exact(set) if set.slots.spilled() => {
                set.slots.len() * std::mem::size_of::<u64>()
            }
            DistinctRepr::Exact(_) => 0,
            DistinctRepr::Hll(_) => HLL_REGISTERS,
        }
    }

    /// Appends the binary form described at [`DistinctSketch::decode`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        match &self.repr {
            DistinctRepr::Exact(set) => {
                out.push(TAG_EXACT);
                put_varint(out, set.len() as u64);
                for h in set.sorted() {
                    out.extend_from_slice(&h.to_le_bytes());
                }
            }
            DistinctRepr::Hll(regs) => {
                // Right after conversion most registers are still zero; a sparse list is then
                // several times smaller than the packed array.
                let mut nonzero = 0u64;
                let mut sparse_len = 0usize;
                let mut prev: Option<usize> = None;
                for (i, &r) in regs.iter().enumerate() {
                    if r != 0 {
                        nonzero += 1;
                        sparse_len += varint_len(sparse_gap(prev, i)) + 1;
                        prev = Some(i);
                    }
                }
                sparse_len += varint_len(nonzero);
                if sparse_len < HLL_PACKED_BYTES {
                    out.reserve(1 + sparse_len);
                    out.push(TAG_HLL_SPARSE);
                    put_varint(out, nonzero);
                    let mut prev: Option<usize> = None;
                    for (i, &r) in regs.iter().enumerate() {
                        if r != 0 {
                            put_varint(out, sparse_gap(prev, i));
                            out.push(r);
                            prev = Some(i);
                        }
                    }
                } else {
                    out.reserve(1 + HLL_PACKED_BYTES);
                    out.push(TAG_HLL_DENSE);
                    for quad in regs.chunks_exact(4) {
                        let w = u32::from(quad[0])
                            | u32::from(quad[1]) << 6
                            | u32::from(quad[2]) << 12
                            | u32::from(quad[3]) << 18;
                        out.extend_from_slice(&w.to_le_bytes()[..3]);
                    }
                }
            }
        }
    }

    /// Reads one sketch from the front of `input`; returns it and the bytes consumed.
    ///
    /// Format: one tag byte, then
    /// - `0` exact: varint `n` (≤ 2048), then `n` hashes as `u64` LE, strictly ascending;
    /// - `1` dense HLL: 65536 registers packed 6 bits each, four per 3 bytes (49152 bytes),
    ///   register `4i + j` in bits `6j..6j+6` of the 24-bit LE word at byte `3i`;
    /// - `2` sparse HLL: varint `n`, then `n` pairs (varint gap, `u8` value 1..=49) in
    ///   ascending register order, gap = registers skipped since the previous non-zero one.
    pub fn decode(input: &[u8]) -> Result<(Self, usize), String> {
        let mut r = Reader::new(input);
        let sketch = match r.u8()? {
            TAG_EXACT => {
                let n = r.varint()?;
                if n > EXACT_LIMIT as u64 {
                    return Err(format!(
                        "distinct sketch: {n} exact hashes exceed the limit"
                    ));
                }
                r.need(n as usize * 8)?;
                let mut set = ExactSet::default();
                let mut prev: Option<u64> = None;
                for _ in 0..n {
                    let h = r.u64()?;
                    if prev.is_some_and(|p| p >= h) {
                        return Err("distinct sketch: exact hashes not strictly ascending".into());
                    }
                    prev = Some(h);
                    set.insert(h);
                }
                DistinctRepr::Exact(set)
            }
            TAG_HLL_DENSE => {
                let bytes = r.bytes(HLL_PACKED_BYTES)?;
                let mut regs = zeroed_registers();
                for (quad, b) in regs.chunks_exact_mut(4).zip(bytes.chunks_exact(3)) {
                    let w = u32::from_le_bytes([b[0], b[1], b[2], 0]);
                    for (j, reg) in quad.iter_mut().enumerate() {
                        *reg = ((w >> (6 * j)) & 0x3f) as u8;
                        if *reg > HLL_MAX_RANK {
                            return Err("distinct sketch: register out of range".into());
                        }
                    }
                }
                DistinctRepr::Hll(regs)
            }
            TAG_HLL_SPARSE => {
                let n = r.varint()?;
                if n > HLL_REGISTERS as u64 {
                    return Err("distinct sketch: too many sparse registers".into());
                }
                // A real sketch switched to HyperLogLog after more than EXACT_LIMIT distinct
                // hashes, which leaves far more than MIN_SPARSE_REGISTERS registers set; fewer
                // means a forged record (and would let a few bytes claim 64 KiB of memory).
                if n < MIN_SPARSE_REGISTERS {
                    return Err("distinct sketch: too few registers for a HyperLogLog".into());
                }
                r.need(n as usize * 2)?;
                let mut regs = zeroed_registers();
                let mut next = 0u64;
                for _ in 0..n {
                    let idx = next
                        .checked_add(r.varint()?)
                        .filter(|&i| i < HLL_REGISTERS as u64)
                        .ok_or("distinct sketch: sparse register index out of range")?;
                    let v = r.u8()?;
                    if v == 0 || v > HLL_MAX_RANK {
                        return Err("distinct sketch: sparse register value out of range".into());
                    }
                    regs[idx as usize] = v;
                    next = idx + 1;
                }
                DistinctRepr::Hll(regs)
            }
            t => return Err(format!("distinct sketch: unknown tag {t}")),
        };
        Ok((Self { repr: sketch }, r.pos))
    }
}

fn sparse_gap(prev: Option<usize>, i: usize) -> u64 {
    (i - prev.map_or(0, |p| p + 1)) as u64
}

impl Default for DistinctSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for DistinctSketch {
    fn eq(&self, other: &Self) -> bool {
        match (&self.repr, &other.repr) {
            (DistinctRepr::Exact(a), DistinctRepr::Exact(b)) => {
                a.len() == b.len() && a.iter().all(|h| b.contains(h))
            }
            (DistinctRepr::Hll(a), DistinctRepr::Hll(b)) => a[..] == b[..],
            _ => false,
        }
    }
}

impl fmt::Debug for DistinctSketch {
    // 65536 raw registers would drown any assertion message; a summary identifies the state.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            DistinctRepr::Exact(set) => f
                .debug_struct("DistinctSketch::Exact")
                .field("len", &set.len())
                .field("hashes", &set.sorted())
                .finish(),
            DistinctRepr::Hll(regs) => f
                .debug_struct("DistinctSketch::Hll")
                .field(
                    "nonzero_registers",
                    &regs.iter().filter(|&&r| r != 0).count(),
                )
                .field(
                    "register_sum",
                    &regs.iter().map(|&r| u64::from(r)).sum::<u64>(),
                )
                .field("estimate", &hll_estimate(regs))
                .finish(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Quantiles
// ---------------------------------------------------------------------------------------

/// Relative accuracy of binned [`QuantileSketch`] answers.
pub const QUANTILE_ALPHA: f64 = 0.005;
/// Values a [`QuantileSketch`] keeps (and answers exactly from) before it bins them: 800
/// bytes of values per cell at most, against up to 64 KiB for the bins it replaces.
pub const QUANTILE_EXACT_LIMIT: usize = 100;
/// Most bins a [`QuantileSketch`] store keeps before collapsing its lowest keys.
pub const QUANTILE_MAX_BINS: usize = 4096;
// `ln` is not const, so the constants derived from gamma = (1 + alpha) / (1 - alpha) are
// literals; the unit test `constants_match_alpha` pins them to alpha.
const LN_GAMMA: f64 = 0.010_000_083_334_583_356;
const INV_LN_GAMMA: f64 = 99.999_166_661_111_03;
/// Bin `k` covers `(γ^(k-1), γ^k]`; `2γ^k/(γ+1) = γ^k (1-α)` is within α of all of it.
const REPRESENTATIVE_FACTOR: f64 = 1.0 - QUANTILE_ALPHA;
/// Magnitudes below this count as zero; keeps keys well inside `i32` and `exp` finite.
const MIN_INDEXABLE: f64 = 1e-300;
/// Every valid key lies strictly inside `±KEY_LIMIT` (`f64::MAX` maps to 70978, 1e-300 to
/// -69076); decode uses it to reject corrupt offsets before doing key arithmetic.
const KEY_LIMIT: i32 = 80_000;

/// The bin key of a magnitude (`>= MIN_INDEXABLE`, finite): `ceil(ln(m) / ln(gamma))`.
#[inline]
fn key_of(magnitude: f64) -> i32 {
    ceil_i32(magnitude.ln() * INV_LN_GAMMA)
}

/// `ceil(y) as i32` for `|y| < 2^31` (keys are within ±71,000), inline: for the baseline
/// x86-64 target (no SSE 4.1) `f64::ceil` is a call into libm, which took as long as the `ln`.
#[inline]
fn ceil_i32(y: f64) -> i32 {
    let t = y as i32; // toward zero
    t + i32::from(f64::from(t) < y)
}

/// The definition of a bin key, as [`key_of`] computed it before [`ceil_i32`] (for tests).
#[cfg(test)]
fn key_of_exact(magnitude: f64) -> i32 {
    (magnitude.ln() * INV_LN_GAMMA).ceil() as i32
}

fn representative(key: i32) -> f64 {
    (f64::from(key) * LN_GAMMA).exp() * REPRESENTATIVE_FACTOR
}

/// Merges many [`DistinctSketch`]es for one answer (query-time rollups): exact inputs only
/// append their hashes, which are sorted and deduplicated once, so small cells merge without
/// rehashing; `estimate` equals that of the fully merged sketch (whose state depends only on
/// the set of hashes).
#[derive(Clone, Debug, Default)]
pub struct DistinctMerger {
    hashes: Vec<u64>,
    sketch: Option<DistinctSketch>,
}

impl DistinctMerger {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the merger, keeping its buffer.
    pub fn clear(&mut self) {
        self.hashes.clear();
        self.sketch = None;
    }

    #[inline]
    pub fn add(&mut self, other: &DistinctSketch) {
        match &other.repr {
            DistinctRepr::Exact(set) => {
                // A cell of one value in its four inline slots: the other three slots are
                // empty (zero), so OR-ing the four is that value, with one push.
                if let (1, false, [a, b, c, d]) = (set.stored, set.has_zero, set.slots.as_slice()) {
                    self.hashes.push(a | b | c | d);
                    if self.hashes.len() > 8 * EXACT_LIMIT {
                        self.compact();
                    }
                    return;
                }
                // Other cells' slots are copied without a branch per slot: every slot is
                // written and the write position moves on only past a hash (empty slots are
                // zero), so a table of scattered hashes costs no mispredicted branches.
                let slots = set.slots.as_slice();
                let start = self.hashes.len();
                // One place more for the zero hash, which is kept by a flag, not a slot.
                self.hashes.resize(start + slots.len() + 1, 0);
                let out = &mut self.hashes[start..];
                let mut n = usize::from(set.has_zero);
                for &h in slots {
                    out[n] = h;
                    n += usize::from(h != 0);
                }
                self.hashes.truncate(start + n);
                if self.hashes.len() > 8 * EXACT_LIMIT {
                    self.compact();
                }
            }
            DistinctRepr::Hll(_) => self.add_hll(other),
        }
    }

    /// Adds the cell of one value with hash `h` (as [`DistinctMerger::add`] of its sketch).
    #[inline]
    pub fn add_hash(&mut self, h: u64) {
        self.hashes.push(h);
        if self.hashes.len() > 8 * EXACT_LIMIT {
            self.compact();
        }
    }

    /// [`DistinctMerger::add`] of a `HyperLogLog` (out of line: rare, and large).
    #[inline(never)]
    fn add_hll(&mut self, other: &DistinctSketch) {
        match &mut self.sketch {
            Some(s) => s.merge(other),
            None => self.sketch = Some(other.clone()),
        }
    }

    /// Deduplicates the pending hashes and moves them into the sketch once they no longer fit
    /// the exact limit (or a sketch already exists).
    fn compact(&mut self) {
        dedup_hashes(&mut self.hashes);
        if self.sketch.is_none() && self.hashes.len() > EXACT_LIMIT {
            // Past the exact limit a sketch of these hashes is a HyperLogLog of them (its
            // state depends only on the set): build that directly, without an exact table
            // growing and converting on the way.
            let mut regs = zeroed_registers();
            for &h in &self.hashes {
                hll_insert(&mut regs, h);
            }
            self.sketch = Some(DistinctSketch {
                repr: DistinctRepr::Hll(regs),
            });
            self.hashes.clear();
        } else if self.sketch.is_some() || self.hashes.len() > EXACT_LIMIT {
            let sketch = self.sketch.get_or_insert_with(DistinctSketch::new);
            for &h in &self.hashes {
                sketch.insert_hash(h);
            }
            self.hashes.clear();
        }
    }

    /// Same contract as [`DistinctSketch::estimate`].
    pub fn estimate(&mut self) -> f64 {
        self.compact();
        match &self.sketch {
            Some(s) => s.estimate(),
            None => self.hashes.len() as f64,
        }
    }
}

/// Pending hashes up to this many are deduplicated by sorting; more, through a hash table.
const DEDUP_SORT_MAX: usize = 32;

/// Removes repeated hashes from `hashes` (the order of the survivors is unspecified: every
/// reader treats them as a set). Many hashes go through one open-addressing table per thread,
/// reused across cells, so a merger holds no table of its own and a rollup of many cells
/// allocates none; the hashes are well mixed, so their low bits index it directly.
fn dedup_hashes(hashes: &mut Vec<u64>) {
    if hashes.len() <= 2 {
        // The common rollup of one-value cells, without a sort.
        if hashes.len() == 2 && hashes[0] == hashes[1] {
            hashes.pop();
        }
        return;
    }
    if hashes.len() <= DEDUP_SORT_MAX {
        hashes.sort_unstable();
        hashes.dedup();
        return;
    }
    thread_local! {
        static TABLE: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        let slots = (hashes.len() * 2).next_power_of_two();
        table.clear();
        table.resize(slots, 0);
        let mask = slots - 1;
        // Zero marks an empty slot, so the zero hash is kept by a flag.
        let mut zero_seen = false;
        let mut kept = 0;
        for read in 0..hashes.len() {
            let h = hashes[read];
            let new = if h == 0 {
                !std::mem::replace(&mut zero_seen, true)
            } else {
                let mut i = h as usize & mask;
                loop {
                    let s = table[i];
                    if s == 0 {
                        table[i] = h;
                        break true;
                    }
                    if s == h {
                        break false;
                    }
                    i = (i + 1) & mask;
                }
            };
            if new {
                hashes[kept] = h;
                kept += 1;
            }
        }
        hashes.truncate(kept);
        // A table grown by one huge cell is not kept for the small ones that follow.
        if slots > 4 * 8 * EXACT_LIMIT {
            *table = Vec::new();
        }
    });
}

/// The bins of many stores, appended as (key, count) pairs: the query-time accumulator behind
/// [`QuantileMerger`]. Rollups mostly merge small cells, so appending and sorting once beats
/// re-laying out a dense store on every merge. It is never compared or encoded.
#[derive(Clone, Debug, Default)]
struct PairBins {
    pairs: Vec<(i32, u64)>,
    sorted: bool,
    /// Counting buffer of `finish` (reused across cells).
    dense: Vec<u64>,
}

impl PairBins {
    fn add_bins(&mut self, other: &DenseBins) {
        self.sorted = false;
        self.pairs.extend(
            other
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (other.offset + i as i32, c)),
        );
    }

    /// Sorts and coalesces the pairs, then folds keys below `max - MAX_BINS + 1` into that bin
    /// exactly as [`DenseBins`] collapses them, so answers equal the merged sketch's.
    fn finish(&mut self) {
        if self.sorted {
            return;
        }
        let (lo, hi) = self.pairs.iter().fold((i32::MAX, i32::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let span = i64::from(hi) - i64::from(lo) + 1;
        if self.pairs.len() > 32 && span <= 2 * self.pairs.len() as i64 + 64 {
            // Keys of many small cells crowd a narrow range (a collapse of every tuple): count
            // them in place of sorting; the (key, total) runs come out the same.
            self.dense.clear();
            self.dense.resize(span as usize, 0);
            for &(k, c) in &self.pairs {
                self.dense[(k - lo) as usize] += c;
            }
            self.pairs.clear();
            self.pairs.extend(
                self.dense
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c > 0)
                    .map(|(i, &c)| (lo + i as i32, c)),
            );
        } else {
            self.pairs.sort_unstable_by_key(|p| p.0);
        }
        let floor = self.pairs.last().map_or(0, |p| p.0) - (QUANTILE_MAX_BINS as i32 - 1);
        // Coalesce equal keys in place (the buffer is reused across cells).
        let mut len = 0usize;
        for i in 0..self.pairs.len() {
            let (k, c) = self.pairs[i];
            let k = k.max(floor);
            if len > 0 && self.pairs[len - 1].0 == k {
                self.pairs[len - 1].1 += c;
            } else {
                self.pairs[len] = (k, c);
                len += 1;
            }
        }
        self.pairs.truncate(len);
        self.sorted = true;
    }
}

/// Counts and exact extremes of a binned quantile sketch (or of a merge of several).
#[derive(Clone, Copy)]
struct QuantileTotals {
    count: u64,
    zero_count: u64,
    min: f64,
    max: f64,
}

/// `a + (b - a) * t`, rounded the way numpy's `_lerp` rounds it (from `b` when `t >= 0.5`), so
/// an exact cell answers bit for bit like `numpy.quantile(values, p)` (method `linear`).
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// `h.floor()` for `h >= 0` (a rank), inline: for the baseline x86-64 target (no SSE 4.1)
/// `f64::floor` is a call into libm. Below `2^52` truncation toward zero is the floor of a
/// non-negative number and converts back exactly; from `2^52` on every `f64` is an integer.
#[inline]
fn floor_non_negative(h: f64) -> f64 {
    debug_assert!(h >= 0.0);
    if h < 4_503_599_627_370_496.0 {
        (h as i64) as f64
    } else {
        h
    }
}

/// `PERCENTILE_CONT` of ascending `sorted` values: the value at the 0-based rank
/// `h = p * (n - 1)`, interpolated linearly between ranks `floor(h)` and `floor(h) + 1`.
fn exact_quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 || !(p > 0.0 && p <= 1.0) {
        return None;
    }
    let h = p * (n - 1) as f64;
    let lo = floor_non_negative(h);
    if lo >= (n - 1) as f64 {
        return Some(sorted[n - 1]);
    }
    let i = lo as usize;
    Some(lerp(sorted[i], sorted[i + 1], h - lo))
}

/// The values at positions `t` and `t + 1` of a run of `(value, count)` bins. Counts are
/// checked to add up (decode, merge), so the fallback `last` is never reached in practice.
fn two_at(bins: impl Iterator<Item = (f64, u64)>, t: u64, last: f64) -> (f64, f64) {
    let mut seen = 0u64;
    let mut first = None;
    for (v, c) in bins {
        if c == 0 {
            continue;
        }
        seen += c;
        match first {
            Some(a) => return (a, v),
            None if seen > t + 1 => return (v, v),
            None if seen > t => first = Some(v),
            None => {}
        }
    }
    (first.unwrap_or(last), last)
}

/// `PERCENTILE_CONT` over a binned sketch given as (key, count) bins in ascending key order for
/// each sign (negative keys are magnitudes): the two ranks around `p * (count - 1)` read as
/// their bins' representatives (rank 0 as the exact min, the last rank as the exact max),
/// then interpolated as [`exact_quantile`] does. Each of the two values is within
/// [`QUANTILE_ALPHA`] of the true value at its rank, so the answer is too (for same-sign
/// neighbours) and never leaves the interval between them. High quantiles (the common p99)
/// walk down from the top: far fewer bins to visit, and the same bins either way.
fn quantile_of_bins(
    totals: QuantileTotals,
    p: f64,
    negative: impl DoubleEndedIterator<Item = (i32, u64)>,
    positive: impl DoubleEndedIterator<Item = (i32, u64)>,
) -> Option<f64> {
    let QuantileTotals {
        count,
        zero_count,
        min,
        max,
    } = totals;
    if count == 0 || !(p > 0.0 && p <= 1.0) {
        return None;
    }
    let h = p * (count - 1) as f64;
    let lo = floor_non_negative(h);
    if lo >= (count - 1) as f64 {
        return Some(max);
    }
    let rank = lo as u64;
    let zero = std::iter::once((0.0, zero_count));
    let (a, b) = if rank >= count / 2 {
        let descending = positive
            .rev()
            .map(|(k, c)| (representative(k), c))
            .chain(zero)
            .chain(negative.map(|(k, c)| (-representative(k), c)));
        let (upper, lower) = two_at(descending, count - 2 - rank, min);
        (lower, upper)
    } else {
        let ascending = negative
            .rev()
            .map(|(k, c)| (-representative(k), c))
            .chain(zero)
            .chain(positive.map(|(k, c)| (representative(k), c)));
        two_at(ascending, rank, max)
    };
    let a = if rank == 0 { min } else { a.clamp(min, max) };
    let b = if rank + 2 == count {
        max
    } else {
        b.clamp(min, max)
    };
    Some(lerp(a, b, h - lo).clamp(min, max))
}

/// Merges many [`QuantileSketch`]es for one answer (query-time rollups) without rebuilding a
/// canonical sketch after every merge; `quantile` equals that of the fully merged sketch: exact
/// while every input is exact and they hold at most [`QUANTILE_EXACT_LIMIT`] values together,
/// otherwise the exact inputs' values are binned exactly as [`QuantileSketch::merge`] bins them.
#[derive(Clone, Debug, Default)]
pub struct QuantileMerger {
    exact: Vec<f64>,
    binned: bool,
    positive: PairBins,
    negative: PairBins,
    zero_count: u64,
    count: u64,
    min: f64,
    max: f64,
}

impl QuantileMerger {
    #[must_use]
    pub fn new() -> Self {
        Self {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Self::default()
        }
    }

    /// Empties the merger, keeping its buffers.
    pub fn clear(&mut self) {
        self.exact.clear();
        self.binned = false;
        self.positive.pairs.clear();
        self.positive.sorted = false;
        self.negative.pairs.clear();
        self.negative.sorted = false;
        self.zero_count = 0;
        self.count = 0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }

    #[inline]
    pub fn add(&mut self, sketch: &QuantileSketch) {
        // The common cell of fine buckets, one exact value into a merge that stays exact, is
        // kept small enough to inline into the caller's loop; the rest is out of line.
        if let ([x], None) = (sketch.exact.as_slice(), &sketch.bins) {
            if sketch.count == 1 && !self.binned && self.count < QUANTILE_EXACT_LIMIT as u64 {
                self.exact.push(*x);
                self.count += 1;
                self.min = self.min.min(sketch.min);
                self.max = self.max.max(sketch.max);
                return;
            }
        }
        self.add_any(sketch);
    }

    /// Adds the cell of the one finite value `x` (never -0.0), as [`QuantileMerger::add`] of
    /// its sketch.
    #[inline]
    pub fn add_value(&mut self, x: f64) {
        if !self.binned && self.count < QUANTILE_EXACT_LIMIT as u64 {
            self.exact.push(x);
            self.count += 1;
            // `x` is finite, so plain compares give what `f64::min`/`max` give, without their
            // NaN handling (and equal values have equal bits: no -0.0 is stored).
            self.min = if x < self.min { x } else { self.min };
            self.max = if x > self.max { x } else { self.max };
            return;
        }
        self.add_value_binned(x);
    }

    /// [`QuantileMerger::add_value`] past the exact limit (out of line).
    #[inline(never)]
    fn add_value_binned(&mut self, x: f64) {
        self.bin_exact();
        self.bin_value(x);
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// [`QuantileMerger::add`] for every sketch.
    #[inline(never)]
    fn add_any(&mut self, sketch: &QuantileSketch) {
        if sketch.count == 0 {
            return;
        }
        if let Some(bins) = &sketch.bins {
            self.binned = true;
            self.positive.add_bins(&bins.positive);
            self.negative.add_bins(&bins.negative);
            self.zero_count += bins.zero_count;
        } else if self.binned || self.count + sketch.count > QUANTILE_EXACT_LIMIT as u64 {
            // The merge is past the exact limit: its values go straight to their bins, never
            // copied into `exact` first (the keys are the same either way).
            self.bin_exact();
            for &x in &sketch.exact {
                self.bin_value(x);
            }
        } else {
            self.exact.extend_from_slice(&sketch.exact);
        }
        self.count += sketch.count;
        self.min = self.min.min(sketch.min);
        self.max = self.max.max(sketch.max);
    }

    /// Moves the exact values gathered so far into the pair stores; from now on the merge is
    /// binned (as [`QuantileSketch::merge`] bins a merge past the exact limit).
    fn bin_exact(&mut self) {
        let exact = std::mem::take(&mut self.exact);
        for &x in &exact {
            self.bin_value(x);
        }
        // The buffer is kept for the next cell.
        self.exact = exact;
        self.exact.clear();
        self.binned = true;
    }

    #[inline]
    fn bin_value(&mut self, x: f64) {
        let magnitude = x.abs();
        if magnitude < MIN_INDEXABLE {
            self.zero_count += 1;
        } else if x > 0.0 {
            self.positive.sorted = false;
            self.positive.pairs.push((key_of(magnitude), 1));
        } else {
            self.negative.sorted = false;
            self.negative.pairs.push((key_of(magnitude), 1));
        }
    }

    /// Same contract as [`QuantileSketch::quantile`].
    pub fn quantile(&mut self, p: f64) -> Option<f64> {
        if !self.binned && self.count <= QUANTILE_EXACT_LIMIT as u64 {
            match self.exact.as_mut_slice() {
                [] | [_] => {}
                // Two one-value cells (a rollup by two): one compare, not a sort call.
                [a, b] => {
                    if b.total_cmp(a).is_lt() {
                        std::mem::swap(a, b);
                    }
                }
                values => values.sort_unstable_by(f64::total_cmp),
            }
            return exact_quantile(&self.exact, p);
        }
        self.bin_exact();
        self.positive.finish();
        self.negative.finish();
        quantile_of_bins(
            QuantileTotals {
                count: self.count,
                zero_count: self.zero_count,
                min: self.min,
                max: self.max,
            },
            p,
            self.negative.pairs.iter().copied(),
            self.positive.pairs.iter().copied(),
        )
    }
}

/// Contiguous counters for keys `offset .. offset + counts.len()`.
///
/// Invariant (relied on by equality and checked by decode): when non-empty, the first and last
/// counters are non-zero, so the representation is canonical; an empty store has offset 0.
#[derive(Clone, Debug, PartialEq, Default)]
struct DenseBins {
    offset: i32,
    /// Most cells see one or two distinct values: two bins live inline, without an allocation.
    counts: SmallVec<[u64; 2]>,
}

impl DenseBins {
    /// (key, count) for every bin, in ascending key order.
    fn bins(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        let offset = self.offset;
        self.counts
            .iter()
            .enumerate()
            .map(move |(i, &c)| (offset + i as i32, c))
    }

    fn max_key(&self) -> i32 {
        self.offset + self.counts.len() as i32 - 1
    }

    #[inline]
    fn add(&mut self, key: i32) {
        if let Ok(i) = usize::try_from(key.wrapping_sub(self.offset)) {
            if let Some(c) = self.counts.get_mut(i) {
                *c += 1;
                return;
            }
        }
        self.add_outside(key);
    }

    #[cold]
    fn add_outside(&mut self, key: i32) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(1);
            return;
        }
        self.reshape(self.offset.min(key), self.max_key().max(key));
        let k = key.max(self.offset);
        self.counts[(k - self.offset) as usize] += 1;
    }

    /// Re-lays the store out over `[lo, hi]` (a superset of the current range), folding keys
    /// below `hi - MAX_BINS + 1` into that bin. Every key ends up at `max(key, global_max -
    /// MAX_BINS + 1)` no matter when it arrived, which is what makes collapsing
    /// order-independent.
    fn reshape(&mut self, lo: i32, hi: i32) {
        let lo = lo.max(hi - (QUANTILE_MAX_BINS as i32 - 1));
        // Reshaping happens only when a new extreme key arrives, but a store fed a slowly
        // growing series collapses on almost every new key, so this works in place rather
        // than reallocating.
        if lo < self.offset {
            let grow = (self.offset - lo) as usize;
            self.counts.insert_many(0, std::iter::repeat_n(0, grow));
        } else if lo > self.offset {
            let fold = ((lo - self.offset) as usize).min(self.counts.len());
            let folded: u64 = self.counts.drain(..fold).sum();
            if self.counts.is_empty() {
                self.counts.push(0);
            }
            self.counts[0] += folded;
        }
        self.offset = lo;
        self.counts.resize((hi - lo + 1) as usize, 0);
    }

    fn merge(&mut self, other: &Self) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.clone_from(other);
            return;
        }
        self.reshape(
            self.offset.min(other.offset),
            self.max_key().max(other.max_key()),
        );
        for (i, &c) in other.counts.iter().enumerate() {
            let k = (other.offset + i as i32).max(self.offset);
            self.counts[(k - self.offset) as usize] += c;
        }
    }

    fn total(&self) -> Option<u64> {
        self.counts.iter().try_fold(0u64, |a, &c| a.checked_add(c))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.counts.len() as u64);
        if self.counts.is_empty() {
            return;
        }
        put_varint(out, u64::from(zigzag(self.offset)));
        for &c in &self.counts {
            put_varint(out, c);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, String> {
        let n = r.varint()?;
        if n == 0 {
            return Ok(Self::default());
        }
        if n > QUANTILE_MAX_BINS as u64 {
            return Err(format!("quantile sketch: {n} bins exceed the limit"));
        }
        // Each counter takes at least one byte, so this bounds the allocation by the input.
        r.need(n as usize)?;
        let offset = i64::from(unzigzag(r.varint()?)?);
        if offset <= -i64::from(KEY_LIMIT) || offset + n as i64 > i64::from(KEY_LIMIT) {
            return Err("quantile sketch: bin keys out of range".into());
        }
        let counts = (0..n)
            .map(|_| r.varint())
            .collect::<Result<SmallVec<_>, _>>()?;
        if counts[0] == 0 || counts[counts.len() - 1] == 0 {
            return Err("quantile sketch: store not trimmed".into());
        }
        Ok(Self {
            offset: offset as i32,
            counts,
        })
    }
}

/// `PERCENTILE_CONT` state with exact count, sum, min and max: the values themselves while there
/// are at most [`QUANTILE_EXACT_LIMIT`] of them, a `DDSketch` beyond.
// 64 bytes, one cache line per stored row: a rollup streams these sketches from memory, one per
// stored row, and is bound by the lines it reads. Most cells stay exact, so the bins live
// behind a pointer, allocated when a sketch is binned.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantileSketch {
    count: u64,
    /// `+inf` / `-inf` while empty, so the first value needs no special case.
    min: f64,
    max: f64,
    sum: f64,
    /// Every value, ascending, while the sketch is exact; empty once it is binned. Values are
    /// finite and never `-0.0`, so equal values have equal bits and the order is canonical.
    exact: SmallVec<[f64; 2]>,
    /// `Some` when the values live in the bins: more than [`QUANTILE_EXACT_LIMIT`] were seen,
    /// or the sketch was read from a version-1 snapshot (which kept bins only).
    bins: Option<Box<Bins>>,
}

/// The `DDSketch` bins of a binned [`QuantileSketch`].
#[derive(Clone, Debug, PartialEq, Default)]
struct Bins {
    zero_count: u64,
    /// Keyed by `x` for `x > 0`.
    positive: DenseBins,
    /// Keyed by `-x` for `x < 0`, so its highest key is the most negative value.
    negative: DenseBins,
}

impl Bins {
    /// Counts `x` in its bin (or as a zero); count, sum and extremes are the sketch's.
    #[inline]
    fn bin(&mut self, x: f64) {
        let magnitude = x.abs();
        if magnitude < MIN_INDEXABLE {
            self.zero_count += 1;
        } else if x > 0.0 {
            self.positive.add(key_of(magnitude));
        } else {
            self.negative.add(key_of(magnitude));
        }
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new()
    }
}

/// Form byte of an encoded non-empty sketch (format version 2).
const QUANTILE_FORM_EXACT: u8 = 0;
const QUANTILE_FORM_BINS: u8 = 1;

impl QuantileSketch {
    /// An empty sketch; allocates nothing.
    #[must_use]
    pub fn new() -> Self {
        Self {
            exact: SmallVec::new(),
            bins: None,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Adds one value; NaN and infinities are ignored.
    #[inline]
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        // Turns -0.0 into +0.0: otherwise min/max of {0.0, -0.0} would depend on arrival
        // order and the encoded bytes of merged and replayed sketches could differ.
        let x = x + 0.0;
        self.count += 1;
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if let Some(bins) = &mut self.bins {
            bins.bin(x);
        } else if self.exact.len() < QUANTILE_EXACT_LIMIT {
            let i = self.exact.partition_point(|&v| v <= x);
            self.exact.insert(i, x);
        } else {
            self.move_into_bins().bin(x);
        }
    }

    /// Moves the exact values into the bins. The bins of a multiset do not depend on the order
    /// the values arrive in (see [`DenseBins::reshape`]), so neither does the result of
    /// converting at whichever add or merge first passes the limit.
    #[cold]
    fn move_into_bins(&mut self) -> &mut Bins {
        let values = std::mem::take(&mut self.exact);
        let mut bins = Box::<Bins>::default();
        for x in values {
            bins.bin(x);
        }
        self.bins.insert(bins)
    }

    /// Folds `other` in; equals replaying both inputs (up to the rounding of `sum`).
    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.bins.is_none()
            && other.bins.is_none()
            && self.exact.len() + other.exact.len() <= QUANTILE_EXACT_LIMIT
        {
            let mut merged = SmallVec::with_capacity(self.exact.len() + other.exact.len());
            let (mut i, mut j) = (0, 0);
            while i < self.exact.len() && j < other.exact.len() {
                if self.exact[i] <= other.exact[j] {
                    merged.push(self.exact[i]);
                    i += 1;
                } else {
                    merged.push(other.exact[j]);
                    j += 1;
                }
            }
            merged.extend_from_slice(&self.exact[i..]);
            merged.extend_from_slice(&other.exact[j..]);
            self.exact = merged;
        } else {
            let mine = match self.bins {
                Some(ref mut bins) => bins,
                None => self.move_into_bins(),
            };
            if let Some(theirs) = &other.bins {
                mine.zero_count += theirs.zero_count;
                mine.positive.merge(&theirs.positive);
                mine.negative.merge(&theirs.negative);
            } else {
                for &x in &other.exact {
                    mine.bin(x);
                }
            }
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// `PERCENTILE_CONT` at `p` in `(0, 1]` (`None` when empty or `p` is outside that range):
    /// the value at the 0-based rank `h = p * (count - 1)`, linearly interpolated between
    /// ranks `floor(h)` and `floor(h) + 1`; `p = 1` is the exact max.
    ///
    /// Exact (bit for bit numpy's `quantile(values, p)`) while the sketch holds at most
    /// [`QUANTILE_EXACT_LIMIT`] values; beyond, both ranks read as their bins' values (within
    /// [`QUANTILE_ALPHA`] relative), see [`quantile_of_bins`].
    #[must_use]
    pub fn quantile(&self, p: f64) -> Option<f64> {
        let Some(bins) = &self.bins else {
            return exact_quantile(&self.exact, p);
        };
        quantile_of_bins(
            QuantileTotals {
                count: self.count,
                zero_count: bins.zero_count,
                min: self.min,
                max: self.max,
            },
            p,
            bins.negative.bins(),
            bins.positive.bins(),
        )
    }

    /// The one value of a sketch that holds exactly one exact value and is the sketch `add`
    /// builds from it (count, sum, min and max all that value); `None` otherwise.
    #[must_use]
    pub fn single_value(&self) -> Option<f64> {
        match (self.count, self.exact.as_slice(), &self.bins) {
            (1, &[x], None)
                if [self.sum, self.min, self.max]
                    .iter()
                    .all(|v| v.to_bits() == x.to_bits()) =>
            {
                Some(x)
            }
            _ => None,
        }
    }

    /// [`QuantileSketch::quantile`] of the sketch holding the one value `x`.
    #[must_use]
    pub fn quantile_of_one(x: f64, p: f64) -> Option<f64> {
        exact_quantile(&[x], p)
    }

    /// Number of finite values added.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether answers are exact (the values are kept, not binned).
    #[must_use]
    pub fn is_exact(&self) -> bool {
        self.bins.is_none()
    }

    /// Plain `f64` sum of the values (may overflow to ±inf for huge inputs).
    #[must_use]
    pub fn sum(&self) -> f64 {
        self.sum
    }

    #[must_use]
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    #[must_use]
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    /// Approximate heap memory owned by the sketch, in bytes.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        let spilled = |c: &SmallVec<[u64; 2]>| if c.spilled() { c.capacity() } else { 0 };
        let exact = if self.exact.spilled() {
            self.exact.capacity()
        } else {
            0
        };
        let bins = self.bins.as_ref().map_or(0, |b| {
            std::mem::size_of::<Bins>()
                + (spilled(&b.positive.counts) + spilled(&b.negative.counts))
                    * std::mem::size_of::<u64>()
        });
        exact * std::mem::size_of::<f64>() + bins
    }

    /// Appends the binary form (format version 2) described at [`QuantileSketch::decode`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_varint(out, self.count);
        if self.count == 0 {
            return;
        }
        let Some(bins) = &self.bins else {
            out.push(QUANTILE_FORM_EXACT);
            out.extend_from_slice(&self.sum.to_le_bytes());
            for &x in &self.exact {
                out.extend_from_slice(&x.to_le_bytes());
            }
            return;
        };
        out.push(QUANTILE_FORM_BINS);
        self.encode_bins(bins, out);
    }

    /// The version-1 layout after `count`, which version 2 keeps for binned sketches.
    fn encode_bins(&self, bins: &Bins, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.sum.to_le_bytes());
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        put_varint(out, bins.zero_count);
        bins.positive.encode(out);
        bins.negative.encode(out);
    }

    /// Reads one sketch (format version 2) from the front of `input`; returns it and the bytes
    /// consumed.
    ///
    /// Format: varint `count`; if non-zero, a form byte. Form 0 (exact, `count` ≤ 100): `sum`
    /// as `f64` LE, then the `count` values as `f64` LE in ascending order (finite, no `-0.0`).
    /// Form 1 (bins): the version-1 layout after `count`, see [`QuantileSketch::decode_v1`].
    pub fn decode(input: &[u8]) -> Result<(Self, usize), String> {
        let mut r = Reader::new(input);
        let count = r.varint()?;
        if count == 0 {
            return Ok((Self::new(), r.pos));
        }
        match r.u8()? {
            QUANTILE_FORM_EXACT => {
                if count > QUANTILE_EXACT_LIMIT as u64 {
                    return Err("quantile sketch: too many exact values".into());
                }
                let sum = r.f64()?;
                r.need(count as usize * 8)?;
                let mut exact = SmallVec::with_capacity(count as usize);
                for _ in 0..count {
                    let x = r.f64()?;
                    if !x.is_finite() || x.to_bits() == (-0.0f64).to_bits() {
                        return Err("quantile sketch: invalid exact value".into());
                    }
                    if exact.last().is_some_and(|&prev: &f64| prev > x) {
                        return Err("quantile sketch: exact values not sorted".into());
                    }
                    exact.push(x);
                }
                let sketch = Self {
                    min: exact[0],
                    max: exact[exact.len() - 1],
                    exact,
                    count,
                    sum,
                    ..Self::new()
                };
                Ok((sketch, r.pos))
            }
            QUANTILE_FORM_BINS => {
                let sketch = Self::decode_bins(&mut r, count)?;
                Ok((sketch, r.pos))
            }
            form => Err(format!("quantile sketch: unknown form {form}")),
        }
    }

    /// Reads one sketch written by format version 1, which kept bins only: the result is
    /// binned whatever its count, so cells restored from a version-1 snapshot interpolate
    /// between bins rather than answering exactly.
    ///
    /// Format: varint `count`; if non-zero, `sum`, `min`, `max` as `f64` LE, varint
    /// `zero_count`, then the positive and the negative store, each as varint `bins` (≤ 4096)
    /// followed, when non-zero, by the zigzag varint key of the first bin and `bins` varint
    /// counters. Counters must add up to `count`; the first and last counter of a store are
    /// non-zero.
    pub fn decode_v1(input: &[u8]) -> Result<(Self, usize), String> {
        let mut r = Reader::new(input);
        let count = r.varint()?;
        if count == 0 {
            return Ok((Self::new(), r.pos));
        }
        let sketch = Self::decode_bins(&mut r, count)?;
        Ok((sketch, r.pos))
    }

    fn decode_bins(r: &mut Reader<'_>, count: u64) -> Result<Self, String> {
        let sum = r.f64()?;
        let min = r.f64()?;
        let max = r.f64()?;
        // `sum` may legitimately be ±inf or NaN (merging +inf and -inf overflowed sums).
        if !(min.is_finite() && max.is_finite() && min <= max) {
            return Err("quantile sketch: invalid min or max".into());
        }
        let zero_count = r.varint()?;
        let positive = DenseBins::decode(r)?;
        let negative = DenseBins::decode(r)?;
        let total = positive
            .total()
            .zip(negative.total())
            .and_then(|(p, n)| p.checked_add(n))
            .and_then(|t| t.checked_add(zero_count));
        if total != Some(count) {
            return Err("quantile sketch: bin counts do not add up to count".into());
        }
        Ok(Self {
            exact: SmallVec::new(),
            bins: Some(Box::new(Bins {
                zero_count,
                positive,
                negative,
            })),
            count,
            sum,
            min,
            max,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------------------

// The codec is `crate::codec` (shared with snapshots); sketches report its errors as text.
use crate::codec::{put_varint, varint_len, zigzag, DecodeError, Reader};

impl From<DecodeError> for String {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Truncated { .. } | DecodeError::Length { .. } => {
                "sketch: truncated input".into()
            }
            DecodeError::Varint { .. } => "sketch: malformed varint".into(),
        }
    }
}

fn unzigzag(v: u64) -> Result<i32, String> {
    crate::codec::unzigzag(v).ok_or_else(|| "sketch: zigzag value out of range".to_string())
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    const GAMMA: f64 = (1.0 + QUANTILE_ALPHA) / (1.0 - QUANTILE_ALPHA);

    fn roundtrip_distinct(s: &DistinctSketch) -> Vec<u8> {
        let mut buf = vec![0xAA];
        s.encode(&mut buf);
        buf.push(0x55);
        let (back, used) = DistinctSketch::decode(&buf[1..]).unwrap();
        assert_eq!(used, buf.len() - 2);
        assert_eq!(&back, s);
        for cut in 0..buf.len() - 2 {
            assert!(
                DistinctSketch::decode(&buf[1..=cut]).is_err(),
                "prefix {cut}"
            );
        }
        buf[1..buf.len() - 1].to_vec()
    }

    fn roundtrip_quantile(s: &QuantileSketch) -> Vec<u8> {
        let mut buf = vec![0xAA];
        s.encode(&mut buf);
        buf.push(0x55);
        let (back, used) = QuantileSketch::decode(&buf[1..]).unwrap();
        assert_eq!(used, buf.len() - 2);
        assert_eq!(&back, s);
        for cut in 0..buf.len() - 2 {
            assert!(
                QuantileSketch::decode(&buf[1..=cut]).is_err(),
                "prefix {cut}"
            );
        }
        buf[1..buf.len() - 1].to_vec()
    }

    // ---- distinct ----

    #[test]
    fn distinct_empty_and_small() {
        let mut s = DistinctSketch::new();
        assert_eq!(s.heap_bytes(), 0);
        assert!(s.estimate().abs() < f64::EPSILON);
        assert_eq!(roundtrip_distinct(&s), vec![TAG_EXACT, 0]);
        for h in [5u64, 0, 5, u64::MAX, 0, 7, 7] {
            s.insert_hash(h);
        }
        assert!(s.is_exact());
        assert!((s.estimate() - 4.0).abs() < f64::EPSILON);
        assert!(s.heap_bytes() <= 64);
        roundtrip_distinct(&s);
        assert_eq!(s, s.clone());
        let mut other = DistinctSketch::new();
        for h in [7u64, u64::MAX, 0, 5] {
            other.insert_hash(h);
        }
        assert_eq!(s, other);
        other.insert_hash(1);
        assert_ne!(s, other);
    }

    #[test]
    fn distinct_switches_to_hll_after_limit() {
        let mut rng = Rng(1);
        let hashes: Vec<u64> = (0..=EXACT_LIMIT).map(|_| rng.next()).collect();
        let mut s = DistinctSketch::new();
        for &h in &hashes[..EXACT_LIMIT] {
            s.insert_hash(h);
            s.insert_hash(h);
        }
        assert!(s.is_exact());
        assert!((s.estimate() - EXACT_LIMIT as f64).abs() < f64::EPSILON);
        assert!(s.heap_bytes() <= 32 * 1024);
        roundtrip_distinct(&s);
        s.insert_hash(hashes[EXACT_LIMIT]);
        assert!(!s.is_exact());
        assert_eq!(s.heap_bytes(), HLL_REGISTERS);
        let est = s.estimate();
        assert!(
            (est / (EXACT_LIMIT as f64 + 1.0) - 1.0).abs() < 0.02,
            "{est}"
        );
        // Just after conversion the sparse form is the compact one.
        let bytes = roundtrip_distinct(&s);
        assert_eq!(bytes[0], TAG_HLL_SPARSE);
        assert!(bytes.len() < 6000, "{}", bytes.len());
    }

    #[test]
    fn hll_rank_extremes() {
        let mut regs = zeroed_registers();
        hll_insert(&mut regs, 0);
        assert_eq!(regs[0], HLL_MAX_RANK);
        hll_insert(&mut regs, u64::MAX);
        assert_eq!(regs[HLL_REGISTERS - 1], 1);
        // Register 1, with its first one-bit 14 places below the index bits: rank 14.
        hll_insert(
            &mut regs,
            (1u64 << (64 - HLL_PRECISION)) | (1u64 << (64 - HLL_PRECISION - 14)),
        );
        assert_eq!(regs[1], 14);
    }

    #[test]
    fn distinct_accuracy() {
        let seeds = [11u64, 22, 33];
        println!("cardinality  max|rel err| over {} seeds", seeds.len());
        for &n in &[1usize, 10, 100, 1_000, 10_000, 100_000, 1_000_000] {
            let mut worst = 0.0f64;
            for &seed in &seeds {
                let mut rng = Rng(seed);
                let mut s = DistinctSketch::new();
                for _ in 0..n {
                    s.insert_hash(rng.next());
                }
                let err = (s.estimate() - n as f64).abs() / n as f64;
                if n <= EXACT_LIMIT {
                    assert!(err.abs() < f64::EPSILON, "exact mode must be exact");
                }
                worst = worst.max(err);
            }
            println!("{n:>11}  {:.4}%", worst * 100.0);
            assert!(worst <= 0.02, "n = {n}: relative error {worst}");
        }
    }

    #[test]
    fn distinct_encoding_dense_roundtrip() {
        let mut rng = Rng(3);
        let mut s = DistinctSketch::new();
        for _ in 0..200_000 {
            s.insert_hash(rng.next());
        }
        let bytes = roundtrip_distinct(&s);
        assert_eq!(bytes[0], TAG_HLL_DENSE);
        assert_eq!(bytes.len(), 1 + HLL_PACKED_BYTES);
    }

    #[test]
    fn distinct_merge_equals_replay() {
        let mut rng = Rng(42);
        for case in 0..120 {
            // Sizes straddle the exact limit so every exact/HLL combination gets merged.
            let distinct = match case % 4 {
                0 => rng.below(40),
                1 => rng.below(2 * EXACT_LIMIT),
                2 => EXACT_LIMIT - 50 + rng.below(100),
                _ => rng.below(20_000),
            };
            let pool: Vec<u64> = (0..distinct.max(1)).map(|_| rng.next()).collect();
            let events = distinct + rng.below(distinct + 1);
            let mut stream: Vec<u64> = (0..events).map(|_| pool[rng.below(pool.len())]).collect();
            let mut full = DistinctSketch::new();
            for &h in &stream {
                full.insert_hash(h);
            }
            let parts = 1 + rng.below(5);
            let mut sketches = vec![DistinctSketch::new(); parts];
            rng.shuffle(&mut stream);
            for &h in &stream {
                sketches[rng.below(parts)].insert_hash(h);
            }
            rng.shuffle(&mut sketches);
            let mut merged = sketches.pop().unwrap();
            while let Some(s) = sketches.pop() {
                if rng.below(2) == 0 {
                    merged.merge(&s);
                } else {
                    let mut s = s;
                    s.merge(&merged);
                    merged = s;
                }
            }
            assert_eq!(merged, full, "case {case}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            merged.encode(&mut a);
            full.encode(&mut b);
            assert_eq!(a, b, "case {case}: encodings differ");
        }
    }

    #[test]
    fn distinct_decode_rejects_garbage() {
        // Huge exact length: must fail on the length check, not try to allocate.
        let mut buf = vec![TAG_EXACT];
        put_varint(&mut buf, 1 << 60);
        assert!(DistinctSketch::decode(&buf).is_err());
        // Length within the limit but more than the input holds.
        let mut buf = vec![TAG_EXACT];
        put_varint(&mut buf, 2000);
        buf.extend_from_slice(&[1; 64]);
        assert!(DistinctSketch::decode(&buf).is_err());
        // Unsorted and duplicate exact hashes.
        for pair in [[2u64, 1], [1, 1]] {
            let mut buf = vec![TAG_EXACT, 2];
            for h in pair {
                buf.extend_from_slice(&h.to_le_bytes());
            }
            assert!(DistinctSketch::decode(&buf).is_err());
        }
        // Dense register above the maximum rank.
        let mut buf = vec![TAG_HLL_DENSE];
        buf.resize(1 + HLL_PACKED_BYTES, 0xFF);
        assert!(DistinctSketch::decode(&buf).is_err());
        // Sparse index past the end (first and second entry) and a zero value.
        for body in [
            vec![1u8, 0x80, 0x80, 0x04, 3],
            vec![1, 5, 0],
            vec![2, 5, 1, 0xFF, 0xFF, 0x07, 1],
        ] {
            let mut buf = vec![TAG_HLL_SPARSE];
            buf.extend(body);
            assert!(DistinctSketch::decode(&buf).is_err());
        }
        assert!(DistinctSketch::decode(&[9]).is_err());
        assert!(DistinctSketch::decode(&[]).is_err());
        let mut rng = Rng(5);
        for len in 0..2000 {
            let mut buf: Vec<u8> = (0..len % 300).map(|_| rng.next() as u8).collect();
            if let Some(b) = buf.first_mut() {
                *b %= 3;
            }
            let _ = DistinctSketch::decode(&buf);
        }
    }

    // ---- quantiles ----

    #[test]
    fn constants_match_alpha() {
        // The literal is the correctly rounded ln of the exact ratio 1.005/0.995; GAMMA is that
        // ratio rounded to f64, whose ln can be off by about one ulp of GAMMA.
        assert!((LN_GAMMA - GAMMA.ln()).abs() <= 2.0 * f64::EPSILON);
        assert!((INV_LN_GAMMA * LN_GAMMA - 1.0).abs() <= 2.0 * f64::EPSILON);
        assert!((REPRESENTATIVE_FACTOR - 2.0 / (GAMMA + 1.0)).abs() <= f64::EPSILON);
        assert_eq!(key_of(f64::MAX), 70978);
        assert_eq!(key_of(MIN_INDEXABLE), -69076);
        assert!(key_of(f64::MAX) < KEY_LIMIT && key_of(MIN_INDEXABLE) > -KEY_LIMIT);
        assert_eq!(key_of(1.0), 0);
        // Representatives are within alpha of both ends of their bin.
        for k in [-69076, -1000, -1, 0, 1, 500, 70000] {
            let rep = representative(k);
            let upper = (f64::from(k) * LN_GAMMA).exp();
            let lower = upper / GAMMA;
            assert!(rep / upper >= 1.0 - QUANTILE_ALPHA - 1e-12);
            assert!(rep / lower <= 1.0 + QUANTILE_ALPHA + 1e-12);
        }
    }

    #[test]
    fn key_of_equals_its_definition_everywhere_and_at_bin_edges() {
        for y in [
            -70_000.5, -1.5, -1.0, -0.5, -0.0, 0.0, 1e-300, 0.5, 1.0, 1.5, 70_978.0,
        ] {
            assert_eq!(ceil_i32(y), y.ceil() as i32, "{y}");
        }
        let mut rng = Rng(23);
        // Magnitudes over the whole indexable range, log-uniform.
        for _ in 0..400_000 {
            let e = rng.unit() * (f64::MAX.ln() - MIN_INDEXABLE.ln()) + MIN_INDEXABLE.ln();
            let m = e.exp().clamp(MIN_INDEXABLE, f64::MAX);
            assert_eq!(key_of(m), key_of_exact(m), "{m:e}");
        }
        // Two-decimal values, as events carry them.
        for cents in 1..200_000u32 {
            let m = f64::from(cents) / 100.0;
            assert_eq!(key_of(m), key_of_exact(m), "{m}");
        }
        // A few ulps around every bin edge of a wide band.
        for k in -3000..3000 {
            let edge = (f64::from(k) * LN_GAMMA).exp();
            let mut m = edge;
            for _ in 0..4 {
                m = f64::from_bits(m.to_bits() - 1);
            }
            for _ in 0..8 {
                assert_eq!(key_of(m), key_of_exact(m), "{m:e} near edge {k}");
                m = f64::from_bits(m.to_bits() + 1);
            }
        }
        for m in [MIN_INDEXABLE, 1.0, 2.0, f64::MAX, f64::MIN_POSITIVE * 1e10] {
            assert_eq!(key_of(m), key_of_exact(m), "{m:e}");
        }
    }

    #[test]
    fn floor_non_negative_is_floor() {
        let mut rng = Rng(11);
        let mut values = vec![
            0.0,
            0.5,
            1.0,
            0.999_999_999_999_999_9,
            98.01,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            9_007_199_254_740_993.0,
            1.8e19,
            f64::MAX,
        ];
        for n in 1..2000u32 {
            for p in [0.5, 0.9, 0.99, 0.999, rng.unit()] {
                values.push(p * f64::from(n - 1));
            }
        }
        for h in values {
            assert_eq!(floor_non_negative(h).to_bits(), h.floor().to_bits(), "{h}");
        }
    }

    #[test]
    fn dedup_hashes_keeps_each_hash_once() {
        let mut rng = Rng(5);
        for n in [0usize, 1, 5, 32, 33, 100, 5000, 40_000] {
            let mut hashes: Vec<u64> = (0..n)
                .map(|_| match rng.next() % 10 {
                    0 => 0,
                    1 => u64::MAX,
                    _ => Rng(rng.next() % (n as u64 / 2 + 1)).next(),
                })
                .collect();
            let mut expected = hashes.clone();
            expected.sort_unstable();
            expected.dedup();
            dedup_hashes(&mut hashes);
            hashes.sort_unstable();
            assert_eq!(hashes, expected, "{n} hashes");
        }
    }

    #[test]
    fn distinct_merger_estimates_like_the_merged_sketch() {
        let mut rng = Rng(7);
        for round in 0..30 {
            let mut parts = Vec::new();
            for _ in 0..=(round % 9) {
                let mut sk = DistinctSketch::new();
                // Mostly small cells, some past the exact limit, with overlapping values.
                let n = if rng.next() % 5 == 0 {
                    3000
                } else {
                    rng.next() % 40
                };
                for _ in 0..n {
                    sk.insert_hash(Rng(rng.next() % 5000).next());
                }
                parts.push(sk);
            }
            let mut whole = DistinctSketch::new();
            let mut acc = DistinctMerger::new();
            for p in &parts {
                whole.merge(p);
                acc.add(p);
            }
            assert_eq!(
                acc.estimate().to_bits(),
                whole.estimate().to_bits(),
                "round {round}"
            );
        }
    }

    #[test]
    fn merger_answers_like_the_merged_sketch() {
        let mut rng = Rng(11);
        for round in 0..40 {
            let mut parts = Vec::new();
            for _ in 0..=(round % 7) {
                let mut sk = QuantileSketch::new();
                for _ in 0..(rng.next() % 50) {
                    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                    // Wide ranges (collapsing), negatives and zeros included.
                    let x = match rng.next() % 4 {
                        0 => 0.0,
                        1 => -(u * 1e3),
                        2 => (u * 700.0 - 350.0).exp(),
                        _ => u * 1e6,
                    };
                    sk.add(x);
                }
                parts.push(sk);
            }
            let mut whole = QuantileSketch::new();
            let mut acc = QuantileMerger::new();
            for p in &parts {
                whole.merge(p);
                acc.add(p);
            }
            for p in [0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
                assert_eq!(acc.quantile(p), whole.quantile(p), "round {round} p {p}");
            }
        }
    }

    #[test]
    fn percentile_cont_examples_from_the_issue() {
        let mut seats = QuantileSketch::new();
        seats.add(3.0);
        seats.add(5.0);
        // numpy.quantile([3, 5], 0.99) == 4.98 (the nearest-rank answer was 3.0).
        assert_eq!(seats.quantile(0.99), Some(4.98));
        let mut prices = QuantileSketch::new();
        for x in [6.97, 12.9, 15.9, 15.91, 25.37, 32.44, 91.97, 183.8] {
            prices.add(x);
        }
        // numpy, pandas, DuckDB quantile_cont and `PERCENTILE_CONT` all give 20.64.
        assert_eq!(prices.quantile(0.5), Some(lerp(15.91, 25.37, 0.5)));
        assert!((prices.quantile(0.5).unwrap() - 20.64).abs() < 1e-12);
    }

    #[test]
    fn exact_limit_conversion_is_order_independent() {
        let values: Vec<f64> = (0..=QUANTILE_EXACT_LIMIT)
            .map(|i| ((i * 37) % 101) as f64 * 1.5 - 20.0)
            .collect();
        let mut replay = QuantileSketch::new();
        for &x in &values {
            replay.add(x);
        }
        assert!(!replay.is_exact());
        let mut first = QuantileSketch::new();
        let mut only = QuantileSketch::new();
        for (i, &x) in values.iter().enumerate() {
            if i % 2 == 0 {
                first.add(x);
            } else {
                only.add(x);
            }
        }
        for (a, b) in [(&first, &only), (&only, &first)] {
            assert!(a.is_exact() && b.is_exact());
            let mut m = a.clone();
            m.merge(b);
            assert_same_state(&m, &replay, "split merge");
            let mut acc = QuantileMerger::new();
            acc.add(a);
            acc.add(b);
            for p in [0.01, 0.5, 0.99] {
                assert_eq!(acc.quantile(p), replay.quantile(p));
            }
        }
        // One value fewer stays exact either way.
        let mut exact = QuantileSketch::new();
        for &x in &values[1..] {
            exact.add(x);
        }
        assert!(exact.is_exact());
    }

    #[test]
    fn quantile_empty_and_edge_cases() {
        let mut s = QuantileSketch::new();
        assert_eq!(s.heap_bytes(), 0);
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.min(), None);
        assert_eq!(roundtrip_quantile(&s), vec![0]);
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            s.add(x);
        }
        assert!(s.is_empty());
        s.add(42.0);
        assert_eq!(s.quantile(0.5), Some(42.0));
        assert_eq!(s.quantile(1e-9), Some(42.0));
        assert_eq!(s.quantile(1.0), Some(42.0));
        for p in [0.0, -0.1, 1.5, f64::NAN] {
            assert_eq!(s.quantile(p), None);
        }
        s.add(-0.0);
        s.add(1e-310);
        s.add(-3.0);
        assert_eq!(s.count(), 4);
        assert_eq!(s.min(), Some(-3.0));
        assert_eq!(s.max(), Some(42.0));
        assert!((s.sum() - 39.0).abs() < 1e-12);
        // Exact: [-3, 0, 1e-310, 42], so p = 0.5 sits halfway between 0 and 1e-310.
        assert!(s.is_exact());
        assert_eq!(s.exact.as_slice(), &[-3.0, 0.0, 1e-310, 42.0]);
        assert_eq!(s.quantile(0.5), Some(1e-310 - 1e-310 * 0.5));
        assert_eq!(s.quantile(0.01), Some(-3.0 + 3.0 * 0.03));
        roundtrip_quantile(&s);
        // Binned, magnitudes below 1e-300 count as zeros.
        for i in 0..QUANTILE_EXACT_LIMIT {
            s.add(i as f64);
        }
        assert!(!s.is_exact());
        assert_eq!(s.bins.as_ref().unwrap().zero_count, 3);
        assert_eq!(s.quantile(1e-9), Some(lerp(-3.0, 0.0, 1e-9 * 103.0)));
        assert_eq!(s.quantile(1.0), Some(99.0));
        roundtrip_quantile(&s);
        // -0.0 and +0.0 produce identical states and bytes.
        let (mut a, mut b) = (QuantileSketch::new(), QuantileSketch::new());
        a.add(-0.0);
        a.add(0.0);
        b.add(0.0);
        b.add(-0.0);
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.encode(&mut ea);
        b.encode(&mut eb);
        assert_eq!(ea, eb);
    }

    /// Returns (max relative value error against exact `PERCENTILE_CONT`, max distance outside
    /// the rank window) over a grid of quantiles. The rank window of `p` is the values at ranks
    /// `h - 0.01 n` and `h + 0.01 n` (`h = p (n - 1)`), widened by the sketch's relative error;
    /// the distance is how far outside it the answer lies, relative to the bound it crosses.
    fn quantile_errors(name: &str, mut data: Vec<f64>) -> (f64, f64) {
        let mut s = QuantileSketch::new();
        for &x in &data {
            s.add(x);
        }
        assert!(!s.is_exact() || data.len() <= QUANTILE_EXACT_LIMIT);
        data.sort_by(f64::total_cmp);
        let n = data.len();
        let (mut worst_value, mut worst_rank) = (0.0f64, 0.0f64);
        for &p in &[
            1e-4, 0.001, 0.01, 0.05, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.95, 0.99, 0.999,
            0.9999, 1.0,
        ] {
            let got = s.quantile(p).unwrap();
            let exact = exact_quantile(&data, p).unwrap();
            let value_err = if exact == 0.0 {
                got.abs()
            } else {
                ((got - exact) / exact).abs()
            };
            let h = p * (n - 1) as f64;
            let slack = 0.01 * n as f64;
            let lo = data[((h - slack).floor().max(0.0)) as usize];
            let hi = data[((h + slack).ceil() as usize).min(n - 1)];
            let widen = |x: f64, up: bool| {
                let a = x.abs() * QUANTILE_ALPHA;
                if up {
                    x + a
                } else {
                    x - a
                }
            };
            let (lo, hi) = (widen(lo, false), widen(hi, true));
            let outside = if got < lo {
                (lo - got) / lo.abs().max(f64::MIN_POSITIVE)
            } else if got > hi {
                (got - hi) / hi.abs().max(f64::MIN_POSITIVE)
            } else {
                0.0
            };
            worst_value = worst_value.max(value_err);
            worst_rank = worst_rank.max(outside);
        }
        println!(
            "{name:<28} value err {:.4}%  outside rank window {:.2e}",
            worst_value * 100.0,
            worst_rank
        );
        (worst_value, worst_rank)
    }

    #[test]
    fn quantile_accuracy() {
        const N: usize = 100_000;
        let mut rng = Rng(7);
        let mut datasets: Vec<(&str, Vec<f64>)> = Vec::new();
        datasets.push((
            "uniform [-100, 1000)",
            (0..N).map(|_| rng.unit() * 1100.0 - 100.0).collect(),
        ));
        datasets.push((
            "normal(50, 100)",
            (0..N).map(|_| 50.0 + 100.0 * rng.normal()).collect(),
        ));
        datasets.push((
            "exponential(mean 1000)",
            (0..N).map(|_| -1000.0 * rng.unit().ln()).collect(),
        ));
        datasets.push((
            "lognormal(0, 2)",
            (0..N).map(|_| (2.0 * rng.normal()).exp()).collect(),
        ));
        datasets.push((
            "pareto(1.1) skewed",
            (0..N).map(|_| rng.unit().powf(-1.0 / 1.1)).collect(),
        ));
        datasets.push((
            "mixed: 10% 0, 30% -lognorm",
            (0..N)
                .map(|_| match rng.below(10) {
                    0 => 0.0,
                    1..=3 => -(1.5 * rng.normal()).exp(),
                    _ => -50.0 * rng.unit().ln(),
                })
                .collect(),
        ));
        datasets.push((
            "latency ms, integers",
            (0..N)
                .map(|_| (20.0 * (0.8 * rng.normal()).exp()).round())
                .collect(),
        ));
        for (name, data) in datasets {
            let (v, r) = quantile_errors(name, data);
            assert!(v <= 0.01, "{name}: value error {v}");
            // Never outside the rank window (up to float rounding).
            assert!(r <= 1e-12, "{name}: outside the rank window by {r}");
        }
    }

    #[test]
    fn quantile_sketch_is_one_cache_line() {
        // Rollups read one sketch per stored row: the layout is what they stream.
        assert_eq!(std::mem::size_of::<QuantileSketch>(), 64);
    }

    #[test]
    fn quantile_collapses_lowest_keys() {
        let mut rng = Rng(9);
        let mut s = QuantileSketch::new();
        let mut data = Vec::new();
        for _ in 0..50_000 {
            // Magnitudes from 1e-100 to 1e100: about 46000 keys, far beyond 4096 bins.
            let x = 10f64.powf(rng.unit() * 200.0 - 100.0);
            let x = if rng.below(3) == 0 { -x } else { x };
            data.push(x);
            s.add(x);
        }
        let bins = s.bins.as_ref().unwrap();
        assert_eq!(bins.positive.counts.len(), QUANTILE_MAX_BINS);
        assert_eq!(bins.negative.counts.len(), QUANTILE_MAX_BINS);
        assert!(s.heap_bytes() <= 2 * 2 * QUANTILE_MAX_BINS * 8);
        assert_eq!(
            bins.positive.total().unwrap() + bins.negative.total().unwrap(),
            50_000
        );
        data.sort_by(f64::total_cmp);
        // Only magnitudes above ~1e100 / 6e17 keep full accuracy: the most negative 3 % and
        // the top 6 % of ranks. Below that the answers are the collapsed bins' values.
        for p in [1e-4, 0.01, 0.02, 0.95, 0.99, 0.9999] {
            let exact = exact_quantile(&data, p).unwrap();
            let got = s.quantile(p).unwrap();
            assert!(
                ((got - exact) / exact).abs() <= QUANTILE_ALPHA + 1e-9,
                "{p}"
            );
        }
        roundtrip_quantile(&s);
    }

    /// The store every insertion order must produce: each key folded to
    /// `max(key, max_key - MAX_BINS + 1)`.
    fn reference_store(keys: &[i32]) -> DenseBins {
        let Some(&hi) = keys.iter().max() else {
            return DenseBins::default();
        };
        let floor = hi - (QUANTILE_MAX_BINS as i32 - 1);
        let lo = keys.iter().map(|&k| k.max(floor)).min().unwrap();
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for &k in keys {
            counts[(k.max(floor) - lo) as usize] += 1;
        }
        DenseBins {
            offset: lo,
            counts: counts.into(),
        }
    }

    #[test]
    fn store_matches_reference_in_any_order() {
        let mut rng = Rng(31);
        for case in 0..40 {
            let spread = [10, 3000, 4096, 5000, 20_000][case % 5];
            let mut keys: Vec<i32> = (0..3000)
                .map(|_| rng.below(spread) as i32 - (spread / 2) as i32)
                .collect();
            let expected = reference_store(&keys);
            // Ascending and descending orders hit the grow-up, grow-down and
            // collapse-on-every-key paths; shuffled orders mix them.
            let mut orders = vec![keys.clone()];
            keys.sort_unstable();
            orders.push(keys.clone());
            keys.reverse();
            orders.push(keys.clone());
            for mut order in orders {
                if case % 2 == 1 {
                    rng.shuffle(&mut order);
                }
                let mut store = DenseBins::default();
                for &k in &order {
                    store.add(k);
                }
                assert_eq!(store, expected, "case {case}");
            }
        }
    }

    /// Equality of everything but `sum`, which only agrees up to rounding.
    fn assert_same_state(a: &QuantileSketch, b: &QuantileSketch, what: &str) {
        let tol = 1e-9 * (a.sum.abs() + b.sum.abs() + 1.0);
        assert!(
            (a.sum - b.sum).abs() <= tol,
            "{what}: sums {} {}",
            a.sum,
            b.sum
        );
        let mut b = b.clone();
        b.sum = a.sum;
        assert!(a == &b, "{what}: states differ");
    }

    #[test]
    fn quantile_merge_equals_replay() {
        let mut rng = Rng(1234);
        for case in 0..150 {
            let n = match case % 3 {
                0 => rng.below(50),
                1 => rng.below(2_000),
                _ => rng.below(20_000),
            };
            // Scale of spread: narrow, wide, and wide enough to force collapsing.
            let decades = [1.0, 10.0, 60.0][rng.below(3)];
            let integers = case % 5 == 0;
            let mut data: Vec<f64> = (0..n)
                .map(|_| {
                    let mut x = 10f64.powf((rng.unit() - 0.5) * decades);
                    if integers {
                        x = (x * 100.0).round();
                    }
                    match rng.below(10) {
                        0 => 0.0,
                        1..=3 => -x,
                        _ => x,
                    }
                })
                .collect();
            let mut full = QuantileSketch::new();
            for &x in &data {
                full.add(x);
            }
            rng.shuffle(&mut data);
            let parts = 1 + rng.below(6);
            let mut sketches = vec![QuantileSketch::new(); parts];
            for &x in &data {
                sketches[rng.below(parts)].add(x);
            }
            rng.shuffle(&mut sketches);
            let mut merged = sketches.pop().unwrap();
            while let Some(s) = sketches.pop() {
                if rng.below(2) == 0 {
                    merged.merge(&s);
                } else {
                    let mut s = s;
                    s.merge(&merged);
                    merged = s;
                }
            }
            assert_same_state(&merged, &full, &format!("case {case}"));
            if integers && decades < 10.0 {
                // Small integers sum exactly in any order, so the states are fully equal.
                assert_eq!(merged, full, "case {case}");
            }
            let (back, _) = QuantileSketch::decode(&{
                let mut v = Vec::new();
                merged.encode(&mut v);
                v
            })
            .unwrap();
            assert_eq!(back, merged);
        }
    }

    #[test]
    fn quantile_decode_rejects_garbage() {
        let mut s = QuantileSketch::new();
        for x in [1.0, 2.0, -5.0, 0.0, 1000.0] {
            s.add(x);
        }
        s.move_into_bins();
        roundtrip_quantile(&s);
        // The version-1 layout, which version 2 keeps after its form byte.
        let mut good = Vec::new();
        put_varint(&mut good, s.count);
        s.encode_bins(s.bins.as_ref().unwrap(), &mut good);
        assert_eq!(QuantileSketch::decode_v1(&good).unwrap().0, s);
        // Count that disagrees with the bins.
        let mut bad = good.clone();
        bad[0] = 6;
        assert!(QuantileSketch::decode_v1(&bad).is_err());
        // min > max, NaN min.
        for (off, v) in [(9usize, 2000.0f64), (9, f64::NAN), (17, -10.0)] {
            let mut bad = good.clone();
            bad[off..off + 8].copy_from_slice(&v.to_le_bytes());
            assert!(QuantileSketch::decode_v1(&bad).is_err(), "{off} {v}");
        }
        // Huge bin count: rejected before allocating.
        let mut buf = vec![1];
        buf.extend_from_slice(&[0; 24]);
        buf.push(0);
        put_varint(&mut buf, u64::MAX);
        assert!(QuantileSketch::decode_v1(&buf).is_err());
        // Bin count under the cap but beyond the input.
        let mut buf = vec![1];
        buf.extend_from_slice(&[0; 24]);
        buf.push(0);
        put_varint(&mut buf, 4000);
        buf.extend_from_slice(&[2, 1, 0]);
        assert!(QuantileSketch::decode_v1(&buf).is_err());
        // Offset far outside the key range, untrimmed store, overlong varint.
        for store in [
            vec![1u8, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 1],
            vec![2, 0, 1, 0],
            vec![1, 0x80, 0x00, 1],
        ] {
            let mut buf = vec![1];
            buf.extend_from_slice(&0.0f64.to_le_bytes());
            buf.extend_from_slice(&1.0f64.to_le_bytes());
            buf.extend_from_slice(&1.0f64.to_le_bytes());
            buf.push(0);
            buf.extend(store);
            buf.push(0);
            assert!(QuantileSketch::decode_v1(&buf).is_err());
        }
        // Version 2, exact form: count, form 0, sum, then the sorted values.
        let mut e = QuantileSketch::new();
        for x in [1.0, 2.0, -5.0] {
            e.add(x);
        }
        let exact_good = roundtrip_quantile(&e);
        assert_eq!(exact_good.len(), 1 + 1 + 8 + 3 * 8);
        let exact_bytes = |values: &[f64], count: u8, form: u8| {
            let mut buf = vec![count, form];
            buf.extend_from_slice(&0.0f64.to_le_bytes());
            for v in values {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            buf
        };
        assert!(QuantileSketch::decode(&exact_bytes(&[-5.0, 1.0, 2.0], 3, 0)).is_ok());
        for bad in [
            exact_bytes(&[1.0, -5.0, 2.0], 3, 0),     // not sorted
            exact_bytes(&[-0.0, 1.0, 2.0], 3, 0),     // -0.0
            exact_bytes(&[f64::NAN, 1.0, 2.0], 3, 0), // not finite
            exact_bytes(&[-5.0, 1.0], 3, 0),          // truncated
            exact_bytes(&[-5.0, 1.0, 2.0], 3, 7),     // unknown form
        ] {
            assert!(QuantileSketch::decode(&bad).is_err(), "{bad:?}");
        }
        // More exact values than the limit allows.
        let mut many = vec![];
        put_varint(&mut many, QUANTILE_EXACT_LIMIT as u64 + 1);
        many.push(QUANTILE_FORM_EXACT);
        many.extend(std::iter::repeat_n(0u8, 8 * (QUANTILE_EXACT_LIMIT + 2)));
        assert!(QuantileSketch::decode(&many).is_err());
        let mut rng = Rng(77);
        for len in 0..3000 {
            let buf: Vec<u8> = (0..len % 200).map(|_| rng.next() as u8).collect();
            let _ = QuantileSketch::decode_v1(&buf);
            let mut mutated = good.clone();
            let i = rng.below(mutated.len());
            mutated[i] ^= 1 << rng.below(8);
            if let Ok((m, _)) = QuantileSketch::decode_v1(&mutated) {
                // Whatever decodes must be safe to query.
                let _ = m.quantile(0.5);
            }
            for buf in [&buf, &exact_good] {
                let mut mutated = buf.clone();
                if !mutated.is_empty() {
                    let i = rng.below(mutated.len());
                    mutated[i] ^= 1 << rng.below(8);
                }
                if let Ok((m, _)) = QuantileSketch::decode(&mutated) {
                    let _ = m.quantile(0.5);
                    let _ = m.quantile(0.99);
                }
            }
        }
    }

    #[test]
    fn varint_and_zigzag() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            let mut r = Reader::new(&buf);
            assert_eq!(r.varint().unwrap(), v);
            assert_eq!(r.pos, buf.len());
        }
        assert!(Reader::new(&[0xFF; 11]).varint().is_err());
        assert!(Reader::new(&[0x80, 0x00]).varint().is_err());
        for v in [0, 1, -1, KEY_LIMIT, -KEY_LIMIT, i32::MAX, i32::MIN] {
            assert_eq!(unzigzag(u64::from(zigzag(v))).unwrap(), v);
        }
    }
}
