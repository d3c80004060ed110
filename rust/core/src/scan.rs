//! Byte-class searches for the JSON scanner, vectorised where the CPU allows.
//!
//! Guarantees:
//! - [`string_stop`] returns exactly the index of the first byte at or after `from` that ends a
//!   plain run inside a JSON string (`"`, `\` or a control byte below 0x20), or the buffer's
//!   length when there is none. Every implementation (scalar, SSE2, AVX2) returns the same
//!   index for every input; the tests hold them to each other and to a byte-at-a-time oracle.
//! - [`to_str`] accepts exactly what `std::str::from_utf8` accepts and reports its
//!   `valid_up_to` (through `simdutf8`'s `compat` validator; tested against std).
//! - The SIMD paths read only inside the slice: full-width loads happen only while a whole
//!   vector fits, and the last bytes go through the scalar path.
//! - On x86-64, SSE2 is part of the target's baseline and needs no detection; AVX2 is used only
//!   after `is_x86_feature_detected!("avx2")` said so at run time. Other targets use the
//!   portable scalar code (eight bytes at a time).
//!
//! This is the only module of the crate with `unsafe` code (vector loads through raw pointers);
//! `Cargo.toml` says why the lint is relaxed for it.
#![allow(unsafe_code)]

/// True for the bytes that end a plain run inside a string.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// A string-search implementation the batch scanner is generic over, so tests can run the whole
/// scanner on each path and compare; production code uses [`Native`].
pub trait StringSearch {
    /// Whether the batch scanner takes its compact fast roads (runs of `"name":value` members
    /// and flat container prefixes read on local positions). Every implementation here keeps
    /// them on; the batch tests turn them off to hold the fast roads to the token-by-token
    /// code (same accept/reject, error offsets and values). A constant, so the choice costs
    /// nothing at run time.
    const COMPACT_SHORTCUTS: bool = true;

    /// Same contract as [`string_stop`].
    fn string_stop(buf: &[u8], from: usize) -> usize;
}

/// The best path for this CPU: SSE2 (inline) then AVX2 when detected; scalar off x86-64.
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

/// The portable eight-bytes-at-a-time path on every target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scalar;

/// SSE2 only (x86-64), scalar elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sse2;

/// AVX2 when this CPU has it, else SSE2 (x86-64) or scalar; see [`avx2_available`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Avx2;

impl StringSearch for Native {
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn string_stop(buf: &[u8], from: usize) -> usize {
        string_stop(buf, from)
    }
}

impl StringSearch for Scalar {
    #[inline]
    fn string_stop(buf: &[u8], from: usize) -> usize {
        string_stop_scalar(buf, from)
    }
}

impl StringSearch for Sse2 {
    #[inline]
    fn string_stop(buf: &[u8], from: usize) -> usize {
        string_stop_sse2(buf, from).unwrap_or_else(|| string_stop_scalar(buf, from))
    }
}

impl StringSearch for Avx2 {
    #[inline]
    fn string_stop(buf: &[u8], from: usize) -> usize {
        string_stop_avx2(buf, from).unwrap_or_else(|| Sse2::string_stop(buf, from))
    }
}

