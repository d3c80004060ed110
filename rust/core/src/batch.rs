//! Batch scanning: validates a whole batch and extracts only the paths some filter reads.
//!
//! Guarantees:
//! - Every byte of the batch is validated as JSON (RFC 8259) and UTF-8, including the parts that no
//!   path reads; the first problem is reported with its byte offset. Nothing is returned for a
//!   batch that fails, so a caller can treat batches atomically.
//! - Values are extracted in one pass with a path trie: members no path reads are skipped by a
//!   validating scanner without building anything.
//! - Nesting is limited to [`MAX_DEPTH`] levels and skipping is iterative, so hostile input cannot
//!   overflow the stack. Duplicate keys: the last occurrence wins.

use std::borrow::Cow;
use std::marker::PhantomData;

use crate::error::Error;

/// Scanner results carry a boxed error: the hot functions return `Result`s on every token, and
/// an 8-byte error keeps them in registers instead of spilling an 80-byte enum to the stack.
pub type Result<T, E = Box<Error>> = std::result::Result<T, E>;
use crate::path::{Path, Segment};
pub use crate::scan::{Native, StringSearch};
use crate::value::{json_number_end, NumberFault, Value};

/// Deepest container nesting accepted anywhere in a batch.
pub const MAX_DEPTH: usize = 512;

/// A trie of paths relative to one object (the event or a flattened element).
#[derive(Debug, Clone)]
pub struct PathTrie {
    nodes: Vec<TrieNode>,
}

impl Default for PathTrie {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone)]
struct TrieNode {
    slot: Option<u32>,
    /// A collision-free hash of the member names (see [`TrieNode::rehash`]): `table[bucket]` is
    /// 1 + the index in `keys` of the only name that can match, 0 for none. `mult == 0` means no
    /// such hash was found and lookups scan `keys`.
    mult: u64,
    table: [u8; 64],
    /// Bit `min(len, 63)` is set for the length `len` of each member name: most names in the
    /// input are read by no path, and most of those have a length no name here has, so one bit
    /// test settles them before any hashing.
    lengths: u64,
    /// Slots strictly below this node: cleared when a duplicate key re-enters the subtree, so
    /// the last occurrence wins for nested paths too.
    descendants: Vec<u32>,
    keys: Vec<KeyEntry>,
    indices: Vec<(usize, u32)>,
}

/// A member name of a trie node, with its first eight bytes as a number: a name read from the
/// input is matched by one length and one 64-bit comparison (a byte comparison only past eight
/// bytes), without hashing it or looping over its bytes.
#[derive(Debug, Clone)]
struct KeyEntry {
    len: usize,
    head: u64,
    /// Bytes 8..16 of the name, the same way (0 for names of at most eight bytes): most event
    /// member names are shorter than 16 bytes, so they need no byte loop.
    tail: u64,
    name: Box<[u8]>,
    child: u32,
}

impl KeyEntry {
    fn new(name: &[u8], child: u32) -> Self {
        let len = name.len();
        Self {
            len,
            head: key_head(name, 0, len),
            tail: if len > 8 {
                key_head(name, 8, len - 8)
            } else {
                0
            },
            name: name.into(),
            child,
        }
    }

    /// True when the unescaped name at `buf[start..start + len]` (first eight bytes `head`) is
    /// this name.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn matches(&self, buf: &[u8], start: usize, len: usize, head: u64) -> bool {
        self.len == len
            && self.head == head
            && (len <= 8
                || (self.tail == key_head(buf, start + 8, len - 8)
                    && (len <= 16 || short_eq(&self.name[16..], &buf[start + 16..start + len]))))
    }
}

/// The bucket of a name (its length and first eight bytes) under `mult`: the top six bits of
/// a multiplicative hash.
#[allow(clippy::inline_always)]
#[inline(always)]
fn bucket(head: u64, len: usize, mult: u64) -> usize {
    ((head ^ (len as u64).rotate_right(8)).wrapping_mul(mult) >> 58) as usize
}

/// The first `min(len, 8)` bytes at `buf[at..]` as a little-endian `u64`, zero-padded.
#[allow(clippy::inline_always)]
#[inline(always)]
fn key_head(buf: &[u8], at: usize, len: usize) -> u64 {
    let n = len.min(8);
    if let Some(chunk) = buf.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        if n == 8 {
            x
        } else {
            x & ((1u64 << (8 * n)) - 1)
        }
    } else {
        buf[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

impl Default for TrieNode {
    fn default() -> Self {
        Self {
            slot: None,
            mult: 0,
            table: [0; 64],
            lengths: 0,
            descendants: Vec::new(),
            keys: Vec::new(),
            indices: Vec::new(),
        }
    }
}

impl TrieNode {
    fn is_leaf(&self) -> bool {
        self.keys.is_empty() && self.indices.is_empty()
    }

    /// The child for the unescaped name at `buf[start..end]`: one table probe and one
    /// comparison, whatever the number of names (most input names match none).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn child_raw(&self, buf: &[u8], start: usize, end: usize) -> Option<u32> {
        let len = end - start;
        if self.lengths & (1u64 << len.min(63)) == 0 {
            return None;
        }
        let head = key_head(buf, start, len);
        if self.mult == 0 {
            return self
                .keys
                .iter()
                .find(|e| e.matches(buf, start, len, head))
                .map(|e| e.child);
        }
        match self.table[bucket(head, len, self.mult)] {
            0 => None,
            i => {
                let e = &self.keys[usize::from(i) - 1];
                e.matches(buf, start, len, head).then_some(e.child)
            }
        }
    }

    /// Picks a multiplier that sends every name of this node to its own bucket; a node with
    /// more than 32 names, or two names sharing length and first eight bytes, keeps the scan.
    fn rehash(&mut self) {
        self.mult = 0;
        self.table = [0; 64];
        if self.keys.len() > 32 {
            return;
        }
        // Odd constants from splitmix64's sequence: any odd multiplier is a valid candidate.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..256 {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let mult = (z ^ (z >> 31)) | 1;
            let mut table = [0u8; 64];
            let free = self.keys.iter().enumerate().all(|(i, e)| {
                let b = &mut table[bucket(e.head, e.len, mult)];
                let was_free = *b == 0;
                *b = (i + 1) as u8;
                was_free
            });
            if free {
                self.mult = mult;
                self.table = table;
                return;
            }
        }
    }

    /// The child for a decoded name.
    fn child_named(&self, name: &[u8]) -> Option<u32> {
        self.keys
            .iter()
            .find(|e| e.name.as_ref() == name)
            .map(|e| e.child)
    }
}

