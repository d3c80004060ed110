"""Tests of the pure-Python reference (``tests/reference.py``) and the expected-value tables.

The UPPER_CASE module-level lists are the examples of ``docs/semantics.md`` and the upstream spec
in executable form, with inputs as JSON *text* so any implementation can be fed the same bytes.
Other test files import them (``from test_reference import JPATH_CASES``) to hold the Rust core
to the same answers. Every value was derived from the contract by hand, not by running the
reference. Values of PERCENTILES and APPROX_COUNT_DISTINCT are exact here; the Rust core's
sketches should be compared with a tolerance.

Guarantees: the reference agrees with every table row; the generator in
``benches/segment_gen.py`` is deterministic and produces what its docstring promises.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eventtally
from tests.reference import (
    MAX_MS,
    MIN_MS,
    ConfigError,
    FormatError,
    JPathSyntaxError,
    JsonError,
    QueryError,
    ReferenceEngine,
    bucket_end,
    bucket_start,
    compile_condition,
    format_rfc3339,
    group_string,
    js_number_str,
    matches,
    numeric,
    parse_iso8601,
    parse_json,
    parse_path,
    resolve,
    timestamp_ms,
)

DATA = Path(__file__).parent / "data"
BENCHES = Path(__file__).parent.parent / "benches"


def fixture(name: str) -> bytes:
    """The bytes of a fixture copied from shared/spec/fixtures into tests/data."""
    return (DATA / name).read_bytes()


class RustEngine:
    """The Rust engine behind the reference's interface, so one table drives both.

    ``now_ms`` is the engine clock in epoch milliseconds, as for ``ReferenceEngine``; stats come
    back as the same plain dict.
    """

    def __init__(
        self, ingest: dict[str, Any], filters: list[dict[str, Any]], *, now_ms: int = 0
    ) -> None:
        self._engine = eventtally.Engine(ingest, filters, clock=lambda: now_ms / 1000)

    def ingest(self, data: bytes | str) -> dict[str, Any]:
        return self._engine.ingest(data).to_dict()

    def results(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        return self._engine.results(query)


EngineFactory = type[ReferenceEngine] | type[RustEngine]

RUST_ERRORS: dict[type[ValueError], type[ValueError]] = {
    JsonError: eventtally.JsonError,
    FormatError: eventtally.FormatError,
    ConfigError: eventtally.ConfigError,
    QueryError: eventtally.QueryError,
    JPathSyntaxError: eventtally.PathSyntaxError,
    ValueError: ValueError,
}
"""The Rust engine's class for each error class the reference raises."""


RUST_PATH_SYNTAX_CASES = frozenset(
    {"bad_grouping_path", "bad_field", "bad_filter", "bad_sub_filter", "bad_flatten_path"}
)
"""Config error cases where the Rust engine raises the more specific ``PathSyntaxError``: a
``ConfigError``'s ``field`` plus the character ``position`` (python-api.md, errors)."""

RUST_NOT_FOUND_CASES = frozenset({"unknown_filter", "unknown_aggregation"})
"""Query error cases where the Rust engine raises ``NotFoundError``, which the server answers
with 404 (spec 7.8) rather than 400."""


def error_of(
    factory: EngineFactory, reference_error: type[ValueError], case: str = ""
) -> type[ValueError]:
    """The class ``factory``'s engine raises where the reference raises ``reference_error``."""
    if factory is ReferenceEngine:
        return reference_error
    if case in RUST_PATH_SYNTAX_CASES:
        return eventtally.PathSyntaxError
    if case in RUST_NOT_FOUND_CASES:
        return eventtally.NotFoundError
    return RUST_ERRORS[reference_error]


@pytest.fixture(params=[ReferenceEngine, RustEngine], ids=["reference", "rust"])
def make_engine(request: pytest.FixtureRequest) -> EngineFactory:
    """Each hand table runs through the pure-Python reference and the Rust engine alike."""
    factory: EngineFactory = request.param
    return factory


# =============================================================================================
# JPath (semantics 5, spec 6): (expression, event JSON, expected match)
# =============================================================================================

APP = (
    '{"eventName":"appOpen","app":{"version":"2.0","buildNum":4102},'
    '"device":{"platform":"ios"},"duration":61,"color":"grey","player":{"weapons":["sword"]}}'
)

JPATH_CASES: list[tuple[str, str, bool]] = [
    # --- the spec 6 operator table, one example each, plus the typing rules they rely on
    ("@.app.version == 2.0", APP, True),  # "2.0" is cast to a float
    ("@.app.version == 2.0", '{"app":{"version":2}}', True),
    ("@.app.version == 2.0", '{"app":{"version":"2.0.1"}}', False),  # cast fails: false
    ("@.app.version != 2.0", '{"app":{"version":"1.9"}}', True),
    ("@.app.version != 2.0", APP, False),
    ("@.app.version != 2.0", '{"app":{}}', False),  # missing: false, != included
    ("@.app.version != 2.0", '{"app":{"version":"beta"}}', True),  # present, other type
    ("@.duration > 60", '{"duration":61}', True),
    ("@.duration > 60", '{"duration":60}', False),
    ("@.duration > 60", '{"duration":"61"}', True),
    ("@.duration > 60", '{"duration":"61s"}', False),
    ("@.app.buildNum >= 4102", '{"app":{"buildNum":4102}}', True),
    ("@.app.buildNum >= 4102", '{"app":{"buildNum":4101}}', False),
    ("@.app.buildNum < 3000", '{"app":{"buildNum":2999}}', True),
    ("@.app.buildNum < 3000", '{"app":{"buildNum":3000}}', False),
    ("@.app.version <= 1.9", '{"app":{"version":"1.9"}}', True),
    ("@.app.version <= 1.9", '{"app":{"version":"1.10"}}', True),  # numeric: 1.1 <= 1.9
    ("@.app.version <= 1.9", APP, False),
    ("@.eventName LIKE 'app%'", '{"eventName":"appOpen"}', True),
    ("@.eventName LIKE 'app%'", '{"eventName":"app"}', True),
    ("@.eventName LIKE 'app%'", '{"eventName":"AppOpen"}', False),  # LIKE is case-sensitive
    ("@.eventName LIKE 'app%'", '{"eventName":"xapp"}', False),  # whole-string match
    ("@.eventName ILIKE 'ApP%'", '{"eventName":"appOpen"}', True),
    ("@.eventName ILIKE 'ApP%'", '{"eventName":"APPCLOSE"}', True),
    ("@.eventName ILIKE 'ApP%'", '{"eventName":"openApp"}', False),
    ("@.code LIKE 'a_c'", '{"code":"abc"}', True),
    ("@.code LIKE 'a_c'", '{"code":"ac"}', False),
    ("@.code LIKE 'a_c'", '{"code":"abbc"}', False),
    ("@.code LIKE 'b'", '{"code":"abc"}', False),
    ("@.color =~ /gr(a|e)y/", '{"color":"grey"}', True),
    ("@.color =~ /gr(a|e)y/", '{"color":"gray"}', True),
    ("@.color =~ /gr(a|e)y/", '{"color":"dark grey!"}', True),  # search semantics
    ("@.color =~ /gr(a|e)y/", '{"color":"green"}', False),
    ("@.color =~ /gr(a|e)y/", '{"color":"GREY"}', False),
    ("@.color =~ /^GREY$/i", '{"color":"grey"}', True),
    ("@.eventName in ['appOpen', 'appClose']", '{"eventName":"appOpen"}', True),
    ("@.eventName in ['appOpen', 'appClose']", '{"eventName":"appClose"}', True),
    ("@.eventName in ['appOpen', 'appClose']", '{"eventName":"appBackground"}', False),
    ("@.eventName in ['appOpen', 'appClose']", "{}", False),
    ("@.n in [1, 2, 'x']", '{"n":"2"}', True),  # == with the numeric literal 2
    ("@.n in [1, 2, 'x']", '{"n":"x"}', True),
    ("@.n in [1, 2, 'x']", '{"n":3}', False),
    ("@.x in [null, 1]", '{"x":null}', True),
    ("@.x in []", '{"x":1}', False),
    ("@.error", '{"error":"boom"}', True),
    ("@.error", '{"error":null}', True),  # decision 5: present even when null
    ("@.error", "{}", False),
    ("!(@.color)", "{}", True),
    ("!(@.color)", '{"color":"red"}', False),
    ("!(@.color)", '{"color":null}', False),
    ("@.app.version==2.0 && @.device.platform == 'ios'", APP, True),
    (
        "@.app.version==2.0 && @.device.platform == 'ios'",
        '{"app":{"version":"2.0"},"device":{"platform":"android"}}',
        False,
    ),
    (
        "@.eventName == 'AppClose' || @.eventName == 'AppBackground'",
        '{"eventName":"AppBackground"}',
        True,
    ),
    (
        "@.eventName == 'AppClose' || @.eventName == 'AppBackground'",
        '{"eventName":"AppOpen"}',
        False,
    ),
    ("@.player.weapons.length > 0", '{"player":{"weapons":["sword"]}}', True),
    ("@.player.weapons.length > 0", '{"player":{"weapons":[]}}', False),
    ("@.player.weapons.length > 0", '{"player":{}}', False),
    # --- .length details
    ("@.name.length == 5", '{"name":"héllo"}', True),  # characters, not bytes
    ("@.box.length == 3", '{"box":{"length":3}}', True),  # an object's own member
    ("@.box.length == 3", '{"box":{"width":3}}', False),
    ("@.n.length == 1", '{"n":7}', False),  # numbers have no length
    ("@.tags.length == '2'", '{"tags":["a","b"]}', True),  # string form of the count
    ("@.tags.length", '{"tags":["a","b"]}', False),  # bare path: the member only
    ("@['tags']['length'] == 2", '{"tags":["a","b"]}', True),
    # --- three equivalent notations, indexes, quoting
    ("@.device.platform == 'ios'", APP, True),
    ("@['device']['platform'] == 'ios'", APP, True),
    ("@['device'].platform == 'ios'", APP, True),
    ("@[\"device\"].platform == 'ios'", APP, True),
    ("@[ 'device' ].platform == 'ios'", APP, True),
    ("@.player.weapons[0] == 'sword'", APP, True),
    ("@.player.weapons[1] == 'sword'", APP, False),
    ("@.player[0] == 'sword'", APP, False),  # index on an object: missing
    ("@['key with spaces'] == true", '{"key with spaces":true}', True),
    ("@['a.b.c'] == 'dotted'", '{"a.b.c":"dotted"}', True),
    ("@.a.b.c == 'dotted'", '{"a.b.c":"dotted"}', False),
    (r"@['it\'s'] == 1", '{"it\'s":1}', True),
    (r"@.s == 'it\'s'", '{"s":"it\'s"}', True),
    (r"@.s == 'back\\slash'", r'{"s":"back\\slash"}', True),
    ("@[''] == 'empty key'", '{"":"empty key"}', True),
    ("@.$dollar == 1", '{"$dollar":1}', True),
    ("@.clé == 1", '{"clé":1}', True),
    ("$.a == 1", '{"a":1}', True),  # without flattening $ is the event itself
    # --- precedence and grouping
    ("@.a == 1 || @.b == 1 && @.c == 1", '{"a":1}', True),  # && binds tighter than ||
    ("@.a == 1 || @.b == 1 && @.c == 1", '{"b":1}', False),
    ("(@.a == 1 || @.b == 1) && @.c == 1", '{"a":1}', False),
    ("(@.a == 1 || @.b == 1) && @.c == 1", '{"b":1,"c":1}', True),
    ("!(@.a == 1) && @.b == 1", '{"a":2,"b":1}', True),
    ("!(@.a == 1) && @.b == 1", '{"a":1,"b":1}', False),
    ("!(@.a == 1)", "{}", True),  # the comparison is false, its negation true
    ("!!@.a", '{"a":0}', True),
    ("!@.a || @.b", '{"b":0}', True),
    ("@.duration_ms>500", '{"duration_ms":501}', True),  # whitespace is optional
    ("  @.x==1&&@.y==2  ", '{"x":1,"y":2}', True),
    # --- keywords in any case
    ("@.e like 'a%'", '{"e":"abc"}', True),
    ("@.e Ilike 'A%'", '{"e":"abc"}', True),
    ("@.e IN ['a']", '{"e":"a"}', True),
    ("@.flag == TRUE", '{"flag":true}', True),
    ("@.x == Null", '{"x":null}', True),
    # --- typing: a string literal compares the string form (semantics 7)
    ("@.n == '42'", '{"n":42}', True),
    ("@.n == '1.5'", '{"n":1.50}', True),
    ("@.n == '1.50'", '{"n":1.50}', False),
    ("@.n == '1000'", '{"n":1e3}', True),
    ("@.n == '0'", '{"n":-0}', True),
    ("@.b == 'true'", '{"b":true}', True),
    ("@.o == '{}'", '{"o":{}}', False),  # objects never equal a string literal
    ("@.o == '[]'", '{"o":[]}', False),
    ("@.o != 'x'", '{"o":{}}', True),
    ("@.z == ''", '{"z":null}', False),  # null never equals a string literal
    ("@.z != ''", '{"z":null}', True),
    ("@.s < 'b'", '{"s":"a"}', True),
    ("@.s < 'b'", '{"s":"B"}', True),  # byte-wise: uppercase sorts first
    ("@.s < 'b'", '{"s":"é"}', False),  # byte-wise: non-ASCII sorts last
    ("@.n < '9'", '{"n":10}', True),  # "10" < "9" as strings
    ("@.s >= 'abc'", '{"s":"abc"}', True),
    ("@.o < 'z'", '{"o":{"a":1}}', False),
    # --- typing: numeric literal (decision 6 cast)
    ("@.x == 1000", '{"x":"1e3"}', True),
    ("@.x == 123", '{"x":"000123"}', False),  # not a JSON number
    ("@.x == 1", '{"x":" 1"}', False),
    ("@.x == 1", '{"x":true}', False),  # booleans are not numbers
    ("@.x != 1", '{"x":true}', True),
    ("@.x < 1e300", '{"x":1e999}', False),  # not finite: not numeric
    ("@.x == -12345678910112", '{"x":-12345678910112}', True),
    ("@.x == 0.1", '{"x":"0.1"}', True),
    ("@.x > -1", '{"x":[1]}', False),
    ("500 < @.duration_ms", '{"duration_ms":501}', True),  # literal on the left
    ("500 < @.duration_ms", '{"duration_ms":500}', False),
    ("'ios' == @.p", '{"p":"ios"}', True),
    # --- typing: booleans and null
    ("@.b == true", '{"b":true}', True),
    ("@.b == true", '{"b":"true"}', False),
    ("@.b == true", '{"b":1}', False),
    ("@.b != true", '{"b":false}', True),
    ("@.b != true", '{"b":"x"}', True),
    ("@.b == false", '{"b":0}', False),
    ("@.x == null", '{"x":null}', True),
    ("@.x == null", "{}", False),
    ("@.x == null", '{"x":0}', False),
    ("@.x != null", '{"x":0}', True),
    ("@.x != null", '{"x":null}', False),
    ("@.x != null", "{}", False),
    # --- a missing field makes every comparison false
    ("@.x < 5", "{}", False),
    ("@.x != 'a'", "{}", False),
    ("@.x LIKE '%'", "{}", False),
    ("@.x =~ /.*/", "{}", False),
    ("@.x in [null]", "{}", False),
    ("@.a.b == 1", '{"a":"text"}', False),
    # --- string operators on other types
    ("@.n LIKE '4%'", '{"n":42}', True),
    ("@.b LIKE 't%'", '{"b":true}', True),
    ("@.x LIKE '%'", '{"x":null}', False),
    ("@.x LIKE '%'", '{"x":{}}', False),
    ("@.x =~ /1/", '{"x":[1]}', False),
    ("@.n =~ /^1\\.5$/", '{"n":1.50}', True),
    # --- LIKE escapes, ILIKE on Unicode, regex slash
    ("@.p LIKE '100%'", '{"p":"100% sure"}', True),
    (r"@.p LIKE 'a\\_b'", r'{"p":"a\\xb"}', True),  # no escape character: \ is literal
    (r"@.p LIKE 'a\\_b'", '{"p":"a_b"}', False),
    ("@.p LIKE 'a%b%c'", '{"p":"a--b--c"}', True),
    ("@.p LIKE '%'", '{"p":""}', True),
    ("@.p LIKE '_'", '{"p":"🚀"}', True),  # one character, not one byte
    ("@.s ILIKE 'ÉCOLE'", '{"s":"école"}', True),
    ("@.p LIKE 'a%'", '{"p":"a\\nb"}', True),  # % spans newlines
    (r"@.u =~ /^https:\/\//", '{"u":"https://x"}', True),
]
"""(expression, event JSON, expected): semantics 5 and the spec 6 table."""

