"""JPath (spec §6, semantics.md §5): every example of the spec's table, the typing rules,
existence (decision 5), precedence, syntax errors, and array flattening (spec §5.6)."""

from __future__ import annotations

from typing import Any

import pytest

from eventtally import ConfigError, EventtallyError, PathSyntaxError
from tests.support import (
    agg_def,
    by_group,
    dumps,
    filter_def,
    ingest_def,
    make_engine,
    matched,
    rows,
)

WHERE = ["filter", "subFilter"]


def check(expression: str, event: Any, expected: bool, where: str) -> None:
    """Assert the outcome of ``expression`` on ``event`` as a filter or as a sub-filter."""
    got = matched(expression, event, sub_filter=where == "subFilter")
    assert got is expected, f"{expression!r} on {event!r} as {where}: got {got}"


# --------------------------------------------------------------------------------------------
# Every example of the spec's JPath table (§6), with events that match and events that don't
# --------------------------------------------------------------------------------------------

SPEC_TABLE = [
    # ==, numeric literal: the field is cast to float (numeric strings included)
    ("@.app.version == 2.0", {"app": {"version": "2.0"}}, True),
    ("@.app.version == 2.0", {"app": {"version": 2}}, True),
    ("@.app.version == 2.0", {"app": {"version": "2"}}, True),
    ("@.app.version == 2.0", {"app": {"version": "2.0.1"}}, False),
    ("@.app.version == 2.0", {"app": {}}, False),
    # !=
    ("@.app.version != 2.0", {"app": {"version": "2.1"}}, True),
    ("@.app.version != 2.0", {"app": {"version": 2.0}}, False),
    ("@.app.version != 2.0", {"app": {}}, False),
    # >
    ("@.duration > 60", {"duration": 61}, True),
    ("@.duration > 60", {"duration": 60}, False),
    ("@.duration > 60", {"duration": "60.5"}, True),
    # >=
    ("@.app.buildNum >= 4102", {"app": {"buildNum": 4102}}, True),
    ("@.app.buildNum >= 4102", {"app": {"buildNum": 4101.99}}, False),
    # <
    ("@.app.buildNum < 3000", {"app": {"buildNum": 2999}}, True),
    ("@.app.buildNum < 3000", {"app": {"buildNum": 3000}}, False),
    # <=
    ("@.app.version <= 1.9", {"app": {"version": "1.9"}}, True),
    ("@.app.version <= 1.9", {"app": {"version": 1.91}}, False),
    # LIKE: % wildcard, case-sensitive, whole string
    ("@.eventName LIKE 'app%'", {"eventName": "appOpen"}, True),
    ("@.eventName LIKE 'app%'", {"eventName": "app"}, True),
    ("@.eventName LIKE 'app%'", {"eventName": "AppOpen"}, False),
    ("@.eventName LIKE 'app%'", {"eventName": "myapp"}, False),
    # ILIKE
    ("@.eventName ILIKE 'ApP%'", {"eventName": "appOpen"}, True),
    ("@.eventName ILIKE 'ApP%'", {"eventName": "APPCLOSE"}, True),
    ("@.eventName ILIKE 'ApP%'", {"eventName": "ap"}, False),
    # =~ RE2 between slashes, search semantics
    ("@.color =~ /gr(a|e)y/", {"color": "grey"}, True),
    ("@.color =~ /gr(a|e)y/", {"color": "gray"}, True),
    ("@.color =~ /gr(a|e)y/", {"color": "dark gray!"}, True),
    ("@.color =~ /gr(a|e)y/", {"color": "green"}, False),
    # in
    ("@.eventName in ['appOpen', 'appClose']", {"eventName": "appOpen"}, True),
    ("@.eventName in ['appOpen', 'appClose']", {"eventName": "appClose"}, True),
    ("@.eventName in ['appOpen', 'appClose']", {"eventName": "appBackground"}, False),
    ("@.eventName in ['appOpen', 'appClose']", {}, False),
    # bare path: existence
    ("@.error", {"error": "boom"}, True),
    ("@.error", {"error": None}, True),
    ("@.error", {"error": False}, True),
    ("@.error", {}, False),
    # ! negation
    ("!(@.color)", {}, True),
    ("!(@.color)", {"color": "red"}, False),
    ("!(@.color)", {"color": None}, False),
    # &&
    (
        "@.app.version==2.0 && @.device.platform == 'ios'",
        {"app": {"version": "2.0"}, "device": {"platform": "ios"}},
        True,
    ),
    (
        "@.app.version==2.0 && @.device.platform == 'ios'",
        {"app": {"version": "2.0"}, "device": {"platform": "android"}},
        False,
    ),
    # ||
    (
        "@.eventName == 'AppClose' || @.eventName == 'AppBackground'",
        {"eventName": "AppClose"},
        True,
    ),
    (
        "@.eventName == 'AppClose' || @.eventName == 'AppBackground'",
        {"eventName": "AppBackground"},
        True,
    ),
    ("@.eventName == 'AppClose' || @.eventName == 'AppBackground'", {"eventName": "App"}, False),
    # .length of an array
    ("@.player.weapons.length > 0", {"player": {"weapons": ["sword"]}}, True),
    ("@.player.weapons.length > 0", {"player": {"weapons": []}}, False),
    ("@.player.weapons.length > 0", {"player": {}}, False),
    # the three equivalent path notations (the docs' typo 'plaftorm' kept)
    ("@.device.platform == 'ios'", {"device": {"platform": "ios"}}, True),
    ("@['device']['plaftorm'] == 'ios'", {"device": {"plaftorm": "ios"}}, True),
    ("@['device'].platform == 'ios'", {"device": {"platform": "ios"}}, True),
    ("@['device'].platform == 'ios'", {"device": {"platform": "android"}}, False),
    # numeric literal forms named by the spec
    ("@.n == 0", {"n": 0}, True),
    ("@.n == 0.1", {"n": "0.1"}, True),
    ("@.n == -12345678910112", {"n": -12345678910112}, True),
    ("@.n == -12345678910112", {"n": "-12345678910112"}, True),
    # whitespace around operators is optional
    ("@.duration_ms>500", {"duration_ms": 501}, True),
    ("@.duration_ms>500", {"duration_ms": 500}, False),
]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(("expression", "event", "expected"), SPEC_TABLE)
def test_spec_table_examples(expression: str, event: Any, expected: bool, where: str) -> None:
    """Each example of spec §6's operator table, as a filter and as a sub-filter."""
    check(expression, event, expected, where)


