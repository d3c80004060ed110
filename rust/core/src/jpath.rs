//! `JPath` (spec §6, semantics §5): plain paths and compiled boolean conditions.
//!
//! Guarantees:
//! - `parse_path` and `Condition::compile` never panic and never overflow the stack: input over
//!   [`MAX_EXPRESSION_BYTES`] and nesting of `(`/`!` deeper than [`MAX_NESTING`] are rejected.
//! - Every error is [`Error::PathSyntax`] with an empty `field`, the whole expression, the
//!   **character** (not byte) position of the problem and a reason meant for the user.
//! - Regular expressions are compiled once, with a 1 MiB compiled-size limit, so a hostile pattern
//!   fails at compile time (with the position of its `/`) instead of at evaluation time.
//! - `Condition::eval` does not allocate for comparisons against strings, numbers, booleans and
//!   `null`, for `LIKE`, `=~` and `in`, except when the field is a non-integer JSON number compared
//!   with a string-typed test (its string form is built) and for `ILIKE` on non-ASCII text (it is
//!   lowercased). `&&` and `||` short-circuit. A slot index outside the given arrays reads as missing.
//!
//! Language decisions (the literal decides the type of a comparison):
//! - Dotted names (`.name`) may contain Unicode letters and digits, `_` and `$`; anything else
//!   (`-`, spaces, dots) needs brackets: `@['user-id']`. Bracket names take `'…'` or `"…"` with the
//!   escapes `\'`, `\"` and `\\`; indexes are `[0]`. Wildcards, `..`, unions, filters and negative
//!   indexes are rejected.
//! - String literals are single-quoted with the escapes `\'`, `\"` and `\\`; any other escape is an
//!   error. Double-quoted literals are an error that says to use single quotes.
//! - Number literals follow JSON's grammar (`0`, `0.1`, `-12345678910112`, `1e3`; no leading
//!   zeros, no `+`, no `.5`); a literal that overflows `f64` (`1e999`) is an error.
//! - Numeric literal: the field must be a finite JSON number or a string that is exactly one
//!   (`Value::numeric`); comparison is on `f64` (integers beyond 2^53 lose precision).
//! - String literal: the field's grouping string form (semantics §7) is compared, byte-wise for
//!   ordering; `null`, arrays and objects never compare with a string literal. Numbers compare
//!   by that form: `@.x == '1.5'` matches `1.50`, `@.x == '2.0'` does not match `2.0` (use `2.0`).
//! - `true`/`false` equal only JSON booleans, `null` only a present JSON `null`; ordering operators
//!   with them are a syntax error.
//! - A missing field makes every comparison false, `!=` included. For a present field `!=` is the
//!   negation of `==`, so a type mismatch makes it **true** (`@.x != 'a'` with `x = 5`; `@.x != 2`
//!   with `x = "abc"`; `@.x != null` for any present non-null value).
//! - `in [a, b]` is true when `==` holds for one element; lists appear only after `in`.
//! - `LIKE`/`ILIKE`: `%` matches any run, `_` one character, the whole string must match; there
//!   is no escape character (`%` and `_` are always wildcards; use `=~` to match them literally).
//!   `ILIKE` compares Unicode-lowercased text and pattern. `LIKE`, `ILIKE` and `=~` see the string
//!   form of strings, numbers and booleans; `null`, arrays and objects never match.
//! - `=~ /re/` uses the `regex` crate (RE2 syntax) with search semantics; `/re/i` is
//!   case-insensitive, no other flag exists; `\/` writes a slash.
//! - A bare path tests existence: true when present, even when `null`.
//! - `.length` as the last segment of a compared path: the member `length` when present, else the
//!   parent array's element count or the parent string's character count, else missing. A bare
//!   `@.x.length` (existence) only tests the member.
//! - Precedence: `!` (applies to a path or a parenthesised condition), comparisons, `&&`, `||`.
//!   `!@.x == 1` is a syntax error that suggests `!(@.x == 1)`. A literal may stand on the left
//!   (`500 < @.x` means `@.x > 500`); comparing two paths or chaining comparisons is an error.
//! - Keywords (`LIKE`, `ILIKE`, `in`, `true`, `false`, `null`) are case-insensitive; `and`, `or`
//!   and `not` are not keywords (the error suggests `&&`, `||`, `!`). Whitespace (space, tab, CR,
//!   LF) around operators is optional; none is allowed inside a path except within brackets.
//! - Limits: [`MAX_EXPRESSION_BYTES`] bytes per expression, [`MAX_NESTING`] levels of `(`/`!`,
//!   1 MiB of compiled program per regular expression.

use std::cmp::Ordering;

use memchr::memmem::Finder;
use regex::{Regex, RegexBuilder};

use crate::error::{Error, Result};
use crate::path::{Path, Root, Segment};
use crate::value::{write_number_string, Value};

/// Longest accepted expression or path, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 64 * 1024;
/// Deepest accepted nesting of `(` and `!`.
pub const MAX_NESTING: usize = 256;
/// Compiled-size limit of one regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Parse a plain path (groupings, calculation fields, arrayPath, flattenPath). Whitespace around
/// the path is allowed.
///
/// # Errors
/// [`Error::PathSyntax`] (empty `field`) for an empty, malformed or over-long path, or one
/// followed by anything but whitespace.
pub fn parse_path(src: &str) -> Result<Path> {
    check_length(src)?;
    let mut cur = Cursor::new(src);
    cur.skip_ws();
    if cur.at_end() {
        return Err(cur.error(cur.pos, "empty path: expected '@' or '$'"));
    }
    let path = cur.path()?;
    cur.skip_ws();
    if let Some(c) = cur.peek() {
        return Err(cur.error(
            cur.pos,
            format!(
                "unexpected {} after the path (this field takes a plain path, no operators)",
                show(c.encode_utf8(&mut [0; 4]))
            ),
        ));
    }
    Ok(path)
}

/// Where the evaluator finds a path's value: an index into one of two slot arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Root(u32),
    Element(u32),
}

/// Maps each path an expression mentions to a slot (the engine dedups paths across filters and
/// decides whether `@` means the root event or the flattened element).
pub trait SlotResolver {
    fn resolve(&mut self, path: &Path) -> Slot;
}

/// A compiled boolean condition.
#[derive(Debug, Clone)]
pub struct Condition {
    node: Node,
}

impl Condition {
    /// Compile; an empty/whitespace-only source is the always-true condition.
    ///
    /// Every path is passed to `resolver`; a compared path ending in `.length` also resolves its
    /// parent (which may be a bare root `@`/`$` for `@.length`).
    ///
    /// # Errors
    /// [`Error::PathSyntax`] (empty `field`) with the character position and the reason.
    pub fn compile(src: &str, resolver: &mut dyn SlotResolver) -> Result<Condition> {
        check_length(src)?;
        if src.trim().is_empty() {
            return Ok(Condition { node: Node::True });
        }
        let mut parser = CondParser {
            cur: Cursor::new(src),
            resolver,
            depth: 0,
        };
        let node = parser.or("")?;
        parser.cur.skip_ws();
        if !parser.cur.at_end() {
            return Err(parser.unexpected("expected '&&', '||' or the end of the expression"));
        }
        Ok(Condition { node })
    }

    /// Evaluate for one event. `root[i]` / `element[i]` are the values the scanner found
    /// (`None` = missing).
    #[must_use]
    pub fn eval(&self, root: &[Option<Value<'_>>], element: &[Option<Value<'_>>]) -> bool {
        self.node.eval(root, element)
    }

