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

#[cfg(target_arch = "x86_64")]
// The `loadu` intrinsics take `*const __m128i`/`__m256i` but read unaligned memory by contract,
// so the casts from `*const u8` need no alignment.
#[allow(clippy::cast_ptr_alignment)]
mod x86 {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_max_epu8,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8, _mm_cmpeq_epi8, _mm_loadu_si128,
        _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
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