# --------------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------------

PATHS = [
    ("@['key with spaces'] == 'x'", {"key with spaces": "x"}, True),
    ("@['a.b.c'] == 'x'", {"a.b.c": "x", "a": {"b": {"c": "y"}}}, True),
    ("@.a.b.c == 'y'", {"a.b.c": "x", "a": {"b": {"c": "y"}}}, True),
    ("@['clé ünïcode'] == 'x'", {"clé ünïcode": "x"}, True),
    ("@.clé == 'x'", {"clé": "x"}, True),
    ("@.日本 == 'x'", {"日本": "x"}, True),
    ("@[\"double quoted\"] == 'x'", {"double quoted": "x"}, True),
    ("@['it\\'s'] == 'x'", {"it's": "x"}, True),
    ("@[''] == 'empty key'", {"": "empty key"}, True),
    ("@['$dollar'] == 'x'", {"$dollar": "x"}, True),
    ("@.arr[0] == 'a'", {"arr": ["a", "b"]}, True),
    ("@.arr[1] == 'b'", {"arr": ["a", "b"]}, True),
    ("@.arr[2]", {"arr": ["a", "b"]}, False),
    ("@.arr[0].k == 1", {"arr": [{"k": 1}]}, True),
    ("@.m[0][1] == 4", {"m": [[3, 4]]}, True),
    ("@.arr[0]", {"arr": {"0": "object member, not an index"}}, False),
    ("@.obj.k", {"obj": ["k"]}, False),
    ("@.a.b", {"a": "string, not an object"}, False),
    ("$.x == 1", {"x": 1}, True),
    # member names are compared after JSON unescaping, without Unicode normalization
    ("@.g == 'x'", '{"\\u0067":"x"}', True),
    ("@.a.b == 'x'", '{"a":{"\\u0062":"x"}}', True),
    ("@['a\"b'] == 'x'", '{"a\\"b":"x"}', True),
    ("@['/'] == 'x'", '{"\\/":"x"}', True),
    ("@.é == 'x'", '{"\\u00e9":"x"}', True),
    ("@['🚀'] == 'x'", '{"\\ud83d\\ude80":"x"}', True),
    ("@.é == 'x'", {"e\u0301": "x"}, False),
    ("@.v == 'a'", '{"v":"\\u0061"}', True),
    ("@.v LIKE 'é%'", '{"v":"\\u00e9t\\u00e9"}', True),
    ("$['x'] == 1", {"x": 1}, True),
]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(("expression", "event", "expected"), PATHS)
def test_paths(expression: str, event: Any, expected: bool, where: str) -> None:
    """Dot and bracket notation, quoted keys with spaces, dots and unicode, array indices."""
    check(expression, event, expected, where)


