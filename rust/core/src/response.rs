//! Metrics API answer text (spec 7.2–7.4), written straight from a [`ResultSet`] into byte
//! chunks, with no intermediate JSON value tree.
//!
//! Guarantees:
//! - The text is byte for byte what the server sent before this writer existed, which was Python's
//!   `json.dumps(json.loads(core_json), separators=(",", ":"), ensure_ascii=False)`: object keys
//!   in byte order (the order of `serde_json`'s map), floats in Python `repr` form (`1e+16`,
//!   `1e-05`, `5.0`, `-0.0`), non-finite values as `null`, strings escaped as Python escapes them
//!   (`"`, `\`, and every control character below U+0020; nothing else).
//! - The answer is cut into chunks of about `chunk_bytes` (a chunk may pass it by one row), so a
//!   caller can hand them out one at a time instead of holding the text twice.
//! - A row limit is checked before any text is written and a byte limit while writing; past
//!   either, writing stops with [`Error::Limit`] whose message suggests a rollup or a limit.
//! - Per answer, each grouping tuple's `groupings` text is built once and each distinct `dt` once
//!   per run of equal timestamps; per row the writer only copies those and formats the value.

use crate::error::{Error, Result};
use crate::query::ResultSet;
use crate::time::write_rfc3339;

/// Caps on one answer; `0` means no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerLimits {
    /// Value rows (cells) in the whole answer, across every query of a multi request.
    pub max_rows: usize,
    /// Bytes of answer text.
    pub max_bytes: usize,
}

const ADVICE: &str = "narrow startTime/endTime, add a \"limit\" (Top/Bottom N per interval) or \
                      roll up with \"recalculatedInterval\"";

/// The answer text as a list of chunks, plus the running checks of [`AnswerLimits`].
#[derive(Debug)]
pub struct ChunkedAnswer {
    chunks: Vec<Vec<u8>>,
    cur: Vec<u8>,
    chunk_bytes: usize,
    done_bytes: usize,
    rows: usize,
    limits: AnswerLimits,
}