impl PathTrie {
    #[must_use]
    pub fn new() -> Self {
        Self {
            nodes: vec![TrieNode::default()],
        }
    }

    /// Registers `path` (its root is ignored: the trie is relative) as `slot`.
    pub fn insert(&mut self, path: &Path, slot: u32) {
        let mut node = 0usize;
        for seg in &path.segments {
            self.nodes[node].descendants.push(slot);
            let next = match seg {
                Segment::Key(k) => self.nodes[node].child_named(k.as_bytes()),
                Segment::Index(i) => self.nodes[node]
                    .indices
                    .iter()
                    .find(|(idx, _)| idx == i)
                    .map(|(_, n)| *n),
            };
            node = if let Some(n) = next {
                n as usize
            } else {
                let n = self.nodes.len() as u32;
                self.nodes.push(TrieNode::default());
                match seg {
                    Segment::Key(k) => {
                        self.nodes[node].keys.push(KeyEntry::new(k.as_bytes(), n));
                        self.nodes[node].lengths |= 1u64 << k.len().min(63);
                        self.nodes[node].rehash();
                    }
                    Segment::Index(i) => self.nodes[node].indices.push((*i, n)),
                }
                n as usize
            };
        }
        self.nodes[node].slot = Some(slot);
    }

    /// True when no path was registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1 && self.nodes[0].slot.is_none()
    }
}

/// A validating JSON scanner over one UTF-8 buffer; offsets are reported relative to `base`.
/// `S` picks the string search (`scan`); every choice accepts, rejects and extracts the same.
pub struct Scanner<'a, S: StringSearch = Native> {
    src: &'a str,
    buf: &'a [u8],
    pos: usize,
    base: usize,
    stack: Vec<u8>,
    /// Containers open around `pos` that the caller (or `extract_at`) entered; bounds the total
    /// nesting of the document, not only of the part being skipped.
    nesting: usize,
    search: PhantomData<S>,
}

impl<'a> Scanner<'a> {
    #[must_use]
    pub fn new(src: &'a str, base: usize) -> Self {
        Self::with_search(src, base)
    }
}

impl<'a, S: StringSearch> Scanner<'a, S> {
    /// A scanner with the string search `S` (tests compare the paths this way).
    #[must_use]
    pub fn with_search(src: &'a str, base: usize) -> Self {
        Self {
            src,
            buf: src.as_bytes(),
            pos: 0,
            base,
            stack: Vec::new(),
            nesting: 0,
            search: PhantomData,
        }
    }

    /// Declares how many containers enclose the text this scanner reads.
    pub fn set_nesting(&mut self, nesting: usize) {
        self.nesting = nesting;
    }