    /// True for the condition compiled from an empty source.
    #[must_use]
    pub fn is_always_true(&self) -> bool {
        matches!(self.node, Node::True)
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled form and evaluation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    True,
    Exists(Slot),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Test(Operand, Test),
}

#[derive(Debug, Clone, Copy)]
enum Operand {
    Slot(Slot),
    /// `path.length`: the member itself when present, else the parent's length.
    Length {
        full: Slot,
        parent: Slot,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// Whether the ordering of field vs literal satisfies the operator (`Ne` is handled apart).
    fn accepts(self, ord: Option<Ordering>) -> bool {
        match (self, ord) {
            (_, None) => false,
            (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
            (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
            (CmpOp::Lt, Some(o)) => o == Ordering::Less,
            (CmpOp::Le, Some(o)) => o != Ordering::Greater,
            (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
            (CmpOp::Ge, Some(o)) => o != Ordering::Less,
        }
    }
}

#[derive(Debug, Clone)]
enum Test {
    Num(CmpOp, f64),
    Str(CmpOp, Box<str>),
    /// (`!=`, literal)
    Bool(bool, bool),
    /// `!=`
    Null(bool),
    In(Box<InList>),
    Like(Box<LikePattern>),
    Regex(Box<Regex>),
}

/// A value read for a comparison: the field itself, or a computed `.length`.
#[derive(Clone, Copy)]
enum Got<'v, 'a> {
    Val(&'v Value<'a>),
    Len(usize),
}

impl Got<'_, '_> {
    fn numeric(self) -> Option<f64> {
        match self {
            Got::Val(v) => v.numeric(),
            // Lengths are far below 2^53, so the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            Got::Len(n) => Some(n as f64),
        }
    }

    /// Runs `f` on the string form (semantics §7); `None` for null, arrays and objects.
    fn with_str<R>(self, f: impl FnOnce(&str) -> R) -> Option<R> {
        match self {
            Got::Val(Value::Str(s)) => Some(f(s)),
            Got::Val(Value::Bool(b)) => Some(f(if *b { "true" } else { "false" })),
            Got::Val(Value::Number(raw)) => {
                if is_canonical_integer(raw) {
                    Some(f(raw))
                } else {
                    // Rare: a non-integer number tested against a string. Build its JS form.
                    let mut s = String::new();
                    write_number_string(raw, &mut s);
                    Some(f(&s))
                }
            }
            Got::Val(Value::Null | Value::Array { .. } | Value::Object { .. }) => None,
            Got::Len(n) => {
                let mut buf = [0u8; 20];
                Some(f(format_usize(n, &mut buf)))
            }
        }
    }
}

/// `-?[1-9][0-9]*`: the numbers whose grouping string is their raw text.
fn is_canonical_integer(raw: &str) -> bool {
    let digits = raw.strip_prefix('-').unwrap_or(raw).as_bytes();
    matches!(digits.first(), Some(b'1'..=b'9')) && digits.iter().all(u8::is_ascii_digit)
}

fn format_usize(mut n: usize, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789"[n % 10];
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

#[inline]
fn fetch<'v, 'a>(
    slot: Slot,
    root: &'v [Option<Value<'a>>],
    element: &'v [Option<Value<'a>>],
) -> Option<&'v Value<'a>> {
    match slot {
        Slot::Root(i) => root.get(i as usize)?.as_ref(),
        Slot::Element(i) => element.get(i as usize)?.as_ref(),
    }
}

impl Operand {
    #[inline]
    fn fetch<'v, 'a>(
        self,
        root: &'v [Option<Value<'a>>],
        element: &'v [Option<Value<'a>>],
    ) -> Option<Got<'v, 'a>> {
        match self {
            Operand::Slot(slot) => fetch(slot, root, element).map(Got::Val),
            Operand::Length { full, parent } => {
                if let Some(v) = fetch(full, root, element) {
                    return Some(Got::Val(v));
                }
                match fetch(parent, root, element)? {
                    Value::Array { len, .. } => Some(Got::Len(*len)),
                    Value::Str(s) => Some(Got::Len(s.chars().count())),
                    _ => None,
                }
            }
        }
    }
}

impl Node {
    fn eval(&self, root: &[Option<Value<'_>>], element: &[Option<Value<'_>>]) -> bool {
        match self {
            Node::True => true,
            Node::Exists(slot) => fetch(*slot, root, element).is_some(),
            Node::Not(inner) => !inner.eval(root, element),
            Node::And(items) => items.iter().all(|n| n.eval(root, element)),
            Node::Or(items) => items.iter().any(|n| n.eval(root, element)),
            Node::Test(operand, test) => match operand.fetch(root, element) {
                Some(got) => test.eval(got),
                // A missing field makes every comparison false, `!=` included.
                None => false,
            },
        }
    }
}

impl Test {
    /// Evaluates against a *present* field. `!=` is the negation of `==` here, so a type mismatch
    /// (`@.x != 'a'` with `x = 5`, `@.x != 2` with `x = "abc"`) is true; a missing field never
    /// reaches this function (see `Node::eval`).
    fn eval(&self, got: Got<'_, '_>) -> bool {
        match self {
            Test::Num(op, rhs) => {
                let ord = got.numeric().and_then(|v| v.partial_cmp(rhs));
                if *op == CmpOp::Ne {
                    ord != Some(Ordering::Equal)
                } else {
                    op.accepts(ord)
                }
            }
            Test::Str(op, rhs) => {
                let ord = got.with_str(|s| s.cmp(rhs));
                if *op == CmpOp::Ne {
                    ord != Some(Ordering::Equal)
                } else {
                    op.accepts(ord)
                }
            }
            Test::Bool(ne, lit) => {
                let eq = matches!(got, Got::Val(Value::Bool(b)) if b == lit);
                eq != *ne
            }
            Test::Null(ne) => matches!(got, Got::Val(Value::Null)) != *ne,
            Test::In(list) => list.contains(got),
            Test::Like(pattern) => got.with_str(|s| pattern.matches(s)).unwrap_or(false),
            Test::Regex(re) => got.with_str(|s| re.is_match(s)).unwrap_or(false),
        }
    }
}

/// The literals of an `in [...]` list, split by type so each is tested once.
#[derive(Debug, Clone, Default)]
struct InList {
    nums: Vec<f64>,
    /// Sorted and deduplicated, for binary search.
    strs: Vec<Box<str>>,
    /// `[false present, true present]`
    bools: [bool; 2],
    null: bool,
}

impl InList {
    fn contains(&self, got: Got<'_, '_>) -> bool {
        if !self.nums.is_empty() {
            if let Some(v) = got.numeric() {
                if self
                    .nums
                    .iter()
                    .any(|n| v.partial_cmp(n) == Some(Ordering::Equal))
                {
                    return true;
                }
            }
        }
        if !self.strs.is_empty()
            && got.with_str(|s| self.strs.binary_search_by(|x| (**x).cmp(s)).is_ok()) == Some(true)
        {
            return true;
        }
        match got {
            Got::Val(Value::Bool(b)) => self.bools[usize::from(*b)],
            Got::Val(Value::Null) => self.null,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LIKE / ILIKE
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LikeChar {
    Lit(char),
    /// `_`
    Any,
}

/// The pattern between two `%` wildcards (or an end of the pattern).
#[derive(Debug, Clone)]
struct LikeSegment {
    chars: Vec<LikeChar>,
    /// The segment's text and a substring searcher when it has no `_`.
    literal: Option<(String, Finder<'static>)>,
}

impl LikeSegment {
    fn new(chars: Vec<LikeChar>) -> Self {
        let literal = chars
            .iter()
            .map(|c| match c {
                LikeChar::Lit(c) => Some(*c),
                LikeChar::Any => None,
            })
            .collect::<Option<String>>()
            .map(|s| {
                let finder = Finder::new(s.as_bytes()).into_owned();
                (s, finder)
            });
        LikeSegment { chars, literal }
    }

    /// If the segment matches at the start of `text`, the byte length it covers.
    /// `fold`: `text` is ASCII and compared case-insensitively (the pattern is already lowercase).
    fn match_prefix(&self, text: &str, fold: bool) -> Option<usize> {
        if let Some((lit, _)) = &self.literal {
            let head = text.as_bytes().get(..lit.len())?;
            let ok = if fold {
                head.eq_ignore_ascii_case(lit.as_bytes())
            } else {
                head == lit.as_bytes()
            };
            return ok.then_some(lit.len());
        }
        let mut end = 0;
        let mut chars = text.chars();
        for pc in &self.chars {
            let c = chars.next()?;
            if let LikeChar::Lit(p) = pc {
                let c = if fold { c.to_ascii_lowercase() } else { c };
                if c != *p {
                    return None;
                }
            }
            end += c.len_utf8();
        }
        Some(end)
    }

    /// Leftmost match in `hay`: (start, end) byte offsets.
    fn find(&self, hay: &str, fold: bool) -> Option<(usize, usize)> {
        if let (Some((lit, finder)), false) = (&self.literal, fold) {
            let start = finder.find(hay.as_bytes())?;
            return Some((start, start + lit.len()));
        }
        if self.chars.is_empty() {
            return Some((0, 0));
        }
        hay.char_indices()
            .find_map(|(i, _)| self.match_prefix(&hay[i..], fold).map(|len| (i, i + len)))
    }
}

/// A compiled `LIKE`/`ILIKE` pattern: segments separated by `%`.
#[derive(Debug, Clone)]
struct LikePattern {
    /// Never empty; one segment means the pattern has no `%`.
    segments: Vec<LikeSegment>,
    /// `ILIKE`: the segments hold lowercase text.
    fold: bool,
}

impl LikePattern {
    fn new(pattern: &str, fold: bool) -> Self {
        let lowered;
        let pattern = if fold {
            lowered = pattern.to_lowercase();
            lowered.as_str()
        } else {
            pattern
        };
        let mut segments = Vec::new();
        let mut current = Vec::new();
        for c in pattern.chars() {
            match c {
                '%' => {
                    let seg = std::mem::take(&mut current);
                    // Empty middle segments (`%%`) match anywhere; keep only the first one.
                    if segments.is_empty() || !seg.is_empty() {
                        segments.push(LikeSegment::new(seg));
                    }
                }
                '_' => current.push(LikeChar::Any),
                c => current.push(LikeChar::Lit(c)),
            }
        }
        segments.push(LikeSegment::new(current));
        LikePattern { segments, fold }
    }

    fn matches(&self, text: &str) -> bool {
        if self.fold && !text.is_ascii() {
            return self.match_text(&text.to_lowercase(), false);
        }
        self.match_text(text, self.fold)
    }

    fn match_text(&self, text: &str, fold: bool) -> bool {
        let (first, rest) = self
            .segments
            .split_first()
            .expect("a LIKE pattern has at least one segment");
        let Some(mut pos) = first.match_prefix(text, fold) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return pos == text.len();
        };
        // The last segment is anchored at the end and must not overlap what is already consumed.
        let tail = &text[pos..];
        let need = last.chars.len();
        let last_start = if need == 0 {
            tail.len()
        } else {
            match tail.char_indices().rev().nth(need - 1) {
                Some((i, _)) => i,
                None => return false,
            }
        };
        if last.match_prefix(&tail[last_start..], fold) != Some(tail.len() - last_start) {
            return false;
        }
        let end = pos + last_start;
        // Leftmost-first placement of the middle segments is optimal: each has a fixed length in
        // characters, so an earlier match never leaves less room for the rest.
        for seg in middle {
            match seg.find(&text[pos..end], fold) {
                Some((_, seg_end)) => pos += seg_end,
                None => return false,
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Lexing and path parsing
// ---------------------------------------------------------------------------------------------

fn check_length(src: &str) -> Result<()> {
    if src.len() > MAX_EXPRESSION_BYTES {
        let mut cut = MAX_EXPRESSION_BYTES;
        while !src.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(Error::PathSyntax {
            field: String::new(),
            expression: src.to_owned(),
            position: src[..cut].chars().count(),
            reason: format!("the expression is longer than {MAX_EXPRESSION_BYTES} bytes"),
        });
    }
    Ok(())
}

/// Quotes a piece of source for a message: `'x'`, or `"'"` when it holds a single quote.
fn show(text: &str) -> String {
    if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// A position in the source (byte offset, always on a char boundary) with lexing helpers.
struct Cursor<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Cursor<'s> {
    fn new(src: &'s str) -> Self {
        Cursor { src, pos: 0 }
    }

    fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos += rest.len() - trimmed.len();
    }

    /// The run of identifier characters at the cursor (not consumed).
    fn word(&self) -> &'s str {
        let rest = self.rest();
        let end = rest
            .char_indices()
            .find(|&(_, c)| !is_ident_char(c))
            .map_or(rest.len(), |(i, _)| i);
        &rest[..end]
    }

    fn error(&self, byte_pos: usize, reason: impl Into<String>) -> Error {
        Error::PathSyntax {
            field: String::new(),
            expression: self.src.to_owned(),
            position: self.src[..byte_pos].chars().count(),
            reason: reason.into(),
        }
    }

    /// A path starting at the cursor (`@` or `$`, then segments with no whitespace between them).
    fn path(&mut self) -> Result<Path> {
        let start = self.pos;
        let root = match self.peek() {
            Some('@') => Root::Current,
            Some('$') => Root::Document,
            _ => {
                return Err(self.error(
                    start,
                    "a path starts with '@' (the event) or '$' (the root event), e.g. @.name",
                ))
            }
        };
        self.pos += 1;
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Some('.') => segments.push(self.dotted_segment()?),
                Some('[') => segments.push(self.bracket_segment()?),
                _ => break,
            }
        }
        Ok(Path::new(root, segments))
    }

    /// `.name` at the cursor.
    fn dotted_segment(&mut self) -> Result<Segment> {
        let dot = self.pos;
        self.pos += 1;
        match self.peek() {
            Some('.') => Err(self.error(dot, "recursive descent '..' is not supported")),
            Some('*') => Err(self.error(self.pos, "wildcards '*' are not supported")),
            Some(c) if is_ident_char(c) => {
                let name = self.word();
                self.pos += name.len();
                if self.peek() == Some('-') && self.peek2().is_some_and(is_ident_char) {
                    let rest = self.rest();
                    let end = rest
                        .char_indices()
                        .find(|&(_, c)| !(is_ident_char(c) || c == '-'))
                        .map_or(rest.len(), |(i, _)| i);
                    return Err(self.error(
                        self.pos,
                        format!(
                            "'-' cannot appear in a dotted member name; write ['{name}{}']",
                            &rest[..end]
                        ),
                    ));
                }
                Ok(Segment::Key(name.to_owned()))
            }
            _ => Err(self.error(
                self.pos,
                "expected a member name after '.' (names with other characters need brackets: \
                 ['my name'])",
            )),
        }
    }

    /// `['name']`, `["name"]` or `[0]` at the cursor.
    fn bracket_segment(&mut self) -> Result<Segment> {
        let open = self.pos;
        self.pos += 1;
        self.skip_ws();
        let segment = match self.peek() {
            Some('\'' | '"') => Segment::Key(self.quoted("quoted member name")?),
            Some(c) if c.is_ascii_digit() => {
                let digits_start = self.pos;
                let digits = self.rest().bytes().take_while(u8::is_ascii_digit).count();
                self.pos += digits;
                let index = self.src[digits_start..self.pos]
                    .parse::<usize>()
                    .map_err(|_| self.error(digits_start, "array index too large"))?;
                Segment::Index(index)
            }
            Some('*') => return Err(self.error(self.pos, "wildcards '*' are not supported")),
            Some('-') => {
                return Err(self.error(self.pos, "negative array indexes are not supported"))
            }
            Some('?') => {
                return Err(self.error(
                    self.pos,
                    "filter selectors [?…] are not supported; use a condition",
                ))
            }
            _ => {
                return Err(self.error(
                    self.pos,
                    "expected a quoted member name or an array index after '['",
                ))
            }
        };
        self.skip_ws();
        if !self.eat("]") {
            let reason = if self.peek() == Some(',') {
                "unions [a, b] are not supported".to_owned()
            } else {
                format!(
                    "expected ']' to close the '[' at position {}",
                    self.src[..open].chars().count()
                )
            };
            return Err(self.error(self.pos, reason));
        }
        Ok(segment)
    }

    /// A quoted text at the cursor (either quote; escapes `\'`, `\"`, `\\`).
    fn quoted(&mut self, what: &str) -> Result<String> {
        let open = self.pos;
        let quote = self.bump().expect("called at a quote");
        let mut out = String::new();
        loop {
            let rest = self.rest();
            let Some(stop) = rest.find([quote, '\\']) else {
                return Err(self.error(open, format!("unterminated {what}")));
            };
            out.push_str(&rest[..stop]);
            self.pos += stop;
            if self.bump() == Some(quote) {
                return Ok(out);
            }
            let escape = self.pos - 1;
            match self.bump() {
                Some(c @ ('\'' | '"' | '\\')) => out.push(c),
                Some(c) => {
                    return Err(self.error(
                        escape,
                        format!(
                            "unknown escape '\\{c}' in {what}; only \\', \\\" and \\\\ are \
                             allowed"
                        ),
                    ))
                }
                None => return Err(self.error(open, format!("unterminated {what}"))),
            }
        }
    }

    /// A number literal at the cursor: `-?digits(.digits)?([eE][+-]?digits)?`.
    fn number(&mut self) -> Result<f64> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let digits_from = |mut i: usize| {
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let j = digits_from(i);
        if j == i {
            return Err(self.error(start, "expected digits after '-'"));
        }
        if j > i + 1 && bytes[i] == b'0' {
            return Err(self.error(start, "leading zeros are not allowed in numbers"));
        }
        i = j;
        if bytes.get(i) == Some(&b'.') {
            let j = digits_from(i + 1);
            if j == i + 1 {
                return Err(self.error(i + 1, "expected digits after the decimal point"));
            }
            i = j;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            let mut k = i + 1;
            if matches!(bytes.get(k), Some(b'+' | b'-')) {
                k += 1;
            }
            let j = digits_from(k);
            if j == k {
                return Err(self.error(k, "expected digits in the exponent"));
            }
            i = j;
        }
        if let Some(c) = self.src[i..].chars().next() {
            if is_ident_char(c) || c == '.' {
                return Err(self.error(i, format!("unexpected '{c}' in a number")));
            }
        }
        let value: f64 = self.src[start..i]
            .parse()
            .map_err(|_| self.error(start, "invalid number"))?;
        if !value.is_finite() {
            return Err(self.error(start, "number out of range"));
        }
        self.pos = i;
        Ok(value)
    }
}

// ---------------------------------------------------------------------------------------------
// Condition parser
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Cmp(CmpOp),
    Like,
    ILike,
    Regex,
    In,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Cmp(CmpOp::Eq) => "==",
            Op::Cmp(CmpOp::Ne) => "!=",
            Op::Cmp(CmpOp::Lt) => "<",
            Op::Cmp(CmpOp::Le) => "<=",
            Op::Cmp(CmpOp::Gt) => ">",
            Op::Cmp(CmpOp::Ge) => ">=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::Regex => "=~",
            Op::In => "in",
        }
    }
}

enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

struct CondParser<'s, 'r> {
    cur: Cursor<'s>,
    resolver: &'r mut dyn SlotResolver,
    depth: usize,
}

impl CondParser<'_, '_> {
    fn err(&self, byte_pos: usize, reason: impl Into<String>) -> Error {
        self.cur.error(byte_pos, reason)
    }

