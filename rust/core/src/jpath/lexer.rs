//! Lexing and plain-path parsing: the character cursor shared by paths and conditions.

// The jpath modules are one language split by concern: each sees the others' items through
// the parent, as when they were one file.
#[allow(clippy::wildcard_imports)]
use super::*;
use crate::value::{json_number_end, NumberFault};

pub(super) fn check_length(src: &str) -> Result<()> {
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
pub(super) fn show(text: &str) -> String {
    if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

pub(super) fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// A position in the source (byte offset, always on a char boundary) with lexing helpers.
pub(super) struct Cursor<'s> {
    pub(super) src: &'s str,
    pub(super) pos: usize,
}

impl<'s> Cursor<'s> {
    pub(super) fn new(src: &'s str) -> Self {
        Cursor { src, pos: 0 }
    }

    pub(super) fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub(super) fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub(super) fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    pub(super) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(super) fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub(super) fn skip_ws(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        self.pos += rest.len() - trimmed.len();
    }

    /// The run of identifier characters at the cursor (not consumed).
    pub(super) fn word(&self) -> &'s str {
        let rest = self.rest();
        let end = rest
            .char_indices()
            .find(|&(_, c)| !is_ident_char(c))
            .map_or(rest.len(), |(i, _)| i);
        &rest[..end]
    }

    pub(super) fn error(&self, byte_pos: usize, reason: impl Into<String>) -> Error {
        Error::PathSyntax {
            field: String::new(),
            expression: self.src.to_owned(),
            position: self.src[..byte_pos].chars().count(),
            reason: reason.into(),
        }
    }

    /// A path starting at the cursor (`@` or `$`, then segments with no whitespace between them).
    pub(super) fn path(&mut self) -> Result<Path> {
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
    pub(super) fn dotted_segment(&mut self) -> Result<Segment> {
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
    pub(super) fn bracket_segment(&mut self) -> Result<Segment> {
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
    pub(super) fn quoted(&mut self, what: &str) -> Result<String> {
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
    pub(super) fn number(&mut self) -> Result<f64> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let i = match json_number_end(bytes, start) {
            Ok(end) => end,
            Err((_, NumberFault::NoIntegerDigits)) => {
                return Err(self.error(start, "expected digits after '-'"))
            }
            Err((at, NumberFault::NoFractionDigits)) => {
                return Err(self.error(at, "expected digits after the decimal point"))
            }
            Err((at, NumberFault::NoExponentDigits)) => {
                return Err(self.error(at, "expected digits in the exponent"))
            }
        };
        // The grammar ends a number at a leading `0`; a digit right after it is that zero's
        // fault, not the next token's.
        if bytes.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(self.error(start, "leading zeros are not allowed in numbers"));
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