# --------------------------------------------------------------------------------------------
# Typing rules (semantics.md §5): the literal decides
# --------------------------------------------------------------------------------------------

TYPING = [
    # numeric literal: JSON numbers and strings that are exactly a finite JSON number
    ("@.v == 2", {"v": 2.0}, True),
    ("@.v == 2", {"v": "2.0"}, True),
    ("@.v == 1000", {"v": "1e3"}, True),
    ("@.v == 1e3", {"v": 1000}, True),
    ("@.v == 0", {"v": "-0"}, True),
    ("@.v == 2", {"v": " 2"}, False),
    ("@.v == 2", {"v": "2 "}, False),
    ("@.v == 2", {"v": "+2"}, False),
    ("@.v == 2", {"v": "0x2"}, False),
    ("@.v == 123", {"v": "000123"}, False),
    ("@.v == 2", {"v": "2."}, False),
    ("@.v > 0", {"v": "1e999"}, False),
    ("@.v > 0", {"v": "Infinity"}, False),
    ("@.v > 0", {"v": "NaN"}, False),
    ("@.v > 0", {"v": True}, False),
    ("@.v == 1", {"v": True}, False),
    ("@.v == 0", {"v": None}, False),
    ("@.v == 0", {"v": False}, False),
    ("@.v > 0", {"v": [1]}, False),
    ("@.v > 0", {"v": {"a": 1}}, False),
    ("@.v != 2", {"v": "two"}, True),
    ("@.v != 2", {"v": None}, True),
    # string literal: the field's string form (section 7) is compared
    ("@.v == '1'", {"v": 1}, True),
    ("@.v == '1'", {"v": 1.0}, True),
    ("@.v == '1.5'", {"v": 1.50}, True),
    ("@.v == 'true'", {"v": True}, True),
    ("@.v == 'false'", {"v": False}, True),
    ("@.v == ''", {"v": ""}, True),
    ("@.v == 'null'", {"v": None}, False),
    ("@.v == ''", {"v": None}, False),
    ("@.v == '[1,2]'", {"v": [1, 2]}, False),
    ("@.v == '{}'", {"v": {}}, False),
    ("@.v != 'x'", {"v": None}, True),
    ("@.v == 'É'", {"v": "é"}, False),
    ("@.v == 'é'", {"v": "é"}, True),
    # byte-wise ordering for < <= > >= with string literals
    ("@.v < 'b'", {"v": "a"}, True),
    ("@.v < 'b'", {"v": "B"}, True),
    ("@.v < 'b'", {"v": "é"}, False),
    ("@.v >= 'abc'", {"v": "abd"}, True),
    ("@.v <= 'abc'", {"v": "abc"}, True),
    ("@.v > 'abc'", {"v": "ab"}, False),
    ("@.v < '10'", {"v": 9}, False),
    ("@.v < '10'", {"v": 1}, True),
    ("@.v > ''", {"v": None}, False),
    # true / false: only JSON booleans
    ("@.v == true", {"v": True}, True),
    ("@.v == true", {"v": "true"}, False),
    ("@.v == true", {"v": 1}, False),
    ("@.v == false", {"v": False}, True),
    ("@.v == false", {"v": 0}, False),
    ("@.v == false", {"v": None}, False),
    ("@.v != true", {"v": False}, True),
    ("@.v != true", {"v": "true"}, True),
    # null: only a present JSON null
    ("@.v == null", {"v": None}, True),
    ("@.v == null", {}, False),
    ("@.v == null", {"v": ""}, False),
    ("@.v == null", {"v": "null"}, False),
    ("@.v != null", {"v": 0}, True),
    ("@.v != null", {"v": None}, False),
    # missing field: every comparison is false, != included
    ("@.v != null", {}, False),
    ("@.v != 'x'", {}, False),
    ("@.v != 1", {}, False),
    ("@.v != true", {}, False),
    ("@.v < 'z'", {}, False),
    ("@.v LIKE '%'", {}, False),
    ("@.v =~ /.*/", {}, False),
    ("@.v in ['', 0, null]", {}, False),
    # in [...]: == against each element, typed by that element
    ("@.v in [1, 'a', true]", {"v": "1"}, True),
    ("@.v in [1, 'a', true]", {"v": 1.0}, True),
    ("@.v in [1, 'a', true]", {"v": "a"}, True),
    ("@.v in [1, 'a', true]", {"v": True}, True),
    ("@.v in [1, 'a', true]", {"v": "true"}, False),
    ("@.v in [1, 'a', true]", {"v": False}, False),
    ("@.v in [null]", {"v": None}, True),
    ("@.v in []", {"v": 1}, False),
    ("@.v IN ['x']", {"v": "x"}, True),
    # LIKE / ILIKE: _ is one character, % any run, whole-string match; scalars' string form
    ("@.v LIKE 'a_c'", {"v": "abc"}, True),
    ("@.v LIKE 'a_c'", {"v": "ac"}, False),
    ("@.v LIKE 'a_c'", {"v": "abbc"}, False),
    ("@.v LIKE 'a_c'", {"v": "aéc"}, True),
    ("@.v LIKE '%'", {"v": ""}, True),
    ("@.v LIKE '%b%'", {"v": "abc"}, True),
    ("@.v LIKE '1%'", {"v": 15}, True),
    ("@.v LIKE 'tr%'", {"v": True}, True),
    ("@.v LIKE '%'", {"v": None}, False),
    ("@.v LIKE '%'", {"v": [1]}, False),
    ("@.v LIKE 'a.c'", {"v": "abc"}, False),
    ("@.v LIKE 'a.c'", {"v": "a.c"}, True),
    ("@.v like 'x%'", {"v": "xy"}, True),
    ("@.v LIKE 'a\\\\%'", {"v": "a\\b"}, True),  # no LIKE escape: '\\' is a plain backslash
    ("@.v LIKE 'a\\\\%'", {"v": "a%"}, False),
    ("@.v LIKE '100%'", {"v": "100%"}, True),
    ("@.v ILIKE 'É%'", {"v": "été"}, True),
    ("@.v ilike 'ABC'", {"v": "abc"}, True),
    # regex: RE2 syntax, search semantics, /i flag, escaped slash
    ("@.v =~ /^\\d+$/", {"v": "123"}, True),
    ("@.v =~ /^\\d+$/", {"v": 123}, True),
    ("@.v =~ /^\\d+$/", {"v": "12a"}, False),
    ("@.v =~ /GREY/i", {"v": "grey"}, True),
    ("@.v =~ /GREY/", {"v": "grey"}, False),
    ("@.v =~ /a\\/b/", {"v": "a/b"}, True),
    ("@.v =~ /^é.$/", {"v": "éx"}, True),
    ("@.v =~ /x/", {"v": None}, False),
    ("@.v =~ /1/", {"v": [1]}, False),
    # .length: arrays count elements, strings count characters, objects use a length member
    ("@.v.length == 3", {"v": [1, None, {}]}, True),
    ("@.v.length == 3", {"v": "héé"}, True),
    ("@.v.length == 1", {"v": "🙂"}, True),
    ("@.v.length == 0", {"v": ""}, True),
    ("@.v.length == 3", {"v": {"length": 3}}, True),
    ("@.v.length == 3", {"v": {"a": 1, "b": 2, "c": 3}}, False),
    ("@.v.length > 0", {"v": 12345}, False),
    ("@.v.length > 0", {"v": None}, False),
    ("@.v.length >= 2", {"v": ["a", "b"]}, True),
    ("@.v.length", {"v": [1]}, False),
    ("@.v.length", {"v": {"length": None}}, True),
    # a literal on the left is the mirrored comparison
    ("500 < @.v", {"v": 501}, True),
    ("500 < @.v", {"v": 500}, False),
    ("'b' > @.v", {"v": "a"}, True),
]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(("expression", "event", "expected"), TYPING)
def test_typing_rules(expression: str, event: Any, expected: bool, where: str) -> None:
    """Semantics §5 typing: numeric literals cast to float, string literals compare the string
    form, true/false/null match only their JSON type, a missing field fails every comparison."""
    check(expression, event, expected, where)


