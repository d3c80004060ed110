"""Pure-Python reference implementation of eventtally's semantics: the test oracle.

What this module guarantees:

- It follows ``docs/semantics.md`` rule by rule (section numbers are cited in the code). Where the
  contract leaves a detail open, the choice made here is written next to the code as
  ``(reference choice)`` so the Rust core can be held to the same answer or the contract amended.
- Every calculation is EXACT: COUNT, SUM (``math.fsum``), MIN, MAX, AVG; APPROX_COUNT_DISTINCT is
  the exact number of distinct ``(type tag, string form)`` pairs; PERCENTILES is the exact
  PERCENTILE_CONT (decision 11 in ``docs/decisions.md``, numpy's ``linear`` method): the value at
  rank ``h = p * (n - 1)`` of the sorted values, interpolated linearly between ranks
  ``floor(h)`` and ``floor(h) + 1`` and rounded as numpy rounds it (:func:`percentile_cont`). The
  Rust core answers the same bits for cells of at most 100 values and uses sketches beyond (and
  for distinct counts), so compare those with a tolerance.
- Batches are atomic: a batch is parsed and evaluated completely before any state changes; a
  malformed batch raises :class:`JsonError` or :class:`FormatError` (both ``ValueError``) and
  leaves the engine untouched.
- Standard library only. It is a benchmark baseline, so it is written to be read, but it is not
  needlessly slow: each event is parsed with the C ``json`` decoder and evaluated directly by
  compiled closures. Only when a grouping or distinct value needs the *compact text* of an object
  or array (semantics 7: whitespace removed, content unchanged) is the batch re-parsed with the
  pure-Python scanner, which records each container's raw text.

Where ``docs/semantics.md`` is silent, the reference makes the same choices as the Rust core's
documented decisions (``rust/core/src/jpath.rs``, ``time.rs``, ``engine.rs``), so that it can
serve as the oracle:

- JPath: dotted names are Unicode letters/digits, ``_`` and ``$``; quoted names and string
  literals know only the escapes ``\\'``, ``\\"`` and ``\\\\``; number literals follow
  JSON's grammar and must be finite; a literal may stand on the left (``500 < @.x``); ordering
  operators with ``true``/``false``/``null`` are syntax errors; ``LIKE`` has no escape character;
  ``ILIKE`` compares lowercased text; ``=~`` uses Python's ``re`` (close enough to RE2 for
  tests), ``\\/`` writes a slash.
- ``.length`` applies only to a path used in a comparison; a bare ``@.x.length`` tests the member.
- Flattening: array elements that are not objects are skipped and counted per filter under
  ``flatten_element_not_object``; ``flattened_elements`` counts the object elements.
- Unix timestamps are scaled with exact decimal arithmetic on the number's text, then floored;
  ``AUTO`` also accepts numeric strings; every timestamp must lie in years 0000-9999.
- Stats list only reasons with a non-zero count.

Queries answer every field of ``docs/queries.md`` except retention tiers (the reference keeps
one resolution): ``groupingFilters`` (``$__agg`` and ``returnGroupingValues: false`` merge cells
exactly), ``recalculatedInterval`` (epoch-truncated; calendar for MONTH/YEAR; a rollup that is not
coarser is ignored) and ``limit``/``limitType`` per time slice, ties broken by the grouping values.

Public API: :class:`ReferenceEngine` (``ingest``, ``results``) and the building blocks the tests
use directly: :func:`parse_json`, :func:`compile_condition`, :func:`matches`, :func:`parse_path`,
:func:`resolve`, :func:`group_string`, :func:`numeric`, :func:`js_number_str`,
:func:`parse_iso8601`, :func:`timestamp_ms`, :func:`bucket_start`, :func:`format_rfc3339`.
"""

from __future__ import annotations

import json
import math
import operator
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MIN_EMIN, ROUND_FLOOR, Context, Decimal
from itertools import accumulate
from json.decoder import JSONArray, JSONObject  # type: ignore[attr-defined]
from json.scanner import py_make_scanner  # type: ignore[attr-defined]
from typing import Any, NoReturn

__all__ = [
    "CALCULATIONS",
    "MISSING",
    "ConfigError",
    "FormatError",
    "JNum",
    "JPathSyntaxError",
    "JsonError",
    "Path",
    "QueryError",
    "ReferenceEngine",
    "bucket_start",
    "compile_condition",
    "format_rfc3339",
    "group_string",
    "js_number_str",
    "matches",
    "numeric",
    "parse_iso8601",
    "parse_json",
    "parse_path",
    "resolve",
    "timestamp_ms",
]

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class JsonError(ValueError):
    """Malformed JSON, invalid UTF-8 or nesting deeper than 512 levels (semantics 2)."""


class FormatError(ValueError):
    """The body is valid JSON but does not match the ingest's schema (semantics 2)."""