JPATH_SYNTAX_ERRORS: list[str] = [
    '@.a == "x"',  # string literals are single-quoted
    "@.a ==",
    "@.a = 1",
    "!@.a == 1",  # ! binds tighter than comparisons
    "@.a LIKE 5",
    "@.a < true",
    "@.a >= null",
    "@.a in 'x'",
    "@.a =~ gr(a|e)y",
    "@.a =~ /x/g",
    "@.a =~ /(/",
    "@.a == @.b",
    "@..a",
    "@.a[*]",
    "@.a[-1]",
    "a.b == 1",
    "(@.a == 1",
    "@.a == 1 )",
    "@.a == 'unterminated",
    "@.a == 1 == 2",
    r"@['a\x'] == 1",  # unknown escape
    r"@.a == 'a\n'",
    "@.a == 01",  # number literals follow JSON's grammar
    "@.a == +1",
    "@.a == .5",
    "@.a == 1e999",  # literal out of range
    "@.a == 1x",
    "@.a &&",
    "&& @.a",
    "@.a == [1]",
    "@.a in [@.b]",
    "@.user-agent == 'x'",
    "@.a and @.b",
]
"""Conditions that must be rejected when the filter is built."""

PATH_EQUIVALENCES: list[tuple[str, str]] = [
    ("@.device.platform", "@['device']['platform']"),
    ("@.device.platform", "@['device'].platform"),
    ("@.device.platform", '@["device"]["platform"]'),
    ("@.items[0].id", "@['items'][0]['id']"),
    ("  @.a  ", "@.a"),
]
"""Pairs of plain paths that name the same value."""

# =============================================================================================
# Values (semantics 6, 7; decisions 6, 9)
# =============================================================================================

GROUP_STRING_CASES: list[tuple[str, str]] = [
    ('"ios"', "ios"),
    ('"  spaced  "', "  spaced  "),
    ('"1.50"', "1.50"),  # strings as-is
    ('"\\u00e9"', "é"),
    ('""', ""),
    ("42", "42"),
    ("-42", "-42"),
    ("0", "0"),
    ("-0", "0"),
    ("12345678901234567890", "12345678901234567890"),  # integer text as written
    ("123456789012345678901234567890", "123456789012345678901234567890"),
    ("9007199254740993", "9007199254740993"),
    ("1.50", "1.5"),
    ("100.0", "100"),
    ("-0.0", "0"),
    ("1e3", "1000"),
    ("1E3", "1000"),
    ("123.0e1", "1230"),
    ("0.1", "0.1"),
    ("-42.25", "-42.25"),
    ("299.99", "299.99"),
    ("1e-7", "1e-7"),
    ("0.000001", "0.000001"),
    ("1.5e21", "1.5e+21"),
    ("1e21", "1e+21"),
    ("1e20", "100000000000000000000"),
    ("1.7976931348623157e308", "1.7976931348623157e+308"),
    ("5e-324", "5e-324"),
    ("1e999", "1e999"),  # not finite: raw text
    ("-1e999", "-1e999"),
    ("true", "true"),
    ("false", "false"),
    ("null", ""),
    ("{}", "{}"),
    ("[]", "[]"),
    ("[ ]", "[]"),
    ('{ "a b" : [1, 2] }', '{"a b":[1,2]}'),
    ('[1, "two", 3.50, true, null]', '[1,"two",3.50,true,null]'),  # content unchanged
    ('{"e": "\\u00e9"}', '{"e":"\\u00e9"}'),  # escapes kept as written
    ('{"a":1,"a":2}', '{"a":1,"a":2}'),  # duplicate keys kept in the text
    ('{"s": "a  b",\n "t":\t"\\"x\\""}', '{"s":"a  b","t":"\\"x\\""}'),
    ('{"z":1,"a":2}', '{"z":1,"a":2}'),  # key order kept
]
"""(JSON value text, grouping string): semantics 7 / decision 9."""

NUMERIC_CASES: list[tuple[str, float | None]] = [
    ("2", 2.0),
    ("-2.5", -2.5),
    ("1e3", 1000.0),
    ('"19.99"', 19.99),
    ('"-3"', -3.0),
    ('"1e3"', 1000.0),
    ('"0"', 0.0),
    ('"-0"', 0.0),
    ('" 1"', None),
    ('"1 "', None),
    ('"000123"', None),
    ('"+1"', None),
    ('"1."', None),
    ('".5"', None),
    ('"0x10"', None),
    ('"1_000"', None),
    ('"１"', None),  # full-width digit
    ('"NaN"', None),
    ('"Infinity"', None),
    ('"1e999"', None),
    ("1e999", None),
    ("-1e999", None),
    ('"apples"', None),
    ('""', None),
    ('"true"', None),
    ("true", None),
    ("false", None),
    ("null", None),
    ("[1]", None),
    ('{"a":1}', None),
]
"""(JSON value text, numeric value or None): decision 6."""

