//! The `messageId` of every event of a batch, for deduplication (`eventtally.durability.dedup`),
//! read with the engine's own batch grammar.
//!
//! Guarantees:
//! - A batch is split into units exactly as the engine splits it into events: the elements of
//!   the top-level array (`ARRAY_OF_EVENTS`), of the array at `arrayPath`
//!   (`OBJECT_WITH_ARRAY_PROPERTY`), the one object (`SINGLE_OBJECT`), or the lines
//!   (`NEWLINE_DELIMITED`, where blank, `[` and `]` lines are structural units, not events). The
//!   whole batch is validated as the engine validates it (the same scanner, the same limits), so
//!   a batch the engine refuses is refused here too and a caller can pass it on untouched.
//! - Each unit carries its byte span in the input, so a caller can cut events out of the
//!   original bytes without re-encoding the ones it keeps. Offsets count a leading byte order
//!   mark.
//! - The id is read like any path: the last `messageId` member of an event object wins; `null`,
//!   a missing member and a non-object event have no id; a string id is decoded, any other
//!   value is returned as its raw JSON text.

use std::borrow::Cow;

use crate::batch::{decode_utf8, PathTrie, Scanner};
use crate::config::Schema;
use crate::engine::{expect_end, ndjson_record_span, open_body};
use crate::error::{Error, Result};
use crate::path::Path;
use crate::value::Value;

/// What a unit says about its event's `messageId`.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageId<'a> {
    /// A blank, `[` or `]` line of a `NEWLINE_DELIMITED` batch: not an event.
    Structural,
    /// An event without an id (no member, `null`, or not an object).
    Absent,
    /// A string id, decoded.
    Str(Cow<'a, str>),
    /// Any other id, as its raw JSON text.
    Json(&'a str),
}

/// One event (or structural line) of a batch: `data[start..end]` and its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit<'a> {
    pub start: usize,
    pub end: usize,
    pub id: MessageId<'a>,
}

/// The units of a batch, and for the array schemas the span of the event array itself
/// (`data[array.0]` is its `[`, `data[array.1 - 1]` its `]`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchIds<'a> {
    pub units: Vec<Unit<'a>>,
    pub array: Option<(usize, usize)>,
}

fn message_id_trie() -> PathTrie {
    let path = crate::jpath::parse_path("@.messageId").expect("a plain path");
    let mut trie = PathTrie::new();
    trie.insert(&path, 0);
    trie
}

/// Offset of `inner` (a slice of `outer`) in `outer`.
fn offset_in(outer: &str, inner: &str) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

/// Reads the event at the scanner's position (an object or any other value) and its id.
fn event<'a>(sc: &mut Scanner<'a>, trie: &PathTrie) -> Result<MessageId<'a>> {
    if sc.peek() != Some(b'{') {
        sc.skip_value()?;
        return Ok(MessageId::Absent);
    }
    let mut slot = [None];
    sc.extract_object(trie, &mut slot)?;
    Ok(match slot[0].take() {
        None | Some(Value::Null) => MessageId::Absent,
        Some(Value::Str(s)) => MessageId::Str(s),
        Some(Value::Bool(true)) => MessageId::Json("true"),
        Some(Value::Bool(false)) => MessageId::Json("false"),
        Some(Value::Number(raw) | Value::Array { raw, .. } | Value::Object { raw }) => {
            MessageId::Json(raw)
        }
    })
}

/// The elements of the array at the scanner's position; spans are `shift` plus scanner
/// positions.
fn elements<'a>(sc: &mut Scanner<'a>, trie: &PathTrie, shift: usize) -> Result<Vec<Unit<'a>>> {
    let mut out = Vec::new();
    sc.skip_ws();
    sc.enter()?; // '['
    sc.skip_ws();
    if sc.peek() == Some(b']') {
        sc.leave(); // ']'

        return Ok(out);
    }
    loop {
        sc.skip_ws();
        let start = sc.position();
        let id = event(sc, trie)?;
        out.push(Unit {
            start: shift + start,
            end: shift + sc.position(),
            id,
        });
        sc.skip_ws();
        match sc.peek() {
            Some(b',') => sc.set_position(sc.position() + 1),
            Some(b']') => {
                sc.leave(); // ']'

                return Ok(out);
            }
            _ => return Err(sc.error_here("expected ',' or ']' after an array element")),
        }
    }
}