# --------------------------------------------------------------------------------------------
# Existence (decision 5)
# --------------------------------------------------------------------------------------------

EXISTENCE = [
    ("@.error", {"error": None}, True),
    ("@.error", {"error": ""}, True),
    ("@.error", {"error": 0}, True),
    ("@.error", {"error": []}, True),
    ("@.error", {"error": {}}, True),
    ("@.error", {}, False),
    ("@.error", {"Error": 1}, False),
    ("@.a.b", {"a": {"b": None}}, True),
    ("@.a.b", {"a": None}, False),
    ("!(@.error)", {"error": None}, False),
    ("!(@.error)", {}, True),
    ("!@.error", {}, True),
    ("!@.error", {"error": None}, False),
    ("!!@.error", {"error": None}, True),
    ("!(!(@.error))", {}, False),
    ("@.error && @.error == null", {"error": None}, True),
]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(("expression", "event", "expected"), EXISTENCE)
def test_existence_includes_null(expression: str, event: Any, expected: bool, where: str) -> None:
    """A bare path is true when the member is present, even when null; ``!`` tests absence."""
    check(expression, event, expected, where)


# --------------------------------------------------------------------------------------------
# Precedence: !, then comparisons, then &&, then ||
# --------------------------------------------------------------------------------------------

PRECEDENCE = [
    # && binds tighter than ||
    ("@.a || @.b && @.c", {"a": 1}, True),
    ("(@.a || @.b) && @.c", {"a": 1}, False),
    ("@.a && @.b || @.c", {"c": 1}, True),
    ("@.a && (@.b || @.c)", {"c": 1}, False),
    # ! binds tighter than && and ||
    ("!@.a && @.b", {"b": 1}, True),
    ("!@.a && @.b", {"a": 1, "b": 1}, False),
    ("!@.a || @.b", {"a": 1}, False),
    ("!(@.a || @.b)", {"b": 1}, False),
    ("!(@.a && @.b)", {"a": 1}, True),
    # comparisons bind tighter than && / ||
    ("@.x == 1 || @.x == 2 && @.y == 3", {"x": 1}, True),
    ("(@.x == 1 || @.x == 2) && @.y == 3", {"x": 1}, False),
    ("@.x == 2 && @.y == 3 || @.z", {"x": 2, "y": 3}, True),
    # left to right chains
    ("@.a && @.b && @.c", {"a": 1, "b": 1, "c": 1}, True),
    ("@.a && @.b && @.c", {"a": 1, "b": 1}, False),
    ("@.a || @.b || @.c", {"c": 1}, True),
    ("((((@.a))))", {"a": 1}, True),
    ("  @.a   &&\n\t@.b  ", {"a": 1, "b": 1}, True),
]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize(("expression", "event", "expected"), PRECEDENCE)
def test_precedence(expression: str, event: Any, expected: bool, where: str) -> None:
    """``!`` binds tightest, then comparisons, then ``&&``, then ``||``; parentheses group."""
    check(expression, event, expected, where)