JS_NUMBER_CASES: list[tuple[float, str]] = [
    (1.5, "1.5"),
    (100.0, "100"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (1e-6, "0.000001"),
    (1.5e21, "1.5e+21"),
    (1e21, "1e+21"),
    (-1e21, "-1e+21"),
    (1e20, "100000000000000000000"),
    (123_456_789_012_345_680_000.0, "123456789012345680000"),
    (-42.25, "-42.25"),
    (299.99, "299.99"),
    (0.1 + 0.2, "0.30000000000000004"),
    (-0.0, "0"),
    (0.0, "0"),
    (2.0**53, "9007199254740992"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (123e-20, "1.23e-18"),
    (0.5, "0.5"),
]
"""(float, JavaScript Number.prototype.toString)."""

# =============================================================================================
# Time (semantics 3, 4)
# =============================================================================================

T_2024_05_14_092144_861 = 1_715_678_504_861

ISO_8601_CASES: list[tuple[str, int | None]] = [
    ("2024-05-14T09:21:44.861Z", T_2024_05_14_092144_861),
    ("2024-05-14t09:21:44.861z", T_2024_05_14_092144_861),
    ("2024-05-14 09:21:44.861Z", T_2024_05_14_092144_861),
    ("2024-05-14T11:21:44.861+02:00", T_2024_05_14_092144_861),
    ("2024-05-14T11:21:44.861+0200", T_2024_05_14_092144_861),
    ("2024-05-14T04:21:44.861-05:00", T_2024_05_14_092144_861),
    ("2024-05-14T09:21:44.861", T_2024_05_14_092144_861),  # no offset: UTC
    ("2024-05-14T09:21:44.8619999Z", T_2024_05_14_092144_861),  # sub-ms floored
    ("2024-05-14T09:21:44.861999999Z", T_2024_05_14_092144_861),
    ("2024-05-14T09:21:44Z", 1_715_678_504_000),
    ("2024-05-14T09:21Z", 1_715_678_460_000),
    ("2024-05-14T09:21", 1_715_678_460_000),
    ("2024-05-14", 1_715_644_800_000),  # a date alone: midnight UTC
    ("2023-10-16T21:03:49.46Z", 1_697_490_229_460),  # docs example, two fraction digits
    ("2024-01-17T15:04:05.1234567Z", 1_705_503_845_123),  # .NET's seven digits
    ("2024-05-14T18:23:00+09:00", 1_715_678_580_000),  # edge fixture originalTimestamp
    ("2024-02-29T00:00:00Z", 1_709_164_800_000),
    ("2000-02-29T00:00:00Z", 951_782_400_000),
    ("1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:59:59.999Z", -1),
    ("1969-12-31T23:59:59.9999Z", -1),  # floored toward negative infinity
    ("0000-01-01T00:00:00Z", MIN_MS),
    ("9999-12-31T23:59:59.999Z", MAX_MS),
    ("2023-02-29T00:00:00Z", None),
    ("1900-02-29", None),
    ("2024-13-01", None),
    ("2024-00-10", None),
    ("2024-05-32", None),
    ("2024-04-31", None),
    ("2024-05-14T24:00:00Z", None),
    ("2024-05-14T09:60:00Z", None),
    ("2024-05-14T09:21:44.Z", None),
    ("2024-05-14T09:21:44.1234567890Z", None),  # ten fraction digits
    ("2024-05-14T09:21:44,861Z", None),
    ("2024-5-14", None),
    ("24-05-14", None),
    ("2024-05-14T09", None),
    ("2024-05-14T0921", None),
    ("20240514T092144Z", None),
    ("2024-05-14Z", None),
    ("+2024-05-14", None),
    (" 2024-05-14", None),
    ("2024-05-14 ", None),
    ("2024-05-14T09:21:44.861Z\n", None),
    ("2024-05-14T09:21:44.861+2:00", None),
    ("2024-05-14T09:21:44.861+24:00", None),
    ("2024-05-14T09:21:44.861+02:60", None),
    ("2024-05-14T09:21:44.861 Z", None),
    ("２０２４-05-14", None),
    ("", None),
    ("0000-01-01T00:00:00+00:01", None),  # before year 0000
    ("9999-12-31T23:59:59.999-00:01", None),  # after year 9999
    ("1715678504", None),
]
"""(string, epoch ms or None): the semantics 3 grammar."""

ISO_8601_STRICT_REJECTS: list[str] = [
    "2024-05-14T11:21:44+02",  # ±hh alone is not in the semantics 3 grammar
    "2016-12-31T23:59:60Z",  # no leap seconds in the grammar (seconds 00-59)
]
"""Strings outside the semantics 3 grammar that an implementation might be tempted to accept."""

UNIX_CASES: list[tuple[str, str, int | None]] = [
    ("UNIX_SECONDS", "1715678504", 1_715_678_504_000),
    ("UNIX_SECONDS", '"1715678504"', 1_715_678_504_000),
    ("UNIX_SECONDS", "1721491167.001", 1_721_491_167_001),  # exact decimal, not binary
    ("UNIX_SECONDS", "1.7e9", 1_700_000_000_000),
    ("UNIX_SECONDS", "-1.5", -1_500),
    ("UNIX_SECONDS", "-0.0001", -1),  # floored
    ("UNIX_SECONDS", "0", 0),
    ("UNIX_SECONDS", "253402300799.999", MAX_MS),
    ("UNIX_SECONDS", "253402300800", None),  # year 10000
    ("UNIX_SECONDS", '" 1"', None),
    ("UNIX_SECONDS", '"abc"', None),
    ("UNIX_SECONDS", '"2024-05-14"', None),
    ("UNIX_SECONDS", "true", None),
    ("UNIX_SECONDS", "null", None),
    ("UNIX_SECONDS", "1e999", None),
    ("UNIX_SECONDS", "[1]", None),
    ("UNIX_MILLISECONDS", "1721491167001", 1_721_491_167_001),  # spec 5.6 example
    ("UNIX_MILLISECONDS", "1721491167001.9", 1_721_491_167_001),
    ("UNIX_MILLISECONDS", "-62167219200000", MIN_MS),
    ("UNIX_MILLISECONDS", "-62167219200001", None),
    ("UNIX_MICROSECONDS", "1721491167001999", 1_721_491_167_001),
    ("UNIX_MICROSECONDS", '"1721491167001999"', 1_721_491_167_001),
    ("UNIX_NANOSECONDS", "1721491167001999999", 1_721_491_167_001),  # beyond 2^53, exact
    ("UNIX_NANOSECONDS", '"1721491167001999999"', 1_721_491_167_001),
    ("UNIX_NANOSECONDS", "-1", -1),
    ("ISO_8601", "1715678504", None),
    ("ISO_8601", '"2024-05-14T09:21:44.861Z"', T_2024_05_14_092144_861),
    ("AUTO", '"2024-05-14T09:21:44.861Z"', T_2024_05_14_092144_861),
    ("AUTO", "1715678504", 1_715_678_504_000),  # below 1e11: seconds
    ("AUTO", '"1715678504"', 1_715_678_504_000),
    ("AUTO", "99999999999", 99_999_999_999_000),
    ("AUTO", "100000000000", 100_000_000_000),  # from 1e11: milliseconds
    ("AUTO", "1715678504861", T_2024_05_14_092144_861),
    ("AUTO", "99999999999999", 99_999_999_999_999),
    ("AUTO", "100000000000000", 100_000_000_000),  # from 1e14: microseconds
    ("AUTO", "1715678504861999", T_2024_05_14_092144_861),
    ("AUTO", "100000000000000000", 100_000_000_000),  # from 1e17: nanoseconds
    ("AUTO", "1715678504861999999", T_2024_05_14_092144_861),
    ("AUTO", "-1715678504", -1_715_678_504_000),  # magnitude decides
    ("AUTO", '"not a time"', None),
    ("AUTO", "true", None),
    ("AUTO", "{}", None),
]
"""(format, JSON value text, epoch ms or None): semantics 1 formats and 3."""

BUCKET_CASES: list[tuple[str, str, int, str]] = [
    # spec 5.4 worked examples: 5-minute and 13-minute (780 s) buckets from the epoch
    ("2024-01-01T00:07:30Z", "MINUTE", 5, "2024-01-01T00:05:00Z"),
    ("2024-01-01T00:07:30Z", "MINUTE", 13, "2024-01-01T00:06:00Z"),
    ("2024-01-01T00:00:00Z", "MINUTE", 5, "2024-01-01T00:00:00Z"),
    ("2024-01-01T00:00:00Z", "MINUTE", 13, "2023-12-31T23:53:00Z"),
    ("2024-01-01T00:13:05Z", "MINUTE", 5, "2024-01-01T00:10:00Z"),
    ("2024-01-01T00:13:05Z", "MINUTE", 13, "2024-01-01T00:06:00Z"),
    # other fixed units
    ("2024-05-14T09:21:44.861Z", "SECOND", 30, "2024-05-14T09:21:30Z"),
    ("2024-05-14T09:21:44.861Z", "MINUTE", 1, "2024-05-14T09:21:00Z"),
    ("2024-05-14T09:21:00Z", "MINUTE", 1, "2024-05-14T09:21:00Z"),
    ("2024-05-14T09:21:44.861Z", "HOUR", 1, "2024-05-14T09:00:00Z"),
    ("2024-05-14T09:21:44.861Z", "HOUR", 6, "2024-05-14T06:00:00Z"),
    ("2024-05-14T09:21:44.861Z", "DAY", 1, "2024-05-14T00:00:00Z"),
    ("1969-12-31T12:00:00Z", "DAY", 1, "1969-12-31T00:00:00Z"),
    # weeks start on Thursday 00:00 UTC (1970-01-01 was a Thursday)
    ("2024-05-14T09:21:44.861Z", "WEEK", 1, "2024-05-09T00:00:00Z"),
    ("2024-05-16T00:00:00Z", "WEEK", 1, "2024-05-16T00:00:00Z"),
    ("2024-05-14T09:21:44.861Z", "DAY", 7, "2024-05-09T00:00:00Z"),
    ("1970-01-01T00:00:00Z", "WEEK", 1, "1970-01-01T00:00:00Z"),
    ("1969-12-31T23:59:59.999Z", "WEEK", 1, "1969-12-25T00:00:00Z"),
    # calendar months and years counted from January 1970
    ("2024-05-14T09:21:44.861Z", "MONTH", 1, "2024-05-01T00:00:00Z"),
    ("2024-05-14T09:21:44.861Z", "MONTH", 3, "2024-04-01T00:00:00Z"),  # calendar quarter
    ("2024-05-14T09:21:44.861Z", "MONTH", 5, "2024-03-01T00:00:00Z"),
    ("2024-05-14T09:21:44.861Z", "MONTH", 12, "2024-01-01T00:00:00Z"),
    ("2024-04-30T23:59:59.999Z", "MONTH", 1, "2024-04-01T00:00:00Z"),
    ("1969-12-31T23:59:59.999Z", "MONTH", 1, "1969-12-01T00:00:00Z"),
    ("1969-12-31T23:59:59.999Z", "MONTH", 7, "1969-06-01T00:00:00Z"),
    ("2024-05-14T09:21:44.861Z", "YEAR", 1, "2024-01-01T00:00:00Z"),
    ("2024-05-14T09:21:44.861Z", "YEAR", 10, "2020-01-01T00:00:00Z"),
    ("1969-05-01T00:00:00Z", "YEAR", 3, "1967-01-01T00:00:00Z"),
]
"""(event time, intervalType, intervalCount, bucket start): semantics 4, spec 5.4."""

RFC3339_CASES: list[tuple[int, str]] = [
    (0, "1970-01-01T00:00:00Z"),
    (1, "1970-01-01T00:00:00.001Z"),
    (-1, "1969-12-31T23:59:59.999Z"),
    (T_2024_05_14_092144_861, "2024-05-14T09:21:44.861Z"),
    (1_715_678_460_000, "2024-05-14T09:21:00Z"),
    (1_715_678_460_100, "2024-05-14T09:21:00.100Z"),
    (951_782_400_000, "2000-02-29T00:00:00Z"),
    (MIN_MS, "0000-01-01T00:00:00Z"),
    (MAX_MS, "9999-12-31T23:59:59.999Z"),
]
"""(epoch ms, RFC 3339 output): semantics 4."""

VALID_INTERVALS: list[tuple[str, int]] = [
    ("SECOND", 30),
    ("MINUTE", 1),
    ("HOUR", 876_600),
    ("DAY", 36_525),
    ("WEEK", 5_217),
    ("MONTH", 1_200),
    ("YEAR", 100),
]
"""Boundary intervals that must be accepted (30 s to 100 years of 365.25 days)."""

INVALID_INTERVALS: list[tuple[str, int]] = [
    ("SECOND", 29),
    ("SECOND", 0),
    ("DAY", 36_526),
    ("WEEK", 5_218),
    ("MONTH", 1_201),
    ("YEAR", 101),
    ("FORTNIGHT", 1),
]
"""Intervals that must be rejected."""

# =============================================================================================
# Engine: definitions, batches, stats and results
# =============================================================================================

NOW = T_2024_05_14_092144_861  # 2024-05-14T09:21:44.861Z
INGEST_TIME: dict[str, Any] = {"id": "plain", "name": "Ingest time", "schema": "ARRAY_OF_EVENTS"}
SEGMENT_TIMESTAMP: dict[str, Any] = {
    "source": "PROPERTY",
    "path": "@.receivedAt",
    "format": "ISO_8601",
    "onInvalid": "INGEST_TIME",
}
SEGMENT_INGEST: dict[str, Any] = {
    "id": "abc123",
    "name": "Segment",
    "schema": "ARRAY_OF_EVENTS",
    "timestamp": SEGMENT_TIMESTAMP,
}
SEGMENT_INGEST_DROP: dict[str, Any] = {
    **SEGMENT_INGEST,
    "timestamp": {**SEGMENT_TIMESTAMP, "onInvalid": "DROP"},
}


def _ingest(
    schema: str, path: str | None = None, fmt: str = "ISO_8601", **extra: Any
) -> dict[str, Any]:
    """An ingest definition; ``path`` set means a PROPERTY timestamp."""
    defn: dict[str, Any] = {"id": "i", "name": "test", "schema": schema, **extra}
    if path is not None:
        defn["timestamp"] = {"source": "PROPERTY", "path": path, "format": fmt}
    return defn


def _agg(
    aid: int, calcs: list[str], field: str | None = None, sub: str | None = None
) -> dict[str, Any]:
    return {
        "id": aid,
        "name": f"agg {aid}",
        "calculations": calcs,
        "calculationField": field,
        "subFilter": sub,
    }


def _filter(
    aggregations: list[dict[str, Any]],
    *,
    fid: str = "f",
    condition: str | None = None,
    groupings: list[tuple[str, str | None]] | None = None,
    interval: tuple[str, int] = ("MINUTE", 1),
    flatten: str | None = None,
) -> dict[str, Any]:
    defn: dict[str, Any] = {
        "id": fid,
        "name": f"filter {fid}",
        "filter": condition,
        "groupingItems": [{"grouping": g, "alias": a} for g, a in groupings or []],
        "intervalType": interval[0],
        "intervalCount": interval[1],
        "aggregations": aggregations,
    }
    if flatten is not None:
        defn["flattenPath"] = flatten
    return defn


def _q(aid: int, calc: str, fid: str = "f", **extra: Any) -> dict[str, Any]:
    return {"filterId": fid, "aggregationId": aid, "calculation": calc, **extra}


def _row(dt: str, value: float, groupings: dict[str, str] | None = None) -> dict[str, Any]:
    return {"dt": dt, "groupings": groupings, "value": value}


def _stats(
    events: int,
    accepted: int,
    per_filter: dict[str, dict[str, Any]],
    dropped: dict[str, int] | None = None,
    fallback: int = 0,
) -> dict[str, Any]:
    return {
        "events": events,
        "accepted": accepted,
        "dropped": dropped or {},
        "timestamp_fallback": fallback,
        "per_filter": per_filter,
    }


def _fs(matched: int, flattened: int = 0, dropped: dict[str, int] | None = None) -> dict[str, Any]:
    return {"matched": matched, "flattened_elements": flattened, "dropped": dropped or {}}


class EngineCase(NamedTuple):
    """One engine scenario: definitions, batches, the last batch's stats, queries and rows."""

    name: str
    ingest: dict[str, Any]
    filters: list[dict[str, Any]]
    bodies: list[str | bytes]
    now_ms: int
    stats: dict[str, Any] | None  # stats returned for the last body
    queries: list[tuple[dict[str, Any], list[dict[str, Any]]]]


B0921 = "2024-05-14T09:21:00Z"
NUMBERS_FILTER = _filter(
    [_agg(1, ["COUNT", "SUM", "AVG", "MIN", "MAX", "PERCENTILES", "APPROX_COUNT_DISTINCT"], "@.v")]
)
SEG_FILTER = _filter(
    [_agg(1, ["COUNT"]), _agg(2, ["SUM", "AVG"], "@.properties.revenue")],
    fid="seg",
    condition="@.type in ['track','page','screen']",
    groupings=[("@.context.device.type", "Device Type"), ("@.type", None)],
)
REV_FILTER = _filter(
    [
        _agg(1, ["COUNT", "SUM"], "@.properties.revenue"),
        _agg(2, ["APPROX_COUNT_DISTINCT"], "@.anonymousId"),
        _agg(3, ["SUM"], "@.properties.price"),
    ],
    fid="rev",
    condition="@.type == 'track'",
    interval=("HOUR", 1),
)
IMPRESSIONS_EVENT = (
    '{"event_name":"Impressions","ts":1721491167001,"user_id":"user123456",'
    '"device":{"type":"web"},'
    '"impressions":[{"item_id":"abc123","duration_ms":4744,"detail_clicks":1},'
    '{"item_id":"xyz456","duration_ms":5500,"detail_clicks":10},'
    '{"item_id":"zzz555","duration_ms":1199,"detail_clicks":4}]}'
)
IMPRESSIONS_INGEST = _ingest("ARRAY_OF_EVENTS", "@.ts", "UNIX_MILLISECONDS")
IMPRESSIONS_FILTER = _filter(
    [_agg(1, ["COUNT"]), _agg(2, ["SUM", "MAX"], "@.detail_clicks")],
    fid="imp",
    condition="$.event_name == 'Impressions' && @.duration_ms>500",
    groupings=[("@.item_id", None), ("$.device.type", None)],
    flatten="@.impressions",
)
B_IMP = "2024-07-20T15:59:00Z"


def _imp(item: str, device: str) -> dict[str, str]:
    return {"@.item_id": item, "$.device.type": device}


EDGE_GROUPINGS_A = [
    "@.properties.numeric_keys",
    "@.properties.unsafe_integer",
    "@.properties.decimal_trailing_zeros",
    "@.properties.big_exponent",
    "@.properties.tiny",
    "@.properties.negative_zero",
    "@.version",
    "@.userId",
    "@.properties['a.b.c']",
    "@.properties['']",
]
EDGE_GROUPINGS_B = [
    "@.properties.mixed_array",
    "@.properties.empty_object",
    "@.properties.escaped_unicode_in_source",
    "@.properties.whole_float",
    "@.properties.bool_true",
    "@.properties.null_value",
    "@.properties['clé ünïcode']",
    "@.properties.price_as_string",
]
EDGE_FILTERS = [
    _filter(
        [
            _agg(1, ["COUNT"]),
            _agg(2, ["SUM"], "@.properties.price_as_string"),
            _agg(3, ["SUM"], "@.properties.exponent_as_string"),
            _agg(4, ["APPROX_COUNT_DISTINCT"], "@.properties.bool_as_string"),
            _agg(5, ["SUM"], "@.properties.bool_true"),
        ],
        fid="edgeA",
        groupings=[(g, None) for g in EDGE_GROUPINGS_A],
    ),
    _filter([_agg(1, ["COUNT"])], fid="edgeB", groupings=[(g, None) for g in EDGE_GROUPINGS_B]),
]
EDGE_B_VALUES = {
    "@.properties.mixed_array": '[1,"two",3.5,true,null,{"k":"v"},[1,2]]',
    "@.properties.empty_object": "{}",
    "@.properties.escaped_unicode_in_source": "é中🚀",
    "@.properties.whole_float": "100",
    "@.properties.bool_true": "true",
    "@.properties.null_value": "",
    "@.properties['clé ünïcode']": "unicode key",
    "@.properties.price_as_string": "19.99",
}

ENGINE_CASES: list[EngineCase] = [
    EngineCase(
        "docs_sum_avg_count",  # spec 5.5: @.num over [2, 4, 0, "apples"]
        INGEST_TIME,
        [_filter([_agg(1, ["COUNT", "SUM", "AVG", "MIN", "MAX"], "@.num")])],
        ['[{"num":2},{"num":4},{"num":0},{"num":"apples"}]'],
        NOW,
        _stats(4, 4, {"f": _fs(4)}),
        [
            (_q(1, "SUM"), [_row(B0921, 6.0)]),
            (_q(1, "AVG"), [_row(B0921, 2.0)]),
            (_q(1, "COUNT"), [_row(B0921, 4.0)]),
            (_q(1, "MIN"), [_row(B0921, 0.0)]),
            (_q(1, "MAX"), [_row(B0921, 4.0)]),
        ],
    ),
    EngineCase(
        "numeric_strings_decision_6",
        INGEST_TIME,
        [NUMBERS_FILTER],
        [
            '[{"v":"19.99"},{"v":"-3"},{"v":"1e3"},{"v":true},{"v":null},{"v":" 1"},{},'
            '{"v":1e999},{"v":[1]},{"v":"1e999"}]'
        ],
        NOW,
        _stats(10, 10, {"f": _fs(10)}),
        [
            (_q(1, "COUNT"), [_row(B0921, 10.0)]),
            (_q(1, "SUM"), [_row(B0921, 1016.99)]),
            (_q(1, "AVG"), [_row(B0921, 1016.99 / 3)]),
            (_q(1, "MIN"), [_row(B0921, -3.0)]),
            (_q(1, "MAX"), [_row(B0921, 1000.0)]),
            (_q(1, "PERCENTILES", percentile=1), [_row(B0921, 1000.0)]),
            # distinct: "19.99" "-3" "1e3" true " 1" 1e999 [1] "1e999" (strings/number differ)
            (_q(1, "APPROX_COUNT_DISTINCT"), [_row(B0921, 8.0)]),
        ],
    ),
    EngineCase(
        "no_numeric_value_means_no_row",
        INGEST_TIME,
        [NUMBERS_FILTER],
        ['[{"v":"x"},{"v":null},{}]'],
        NOW,
        _stats(3, 3, {"f": _fs(3)}),
        [
            (_q(1, "SUM"), []),
            (_q(1, "AVG"), []),
            (_q(1, "MIN"), []),
            (_q(1, "MAX"), []),
            (_q(1, "PERCENTILES", percentile=0.5), []),
            (_q(1, "COUNT"), [_row(B0921, 3.0)]),
            (_q(1, "APPROX_COUNT_DISTINCT"), [_row(B0921, 1.0)]),
        ],
    ),
    EngineCase(
        "distinct_count_row_exists_with_zero",
        INGEST_TIME,
        [NUMBERS_FILTER],
        ['[{"v":null},{}]'],
        NOW,
        None,
        [(_q(1, "APPROX_COUNT_DISTINCT"), [_row(B0921, 0.0)])],
    ),
    EngineCase(
        "distinct_by_type_and_string_form",
        INGEST_TIME,
        [NUMBERS_FILTER],
        [
            '[{"v":"1"},{"v":1},{"v":1.0},{"v":"a"},{"v":"a"},{"v":null},{},{"v":true},'
            '{"v":"true"},{"v":{"k":1}},{"v":{ "k" : 1 }},{"v":[1]}]'
        ],
        NOW,
        None,
        # "1" | 1 and 1.0 | "a" | true | "true" | {"k":1} twice | [1]
        [
            (_q(1, "APPROX_COUNT_DISTINCT"), [_row(B0921, 7.0)]),
            (_q(1, "COUNT"), [_row(B0921, 12.0)]),
        ],
    ),
    EngineCase(
        "batches_accumulate_and_percentiles",
        INGEST_TIME,
        [NUMBERS_FILTER],
        ['[{"v":5}]', '[{"v":1},{"v":"3"}]', '[{"v":2},{"v":4}]'],
        NOW,
        _stats(2, 2, {"f": _fs(2)}),
        [
            (_q(1, "COUNT"), [_row(B0921, 5.0)]),
            (_q(1, "SUM"), [_row(B0921, 15.0)]),
            # sorted [1, 2, 3, 4, 5]: PERCENTILE_CONT at rank p * 4; p = 1 is the max
            (_q(1, "PERCENTILES", percentile=0.5), [_row(B0921, 3.0)]),
            (_q(1, "PERCENTILES", percentile=0.25), [_row(B0921, 2.0)]),
            (_q(1, "PERCENTILES", percentile=0.99), [_row(B0921, 4.96)]),
            (_q(1, "PERCENTILES", percentile=1.0), [_row(B0921, 5.0)]),
        ],
    ),
    EngineCase(
        "sub_filters",
        INGEST_TIME,
        [
            _filter(
                [
                    _agg(1, ["COUNT"]),
                    _agg(2, ["COUNT"], sub="@.v > 1"),
                    _agg(3, ["SUM"], "@.v", sub="@.kind == 'a'"),
                ],
                groupings=[("@.kind", None)],
            )
        ],
        ['[{"v":1,"kind":"a"},{"v":2,"kind":"b"},{"v":3,"kind":"a"}]'],
        NOW,
        _stats(3, 3, {"f": _fs(3)}),
        [
            (
                _q(1, "COUNT"),
                [_row(B0921, 2.0, {"@.kind": "a"}), _row(B0921, 1.0, {"@.kind": "b"})],
            ),
            (
                _q(2, "COUNT"),
                [_row(B0921, 1.0, {"@.kind": "a"}), _row(B0921, 1.0, {"@.kind": "b"})],
            ),
            (_q(3, "SUM"), [_row(B0921, 4.0, {"@.kind": "a"})]),
        ],
    ),
    EngineCase(
        "segment_batch_fixture",  # request-body-batch.json: 7 events, all six types
        SEGMENT_INGEST,
        [SEG_FILTER, REV_FILTER],
        [fixture("request-body-batch.json")],
        0,
        _stats(7, 7, {"seg": _fs(4), "rev": _fs(2)}),
        [
            (
                _q(1, "COUNT", "seg"),
                [
                    _row(B0921, 1.0, {"Device Type": "", "@.type": "page"}),
                    _row(B0921, 1.0, {"Device Type": "", "@.type": "track"}),
                    _row(B0921, 1.0, {"Device Type": "ios", "@.type": "screen"}),
                    _row("2024-05-14T09:23:00Z", 1.0, {"Device Type": "", "@.type": "track"}),
                ],
            ),
            (
                _q(2, "SUM", "seg"),
                [_row("2024-05-14T09:23:00Z", 25.0, {"Device Type": "", "@.type": "track"})],
            ),
            (
                _q(
                    1,
                    "COUNT",
                    "seg",
                    startTime="2024-05-14T09:21:00Z",
                    endTime="2024-05-14T09:23:00Z",
                ),
                [
                    _row(B0921, 1.0, {"Device Type": "", "@.type": "page"}),
                    _row(B0921, 1.0, {"Device Type": "", "@.type": "track"}),
                    _row(B0921, 1.0, {"Device Type": "ios", "@.type": "screen"}),
                ],
            ),
            # the window applies to bucket starts: 09:21:00 < 09:21:30, so it is left out
            (
                _q(1, "COUNT", "seg", startTime="2024-05-14T09:21:30Z"),
                [_row("2024-05-14T09:23:00Z", 1.0, {"Device Type": "", "@.type": "track"})],
            ),
            (
                _q(1, "COUNT", "seg", startTime="2024-05-14T09:21:00", excludeEmptyGroupings=True),
                [_row(B0921, 1.0, {"Device Type": "ios", "@.type": "screen"})],
            ),
            (_q(1, "COUNT", "rev"), [_row("2024-05-14T09:00:00Z", 2.0)]),
            (_q(1, "SUM", "rev"), [_row("2024-05-14T09:00:00Z", 25.0)]),
            (_q(2, "APPROX_COUNT_DISTINCT", "rev"), [_row("2024-05-14T09:00:00Z", 1.0)]),
            (_q(3, "SUM", "rev"), [_row("2024-05-14T09:00:00Z", 299.99)]),
        ],
    ),
    EngineCase(
        "grouping_strings_through_the_engine",
        INGEST_TIME,
        [_filter([_agg(1, ["COUNT"])], groupings=[("@.g", None)])],
        [
            '[{"g":"ios"},{"g":42},{"g":1.50},{"g":1.5},{"g":"1.5"},{"g":null},{},{"g":true},'
            '{"g":{ "a" : [1, 2] }},{"g":1e999}]'
        ],
        NOW,
        None,
        [
            (
                _q(1, "COUNT"),
                [
                    _row(B0921, 2.0, {"@.g": ""}),
                    _row(B0921, 3.0, {"@.g": "1.5"}),  # 1.50, 1.5 and "1.5" share a string form
                    _row(B0921, 1.0, {"@.g": "1e999"}),
                    _row(B0921, 1.0, {"@.g": "42"}),
                    _row(B0921, 1.0, {"@.g": "ios"}),
                    _row(B0921, 1.0, {"@.g": "true"}),
                    _row(B0921, 1.0, {"@.g": '{"a":[1,2]}'}),
                ],
            )
        ],
    ),
    EngineCase(
        "flatten_docs_example",  # spec 5.6, decision 7 (timestamp from the root event)
        IMPRESSIONS_INGEST,
        [IMPRESSIONS_FILTER],
        ["[" + IMPRESSIONS_EVENT + "]"],
        0,
        _stats(1, 1, {"imp": _fs(3, 3)}),
        [
            (
                _q(1, "COUNT", "imp"),
                [
                    _row(B_IMP, 1.0, _imp("abc123", "web")),
                    _row(B_IMP, 1.0, _imp("xyz456", "web")),
                    _row(B_IMP, 1.0, _imp("zzz555", "web")),
                ],
            ),
            (
                _q(2, "SUM", "imp"),
                [
                    _row(B_IMP, 1.0, _imp("abc123", "web")),
                    _row(B_IMP, 10.0, _imp("xyz456", "web")),
                    _row(B_IMP, 4.0, _imp("zzz555", "web")),
                ],
            ),
        ],
    ),
    EngineCase(
        "flatten_mixed",
        IMPRESSIONS_INGEST,
        [IMPRESSIONS_FILTER, _filter([_agg(1, ["COUNT"])], fid="all")],
        [
            "[" + IMPRESSIONS_EVENT + ","
            '{"event_name":"Impressions","ts":1721491167500,"device":{"type":"ios"},'
            '"impressions":[{"item_id":"abc123","duration_ms":300,"detail_clicks":0},'
            '{"item_id":"abc123","duration_ms":900,"detail_clicks":2,"ts":0},null]},'
            '{"event_name":"Other","ts":1721491167001,"device":{"type":"web"},'
            '"impressions":[{"item_id":"abc123","duration_ms":9999,"detail_clicks":7}]},'
            '{"event_name":"Impressions","ts":1721491167001,"impressions":"none"},'
            '{"event_name":"Impressions","ts":1721491167001}]'
        ],
        0,
        _stats(
            5,
            5,
            {
                "imp": _fs(4, 6, {"flatten_not_array": 2, "flatten_element_not_object": 1}),
                "all": _fs(5),
            },
        ),
        [
            (
                _q(1, "COUNT", "imp"),
                [
                    _row(B_IMP, 1.0, _imp("abc123", "ios")),
                    _row(B_IMP, 1.0, _imp("abc123", "web")),
                    _row(B_IMP, 1.0, _imp("xyz456", "web")),
                    _row(B_IMP, 1.0, _imp("zzz555", "web")),
                ],
            ),
            (
                _q(2, "MAX", "imp"),
                [
                    _row(B_IMP, 2.0, _imp("abc123", "ios")),
                    _row(B_IMP, 1.0, _imp("abc123", "web")),
                    _row(B_IMP, 10.0, _imp("xyz456", "web")),
                    _row(B_IMP, 4.0, _imp("zzz555", "web")),
                ],
            ),
            (_q(1, "COUNT", "all"), [_row(B_IMP, 5.0)]),
        ],
    ),
    EngineCase(
        "timestamp_fallback_edge_fixture",  # no receivedAt: decision 1, ingest time
        SEGMENT_INGEST,
        EDGE_FILTERS,
        [fixture("request-body-single-edge.json")],
        1_715_678_590_123,  # 2024-05-14T09:23:10.123Z
        _stats(1, 1, {"edgeA": _fs(1), "edgeB": _fs(1)}, fallback=1),
        [
            (
                _q(1, "COUNT", "edgeA"),
                [
                    _row(
                        "2024-05-14T09:23:00Z",
                        1.0,
                        dict(
                            zip(
                                EDGE_GROUPINGS_A,
                                [
                                    '{"2":"two","10":"ten","b":1,"a":2,"007":"leading-zero key"}',
                                    "12345678901234567000",
                                    "1.5",
                                    "1.5e+21",
                                    "1e-7",
                                    "0",
                                    "1.1",
                                    "",
                                    "dotted key (not a path)",
                                    "empty key",
                                ],
                                strict=True,
                            )
                        ),
                    )
                ],
            ),
            (_q(1, "COUNT", "edgeB"), [_row("2024-05-14T09:23:00Z", 1.0, EDGE_B_VALUES)]),
            (
                _q(2, "SUM", "edgeA"),
                [
                    _row(
                        "2024-05-14T09:23:00Z",
                        19.99,
                        dict(
                            zip(
                                EDGE_GROUPINGS_A,
                                [
                                    '{"2":"two","10":"ten","b":1,"a":2,"007":"leading-zero key"}',
                                    "12345678901234567000",
                                    "1.5",
                                    "1.5e+21",
                                    "1e-7",
                                    "0",
                                    "1.1",
                                    "",
                                    "dotted key (not a path)",
                                    "empty key",
                                ],
                                strict=True,
                            )
                        ),
                    )
                ],
            ),
            (_q(5, "SUM", "edgeA"), []),  # a boolean is not a number
        ],
    ),
    EngineCase(
        "timestamp_drop_edge_fixture",
        SEGMENT_INGEST_DROP,
        EDGE_FILTERS,
        [fixture("request-body-single-edge.json")],
        1_715_678_590_123,
        _stats(1, 0, {"edgeA": _fs(0), "edgeB": _fs(0)}, dropped={"timestamp_invalid": 1}),
        [(_q(1, "COUNT", "edgeA"), [])],
    ),
    EngineCase(
        "edge_fixture_source_text",  # pretty-printed source: raw number and object text
        _ingest("SINGLE_OBJECT", "@.originalTimestamp"),  # "2024-05-14T18:23:00+09:00"
        [
            _filter(
                [_agg(1, ["COUNT"]), _agg(2, ["SUM"], "@.properties.exponent_as_string")],
                groupings=[
                    ("@.properties.numeric_keys", "keys"),
                    ("@.properties.unsafe_integer", "big"),
                    ("@.properties.decimal_trailing_zeros", "dec"),
                    ("@.properties.negative_zero", "negzero"),
                ],
            )
        ],
        [fixture("edge-values.json")],
        0,
        _stats(1, 1, {"f": _fs(1)}),
        [
            (
                _q(2, "SUM"),
                [
                    _row(
                        "2024-05-14T09:23:00Z",
                        1000.0,
                        {
                            "keys": '{"b":1,"10":"ten","a":2,"2":"two","007":"leading-zero key"}',
                            "big": "12345678901234567890",
                            "dec": "1.5",
                            "negzero": "0",
                        },
                    )
                ],
            )
        ],
    ),
    EngineCase(
        "single_object_track_fixture",
        _ingest("SINGLE_OBJECT", "@.timestamp"),
        [
            _filter(
                [_agg(1, ["COUNT"]), _agg(2, ["SUM", "MAX"], "@.properties.price")],
                groupings=[("@.context.campaign", "campaign"), ("@.event", "event")],
            )
        ],
        [fixture("track.json")],
        0,
        _stats(1, 1, {"f": _fs(1)}),
        [
            (
                _q(2, "MAX"),
                [
                    _row(
                        "2024-05-14T09:21:00Z",
                        299.99,
                        {
                            "campaign": '{"name":"spring_sale","source":"google","medium":"cpc",'
                            '"term":"tps reports","content":"banner_a"}',
                            "event": "Plan Selected",
                        },
                    )
                ],
            )
        ],
    ),
    EngineCase(
        "single_object_minimal_fixture",
        _ingest("SINGLE_OBJECT"),
        [_filter([_agg(1, ["COUNT"])], groupings=[("@.event", None), ("@.userId", None)])],
        [fixture("minimal.json")],
        NOW,
        _stats(1, 1, {"f": _fs(1)}),
        [(_q(1, "COUNT"), [_row(B0921, 1.0, {"@.event": "Ping", "@.userId": ""})])],
    ),
    EngineCase(
        "ndjson_tolerance",  # blank lines, CRLF, trailing commas, stray [ and ] lines
        _ingest("NEWLINE_DELIMITED"),
        [_filter([_agg(1, ["COUNT", "SUM"], "@.a")])],
        ['[\r\n{"a":1},\r\n\r\n  {"a":2}  ,\n\t\n{"a":3}\r\nnull\n42,\n]\n'],
        NOW,
        _stats(5, 3, {"f": _fs(3)}, dropped={"not_object": 2}),
        [(_q(1, "COUNT"), [_row(B0921, 3.0)]), (_q(1, "SUM"), [_row(B0921, 6.0)])],
    ),
    EngineCase(
        "ndjson_plain_with_bom",
        _ingest("NEWLINE_DELIMITED"),
        [_filter([_agg(1, ["COUNT"])])],
        [b'\xef\xbb\xbf{"a":1}\n{"a":2}'],
        NOW,
        _stats(2, 2, {"f": _fs(2)}),
        [(_q(1, "COUNT"), [_row(B0921, 2.0)])],
    ),
    EngineCase(
        "object_with_array_property",
        _ingest("OBJECT_WITH_ARRAY_PROPERTY", arrayPath="@.data['batch'].events"),
        [_filter([_agg(1, ["COUNT"])])],
        ['{"meta":{"n":3},"data":{"batch":{"events":[{"a":1},null,{"a":2}]}}}'],
        NOW,
        _stats(3, 2, {"f": _fs(2)}, dropped={"not_object": 1}),
        [(_q(1, "COUNT"), [_row(B0921, 2.0)])],
    ),
    EngineCase(
        "segment_null_elements",  # requests.md section 5: [null,null,null]
        SEGMENT_INGEST,
        [_filter([_agg(1, ["COUNT"])])],
        ["[null,null,null]"],
        NOW,
        _stats(3, 0, {"f": _fs(0)}, dropped={"not_object": 3}),
        [(_q(1, "COUNT"), [])],
    ),
    EngineCase(
        "empty_array_and_empty_object",  # the docs curl template sends [{}]
        INGEST_TIME,
        [_filter([_agg(1, ["COUNT"])])],
        ["[]", "[{}]"],
        NOW,
        _stats(1, 1, {"f": _fs(1)}),
        [(_q(1, "COUNT"), [_row(B0921, 1.0)])],
    ),
    EngineCase(
        "duplicate_keys_last_wins_and_bom",
        INGEST_TIME,
        [_filter([_agg(1, ["COUNT"])], groupings=[("@.t", None)])],
        [b'\xef\xbb\xbf[{"t":"a","t":"b"}]'],
        NOW,
        _stats(1, 1, {"f": _fs(1)}),
        [(_q(1, "COUNT"), [_row(B0921, 1.0, {"@.t": "b"})])],
    ),
    EngineCase(
        "calendar_quarters",
        _ingest("ARRAY_OF_EVENTS", "@.t"),
        [_filter([_agg(1, ["COUNT"])], interval=("MONTH", 3))],
        [
            '[{"t":"2024-04-30T23:59:59.999Z"},{"t":"2024-06-30T00:00:00Z"},'
            '{"t":"2024-07-01T00:00:00Z"},{"t":"1969-12-31T23:59:59Z"}]'
        ],
        NOW,
        None,
        [
            (
                _q(1, "COUNT"),
                [
                    _row("1969-10-01T00:00:00Z", 1.0),
                    _row("2024-04-01T00:00:00Z", 2.0),
                    _row("2024-07-01T00:00:00Z", 1.0),
                ],
            )
        ],
    ),
    EngineCase(
        "auto_timestamps_and_fallback",
        _ingest("ARRAY_OF_EVENTS", "@.t", "AUTO"),
        [_filter([_agg(1, ["COUNT"])], interval=("SECOND", 30))],
        [
            '[{"t":1715678504},{"t":1715678504861},{"t":"1715678504861000"},'
            '{"t":1715678504861000000},{"t":"2024-05-14T09:21:44.861Z"},{"t":"garbage"},{}]'
        ],
        0,
        _stats(7, 7, {"f": _fs(7)}, fallback=2),
        [
            (
                _q(1, "COUNT"),
                [
                    _row("1970-01-01T00:00:00Z", 2.0),
                    _row("2024-05-14T09:21:30Z", 5.0),
                ],
            )
        ],
    ),
    EngineCase(
        "incomplete_intervals",
        _ingest("ARRAY_OF_EVENTS", "@.t"),
        [_filter([_agg(1, ["COUNT"])])],
        ['[{"t":"2024-05-14T09:20:10Z"},{"t":"2024-05-14T09:21:10Z"}]'],
        NOW,  # 09:21:44.861: the 09:21 bucket is still open
        None,
        [
            (_q(1, "COUNT"), [_row("2024-05-14T09:20:00Z", 1.0), _row(B0921, 1.0)]),
            (_q(1, "COUNT", includeIncompleteIntervals=False), [_row("2024-05-14T09:20:00Z", 1.0)]),
        ],
    ),
]
"""Engine scenarios (stats of the last body, then queries with their exact rows)."""

BAD_BATCH_CASES: list[tuple[str, dict[str, Any], str | bytes, type[ValueError]]] = [
    ("truncated_array", INGEST_TIME, '[{"a":1},', JsonError),
    ("trailing_comma_in_array", INGEST_TIME, '[{"a":1},]', JsonError),
    ("nan", INGEST_TIME, '[{"a":NaN}]', JsonError),
    ("infinity", INGEST_TIME, '[{"a":-Infinity}]', JsonError),
    ("single_quotes", INGEST_TIME, "[{'a':1}]", JsonError),
    ("leading_zero", INGEST_TIME, '[{"a":01}]', JsonError),
    ("raw_control_char", INGEST_TIME, '[{"a":"x\x01y"}]', JsonError),
    ("invalid_utf8", INGEST_TIME, b'[{"a":"\xff"}]', JsonError),
    ("trailing_garbage", INGEST_TIME, '[{"a":1}] x', JsonError),
    ("two_documents", INGEST_TIME, '[{"a":1}]\n[{"a":2}]', JsonError),
    ("too_deep", INGEST_TIME, "[" * 600 + "]" * 600, JsonError),
    ("empty_body", INGEST_TIME, "", ValueError),
    ("object_for_array", INGEST_TIME, '{"a":1}', FormatError),
    ("string_for_array", INGEST_TIME, '"events"', FormatError),
    ("ndjson_truncated", _ingest("NEWLINE_DELIMITED"), '{"a":1}\n{"a":', JsonError),
    ("ndjson_two_per_line", _ingest("NEWLINE_DELIMITED"), '{"a":1} {"a":2}', JsonError),
    ("ndjson_two_commas", _ingest("NEWLINE_DELIMITED"), '{"a":1},,', JsonError),
    ("ndjson_pretty_printed", _ingest("NEWLINE_DELIMITED"), '{\n"a":1\n}', JsonError),
    (
        "owap_array",
        _ingest("OBJECT_WITH_ARRAY_PROPERTY", arrayPath="@.events"),
        "[{}]",
        FormatError,
    ),
    (
        "owap_not_array",
        _ingest("OBJECT_WITH_ARRAY_PROPERTY", arrayPath="@.events"),
        '{"events":{}}',
        FormatError,
    ),
    (
        "owap_missing",
        _ingest("OBJECT_WITH_ARRAY_PROPERTY", arrayPath="@.events"),
        '{"other":[]}',
        FormatError,
    ),
    ("single_object_array", _ingest("SINGLE_OBJECT"), '[{"a":1}]', FormatError),
    ("single_object_null", _ingest("SINGLE_OBJECT"), "null", FormatError),
]
"""(name, ingest, body, error class): bodies rejected as a whole (semantics 2)."""

CONFIG_ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "too_many_groupings",
        _filter([_agg(1, ["COUNT"])], groupings=[(f"@.g{i}", None) for i in range(11)]),
        "groupingItems",
    ),
    (
        "duplicate_grouping",
        _filter([_agg(1, ["COUNT"])], groupings=[("@.a", None), ("@.a", "other")]),
        "groupingItems[1].grouping",
    ),
    (
        "alias_too_long",
        _filter([_agg(1, ["COUNT"])], groupings=[("@.a", "x" * 101)]),
        "groupingItems[0].alias",
    ),
    (
        "duplicate_alias",
        _filter([_agg(1, ["COUNT"])], groupings=[("@.a", "A"), ("@.b", "A")]),
        "groupingItems[1].alias",
    ),
    (
        "alias_equals_other_path",
        _filter([_agg(1, ["COUNT"])], groupings=[("@.a", None), ("@.b", "@.a")]),
        "groupingItems[1].alias",
    ),
    (
        "bad_grouping_path",
        _filter([_agg(1, ["COUNT"])], groupings=[("@.a == 1", None)]),
        "groupingItems[0].grouping",
    ),
    ("too_many_aggregations", _filter([_agg(i, ["COUNT"]) for i in range(1, 12)]), "aggregations"),
    (
        "duplicate_aggregation_id",
        _filter([_agg(1, ["COUNT"]), _agg(1, ["COUNT"])]),
        "aggregations[1].id",
    ),
    ("empty_calculations", _filter([_agg(1, [])]), "aggregations[0].calculations"),
    ("unknown_calculation", _filter([_agg(1, ["MEDIAN"], "@.v")]), "aggregations[0].calculations"),
    (
        "duplicate_calculation",
        _filter([_agg(1, ["SUM", "SUM"], "@.v")]),
        "aggregations[0].calculations",
    ),
    ("missing_field", _filter([_agg(1, ["COUNT", "SUM"])]), "aggregations[0].calculationField"),
    ("bad_field", _filter([_agg(1, ["SUM"], "@.v[")]), "aggregations[0].calculationField"),
    ("bad_filter", _filter([_agg(1, ["COUNT"])], condition="@.a =="), "filter"),
    (
        "bad_sub_filter",
        _filter([_agg(1, ["COUNT"], sub="@.a LIKE 1")]),
        "aggregations[0].subFilter",
    ),
    ("bad_flatten_path", _filter([_agg(1, ["COUNT"])], flatten="impressions"), "flattenPath"),
]
"""(name, filter definition, field named by the error): semantics 1 validation."""