    /// Enters a container at `pos` (already checked to be `{` or `[`).
    pub fn enter(&mut self) -> Result<()> {
        if self.nesting >= MAX_DEPTH {
            return Err(self.err(self.pos, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.nesting += 1;
        self.pos += 1;
        Ok(())
    }

    /// Leaves a container entered with [`Scanner::enter`] (the closing byte is at `pos`).
    pub fn leave(&mut self) {
        self.nesting -= 1;
        self.pos += 1;
    }

    /// The text this scanner reads.
    #[must_use]
    pub fn source(&self) -> &'a str {
        self.src
    }

    /// Offset of the text's first byte in the caller's input.
    #[must_use]
    pub fn base(&self) -> usize {
        self.base
    }

    /// Points the scanner at another slice of the same batch, keeping its buffers.
    pub fn rebase(&mut self, src: &'a str, base: usize) {
        self.src = src;
        self.buf = src.as_bytes();
        self.pos = 0;
        self.base = base;
    }

    #[must_use]
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn set_position(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// A JSON error at the current position.
    #[must_use]
    pub fn error_here(&self, reason: &str) -> Error {
        *self.err(self.pos, reason)
    }

    // Boxed on purpose: see `Result` above.
    #[allow(clippy::unnecessary_box_returns)]
    #[cold]
    fn err(&self, at: usize, reason: impl Into<String>) -> Box<Error> {
        Box::new(Error::Json {
            offset: self.base + at,
            reason: reason.into(),
        })
    }

    // Measured: forcing these two into every caller is worth ~20 % of scan time (plain
    // `#[inline]` leaves them out of the hot loops).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn skip_ws(&mut self) {
        // Compact JSON (what Segment sends) has no whitespace: one comparison on the fast path.
        if self.buf.get(self.pos).is_some_and(|&b| b > b' ') {
            return;
        }
        while let Some(&b) = self.buf.get(self.pos) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// Skips whitespace and returns the next byte (one bounds check on the compact fast path).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn peek_non_ws(&mut self) -> Option<u8> {
        let b = self.buf.get(self.pos).copied();
        if b.is_some_and(|b| b > b' ') {
            return b;
        }
        self.skip_ws();
        self.peek()
    }

    #[inline]
    #[must_use]
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[must_use]
    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[allow(clippy::unnecessary_box_returns)]
    #[cold]
    fn unexpected(&self, what: &str) -> Box<Error> {
        if self.peek().is_none() {
            self.err(
                self.pos,
                format!("unexpected end of input, expected {what}"),
            )
        } else {
            let ch = self.src[self.pos..].chars().next().unwrap_or('?');
            self.err(
                self.pos,
                format!("unexpected character {ch:?}, expected {what}"),
            )
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<()> {
        if self.peek_non_ws() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(what))
        }
    }

    /// Skips a string whose opening quote is at `pos`; returns (content start, end, has escapes).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn scan_string(&mut self) -> Result<(usize, usize, bool)> {
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            // Vectorised where the CPU allows (`scan`): lands on the stop byte directly.
            i = S::string_stop(self.buf, i);
            match self.buf.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok((start, i, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.buf.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            let hex = self.buf.get(i + 2..i + 6);
                            if hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                i += 6;
                            } else {
                                return Err(self.err(i, "invalid \\u escape in string"));
                            }
                        }
                        Some(_) => return Err(self.err(i, "invalid escape in string")),
                        None => return Err(self.err(start - 1, "unterminated string")),
                    }
                }
                Some(_) => return Err(self.err(i, "control character in string")),
                None => return Err(self.err(start - 1, "unterminated string")),
            }
        }
    }

    fn decode_escapes(&self, start: usize, end: usize) -> String {
        let raw = &self.src[start..end];
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let (_, e) = chars.next().expect("validated escape");
            let decoded = match e {
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                _ => {
                    let hi = u32::from_str_radix(&raw[i + 2..i + 6], 16).expect("validated hex");
                    for _ in 0..4 {
                        chars.next();
                    }
                    let cp = if (0xD800..0xDC00).contains(&hi) {
                        // A high surrogate must be followed by a \u low surrogate.
                        let rest = &raw[i + 6..];
                        let lo = rest
                            .strip_prefix("\\u")
                            .and_then(|r| r.get(..4))
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .filter(|lo| (0xDC00..0xE000).contains(lo));
                        if let Some(lo) = lo {
                            for _ in 0..6 {
                                chars.next();
                            }
                            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            0xFFFD
                        }
                    } else {
                        hi
                    };
                    char::from_u32(cp).unwrap_or('\u{FFFD}')
                }
            };
            out.push(decoded);
        }
        out
    }

    #[inline]
    fn scan_number(&mut self) -> Result<&'a str> {
        let start = self.pos;
        match json_number_end(self.buf, start) {
            Ok(end) => {
                self.pos = end;
                Ok(&self.src[start..end])
            }
            Err((at, fault)) => Err(self.err(
                at,
                match fault {
                    NumberFault::NoIntegerDigits => "invalid number",
                    NumberFault::NoFractionDigits => "invalid number: digit expected after '.'",
                    NumberFault::NoExponentDigits => "invalid number: digit expected in exponent",
                },
            )),
        }
    }

    fn scan_literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self.buf[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.unexpected("a JSON value"))
        }
    }

    /// Skips one value (validating it) and returns, for arrays, their element count.
    pub fn skip_value(&mut self) -> Result<usize> {
        match self.peek_non_ws() {
            Some(b'{' | b'[') => self.skip_container(),
            Some(b'"') => self.scan_string().map(|_| 0),
            Some(b't') => self.scan_literal(b"true").map(|()| 0),
            Some(b'f') => self.scan_literal(b"false").map(|()| 0),
            Some(b'n') => self.scan_literal(b"null").map(|()| 0),
            Some(b'-' | b'0'..=b'9') => self.scan_number().map(|_| 0),
            _ => Err(self.unexpected("a JSON value")),
        }
    }

    /// Iteratively skips an object or array at `pos`; returns the top-level element count.
    ///
    /// Two nested loops instead of a state machine with flags: the outer one is entered right
    /// inside a container (its close or a first element follows), the inner one reads one
    /// element and what follows it, so each token costs one dispatch on its first byte.
    fn skip_container(&mut self) -> Result<usize> {
        self.stack.clear();
        if self.nesting >= MAX_DEPTH {
            return Err(self.err(self.pos, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let mut top_count = 0usize;
        // The compact prefix: done, or resumed at an element after a `,`, where the inner loop
        // below would be after that element (so `{"a":1,}` still fails there).
        let mut resumed = false;
        match self.flat_compact(self.pos) {
            Flat::Done { end, count } => {
                self.pos = end;
                return Ok(count);
            }
            Flat::At { pos, count } => {
                self.stack.push(self.buf[self.pos]);
                self.pos = pos;
                top_count = count;
                resumed = true;
            }
            Flat::No => {
                self.stack.push(self.buf[self.pos]);
                self.pos += 1;
            }
        }
        'open: loop {
            if !std::mem::take(&mut resumed) {
                self.skip_ws();
                let top = *self.stack.last().expect("an open container");
                // `{` + 2 is `}` and `[` + 2 is `]`.
                if self.peek() == Some(top + 2) {
                    self.pos += 1;
                    self.stack.pop();
                    if self.after_value()? {
                        return Ok(top_count);
                    }
                }
            }
            loop {
                let top = *self.stack.last().expect("an open container");
                if self.stack.len() == 1 {
                    top_count += 1;
                }
                if top == b'{' {
                    // A compact `"name":` (and a plain string value) on local positions, as in
                    // `compact_member`; the token code reads anything else from the same place.
                    let (b, p) = (self.buf, self.pos);
                    let name_end = (S::COMPACT_SHORTCUTS && b.get(p) == Some(&b'"'))
                        .then(|| S::string_stop(b, p + 1));
                    if let Some(ke) = name_end.filter(|&ke| b.get(ke..ke + 2) == Some(b"\":")) {
                        self.pos = ke + 2;
                        if b.get(ke + 2) == Some(&b'"') {
                            let ve = S::string_stop(b, ke + 3);
                            if b.get(ve) == Some(&b'"') {
                                self.pos = ve + 1;
                                if self.after_value()? {
                                    return Ok(top_count);
                                }
                                continue;
                            }
                        }
                    } else {
                        if self.peek_non_ws() != Some(b'"') {
                            return Err(self.unexpected("a member name string"));
                        }
                        self.scan_string()?;
                        if self.peek_non_ws() != Some(b':') {
                            return Err(self.unexpected("':' after member name"));
                        }
                        self.pos += 1;
                    }
                }
                match self.peek_non_ws() {
                    Some(open @ (b'{' | b'[')) => {
                        if self.nesting + self.stack.len() >= MAX_DEPTH {
                            return Err(self
                                .err(self.pos, format!("nesting deeper than {MAX_DEPTH} levels")));
                        }
                        self.stack.push(open);
                        self.pos += 1;
                        continue 'open;
                    }
                    Some(b'"') => {
                        self.scan_string()?;
                    }
                    Some(b't') => self.scan_literal(b"true")?,
                    Some(b'f') => self.scan_literal(b"false")?,
                    Some(b'n') => self.scan_literal(b"null")?,
                    Some(b'-' | b'0'..=b'9') => {
                        self.scan_number()?;
                    }
                    _ => return Err(self.unexpected("a JSON value")),
                }
                if self.after_value()? {
                    return Ok(top_count);
                }
            }
        }
    }

    /// The compact prefix of the container at `start` (`{`/`[` checked by the caller), on local
    /// positions: the flat elements without whitespace or escapes (`"name":"Apple"`,
    /// `"version":3`, `true`, `0.5`) that open it. [`Flat::Done`] when they make the whole
    /// container, with its end and element count exactly as the token loop of
    /// [`Scanner::skip_container`] would find them; [`Flat::At`] at the first element that is
    /// not one (nested, spaced, escaped or invalid), after a `,`; [`Flat::No`] when even the
    /// first is not. The token loop reads on from there, so errors and offsets are its own.
    fn flat_compact(&self, start: usize) -> Flat {
        if !S::COMPACT_SHORTCUTS {
            return Flat::No;
        }
        let b = self.buf;
        let object = b[start] == b'{';
        let close = if object { b'}' } else { b']' };
        let mut p = start + 1;
        if b.get(p) == Some(&close) {
            return Flat::Done {
                end: p + 1,
                count: 0,
            };
        }
        let mut count = 0usize;
        loop {
            let stop = if count == 0 {
                Flat::No
            } else {
                Flat::At { pos: p, count }
            };
            let mut q = p;
            if object {
                if b.get(q) != Some(&b'"') {
                    return stop;
                }
                let ke = S::string_stop(b, q + 1);
                if b.get(ke..ke + 2) != Some(b"\":") {
                    return stop;
                }
                q = ke + 2;
            }
            let end = match b.get(q) {
                Some(b'"') => {
                    let ve = S::string_stop(b, q + 1);
                    (b.get(ve) == Some(&b'"')).then_some(ve + 1)
                }
                Some(b't') => b[q..].starts_with(b"true").then_some(q + 4),
                Some(b'f') => b[q..].starts_with(b"false").then_some(q + 5),
                Some(b'n') => b[q..].starts_with(b"null").then_some(q + 4),
                Some(b'-' | b'0'..=b'9') => json_number_end(b, q).ok(),
                _ => None,
            };
            let Some(end) = end else { return stop };
            match b.get(end) {
                Some(b',') => {
                    count += 1;
                    p = end + 1;
                }
                Some(&c) if c == close => {
                    return Flat::Done {
                        end: end + 1,
                        count: count + 1,
                    }
                }
                _ => return stop,
            }
        }
    }

    /// After a value inside [`Scanner::skip_container`]: consumes closing brackets up to a `,`
    /// (false: an element of the innermost open container follows) or up to the outermost
    /// close (true: done).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn after_value(&mut self) -> Result<bool> {
        loop {
            let Some(&top) = self.stack.last() else {
                return Ok(true);
            };
            match self.peek_non_ws() {
                Some(b',') => {
                    self.pos += 1;
                    return Ok(false);
                }
                Some(c) if c == top + 2 => {
                    self.pos += 1;
                    self.stack.pop();
                }
                _ => {
                    return Err(self.unexpected(if top == b'{' {
                        "',' or '}'"
                    } else {
                        "',' or ']'"
                    }))
                }
            }
        }
    }

    /// Reads one value at `pos` as a [`Value`] (containers are skipped and kept raw).
    // Measured: forced inline into the member loop's leaf reads, a call less per read path
    // (about 80 instructions an event fewer on segment_gen).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub fn read_value(&mut self) -> Result<Value<'a>> {
        // Strings, the common case, inline in the caller; the rest out of line.
        if self.peek_non_ws() == Some(b'"') {
            let (s, e, escaped) = self.scan_string()?;
            return Ok(if escaped {
                Value::Str(Cow::Owned(self.decode_escapes(s, e)))
            } else {
                Value::Str(Cow::Borrowed(&self.src[s..e]))
            });
        }
        self.read_other_value()
    }

    fn read_other_value(&mut self) -> Result<Value<'a>> {
        let start = self.pos;
        Ok(match self.peek() {
            Some(b'[') => {
                let len = self.skip_container()?;
                Value::Array {
                    raw: &self.src[start..self.pos],
                    len,
                }
            }
            Some(b'{') => {
                self.skip_container()?;
                Value::Object {
                    raw: &self.src[start..self.pos],
                }
            }
            Some(b't') => {
                self.scan_literal(b"true")?;
                Value::Bool(true)
            }
            Some(b'f') => {
                self.scan_literal(b"false")?;
                Value::Bool(false)
            }
            Some(b'n') => {
                self.scan_literal(b"null")?;
                Value::Null
            }
            Some(b'-' | b'0'..=b'9') => Value::Number(self.scan_number()?),
            _ => return Err(self.unexpected("a JSON value")),
        })
    }

    /// Extracts the trie's paths from the object at `pos` into `slots` (which the caller has
    /// reset to `None`). Returns an error for invalid JSON anywhere in the object.
    pub fn extract_object(
        &mut self,
        trie: &PathTrie,
        slots: &mut [Option<Value<'a>>],
    ) -> Result<()> {
        self.extract_at(trie, 0, slots)
    }

    /// The common members of compact JSON, `"name":value` with a plain name (no escape, no
    /// whitespace), read on local copies of the position. Members no path reads whose value is
    /// a plain string are skipped as a
    /// run: each one and the `,` after it, on to the next such member ([`Compact::Skipped`],
    /// the last skipped value's end, where a `,` does not follow). The first member of the run
    /// that a path reads, or whose value is not a plain string, has its name resolved and
    /// its value left to the caller ([`Compact::Named`], at the value; the `,` before it is
    /// consumed). Anything else stops the run before it: nothing of it is consumed, and the
    /// caller's token-by-token code reads from that position (after the last skipped value,
    /// or [`Compact::No`] at the first member), so errors and their offsets are its own.
    ///
    /// Skipping unread members changes no slot (only read members clear their subtree), so
    /// the last-duplicate-wins rule is untouched.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn compact_member(&self, node: &TrieNode) -> Compact {
        if !S::COMPACT_SHORTCUTS {
            return Compact::No;
        }
        let b = self.buf;
        let mut p = self.pos;
        let mut stop = Compact::No;
        loop {
            if b.get(p) != Some(&b'"') {
                return stop;
            }
            let ke = S::string_stop(b, p + 1);
            if b.get(ke..ke + 2) != Some(b"\":") {
                return stop;
            }
            let value = ke + 2;
            let child = node.child_raw(b, p + 1, ke);
            if child.is_some() {
                return Compact::Named { child, value };
            }
            if b.get(value) == Some(&b'"') {
                let ve = S::string_stop(b, value + 1);
                if b.get(ve) == Some(&b'"') {
                    let end = ve + 1;
                    if b.get(end) != Some(&b',') {
                        return Compact::Skipped(end);
                    }
                    stop = Compact::Skipped(end);
                    p = end + 1;
                    continue;
                }
            }
            return Compact::Named { child, value };
        }
    }

    fn extract_at(
        &mut self,
        trie: &PathTrie,
        node_idx: usize,
        slots: &mut [Option<Value<'a>>],
    ) -> Result<()> {
        let node = &trie.nodes[node_idx];
        self.skip_ws();
        let start = self.pos;
        if node.is_leaf() {
            let v = self.read_value()?;
            if let Some(slot) = node.slot {
                slots[slot as usize] = Some(v);
            }
            return Ok(());
        }
        match self.peek() {
            Some(b'{') if !node.keys.is_empty() => {
                self.enter()?;
                if self.peek_non_ws() == Some(b'}') {
                    self.leave();
                } else {
                    loop {
                        let child = match self.compact_member(node) {
                            Compact::Skipped(end) => {
                                self.pos = end;
                                None
                            }
                            Compact::Named { child, value } => {
                                self.pos = value;
                                if child.is_none() {
                                    // Unread containers (most unread non-strings) go straight
                                    // to the container skip, compact numbers and literals are
                                    // skipped here (measured: checking them inside the string
                                    // run cost shaped_gen ~100 instructions an event), the rest
                                    // through `skip_value`, which reports their errors.
                                    match self.buf.get(value) {
                                        Some(b'{' | b'[') => {
                                            self.skip_container()?;
                                        }
                                        _ => match compact_other_end(self.buf, value) {
                                            Some(end) => self.pos = end,
                                            None => {
                                                self.skip_value()?;
                                            }
                                        },
                                    }
                                }
                                child
                            }
                            Compact::No => {
                                if self.peek_non_ws() != Some(b'"') {
                                    return Err(self.unexpected("a member name string"));
                                }
                                let (ks, ke, escaped) = self.scan_string()?;
                                self.expect(b':', "':' after member name")?;
                                let child = if escaped {
                                    node.child_named(self.decode_escapes(ks, ke).as_bytes())
                                } else {
                                    node.child_raw(self.buf, ks, ke)
                                };
                                if child.is_none() {
                                    // Most unread members are strings: skipped inline.
                                    if self.peek_non_ws() == Some(b'"') {
                                        self.scan_string()?;
                                    } else {
                                        self.skip_value()?;
                                    }
                                }
                                child
                            }
                        };
                        if let Some(c) = child {
                            let cn = &trie.nodes[c as usize];
                            for &s in &cn.descendants {
                                slots[s as usize] = None;
                            }
                            // Leaves (most read paths) are read here, without a recursive
                            // call and its frame.
                            if cn.is_leaf() {
                                let v = self.read_value()?;
                                if let Some(slot) = cn.slot {
                                    slots[slot as usize] = Some(v);
                                }
                            } else {
                                self.extract_at(trie, c as usize, slots)?;
                            }
                        }
                        match self.peek_non_ws() {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.leave();
                                break;
                            }
                            _ => return Err(self.unexpected("',' or '}'")),
                        }
                    }
                }
                if let Some(slot) = node.slot {
                    slots[slot as usize] = Some(Value::Object {
                        raw: &self.src[start..self.pos],
                    });
                }
            }
            Some(b'[') if !node.indices.is_empty() => {
                self.enter()?;
                self.skip_ws();
                let mut index = 0usize;
                if self.peek() == Some(b']') {
                    self.leave();
                } else {
                    loop {
                        let child = node
                            .indices
                            .iter()
                            .find(|(i, _)| *i == index)
                            .map(|(_, c)| *c);
                        match child {
                            Some(c) => self.extract_at(trie, c as usize, slots)?,
                            None => {
                                self.skip_value()?;
                            }
                        }
                        index += 1;
                        match self.peek_non_ws() {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.leave();
                                break;
                            }
                            _ => return Err(self.unexpected("',' or ']'")),
                        }
                    }
                }
                if let Some(slot) = node.slot {
                    slots[slot as usize] = Some(Value::Array {
                        raw: &self.src[start..self.pos],
                        len: index,
                    });
                }
            }
            _ => {
                let v = self.read_value()?;
                if let Some(slot) = node.slot {
                    slots[slot as usize] = Some(v);
                }
            }
        }
        Ok(())
    }
}