/// True when [`Avx2`] really runs AVX2 code on this machine.
#[must_use]
pub fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Index of the first `"`, `\` or control byte in `buf[from..]` (absolute), or `buf.len()`.
#[allow(clippy::inline_always)]
#[inline(always)]
#[must_use]
pub fn string_stop(buf: &[u8], from: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        x86::string_stop(buf, from)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        string_stop_scalar(buf, from)
    }
}

/// The portable path: eight bytes at a time in a `u64`, then byte by byte for the last < 8.
#[inline]
#[must_use]
pub fn string_stop_scalar(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // In each test the lowest flagged byte is exact (borrows only propagate upwards), and the
        // lowest one is all we use.
        let quote = x ^ 0x2222_2222_2222_2222;
        let backslash = x ^ 0x5C5C_5C5C_5C5C_5C5C;
        let lo = 0x0101_0101_0101_0101u64;
        let found = (quote.wrapping_sub(lo) & !quote)
            | (backslash.wrapping_sub(lo) & !backslash)
            | (x.wrapping_sub(0x2020_2020_2020_2020) & !x);
        let found = found & 0x8080_8080_8080_8080;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    string_stop_bytes(buf, i)
}

/// Byte-at-a-time search: the tail of every path, and the tests' oracle.
#[inline]
#[must_use]
pub fn string_stop_bytes(buf: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < buf.len() && !STRING_STOP[buf[i] as usize] {
        i += 1;
    }
    i
}

/// The SSE2 path (no detection: SSE2 is baseline on x86-64), or `None` off x86-64.
#[must_use]
pub fn string_stop_sse2(buf: &[u8], from: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(x86::sse2_loop(buf, from))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (buf, from);
        None
    }
}

/// The AVX2 path, or `None` when this CPU (or target) has no AVX2.
#[must_use]
pub fn string_stop_avx2(buf: &[u8], from: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected on this CPU just above.
            return Some(unsafe { x86::avx2_loop(buf, from) });
        }
        None
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (buf, from);
        None
    }
}

/// `buf` as text when it is valid UTF-8, else the offset of its first invalid sequence
/// (exactly `std::str::from_utf8`'s `valid_up_to`).
///
/// `simdutf8`'s `compat` validator checks 32 or 64 bytes a step (AVX2 or SSE4.2, chosen at run
/// time) and, on an error, finds its offset as the standard library does. Text with many
/// non-ASCII characters (names, free text in other scripts) goes at the speed of ASCII text
/// instead of through the standard library's byte-at-a-time path.
pub fn to_str(buf: &[u8]) -> Result<&str, usize> {
    simdutf8::compat::from_utf8(buf).map_err(|e| e.valid_up_to())
}

/// Carried state of the structural index between 64-byte blocks (see [`index_blocks`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexState {
    /// All ones while the previous block ended inside a string, else zero.
    in_string: u64,
    /// 1 when the previous block ended with a backslash that escapes this block's first byte.
    escape_next: u64,
    /// 1 when the previous block's last byte was a scalar byte (outside strings, not a
    /// structural character or a quote).
    scalar: u64,
}

/// Raw byte classes of one 64-byte block, one bit per byte.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockClasses {
    pub quote: u64,
    pub backslash: u64,
    /// Bytes below 0x20.
    pub control: u64,
    /// `{`, `}`, `[`, `]`, `:` and `,`.
    pub structural: u64,
}

/// The portable classification, one byte at a time.
#[must_use]
pub fn classify_scalar(block: &[u8; 64]) -> BlockClasses {
    let mut c = BlockClasses::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'"' => c.quote |= bit,
            b'\\' => c.backslash |= bit,
            b'{' | b'}' | b'[' | b']' | b':' | b',' => c.structural |= bit,
            0..=0x1F => c.control |= bit,
            _ => {}
        }
    }
    c
}

/// Prefix XOR: bit `i` of the result is the XOR of bits `0..=i` of `x`.
#[allow(clippy::inline_always)]
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The index bits of one block from its byte classes (simdjson's stage 1 rules):
/// - a backslash escapes the next byte unless it is itself escaped (runs alternate);
/// - unescaped quotes toggle the in-string state (an opening quote counts as inside, a
///   closing one as outside);
/// - indexed: every unescaped quote, every structural character outside strings, the first
///   byte of every run of other bytes outside strings (numbers, literals, and anything
///   invalid there, whitespace included), and every escaping backslash or control byte inside
///   strings.
///
/// So outside strings every byte that follows an indexed quote or structural character is
/// itself indexed, and a string's tokens are its quotes with its escapes and control bytes
/// between them.
#[allow(clippy::inline_always)]
#[inline(always)]
#[must_use]
pub fn index_bits(c: BlockClasses, st: &mut IndexState, prefix: fn(u64) -> u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    // Escapes (simdjson's odd-backslash-run rule).
    let escaped;
    let starts_escape;
    if c.backslash == 0 {
        escaped = st.escape_next;
        starts_escape = 0;
        st.escape_next = 0;
    } else {
        let bs = c.backslash & !st.escape_next;
        let follows_escape = (bs << 1) | st.escape_next;
        let odd_starts = bs & !EVEN & !follows_escape;
        let (even_seq, overflow) = odd_starts.overflowing_add(bs);
        let invert = even_seq << 1;
        escaped = (EVEN ^ invert) & follows_escape;
        starts_escape = bs & !escaped;
        st.escape_next = u64::from(overflow);
    }
    let quote = c.quote & !escaped;
    let in_string = prefix(quote) ^ st.in_string;
    st.in_string = 0u64.wrapping_sub(in_string >> 63);
    let outside = !(in_string | quote);
    let scalar = outside & !c.structural;
    let scalar_start = scalar & !((scalar << 1) | st.scalar);
    st.scalar = scalar >> 63;
    quote | (c.structural & outside) | scalar_start | ((starts_escape | c.control) & in_string)
}

/// Appends to `out[*n..]` the positions (`base` + bit index) of the set bits of `bits`.
/// `out` must have 64 free entries past `*n`.
#[allow(clippy::inline_always)]
#[inline(always)]
fn flatten(mut bits: u64, base: u32, out: &mut [u32], n: &mut usize) {
    let count = bits.count_ones() as usize;
    let Some(slot) = out.get_mut(*n..*n + 64) else {
        panic!("index buffer full");
    };
    let slot: &mut [u32; 64] = slot.try_into().expect("64 entries");
    // Eight at a time without tests per bit (simdjson's flatten): the entries past `count`
    // are overwritten by the next block or ignored.
    let mut k = 0;
    loop {
        for j in 0..8 {
            slot[(k + j) & 63] = base + bits.trailing_zeros();
            bits &= bits.wrapping_sub(1);
        }
        k += 8;
        if k >= count {
            break;
        }
    }
    *n += count;
}

/// The structural index of `buf[from..to]` (`from` a multiple of 64, blocks read in order from
/// 0 with `st` carried), appended to `out[*n..]`; `out` needs `to - from + 64` free entries.
/// Bytes past `buf.len()` count as spaces, and no position at or past `to` is reported.
pub fn index_blocks(
    buf: &[u8],
    from: usize,
    to: usize,
    st: &mut IndexState,
    out: &mut [u32],
    n: &mut usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::avx2_clmul() {
            // SAFETY: AVX2, PCLMULQDQ, BMI1 and POPCNT were detected on this CPU just above.
            unsafe { x86::index_blocks_avx2(buf, from, to, st, out, n) };
            return;
        }
    }
    index_blocks_with(buf, from, to, st, out, n, classify_scalar, prefix_xor);
}

/// [`index_blocks`] with the portable classification (the tests' reference).
pub fn index_blocks_scalar(
    buf: &[u8],
    from: usize,
    to: usize,
    st: &mut IndexState,
    out: &mut [u32],
    n: &mut usize,
) {
    index_blocks_with(buf, from, to, st, out, n, classify_scalar, prefix_xor);
}

#[allow(clippy::inline_always, clippy::too_many_arguments)]
#[inline(always)]
fn index_blocks_with(
    buf: &[u8],
    from: usize,
    to: usize,
    st: &mut IndexState,
    out: &mut [u32],
    n: &mut usize,
    classify: impl Fn(&[u8; 64]) -> BlockClasses,
    prefix: fn(u64) -> u64,
) {
    debug_assert_eq!(from % 64, 0);
    // The state and the count in locals for the loop (not stored back every block).
    let mut state = *st;
    let mut count = *n;
    let mut at = from;
    while let Some(block) = buf.get(at..at + 64).filter(|_| at + 64 <= to) {
        let bits = index_bits(
            classify(block.try_into().expect("64 bytes")),
            &mut state,
            prefix,
        );
        flatten(bits, at as u32, out, &mut count);
        at += 64;
    }
    if at < to {
        let mut pad = [b' '; 64];
        let tail = buf.get(at..).unwrap_or_default();
        let len = tail.len().min(64);
        pad[..len].copy_from_slice(&tail[..len]);
        let bits = index_bits(classify(&pad), &mut state, prefix);
        let keep = to - at;
        let bits = if keep < 64 {
            bits & ((1u64 << keep) - 1)
        } else {
            bits
        };
        flatten(bits, at as u32, out, &mut count);
    }
    *st = state;
    *n = count;
}

#[cfg(target_arch = "x86_64")]
// The `loadu` intrinsics take `*const __m128i`/`__m256i` but read unaligned memory by contract,
// so the casts from `*const u8` need no alignment.
#[allow(clippy::cast_ptr_alignment)]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_max_epu8,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8, _mm_clmulepi64_si128,
        _mm_cmpeq_epi8, _mm_cvtsi128_si64, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8, _mm_set_epi64x,
    };

    /// Mask of the stop bytes among the 16 of `block`.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn mask16(block: &[u8; 16]) -> u32 {
        // SAFETY: `block` is 16 readable bytes and `loadu` has no alignment requirement. The
        // SSE2 intrinsics need the `sse2` feature, which every x86-64 CPU has (it is part of
        // the target's baseline, so this module is compiled with it enabled).
        unsafe {
            let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned `v <= 0x1F` as `max(v, 0x1F) == 0x1F`: SSE2 has no unsigned compare.
            let low = _mm_set1_epi8(0x1F);
            let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    }

    /// Most strings in events are short: two inline 16-byte probes settle them (timestamps, ids
    /// and URLs mostly end within 32 bytes: measured, this beats calling the AVX2 loop for
    /// them); longer ones go on in the AVX2 loop when the CPU has it.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub(super) fn string_stop(buf: &[u8], from: usize) -> usize {
        // Fixed-size chunks: one length test each, no per-probe bounds checks.
        let rest = buf.get(from..).unwrap_or_default();
        let Some((first, rest)) = rest.split_first_chunk::<16>() else {
            return super::string_stop_scalar(buf, from);
        };
        let m = mask16(first);
        if m != 0 {
            return from + m.trailing_zeros() as usize;
        }
        let Some(second) = rest.first_chunk::<16>() else {
            return super::string_stop_scalar(buf, from + 16);
        };
        let m = mask16(second);
        if m != 0 {
            return from + 16 + m.trailing_zeros() as usize;
        }
        let next = from + 32;
        if next + 32 <= buf.len() && avx2() {
            // SAFETY: `avx2()` checked that this CPU has AVX2.
            return unsafe { avx2_loop(buf, next) };
        }
        sse2_loop(buf, next)
    }

    /// Both features of the AVX2 index path; cached by the standard library.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub(super) fn avx2_clmul() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("popcnt")
    }

    /// The byte classes of a 64-byte block, two 32-byte halves.
    #[target_feature(enable = "avx2")]
    fn classify_avx2(block: &[u8; 64]) -> super::BlockClasses {
        let half = |v: __m256i| {
            let quote = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
            let backslash = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
            let control = _mm256_cmpeq_epi8(
                _mm256_max_epu8(v, _mm256_set1_epi8(0x1F)),
                _mm256_set1_epi8(0x1F),
            );
            // `[` | 0x20 is `{` and `]` | 0x20 is `}`.
            let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
            let structural = _mm256_or_si256(
                _mm256_or_si256(
                    _mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'{' as i8)),
                    _mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'}' as i8)),
                ),
                _mm256_or_si256(
                    _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b':' as i8)),
                    _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b',' as i8)),
                ),
            );
            [
                u64::from(_mm256_movemask_epi8(quote) as u32),
                u64::from(_mm256_movemask_epi8(backslash) as u32),
                u64::from(_mm256_movemask_epi8(control) as u32),
                u64::from(_mm256_movemask_epi8(structural) as u32),
            ]
        };
        // SAFETY: `block` is 64 readable bytes; `loadu` has no alignment requirement.
        let (lo, hi) = unsafe {
            (
                _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()),
                _mm256_loadu_si256(block.as_ptr().add(32).cast::<__m256i>()),
            )
        };
        let (l, h) = (half(lo), half(hi));
        super::BlockClasses {
            quote: l[0] | (h[0] << 32),
            backslash: l[1] | (h[1] << 32),
            control: l[2] | (h[2] << 32),
            structural: l[3] | (h[3] << 32),
        }
    }

    /// Prefix XOR as a carry-less multiplication by all ones.
    #[target_feature(enable = "pclmulqdq")]
    fn prefix_xor_clmul(x: u64) -> u64 {
        let v = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
        _mm_cvtsi128_si64(v) as u64
    }

    /// # Safety
    /// The CPU must support AVX2, PCLMULQDQ, BMI1 and POPCNT ([`avx2_clmul`]).
    #[target_feature(enable = "avx2,pclmulqdq,bmi1,popcnt")]
    pub(super) unsafe fn index_blocks_avx2(
        buf: &[u8],
        from: usize,
        to: usize,
        st: &mut super::IndexState,
        out: &mut [u32],
        n: &mut usize,
    ) {
        super::index_blocks_with(
            buf,
            from,
            to,
            st,
            out,
            n,
            // Closures inherit this function's target features.
            |b| classify_avx2(b),
            |x| prefix_xor_clmul(x),
        );
    }

    /// Cached by the standard library: one load and a bit test.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    pub(super) fn sse2_loop(buf: &[u8], from: usize) -> usize {
        let mut i = from;
        while let Some(block) = buf.get(i..).and_then(<[u8]>::first_chunk::<16>) {
            let m = mask16(block);
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 16;
        }
        super::string_stop_scalar(buf, i)
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2_loop(buf: &[u8], from: usize) -> usize {
        let mut i = from;
        while i + 32 <= buf.len() {
            let block = &buf[i..i + 32];
            // SAFETY: `block` is 32 readable bytes; `loadu` has no alignment requirement.
            let v = unsafe { _mm256_loadu_si256(block.as_ptr().cast::<__m256i>()) };
            let quote = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
            let backslash = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
            let control = _mm256_cmpeq_epi8(
                _mm256_max_epu8(v, _mm256_set1_epi8(0x1F)),
                _mm256_set1_epi8(0x1F),
            );
            let m =
                _mm256_movemask_epi8(_mm256_or_si256(_mm256_or_si256(quote, backslash), control))
                    as u32;
            if m != 0 {
                return i + m.trailing_zeros() as usize;
            }
            i += 32;
        }
        sse2_loop(buf, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_rng::Rng;

    fn check(buf: &[u8]) {
        for from in 0..=buf.len() {
            let want = string_stop_bytes(buf, from);
            assert_eq!(string_stop_scalar(buf, from), want, "scalar {buf:?} {from}");
            assert_eq!(string_stop(buf, from), want, "dispatch {buf:?} {from}");
            if let Some(got) = string_stop_sse2(buf, from) {
                assert_eq!(got, want, "sse2 {buf:?} {from}");
            }
            if let Some(got) = string_stop_avx2(buf, from) {
                assert_eq!(got, want, "avx2 {buf:?} {from}");
            }
        }
    }

    #[test]
    fn to_str_agrees_with_the_standard_library() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let pieces: [&[u8]; 10] = [
            b"a",
            b"{\"k\":1}",
            "é".as_bytes(),
            "🚀".as_bytes(),
            "€".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\xed\xa0\x80",
            b"\xf0\x9f",
        ];
        for case in 0..4000 {
            let mut buf = Vec::new();
            // Long ASCII runs, so windows and 64-byte blocks both get crossed.
            let n = (rng.next() % 40) as usize;
            for _ in 0..n {
                let r = rng.next();
                if r % 5 == 0 {
                    let valid = case % 3 != 0;
                    let k = (r >> 8) as usize % if valid { 5 } else { pieces.len() };
                    buf.extend_from_slice(pieces[k]);
                } else {
                    buf.extend(std::iter::repeat_n(b'x', (r >> 16) as usize % 80));
                }
            }
            let want = std::str::from_utf8(&buf).map_err(|e| e.valid_up_to());
            assert_eq!(to_str(&buf), want, "{buf:?}");
        }
    }

    #[test]
    fn every_stop_byte_at_every_position() {
        // Each stop class and its neighbours (0x1F/0x20, 0x7F, high bytes that are negative as
        // signed i8) at every offset of a 70-byte run: crosses the 16- and 32-byte lanes.
        for stop in [
            0u8, 0x1F, b'"', b'\\', 0x20, 0x7F, 0x80, 0xFF, b'!', b'#', b'[',
        ] {
            for at in 0..70 {
                let mut buf = vec![b'a'; 70];
                buf[at] = stop;
                check(&buf);
            }
        }
    }

    #[test]
    fn random_buffers_agree() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet = [
            b'a', b'"', b'\\', 0x00, 0x1F, 0x20, 0x7F, 0x80, 0xC3, 0xFF, b'{',
        ];
        for _ in 0..3000 {
            let len = (rng.next() % 100) as usize;
            // Mostly plain bytes, so hits land past the first vectors too.
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r % 23 == 0 {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    } else {
                        b'a' + (r >> 16) as u8 % 26
                    }
                })
                .collect();
            check(&buf);
        }
    }
}