@pytest.mark.parametrize("expression", ["", "   ", None])
def test_empty_filter_matches_every_event(expression: str | None) -> None:
    """An empty or null filter and sub-filter match every event."""
    engine = make_engine(
        ingest_def(), [filter_def(filter=expression, aggregations=[agg_def(sub_filter=expression)])]
    )
    stats = engine.ingest(b'[{},{"a":1},{"b":null}]')
    assert stats.per_filter["f"]["matched"] == 3
    assert rows(engine)[0]["value"] == 3.0


# --------------------------------------------------------------------------------------------
# Syntax errors: PathSyntaxError with field, expression and position
# --------------------------------------------------------------------------------------------

SYNTAX_ERRORS = [
    # (expression, position of the offending character)
    ("@.a ==", 6),
    ("@.a ===", 6),
    ("@.a = 1", 4),
    ("@.a == 'abc", 7),
    ('@.a == "x"', 7),
    ("(@.a", 4),
    ("@.a)", 3),
    ("()", 1),
    ("@.a && ", 7),
    ("&& @.a", 0),
    ("@.a || || @.b", 7),
    ("@.a == 1 1", 9),
    ("@.a in [1,", 10),
    ("@.a in 1", 7),
    ("@.x =~ /[/", 7),
    ("@.x =~ /abc", 7),
    ("@.x =~ /a/g", 10),
    ("@.", 2),
    ("@..a", 1),
    ("a.b", 0),
    ("@.a == 1.", 9),
    ("@.a == --1", 7),
    ("@.a >= true", 4),
    ("@.a < null", 4),
    ("@.a LIKE 5", 9),
    ("@.a == @.b", 7),
    ("!@.a == 1", 5),
    ("@.a == 1e999", 7),
    ("@.a AND @.b", 4),
]


