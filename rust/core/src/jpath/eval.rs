//! The compiled form of a condition and its evaluation against extracted values.

// The jpath modules are one language split by concern: each sees the others' items through
// the parent, as when they were one file.
#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug, Clone)]
pub(super) enum Node {
    True,
    Exists(Slot),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Test(Operand, Test),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Operand {
    Slot(Slot),
    /// `path.length`: the member itself when present, else the parent's length.
    Length {
        full: Slot,
        parent: Slot,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// Whether the ordering of field vs literal satisfies the operator (`Ne` is handled apart).
    pub(super) fn accepts(self, ord: Option<Ordering>) -> bool {
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
pub(super) enum Test {
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
pub(super) enum Got<'v, 'a> {
    Val(&'v Value<'a>),
    Len(usize),
}

impl Got<'_, '_> {
    pub(super) fn numeric(self) -> Option<f64> {
        match self {
            Got::Val(v) => v.numeric(),
            // Lengths are far below 2^53, so the conversion is exact.
            #[allow(clippy::cast_precision_loss)]
            Got::Len(n) => Some(n as f64),
        }
    }

    /// Runs `f` on the string form (semantics §7); `None` for null, arrays and objects.
    pub(super) fn with_str<R>(self, f: impl FnOnce(&str) -> R) -> Option<R> {
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
pub(super) fn is_canonical_integer(raw: &str) -> bool {
    let digits = raw.strip_prefix('-').unwrap_or(raw).as_bytes();
    matches!(digits.first(), Some(b'1'..=b'9')) && digits.iter().all(u8::is_ascii_digit)
}

pub(super) fn format_usize(mut n: usize, buf: &mut [u8; 20]) -> &str {
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
pub(super) fn fetch<'v, 'a>(
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
    pub(super) fn fetch<'v, 'a>(
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
    pub(super) fn eval(&self, root: &[Option<Value<'_>>], element: &[Option<Value<'_>>]) -> bool {
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
    pub(super) fn eval(&self, got: Got<'_, '_>) -> bool {
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
pub(super) struct InList {
    pub(super) nums: Vec<f64>,
    /// Sorted and deduplicated, for binary search; `seal` must run after the last push.
    pub(super) strs: Vec<Box<str>>,
    /// `(byte length, first 8 bytes)` of each of `strs`, same order: a short list is probed by
    /// two integer compares per element instead of a `memcmp` call per binary-search step.
    pub(super) str_keys: Vec<(usize, u64)>,
    /// `[false present, true present]`
    pub(super) bools: [bool; 2],
    pub(super) null: bool,
}

/// Lists up to this long are scanned by `(length, head)` keys; longer ones are binary-searched,
/// whose `log2(n)` string compares then cost less than `n` integer compares.
const KEY_SCAN_MAX: usize = 16;

/// The first 8 bytes of `s`, zero-padded, as one integer. Equal strings have equal heads, and
/// with equal lengths up to 8 bytes equal heads mean equal strings (the padding is the same).
fn head_key(s: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    let n = s.len().min(8);
    head[..n].copy_from_slice(&s[..n]);
    u64::from_le_bytes(head)
}

impl InList {
    /// Sorts and deduplicates `strs` and builds their probe keys; the parser calls it once.
    pub(super) fn seal(&mut self) {
        self.strs.sort();
        self.strs.dedup();
        self.str_keys = self
            .strs
            .iter()
            .map(|x| (x.len(), head_key(x.as_bytes())))
            .collect();
    }

    /// Exact byte equality of `s` with one of `strs`.
    fn contains_str(&self, s: &str) -> bool {
        if self.strs.len() > KEY_SCAN_MAX {
            return self.strs.binary_search_by(|x| (**x).cmp(s)).is_ok();
        }
        let bytes = s.as_bytes();
        let key = (bytes.len(), head_key(bytes));
        self.str_keys.iter().zip(&self.strs).any(|(k, x)| {
            // The head covers the first 8 bytes; only longer strings need the rest compared.
            *k == key && (bytes.len() <= 8 || x.as_bytes()[8..] == bytes[8..])
        })
    }

    pub(super) fn contains(&self, got: Got<'_, '_>) -> bool {
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
        if !self.strs.is_empty() && got.with_str(|s| self.contains_str(s)) == Some(true) {
            return true;
        }
        match got {
            Got::Val(Value::Bool(b)) => self.bools[usize::from(*b)],
            Got::Val(Value::Null) => self.null,
            _ => false,
        }
    }
}