impl ChunkedAnswer {
    #[must_use]
    pub fn new(chunk_bytes: usize, limits: AnswerLimits) -> ChunkedAnswer {
        let chunk_bytes = chunk_bytes.max(1);
        ChunkedAnswer {
            chunks: Vec::new(),
            // A small first buffer: most answers are small, and large ones grow it once.
            cur: Vec::with_capacity(chunk_bytes.min(4096)),
            chunk_bytes,
            done_bytes: 0,
            rows: 0,
            limits,
        }
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.done_bytes + self.cur.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts `n` more value rows against `max_rows` before they are written.
    pub fn reserve_rows(&mut self, n: usize) -> Result<()> {
        self.rows += n;
        let max = self.limits.max_rows;
        if max > 0 && self.rows > max {
            return Err(Error::Limit {
                reason: format!(
                    "the answer has {} rows, more than this server's max_answer_rows of {max} \
                     per request; {ADVICE}",
                    self.rows
                ),
            });
        }
        Ok(())
    }

    /// Ends a row: starts a new chunk when this one is full and checks `max_bytes`.
    #[inline]
    fn row_done(&mut self) -> Result<()> {
        if self.cur.len() >= self.chunk_bytes {
            self.rotate();
        }
        self.check_bytes()
    }

    fn check_bytes(&self) -> Result<()> {
        let max = self.limits.max_bytes;
        if max > 0 && self.len() > max {
            return Err(Error::Limit {
                reason: format!(
                    "the answer is larger than this server's max_answer_bytes of {max} bytes \
                     per request; {ADVICE}"
                ),
            });
        }
        Ok(())
    }

    fn rotate(&mut self) {
        let next = Vec::with_capacity(self.chunk_bytes + 256);
        let full = std::mem::replace(&mut self.cur, next);
        self.done_bytes += full.len();
        self.chunks.push(full);
    }

    /// The finished chunks (none empty; no chunk at all for an empty text).
    #[must_use]
    pub fn into_chunks(mut self) -> Vec<Vec<u8>> {
        if !self.cur.is_empty() {
            let last = std::mem::take(&mut self.cur);
            self.chunks.push(last);
        }
        self.chunks
    }

    fn push(&mut self, b: u8) {
        self.cur.push(b);
    }

    fn extend(&mut self, s: &[u8]) {
        self.cur.extend_from_slice(s);
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

/// Bytes Python's JSON encoder escapes (with `ensure_ascii=False`): `"`, `\` and controls.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `s` as a JSON string literal, escaped exactly as Python's `json.dumps` escapes it.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `v` as Python's `repr(float)` writes it (non-finite values, which JSON cannot carry,
/// as `null`, as `serde_json` wrote them).
pub fn write_f64(v: f64, out: &mut Vec<u8>) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    // Integral values below 1e16 (most counts and sums) print as their digits plus ".0"; every
    // integer there is exactly representable or has only its own digits as shortest form.
    // Exact comparisons on purpose: only exactly integral values take this path.
    #[allow(clippy::float_cmp)]
    let integral = v.trunc() == v && v.abs() < 1e16;
    if integral {
        if v == 0.0 && v.is_sign_negative() {
            out.extend_from_slice(b"-0.0");
        } else {
            let mut ibuf = itoa::Buffer::new();
            out.extend_from_slice(ibuf.format(v as i64).as_bytes());
            out.extend_from_slice(b".0");
        }
        return;
    }
    let mut buf = zmij::Buffer::new();
    let text = buf.format_finite(v).as_bytes();
    // Shortest round-trip digits and the decimal point position, from zmij's text ("1.5e-7",
    // "123.25", "0.001"): the digits are the same shortest, nearest digits Python's repr uses;
    // only where the point and exponent go differs.
    let (neg, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exp) = match text.iter().position(|&b| b == b'e' || b == b'E') {
        Some(at) => {
            let digits = std::str::from_utf8(&text[at + 1..]).unwrap_or("0");
            (&text[..at], digits.parse::<i32>().unwrap_or(0))
        }
        None => (text, 0),
    };
    let mut digits: [u8; 40] = [0; 40];
    let mut len = 0usize;
    let mut int_len: Option<usize> = None;
    for &ch in mantissa {
        if ch == b'.' {
            int_len = Some(len);
        } else if len < digits.len() {
            digits[len] = ch;
            len += 1;
        }
    }
    let mut decpt = int_len.unwrap_or(len) as i32 + exp;
    let lead = digits[..len].iter().take_while(|&&ch| ch == b'0').count();
    let digits_slice = &digits[lead..len];
    decpt -= lead as i32;
    let end = digits_slice.len()
        - digits_slice
            .iter()
            .rev()
            .take_while(|&&ch| ch == b'0')
            .count();
    let sig = &digits_slice[..end];
    if neg {
        out.push(b'-');
    }
    if sig.is_empty() {
        out.extend_from_slice(b"0.0");
        return;
    }
    let nd = sig.len() as i32;
    if decpt > -4 && decpt <= 16 {
        if decpt <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
            out.extend_from_slice(sig);
        } else if decpt >= nd {
            out.extend_from_slice(sig);
            out.extend(std::iter::repeat_n(b'0', (decpt - nd) as usize));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&sig[..decpt as usize]);
            out.push(b'.');
            out.extend_from_slice(&sig[decpt as usize..]);
        }
    } else {
        out.push(sig[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend_from_slice(&sig[1..]);
        }
        let exp10 = decpt - 1;
        out.push(b'e');
        out.push(if exp10 < 0 { b'-' } else { b'+' });
        let mag = exp10.unsigned_abs();
        if mag < 10 {
            out.push(b'0');
        }
        let mut ibuf = itoa::Buffer::new();
        out.extend_from_slice(ibuf.format(mag).as_bytes());
    }
}

fn write_i64(v: i64, out: &mut Vec<u8>) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

/// The `groupings` object text of each tuple, built the first time a row needs it.
struct GroupingTexts<'a> {
    rs: &'a ResultSet,
    /// Key indexes in byte order of the key names, later duplicates winning (a JSON map keeps
    /// one entry per key, with the last value set).
    order: Vec<usize>,
    texts: Vec<Option<Box<[u8]>>>,
}