/// How far [`Scanner::flat_compact`] read a container.
enum Flat {
    /// The whole container: one past its close, and its element count.
    Done { end: usize, count: usize },
    /// `count` elements and their commas, up to the element at `pos`.
    At { pos: usize, count: usize },
    /// Not even the first element.
    No,
}

/// What [`Scanner::compact_member`] did with the member at the scanner's position.
enum Compact {
    /// A run of unread members with plain string values, skipped up to the last one's end.
    Skipped(usize),
    /// A plain name followed by `:` (the first member, or one after a skipped run and its
    /// `,`): its child (if a path reads it) and where its value starts.
    Named { child: Option<u32>, value: usize },
    /// Not the compact form: nothing was consumed.
    No,
}

/// The end of a compact number or literal at `at`, exactly where the token code would end it;
/// `None` for anything else (the token code reads it and reports its errors).
#[allow(clippy::inline_always)]
#[inline(always)]
fn compact_other_end(b: &[u8], at: usize) -> Option<usize> {
    match b.get(at) {
        Some(b'-' | b'0'..=b'9') => json_number_end(b, at).ok(),
        Some(b't') => b[at..].starts_with(b"true").then_some(at + 4),
        Some(b'f') => b[at..].starts_with(b"false").then_some(at + 5),
        Some(b'n') => b[at..].starts_with(b"null").then_some(at + 4),
        _ => None,
    }
}

