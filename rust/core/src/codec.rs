//! The one binary codec of the core: little-endian fixed-width integers and floats, `u32`
//! length prefixes, and LEB128 varints (with zigzag for signed values). Snapshots (`snapshot`)
//! and sketches (`sketch`) both encode with [`Writer`]/[`put_varint`] and decode with
//! [`Reader`].
//!
//! Guarantees: every read is bounds-checked and reports where it stopped ([`DecodeError`]), so
//! truncated or hostile input is refused, never a panic; a varint has exactly one accepted byte
//! form (overlong encodings and values over 64 bits are refused), so a decoded value re-encodes
//! to the same bytes. Each user turns a [`DecodeError`] into its own error text.

/// Why a read failed; `at` is the reader's position when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes left than the read needs.
    Truncated { at: usize },
    /// A length prefix of `n` elements that cannot fit in the bytes left.
    Length { n: usize, at: usize },
    /// An overlong or over-64-bit LEB128 varint.
    Varint { at: usize },
}

/// Appends `v` as LEB128.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes [`put_varint`] writes for `v`.
#[inline]
#[must_use]
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Maps a signed value to an unsigned one with small magnitudes kept small.
#[inline]
#[must_use]
pub fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

/// The inverse of [`zigzag`]; `None` for a value over 32 bits.
#[inline]
#[must_use]
pub fn unzigzag(v: u64) -> Option<i32> {
    let v = u32::try_from(v).ok()?;
    Some(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// An encoder appending to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    pub out: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// `b` with a `u32` length prefix.
    pub fn prefixed(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
    }
    pub fn u64s(&mut self, v: &[u64]) {
        for x in v {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn i64s(&mut self, v: &[i64]) {
        for x in v {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn u32s(&mut self, v: &[u32]) {
        for x in v {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn f64s(&mut self, v: &[f64]) {
        for x in v {
            self.out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// A bounds-checked decoder over a byte slice; `pos` is the next byte to read.
#[derive(Debug)]
pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    #[must_use]
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Refuses a read of `n` bytes that the input cannot hold (checked before allocating).
    #[inline]
    pub fn need(&self, n: usize) -> Result<(), DecodeError> {
        if n > self.buf.len() - self.pos {
            return Err(DecodeError::Truncated { at: self.pos });
        }
        Ok(())
    }

    /// The next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.need(n)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    #[inline]
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }

    #[inline]
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }

    #[inline]
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// LEB128; rejects overlong encodings so every value has exactly one byte form.
    #[inline]
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if (shift == 63 && b > 1) || (shift > 0 && b == 0) {
                return Err(DecodeError::Varint { at: start });
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    /// Bytes written by [`Writer::prefixed`] (a `u32` length prefix).
    pub fn prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    /// A `u32` element count, refused when `n` elements of `elem_size` bytes cannot fit in the
    /// bytes left (so no allocation is sized by a corrupt count).
    pub fn count(&mut self, elem_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(elem_size) > self.buf.len() - self.pos {
            return Err(DecodeError::Length { n, at: self.pos });
        }
        Ok(n)
    }

    pub fn u64s(&mut self, n: usize) -> Result<Vec<u64>, DecodeError> {
        Ok(self
            .bytes(
                n.checked_mul(8)
                    .ok_or(DecodeError::Truncated { at: self.pos })?,
            )?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    pub fn i64s(&mut self, n: usize) -> Result<Vec<i64>, DecodeError> {
        Ok(self
            .bytes(
                n.checked_mul(8)
                    .ok_or(DecodeError::Truncated { at: self.pos })?,
            )?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }

    pub fn u32s(&mut self, n: usize) -> Result<Vec<u32>, DecodeError> {
        Ok(self
            .bytes(
                n.checked_mul(4)
                    .ok_or(DecodeError::Truncated { at: self.pos })?,
            )?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }

    pub fn f64s(&mut self, n: usize) -> Result<Vec<f64>, DecodeError> {
        Ok(self
            .bytes(
                n.checked_mul(8)
                    .ok_or(DecodeError::Truncated { at: self.pos })?,
            )?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_have_one_form() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut r = Reader::new(&out);
            assert_eq!(r.varint(), Ok(v));
            assert_eq!(r.pos, out.len());
        }
        // 0 written in two bytes, and a 10th byte over 64 bits.
        assert_eq!(
            Reader::new(&[0x80, 0x00]).varint(),
            Err(DecodeError::Varint { at: 0 })
        );
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            Reader::new(&over).varint(),
            Err(DecodeError::Varint { at: 0 })
        );
    }

    #[test]
    fn zigzag_round_trips() {
        for v in [0, 1, -1, i32::MAX, i32::MIN] {
            assert_eq!(unzigzag(u64::from(zigzag(v))), Some(v));
        }
        assert_eq!(unzigzag(u64::from(u32::MAX) + 1), None);
    }

    #[test]
    fn reads_are_bounds_checked() {
        let mut w = Writer::default();
        w.prefixed(b"abc");
        w.u32(7);
        let mut r = Reader::new(&w.out);
        assert_eq!(r.prefixed(), Ok(&b"abc"[..]));
        assert_eq!(r.count(1), Err(DecodeError::Length { n: 7, at: 11 }));
        let mut r = Reader::new(&w.out[..5]);
        assert_eq!(r.prefixed(), Err(DecodeError::Truncated { at: 4 }));
        assert_eq!(
            Reader::new(&[1, 2]).u64s(usize::MAX),
            Err(DecodeError::Truncated { at: 0 })
        );
    }
}