class ConfigError(ValueError):
    """An invalid ingest or filter definition; ``field`` names the offending field."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


class QueryError(ValueError):
    """An invalid Metrics API query (or an unknown filter/aggregation id)."""


class JPathSyntaxError(ValueError):
    """A JPath expression that does not compile; ``position`` is a 0-based character index."""

    def __init__(self, expression: str, position: int, reason: str) -> None:
        super().__init__(f"{reason} at position {position} in {expression!r}")
        self.expression = expression
        self.position = position
        self.reason = reason


class _NeedRaw(Exception):
    """Internal: the compact text of a container is needed; re-parse the batch in raw mode."""


# --------------------------------------------------------------------------------------------
# JSON values
# --------------------------------------------------------------------------------------------


class JNum:
    """A JSON number: the raw text as written and its float value (``inf`` for ``1e999``)."""

    __slots__ = ("raw", "value")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.value = float(raw)

    def __repr__(self) -> str:
        return f"JNum({self.raw!r})"


class _Missing:
    """The type of :data:`MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What a path resolves to when the member or element does not exist."""


class _RawObject(dict):  # type: ignore[type-arg]
    """A JSON object that remembers its raw source text (raw-mode parsing only)."""

    __slots__ = ("raw",)
    raw: str


class _RawArray(list):  # type: ignore[type-arg]
    """A JSON array that remembers its raw source text (raw-mode parsing only)."""

    __slots__ = ("raw",)
    raw: str


MAX_DEPTH = 512
_BOM = "\ufeff"
_JSON_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER_RE = re.compile(r"-?[0-9]+")
_STRING_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_COMPACT_RE = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\n\r]+', re.DOTALL)


def _reject_constant(name: str) -> NoReturn:
    raise JsonError(f"{name} is not valid JSON")


def _raw_object(
    s_and_end: tuple[str, int],
    strict: bool,
    scan_once: Callable[[str, int], tuple[Any, int]],
    object_hook: Any,
    object_pairs_hook: Any,
    memo: dict[str, str],
) -> tuple[_RawObject, int]:
    s, start = s_and_end
    value, end = JSONObject(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo)
    obj = _RawObject(value)
    obj.raw = s[start - 1 : end]
    return obj, end


def _raw_array(
    s_and_end: tuple[str, int], scan_once: Callable[[str, int], tuple[Any, int]]
) -> tuple[_RawArray, int]:
    s, start = s_and_end
    value, end = JSONArray(s_and_end, scan_once)
    arr = _RawArray(value)
    arr.raw = s[start - 1 : end]
    return arr, end


class _RawDecoder(json.JSONDecoder):
    """The pure-Python scanner, wired so that objects and arrays carry their raw text."""

    def __init__(self) -> None:
        super().__init__(parse_float=JNum, parse_int=JNum, parse_constant=_reject_constant)
        self.parse_object = _raw_object
        self.parse_array = _raw_array
        self.scan_once = py_make_scanner(self)


_FAST_DECODER = json.JSONDecoder(parse_float=JNum, parse_int=JNum, parse_constant=_reject_constant)
_RAW_DECODER = _RawDecoder()


def _check_depth(text: str) -> None:
    """Raise :class:`JsonError` when containers nest deeper than :data:`MAX_DEPTH` levels."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    brackets = _NOT_BRACKET_RE.sub("", _STRING_TOKEN_RE.sub("", text))
    if brackets and max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_DEPTH:
        raise JsonError(f"nesting deeper than {MAX_DEPTH} levels")


def parse_json(text: str, *, raw: bool = False) -> Any:
    """Parse one JSON document into dict/list/str/bool/None/:class:`JNum` values.

    Duplicate keys: the last one wins. ``NaN``/``Infinity`` are rejected. With ``raw=True`` every
    object and array also carries its source text (used for compact grouping strings).
    """
    _check_depth(text)
    decoder = _RAW_DECODER if raw else _FAST_DECODER
    old_limit = sys.getrecursionlimit()
    if raw:
        sys.setrecursionlimit(max(old_limit, 4 * MAX_DEPTH + 200))
    try:
        return decoder.decode(text)
    except JsonError:
        raise
    except (ValueError, RecursionError) as exc:
        raise JsonError(str(exc)) from None
    finally:
        if raw:
            sys.setrecursionlimit(old_limit)


def _decode_input(data: bytes | bytearray | memoryview | str) -> str:
    """Bytes → text: strict UTF-8, one leading BOM skipped (semantics 2)."""
    if isinstance(data, str):
        text = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonError(f"invalid UTF-8 at byte {exc.start}") from None
    else:
        raise TypeError(f"expected bytes or str, got {type(data).__name__}")
    return text[1:] if text.startswith(_BOM) else text


# --------------------------------------------------------------------------------------------
# Typing rules: numbers (decision 6) and string forms (semantics 7, decision 9)
# --------------------------------------------------------------------------------------------


def numeric(value: Any) -> float | None:
    """The numeric value of a JSON value under decision 6, or ``None`` when it is not numeric.

    Finite JSON numbers, and strings that are exactly a finite JSON number (``"2.0"``, ``"1e3"``).
    Booleans, null, containers, other strings and non-finite numbers (``1e999``) are not numeric.
    """
    if isinstance(value, JNum):
        v = value.value
        return v if math.isfinite(v) else None
    if isinstance(value, str) and _JSON_NUMBER_RE.fullmatch(value):
        v = float(value)
        return v if math.isfinite(v) else None
    return None


def js_number_str(x: float) -> str:
    """Format a float as JavaScript's ``Number.prototype.toString`` (shortest round-trip digits).

    Plain notation while the decimal exponent is in [-7, 21); otherwise ``1e-7`` / ``1.5e+21``.
    """
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "0"
    mantissa, _, exp = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    point = len(int_part) + (int(exp) if exp else 0)  # decimal point position within `digits`
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k, n = len(digits), point
    sign = "-" if x < 0 else ""
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        body = (
            digits[0]
            + ("." + digits[1:] if k > 1 else "")
            + ("e+" if e >= 0 else "e-")
            + str(abs(e))
        )
    return sign + body


def _number_string(num: JNum) -> str:
    """Grouping form of a JSON number: integer text as written (``-0`` → ``0``), other finite
    numbers in JavaScript's shortest form, non-finite numbers as their raw text."""
    raw = num.raw
    if _INTEGER_RE.fullmatch(raw):
        return "0" if raw.lstrip("-").strip("0") == "" else raw
    if math.isfinite(num.value):
        return js_number_str(num.value)
    return raw


def _compact(raw: str) -> str:
    """Raw JSON text with insignificant whitespace removed (content, escapes included, kept)."""
    return _COMPACT_RE.sub(lambda m: m.group(1) or "", raw)


def group_string(value: Any) -> str:
    """The string form of a value (semantics 7): used for groupings, string-literal comparisons
    and distinct-value identity. Missing or null → ``""``."""
    if isinstance(value, str):
        return value
    if isinstance(value, JNum):
        return _number_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None or value is MISSING:
        return ""
    if isinstance(value, (_RawObject, _RawArray)):
        return _compact(value.raw)
    if isinstance(value, (dict, list)):
        raise _NeedRaw
    raise TypeError(f"not a JSON value: {value!r}")


_TYPE_TAGS: dict[type, int] = {bool: 1, JNum: 2, str: 3, list: 4, _RawArray: 4, dict: 5}
_TYPE_TAGS[_RawObject] = 5


def _distinct_key(value: Any) -> tuple[int, str] | None:
    """Identity for APPROX_COUNT_DISTINCT: (type tag, string form); missing and null → None."""
    if value is MISSING or value is None:
        return None
    return (_TYPE_TAGS[type(value)], group_string(value))


# --------------------------------------------------------------------------------------------
# JPath (semantics 5): tokenizer, recursive-descent parser, evaluator (compiled to closures)
# --------------------------------------------------------------------------------------------

Segment = str | int  # member name or array index


@dataclass(frozen=True)
class Path:
    """A plain path: root ``"@"`` (current event/element) or ``"$"`` (root event), then segments
    (``str`` member names, ``int`` array indices)."""

    root: str
    segments: tuple[Segment, ...]


def resolve(path: Path, current: Any, root: Any | None = None) -> Any:
    """The value at ``path``, or :data:`MISSING`. ``root`` defaults to ``current``."""
    value = current if path.root == "@" or root is None else root
    for seg in path.segments:
        if isinstance(seg, str):
            if not isinstance(value, dict):
                return MISSING
            value = value.get(seg, MISSING)
            if value is MISSING:
                return MISSING
        else:
            if not isinstance(value, list) or seg >= len(value):
                return MISSING
            value = value[seg]
    return value


@dataclass(frozen=True)
class _Token:
    kind: str  # PATH STRING NUMBER TRUE FALSE NULL LIKE ILIKE IN OP MATCH REGEX
    # NOT AND OR LPAREN RPAREN LBRACK RBRACK COMMA EOF
    value: Any
    pos: int


_WS = " \t\r\n"
_NAME_RE = re.compile(r"[\w$]+")  # Unicode letters and digits, _ and $
_INDEX_RE = re.compile(r"[0-9]+")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = {
    "like": "LIKE",
    "ilike": "ILIKE",
    "in": "IN",
    "true": "TRUE",
    "false": "FALSE",
    "null": "NULL",
}
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_DIGITS = "0123456789"
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_LITERAL_KINDS = ("STRING", "NUMBER", "TRUE", "FALSE", "NULL")


class _Tokenizer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, reason: str, pos: int | None = None) -> NoReturn:
        raise JPathSyntaxError(self.text, self.pos if pos is None else pos, reason)

    def _skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def _quoted(self, quote: str) -> str:
        """Read a quoted string starting at the opening quote; the only escapes are ``\\'``,
        ``\\"`` and ``\\\\``."""
        start = self.pos
        self.pos += 1
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c == "\\":
                if self.pos + 1 >= len(text):
                    break
                if text[self.pos + 1] not in "'\"\\":
                    self.fail("unknown escape; only \\', \\\" and \\\\ are allowed")
                out.append(text[self.pos + 1])
                self.pos += 2
            elif c == quote:
                self.pos += 1
                return "".join(out)
            else:
                out.append(c)
                self.pos += 1
        self.fail("unterminated string", start)

    def path(self) -> Path:
        root = self.text[self.pos]
        self.pos += 1
        segments: list[Segment] = []
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c == ".":
                m = _NAME_RE.match(text, self.pos + 1)
                if m is None:
                    self.fail("expected a member name after '.'", self.pos + 1)
                segments.append(m.group())
                self.pos = m.end()
            elif c == "[":
                self.pos += 1
                self._skip_ws()
                if self.pos < len(text) and text[self.pos] in "'\"":
                    segments.append(self._quoted(text[self.pos]))
                else:
                    m = _INDEX_RE.match(text, self.pos)
                    if m is None:
                        self.fail("expected a quoted name or an index after '['")
                    segments.append(int(m.group()))
                    self.pos = m.end()
                self._skip_ws()
                if self.pos >= len(text) or text[self.pos] != "]":
                    self.fail("expected ']'")
                self.pos += 1
            else:
                break
        return Path(root, tuple(segments))

    def regex(self) -> tuple[str, str]:
        self._skip_ws()
        text = self.text
        if self.pos >= len(text) or text[self.pos] != "/":
            self.fail("expected /regex/ after '=~'")
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(text):
            c = text[self.pos]
            if c == "\\" and self.pos + 1 < len(text):
                nxt = text[self.pos + 1]
                out.append("/" if nxt == "/" else "\\" + nxt)  # \/ writes a slash
                self.pos += 2
            elif c == "/":
                self.pos += 1
                m = _WORD_RE.match(text, self.pos)
                flags = m.group() if m else ""
                if m:
                    self.pos = m.end()
                if flags not in ("", "i"):
                    self.fail(f"unknown regex flags {flags!r}")
                return "".join(out), flags
            else:
                out.append(c)
                self.pos += 1
        self.fail("unterminated regex", start)

    def tokens(self) -> list[_Token]:
        text = self.text
        out: list[_Token] = []
        while True:
            self._skip_ws()
            pos = self.pos
            if pos >= len(text):
                out.append(_Token("EOF", None, pos))
                return out
            c = text[pos]
            two = text[pos : pos + 2]
            if c in "@$":
                out.append(_Token("PATH", self.path(), pos))
            elif c == "'":
                out.append(_Token("STRING", self._quoted("'"), pos))
            elif c == '"':
                self.fail("string literals must be single-quoted")
            elif c in _DIGITS or (c == "-" and text[pos + 1 : pos + 2] in tuple(_DIGITS)):
                m = _JSON_NUMBER_RE.match(text, pos)
                if m is None:
                    self.fail("malformed number")
                end = m.end()
                if end < len(text) and (_NAME_RE.match(text[end]) or text[end] == "."):
                    self.fail(f"unexpected {text[end]!r} in a number", end)
                value = float(m.group())
                if not math.isfinite(value):
                    self.fail("number out of range")
                self.pos = end
                out.append(_Token("NUMBER", value, pos))
            elif two == "=~":
                self.pos += 2
                out.append(_Token("MATCH", None, pos))
                rpos = self.pos
                out.append(_Token("REGEX", self.regex(), rpos))
            elif two in ("&&", "||"):
                self.pos += 2
                out.append(_Token("AND" if two == "&&" else "OR", None, pos))
            elif any(text.startswith(op, pos) for op in _OPERATORS):
                op = next(op for op in _OPERATORS if text.startswith(op, pos))
                self.pos += len(op)
                out.append(_Token("OP", op, pos))
            elif c == "!":
                self.pos += 1
                out.append(_Token("NOT", None, pos))
            elif c in "()[],":
                self.pos += 1
                kind = {"(": "LPAREN", ")": "RPAREN", "[": "LBRACK", "]": "RBRACK", ",": "COMMA"}
                out.append(_Token(kind[c], None, pos))
            else:
                m = _WORD_RE.match(text, pos)
                if m is None or m.group().lower() not in _KEYWORDS:
                    self.fail(f"unexpected {c!r}")
                self.pos = m.end()
                out.append(_Token(_KEYWORDS[m.group().lower()], None, pos))


# AST nodes -----------------------------------------------------------------------------------

LiteralValue = tuple[str, Any]  # ("str", s) | ("num", f) | ("bool", b) | ("null", None)


@dataclass(frozen=True)
class _Exists:
    path: Path


@dataclass(frozen=True)
class _Not:
    operand: _Node


@dataclass(frozen=True)
class _And:
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Or:
    left: _Node
    right: _Node


@dataclass(frozen=True)
class _Compare:
    path: Path
    op: str  # == != < <= > >= LIKE ILIKE IN =~
    operand: Any  # LiteralValue, list[LiteralValue] for IN, (pattern, flags) for =~ and LIKE


_Node = _Exists | _Not | _And | _Or | _Compare


class _Parser:
    """Precedence, loosest first: ``||``, ``&&``, comparisons, ``!`` (which takes a path,
    a parenthesised expression or another ``!``)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _Tokenizer(text).tokens()
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self, kind: str | None = None) -> _Token:
        tok = self.tokens[self.i]
        if kind is not None and tok.kind != kind:
            self.fail(f"expected {kind}, found {tok.kind}", tok.pos)
        self.i += 1
        return tok

    def fail(self, reason: str, pos: int) -> NoReturn:
        raise JPathSyntaxError(self.text, pos, reason)

    def parse(self) -> _Node:
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "EOF":
            self.fail(f"unexpected {tok.kind}", tok.pos)
        return node

    def or_expr(self) -> _Node:
        node = self.and_expr()
        while self.peek().kind == "OR":
            self.take()
            node = _Or(node, self.and_expr())
        return node

    def and_expr(self) -> _Node:
        node = self.comparison()
        while self.peek().kind == "AND":
            self.take()
            node = _And(node, self.comparison())
        return node

    def comparison(self) -> _Node:
        tok = self.peek()
        if tok.kind == "NOT":
            return self.negation()
        if tok.kind == "LPAREN":
            self.take()
            node = self.or_expr()
            self.take("RPAREN")
            return node
        if tok.kind in _LITERAL_KINDS:
            return self.literal_first()
        if tok.kind != "PATH":
            self.fail(f"expected a path, '!' or '(', found {tok.kind}", tok.pos)
        path = self.take().value
        nxt = self.peek()
        if nxt.kind == "OP":
            self.take()
            lit = self.literal()
            if nxt.value not in ("==", "!=") and lit[0] in ("bool", "null"):
                self.fail(f"{nxt.value} needs a number or string literal", nxt.pos)
            return _Compare(path, nxt.value, lit)
        if nxt.kind in ("LIKE", "ILIKE"):
            self.take()
            pat = self.take("STRING").value
            return _Compare(path, nxt.kind, (pat, "i" if nxt.kind == "ILIKE" else ""))
        if nxt.kind == "IN":
            self.take()
            self.take("LBRACK")
            items: list[LiteralValue] = []
            if self.peek().kind != "RBRACK":
                items.append(self.literal())
                while self.peek().kind == "COMMA":
                    self.take()
                    items.append(self.literal())
            self.take("RBRACK")
            return _Compare(path, "IN", items)
        if nxt.kind == "MATCH":
            self.take()
            regex = self.take("REGEX")
            try:
                re.compile(regex.value[0])
            except re.error as exc:
                self.fail(f"invalid regex: {exc}", regex.pos)
            return _Compare(path, "=~", regex.value)
        return _Exists(path)

    def literal_first(self) -> _Node:
        """``500 < @.x`` means ``@.x > 500`` (only the six comparison operators)."""
        lit = self.literal()
        op = self.take()
        if op.kind != "OP":
            self.fail("expected a comparison operator after the value", op.pos)
        path = self.take("PATH").value
        if op.value not in ("==", "!=") and lit[0] in ("bool", "null"):
            self.fail(f"{op.value} needs a number or string literal", op.pos)
        return _Compare(path, _FLIPPED[op.value], lit)

    def negation(self) -> _Node:
        self.take("NOT")
        tok = self.peek()
        if tok.kind == "NOT":
            return _Not(self.negation())
        if tok.kind == "LPAREN":
            self.take()
            node = self.or_expr()
            self.take("RPAREN")
            return _Not(node)
        if tok.kind == "PATH":
            self.take()
            nxt = self.peek()
            if nxt.kind in ("OP", "LIKE", "ILIKE", "IN", "MATCH"):
                self.fail("'!' binds tighter than comparisons; write !(... )", nxt.pos)
            return _Not(_Exists(tok.value))
        self.fail(f"expected a path or '(' after '!', found {tok.kind}", tok.pos)

    def literal(self) -> LiteralValue:
        tok = self.take()
        if tok.kind == "STRING":
            return ("str", tok.value)
        if tok.kind == "NUMBER":
            return ("num", tok.value)
        if tok.kind in ("TRUE", "FALSE"):
            return ("bool", tok.kind == "TRUE")
        if tok.kind == "NULL":
            return ("null", None)
        self.fail(f"expected a literal, found {tok.kind}", tok.pos)


def parse_path(text: str) -> Path:
    """Parse a plain path (groupings, fields, flattenPath, arrayPath, timestamp path)."""
    tokens = _Tokenizer(text).tokens()
    if len(tokens) != 2 or tokens[0].kind != "PATH":
        pos = tokens[1].pos if tokens and tokens[0].kind == "PATH" else 0
        raise JPathSyntaxError(text, pos, "expected a single path such as @.a.b")
    path: Path = tokens[0].value
    return path


# Evaluator ----------------------------------------------------------------------------------

Condition = Callable[[Any, Any], bool]
"""A compiled condition: ``condition(current, root) -> bool``."""

_ORDER = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LENGTH_CACHE: dict[int, JNum] = {}


def _length_num(n: int) -> JNum:
    num = _LENGTH_CACHE.get(n)
    if num is None:
        num = _LENGTH_CACHE.setdefault(n, JNum(str(n)))
    return num


def _comparison_getter(path: Path) -> Callable[[Any, Any], Any]:
    """Value getter for a path used in a comparison: a trailing ``length`` segment gives an
    array's element count or a string's character count; on an object, the member itself."""
    if not path.segments or path.segments[-1] != "length":
        return lambda cur, root: resolve(path, cur, root)
    parent = Path(path.root, path.segments[:-1])

    def get(cur: Any, root: Any) -> Any:
        pv = resolve(parent, cur, root)
        if isinstance(pv, (list, str)):
            return _length_num(len(pv))
        if isinstance(pv, dict):
            return pv.get("length", MISSING)
        return MISSING

    return get


def _equals_literal(lit: LiteralValue) -> Callable[[Any], bool]:
    """``value == literal`` for a *present* value, typed by the literal (semantics 5)."""
    kind, lv = lit
    if kind == "num":
        return lambda v: numeric(v) == lv
    if kind == "str":
        return lambda v: (
            v is not None and not isinstance(v, (dict, list)) and (group_string(v) == lv)
        )
    if kind == "bool":
        return lambda v: v is lv
    return lambda v: v is None


def _like_regex(pattern: str) -> re.Pattern[str]:
    """LIKE pattern → regex: ``%`` any run, ``_`` exactly one character, everything else literal
    (there is no escape character); the whole string must match."""
    parts = [".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


def _scalar_string(v: Any) -> str | None:
    """String form for string operators; null, objects and arrays have none."""
    if v is MISSING or v is None or isinstance(v, (dict, list)):
        return None
    return group_string(v)


def _compile_compare(node: _Compare) -> Condition:
    get = _comparison_getter(node.path)
    op = node.op
    if op in ("LIKE", "ILIKE", "=~"):
        pattern, flags = node.operand
        test: Callable[[str], re.Match[str] | None]
        if op == "=~":
            rx = re.compile(pattern, re.IGNORECASE if flags == "i" else 0)
            test = rx.search
        else:
            like = _like_regex(pattern.lower() if op == "ILIKE" else pattern).fullmatch
            # ILIKE compares Unicode-lowercased text with the lowercased pattern.
            test = (lambda s: like(s.lower())) if op == "ILIKE" else like

        def string_op(cur: Any, root: Any) -> bool:
            s = _scalar_string(get(cur, root))
            return s is not None and test(s) is not None

        return string_op
    if op == "IN":
        preds = [_equals_literal(lit) for lit in node.operand]

        def in_list(cur: Any, root: Any) -> bool:
            v = get(cur, root)
            return v is not MISSING and any(p(v) for p in preds)

        return in_list
    kind, lv = node.operand
    if op in ("==", "!="):
        eq = _equals_literal(node.operand)
        want = op == "=="

        def equality(cur: Any, root: Any) -> bool:
            v = get(cur, root)
            return v is not MISSING and eq(v) == want

        return equality
    order = _ORDER[op]
    if kind == "num":

        def num_order(cur: Any, root: Any) -> bool:
            x = numeric(get(cur, root))
            return x is not None and bool(order(x, lv))

        return num_order

    def str_order(cur: Any, root: Any) -> bool:
        s = _scalar_string(get(cur, root))
        # Python compares str by code point, which is the UTF-8 byte order.
        return s is not None and bool(order(s, lv))

    return str_order


def _compile_node(node: _Node) -> Condition:
    if isinstance(node, _Exists):
        path = node.path
        return lambda cur, root: resolve(path, cur, root) is not MISSING
    if isinstance(node, _Not):
        inner = _compile_node(node.operand)
        return lambda cur, root: not inner(cur, root)
    if isinstance(node, _And):
        a, b = _compile_node(node.left), _compile_node(node.right)
        return lambda cur, root: a(cur, root) and b(cur, root)
    if isinstance(node, _Or):
        a, b = _compile_node(node.left), _compile_node(node.right)
        return lambda cur, root: a(cur, root) or b(cur, root)
    return _compile_compare(node)


def compile_condition(expression: str | None) -> Condition | None:
    """Compile a JPath condition; ``None`` for an empty/null one (every event matches)."""
    if expression is None or expression.strip() == "":
        return None
    return _compile_node(_Parser(expression).parse())


def matches(expression: str | None, event: Any, root: Any | None = None) -> bool:
    """Evaluate a condition on one parsed event (``root`` defaults to the event)."""
    cond = compile_condition(expression)
    return True if cond is None else cond(event, event if root is None else root)


# --------------------------------------------------------------------------------------------
# Time (semantics 3, 4)
# --------------------------------------------------------------------------------------------

MS_PER_DAY = 86_400_000
_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]{1,9}))?)?"
    r"(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?)?"
)


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


# (reference choice) timestamps must land in years 0000-9999, the range RFC 3339 can print.
MIN_MS = days_from_civil(0, 1, 1) * MS_PER_DAY
MAX_MS = days_from_civil(10000, 1, 1) * MS_PER_DAY - 1


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def parse_iso8601(text: str) -> int | None:
    """Milliseconds since the epoch of an ISO 8601 / RFC 3339 string, or ``None`` if invalid.

    Grammar: ``YYYY-MM-DD[T| ]hh:mm[:ss[.f{1,9}]][Z|±hh:mm|±hhmm]``; ``T``/``Z`` in either case;
    no offset means UTC; a date alone is midnight UTC; sub-millisecond fractions are floored.
    """
    m = _ISO_RE.fullmatch(text)
    if m is None:
        return None
    y, mo, d = int(m[1]), int(m[2]), int(m[3])
    if not 1 <= mo <= 12 or not 1 <= d <= _days_in_month(y, mo):
        return None
    hh = int(m[4]) if m[4] else 0
    mi = int(m[5]) if m[5] else 0
    ss = int(m[6]) if m[6] else 0
    if hh > 23 or mi > 59 or ss > 59:
        return None
    frac_ms = int((m[7] or "").ljust(3, "0")[:3])
    offset = 0
    if m[9]:
        oh, om = int(m[10]), int(m[11])
        if oh > 23 or om > 59:
            return None
        offset = (oh * 60 + om) * 60_000 * (1 if m[9] == "+" else -1)
    ms = (
        days_from_civil(y, mo, d) * MS_PER_DAY
        + hh * 3_600_000
        + mi * 60_000
        + ss * 1000
        + frac_ms
        - offset
    )
    return ms if MIN_MS <= ms <= MAX_MS else None


_UNIX_SCALE = {  # format → (multiplier, divisor) to milliseconds
    "UNIX_SECONDS": (1000, 1),
    "UNIX_MILLISECONDS": (1, 1),
    "UNIX_MICROSECONDS": (1, 1000),
    "UNIX_NANOSECONDS": (1, 1_000_000),
}
_DECIMAL = Context(prec=2000, Emax=MAX_EMAX, Emin=MIN_EMIN)
_AUTO_LIMITS = (
    (Decimal("1e11"), "UNIX_SECONDS"),
    (Decimal("1e14"), "UNIX_MILLISECONDS"),
    (Decimal("1e17"), "UNIX_MICROSECONDS"),
)


def _number_text(value: Any) -> str | None:
    """Raw text of a finite JSON number or of a string that is exactly one."""
    if isinstance(value, JNum):
        return value.raw if math.isfinite(value.value) else None
    if isinstance(value, str) and numeric(value) is not None:
        return value
    return None


def _unix_ms(raw: str, fmt: str) -> int | None:
    """Exact decimal scaling to milliseconds, floored (reference choice: no float rounding)."""
    dec = Decimal(raw)
    if fmt == "AUTO":
        magnitude = abs(dec)
        fmt = next((f for limit, f in _AUTO_LIMITS if magnitude < limit), "UNIX_NANOSECONDS")
    mul, div = _UNIX_SCALE[fmt]
    scaled = _DECIMAL.divide(_DECIMAL.multiply(dec, Decimal(mul)), Decimal(div))
    if scaled < MIN_MS or scaled >= MAX_MS + 1:
        return None
    return int(scaled.to_integral_value(rounding=ROUND_FLOOR))


def timestamp_ms(value: Any, fmt: str) -> int | None:
    """An event's timestamp value → epoch milliseconds under ``fmt``, or ``None`` if invalid.

    ``ISO_8601`` takes strings; the ``UNIX_*`` formats take a JSON number or a numeric string;
    ``AUTO`` takes ISO strings, and numbers/numeric strings classified by magnitude.
    """
    if fmt == "ISO_8601":
        return parse_iso8601(value) if isinstance(value, str) else None
    if fmt == "AUTO" and isinstance(value, str):
        iso = parse_iso8601(value)
        if iso is not None:
            return iso
    raw = _number_text(value)
    return None if raw is None else _unix_ms(raw, fmt)


FIXED_INTERVAL_MS = {
    "SECOND": 1000,
    "MINUTE": 60_000,
    "HOUR": 3_600_000,
    "DAY": MS_PER_DAY,
    "WEEK": 7 * MS_PER_DAY,
}


def _month_index(ms: int) -> int:
    y, m, _ = civil_from_days(ms // MS_PER_DAY)
    return (y - 1970) * 12 + (m - 1)


def _month_start(index: int) -> int:
    return days_from_civil(1970 + index // 12, index % 12 + 1, 1) * MS_PER_DAY


def bucket_start(ms: int, interval_type: str, count: int) -> int:
    """Start (epoch ms) of the bucket holding ``ms`` (semantics 4): fixed intervals truncate
    from the epoch; MONTH/YEAR are calendar months/years counted from January 1970."""
    if interval_type in FIXED_INTERVAL_MS:
        length = FIXED_INTERVAL_MS[interval_type] * count
        return ms // length * length
    n = count * (12 if interval_type == "YEAR" else 1)
    return _month_start(_month_index(ms) // n * n)


def bucket_end(start: int, interval_type: str, count: int) -> int:
    """Exclusive end of the bucket that starts at ``start``."""
    if interval_type in FIXED_INTERVAL_MS:
        return start + FIXED_INTERVAL_MS[interval_type] * count
    n = count * (12 if interval_type == "YEAR" else 1)
    return _month_start(_month_index(start) + n)


def format_rfc3339(ms: int) -> str:
    """RFC 3339 UTC with ``Z``; ``.mmm`` only when the milliseconds are not zero."""
    days, rem = divmod(ms, MS_PER_DAY)
    y, mo, d = civil_from_days(days)
    hh, rem = divmod(rem, 3_600_000)
    mi, rem = divmod(rem, 60_000)
    ss, frac = divmod(rem, 1000)
    text = f"{y:04d}-{mo:02d}-{d:02d}T{hh:02d}:{mi:02d}:{ss:02d}"
    return text + (f".{frac:03d}Z" if frac else "Z")


# --------------------------------------------------------------------------------------------
# Definitions (semantics 1)
# --------------------------------------------------------------------------------------------

CALCULATIONS = ("COUNT", "SUM", "MIN", "MAX", "AVG", "APPROX_COUNT_DISTINCT", "PERCENTILES")
_NUMERIC_CALCS = frozenset({"SUM", "MIN", "MAX", "AVG", "PERCENTILES"})
SCHEMAS = ("ARRAY_OF_EVENTS", "NEWLINE_DELIMITED", "OBJECT_WITH_ARRAY_PROPERTY", "SINGLE_OBJECT")
TIMESTAMP_FORMATS = (
    "ISO_8601",
    "UNIX_SECONDS",
    "UNIX_MILLISECONDS",
    "UNIX_MICROSECONDS",
    "UNIX_NANOSECONDS",
    "AUTO",
)
INTERVAL_TYPES = ("SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")
# (reference choice) "100 years" for fixed intervals is 36,525 days.
_MAX_FIXED_MS = 36_525 * MS_PER_DAY


@dataclass(frozen=True)
class _Aggregation:
    id: int
    sub_filter: Condition | None
    calculations: tuple[str, ...]
    field: Path | None
    wants_numeric: bool
    wants_distinct: bool


@dataclass(frozen=True)
class _Filter:
    id: str
    condition: Condition | None
    grouping_keys: tuple[str, ...]
    grouping_paths: tuple[Path, ...]
    grouping_texts: tuple[str, ...]  # the JPaths as written, which groupingFilters name
    interval_type: str
    interval_count: int
    aggregations: dict[int, _Aggregation]
    flatten: Path | None


@dataclass(frozen=True)
class _Ingest:
    schema: str
    array_path: Path | None
    timestamp_path: Path | None  # None: source INGEST
    timestamp_format: str
    drop_invalid: bool


def _path_field(text: Any, name: str) -> Path:
    if not isinstance(text, str):
        raise ConfigError(name, "must be a JPath string")
    try:
        return parse_path(text)
    except JPathSyntaxError as exc:
        raise ConfigError(name, str(exc)) from None


def _condition_field(text: Any, name: str) -> Condition | None:
    if text is not None and not isinstance(text, str):
        raise ConfigError(name, "must be a JPath string or null")
    try:
        return compile_condition(text)
    except JPathSyntaxError as exc:
        raise ConfigError(name, str(exc)) from None


def _parse_ingest(defn: dict[str, Any]) -> _Ingest:
    schema = defn.get("schema") or "ARRAY_OF_EVENTS"  # (reference choice) default schema
    if schema not in SCHEMAS:
        raise ConfigError("schema", f"unknown schema {schema!r}")
    array_path = None
    if schema == "OBJECT_WITH_ARRAY_PROPERTY":
        array_path = _path_field(defn.get("arrayPath"), "arrayPath")
    ts = defn.get("timestamp") or {"source": "INGEST"}
    source = ts.get("source", "INGEST")
    if source not in ("INGEST", "PROPERTY"):
        raise ConfigError("timestamp.source", f"unknown source {source!r}")
    fmt = ts.get("format") or "AUTO"  # (reference choice) default format
    if fmt not in TIMESTAMP_FORMATS:
        raise ConfigError("timestamp.format", f"unknown format {fmt!r}")
    on_invalid = ts.get("onInvalid") or "INGEST_TIME"
    if on_invalid not in ("INGEST_TIME", "DROP"):
        raise ConfigError("timestamp.onInvalid", f"unknown value {on_invalid!r}")
    ts_path = _path_field(ts.get("path"), "timestamp.path") if source == "PROPERTY" else None
    return _Ingest(schema, array_path, ts_path, fmt, on_invalid == "DROP")


def _parse_filter(defn: dict[str, Any], where: str) -> _Filter:
    fid = defn.get("id")
    if not isinstance(fid, str) or not fid:
        raise ConfigError(f"{where}.id", "must be a non-empty string")
    items = defn.get("groupingItems")
    if items is None:
        items = [{"grouping": g, "alias": None} for g in defn.get("groupings") or []]
    if len(items) > 10:
        raise ConfigError(f"{where}.groupingItems", "at most 10 groupings")
    keys: list[str] = []
    paths: list[Path] = []
    seen_paths: set[str] = set()
    seen_paths_in_order: list[str] = []
    for i, item in enumerate(items):
        name = f"{where}.groupingItems[{i}]"
        text = item.get("grouping")
        paths.append(_path_field(text, f"{name}.grouping"))
        if text in seen_paths:
            raise ConfigError(f"{name}.grouping", "groupings must be unique")
        seen_paths.add(text)
        seen_paths_in_order.append(text)
        alias = item.get("alias")
        if alias is not None and (not isinstance(alias, str) or len(alias) > 100):
            raise ConfigError(f"{name}.alias", "must be a string of at most 100 characters")
        key = alias if alias else text  # (reference choice) "" counts as no alias
        if key in keys:
            raise ConfigError(f"{name}.alias", "aliases must be unique")
        keys.append(key)
    itype = defn.get("intervalType")
    if itype not in INTERVAL_TYPES:
        raise ConfigError(f"{where}.intervalType", f"unknown interval type {itype!r}")
    count = defn.get("intervalCount", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"{where}.intervalCount", "must be a positive integer")
    if itype in FIXED_INTERVAL_MS:
        length = FIXED_INTERVAL_MS[itype] * count
        ok = 30_000 <= length <= _MAX_FIXED_MS
    else:
        ok = count <= (1200 if itype == "MONTH" else 100)
    if not ok:
        raise ConfigError(f"{where}.intervalCount", "interval must be from 30 s to 100 years")
    aggs: dict[int, _Aggregation] = {}
    raw_aggs = defn.get("aggregations") or []
    if len(raw_aggs) > 10:
        raise ConfigError(f"{where}.aggregations", "at most 10 aggregations")
    for i, agg in enumerate(raw_aggs):
        name = f"{where}.aggregations[{i}]"
        aid = agg.get("id")
        if isinstance(aid, bool) or not isinstance(aid, int) or aid in aggs:
            raise ConfigError(f"{name}.id", "must be a unique integer")
        calcs = agg.get("calculations") or []
        if not calcs or len(set(calcs)) != len(calcs) or any(c not in CALCULATIONS for c in calcs):
            raise ConfigError(f"{name}.calculations", "must be non-empty, known and unique")
        field_text = agg.get("calculationField")
        field_path = None
        if field_text not in (None, ""):
            field_path = _path_field(field_text, f"{name}.calculationField")
        elif list(calcs) != ["COUNT"]:
            raise ConfigError(f"{name}.calculationField", "required unless the only calc is COUNT")
        aggs[aid] = _Aggregation(
            id=aid,
            sub_filter=_condition_field(agg.get("subFilter"), f"{name}.subFilter"),
            calculations=tuple(calcs),
            field=field_path,
            wants_numeric=field_path is not None and bool(_NUMERIC_CALCS & set(calcs)),
            wants_distinct=field_path is not None and "APPROX_COUNT_DISTINCT" in calcs,
        )
    flatten_text = defn.get("flattenPath")
    flatten = _path_field(flatten_text, f"{where}.flattenPath") if flatten_text else None
    return _Filter(
        id=fid,
        condition=_condition_field(defn.get("filter"), f"{where}.filter"),
        grouping_keys=tuple(keys),
        grouping_paths=tuple(paths),
        grouping_texts=tuple(seen_paths_in_order),
        interval_type=itype,
        interval_count=count,
        aggregations=aggs,
        flatten=flatten,
    )


# --------------------------------------------------------------------------------------------
# Engine
# --------------------------------------------------------------------------------------------


@dataclass
class _Cell:
    """Exact state of one (aggregation, bucket, grouping tuple) cell."""

    count: int = 0
    numbers: list[float] = field(default_factory=list)
    distinct: set[tuple[int, str]] = field(default_factory=set)


@dataclass
class _FilterStats:
    matched: int = 0
    flattened_elements: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def _bump(counter: dict[str, int], reason: str, n: int = 1) -> None:
    counter[reason] = counter.get(reason, 0) + n


# One pending update: (filter id, aggregation id, bucket start, groupings, number, distinct key)
_Update = tuple[str, int, int, tuple[str, ...], float | None, tuple[int, str] | None]


def _ndjson_elements(text: str, raw: bool) -> Iterator[Any]:
    """NDJSON lines: blank lines, CRLF, one trailing comma per line and stray ``[``/``]`` lines
    are tolerated (semantics 1)."""
    for line in text.split("\n"):
        line = line.strip(" \t\r")
        if line.endswith(","):
            line = line[:-1].rstrip(" \t\r")
        if line in ("", "[", "]"):
            continue
        yield parse_json(line, raw=raw)


class ReferenceEngine:
    """Exact, in-memory model of one eventtally engine with one ingest.

    ``ingest`` and ``filters`` are the camelCase definitions of semantics 1. ``now_ms`` is the
    engine clock (epoch milliseconds) used for ingest-time timestamps and incomplete intervals.
    """

    def __init__(
        self, ingest: dict[str, Any], filters: list[dict[str, Any]], *, now_ms: int = 0
    ) -> None:
        self.now_ms = now_ms
        self._ingest = _parse_ingest(ingest)
        self._filters: dict[str, _Filter] = {}
        for i, defn in enumerate(filters):
            filt = _parse_filter(defn, f"filters[{i}]")
            if filt.id in self._filters:
                raise ConfigError(f"filters[{i}].id", "filter ids must be unique")
            self._filters[filt.id] = filt
        self._cells: dict[str, dict[tuple[int, int, tuple[str, ...]], _Cell]] = {
            fid: {} for fid in self._filters
        }

    # -- ingest ------------------------------------------------------------------------------

    def ingest(
        self, data: bytes | bytearray | memoryview | str, *, now_ms: int | None = None
    ) -> dict[str, Any]:
        """Ingest one batch atomically and return its stats (semantics 8).

        Raises :class:`JsonError`/:class:`FormatError` (``ValueError``) for a bad batch; nothing
        is applied then. ``now_ms`` overrides the engine clock for this batch.
        """
        now = self.now_ms if now_ms is None else now_ms
        text = _decode_input(data)
        try:
            stats, updates = self._evaluate(self._elements(text, raw=False), now)
        except _NeedRaw:
            stats, updates = self._evaluate(self._elements(text, raw=True), now)
        for fid, aid, bucket, groups, number, distinct in updates:
            cells = self._cells[fid]
            key = (aid, bucket, groups)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = _Cell()
            cell.count += 1
            if number is not None:
                cell.numbers.append(number)
            if distinct is not None:
                cell.distinct.add(distinct)
        return stats

    def _elements(self, text: str, raw: bool) -> list[Any]:
        schema = self._ingest.schema
        if schema == "NEWLINE_DELIMITED":
            return list(_ndjson_elements(text, raw))
        doc = parse_json(text, raw=raw)
        if schema == "ARRAY_OF_EVENTS":
            if not isinstance(doc, list):
                raise FormatError("ARRAY_OF_EVENTS expects a JSON array")
            return list(doc)
        if schema == "SINGLE_OBJECT":
            if not isinstance(doc, dict):
                raise FormatError("SINGLE_OBJECT expects a JSON object")
            return [doc]
        if not isinstance(doc, dict):
            raise FormatError("OBJECT_WITH_ARRAY_PROPERTY expects a JSON object")
        assert self._ingest.array_path is not None
        events = resolve(self._ingest.array_path, doc)
        if not isinstance(events, list):
            raise FormatError("arrayPath does not name an array")
        return list(events)

    def _timestamp(self, event: dict[str, Any], now: int) -> tuple[int | None, bool]:
        """(timestamp or None when dropped, used-fallback flag)."""
        ing = self._ingest
        if ing.timestamp_path is None:
            return now, False
        ts = timestamp_ms(resolve(ing.timestamp_path, event), ing.timestamp_format)
        if ts is not None:
            return ts, False
        return (None, False) if ing.drop_invalid else (now, True)

    def _evaluate(self, elements: list[Any], now: int) -> tuple[dict[str, Any], list[_Update]]:
        dropped: dict[str, int] = {}
        per_filter: dict[str, _FilterStats] = {fid: _FilterStats() for fid in self._filters}
        accepted = fallback = 0
        updates: list[_Update] = []
        for event in elements:
            if not isinstance(event, dict):
                _bump(dropped, "not_object")
                continue
            ts, used_fallback = self._timestamp(event, now)
            if ts is None:
                _bump(dropped, "timestamp_invalid")
                continue
            accepted += 1
            fallback += used_fallback
            for filt in self._filters.values():
                stats = per_filter[filt.id]
                if filt.flatten is None:
                    units: list[Any] = [event]
                else:
                    arr = resolve(filt.flatten, event)
                    if not isinstance(arr, list):
                        _bump(stats.dropped, "flatten_not_array")
                        continue
                    # (reference choice, as the Rust core) elements that are not objects are
                    # skipped like non-object batch elements, under their own reason.
                    units = [el for el in arr if isinstance(el, dict)]
                    if len(units) != len(arr):
                        _bump(stats.dropped, "flatten_element_not_object", len(arr) - len(units))
                    stats.flattened_elements += len(units)
                bucket = bucket_start(ts, filt.interval_type, filt.interval_count)
                for unit in units:
                    self._evaluate_unit(filt, unit, event, bucket, stats, updates)
        stats_out = {
            "events": len(elements),
            "accepted": accepted,
            "dropped": dropped,
            "timestamp_fallback": fallback,
            "per_filter": {
                fid: {
                    "matched": fs.matched,
                    "flattened_elements": fs.flattened_elements,
                    "dropped": fs.dropped,
                }
                for fid, fs in per_filter.items()
            },
        }
        return stats_out, updates

    @staticmethod
    def _evaluate_unit(
        filt: _Filter,
        unit: Any,
        root: Any,
        bucket: int,
        stats: _FilterStats,
        updates: list[_Update],
    ) -> None:
        if filt.condition is not None and not filt.condition(unit, root):
            return
        stats.matched += 1
        groups = tuple(group_string(resolve(p, unit, root)) for p in filt.grouping_paths)
        for agg in filt.aggregations.values():
            if agg.sub_filter is not None and not agg.sub_filter(unit, root):
                continue
            number = distinct = None
            if agg.field is not None:
                value = resolve(agg.field, unit, root)
                if agg.wants_numeric:
                    number = numeric(value)
                if agg.wants_distinct:
                    distinct = _distinct_key(value)
            updates.append((filt.id, agg.id, bucket, groups, number, distinct))

    # -- results -----------------------------------------------------------------------------

    def results(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Answer a plain Metrics API query (spec 7.2, ``docs/queries.md``) exactly.

        Supports ``filterId``, ``aggregationId``, ``calculation``, ``startTime``/``endTime``
        (start inclusive, end exclusive, over base-bucket starts), ``percentile``,
        ``groupingFilters`` (list or legacy map; ``$__agg`` and ``returnGroupingValues: false``
        collapse), ``recalculatedInterval`` (epoch-truncated, calendar for MONTH/YEAR),
        ``limit``/``limitType`` (per time slice, ties broken by the grouping values),
        ``excludeEmptyGroupings`` and ``includeIncompleteIntervals``. Rows are
        ``{"dt", "groupings", "value"}`` sorted by bucket then by the grouping tuple.
        """
        filt = self._filters.get(query.get("filterId"))  # type: ignore[arg-type]
        if filt is None:
            raise QueryError(f"unknown filterId {query.get('filterId')!r}")
        agg = filt.aggregations.get(query.get("aggregationId"))  # type: ignore[arg-type]
        if agg is None:
            raise QueryError(f"unknown aggregationId {query.get('aggregationId')!r}")
        calc = query.get("calculation")
        if calc not in agg.calculations:
            raise QueryError(f"calculation {calc!r} is not computed by this aggregation")
        p = query.get("percentile")
        if calc == "PERCENTILES" and (
            isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1
        ):
            raise QueryError("percentile must be a number in (0, 1]")
        start = self._query_time(query, "startTime")
        end = self._query_time(query, "endTime")
        allowed, split = self._grouping_filters(filt, query.get("groupingFilters"))
        rollup = self._rollup(filt, query.get("recalculatedInterval"))
        exclude_empty = bool(query.get("excludeEmptyGroupings"))
        include_incomplete = query.get("includeIncompleteIntervals")
        include_incomplete = True if include_incomplete is None else bool(include_incomplete)
        merged: dict[tuple[int, tuple[str, ...]], _Cell] = {}
        for (aid, bucket, groups), cell in self._cells[filt.id].items():
            if aid != agg.id:
                continue
            if (start is not None and bucket < start) or (end is not None and bucket >= end):
                continue
            if any(groups[i] not in values for i, values in allowed.items()):
                continue
            kept = tuple(g for i, g in enumerate(groups) if split[i])
            out = merged.setdefault((rollup(bucket), kept), _Cell())
            out.count += cell.count
            out.numbers.extend(cell.numbers)
            out.distinct |= cell.distinct
        rows: list[tuple[int, tuple[str, ...], float]] = []
        for (bucket, groups), cell in merged.items():
            if not include_incomplete and self._rolled_end(filt, query, bucket) > self.now_ms:
                continue
            if exclude_empty and "" in groups:
                continue
            value = _calculate(calc, cell, p)
            if value is not None:
                rows.append((bucket, groups, value))
        rows.sort(key=lambda r: (r[0], r[1]))
        rows = _limit_per_slice(rows, query.get("limit"), query.get("limitType"))
        keys = tuple(k for i, k in enumerate(filt.grouping_keys) if split[i])
        return [
            {
                "dt": format_rfc3339(b),
                "groupings": dict(zip(keys, g, strict=True)) if filt.grouping_keys else None,
                "value": v,
            }
            for b, g, v in rows
        ]

    @staticmethod
    def _grouping_filters(filt: _Filter, raw: Any) -> tuple[dict[int, set[str]], list[bool]]:
        """(allowed values by grouping index, whether each grouping stays a split dimension)."""
        split = [True] * len(filt.grouping_keys)
        allowed: dict[int, set[str]] = {}
        if not raw:
            return allowed, split
        items = (
            [{"grouping": k, "filters": v} for k, v in raw.items()]
            if isinstance(raw, dict)
            else raw
        )
        names = list(filt.grouping_texts)
        for item in items:
            name = item.get("grouping")
            if name in names:
                index = names.index(name)
            elif name in filt.grouping_keys:
                index = filt.grouping_keys.index(name)
            else:
                raise QueryError(f"groupingFilters: {name!r} is not a grouping of this filter")
            values = list(item.get("filters") or [])
            kept = [v for v in values if v != "$__agg"]
            if kept:
                allowed[index] = set(kept)
            if "$__agg" in values or item.get("returnGroupingValues", True) is False:
                split[index] = False
        return allowed, split

    @staticmethod
    def _rollup_spec(filt: _Filter, raw: Any) -> tuple[str, int] | None:
        """(unit, frequency) of an effective rollup, or None when it is absent or ignored."""
        if not raw:
            return None
        unit, freq = raw.get("type"), raw.get("frequency")
        if freq is None or freq == 0:
            return None
        if isinstance(freq, bool) or not isinstance(freq, int) or freq < 0:
            raise QueryError("recalculatedInterval.frequency must be a non-negative integer")
        if unit not in (*FIXED_INTERVAL_MS, "MONTH", "YEAR"):
            raise QueryError(f"recalculatedInterval.type {unit!r} is not an interval unit")
        return unit, freq

    @classmethod
    def _rollup(cls, filt: _Filter, raw: Any) -> Callable[[int], int]:
        """Maps a base bucket start to the start of its rolled-up bucket (identity if none)."""
        spec = cls._rollup_spec(filt, raw)
        if spec is None or not cls._coarser(filt, *spec):
            return lambda bucket: bucket
        unit, freq = spec
        return lambda bucket: bucket_start(bucket, unit, freq)

    @staticmethod
    def _coarser(filt: _Filter, unit: str, freq: int) -> bool:
        base_fixed = filt.interval_type in FIXED_INTERVAL_MS
        if unit in FIXED_INTERVAL_MS:
            length = FIXED_INTERVAL_MS[unit] * freq
            if base_fixed:
                return length > FIXED_INTERVAL_MS[filt.interval_type] * filt.interval_count
            months = filt.interval_count * (12 if filt.interval_type == "YEAR" else 1)
            return length > months * 31 * MS_PER_DAY
        months = freq * (12 if unit == "YEAR" else 1)
        if base_fixed:
            return True
        return months > filt.interval_count * (12 if filt.interval_type == "YEAR" else 1)

    @classmethod
    def _rolled_end(cls, filt: _Filter, query: dict[str, Any], bucket: int) -> int:
        spec = cls._rollup_spec(filt, query.get("recalculatedInterval"))
        if spec is None or not cls._coarser(filt, *spec):
            return bucket_end(bucket, filt.interval_type, filt.interval_count)
        return bucket_end(bucket, *spec)

    @staticmethod
    def _query_time(query: dict[str, Any], name: str) -> int | None:
        text = query.get(name)
        if text is None:
            return None
        ms = parse_iso8601(text) if isinstance(text, str) else None
        if ms is None:
            raise QueryError(f"{name} is not an ISO 8601 time: {text!r}")
        return ms


def _limit_per_slice(
    rows: list[tuple[int, tuple[str, ...], float]], limit: Any, limit_type: Any
) -> list[tuple[int, tuple[str, ...], float]]:
    """Keep the ``limit`` best rows of each time slice (``Top`` by default, or ``Bottom``),
    ties broken by the grouping values; rows stay in (bucket, groupings) order."""
    if limit is None or limit == 0:
        return rows
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise QueryError("limit must be a non-negative integer")
    top = limit_type != "Bottom"
    kept: set[tuple[int, tuple[str, ...]]] = set()
    by_slice: dict[int, list[tuple[int, tuple[str, ...], float]]] = {}
    for row in rows:
        by_slice.setdefault(row[0], []).append(row)
    for slice_rows in by_slice.values():
        ranked = sorted(slice_rows, key=lambda r: (-r[2] if top else r[2], r[1]))
        kept.update((r[0], r[1]) for r in ranked[:limit])
    return [r for r in rows if (r[0], r[1]) in kept]


def _calculate(calc: str, cell: _Cell, p: float | None) -> float | None:
    """Exact value of ``calc`` for a cell, or ``None`` when the row does not exist."""
    if calc == "COUNT":
        return float(cell.count)
    if calc == "APPROX_COUNT_DISTINCT":
        return float(len(cell.distinct))
    nums = cell.numbers
    if not nums:
        return None
    if calc == "SUM":
        return math.fsum(nums)
    if calc == "AVG":
        return math.fsum(nums) / len(nums)
    if calc == "MIN":
        return min(nums)
    if calc == "MAX":
        return max(nums)
    assert calc == "PERCENTILES" and p is not None
    return percentile_cont(sorted(nums), p)


def percentile_cont(ordered: list[float], p: float) -> float:
    """PERCENTILE_CONT of ascending values for ``0 < p <= 1``, bit for bit ``numpy.quantile``.

    numpy interpolates as ``a + (b - a) * t``, but from ``b`` as ``b - (b - a) * (1 - t)`` when
    ``t >= 0.5``; the same rounding keeps exact answers equal to numpy's to the last bit.
    """
    n = len(ordered)
    h = p * (n - 1)
    lo = math.floor(h)
    if lo >= n - 1:
        return ordered[-1]
    a, b, t = ordered[lo], ordered[lo + 1], h - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t