QUERY_ERROR_CASES: list[tuple[str, dict[str, Any]]] = [
    ("unknown_filter", _q(1, "COUNT", fid="nope")),
    ("unknown_aggregation", _q(9, "COUNT")),
    ("calculation_not_computed", _q(1, "MEDIAN")),
    ("calculation_not_in_aggregation", _q(2, "SUM")),
    ("percentile_missing", _q(1, "PERCENTILES")),
    ("percentile_zero", _q(1, "PERCENTILES", percentile=0)),
    ("percentile_above_one", _q(1, "PERCENTILES", percentile=1.5)),
    ("percentile_bool", _q(1, "PERCENTILES", percentile=True)),
    ("bad_start_time", _q(1, "COUNT", startTime="yesterday")),
]
"""(name, query) pairs that are invalid for QUERY_ERROR_FILTER."""

QUERY_ERROR_FILTER = _filter([_agg(1, ["COUNT", "PERCENTILES"], "@.v"), _agg(2, ["COUNT"])])

# =============================================================================================
# Tests: JPath
# =============================================================================================


@pytest.mark.parametrize(("expression", "event", "expected"), JPATH_CASES)
def test_jpath_cases(expression: str, event: str, expected: bool) -> None:
    """Each JPath example evaluates as semantics 5 says."""
    assert matches(expression, parse_json(event, raw=True)) is expected