@pytest.mark.parametrize(("expression", "position"), SYNTAX_ERRORS)
def test_syntax_errors_report_position(expression: str, position: int) -> None:
    """A filter that does not compile raises PathSyntaxError naming the field, the expression
    and the position of the offending character."""
    with pytest.raises(PathSyntaxError) as info:
        make_engine(ingest_def(), [filter_def(filter=expression)])
    err = info.value
    assert isinstance(err, EventtallyError) and isinstance(err, ValueError)
    assert err.field == "filters[0].filter"
    assert err.expression == expression
    assert err.position == position
    assert isinstance(err.reason, str) and err.reason
    assert str(position) in str(err)


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        (
            [filter_def(aggregations=[agg_def(sub_filter="@.a ==")])],
            "filters[0].aggregations[0].subFilter",
        ),
        (
            [filter_def(), filter_def("g", aggregations=[agg_def(1), agg_def(2, sub_filter="(")])],
            "filters[1].aggregations[1].subFilter",
        ),
        ([filter_def(groupings=["@.a", "@.b c"])], "filters[0].groupingItems[1].grouping"),
        (
            [filter_def(aggregations=[agg_def(1, ("SUM",), "@.a == 1")])],
            "filters[0].aggregations[0].calculationField",
        ),
        ([filter_def(flatten="@.items[")], "filters[0].flattenPath"),
    ],
)
def test_syntax_error_names_the_field(filters: list[dict[str, Any]], field: str) -> None:
    """Sub-filters, groupings, fields and flatten paths are compiled too; errors name them."""
    with pytest.raises(PathSyntaxError) as info:
        make_engine(ingest_def(), filters)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("ingest", "field"),
    [
        (ingest_def(path="@.ts["), "ingests[0].timestamp.path"),
        (ingest_def(path="@.ts == 1"), "ingests[0].timestamp.path"),
        (ingest_def("OBJECT_WITH_ARRAY_PROPERTY", array_path="events"), "ingests[0].arrayPath"),
    ],
)
def test_syntax_error_in_ingest_paths(ingest: dict[str, Any], field: str) -> None:
    """The ingest's timestamp path and array path must be plain paths."""
    with pytest.raises(PathSyntaxError) as info:
        make_engine(ingest, [filter_def()])
    assert info.value.field == field


def test_path_syntax_error_is_not_a_config_error() -> None:
    """PathSyntaxError is its own branch of the tree (with ``expression`` and ``position``)."""
    with pytest.raises(EventtallyError) as info:
        make_engine(ingest_def(), [filter_def(filter="@.a ==")])
    assert type(info.value) is PathSyntaxError
    assert not isinstance(info.value, ConfigError)


def test_add_filter_compiles_paths_too() -> None:
    """``add_filter`` validates JPath like the constructor and leaves the engine unchanged."""
    engine = make_engine()
    with pytest.raises(PathSyntaxError) as info:
        engine.add_filter(filter_def("g", filter="@.a =="))
    assert info.value.expression == "@.a =="
    assert [f["id"] for f in engine.filter_definitions()] == ["f"]


# --------------------------------------------------------------------------------------------
# Array flattening (spec §5.6): @ is the element, $ is the root
# --------------------------------------------------------------------------------------------

IMPRESSIONS = {
    "event_name": "Impressions",
    "ts": 1721491167001,
    "user_id": "user123456",
    "device": {"type": "web"},
    "impressions": [
        {"item_id": "abc123", "duration_ms": 4744, "detail_clicks": 1},
        {"item_id": "xyz456", "duration_ms": 5500, "detail_clicks": 10},
        {"item_id": "zzz555", "duration_ms": 1199, "detail_clicks": 4},
    ],
}