/// Byte-slice equality without a `memcmp` call: member names are short, and most candidates
/// already differ in length.
#[allow(clippy::inline_always)]
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Checks UTF-8 and strips a leading BOM; returns the text and the number of bytes skipped.
pub fn decode_utf8(data: &[u8]) -> crate::error::Result<(&str, usize)> {
    let (body, skipped) = match data.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, 3),
        None => (data, 0),
    };
    match crate::scan::to_str(body) {
        Ok(s) => Ok((s, skipped)),
        Err(valid_up_to) => Err(Error::Json {
            offset: skipped + valid_up_to,
            reason: "invalid UTF-8".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Root;

    fn path(keys: &[&str]) -> Path {
        Path::new(
            Root::Current,
            keys.iter()
                .map(|k| {
                    k.parse::<usize>()
                        .map_or_else(|_| Segment::Key((*k).to_owned()), Segment::Index)
                })
                .collect(),
        )
    }

    fn extract<'a>(src: &'a str, paths: &[&[&str]]) -> Result<Vec<Option<Value<'a>>>> {
        let mut trie = PathTrie::new();
        for (i, p) in paths.iter().enumerate() {
            trie.insert(&path(p), i as u32);
        }
        let mut slots = vec![None; paths.len()];
        let mut sc = Scanner::new(src, 0);
        sc.skip_ws();
        sc.extract_object(&trie, &mut slots)?;
        Ok(slots)
    }

    #[test]
    fn extracts_nested_and_indexed_paths() {
        let src = r#"{"a": {"b": "x\u00e9", "c": [1, {"d": true}]}, "e": -1.5e3, "skip": {"q": [[],{}]}}"#;
        let got = extract(
            src,
            &[
                &["a", "b"],
                &["a", "c", "1", "d"],
                &["e"],
                &["a", "c"],
                &["zz"],
            ],
        )
        .unwrap();
        assert_eq!(got[0], Some(Value::Str(Cow::Owned("xé".into()))));
        assert_eq!(got[1], Some(Value::Bool(true)));
        assert_eq!(got[2], Some(Value::Number("-1.5e3")));
        assert_eq!(
            got[3],
            Some(Value::Array {
                raw: "[1, {\"d\": true}]",
                len: 2
            })
        );
        assert_eq!(got[4], None);
    }

    #[test]
    fn last_duplicate_wins() {
        let got = extract(r#"{"a": 1, "a": 2}"#, &[&["a"]]).unwrap();
        assert_eq!(got[0], Some(Value::Number("2")));
    }

    #[test]
    fn surrogate_pairs_and_escaped_keys() {
        let got = extract(r#"{"k\u0065y": "\ud83d\ude80"}"#, &[&["key"]]).unwrap();
        assert_eq!(got[0], Some(Value::Str(Cow::Owned("🚀".into()))));
    }

    #[test]
    fn rejects_malformed_with_offsets() {
        for (src, offset) in [
            (r#"{"a": tru}"#, 6),
            (r#"{"a": 1,}"#, 8),
            (r#"{"a" 1}"#, 5),
            (r#"{"skip": [1 2]}"#, 12),
            (r#"{"skip": "x\q"}"#, 11),
            (r#"{"skip": 01}"#, 10),
            ("{\"skip\": \"a\nb\"}", 11),
            (r#"{"a": 1"#, 7),
        ] {
            match extract(src, &[&["a"]]).map_err(|e| *e) {
                Err(Error::Json { offset: o, .. }) => assert_eq!(o, offset, "{src}"),
                other => panic!("{src}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!("{{\"x\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            extract(&src, &[&["a"]]).map_err(|e| *e),
            Err(Error::Json { .. })
        ));
        let ok = format!("{{\"x\": {}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(extract(&ok, &[&["a"]]).is_ok());
    }

    use crate::test_rng::Rng;

    const KEYS: [&str; 6] = [
        "a",
        "b",
        "s",
        "k",
        "long_member_name_past_sixteen",
        "k\\u0065",
    ];

    fn gen_string(rng: &mut Rng, out: &mut String) {
        out.push('"');
        let len = [0, 3, 15, 16, 17, 31, 33, 70][rng.below(8)];
        for _ in 0..len {
            match rng.below(40) {
                0 => out.push_str("\\\""),
                1 => out.push_str("\\\\"),
                2 => out.push_str("\\u00e9"),
                3 => out.push_str("\\ud83d\\ude80"),
                4 => out.push('é'),
                5 => out.push('🚀'),
                6 => out.push_str("\\n"),
                _ => out.push(char::from(b'a' + rng.below(26) as u8)),
            }
        }
        out.push('"');
    }

    fn gen_value(rng: &mut Rng, depth: usize, out: &mut String) {
        gen_value_spaced(rng, depth, out, true);
    }

    /// A random value; `spaced` puts whitespace between tokens now and then (off: compact JSON,
    /// as Segment sends it, where the scanner's compact fast roads run).
    fn gen_value_spaced(rng: &mut Rng, depth: usize, out: &mut String, spaced: bool) {
        let ws = |rng: &mut Rng, out: &mut String| {
            if spaced && rng.below(6) == 0 {
                out.push_str([" ", "\n", "\t ", "\r\n  "][rng.below(4)]);
            }
        };
        match if depth > 4 {
            rng.below(6)
        } else {
            rng.below(8)
        } {
            1 => out.push_str(["0", "-1", "12.5", "1e10", "-0.0E+3", "3.25e-2"][rng.below(6)]),
            2 => out.push_str(["true", "false", "null"][rng.below(3)]),
            0 | 3..=5 => gen_string(rng, out),
            6 => {
                out.push('[');
                for i in 0..rng.below(5) {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(rng, out);
                    gen_value_spaced(rng, depth + 1, out, spaced);
                    ws(rng, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for i in 0..rng.below(6) {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(rng, out);
                    out.push('"');
                    out.push_str(KEYS[rng.below(KEYS.len())]);
                    out.push('"');
                    ws(rng, out);
                    out.push(':');
                    ws(rng, out);
                    gen_value_spaced(rng, depth + 1, out, spaced);
                }
                out.push('}');
            }
        }
    }

    /// One byte changed, inserted or removed, keeping the text UTF-8 (the scanner takes `&str`).
    fn mutate(rng: &mut Rng, doc: &str) -> String {
        let mut bytes = doc.as_bytes().to_vec();
        let at = rng.below(bytes.len() + 1);
        let interesting = b"\"\\{}[],:0-.eE+tfnu \x01\x1fx";
        let b = interesting[rng.below(interesting.len())];
        match rng.below(3) {
            0 if at < bytes.len() => bytes[at] = b,
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, b),
        }
        String::from_utf8(bytes).unwrap_or_else(|_| doc.to_owned())
    }

    /// Extracted slots, the element count `skip_value` reported, and where the scanner stopped.
    type Outcome<'a> = std::result::Result<(Vec<Option<Value<'a>>>, usize, usize), Error>;

    fn run<'a, S: StringSearch>(src: &'a str, trie: &PathTrie, n: usize) -> Outcome<'a> {
        let mut slots = vec![None; n];
        let mut sc = Scanner::<S>::with_search(src, 7);
        sc.skip_ws();
        let r = if sc.peek() == Some(b'{') {
            sc.extract_object(trie, &mut slots).map(|()| 0)
        } else {
            sc.skip_value()
        };
        r.map(|count| (slots, count, sc.position())).map_err(|e| *e)
    }

    #[test]
    fn raw_name_lookup_equals_exact_comparison() {
        // Names of every length around the 8- and 16-byte words, a node small enough for the
        // hash table and one too large for it (> 32 names: the linear scan).
        let alphabet = "abcdefghijklmnopqrstuvwxyz";
        for extra in [0usize, 40] {
            let mut names: Vec<String> = (0..=20).map(|n| alphabet[..n].to_owned()).collect();
            names.extend((0..extra).map(|i| format!("filler_{i}")));
            // Names past the length bitmap's last bit (63 and longer share it).
            names.extend(["x".repeat(64), "x".repeat(70)]);
            let mut trie = PathTrie::new();
            for (i, n) in names.iter().enumerate() {
                trie.insert(&path(&[n.as_str()]), i as u32);
            }
            let root = &trie.nodes[0];
            assert_eq!(root.mult == 0, extra > 0);
            let mut candidates = names.clone();
            for n in 0..=21 {
                let base = &alphabet[..n];
                for at in 0..n {
                    let mut b = base.as_bytes().to_vec();
                    b[at] = b'Z';
                    candidates.push(String::from_utf8(b).expect("ascii"));
                }
                candidates.push(format!("{base}a"));
            }
            candidates.extend([62, 63, 64, 65, 70, 71].map(|n| "x".repeat(n)));
            for c in &candidates {
                let want = root.child_named(c.as_bytes());
                // In the middle of a buffer (8-byte loads) and at its very end (the byte fold).
                for (pre, post) in [("xx\"", "\":1,\"padding-bytes\""), ("\"", "")] {
                    let buf = format!("{pre}{c}{post}");
                    let start = pre.len();
                    let got = root.child_raw(buf.as_bytes(), start, start + c.len());
                    assert_eq!(got, want, "{c:?} in {buf:?}");
                }
            }
        }
    }

    #[test]
    fn string_search_paths_agree_on_accept_reject_offsets_and_answers() {
        let paths: [&[&str]; 6] = [
            &["a"],
            &["a", "b"],
            &["k", "1"],
            &["key"],
            &["long_member_name_past_sixteen", "s"],
            &["s"],
        ];
        let mut trie = PathTrie::new();
        for (i, p) in paths.iter().enumerate() {
            trie.insert(&path(p), i as u32);
        }
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let (mut accepted, mut rejected) = (0, 0);
        for case in 0..4000 {
            let mut doc = String::new();
            gen_value(&mut rng, 0, &mut doc);
            let mutated = case % 2 == 1;
            if mutated {
                for _ in 0..=rng.below(2) {
                    doc = mutate(&mut rng, &doc);
                }
            }
            let want = run::<crate::scan::Scalar>(&doc, &trie, paths.len());
            assert_eq!(
                run::<crate::scan::Sse2>(&doc, &trie, paths.len()),
                want,
                "{doc}"
            );
            assert_eq!(
                run::<crate::scan::Avx2>(&doc, &trie, paths.len()),
                want,
                "{doc}"
            );
            assert_eq!(run::<Native>(&doc, &trie, paths.len()), want, "{doc}");
            // serde_json judges accept/reject independently (its recursion limit of 128 is far
            // above the generator's depth). A rejected value is invalid JSON for it too; an
            // accepted whole document is valid unless a mutation left a lone surrogate escape,
            // which this scanner accepts by design (decoded as U+FFFD).
            let serde = serde_json::from_str::<serde_json::Value>(&doc);
            if let Ok((_, _, end)) = &want {
                let whole = doc[*end..].trim_matches([' ', '\n', '\r', '\t']).is_empty();
                if whole && !(mutated && doc.contains("\\u")) {
                    assert!(serde.is_ok(), "{doc}");
                }
                accepted += 1;
            } else {
                assert!(serde.is_err(), "{doc}");
                rejected += 1;
            }
        }
        // The mutations must really exercise both outcomes.
        assert!(accepted > 1000 && rejected > 500, "{accepted} {rejected}");
    }

    /// One JSON value by `serde_json`: where it ends, and its element count (arrays) or its
    /// distinct member names (objects: a map merges duplicates, so the scanner's count of
    /// members is at least this).
    fn serde_value_end(doc: &str) -> Option<(usize, usize, bool)> {
        let mut it = serde_json::Deserializer::from_str(doc).into_iter::<serde_json::Value>();
        let v = it.next()?.ok()?;
        let end = it.byte_offset();
        match v {
            serde_json::Value::Array(a) => Some((end, a.len(), true)),
            serde_json::Value::Object(m) => Some((end, m.len(), false)),
            _ => None,
        }
    }

    #[test]
    fn container_skips_end_and_count_as_serde_json_reads_them() {
        // Mostly compact containers (the fast paths), some spaced or escaped (the token loop
        // resuming after a compact prefix), half of them mutated into invalid JSON.
        let mut rng = Rng(0x3C6E_F372_FE94_F82B);
        let (mut accepted, mut rejected) = (0, 0);
        for case in 0..6000 {
            let mut doc = String::new();
            while !doc.starts_with(['{', '[']) {
                doc.clear();
                gen_value(&mut rng, 2, &mut doc);
            }
            if case % 2 == 1 {
                for _ in 0..=rng.below(3) {
                    doc = mutate(&mut rng, &doc);
                }
            }
            if !doc.starts_with(['{', '[']) {
                continue;
            }
            // A mutated `\u` escape may be a lone surrogate, which serde_json refuses and this
            // scanner accepts by design (decoded as U+FFFD).
            if case % 2 == 1 && doc.contains("\\u") {
                continue;
            }
            let mut sc = Scanner::new(&doc, 0);
            let got = sc.skip_value().map(|n| (sc.position(), n));
            if let Some((end, n, array)) = serde_value_end(&doc) {
                let (got_end, got_n) = got.expect(&doc);
                assert_eq!(got_end, end, "{doc}");
                assert!(if array { got_n == n } else { got_n >= n }, "{doc}");
                accepted += 1;
            } else {
                assert!(got.is_err(), "{doc}");
                rejected += 1;
            }
        }
        assert!(accepted > 2000 && rejected > 400, "{accepted} {rejected}");
    }

    /// The token-by-token code alone: the scalar string search with every compact fast road
    /// off (`compact_member`'s runs, `flat_compact`, the compact member in `skip_container`).
    struct TokenOnly;

    impl StringSearch for TokenOnly {
        const COMPACT_SHORTCUTS: bool = false;

        fn string_stop(buf: &[u8], from: usize) -> usize {
            crate::scan::string_stop_scalar(buf, from)
        }
    }

    #[test]
    fn compact_shortcuts_agree_with_the_token_only_oracle() {
        // Two tries: the paths of the test above (read members inside runs, nested reads,
        // indices) and a sparse one (long runs of unread members, a read after each run).
        let path_sets: [&[&[&str]]; 2] = [
            &[
                &["a"],
                &["a", "b"],
                &["k", "1"],
                &["key"],
                &["long_member_name_past_sixteen", "s"],
                &["s"],
            ],
            &[&["s"], &["long_member_name_past_sixteen", "k"]],
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut rejected) = (0, 0);
        for paths in path_sets {
            let mut trie = PathTrie::new();
            for (i, p) in paths.iter().enumerate() {
                trie.insert(&path(p), i as u32);
            }
            for case in 0..6000 {
                // Mostly compact objects (the fast roads), some spaced (the token loop taking
                // over in the middle of an object); half of them mutated into invalid JSON, so
                // the runs stop at every kind of fault.
                let mut doc = String::new();
                while !doc.starts_with('{') {
                    doc.clear();
                    gen_value_spaced(&mut rng, 1, &mut doc, case % 5 == 4);
                }
                if case % 2 == 1 {
                    for _ in 0..=rng.below(2) {
                        doc = mutate(&mut rng, &doc);
                    }
                }
                let want = run::<TokenOnly>(&doc, &trie, paths.len());
                assert_eq!(run::<Native>(&doc, &trie, paths.len()), want, "{doc}");
                assert_eq!(
                    run::<crate::scan::Scalar>(&doc, &trie, paths.len()),
                    want,
                    "{doc}"
                );
                if want.is_ok() {
                    accepted += 1;
                } else {
                    rejected += 1;
                }
            }
        }
        assert!(accepted > 4000 && rejected > 2000, "{accepted} {rejected}");
    }

    #[test]
    fn compact_member_runs_stop_where_the_token_code_reads_on() {
        // Hand-picked stops of a run of unread members: each kind of scalar, then a read
        // member, a container, whitespace, an escape, a bad number or literal, a missing
        // comma, the end of input. Outcomes (values, error offsets) equal the token code's.
        let paths: [&[&str]; 2] = [&["r"], &["o", "r"]];
        let mut trie = PathTrie::new();
        for (i, p) in paths.iter().enumerate() {
            trie.insert(&path(p), i as u32);
        }
        let run_prefix = r#"{"u":"x","v":12.5e-3,"w":true,"x":false,"y":null,"z":-0"#;
        for tail in [
            "}",
            r#","r":"got"}"#,
            r#","r":1,"r":2}"#,
            r#","o":{"r":[1]},"u":"x"}"#,
            r#","c":{"r":1},"r":null}"#,
            r#","c":[1,2],"r":true}"#,
            r#", "r":"spaced"}"#,
            r#","r" :"spaced"}"#,
            r#","\u0072":"escaped name"}"#,
            r#","e":"esc\"aped","r":3}"#,
            r#","n":01}"#,
            r#","n":1.}"#,
            r#","n":1e+}"#,
            r#","n":-}"#,
            r#","t":tru}"#,
            r#","t":truex}"#,
            r#","t":nul"#,
            r#","s":"unterminated"#,
            r#","s":"ctrl	char"}"#,
            r#""r":1}"#,
            ",}",
            ",",
            "",
            " }",
            r#","u":"x" }"#,
            r#","u":"x","#,
            r#","u":"x""#,
        ] {
            let doc = format!("{run_prefix}{tail}");
            let want = run::<TokenOnly>(&doc, &trie, paths.len());
            assert_eq!(run::<Native>(&doc, &trie, paths.len()), want, "{doc}");
        }
    }

    #[test]
    fn utf8_and_bom() {
        assert_eq!(decode_utf8(b"\xEF\xBB\xBF[]").unwrap(), ("[]", 3));
        assert!(matches!(
            decode_utf8(b"[\"\xff\"]"),
            Err(Error::Json { offset: 2, .. })
        ));
    }
}