@pytest.mark.parametrize(("expression", "event", "expected"), JPATH_CASES)
def test_jpath_cases_through_engine(
    make_engine: EngineFactory, expression: str, event: str, expected: bool
) -> None:
    """The same examples, used as a filter: COUNT has a row exactly when the event matches."""
    engine = make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])], condition=expression)])
    engine.ingest("[" + event + "]")
    assert len(engine.results(_q(1, "COUNT"))) == (1 if expected else 0)


@pytest.mark.parametrize("expression", JPATH_SYNTAX_ERRORS)
def test_jpath_syntax_errors(expression: str) -> None:
    """Malformed conditions are rejected with a JPathSyntaxError."""
    with pytest.raises(JPathSyntaxError):
        compile_condition(expression)


@pytest.mark.parametrize("expression", JPATH_SYNTAX_ERRORS)
def test_jpath_syntax_errors_as_filters(make_engine: EngineFactory, expression: str) -> None:
    """The same conditions make a filter definition invalid, naming its ``filter`` field."""
    with pytest.raises(error_of(make_engine, ConfigError, "bad_filter")) as info:
        make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])], condition=expression)])
    assert getattr(info.value, "field", None) == "filters[0].filter"


@pytest.mark.parametrize("expression", [None, "", "   "])
def test_empty_condition_matches_everything(expression: str | None) -> None:
    """An empty or null filter compiles to 'every event'."""
    assert compile_condition(expression) is None
    assert matches(expression, {})


