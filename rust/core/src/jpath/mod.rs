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

mod eval;
mod lexer;
mod like;
mod parser;

use eval::{CmpOp, InList, Node, Operand, Test};
use lexer::{check_length, is_ident_char, show, Cursor};
use like::LikePattern;
use parser::CondParser;

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

#[cfg(test)]
mod tests {
    use super::eval::{format_usize, Got};
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

    /// The `in` string probe (length + first-8-bytes keys for short lists, binary search for
    /// long ones) must agree with plain set membership, on names built to collide in length and
    /// head: shared 8-byte prefixes, lengths 7 to 9, a differing last byte, multi-byte UTF-8 and
    /// quotes written with escapes in the literal.
    #[test]
    fn in_string_probe_matches_set_membership() {
        const PIECES: &[&str] = &[
            "app",
            "appOpen",
            "appOpen_",
            "appOpenX",
            "appOpenXY",
            "é",
            "日",
            "'",
            "\\",
            "a",
            "",
            "\0",
        ];
        let mut rng = crate::test_rng::Rng(0x3C6E_F372_FE94_F82B);
        let word = |rng: &mut crate::test_rng::Rng| {
            let mut w = String::new();
            for _ in 0..=rng.below(3) {
                w.push_str(PIECES[rng.below(PIECES.len())]);
            }
            w
        };
        for round in 0..400 {
            // Both sides of KEY_SCAN_MAX (16): short lists are key-scanned, long ones searched.
            let list_len = if round % 2 == 0 {
                rng.below(17) + 1
            } else {
                rng.below(40) + 17
            };
            let list: Vec<String> = (0..list_len).map(|_| word(&mut rng)).collect();
            let literal = list
                .iter()
                .map(|w| format!("'{}'", w.replace('\\', "\\\\").replace('\'', "\\'")))
                .collect::<Vec<_>>()
                .join(", ");
            let expr = format!("@.x in [{literal}]");
            let mut probes: Vec<String> = (0..8).map(|_| word(&mut rng)).collect();
            probes.push(list[rng.below(list.len())].clone());
            for probe in probes {
                let want = list.contains(&probe);
                let value = Value::Str(Cow::Owned(probe.clone()));
                let mut resolver = TestResolver::default();
                let cond = Condition::compile(&expr, &mut resolver)
                    .unwrap_or_else(|e| panic!("{expr:?} should compile: {e}"));
                let got = cond.eval(&[Some(value)], &[]);
                assert_eq!(got, want, "{expr:?} on {probe:?}");
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