def impressions_engine(filter: str = "$.event_name == 'Impressions' && @.duration_ms>500") -> Any:
    """The spec §5.6 example: flatten ``@.impressions``, group by item and device type."""
    return make_engine(
        ingest_def(path="@.ts", fmt="UNIX_MILLISECONDS"),
        [
            filter_def(
                filter=filter,
                groupings=["@.item_id", ("$.device.type", "Device")],
                flatten="@.impressions",
                aggregations=[
                    agg_def(1, ("COUNT", "SUM", "MAX"), "@.detail_clicks"),
                    agg_def(2, ("SUM",), "@.duration_ms", sub_filter="@.duration_ms > 2000"),
                    agg_def(3, ("APPROX_COUNT_DISTINCT",), "$.user_id"),
                ],
            )
        ],
    )


def test_flattening_spec_example() -> None:
    """Each impression is an event: ``@`` is the element, ``$`` the root (spec §5.6)."""
    engine = impressions_engine()
    stats = engine.ingest(dumps([IMPRESSIONS]))
    assert stats.events == 1 and stats.accepted == 1
    assert stats.per_filter["f"]["flattened_elements"] == 3
    assert stats.per_filter["f"]["matched"] == 3
    got = rows(engine)
    assert {r["dt"] for r in got} == {"2024-07-20T15:59:00Z"}
    assert {r["groupings"]["@.item_id"]: r["value"] for r in got} == {
        "abc123": 1.0,
        "xyz456": 1.0,
        "zzz555": 1.0,
    }
    assert {r["groupings"]["Device"] for r in got} == {"web"}
    assert by_group(rows(engine, "SUM"), "@.item_id") == {"abc123": 1, "xyz456": 10, "zzz555": 4}
    assert by_group(rows(engine, "SUM", aggregation_id=2), "@.item_id") == {
        "abc123": 4744,
        "xyz456": 5500,
    }
    assert by_group(rows(engine, "APPROX_COUNT_DISTINCT", aggregation_id=3), "@.item_id") == {
        "abc123": 1,
        "xyz456": 1,
        "zzz555": 1,
    }


@pytest.mark.parametrize(
    ("expression", "items"),
    [
        ("@.duration_ms > 5000", {"xyz456"}),
        ("$.event_name == 'Impressions'", {"abc123", "xyz456", "zzz555"}),
        ("@.event_name == 'Impressions'", set()),
        ("$.duration_ms > 0", set()),
        ("$.device.type == 'web' && @.detail_clicks >= 4", {"xyz456", "zzz555"}),
        ("@.impressions", set()),
        ("$.impressions.length == 3", {"abc123", "xyz456", "zzz555"}),
    ],
)
def test_flattening_dollar_versus_at(expression: str, items: set[str]) -> None:
    """Under flattening ``@`` reads the element and ``$`` reads the root event."""
    engine = impressions_engine(expression)
    engine.ingest(dumps([IMPRESSIONS]))
    assert {r["groupings"]["@.item_id"] for r in rows(engine)} == items


def test_flattening_skips_non_arrays_and_non_object_elements() -> None:
    """A missing or non-array flatten property and non-object elements are counted, not
    events."""
    engine = impressions_engine("")
    events = [
        IMPRESSIONS,
        {"ts": 1721491167001, "impressions": {"item_id": "object"}},
        {"ts": 1721491167001},
        {"ts": 1721491167001, "impressions": [1, None, "x", {"item_id": "ok"}, []]},
        {"ts": 1721491167001, "impressions": []},
    ]
    stats = engine.ingest(dumps(events))
    assert stats.accepted == 5
    pf = stats.per_filter["f"]
    assert pf["flattened_elements"] == 4
    assert pf["matched"] == 4
    assert pf["dropped"].get("flatten_not_array") == 2
    assert sum(pf["dropped"].values()) == 2 + 4
    assert {r["groupings"]["@.item_id"] for r in rows(engine)} == {
        "abc123",
        "xyz456",
        "zzz555",
        "ok",
    }


def test_dollar_without_flattening_is_the_event() -> None:
    """Without flattening ``$`` and ``@`` both name the event."""
    engine = make_engine(
        ingest_def(), [filter_def(filter="$.a == 1 && @.a == 1", groupings=["$.b", "@.b"])]
    )
    engine.ingest(b'[{"a":1,"b":"x"},{"a":2,"b":"y"}]')
    assert rows(engine) == [
        {"dt": "2024-05-14T12:00:00Z", "groupings": {"$.b": "x", "@.b": "x"}, "value": 1.0}
    ]