@pytest.mark.parametrize(("left", "right"), PATH_EQUIVALENCES)
def test_path_notations_are_equivalent(left: str, right: str) -> None:
    """Dotted, bracketed and mixed notations parse to the same path."""
    assert parse_path(left) == parse_path(right)


def test_flattened_element_and_root() -> None:
    """Under flattening @ is the element and $ the root event (spec 5.6)."""
    event = parse_json(IMPRESSIONS_EVENT)
    cond = "$.event_name == 'Impressions' && @.duration_ms>500"
    results = [matches(cond, el, event) for el in event["impressions"]]
    assert results == [True, True, True]
    assert not matches("@.event_name == 'Impressions'", event["impressions"][0], event)
    assert resolve(parse_path("$.device.type"), event["impressions"][0], event) == "web"


def test_syntax_error_carries_position() -> None:
    """A JPathSyntaxError names the expression and a character position."""
    with pytest.raises(JPathSyntaxError) as info:
        compile_condition('@.a == "x"')
    assert info.value.expression == '@.a == "x"'
    assert info.value.position == 7


# =============================================================================================
# Tests: values
# =============================================================================================


@pytest.mark.parametrize(("raw", "expected"), GROUP_STRING_CASES)
def test_group_strings(raw: str, expected: str) -> None:
    """Grouping strings follow semantics 7 (raw text kept where it matters)."""
    event = parse_json('{"v":' + raw + "}", raw=True)
    assert group_string(event["v"]) == expected