    fn enter(&mut self, at: usize) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(
                at,
                format!("nesting of '(' and '!' deeper than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    /// An error for whatever is at the cursor, with hints for common mistakes.
    fn unexpected(&self, expected: &str) -> Error {
        let rest = self.cur.rest();
        let Some(c) = self.cur.peek() else {
            return self.err(
                self.cur.pos,
                format!("unexpected end of expression: {expected}"),
            );
        };
        let word = self.cur.word();
        let found = if word.is_empty() {
            &rest[..c.len_utf8()]
        } else {
            word
        };
        let hint = match c {
            '=' if !rest.starts_with("==") => "; use '==' to compare",
            '&' if !rest.starts_with("&&") => "; use '&&' for and",
            '|' if !rest.starts_with("||") => "; use '||' for or",
            '"' => "; string literals use single quotes",
            ')' if self.depth == 0 => "; it has no matching '('",
            _ => match word.to_ascii_lowercase().as_str() {
                "and" => "; use '&&' for and",
                "or" => "; use '||' for or",
                "not" => "; use '!' for not",
                _ => "",
            },
        };
        self.err(
            self.cur.pos,
            format!("unexpected {}: {expected}{hint}", show(found)),
        )
    }

    fn or(&mut self, after: &str) -> Result<Node> {
        let mut items = vec![self.and(after)?];
        loop {
            self.cur.skip_ws();
            if self.cur.eat("||") {
                items.push(self.and("||")?);
            } else {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::Or(items)
        })
    }

    fn and(&mut self, after: &str) -> Result<Node> {
        let mut items = vec![self.unary(after)?];
        loop {
            self.cur.skip_ws();
            if self.cur.eat("&&") {
                items.push(self.unary("&&")?);
            } else {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one item")
        } else {
            Node::And(items)
        })
    }

    fn unary(&mut self, after: &str) -> Result<Node> {
        self.cur.skip_ws();
        let start = self.cur.pos;
        if self.cur.peek() != Some('!') || self.cur.peek2() == Some('=') {
            return self.primary(after);
        }
        self.cur.pos += 1;
        self.enter(start)?;
        self.cur.skip_ws();
        let inner = match self.cur.peek() {
            Some('@' | '$') => {
                let path = self.cur.path()?;
                self.cur.skip_ws();
                if let Some((op, _)) = self.peek_op() {
                    return Err(self.err(
                        self.cur.pos,
                        format!(
                            "'!' applies to the path alone (an existence test); to negate the \
                             comparison write !(… {} …)",
                            op.name()
                        ),
                    ));
                }
                Node::Exists(self.resolver.resolve(&path))
            }
            Some('!' | '(') => self.unary("!")?,
            _ => return Err(self.unexpected("expected a path or '(' after '!'")),
        };
        self.depth -= 1;
        Ok(Node::Not(Box::new(inner)))
    }

    fn primary(&mut self, after: &str) -> Result<Node> {
        self.cur.skip_ws();
        let start = self.cur.pos;
        match self.cur.peek() {
            Some('(') => {
                self.cur.pos += 1;
                self.enter(start)?;
                let node = self.or("(")?;
                self.cur.skip_ws();
                if !self.cur.eat(")") {
                    let open = self.cur.src[..start].chars().count();
                    return Err(self
                        .unexpected(&format!("expected ')' to close the '(' at position {open}")));
                }
                self.depth -= 1;
                Ok(node)
            }
            Some('@' | '$') => {
                let path = self.cur.path()?;
                self.comparison(&path)
            }
            Some(c)
                if matches!(c, '\'' | '"' | '-' | '0'..='9')
                    || matches!(
                        self.cur.word().to_ascii_lowercase().as_str(),
                        "true" | "false" | "null"
                    ) =>
            {
                self.literal_first()
            }
            None if after.is_empty() => Err(self.err(start, "expected a condition")),
            None => Err(self.err(start, format!("expected a condition after '{after}'"))),
            Some(c) if is_ident_char(c) => {
                let word = self.cur.word();
                if matches!(word.to_ascii_lowercase().as_str(), "and" | "or" | "not") {
                    return Err(self.unexpected("expected a condition"));
                }
                Err(self.err(
                    start,
                    format!("a path starts with '@' or '$': write @.{word} instead of {word}"),
                ))
            }
            Some(_) => {
                Err(self.unexpected("expected a condition: a path such as @.name, '!' or '('"))
            }
        }
    }

    /// The operator at the cursor, if any, without consuming it.
    fn peek_op(&self) -> Option<(Op, usize)> {
        let rest = self.cur.rest();
        let symbols: [(&str, Op); 7] = [
            ("==", Op::Cmp(CmpOp::Eq)),
            ("=~", Op::Regex),
            ("!=", Op::Cmp(CmpOp::Ne)),
            ("<=", Op::Cmp(CmpOp::Le)),
            ("<", Op::Cmp(CmpOp::Lt)),
            (">=", Op::Cmp(CmpOp::Ge)),
            (">", Op::Cmp(CmpOp::Gt)),
        ];
        for (text, op) in symbols {
            if rest.starts_with(text) {
                return Some((op, text.len()));
            }
        }
        let word = self.cur.word();
        let op = if word.eq_ignore_ascii_case("like") {
            Op::Like
        } else if word.eq_ignore_ascii_case("ilike") {
            Op::ILike
        } else if word.eq_ignore_ascii_case("in") {
            Op::In
        } else {
            return None;
        };
        Some((op, word.len()))
    }

    /// Parses the operator and right-hand side after `path`; no operator means existence.
    fn comparison(&mut self, path: &Path) -> Result<Node> {
        self.cur.skip_ws();
        let Some((op, len)) = self.peek_op() else {
            return Ok(Node::Exists(self.resolver.resolve(path)));
        };
        let op_pos = self.cur.pos;
        self.cur.pos += len;
        let test =
            match op {
                Op::Cmp(cmp) => {
                    let (lit, _) = self.literal(&format!("after '{}'", op.name()))?;
                    self.cmp_test(cmp, lit, op_pos)?
                }
                Op::Like | Op::ILike => {
                    self.cur.skip_ws();
                    let at = self.cur.pos;
                    match self.cur.peek() {
                        Some('\'') => {}
                        Some('"') => return Err(self.err(
                            at,
                            "string literals use single quotes: write 'pattern', not \"pattern\"",
                        )),
                        _ => {
                            return Err(self.err(
                                at,
                                format!(
                                    "expected a single-quoted pattern after '{}', such as 'app%'",
                                    op.name()
                                ),
                            ))
                        }
                    }
                    let pattern = self.cur.quoted("string literal")?;
                    let like = LikePattern::new(&pattern, op == Op::ILike);
                    Test::Like(Box::new(like))
                }
                Op::Regex => self.regex()?,
                Op::In => self.list()?,
            };
        self.no_chain()?;
        Ok(Node::Test(self.operand(path), test))
    }

    /// `literal op path`: flipped into `path op' literal`.
    fn literal_first(&mut self) -> Result<Node> {
        let (lit, _) = self.literal("")?;
        self.cur.skip_ws();
        let Some((op, len)) = self.peek_op() else {
            return Err(self.unexpected("expected a comparison operator after the value"));
        };
        let op_pos = self.cur.pos;
        let Op::Cmp(cmp) = op else {
            return Err(self.err(
                op_pos,
                format!("the path must be on the left of '{}'", op.name()),
            ));
        };
        self.cur.pos += len;
        self.cur.skip_ws();
        if !matches!(self.cur.peek(), Some('@' | '$')) {
            return Err(self.err(
                self.cur.pos,
                format!(
                    "expected a path after '{}' (a comparison needs a path on one side)",
                    op.name()
                ),
            ));
        }
        let path = self.cur.path()?;
        let flipped = match cmp {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            same => same,
        };
        let test = self.cmp_test(flipped, lit, op_pos)?;
        self.no_chain()?;
        Ok(Node::Test(self.operand(&path), test))
    }

    fn no_chain(&mut self) -> Result<()> {
        self.cur.skip_ws();
        if self.peek_op().is_some() {
            return Err(self.err(
                self.cur.pos,
                "chained comparisons are not supported; combine comparisons with &&",
            ));
        }
        Ok(())
    }

    fn operand(&mut self, path: &Path) -> Operand {
        if let (Some(Segment::Key(last)), Some(parent)) = (path.segments.last(), path.parent()) {
            if last == "length" {
                return Operand::Length {
                    full: self.resolver.resolve(path),
                    parent: self.resolver.resolve(&parent),
                };
            }
        }
        Operand::Slot(self.resolver.resolve(path))
    }

    fn cmp_test(&self, op: CmpOp, lit: Lit, op_pos: usize) -> Result<Test> {
        let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
        let ne = op == CmpOp::Ne;
        Ok(match lit {
            Lit::Num(v) => Test::Num(op, v),
            Lit::Str(s) => Test::Str(op, s.into_boxed_str()),
            Lit::Bool(_) | Lit::Null if ordering => {
                let name = Op::Cmp(op).name();
                return Err(self.err(
                    op_pos,
                    format!("'{name}' cannot compare with true, false or null; use == or !="),
                ));
            }
            Lit::Bool(b) => Test::Bool(ne, b),
            Lit::Null => Test::Null(ne),
        })
    }

    /// A literal at the cursor; `context` completes "expected a value …".
    fn literal(&mut self, context: &str) -> Result<(Lit, usize)> {
        self.cur.skip_ws();
        let at = self.cur.pos;
        let expected = if context.is_empty() {
            "expected a value".to_owned()
        } else {
            format!("expected a value {context}")
        };
        let lit = match self.cur.peek() {
            Some('\'') => Lit::Str(self.cur.quoted("string literal")?),
            Some('"') => {
                return Err(self.err(
                    at,
                    "string literals use single quotes: write 'text', not \"text\"",
                ))
            }
            Some('-' | '0'..='9') => Lit::Num(self.cur.number()?),
            Some('[') => {
                return Err(self.err(at, "a list [...] is only allowed after 'in'"));
            }
            Some('@' | '$') => {
                return Err(self.err(
                    at,
                    "comparing two paths is not supported; compare a path with a literal",
                ))
            }
            Some(c) if is_ident_char(c) => {
                let word = self.cur.word();
                let lit = match word.to_ascii_lowercase().as_str() {
                    "true" => Lit::Bool(true),
                    "false" => Lit::Bool(false),
                    "null" => Lit::Null,
                    _ => {
                        return Err(self.err(
                            at,
                            format!(
                                "{expected}: '{word}' is not a value (string literals need \
                                 single quotes: '{word}')"
                            ),
                        ))
                    }
                };
                self.cur.pos += word.len();
                lit
            }
            None => return Err(self.err(at, expected)),
            Some(_) => {
                return Err(self.unexpected(&format!(
                    "{expected} (a 'string', a number, true, false or null)"
                )))
            }
        };
        Ok((lit, at))
    }

    fn list(&mut self) -> Result<Test> {
        self.cur.skip_ws();
        let open = self.cur.pos;
        if !self.cur.eat("[") {
            let reason = if self.cur.peek() == Some('(') {
                "a list after 'in' is written with brackets: in ['a', 'b']"
            } else {
                "expected a list after 'in', such as ['a', 'b']"
            };
            return Err(self.err(open, reason));
        }
        let mut list = InList::default();
        self.cur.skip_ws();
        if !self.cur.eat("]") {
            loop {
                match self.literal("in the list")?.0 {
                    Lit::Num(v) => list.nums.push(v),
                    Lit::Str(s) => list.strs.push(s.into_boxed_str()),
                    Lit::Bool(b) => list.bools[usize::from(b)] = true,
                    Lit::Null => list.null = true,
                }
                self.cur.skip_ws();
                if self.cur.eat(",") {
                    continue;
                }
                if self.cur.eat("]") {
                    break;
                }
                let open = self.cur.src[..open].chars().count();
                return Err(self.unexpected(&format!(
                    "expected ',' or ']' in the list opened at position {open}"
                )));
            }
        }
        list.strs.sort();
        list.strs.dedup();
        Ok(Test::In(Box::new(list)))
    }

    fn regex(&mut self) -> Result<Test> {
        self.cur.skip_ws();
        let open = self.cur.pos;
        if !self.cur.eat("/") {
            return Err(self.err(open, "expected a regular expression written /…/ after '=~'"));
        }
        let mut pattern = String::new();
        loop {
            match self.cur.bump() {
                None => return Err(self.err(open, "unterminated regular expression")),
                Some('/') => break,
                Some('\\') => match self.cur.bump() {
                    Some('/') => pattern.push('/'),
                    Some(c) => {
                        pattern.push('\\');
                        pattern.push(c);
                    }
                    None => return Err(self.err(open, "unterminated regular expression")),
                },
                Some(c) => pattern.push(c),
            }
        }
        let flags = self.cur.word();
        if !matches!(flags, "" | "i") {
            return Err(self.err(
                self.cur.pos,
                format!("unknown regular-expression flags '{flags}' (only 'i' is supported)"),
            ));
        }
        self.cur.pos += flags.len();
        let case_insensitive = flags == "i";
        let re = RegexBuilder::new(&pattern)
            .case_insensitive(case_insensitive)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let text = e.to_string();
                // Syntax errors render several lines (pattern, caret); keep the "error:" line.
                let detail = text
                    .lines()
                    .find_map(|l| l.strip_prefix("error: "))
                    .unwrap_or(&text)
                    .trim()
                    .to_owned();
                self.err(open, format!("invalid regular expression: {detail}"))
            })?;
        Ok(Test::Regex(Box::new(re)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::collections::HashMap;

    /// Assigns slots in order of first mention. Without flattening `@` and `$` share root slots;
    /// with flattening `@` paths get element slots.
    #[derive(Default)]
    struct TestResolver {
        flatten: bool,
        map: HashMap<Path, Slot>,
        roots: u32,
        elements: u32,
    }

    impl TestResolver {
        fn key(&self, path: &Path) -> Path {
            if self.flatten {
                path.clone()
            } else {
                Path::new(Root::Current, path.segments.clone())
            }
        }
    }

    impl SlotResolver for TestResolver {
        fn resolve(&mut self, path: &Path) -> Slot {
            let key = self.key(path);
            if let Some(slot) = self.map.get(&key) {
                return *slot;
            }
            let slot = if self.flatten && key.root == Root::Current {
                self.elements += 1;
                Slot::Element(self.elements - 1)
            } else {
                self.roots += 1;
                Slot::Root(self.roots - 1)
            };
            self.map.insert(key, slot);
            slot
        }
    }

    fn s(text: &'static str) -> Value<'static> {
        Value::Str(Cow::Borrowed(text))
    }
    fn n(raw: &'static str) -> Value<'static> {
        Value::Number(raw)
    }
    fn arr(raw: &'static str, len: usize) -> Value<'static> {
        Value::Array { raw, len }
    }
    fn obj(raw: &'static str) -> Value<'static> {
        Value::Object { raw }
    }

    type Fields<'f> = &'f [(&'static str, Value<'static>)];

    fn run(expr: &str, fields: Fields<'_>, flatten: bool) -> bool {
        let mut resolver = TestResolver {
            flatten,
            ..TestResolver::default()
        };
        let cond = Condition::compile(expr, &mut resolver)
            .unwrap_or_else(|e| panic!("{expr:?} should compile: {e}"));
        let mut root = vec![None; resolver.roots as usize];
        let mut element = vec![None; resolver.elements as usize];
        for (path, value) in fields {
            let path = parse_path(path).expect("test path");
            match resolver.map.get(&resolver.key(&path)) {
                Some(Slot::Root(i)) => root[*i as usize] = Some(value.clone()),
                Some(Slot::Element(i)) => element[*i as usize] = Some(value.clone()),
                None => {}
            }
        }
        cond.eval(&root, &element)
    }

    fn check(cases: &[(&str, Fields<'_>, bool)]) {
        for (expr, fields, want) in cases {
            assert_eq!(run(expr, fields, false), *want, "{expr:?} on {fields:?}");
        }
    }

    fn compile_err(expr: &str) -> (usize, String) {
        let mut resolver = TestResolver::default();
        match Condition::compile(expr, &mut resolver) {
            Ok(c) => panic!("{expr:?} should not compile: {c:?}"),
            Err(Error::PathSyntax {
                field,
                expression,
                position,
                reason,
            }) => {
                assert!(field.is_empty());
                assert_eq!(expression, expr);
                (position, reason)
            }
            Err(other) => panic!("unexpected error kind {other:?}"),
        }
    }

    #[test]
    fn spec_table_comparisons() {
        check(&[
            ("@.app.version == 2.0", &[("@.app.version", n("2"))], true),
            ("@.app.version == 2.0", &[("@.app.version", s("2.0"))], true),
            ("@.app.version == 2.0", &[("@.app.version", s("2"))], true),
            (
                "@.app.version == 2.0",
                &[("@.app.version", n("2.5"))],
                false,
            ),
            ("@.app.version == 2.0", &[("@.app.version", s("v2"))], false),
            ("@.app.version == 2.0", &[], false),
            ("@.app.version != 2.0", &[("@.app.version", n("2.1"))], true),
            (
                "@.app.version != 2.0",
                &[("@.app.version", s("2.0"))],
                false,
            ),
            ("@.app.version != 2.0", &[], false),
            ("@.duration > 60", &[("@.duration", n("61"))], true),
            ("@.duration > 60", &[("@.duration", n("60"))], false),
            (
                "@.app.buildNum >= 4102",
                &[("@.app.buildNum", n("4102"))],
                true,
            ),
            (
                "@.app.buildNum >= 4102",
                &[("@.app.buildNum", n("4101"))],
                false,
            ),
            (
                "@.app.buildNum < 3000",
                &[("@.app.buildNum", n("2999.5"))],
                true,
            ),
            (
                "@.app.buildNum < 3000",
                &[("@.app.buildNum", n("3000"))],
                false,
            ),
            ("@.app.version <= 1.9", &[("@.app.version", s("1.9"))], true),
            (
                "@.app.version <= 1.9",
                &[("@.app.version", n("1.91"))],
                false,
            ),
            (
                "@.eventName LIKE 'app%'",
                &[("@.eventName", s("appOpen"))],
                true,
            ),
            (
                "@.eventName LIKE 'app%'",
                &[("@.eventName", s("AppOpen"))],
                false,
            ),
            (
                "@.eventName LIKE 'app%'",
                &[("@.eventName", s("myapp"))],
                false,
            ),
            (
                "@.eventName ILIKE 'ApP%'",
                &[("@.eventName", s("appOpen"))],
                true,
            ),
            (
                "@.eventName ILIKE 'ApP%'",
                &[("@.eventName", s("APPCLOSE"))],
                true,
            ),
            (
                "@.eventName ILIKE 'ApP%'",
                &[("@.eventName", s("xapp"))],
                false,
            ),
        ]);
    }

    #[test]
    fn spec_table_regex_in() {
        check(&[
            ("@.color =~ /gr(a|e)y/", &[("@.color", s("grey"))], true),
            ("@.color =~ /gr(a|e)y/", &[("@.color", s("gray"))], true),
            (
                "@.color =~ /gr(a|e)y/",
                &[("@.color", s("dark grey"))],
                true,
            ),
            ("@.color =~ /gr(a|e)y/", &[("@.color", s("green"))], false),
            ("@.color =~ /gr(a|e)y/", &[("@.color", s("GREY"))], false),
            ("@.color =~ /gr(a|e)y/i", &[("@.color", s("GREY"))], true),
            (
                "@.eventName in ['appOpen', 'appClose']",
                &[("@.eventName", s("appClose"))],
                true,
            ),
            (
                "@.eventName in ['appOpen', 'appClose']",
                &[("@.eventName", s("appopen"))],
                false,
            ),
            ("@.eventName in ['appOpen', 'appClose']", &[], false),
        ]);
    }

    #[test]
    fn spec_table_existence_logic_length() {
        check(&[
            ("@.error", &[("@.error", Value::Null)], true),
            ("@.error", &[("@.error", s("boom"))], true),
            ("@.error", &[], false),
            ("!(@.color)", &[], true),
            ("!(@.color)", &[("@.color", Value::Null)], false),
            ("!@.color", &[], true),
            (
                "@.app.version==2.0 && @.device.platform == 'ios'",
                &[("@.app.version", n("2")), ("@.device.platform", s("ios"))],
                true,
            ),
            (
                "@.app.version==2.0 && @.device.platform == 'ios'",
                &[
                    ("@.app.version", n("2")),
                    ("@.device.platform", s("android")),
                ],
                false,
            ),
            (
                "@.eventName == 'AppClose' || @.eventName == 'AppBackground'",
                &[("@.eventName", s("AppBackground"))],
                true,
            ),
            (
                "@.eventName == 'AppClose' || @.eventName == 'AppBackground'",
                &[("@.eventName", s("AppOpen"))],
                false,
            ),
            (
                "@.player.weapons.length > 0",
                &[("@.player.weapons", arr("[1,2]", 2))],
                true,
            ),
            (
                "@.player.weapons.length > 0",
                &[("@.player.weapons", arr("[]", 0))],
                false,
            ),
            ("@.player.weapons.length > 0", &[], false),
            ("@.duration_ms>500", &[("@.duration_ms", n("501"))], true),
            ("@.duration_ms>500", &[("@.duration_ms", n("500"))], false),
            (
                "@.device.platform == 'ios'",
                &[("@.device.platform", s("ios"))],
                true,
            ),
            (
                "@['device']['platform'] == 'ios'",
                &[("@.device.platform", s("ios"))],
                true,
            ),
            (
                "@['device'].platform == 'ios'",
                &[("@.device.platform", s("ios"))],
                true,
            ),
            (
                "@[\"device\"].platform == 'ios'",
                &[("@.device.platform", s("ios"))],
                true,
            ),
        ]);
    }

    #[test]
    fn three_notations_are_one_path() {
        let want = Path::new(
            Root::Current,
            vec![
                Segment::Key("device".into()),
                Segment::Key("platform".into()),
            ],
        );
        for src in [
            "@.device.platform",
            "@['device']['platform']",
            "@['device'].platform",
        ] {
            assert_eq!(parse_path(src).unwrap(), want, "{src}");
        }
    }

    #[test]
    fn flattening_example() {
        let expr = "$.event_name == 'Impressions' && @.duration_ms>500";
        let element = |d: &'static str| -> Vec<(&'static str, Value<'static>)> {
            vec![
                ("$.event_name", s("Impressions")),
                ("@.duration_ms", n(d)),
                ("@.item_id", s("abc123")),
            ]
        };
        assert!(run(expr, &element("4744"), true));
        assert!(run(expr, &element("5500"), true));
        assert!(!run(expr, &element("499"), true));
        assert!(!run(
            expr,
            &[("$.event_name", s("Other")), ("@.duration_ms", n("4744"))],
            true
        ));
        // `$` reads the root array, `@` the element array.
        let mut resolver = TestResolver {
            flatten: true,
            ..TestResolver::default()
        };
        let cond = Condition::compile(expr, &mut resolver).unwrap();
        assert_eq!(resolver.map.len(), 2);
        let root = [Some(s("Impressions"))];
        let elem = [Some(n("499"))];
        assert!(!cond.eval(&root, &elem));
        let elem = [Some(n("5500"))];
        assert!(cond.eval(&root, &elem));
        // Slots out of range read as missing instead of panicking.
        assert!(!cond.eval(&[], &[]));
    }

    #[test]
    fn precedence() {
        const A: (&str, Value<'static>) = ("@.a", Value::Bool(true));
        const B: (&str, Value<'static>) = ("@.b", Value::Bool(true));
        const C: (&str, Value<'static>) = ("@.c", Value::Bool(true));
        check(&[
            // && binds tighter than ||.
            ("@.a || @.b && @.c", &[A], true),
            ("(@.a || @.b) && @.c", &[A], false),
            ("@.a && @.b || @.c", &[C], true),
            ("@.a && (@.b || @.c)", &[C], false),
            // ! binds tighter than && and ||.
            ("!@.a && @.b", &[B], true),
            ("!@.a || @.b", &[A], false),
            ("!(@.a && @.b)", &[A], true),
            ("!(@.a && @.b)", &[A, B], false),
            ("!!@.a", &[A], true),
            ("! ! ( @.a )", &[A], true),
            ("@.a && @.b && @.c", &[A, B, C], true),
            ("@.a && @.b && @.c", &[A, C], false),
            ("@.x == 1 || @.x == 2 || @.x == 3", &[("@.x", n("3"))], true),
            ("((((@.a))))", &[A], true),
        ]);
    }

    #[test]
    fn typing_numeric_literal() {
        check(&[
            // Numeric literal: cast to float.
            ("@.x == 2", &[("@.x", n("2.0"))], true),
            ("@.x == 2", &[("@.x", s("2e0"))], true),
            ("@.x == 2", &[("@.x", s(" 2"))], false),
            ("@.x == 2", &[("@.x", Value::Bool(true))], false),
            ("@.x == 2", &[("@.x", n("1e999"))], false),
            (
                "@.x == -12345678910112",
                &[("@.x", n("-12345678910112"))],
                true,
            ),
            ("@.x == 1e3", &[("@.x", n("1000"))], true),
            ("@.x == 0.1", &[("@.x", s("0.1"))], true),
            ("@.x == 0", &[("@.x", n("-0"))], true),
            ("@.x > 10", &[("@.x", s("9"))], false),
            ("@.x > 10", &[("@.x", s("abc"))], false),
            ("@.x < 10", &[("@.x", Value::Null)], false),
        ]);
    }

    #[test]
    fn typing_string_literal() {
        check(&[
            // String literal: string form, byte-wise ordering.
            ("@.x == 'a'", &[("@.x", s("a"))], true),
            ("@.x == '5'", &[("@.x", n("5"))], true),
            ("@.x == '1.5'", &[("@.x", n("1.50"))], true),
            ("@.x == '1.50'", &[("@.x", n("1.50"))], false),
            ("@.x == '2.0'", &[("@.x", n("2.0"))], false),
            ("@.x == '2'", &[("@.x", n("2.0"))], true),
            ("@.x == '0'", &[("@.x", n("-0"))], true),
            ("@.x == 'true'", &[("@.x", Value::Bool(true))], true),
            ("@.x == ''", &[("@.x", Value::Null)], false),
            ("@.x == '[1,2]'", &[("@.x", arr("[1,2]", 2))], false),
            ("@.x == '{}'", &[("@.x", obj("{}"))], false),
            ("@.x < 'b'", &[("@.x", s("a"))], true),
            ("@.x < 'a'", &[("@.x", s("Z"))], true),
            ("@.x > 'z'", &[("@.x", s("é"))], true),
            ("@.x >= 'abc'", &[("@.x", s("abc"))], true),
            ("@.x <= 'ab'", &[("@.x", s("abc"))], false),
            ("@.x < '10'", &[("@.x", n("9"))], false),
            ("@.x < 'a'", &[("@.x", Value::Null)], false),
        ]);
    }

    #[test]
    fn typing_bool_null_and_not_equal() {
        check(&[
            // Booleans and null.
            ("@.x == true", &[("@.x", Value::Bool(true))], true),
            ("@.x == TRUE", &[("@.x", Value::Bool(true))], true),
            ("@.x == true", &[("@.x", s("true"))], false),
            ("@.x == false", &[("@.x", Value::Bool(true))], false),
            ("@.x == null", &[("@.x", Value::Null)], true),
            ("@.x == null", &[("@.x", s(""))], false),
            ("@.x == null", &[], false),
            ("@.x != null", &[("@.x", s(""))], true),
            ("@.x != null", &[("@.x", Value::Null)], false),
            ("@.x != true", &[("@.x", Value::Bool(false))], true),
            ("@.x != true", &[("@.x", s("true"))], true),
            // `!=` on a present field with a type mismatch is true.
            ("@.x != 'a'", &[("@.x", n("5"))], true),
            ("@.x != 'a'", &[("@.x", Value::Null)], true),
            ("@.x != 'a'", &[("@.x", arr("[]", 0))], true),
            ("@.x != 2", &[("@.x", s("abc"))], true),
            ("@.x != 2", &[("@.x", s("2"))], false),
        ]);
    }

    #[test]
    fn typing_literal_left_and_in() {
        check(&[
            // Literal on the left is flipped.
            ("500 < @.x", &[("@.x", n("501"))], true),
            ("500 < @.x", &[("@.x", n("500"))], false),
            ("500 >= @.x", &[("@.x", n("500"))], true),
            ("'ios' == @.p", &[("@.p", s("ios"))], true),
            ("null == @.p", &[("@.p", Value::Null)], true),
            // in lists of mixed literals.
            ("@.x in [1, 'a', true, null]", &[("@.x", n("1.0"))], true),
            ("@.x in [1, 'a', true, null]", &[("@.x", s("a"))], true),
            (
                "@.x in [1, 'a', true, null]",
                &[("@.x", Value::Bool(true))],
                true,
            ),
            ("@.x in [1, 'a', true, null]", &[("@.x", Value::Null)], true),
            (
                "@.x in [1, 'a', true, null]",
                &[("@.x", Value::Bool(false))],
                false,
            ),
            ("@.x in [1, 'a', true, null]", &[("@.x", s("b"))], false),
            ("@.x in ['1']", &[("@.x", n("1"))], true),
            ("@.x IN []", &[("@.x", n("1"))], false),
            ("@.x in ['c','b','a','b']", &[("@.x", s("b"))], true),
        ]);
    }

    #[test]
    fn typing_regex_like() {
        check(&[
            // Regex and LIKE on string forms.
            ("@.x =~ /^4\\d\\d$/", &[("@.x", n("404"))], true),
            ("@.x =~ /^1\\.5$/", &[("@.x", n("1.50"))], true),
            ("@.x =~ /true/", &[("@.x", Value::Bool(true))], true),
            ("@.x =~ /.*/", &[("@.x", Value::Null)], false),
            ("@.x =~ /.*/", &[("@.x", obj("{}"))], false),
            ("@.x =~ /a\\/b/", &[("@.x", s("a/b"))], true),
            ("@.x LIKE '4%'", &[("@.x", n("404"))], true),
            ("@.x LIKE '%'", &[("@.x", arr("[]", 0))], false),
            ("@.x like 'f_lse'", &[("@.x", Value::Bool(false))], true),
            ("@.x ILIKE 'ÉCOLE%'", &[("@.x", s("école normale"))], true),
            ("@.x ILIKE 'é%'", &[("@.x", s("ÉCOLE"))], true),
        ]);
    }

    #[test]
    fn missing_fields_make_every_comparison_false() {
        for expr in [
            "@.x == 1",
            "@.x != 1",
            "@.x != 'a'",
            "@.x < 'a'",
            "@.x == null",
            "@.x != null",
            "@.x == true",
            "@.x != false",
            "@.x in [1, 'a', null]",
            "@.x LIKE '%'",
            "@.x ILIKE '%'",
            "@.x =~ //",
            "@.x",
            "@.x.length == 0",
            "@.x.length != 0",
            "0 == @.x",
        ] {
            assert!(!run(expr, &[("@.y", n("1"))], false), "{expr}");
        }
        // Their negations are therefore true.
        assert!(run("!(@.x != 1)", &[], false));
    }

    #[test]
    fn length() {
        check(&[
            ("@.w.length == 2", &[("@.w", arr("[1, 2]", 2))], true),
            ("@.w.length == '2'", &[("@.w", arr("[1, 2]", 2))], true),
            ("@.w.length in [1, 2]", &[("@.w", arr("[1, 2]", 2))], true),
            ("@.w.length =~ /^2$/", &[("@.w", arr("[1, 2]", 2))], true),
            ("@.w.length != 3", &[("@.w", arr("[1, 2]", 2))], true),
            ("@.w.length == true", &[("@.w", arr("[1, 2]", 2))], false),
            ("@.w.length != null", &[("@.w", arr("[1, 2]", 2))], true),
            ("@.name.length == 3", &[("@.name", s("abc"))], true),
            ("@.name.length == 2", &[("@.name", s("éé"))], true),
            ("@.name.length == 0", &[("@.name", s(""))], true),
            (
                "@.o.length == 5",
                &[("@.o", obj("{\"length\":5}")), ("@.o.length", n("5"))],
                true,
            ),
            ("@.o.length == 'x'", &[("@.o.length", s("x"))], true),
            ("@.o.length == 0", &[("@.o", obj("{}"))], false),
            ("@.o.length == 0", &[("@.o", n("0"))], false),
            ("@.o.length == 0", &[("@.o", Value::Null)], false),
            ("0 < @.w.length", &[("@.w", arr("[1]", 1))], true),
            ("@['w']['length'] > 0", &[("@.w", arr("[1]", 1))], true),
            // A bare `.length` is a plain existence test of the member.
            ("@.w.length", &[("@.w", arr("[1]", 1))], false),
            ("@.w.length", &[("@.w.length", n("1"))], true),
        ]);
        // `@.length` under flattening: the element itself.
        assert!(run("@.length > 2", &[("@", s("abc"))], true));
        // Resolution: full path then parent.
        let mut resolver = TestResolver::default();
        Condition::compile("@.a.length > 0", &mut resolver).unwrap();
        assert_eq!(
            resolver.map.get(&parse_path("@.a.length").unwrap()),
            Some(&Slot::Root(0))
        );
        assert_eq!(
            resolver.map.get(&parse_path("@.a").unwrap()),
            Some(&Slot::Root(1))
        );
    }

    #[test]
    fn whitespace_and_keywords() {
        check(&[
            (
                "  @.x==1&&@.y!='a'||@.z  ",
                &[("@.x", n("1")), ("@.y", s("b"))],
                true,
            ),
            ("\t@.x\n==\n1\n", &[("@.x", n("1"))], true),
            ("@.x like'a%'", &[("@.x", s("ab"))], true),
            ("@.x Like 'a%'", &[("@.x", s("ab"))], true),
            ("@.x IlIkE 'A%'", &[("@.x", s("ab"))], true),
            ("@.x in['a']", &[("@.x", s("a"))], true),
            ("@.x In ['a']", &[("@.x", s("a"))], true),
            ("@.x == Null", &[("@.x", Value::Null)], true),
            ("@.x=='it\\'s'", &[("@.x", s("it's"))], true),
            ("@.x=='back\\\\slash'", &[("@.x", s("back\\slash"))], true),
            ("@['a b'] == 1", &[("@['a b']", n("1"))], true),
            ("@.$device == 1", &[("@.$device", n("1"))], true),
            ("@.日本 == 1", &[("@['日本']", n("1"))], true),
            ("@.items[1].id == 'b'", &[("@.items[1].id", s("b"))], true),
            (
                "@.items[ 1 ][ 'id' ] == 'b'",
                &[("@.items[1].id", s("b"))],
                true,
            ),
        ]);
        let mut resolver = TestResolver::default();
        for src in ["", "   ", "\n\t"] {
            assert!(Condition::compile(src, &mut resolver)
                .unwrap()
                .is_always_true());
        }
        assert!(!Condition::compile("@.x", &mut resolver)
            .unwrap()
            .is_always_true());
        assert!(Condition::compile("", &mut resolver)
            .unwrap()
            .eval(&[], &[]));
    }

    #[test]
    fn like_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("a_c", "abc", true),
            ("a_c", "ac", false),
            ("a_c", "aéc", true),
            ("%", "", true),
            ("%", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("a%c", "abxc", true),
            ("a%c", "ac", true),
            ("a%c", "abxcd", false),
            ("%b%", "abc", true),
            ("%b%", "ac", false),
            ("%a%a%", "aa", true),
            ("%a%a%", "a", false),
            ("_%_", "a", false),
            ("_%_", "ab", true),
            ("ab%ab", "ab", false),
            ("ab%ab", "abab", true),
            ("ab%ab", "aab", false),
            ("%ab", "aab", true),
            ("a%%b", "ab", true),
            ("%x_z%", "wxyz", true),
            ("%x_z%", "wxz", false),
            ("a%b_d%e", "aXbcdYe", true),
            ("a%b_d%e", "aXbcYe", false),
            ("100%", "100% sure", true),
            ("a\\_b", "a\\xb", true),
            ("a\\_b", "a_b", false),
            ("a_b", "a_b", true),
            ("a\nb", "a\nb", true),
            ("a%", "a\nb", true),
            ("%é", "café", true),
        ];
        for (pattern, text, want) in cases {
            let like = LikePattern::new(pattern, false);
            assert_eq!(like.matches(text), *want, "{text:?} LIKE {pattern:?}");
        }
        let icases: &[(&str, &str, bool)] = &[
            ("ApP%", "APPLE", true),
            ("%OPEN", "appopen", true),
            ("a_C", "ABC", true),
            ("%X%", "axb", true),
            ("é%", "ÉCOLE", true),
            ("%É", "CAFé", true),
            ("abc", "abd", false),
        ];
        for (pattern, text, want) in icases {
            let like = LikePattern::new(pattern, true);
            assert_eq!(like.matches(text), *want, "{text:?} ILIKE {pattern:?}");
        }
    }

    #[test]
    fn number_string_fast_path_matches_grouping_form() {
        for raw in [
            "42",
            "-7",
            "0",
            "-0",
            "1.50",
            "1e3",
            "100.0",
            "1e999",
            "123456789012345678901",
        ] {
            let got = Got::Val(&Value::Number(raw))
                .with_str(str::to_owned)
                .unwrap();
            assert_eq!(got, Value::Number(raw).group_string(), "{raw}");
        }
        let mut buf = [0u8; 20];
        assert_eq!(format_usize(0, &mut buf), "0");
        assert_eq!(format_usize(usize::MAX, &mut buf), usize::MAX.to_string());
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, usize, &str)] = &[
            ("@.x == ", 7, "expected a value after '=='"),
            ("@.x ==", 6, "expected a value after '=='"),
            ("@.x >= foo", 7, "'foo' is not a value"),
            ("@.x == \"a\"", 7, "string literals use single quotes"),
            ("@.é == \"a\"", 7, "string literals use single quotes"),
            ("@.x LIKE \"a%\"", 9, "single quotes"),
            ("@.x LIKE 5", 9, "single-quoted pattern"),
            ("@.x == 'abc", 7, "unterminated string literal"),
            ("@.x == 'a\\nb'", 9, "unknown escape"),
            ("@.x = 5", 4, "use '==' to compare"),
            ("@.x == 1 & @.y", 9, "use '&&'"),
            ("@.x == 1 | @.y", 9, "use '||'"),
            ("@.x == 1 and @.y", 9, "use '&&'"),
            ("@.x == 1 OR @.y", 9, "use '||'"),
            (
                "(@.x == 1",
                9,
                "expected ')' to close the '(' at position 0",
            ),
            ("@.x == 1)", 8, "no matching '('"),
            ("@.x && ", 7, "expected a condition after '&&'"),
            ("@.x || ", 7, "expected a condition after '||'"),
            ("()", 1, "expected a condition"),
            ("(@.x))", 5, "no matching '('"),
            ("!", 1, "after '!'"),
            ("! 5", 2, "after '!'"),
            ("!@.x == 5", 5, "!(… == …)"),
            ("!@.x in [1]", 5, "!(… in …)"),
            ("eventName == 'x'", 0, "write @.eventName"),
            ("@.a..b", 3, "recursive descent"),
            ("@.a.*", 4, "wildcards"),
            ("@.a[*]", 4, "wildcards"),
            ("@.a[-1]", 4, "negative"),
            ("@.a[?(@.b)]", 4, "filter selectors"),
            ("@.a['b', 'c']", 7, "unions"),
            ("@.a['b'", 7, "expected ']'"),
            ("@.a[18446744073709551616]", 4, "too large"),
            ("@.a.", 4, "expected a member name"),
            ("@.user-id == 1", 6, "['user-id']"),
            ("@.x < true", 4, "cannot compare with true"),
            ("@.x >= null", 4, "use == or !="),
            ("1 < @.x < 5", 8, "chained comparisons"),
            ("@.x > 1 < 5", 8, "chained comparisons"),
            ("@.x == @.y", 7, "comparing two paths"),
            ("@.x == [1]", 7, "only allowed after 'in'"),
            ("@.x in ('a')", 7, "brackets"),
            ("@.x in 'a'", 7, "expected a list"),
            ("@.x in ['a',", 12, "expected a value in the list"),
            (
                "@.x in ['a' 'b']",
                12,
                "expected ',' or ']' in the list opened at position 7",
            ),
            ("@.x =~ 'a'", 7, "/…/"),
            ("@.x =~ /abc", 7, "unterminated regular expression"),
            ("@.x =~ /a(/", 7, "invalid regular expression"),
            ("@.x =~ /a/g", 10, "unknown regular-expression flags 'g'"),
            ("@.x == 007", 7, "leading zeros"),
            ("@.x =~ /a/ii", 10, "unknown regular-expression flags 'ii'"),
            ("@.x == 1.", 9, "decimal point"),
            ("@.x == 1e", 9, "exponent"),
            ("@.x == -", 7, "digits after '-'"),
            ("@.x == 12abc", 9, "unexpected 'a' in a number"),
            ("@.x == 1e999", 7, "out of range"),
            ("5", 1, "comparison operator"),
            ("'a' LIKE @.x", 4, "path must be on the left of 'LIKE'"),
            ("1 == 1", 5, "needs a path on one side"),
            ("@.x == 1 @.y", 9, "expected '&&', '||'"),
            ("# @.x", 0, "expected a condition"),
        ];
        for (expr, position, reason) in cases {
            let (got_pos, got_reason) = compile_err(expr);
            assert!(
                got_reason.contains(reason),
                "{expr:?}: reason {got_reason:?} lacks {reason:?}"
            );
            assert_eq!(got_pos, *position, "{expr:?}: {got_reason}");
        }
        // The Display form carries position and expression.
        let mut resolver = TestResolver::default();
        let err = Condition::compile("@.x == ", &mut resolver).unwrap_err();
        assert!(err.to_string().contains("position 7"), "{err}");
    }

    #[test]
    fn hostile_input() {
        let mut resolver = TestResolver::default();
        let nested = |n: usize| format!("{}@.x{}", "(".repeat(n), ")".repeat(n));
        assert!(run(&nested(MAX_NESTING), &[("@.x", n("1"))], false));
        let (pos, reason) = compile_err(&nested(MAX_NESTING + 1));
        assert_eq!(pos, MAX_NESTING);
        assert!(reason.contains("nesting"), "{reason}");
        let nots = |n: usize| format!("{}@.x", "!".repeat(n));
        assert!(run(&nots(MAX_NESTING), &[("@.x", n("1"))], false));
        assert!(compile_err(&nots(MAX_NESTING + 1)).1.contains("nesting"));
        let mixed = "!(".repeat(MAX_NESTING / 2) + "@.x" + &")".repeat(MAX_NESTING / 2);
        assert!(Condition::compile(&mixed, &mut resolver).is_ok());
        let mixed = "!(".repeat(MAX_NESTING / 2 + 1) + "@.x" + &")".repeat(MAX_NESTING / 2 + 1);
        assert!(compile_err(&mixed).1.contains("nesting"));
        // Far beyond the limit: an error, not a stack overflow.
        assert!(compile_err(&"(".repeat(60_000)).1.contains("nesting"));
        assert!(compile_err(&"!".repeat(60_000)).1.contains("nesting"));
        // Length limit (bytes), position in characters.
        let long = format!("@.x == '{}'", "a".repeat(MAX_EXPRESSION_BYTES));
        let (pos, reason) = compile_err(&long);
        assert_eq!(pos, MAX_EXPRESSION_BYTES);
        assert!(reason.contains("longer than"));
        let long = "é".repeat(MAX_EXPRESSION_BYTES);
        assert!(matches!(
            parse_path(&long),
            Err(Error::PathSyntax { position, .. }) if position == MAX_EXPRESSION_BYTES / 2
        ));
        // A long flat chain is fine (no recursion per operand).
        let chain = vec!["@.x == 1"; 5_000].join(" || ");
        assert!(run(&chain, &[("@.x", n("1"))], false));
        // Regexes that would compile huge fail at compile time.
        let (pos, reason) = compile_err("@.x =~ /(\\w{100}){100}/");
        assert_eq!(pos, 7);
        assert!(reason.contains("invalid regular expression"), "{reason}");
        // Pathological LIKE stays linear-ish.
        let text = "a".repeat(10_000);
        let like = LikePattern::new(&"%a".repeat(200), false);
        assert!(like.matches(&text));
        let like = LikePattern::new(&("%a".repeat(200) + "%b"), false);
        assert!(!like.matches(&text));
    }

    #[test]
    fn plain_paths() {
        let key = |k: &str| Segment::Key(k.to_owned());
        let ok: &[(&str, Path)] = &[
            ("@", Path::new(Root::Current, vec![])),
            ("$", Path::new(Root::Document, vec![])),
            (
                "  @.events  ",
                Path::new(Root::Current, vec![key("events")]),
            ),
            (
                "$.device.type",
                Path::new(Root::Document, vec![key("device"), key("type")]),
            ),
            ("@['it\\'s']", Path::new(Root::Current, vec![key("it's")])),
            (
                "@[\"say \\\"hi\\\"\"]",
                Path::new(Root::Current, vec![key("say \"hi\"")]),
            ),
            ("@['a\\\\b']", Path::new(Root::Current, vec![key("a\\b")])),
            ("@['']", Path::new(Root::Current, vec![key("")])),
            ("@[0]", Path::new(Root::Current, vec![Segment::Index(0)])),
            (
                "@.items[12].name",
                Path::new(
                    Root::Current,
                    vec![key("items"), Segment::Index(12), key("name")],
                ),
            ),
            ("@.2fa", Path::new(Root::Current, vec![key("2fa")])),
            ("@.$set", Path::new(Root::Current, vec![key("$set")])),
            ("@.länge", Path::new(Root::Current, vec![key("länge")])),
            (
                "@.weapons.length",
                Path::new(Root::Current, vec![key("weapons"), key("length")]),
            ),
        ];
        for (src, want) in ok {
            assert_eq!(&parse_path(src).unwrap(), want, "{src}");
            // Display round-trips.
            assert_eq!(&parse_path(&want.to_string()).unwrap(), want, "{src}");
        }
        let bad: &[(&str, usize, &str)] = &[
            ("", 0, "empty path"),
            ("   ", 3, "empty path"),
            ("events", 0, "starts with '@'"),
            ("@.a == 1", 4, "plain path"),
            ("@.a b", 4, "plain path"),
            ("@ .a", 2, "plain path"),
            ("@.a-b", 3, "['a-b']"),
            ("@['a]", 2, "unterminated quoted member name"),
            ("@['a\\x']", 4, "unknown escape"),
            ("@[a]", 2, "quoted member name or an array index"),
        ];
        for (src, position, reason) in bad {
            match parse_path(src) {
                Err(Error::PathSyntax {
                    position: p,
                    reason: r,
                    expression,
                    ..
                }) => {
                    assert_eq!(expression, *src);
                    assert!(r.contains(reason), "{src:?}: {r:?} lacks {reason:?}");
                    assert_eq!(p, *position, "{src:?}: {r}");
                }
                other => panic!("{src:?}: {other:?}"),
            }
        }
    }

    /// Deterministic token soup: compile and evaluate must never panic, and error positions
    /// must lie inside the expression.
    #[test]
    fn token_soup_never_panics() {
        const TOKENS: &[&str] = &[
            "@", "$", ".", "a", "length", "[", "]", "'", "\"", "\\", "0", "1.5", "-", "e", "(",
            ")", "!", "=", "==", "!=", "<", ">=", "&&", "||", "&", "|", " ", "in", "LIKE", "ILIKE",
            "=~", "/", "i", "%", "_", ",", "true", "null", "é", "日", "*", "?", "and",
        ];
        let values = [
            Some(s("a")),
            Some(n("1.5")),
            Some(Value::Null),
            Some(arr("[1]", 1)),
            Some(obj("{}")),
            Some(Value::Bool(true)),
            None,
            Some(s("日é")),
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            usize::try_from(seed % u64::try_from(bound).unwrap()).unwrap()
        };
        let mut compiled = 0;
        for _ in 0..20_000 {
            let len = next(16);
            let expr: String = (0..len).map(|_| TOKENS[next(TOKENS.len())]).collect();
            let mut resolver = TestResolver {
                flatten: next(2) == 0,
                ..TestResolver::default()
            };
            match Condition::compile(&expr, &mut resolver) {
                Ok(cond) => {
                    compiled += 1;
                    let root: Vec<_> = (0..resolver.roots)
                        .map(|_| values[next(values.len())].clone())
                        .collect();
                    let element: Vec<_> = (0..resolver.elements)
                        .map(|_| values[next(values.len())].clone())
                        .collect();
                    let full = cond.eval(&root, &element);
                    let empty = cond.eval(&[], &[]);
                    let _ = (full, empty);
                }
                Err(Error::PathSyntax { position, .. }) => {
                    assert!(position <= expr.chars().count(), "{expr:?}");
                }
                Err(other) => panic!("{other:?}"),
            }
            if let Err(Error::PathSyntax { position, .. }) = parse_path(&expr) {
                assert!(position <= expr.chars().count(), "{expr:?}");
            }
        }
        assert!(compiled > 100, "only {compiled} compiled");
    }

    #[test]
    fn condition_is_send_sync_clone() {
        fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
        assert_traits::<Condition>();
        let mut resolver = TestResolver::default();
        let cond = Condition::compile("@.x =~ /a/ && @.y LIKE 'b%'", &mut resolver).unwrap();
        let copy = cond.clone();
        assert!(copy.eval(&[Some(s("a")), Some(s("bc"))], &[]));
    }
}
