//! The condition parser: precedence climbing over the lexer, producing the compiled form.

// The jpath modules are one language split by concern: each sees the others' items through
// the parent, as when they were one file.
#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Cmp(CmpOp),
    Like,
    ILike,
    Regex,
    In,
}

impl Op {
    pub(super) fn name(self) -> &'static str {
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

pub(super) enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

pub(super) struct CondParser<'s, 'r> {
    pub(super) cur: Cursor<'s>,
    pub(super) resolver: &'r mut dyn SlotResolver,
    pub(super) depth: usize,
}

impl CondParser<'_, '_> {
    pub(super) fn err(&self, byte_pos: usize, reason: impl Into<String>) -> Error {
        self.cur.error(byte_pos, reason)
    }

    pub(super) fn enter(&mut self, at: usize) -> Result<()> {
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
    pub(super) fn unexpected(&self, expected: &str) -> Error {
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

    pub(super) fn or(&mut self, after: &str) -> Result<Node> {
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

    pub(super) fn and(&mut self, after: &str) -> Result<Node> {
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

    pub(super) fn unary(&mut self, after: &str) -> Result<Node> {
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

    pub(super) fn primary(&mut self, after: &str) -> Result<Node> {
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
    pub(super) fn peek_op(&self) -> Option<(Op, usize)> {
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
    pub(super) fn comparison(&mut self, path: &Path) -> Result<Node> {
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
    pub(super) fn literal_first(&mut self) -> Result<Node> {
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

    pub(super) fn no_chain(&mut self) -> Result<()> {
        self.cur.skip_ws();
        if self.peek_op().is_some() {
            return Err(self.err(
                self.cur.pos,
                "chained comparisons are not supported; combine comparisons with &&",
            ));
        }
        Ok(())
    }

    pub(super) fn operand(&mut self, path: &Path) -> Operand {
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

    pub(super) fn cmp_test(&self, op: CmpOp, lit: Lit, op_pos: usize) -> Result<Test> {
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
    pub(super) fn literal(&mut self, context: &str) -> Result<(Lit, usize)> {
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

    pub(super) fn list(&mut self) -> Result<Test> {
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
        list.seal();
        Ok(Test::In(Box::new(list)))
    }

    pub(super) fn regex(&mut self) -> Result<Test> {
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
