"""Hostile input (issue §8, semantics.md §2): deep nesting, huge strings and numbers, invalid
UTF-8, duplicate keys, a BOM, huge arrays and pathological JPath give a clear error or a
documented result, never a crash, a hang or unbounded memory."""

from __future__ import annotations

import time
from typing import Any

import pytest

from eventtally import JsonError, PathSyntaxError
from tests.support import (
    agg_def,
    by_group,
    dumps,
    filter_def,
    ingest_def,
    make_engine,
    rows,
    single_value,
    snapshot,
)

DEEP = 100_000
MAX_DEPTH = 512
OBJ = "OBJECT_WITH_ARRAY_PROPERTY"


def hostile_engine(schema: str = "ARRAY_OF_EVENTS", ts: str | None = None) -> Any:
    """An engine that extracts ``@.g`` (grouping), ``@.v`` (field), ``@.f`` (filter) and, with
    ``ts``, a timestamp path, so hostile members are both skipped and extracted."""
    return make_engine(
        ingest_def(schema, path=ts, fmt="AUTO", array_path="@.events" if schema == OBJ else None),
        [
            filter_def(
                filter="!(@.f) || @.f != 'x'",
                groupings=["@.g"],
                aggregations=[agg_def(1, ("COUNT", "SUM", "APPROX_COUNT_DISTINCT"), "@.v")],
            )
        ],
    )


def timed_ingest(engine: Any, body: bytes | str, limit: float = 10.0) -> Any:
    """Ingest and fail when it takes longer than ``limit`` seconds (a hang check, not a
    benchmark)."""
    start = time.perf_counter()
    try:
        return engine.ingest(body)
    finally:
        assert time.perf_counter() - start < limit


# --------------------------------------------------------------------------------------------
# Nesting 100,000 levels deep
# --------------------------------------------------------------------------------------------