impl<'a> GroupingTexts<'a> {
    fn new(rs: &'a ResultSet) -> GroupingTexts<'a> {
        let mut order: Vec<usize> = (0..rs.keys.len()).collect();
        order.sort_by(|&a, &b| rs.keys[a].cmp(&rs.keys[b]).then(b.cmp(&a)));
        order.dedup_by(|later, earlier| rs.keys[*later] == rs.keys[*earlier]);
        GroupingTexts {
            rs,
            order,
            texts: vec![None; rs.tuples],
        }
    }

    fn get(&mut self, g: u32) -> &[u8] {
        let (rs, order) = (self.rs, &self.order);
        self.texts[g as usize].get_or_insert_with(|| {
            let n = rs.keys.len();
            let codes = &rs.tuple_codes[g as usize * n..(g as usize + 1) * n];
            let mut t = Vec::with_capacity(16 * n + 2);
            t.push(b'{');
            for (i, &k) in order.iter().enumerate() {
                if i > 0 {
                    t.push(b',');
                }
                write_str(&rs.keys[k], &mut t);
                t.push(b':');
                write_str(&rs.values[k][codes[k] as usize], &mut t);
            }
            t.push(b'}');
            t.into_boxed_slice()
        })
    }
}

/// The text of one timestamp, kept while consecutive rows share it.
struct DtText {
    ms: Option<i64>,
    text: String,
}

impl DtText {
    fn new() -> DtText {
        DtText {
            ms: None,
            text: String::with_capacity(32),
        }
    }

    fn get(&mut self, ms: i64) -> &[u8] {
        if self.ms != Some(ms) {
            self.text.clear();
            self.text.push('"');
            write_rfc3339(ms, &mut self.text);
            self.text.push('"');
            self.ms = Some(ms);
        }
        self.text.as_bytes()
    }
}

/// The plain answer (spec 7.2): `[{"dt":…,"groupings":…,"value":…},…]`; `groupings` is `null`
/// only for filters without groupings.
pub fn write_rows(rs: &ResultSet, out: &mut ChunkedAnswer) -> Result<()> {
    out.reserve_rows(rs.dt.len())?;
    let null_groupings = rs.keys.is_empty() && !rs.grouped;
    let mut groupings = GroupingTexts::new(rs);
    let mut dt = DtText::new();
    out.push(b'[');
    for i in 0..rs.dt.len() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(b"{\"dt\":");
        out.extend(dt.get(rs.dt[i]));
        out.extend(b",\"groupings\":");
        if null_groupings {
            out.extend(b"null");
        } else {
            out.extend(groupings.get(rs.group[i]));
        }
        out.extend(b",\"value\":");
        write_f64(rs.value[i], &mut out.cur);
        out.push(b'}');
        out.row_done()?;
    }
    out.push(b']');
    out.check_bytes()
}

/// Writer of the compact `?multi=true` answer (spec 7.3): one array over every query, per query
/// and series one separator row and then the series' value rows.
pub struct MultiWriter {
    rows_written: usize,
}

impl MultiWriter {
    #[must_use]
    pub fn start(out: &mut ChunkedAnswer) -> MultiWriter {
        out.push(b'[');
        MultiWriter { rows_written: 0 }
    }

    fn sep(&mut self, out: &mut ChunkedAnswer) {
        if self.rows_written > 0 {
            out.push(b',');
        }
        self.rows_written += 1;
    }

    /// Appends one query's series: tuples in ascending order (their ids), rows of a series in
    /// time order, `dtSecLater` in whole seconds after the series' first row.
    pub fn write_query(
        &mut self,
        rs: &ResultSet,
        query_id: &str,
        out: &mut ChunkedAnswer,
    ) -> Result<()> {
        out.reserve_rows(rs.dt.len())?;
        // Rows by series with a counting sort: rows keep their (time) order within a series.
        let mut first = vec![0usize; rs.tuples + 1];
        for &g in &rs.group {
            first[g as usize + 1] += 1;
        }
        for i in 1..first.len() {
            first[i] += first[i - 1];
        }
        let mut fill = first.clone();
        let mut order = vec![0u32; rs.dt.len()];
        for (i, &g) in rs.group.iter().enumerate() {
            order[fill[g as usize]] = i as u32;
            fill[g as usize] += 1;
        }
        drop(fill);
        let mut qid = Vec::with_capacity(query_id.len() + 16);
        qid.extend_from_slice(b",\"queryId\":");
        write_str(query_id, &mut qid);
        qid.extend_from_slice(b",\"val\":");
        let mut groupings = GroupingTexts::new(rs);
        let mut dt = DtText::new();
        for g in 0..rs.tuples {
            let rows = &order[first[g]..first[g + 1]];
            let Some(base) = rows.iter().map(|&i| rs.dt[i as usize]).min() else {
                continue;
            };
            self.sep(out);
            out.extend(b"{\"dt\":");
            out.extend(dt.get(base));
            out.extend(b",\"groupings\":");
            out.extend(groupings.get(g as u32));
            out.extend(b",\"isSeperator\":true}");
            out.row_done()?;
            for &i in rows {
                self.sep(out);
                out.extend(b"{\"dtSecLater\":");
                write_i64(
                    rs.dt[i as usize].saturating_sub(base).div_euclid(1000),
                    &mut out.cur,
                );
                out.extend(&qid);
                write_f64(rs.value[i as usize], &mut out.cur);
                out.push(b'}');
                out.row_done()?;
            }
        }
        Ok(())
    }