/// Splits `data` (laid out as `schema`; `array_path` is the ingest's `arrayPath` for
/// `OBJECT_WITH_ARRAY_PROPERTY`) into units with their ids; errors are the engine's errors
/// for the same batch.
pub fn message_ids<'a>(
    data: &'a [u8],
    schema: Schema,
    array_path: Option<&Path>,
) -> Result<BatchIds<'a>> {
    let (src, bom) = decode_utf8(data)?;
    let trie = message_id_trie();
    let mut units = Vec::new();
    let mut array = None;
    match schema {
        Schema::ArrayOfEvents => {
            let mut sc = open_body(src, bom, b'[', "expected a JSON array of events")?;
            let open = sc.position();
            units = elements(&mut sc, &trie, bom)?;
            array = Some((bom + open, bom + sc.position()));
            expect_end(&mut sc)?;
        }
        Schema::SingleObject => {
            let mut sc = open_body(src, bom, b'{', "expected a single JSON object")?;
            let start = sc.position();
            let id = event(&mut sc, &trie)?;
            units.push(Unit {
                start: bom + start,
                end: bom + sc.position(),
                id,
            });
            expect_end(&mut sc)?;
        }
        Schema::ObjectWithArrayProperty => {
            let path = array_path.ok_or_else(|| Error::Config {
                field: "arrayPath".into(),
                reason: "OBJECT_WITH_ARRAY_PROPERTY needs the ingest's arrayPath".into(),
            })?;
            let mut sc = open_body(
                src,
                bom,
                b'{',
                "expected a JSON object holding the event array",
            )?;
            let mut at = PathTrie::new();
            at.insert(path, 0);
            let mut slot = [None];
            sc.extract_object(&at, &mut slot)?;
            expect_end(&mut sc)?;
            let Some(Value::Array { raw, .. }) = slot[0].take() else {
                return Err(Error::Format {
                    offset: bom,
                    reason: "the arrayPath is missing or not an array".into(),
                });
            };
            let shift = bom + offset_in(src, raw);
            let mut inner = Scanner::new(raw, shift);
            inner.set_nesting(path.segments.len());
            units = elements(&mut inner, &trie, shift)?;
            array = Some((shift, shift + raw.len()));
        }
        Schema::NewlineDelimited => {
            let bytes = src.as_bytes();
            let mut sc = Scanner::new("", 0);
            let mut line_start = 0usize;
            loop {
                let end = memchr::memchr(b'\n', &bytes[line_start..])
                    .map_or(bytes.len(), |i| line_start + i);
                let (lo, hi) = ndjson_record_span(bytes, line_start, end);
                let body = &src[lo..hi];
                // The first line's span starts at 0 so a byte order mark stays with it.
                let start = if line_start == 0 { 0 } else { bom + line_start };
                let id = if body.is_empty() || body == "[" || body == "]" {
                    MessageId::Structural
                } else {
                    sc.rebase(body, bom + lo);
                    let id = event(&mut sc, &trie)?;
                    expect_end(&mut sc)?;
                    id
                };
                units.push(Unit {
                    start,
                    end: bom + end,
                    id,
                });
                if end >= bytes.len() {
                    break;
                }
                line_start = end + 1;
            }
        }
    }
    Ok(BatchIds { units, array })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(data: &[u8], schema: Schema) -> Vec<(String, MessageId<'_>)> {
        let got = message_ids(data, schema, None).unwrap();
        got.units
            .into_iter()
            .map(|u| {
                let text = String::from_utf8(data[u.start..u.end].to_vec()).unwrap();
                (text, u.id)
            })
            .collect()
    }

    #[test]
    fn array_elements_keep_their_bytes_and_ids() {
        let data = br#"[ {"messageId":"a","x":1} , 5,{"messageId":null},{"messageId":{"b":2}},{"messageId":"\u0063","messageId":"d"} ]"#;
        let got = ids(data, Schema::ArrayOfEvents);
        assert_eq!(
            got,
            vec![
                (
                    r#"{"messageId":"a","x":1}"#.into(),
                    MessageId::Str("a".into())
                ),
                ("5".into(), MessageId::Absent),
                (r#"{"messageId":null}"#.into(), MessageId::Absent),
                (
                    r#"{"messageId":{"b":2}}"#.into(),
                    MessageId::Json(r#"{"b":2}"#)
                ),
                (
                    r#"{"messageId":"\u0063","messageId":"d"}"#.into(),
                    MessageId::Str("d".into())
                ),
            ]
        );
        let array = message_ids(data, Schema::ArrayOfEvents, None)
            .unwrap()
            .array;
        assert_eq!(array, Some((0, data.len())));
    }

    #[test]
    fn ndjson_lines_are_units_and_structural_lines_are_marked() {
        let data = b"{\"messageId\":\"a\"}\r\n{\"messageId\":2},\r\n\n[\n]";
        let got = ids(data, Schema::NewlineDelimited);
        let kinds: Vec<_> = got.iter().map(|(t, id)| (t.as_str(), id.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                ("{\"messageId\":\"a\"}\r", MessageId::Str("a".into())),
                ("{\"messageId\":2},\r", MessageId::Json("2")),
                ("", MessageId::Structural),
                ("[", MessageId::Structural),
                ("]", MessageId::Structural),
            ]
        );
    }

    #[test]
    fn object_with_array_property_spans_the_inner_array() {
        let path = crate::jpath::parse_path("@.data['events']").unwrap();
        let data =
            "\u{feff}{\"events\":[1],\"data\":{\"events\":[{\"messageId\":\"é\"}]}}".as_bytes();
        let got = message_ids(data, Schema::ObjectWithArrayProperty, Some(&path)).unwrap();
        let (a, b) = got.array.unwrap();
        assert_eq!(&data[a..b], "[{\"messageId\":\"é\"}]".as_bytes());
        assert_eq!(got.units[0].id, MessageId::Str("é".into()));
        assert_eq!(
            &data[got.units[0].start..got.units[0].end],
            "{\"messageId\":\"é\"}".as_bytes()
        );
    }

    #[test]
    fn batches_the_engine_refuses_are_refused() {
        for bad in [&b"[1] x"[..], b"\xff", b"{\"a\":1}", b"[{\"messageId\":"] {
            assert!(message_ids(bad, Schema::ArrayOfEvents, None).is_err());
        }
        assert!(message_ids(b"{} x", Schema::SingleObject, None).is_err());
        assert!(message_ids(b"{}\nnope", Schema::NewlineDelimited, None).is_err());
        assert!(message_ids(b"{}", Schema::ObjectWithArrayProperty, None).is_err());
    }
}