NESTING = [
    ("array in a skipped member", b'[{"x":' + b"[" * DEEP + b"]" * DEEP + b"}]"),
    ("object in a skipped member", b'[{"x":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}]"),
    ("array in the grouping member", b'[{"g":' + b"[" * DEEP + b"]" * DEEP + b"}]"),
    ("array in the field member", b'[{"v":' + b"[" * DEEP + b"]" * DEEP + b"}]"),
    ("object in the filter member", b'[{"f":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}]"),
    ("array in the timestamp member", b'[{"t":' + b"[" * DEEP + b"]" * DEEP + b"}]"),
    (
        "on the path to an extracted member",
        b'[{"g":' + b'{"g":' * DEEP + b"1" + b"}" * DEEP + b"}]",
    ),
    ("top-level arrays", b"[" * DEEP + b"]" * DEEP),
    ("unterminated", b'[{"x":' + b"[" * DEEP),
    (
        "mixed arrays and objects",
        b'[{"x":' + b'[{"a":' * (DEEP // 2) + b"1" + b"}]" * (DEEP // 2) + b"}]",
    ),
    ("after a valid event", b'[{"g":1},{"x":' + b"[" * DEEP + b"]" * DEEP + b"}]"),
]


def level_index(body: bytes, level: int) -> int:
    """Index of the bracket that opens nesting level ``level`` (the body's outermost container
    is level 1), skipping string contents."""
    depth, in_string, escaped = 0, False, False
    for i, byte in enumerate(body):
        c = chr(byte)
        if in_string:
            escaped = not escaped and c == "\\"
            in_string = escaped or c != '"'
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth == level:
                return i
        elif c in "]}":
            depth -= 1
    raise AssertionError(f"the body never reaches level {level}")


@pytest.mark.parametrize("body", [c[1] for c in NESTING], ids=[c[0] for c in NESTING])
def test_deep_nesting_is_a_json_error(body: bytes) -> None:
    """Nesting 100,000 levels deep, skipped or extracted, is a JsonError at the bracket that
    exceeds the limit (within a level or two), and the engine is unchanged and still usable."""
    engine = hostile_engine(ts="@.t")
    engine.ingest(b'[{"g":"before","v":1}]')
    before = snapshot(engine)
    start = time.perf_counter()
    with pytest.raises(JsonError) as info:
        engine.ingest(body)
    assert time.perf_counter() - start < 10
    lo = level_index(body, MAX_DEPTH + 1)
    hi = level_index(body, MAX_DEPTH + 3)
    assert lo <= info.value.offset <= hi + 1, (lo, info.value.offset, hi)
    assert info.value.reason
    assert snapshot(engine) == before
    engine.ingest(b'[{"g":"after","v":2}]')
    assert by_group(rows(engine), "@.g") == {"before": 1, "after": 1}


@pytest.mark.parametrize(
    ("schema", "prefix", "suffix"),
    [
        ("SINGLE_OBJECT", b'{"x":', b"}"),
        ("NEWLINE_DELIMITED", b'{"a":1}\n{"x":', b"}\n"),
        (OBJ, b'{"events":[{"x":', b"}]}"),
    ],
)
def test_deep_nesting_in_every_schema(schema: str, prefix: bytes, suffix: bytes) -> None:
    """Every schema rejects 100,000-deep nesting with a JsonError."""
    engine = hostile_engine(schema)
    with pytest.raises(JsonError):
        engine.ingest(prefix + b"[" * DEEP + b"]" * DEEP + suffix)
    assert all(v == [] for v in snapshot(engine).values())


LIMIT_CONFIGS = [
    pytest.param([filter_def()], id="no paths read"),
    pytest.param([], id="no filters"),
    pytest.param([filter_def(groupings=["@.g"])], id="grouping on another member"),
    pytest.param([filter_def(groupings=["@.x"])], id="grouping on the deep member"),
    pytest.param(
        [filter_def(aggregations=[agg_def(1, ("APPROX_COUNT_DISTINCT",), "@.x")])],
        id="field on the deep member",
    ),
    pytest.param([filter_def(filter="@.x")], id="filter on the deep member"),
]


@pytest.mark.parametrize("filters", LIMIT_CONFIGS)
def test_nesting_limit_is_512_levels(filters: list[dict[str, Any]]) -> None:
    """An event nested exactly 512 levels deep is accepted; 513 levels is a JsonError at the
    bracket opening level 513, whatever the filters read."""
    engine = make_engine(ingest_def("SINGLE_OBJECT"), filters)
    prefix = b'{"x":'
    inner = MAX_DEPTH - 1  # the event object is level 1
    ok = prefix + b"[" * inner + b"]" * inner + b"}"
    assert engine.ingest(ok).accepted == 1
    too_deep = prefix + b"[" * (inner + 1) + b"]" * (inner + 1) + b"}"
    with pytest.raises(JsonError) as info:
        engine.ingest(too_deep)
    assert info.value.offset == level_index(too_deep, MAX_DEPTH + 1)


def test_deep_grouping_value_is_kept_as_compact_json() -> None:
    """A grouping value nested 500 levels deep comes back as its compact JSON text."""
    engine = hostile_engine()
    value = "[" * 500 + "1" + "]" * 500
    engine.ingest('[{"g":' + " ".join(value) + "}]")
    (row,) = rows(engine)
    assert row["groupings"]["@.g"] == value


@pytest.mark.parametrize(
    ("schema", "prefix", "suffix"),
    [("ARRAY_OF_EVENTS", b'[{"x":', b"}]"), (OBJ, b'{"events":[{"x":', b"}]}")],
)
def test_depth_limit_counts_the_whole_document(schema: str, prefix: bytes, suffix: bytes) -> None:
    """A body whose containers nest 513 levels deep (counting the batch array) is a JsonError."""
    engine = hostile_engine(schema)
    levels = prefix.count(b"[") + prefix.count(b"{")
    extra = MAX_DEPTH + 1 - levels
    with pytest.raises(JsonError):
        engine.ingest(prefix + b"[" * extra + b"]" * extra + suffix)


# --------------------------------------------------------------------------------------------
# Huge strings and numbers
# --------------------------------------------------------------------------------------------

MB = 1 << 20


@pytest.mark.parametrize("member", ["x", "g", "v", "f", "t"])
def test_one_megabyte_strings(member: str) -> None:
    """A 1 MB string, skipped or extracted, is read whole and fast."""
    engine = hostile_engine(ts="@.t")
    big = "é" * (MB // 2) + "🙂" + "x" * 1000
    stats = timed_ingest(
        engine, dumps([{member: big, "g": "small"} if member != "g" else {"g": big}])
    )
    assert stats.accepted == (0 if member == "f" and big == "x" else 1)
    if member == "g":
        (row,) = rows(engine)
        assert row["groupings"]["@.g"] == big
    if member == "v":
        assert single_value(engine, "APPROX_COUNT_DISTINCT") == 1
        assert single_value(engine, "SUM") is None
    if member == "t":
        assert stats.timestamp_fallback == 1


def test_one_megabyte_string_of_escapes() -> None:
    """A 1 MB string of escapes decodes to the right text."""
    engine = hostile_engine()
    body = b'[{"g":"' + b'\\u00e9\\n\\"' * (MB // 14) + b'"}]'
    timed_ingest(engine, body)
    (row,) = rows(engine)
    assert row["groupings"]["@.g"] == 'é\n"' * (MB // 14)


def test_one_megabyte_key_and_path() -> None:
    """A 1 MB member name is accepted, and a long quoted name in a path matches it."""
    name = "k" * MB
    engine = make_engine(ingest_def(), [filter_def(groupings=["@['" + "k" * 1000 + "']"])])
    stats = timed_ingest(engine, dumps([{name: 1, "k" * 1000: "short"}]))
    assert stats.accepted == 1
    assert by_group(rows(engine), "@['" + "k" * 1000 + "']") == {"short": 1}


@pytest.mark.parametrize(
    ("raw", "group"),
    [
        ("1e999", "1e999"),
        ("-1e999", "-1e999"),
        ("1E+999", "1E+999"),
        ("1e400", "1e400"),
        ("9" * 400, "9" * 400),
        ("-" + "9" * 100_000, "-" + "9" * 100_000),
        ("0." + "1" * 100_000, "0.1111111111111111"),
        ("1e-999", "0"),
    ],
    ids=[
        "1e999",
        "-1e999",
        "1E+999",
        "1e400",
        "400 digits",
        "100k digits",
        "100k fraction",
        "1e-999",
    ],
)
def test_huge_numbers(raw: str, group: str) -> None:
    """Numbers beyond float range parse; they are skipped by numeric aggregations, group as
    their raw text, and count as distinct values."""
    engine = hostile_engine()
    timed_ingest(engine, '[{"g":' + raw + ',"v":' + raw + '},{"g":' + raw + ',"v":2}]')
    assert by_group(rows(engine), "@.g") == {group: 2}
    finite = raw.startswith("0.") or raw == "1e-999"
    total = single_value(engine, "SUM")
    if finite:
        assert total == pytest.approx(float(raw) + 2)
    else:
        assert total == 2
    assert single_value(engine, "APPROX_COUNT_DISTINCT") == 2


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("@.v > 0", False), ("@.v < 0", False), ("@.v == '1e999'", True), ("@.v", True)],
)
def test_1e999_in_comparisons(expression: str, expected: bool) -> None:
    """``1e999`` is not finite: numeric comparisons are false; its string form is its text."""
    engine = make_engine(ingest_def("SINGLE_OBJECT"), [filter_def(filter=expression)])
    assert engine.ingest(b'{"v":1e999}').per_filter["f"]["matched"] == int(expected)


def test_1e999_timestamp_falls_back() -> None:
    """A ``1e999`` timestamp is invalid: the event falls back to the ingest time."""
    engine = make_engine(ingest_def(path="@.t", fmt="UNIX_SECONDS"), [filter_def()])
    stats = engine.ingest(b'[{"t":1e999},{"t":"1e999"},{"t":-1e999}]')
    assert (stats.accepted, stats.timestamp_fallback) == (3, 3)


def test_1e999_literal_in_a_filter_is_a_syntax_error() -> None:
    """A JPath numeric literal out of float range is a PathSyntaxError."""
    with pytest.raises(PathSyntaxError) as info:
        make_engine(ingest_def(), [filter_def(filter="@.v > 1e999")])
    assert info.value.position == 6


# --------------------------------------------------------------------------------------------
# Invalid UTF-8
# --------------------------------------------------------------------------------------------

INVALID_UTF8 = [
    # (schema, body, byte offset of the first invalid byte)
    ("ARRAY_OF_EVENTS", b'[{"x":"ab\xff"}]', 9),
    ("ARRAY_OF_EVENTS", b'[{"g":"ab\xff"}]', 9),
    ("ARRAY_OF_EVENTS", b'[{"\xc3(":1}]', 3),
    ("ARRAY_OF_EVENTS", b'[{"g":"\xc0\xaf"}]', 7),
    ("ARRAY_OF_EVENTS", b'[{"g":"\xe0\x80\xaf"}]', 7),
    ("ARRAY_OF_EVENTS", b'[{"g":"\xed\xa0\x80"}]', 7),
    ("ARRAY_OF_EVENTS", b'[{"g":"\xf0\x9f\x99"}]', 7),
    ("ARRAY_OF_EVENTS", b'[{"g":"\xf4\x90\x80\x80"}]', 7),
    ("ARRAY_OF_EVENTS", b'[{"g":"\xf8\x88\x80\x80\x80"}]', 7),
    ("ARRAY_OF_EVENTS", b'[{"g":"\x80"}]', 7),
    ("ARRAY_OF_EVENTS", b'[{"g":"ok \xc3\xa9 \xe2\x82"}]', 13),
    ("ARRAY_OF_EVENTS", b'[{"g":1}\xff]', 8),
    ("ARRAY_OF_EVENTS", b'[{"g":1},{"x":["a","b\xfe"]}]', 21),
    ("ARRAY_OF_EVENTS", b'[{"g":"\xc3', 7),
    ("SINGLE_OBJECT", b'{"g":"\xff"}', 6),
    ("NEWLINE_DELIMITED", b'{"g":"a"}\n{"g":"\xff"}\n', 16),
    (OBJ, b'{"events":[],"x":"\xff"}', 18),
]


@pytest.mark.parametrize(("schema", "body", "offset"), INVALID_UTF8)
def test_invalid_utf8_is_a_json_error_at_its_offset(schema: str, body: bytes, offset: int) -> None:
    """Invalid UTF-8 anywhere (strings, keys, between values, skipped members) is a JsonError
    at the offset of the first invalid byte."""
    engine = hostile_engine(schema)
    with pytest.raises(JsonError) as info:
        engine.ingest(body)
    assert info.value.offset == offset
    assert info.value.reason
    with pytest.raises(UnicodeDecodeError) as py:
        body.decode("utf-8")
    assert py.value.start == offset


def test_str_with_lone_surrogate_is_a_json_error() -> None:
    """A ``str`` that is not valid Unicode (lone surrogate) is a JsonError, like invalid
    UTF-8."""
    with pytest.raises(JsonError):
        hostile_engine().ingest('[{"g":"\ud800"}]')


def test_escaped_lone_surrogate_is_accepted() -> None:
    """An escaped lone surrogate (``\\ud800``) is valid JSON syntax and is accepted."""
    engine = hostile_engine()
    assert engine.ingest(b'[{"g":"\\ud800x"}]').accepted == 1
    assert len(rows(engine)) == 1


def test_raw_control_characters_are_json_errors() -> None:
    """Raw control characters (NUL, newline) inside strings are JsonErrors at their offset."""
    engine = hostile_engine()
    for body, offset in ((b'[{"g":"a\x00b"}]', 8), (b'[{"g":"a\nb"}]', 8)):
        with pytest.raises(JsonError) as info:
            engine.ingest(body)
        assert info.value.offset == offset


# --------------------------------------------------------------------------------------------
# Duplicate keys, BOM, huge arrays
# --------------------------------------------------------------------------------------------

DUPLICATES = [
    pytest.param(b'[{"g":"first","g":"second"}]', "@.g", "second", id="grouping"),
    pytest.param(b'[{"a":{"g":1,"g":2}}]', "@.a.g", "2", id="nested"),
    pytest.param(b'[{"g":{"x":1},"g":"scalar"}]', "@.g", "scalar", id="object then scalar"),
    pytest.param(b'[{"g":"scalar","g":{"x":1}}]', "@.g", '{"x":1}', id="scalar then object"),
    pytest.param(b'[{"g":1,"g":2,"g":3}]', "@.g", "3", id="three times"),
    pytest.param(b'[{"g":"x","g":null}]', "@.g", "", id="null last"),
    pytest.param(b'[{"a":{"g":"new"},"a":{"g":"old"}}]', "@.a.g", "old", id="parent, both"),
    pytest.param(b'[{"a":{"g":"old"},"a":{"h":1}}]', "@.a.g", "", id="parent duplicated"),
    pytest.param(b'[{"a":{"g":"old"},"a":5}]', "@.a.g", "", id="parent replaced by scalar"),
    pytest.param(b'[{"a":{"g":"old"},"a":null}]', "@.a.g", "", id="parent replaced by null"),
    pytest.param(b'[{"a":["old"],"a":[]}]', "@.a[0]", "", id="array parent replaced"),
    pytest.param(b'[{"a":{"b":{"g":"old"}},"a":{"b":{}}}]', "@.a.b.g", "", id="grandparent"),
]


@pytest.mark.parametrize(("body", "path", "expected"), DUPLICATES)
def test_duplicate_keys_last_wins(body: bytes, path: str, expected: str) -> None:
    """Duplicate keys: the last occurrence wins, as in JavaScript's JSON.parse."""
    engine = make_engine(ingest_def(), [filter_def(groupings=[path])])
    engine.ingest(body)
    assert by_group(rows(engine), path) == {expected: 1}


def test_duplicate_parent_key_in_a_filter() -> None:
    """A filter sees only the last duplicate of a parent object."""
    engine = make_engine(ingest_def(), [filter_def(filter="@.a.g")])
    assert engine.ingest(b'[{"a":{"g":1},"a":{}}]').per_filter["f"]["matched"] == 0


def test_duplicate_keys_in_filter_field_and_timestamp() -> None:
    """The last duplicate decides filters, aggregated fields and timestamps too."""
    engine = make_engine(
        ingest_def(path="@.t"),
        [filter_def(filter="@.f == 'yes'", aggregations=[agg_def(1, ("SUM",), "@.v")])],
    )
    engine.ingest(
        b'[{"f":"no","f":"yes","v":100,"v":1,"t":"2001-01-01T00:00:00Z","t":"2024-05-14T09:21:44Z"},'
        b'{"f":"yes","f":"no","v":1000}]'
    )
    assert rows(engine, "SUM") == [{"dt": "2024-05-14T09:21:00Z", "groupings": None, "value": 1.0}]


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("ARRAY_OF_EVENTS", b'\xef\xbb\xbf[{"g":"bom"}]'),
        ("NEWLINE_DELIMITED", b'\xef\xbb\xbf{"g":"bom"}\n'),
        ("SINGLE_OBJECT", b'\xef\xbb\xbf{"g":"bom"}'),
        (OBJ, b'\xef\xbb\xbf{"events":[{"g":"bom"}]}'),
        ("ARRAY_OF_EVENTS", '\ufeff[{"g":"bom"}]'),
    ],
)
def test_leading_bom_is_skipped(schema: str, body: bytes | str) -> None:
    """A leading UTF-8 BOM (bytes or str) is skipped in every schema."""
    engine = hostile_engine(schema)
    assert engine.ingest(body).accepted == 1
    assert by_group(rows(engine), "@.g") == {"bom": 1}


def test_bom_not_at_the_start_is_an_error() -> None:
    """A BOM anywhere but the start is not whitespace: JsonError at its offset."""
    engine = hostile_engine()
    with pytest.raises(JsonError) as info:
        engine.ingest(b'[{"g":1}]\xef\xbb\xbf')
    assert info.value.offset == 9


def test_bom_inside_a_string_is_content() -> None:
    """U+FEFF inside a string is ordinary content."""
    engine = hostile_engine()
    engine.ingest(b'[{"g":"\xef\xbb\xbfx"}]')
    assert by_group(rows(engine), "@.g") == {"\ufeffx": 1}


def test_million_nulls() -> None:
    """A million nulls are counted as not_object, quickly, with no rows."""
    engine = hostile_engine()
    stats = timed_ingest(engine, b"[" + b",".join([b"null"] * 1_000_000) + b"]")
    assert (stats.events, stats.accepted, stats.dropped) == (
        1_000_000,
        0,
        {"not_object": 1_000_000},
    )
    assert rows(engine) == []


def test_million_empty_objects() -> None:
    """A million empty objects are a million events in one cell."""
    engine = hostile_engine()
    stats = timed_ingest(engine, b"[" + b",".join([b"{}"] * 1_000_000) + b"]")
    assert stats.accepted == 1_000_000
    assert rows(engine)[0]["value"] == 1_000_000


def test_object_with_200k_members() -> None:
    """An event with 200,000 members is read; the last member is still found."""
    engine = hostile_engine()
    body = "[{" + ",".join(f'"k{i}":{i}' for i in range(200_000)) + ',"g":"last"}]'
    timed_ingest(engine, body)
    assert by_group(rows(engine), "@.g") == {"last": 1}


def test_many_distinct_groups() -> None:
    """100,000 distinct grouping values in one batch become 100,000 rows."""
    engine = hostile_engine()
    timed_ingest(engine, dumps([{"g": i} for i in range(100_000)]))
    assert len(rows(engine)) == 100_000
    assert engine.state_bytes() > 0


def test_huge_array_in_one_event_is_skipped_or_flattened() -> None:
    """An event holding an array of 500,000 elements is handled, flattened or not."""
    engine = make_engine(
        ingest_def(),
        [filter_def("plain"), filter_def("flat", flatten="@.items", groupings=["@.k"])],
    )
    items = b",".join(b'{"k":%d}' % (i % 3) for i in range(500_000))
    stats = timed_ingest(engine, b'[{"items":[' + items + b"]}]")
    assert stats.per_filter["flat"]["flattened_elements"] == 500_000
    assert rows(engine, filter_id="plain")[0]["value"] == 1
    assert sum(r["value"] for r in rows(engine, filter_id="flat")) == 500_000


# --------------------------------------------------------------------------------------------
# Pathological JPath
# --------------------------------------------------------------------------------------------

JPATH_BOMBS = [
    ("1,000 parentheses", "(" * 1000 + "@.a" + ")" * 1000),
    ("100,000 parentheses", "(" * 100_000 + "@.a" + ")" * 100_000),
    ("100,000 negations", "!" * 100_000 + "@.a"),
    ("100,000 unclosed parentheses", "(" * 100_000),
    ("nested negated parentheses", "!(" * 50_000 + "@.a" + ")" * 50_000),
    ("100,000 brackets in a list", "@.x in " + "[" * 100_000),
    ("100,000 brackets in a path", "@" + "[" * 100_000),
    ("a megabyte of &&", " && ".join(["@.a"] * 200_000)),
    ("a megabyte-long string literal", "@.a == '" + "x" * MB + "'"),
]


@pytest.mark.parametrize("expression", [c[1] for c in JPATH_BOMBS], ids=[c[0] for c in JPATH_BOMBS])
def test_pathological_jpath_is_a_syntax_error(expression: str) -> None:
    """Deeply nested or huge JPath expressions are PathSyntaxErrors, quickly, not crashes."""
    start = time.perf_counter()
    with pytest.raises(PathSyntaxError) as info:
        make_engine(ingest_def(), [filter_def(filter=expression)])
    assert time.perf_counter() - start < 10
    assert 0 <= info.value.position <= len(expression)
    assert info.value.field == "filters[0].filter"


def test_256_nested_parentheses_compile() -> None:
    """Reasonable nesting (256 parentheses) still compiles and evaluates."""
    expression = "(" * 256 + "@.a" + ")" * 256
    engine = make_engine(ingest_def(), [filter_def(filter=expression)])
    assert engine.ingest(b'[{"a":1},{}]').per_filter["f"]["matched"] == 1


@pytest.mark.parametrize(
    "expression",
    ["@.v =~ /(a+)+$/", "@.v =~ /(a|aa)+b/", "@.v =~ /(.*a){20}/", "@.v =~ /^(a?){30}a{30}$/"],
)
def test_catastrophic_regexes_run_in_linear_time(expression: str) -> None:
    """Regexes that backtrack exponentially elsewhere run in linear time (RE2 semantics)."""
    engine = make_engine(ingest_def(), [filter_def(filter=expression)])
    body = dumps([{"v": "a" * 30_000 + "!"}, {"v": "a" * 30}])
    timed_ingest(engine, body, limit=5.0)


def test_regex_too_big_is_a_syntax_error() -> None:
    """A regex whose compiled program would be enormous is a PathSyntaxError, not an OOM."""
    with pytest.raises(PathSyntaxError):
        make_engine(ingest_def(), [filter_def(filter="@.v =~ /((((a{100}){100}){100}){100})/")])