    pub fn finish(self, out: &mut ChunkedAnswer) -> Result<()> {
        out.push(b']');
        out.check_bytes()
    }
}

/// The groupings answer (spec 7.4): `[{"value":…},…]`.
pub fn write_groupings(values: &[String], out: &mut ChunkedAnswer) -> Result<()> {
    out.reserve_rows(values.len())?;
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(b"{\"value\":");
        write_str(v, &mut out.cur);
        out.push(b'}');
        out.row_done()?;
    }
    out.push(b']');
    out.check_bytes()
}

/// Deepest nesting of arrays and objects a request body may have: far beyond any query (they
/// nest four levels) and `serde_json`'s own limit, so a deeper body is refused here with a clear
/// reason before any parser recurses into it.
pub const MAX_REQUEST_DEPTH: usize = 128;

/// Checks that `body` nests arrays and objects at most [`MAX_REQUEST_DEPTH`] deep, skipping
/// strings; it does not otherwise validate the JSON.
pub fn check_depth(body: &[u8]) -> Result<()> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, &b) in body.iter().enumerate() {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_REQUEST_DEPTH {
                    return Err(Error::Json {
                        offset: i,
                        reason: format!(
                            "arrays and objects nested deeper than {MAX_REQUEST_DEPTH} levels"
                        ),
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> String {
        let mut out = Vec::new();
        write_f64(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn s(v: &str) -> String {
        let mut out = Vec::new();
        write_str(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_print_as_python_repr() {
        // Expected texts are Python's repr() of the same values.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (5.0, "5.0"),
            (-5.0, "-5.0"),
            (1e15, "1000000000000000.0"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e22, "1e+22"),
            (1e-7, "1e-07"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (0.000_123_45, "0.00012345"),
            (0.1, "0.1"),
            (-0.5, "-0.5"),
            (123.456, "123.456"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1_234_567_890_123_456.7, "1234567890123456.8"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN, "-1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (2.5e-300, "2.5e-300"),
            (123_456_789_012_345_680_000.0, "1.2345678901234568e+20"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ];
        for &(v, want) in cases {
            assert_eq!(f(v), want, "{v:e}");
        }
    }

    #[test]
    fn strings_escape_as_python_json() {
        assert_eq!(s("plain"), "\"plain\"");
        assert_eq!(s("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(s("\n\r\t\u{8}\u{c}"), "\"\\n\\r\\t\\b\\f\"");
        assert_eq!(s("\u{0}\u{1f}\u{7f}"), "\"\\u0000\\u001f\u{7f}\"");
        assert_eq!(s("é\u{2028}日本/"), "\"é\u{2028}日本/\"");
    }

    fn rs_two_tuples() -> ResultSet {
        ResultSet {
            keys: vec!["k".into(), "a".into()],
            values: vec![vec!["x".into(), "y".into()], vec!["1".into()]],
            tuple_codes: vec![0, 0, 1, 0],
            tuples: 2,
            dt: vec![0, 0, 60_000],
            group: vec![0, 1, 1],
            value: vec![1.0, 2.5, 1e16],
            grouped: true,
        }
    }

    fn text(out: ChunkedAnswer) -> String {
        String::from_utf8(out.into_chunks().concat()).unwrap()
    }

    #[test]
    fn rows_sort_keys_and_reuse_texts() {
        let rs = rs_two_tuples();
        let mut out = ChunkedAnswer::new(1 << 20, AnswerLimits::default());
        write_rows(&rs, &mut out).unwrap();
        assert_eq!(
            text(out),
            "[{\"dt\":\"1970-01-01T00:00:00Z\",\"groupings\":{\"a\":\"1\",\"k\":\"x\"},\"value\":1.0},\
             {\"dt\":\"1970-01-01T00:00:00Z\",\"groupings\":{\"a\":\"1\",\"k\":\"y\"},\"value\":2.5},\
             {\"dt\":\"1970-01-01T00:01:00Z\",\"groupings\":{\"a\":\"1\",\"k\":\"y\"},\"value\":1e+16}]"
        );
    }

    #[test]
    fn multi_rows_by_series() {
        let rs = rs_two_tuples();
        let mut out = ChunkedAnswer::new(1 << 20, AnswerLimits::default());
        let mut w = MultiWriter::start(&mut out);
        w.write_query(&rs, "A", &mut out).unwrap();
        w.finish(&mut out).unwrap();
        assert_eq!(
            text(out),
            "[{\"dt\":\"1970-01-01T00:00:00Z\",\"groupings\":{\"a\":\"1\",\"k\":\"x\"},\"isSeperator\":true},\
             {\"dtSecLater\":0,\"queryId\":\"A\",\"val\":1.0},\
             {\"dt\":\"1970-01-01T00:00:00Z\",\"groupings\":{\"a\":\"1\",\"k\":\"y\"},\"isSeperator\":true},\
             {\"dtSecLater\":0,\"queryId\":\"A\",\"val\":2.5},\
             {\"dtSecLater\":60,\"queryId\":\"A\",\"val\":1e+16}]"
        );
    }

    #[test]
    fn chunks_split_at_rows_and_join_to_the_text() {
        let rs = rs_two_tuples();
        let mut whole = ChunkedAnswer::new(1 << 20, AnswerLimits::default());
        write_rows(&rs, &mut whole).unwrap();
        let mut small = ChunkedAnswer::new(10, AnswerLimits::default());
        write_rows(&rs, &mut small).unwrap();
        let chunks = small.into_chunks();
        assert!(chunks.len() >= 3);
        assert_eq!(chunks.concat(), whole.into_chunks().concat());
    }

    #[test]
    fn limits_refuse_with_advice() {
        let rs = rs_two_tuples();
        let rows = AnswerLimits {
            max_rows: 2,
            max_bytes: 0,
        };
        let err = write_rows(&rs, &mut ChunkedAnswer::new(64, rows)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("3 rows") && msg.contains("max_answer_rows of 2"),
            "{msg}"
        );
        assert!(
            msg.contains("recalculatedInterval") && msg.contains("\"limit\""),
            "{msg}"
        );
        let bytes = AnswerLimits {
            max_rows: 0,
            max_bytes: 100,
        };
        let err = write_rows(&rs, &mut ChunkedAnswer::new(64, bytes)).unwrap_err();
        assert!(err.to_string().contains("max_answer_bytes of 100"));
        let exact = AnswerLimits {
            max_rows: 3,
            max_bytes: 1000,
        };
        assert!(write_rows(&rs, &mut ChunkedAnswer::new(64, exact)).is_ok());
    }

    #[test]
    fn groupings_answer() {
        let mut out = ChunkedAnswer::new(64, AnswerLimits::default());
        write_groupings(&["a".into(), "é\"".into()], &mut out).unwrap();
        assert_eq!(text(out), "[{\"value\":\"a\"},{\"value\":\"é\\\"\"}]");
        let mut out = ChunkedAnswer::new(64, AnswerLimits::default());
        write_groupings(&[], &mut out).unwrap();
        assert_eq!(text(out), "[]");
    }

    #[test]
    fn depth_check_skips_strings() {
        let deep = "[".repeat(MAX_REQUEST_DEPTH + 1);
        assert!(matches!(
            check_depth(deep.as_bytes()),
            Err(Error::Json { .. })
        ));
        let ok = "[".repeat(MAX_REQUEST_DEPTH) + &"]".repeat(MAX_REQUEST_DEPTH);
        assert!(check_depth(ok.as_bytes()).is_ok());
        let quoted = format!("{{\"a\":\"{}\\\"[\"}}", "[".repeat(500));
        assert!(check_depth(quoted.as_bytes()).is_ok());
    }
}