@pytest.mark.parametrize(("raw", "expected"), GROUP_STRING_CASES)
def test_group_strings_through_engine(make_engine: EngineFactory, raw: str, expected: str) -> None:
    """The engine's grouping gives the same strings (this exercises the raw re-parse)."""
    engine = make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])], groupings=[("@.v", None)])])
    engine.ingest('[{"v":' + raw + "}]")
    assert engine.results(_q(1, "COUNT"))[0]["groupings"] == {"@.v": expected}


def test_missing_groups_as_empty_string() -> None:
    """A missing member groups as the empty string, like null."""
    assert group_string(resolve(parse_path("@.nope"), {})) == ""


@pytest.mark.parametrize(("raw", "expected"), NUMERIC_CASES)
def test_numeric_rule(raw: str, expected: float | None) -> None:
    """Only finite JSON numbers and exact numeric strings are numeric (decision 6)."""
    assert numeric(parse_json('{"v":' + raw + "}")["v"]) == expected


@pytest.mark.parametrize(("value", "expected"), JS_NUMBER_CASES)
def test_js_number_str(value: float, expected: str) -> None:
    """Floats format as JavaScript's Number.prototype.toString."""
    assert js_number_str(value) == expected


@settings(max_examples=500)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_js_number_str_round_trips(value: float) -> None:
    """JavaScript formatting is a shortest round-trip form of the float."""
    text = js_number_str(value)
    assert float(text) == value
    digits = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
    assert len(digits) <= len(repr(abs(value)).split("e")[0].replace(".", "").strip("0"))


# =============================================================================================
# Tests: time
# =============================================================================================


@pytest.mark.parametrize(("text", "expected"), ISO_8601_CASES)
def test_iso8601(text: str, expected: int | None) -> None:
    """ISO 8601 strings parse per the semantics 3 grammar, sub-ms floored."""
    assert parse_iso8601(text) == expected


@pytest.mark.parametrize("text", ISO_8601_STRICT_REJECTS)
def test_iso8601_strict_rejects(text: str) -> None:
    """Forms outside the semantics 3 grammar are invalid timestamps."""
    assert parse_iso8601(text) is None


@pytest.mark.parametrize(("fmt", "raw", "expected"), UNIX_CASES)
def test_timestamp_formats(fmt: str, raw: str, expected: int | None) -> None:
    """Unix and AUTO formats scale exactly to milliseconds and floor."""
    assert timestamp_ms(parse_json('{"t":' + raw + "}")["t"], fmt) == expected


@pytest.mark.parametrize(("time", "unit", "count", "expected"), BUCKET_CASES)
def test_buckets(time: str, unit: str, count: int, expected: str) -> None:
    """Bucket starts follow semantics 4 (epoch truncation; calendar months and years)."""
    ms = parse_iso8601(time)
    assert ms is not None
    assert format_rfc3339(bucket_start(ms, unit, count)) == expected


@pytest.mark.parametrize(("ms", "expected"), RFC3339_CASES)
def test_rfc3339_output(ms: int, expected: str) -> None:
    """Output timestamps use Z and milliseconds only when non-zero."""
    assert format_rfc3339(ms) == expected


@given(st.integers(min_value=MIN_MS, max_value=MAX_MS))
def test_format_parse_round_trip(ms: int) -> None:
    """Parsing a formatted time gives the time back."""
    assert parse_iso8601(format_rfc3339(ms)) == ms


@given(
    st.integers(min_value=MIN_MS, max_value=MAX_MS - 200 * 366 * 86_400_000),
    st.sampled_from(["SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"]),
    st.integers(min_value=1, max_value=100),
)
def test_bucket_invariants(ms: int, unit: str, count: int) -> None:
    """start <= t < end, and a bucket start is its own bucket."""
    count = max(count, 30) if unit == "SECOND" else count
    start = bucket_start(ms, unit, count)
    assert start <= ms < bucket_end(start, unit, count)
    assert bucket_start(start, unit, count) == start


# =============================================================================================
# Tests: engine
# =============================================================================================


def _assert_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [(r["dt"], r["groupings"]) for r in actual] == [
        (r["dt"], r["groupings"]) for r in expected
    ]
    for a, e in zip(actual, expected, strict=True):
        assert isinstance(a["value"], float)
        assert a["value"] == pytest.approx(e["value"], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", ENGINE_CASES, ids=[c.name for c in ENGINE_CASES])
def test_engine_cases(make_engine: EngineFactory, case: EngineCase) -> None:
    """Each engine scenario gives the expected stats and rows."""
    engine = make_engine(case.ingest, case.filters, now_ms=case.now_ms)
    stats: dict[str, Any] = {}
    for body in case.bodies:
        stats = engine.ingest(body)
    if case.stats is not None:
        assert stats == case.stats
    for query, rows in case.queries:
        _assert_rows(engine.results(query), rows)


@pytest.mark.parametrize(
    ("name", "ingest", "body", "error"), BAD_BATCH_CASES, ids=[c[0] for c in BAD_BATCH_CASES]
)
def test_bad_batches_are_atomic(
    make_engine: EngineFactory,
    name: str,
    ingest: dict[str, Any],
    body: str | bytes,
    error: type[ValueError],
) -> None:
    """A bad batch raises and leaves the state exactly as it was."""
    engine = make_engine(ingest, [_filter([_agg(1, ["COUNT"])])], now_ms=NOW)
    good = {
        "NEWLINE_DELIMITED": '{"a":1}',
        "OBJECT_WITH_ARRAY_PROPERTY": '{"events":[{"a":1}]}',
        "SINGLE_OBJECT": '{"a":1}',
    }.get(ingest["schema"], '[{"a":1}]')
    engine.ingest(good)
    before = engine.results(_q(1, "COUNT"))
    with pytest.raises(error_of(make_engine, error)):
        engine.ingest(body)
    assert engine.results(_q(1, "COUNT")) == before == [_row(B0921, 1.0)]


def test_batch_atomic_when_late_element_is_bad(make_engine: EngineFactory) -> None:
    """Valid events before a syntax error in the same batch are not applied."""
    engine = make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])])], now_ms=NOW)
    with pytest.raises(error_of(make_engine, JsonError)):
        engine.ingest('[{"a":1},{"a":2},{"a":}]')
    assert engine.results(_q(1, "COUNT")) == []


def test_nesting_limit_boundary(make_engine: EngineFactory) -> None:
    """512 nested levels parse; 513 are a JsonError."""
    assert parse_json("[" * 512 + "]" * 512) is not None
    with pytest.raises(JsonError):
        parse_json("[" * 513 + "]" * 513)
    deep_obj = '{"a":' * 511 + "1" + "}" * 511
    too_deep = make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])])], now_ms=NOW)
    with pytest.raises(error_of(make_engine, JsonError)):
        too_deep.ingest("[" + '{"a":' * 512 + "1" + "}" * 512 + "]")
    engine = make_engine(
        INGEST_TIME, [_filter([_agg(1, ["COUNT"])], groupings=[("@.a", None)])], now_ms=NOW
    )
    engine.ingest("[" + deep_obj + "]")  # 512 levels including the batch array
    assert engine.results(_q(1, "COUNT"))[0]["value"] == 1.0


def test_type_errors() -> None:
    """Inputs of the wrong Python type raise TypeError."""
    engine = ReferenceEngine(INGEST_TIME, [])
    with pytest.raises(TypeError):
        engine.ingest(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "defn", "field_name"), CONFIG_ERROR_CASES, ids=[c[0] for c in CONFIG_ERROR_CASES]
)
def test_config_errors(
    make_engine: EngineFactory, name: str, defn: dict[str, Any], field_name: str
) -> None:
    """Invalid filter definitions are rejected, naming the field."""
    with pytest.raises(error_of(make_engine, ConfigError, name)) as info:
        make_engine(INGEST_TIME, [defn])
    assert field_name in getattr(info.value, "field", "")


@pytest.mark.parametrize(("unit", "count"), VALID_INTERVALS)
def test_valid_interval_bounds(make_engine: EngineFactory, unit: str, count: int) -> None:
    """The extreme allowed intervals are accepted."""
    make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])], interval=(unit, count))])


@pytest.mark.parametrize(("unit", "count"), INVALID_INTERVALS)
def test_invalid_interval_bounds(make_engine: EngineFactory, unit: str, count: int) -> None:
    """Intervals outside 30 s to 100 years are rejected."""
    with pytest.raises(error_of(make_engine, ConfigError)):
        make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])], interval=(unit, count))])


def test_duplicate_filter_ids_rejected(make_engine: EngineFactory) -> None:
    """Two filters may not share an id."""
    with pytest.raises(error_of(make_engine, ConfigError)):
        make_engine(INGEST_TIME, [_filter([_agg(1, ["COUNT"])])] * 2)


def test_legacy_groupings_list(make_engine: EngineFactory) -> None:
    """The legacy groupings list is used when groupingItems is absent."""
    defn = _filter([_agg(1, ["COUNT"])])
    del defn["groupingItems"]
    defn["groupings"] = ["@.a"]
    engine = make_engine(INGEST_TIME, [defn], now_ms=NOW)
    engine.ingest('[{"a":"x"}]')
    assert engine.results(_q(1, "COUNT")) == [_row(B0921, 1.0, {"@.a": "x"})]


@pytest.mark.parametrize(
    ("name", "query"), QUERY_ERROR_CASES, ids=[c[0] for c in QUERY_ERROR_CASES]
)
def test_query_errors(make_engine: EngineFactory, name: str, query: dict[str, Any]) -> None:
    """Invalid Metrics API queries raise QueryError."""
    engine = make_engine(INGEST_TIME, [QUERY_ERROR_FILTER])
    with pytest.raises(error_of(make_engine, QueryError, name)):
        engine.results(query)


def test_unknown_query_fields_are_ignored(make_engine: EngineFactory) -> None:
    """Client-side fields the Grafana plugin sends do not change the answer."""
    engine = make_engine(INGEST_TIME, [QUERY_ERROR_FILTER], now_ms=NOW)
    engine.ingest('[{"v":1}]')
    query = _q(
        1,
        "COUNT",
        queryId="A",
        optimized=True,
        alias=None,
        hide=False,
        groupingFilters=None,
        limit=None,
        recalculatedInterval=None,
    )
    assert engine.results(query) == [_row(B0921, 1.0)]


@pytest.mark.parametrize(
    "name",
    ["track", "page", "screen", "identify", "group", "alias", "nested-properties", "minimal"],
)
def test_every_fixture_ingests(make_engine: EngineFactory, name: str) -> None:
    """Every Segment fixture ingests as a single object and groups by its type."""
    event = json.loads(fixture(f"{name}.json"))
    engine = make_engine(
        _ingest("SINGLE_OBJECT", "@.receivedAt"),
        [_filter([_agg(1, ["COUNT"])], groupings=[("@.type", None)])],
        now_ms=NOW,
    )
    stats = engine.ingest(fixture(f"{name}.json"))
    assert stats["accepted"] == 1
    assert stats["timestamp_fallback"] == (0 if "receivedAt" in event else 1)
    rows = engine.results(_q(1, "COUNT"))
    assert [r["groupings"] for r in rows] == [{"@.type": event["type"]}]


def test_batch_fixture_matches_wire_body() -> None:
    """batch.json (pretty) and its wire body give the same results."""
    results = []
    for name in ("batch.json", "request-body-batch.json"):
        engine = ReferenceEngine(SEGMENT_INGEST, [SEG_FILTER, REV_FILTER])
        engine.ingest(fixture(name))
        results.append([engine.results(_q(1, "COUNT", f)) for f in ("seg", "rev")])
    assert results[0] == results[1]


# =============================================================================================
# Tests: the benchmark generator
# =============================================================================================


def _segment_gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("segment_gen", BENCHES / "segment_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_is_deterministic() -> None:
    """The same seed gives the same bytes; another seed does not."""
    gen = _segment_gen()
    a = gen.encode_ndjson(gen.generate_events(300, seed=7))
    b = gen.encode_ndjson(gen.generate_events(300, seed=7))
    c = gen.encode_ndjson(gen.generate_events(300, seed=8))
    assert a == b != c


def test_generator_shape() -> None:
    """Type mix, timestamps, sizes and field variety are as documented."""
    gen = _segment_gen()
    n = 4000
    events = gen.generate_events(n, seed=1)
    types = [e["type"] for e in events]
    for kind, share in (
        ("track", 0.60),
        ("page", 0.20),
        ("screen", 0.10),
        ("identify", 0.05),
        ("group", 0.03),
        ("alias", 0.02),
    ):
        assert abs(types.count(kind) / n - share) < 0.03, kind
    start = parse_iso8601("2024-05-14T00:00:00Z")
    assert start is not None
    for e in events:
        for key in ("timestamp", "sentAt", "receivedAt"):
            assert e[key].endswith("Z") and len(e[key]) == 24
            ms = parse_iso8601(e[key])
            assert ms is not None and start <= ms < start + 86_400_000
        assert e["messageId"] and e["anonymousId"]
    sizes = [len(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode()) for e in events]
    assert 800 <= sum(sizes) / n <= 1300
    devices = {e["context"].get("device", {}).get("type") for e in events}
    assert {"ios", "android", "web"} <= devices
    revenue = [e["properties"].get("revenue", None) for e in events if e["type"] == "track"]
    assert any(isinstance(r, float) for r in revenue)
    assert any(isinstance(r, str) for r in revenue)
    assert any(r is None for r in revenue)
    assert len({e["event"] for e in events if e["type"] == "track"}) >= 30


def test_generator_batches_with_reference() -> None:
    """Generated batches ingest into the reference with the benchmark definitions."""
    gen = _segment_gen()
    events = gen.generate_events(1000, seed=3)
    bodies = gen.batches(events, size=300)
    assert [len(json.loads(b)) for b in bodies] == [300, 300, 300, 100]
    engine = ReferenceEngine(gen.BENCH_INGEST, [gen.BENCH_FILTER])
    matched = 0
    for body in bodies:
        stats = engine.ingest(body)
        assert stats["timestamp_fallback"] == 0
        matched += stats["per_filter"]["bench"]["matched"]
    assert matched == sum(e["type"] in ("track", "page", "screen") for e in events)
    counts = engine.results(_q(1, "COUNT", "bench"))
    assert sum(r["value"] for r in counts) == matched
    for calc in ("SUM", "MIN", "MAX", "AVG"):
        assert engine.results(_q(2, calc, "bench"))
    assert engine.results(_q(3, "APPROX_COUNT_DISTINCT", "bench"))
    p99 = engine.results(_q(4, "PERCENTILES", "bench", percentile=0.99))
    assert all(math.isfinite(r["value"]) for r in p99)
    ndjson = gen.encode_ndjson(events[:10])
    assert ndjson.count(b"\n") == 10
    assert json.loads(gen.encode_array(events[:10])) == events[:10]
