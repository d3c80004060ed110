"""The core's direct answer writer (``Engine.answer_json``) produces byte for byte the text the
server sent before it existed: ``json.dumps(json.loads(core_json), separators=(",", ":"),
ensure_ascii=False)`` over the ``results``/``results_multi``/``groupings`` rows, which stay on
the old ``serde_json`` path and serve as the oracle here.

Covered: every calculation, rollups, ``$__agg`` collapses, Top/Bottom limits, grouping value
filters, time windows, incomplete intervals, empty answers, filters without groupings, values
like 1e16, 1e-7, -0.0, huge numbers, and grouping values with quotes, backslashes, control and
non-ASCII characters; chunking; the row and byte caps; deep nesting; bodies that are not strict
JSON.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import eventtally
from tests.support import ALL_CALCS, agg_def, dumps, filter_def, ingest_def, make_engine, query

START_MS = 1715590800000  # 2024-05-13T09:00:00Z
GROUP_VALUES = [
    "plain",
    "",
    'quo"te',
    "back\\slash",
    "new\nline\ttab\r\b\f",
    "ctl\x00\x01\x1f\x7f",
    "é日本\u2028\u2029😀",
    "/slash",
    "zz",
]
VALUES: list[Any] = [
    0,
    1,
    -1,
    0.5,
    -0.0,
    1e16,
    1.5e16,
    1e-7,
    1e-5,
    0.0001,
    123.456,
    1 / 3,
    2**53 + 2,
    12345678901234567890,
    1e300,
    -1e300,
    1.7976931348623157e308,
    5e-324,
    "7.25",
    "not a number",
]


def make() -> eventtally.Engine:
    calcs = ALL_CALCS
    filters = [
        filter_def(
            "f",
            groupings=["@.g", ("@.h", "alias"), "@.n"],
            aggregations=[agg_def(1, calcs, field="@.v"), agg_def(2, ("COUNT",))],
        ),
        filter_def("plain", aggregations=[agg_def(1, calcs, field="@.v")]),
    ]
    engine = make_engine(ingest_def(path="@.ts", fmt="UNIX_MILLISECONDS"), filters)
    rng = random.Random(16)
    events = []
    for _ in range(3000):
        events.append(
            {
                "ts": START_MS + rng.randrange(0, 180) * 60_000 + rng.randrange(0, 60_000),
                "v": rng.choice(VALUES),
                "g": rng.choice(GROUP_VALUES),
                "h": rng.choice(["x", "y", 'a"b']),
                "n": rng.choice([1, 2.0, 1e16, -0.0, True, None]),
            }
        )
    engine.ingest(dumps(events))
    return engine


@pytest.fixture(scope="module")
def engine() -> eventtally.Engine:
    return make()


def old_text(rows: Any) -> bytes:
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def new_text(engine: eventtally.Engine, kind: str, body: Any, **kw: Any) -> bytes:
    chunks = engine.answer_json(kind, json.dumps(body).encode(), **kw)
    assert chunks is not None
    return b"".join(chunks)


def shapes() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for calc in ALL_CALCS:
        p = {"percentile": 0.9} if calc == "PERCENTILES" else {}
        base = query(calc, **p)
        out += [
            base,
            {**base, "recalculatedInterval": {"type": "MINUTE", "frequency": 7}},
            {**base, "recalculatedInterval": {"type": "HOUR", "frequency": 1}},
            {**base, "groupingFilters": [{"grouping": "@.g", "filters": ["$__agg"]}]},
            {
                **base,
                "groupingFilters": [
                    {"grouping": "@.g", "filters": ["$__agg"]},
                    {"grouping": "alias", "returnGroupingValues": False},
                    {"grouping": "@.n", "filters": ["$__agg"]},
                ],
            },
            {**base, "limit": 3},
            {**base, "limit": 2, "limitType": "Bottom"},
            {
                **base,
                "limit": 1,
                "recalculatedInterval": {"type": "MINUTE", "frequency": 30},
                "groupingFilters": [{"grouping": "@.h", "filters": ["$__agg"]}],
            },
            {**base, "groupingFilters": [{"grouping": "@.g", "filters": GROUP_VALUES[2:5]}]},
            {**base, "excludeEmptyGroupings": True},
            {**base, "startTime": "2024-05-13T10:00:00Z", "endTime": "2024-05-13T10:30:00Z"},
            {**base, "startTime": "2030-01-01T00:00:00Z"},  # empty
            {**base, "filterId": "plain"},
            {**base, "filterId": "plain", "recalculatedInterval": {"type": "DAY", "frequency": 1}},
            {**base, "includeIncompleteIntervals": False},
        ]
    return out


@pytest.mark.parametrize("q", shapes(), ids=lambda q: json.dumps(q, sort_keys=True)[:90])
def test_rows_answer_is_the_old_text(engine: eventtally.Engine, q: dict[str, Any]) -> None:
    """The plain answer (spec 7.2) equals the old text byte for byte."""
    assert new_text(engine, "results", q) == old_text(engine.results(q))


def test_multi_answer_is_the_old_text(engine: eventtally.Engine) -> None:
    """Compact multi answers (spec 7.3), with and without query ids, equal the old text."""
    qs = shapes()
    for group in (qs[:1], qs[:4], qs[5:40:3], qs[40:], [{**q, "queryId": 'é"x'} for q in qs[:3]]):
        assert new_text(engine, "multi", group) == old_text(engine.results_multi(group))
    one = qs[3]
    assert new_text(engine, "multi", one) == old_text(engine.results_multi([one]))


@pytest.mark.parametrize("name", ["@.g", "alias", "@.h", "@.n"])
def test_groupings_answer_is_the_old_text(engine: eventtally.Engine, name: str) -> None:
    """The groupings answer (spec 7.4) equals the old text, narrowed or not."""
    for q in (
        {"filterId": "f", "groupingName": name},
        {"filterId": "f", "groupingName": name, "aggregationId": 0, "calculation": ""},
        {"filterId": "f", "groupingName": name, "startTime": "2030-01-01T00:00:00Z"},
        {
            "filterId": "f",
            "groupingName": name,
            "groupingFilters": [{"grouping": "@.h", "filters": ["x"]}],
        },
    ):
        assert new_text(engine, "groupings", q) == old_text(engine.groupings(q))


def test_random_floats_print_as_python_repr() -> None:
    """Sums of random floats of every magnitude print as Python's repr prints them."""
    rng = random.Random(7)
    engine = make_engine(
        ingest_def(path="@.ts", fmt="UNIX_MILLISECONDS"),
        [
            filter_def(
                "f", groupings=["@.g"], aggregations=[agg_def(1, ("SUM", "AVG"), field="@.v")]
            )
        ],
    )
    events = [
        {
            "ts": START_MS + i * 60_000,
            "g": str(i % 3),
            "v": rng.choice([-1, 1]) * rng.random() * 10.0 ** rng.randrange(-30, 30),
        }
        for i in range(4000)
    ]
    engine.ingest(dumps(events))
    for calc in ("SUM", "AVG"):
        q = query(calc)
        assert new_text(engine, "results", q) == old_text(engine.results(q))
        rows = json.loads(new_text(engine, "results", q))
        assert {r["value"] for r in rows} == {r["value"] for r in engine.results(q)}


def test_chunks_join_to_the_whole_answer(engine: eventtally.Engine) -> None:
    """Small chunks are cut between rows and join to the single-chunk text."""
    q = query("SUM")
    whole = engine.answer_json("results", json.dumps(q).encode())
    small = engine.answer_json("results", json.dumps(q).encode(), chunk_bytes=1000)
    assert whole is not None and small is not None
    assert len(whole) == 1 and len(small) > 10
    assert all(0 < len(c) < 1000 + 500 for c in small)
    assert b"".join(small) == whole[0]


def test_caps_refuse_with_advice(engine: eventtally.Engine) -> None:
    """Past max_rows or max_bytes the answer is refused with advice; at the cap it is given."""
    q = json.dumps(query("COUNT")).encode()
    full = engine.answer_json("results", q)
    assert full is not None
    n = len(json.loads(b"".join(full)))
    size = len(b"".join(full))
    assert engine.answer_json("results", q, max_rows=n, max_bytes=size) == full
    with pytest.raises(eventtally.LimitError, match="max_answer_rows") as err:
        engine.answer_json("results", q, max_rows=n - 1)
    assert "recalculatedInterval" in str(err.value) and '"limit"' in str(err.value)
    with pytest.raises(eventtally.LimitError, match="max_answer_bytes"):
        engine.answer_json("results", q, max_bytes=size - 1)
    two = json.dumps([query("COUNT"), query("COUNT")]).encode()
    with pytest.raises(eventtally.LimitError, match=f"{2 * n} rows"):
        engine.answer_json("multi", two, max_rows=2 * n - 1)


def test_bodies_not_strict_json_or_misshapen_are_left_to_the_caller(
    engine: eventtally.Engine,
) -> None:
    """``None`` for bodies the strict parser refuses or of the wrong shape."""
    for body in (b"", b"{", b'{"a": NaN}', b"\xef\xbb\xbf{}", "{}".encode("utf-16"), b"[1]"):
        assert engine.answer_json("results", body) is None, body
    assert engine.answer_json("results", b"[{}]") is None
    assert engine.answer_json("groupings", b"[]") is None
    assert engine.answer_json("multi", b"[{}, 1]") is None
    assert engine.answer_json("multi", b"3") is None


def test_deep_nesting_is_a_json_error(engine: eventtally.Engine) -> None:
    """A body nested past the core's limit raises JsonError, even as the wrong shape."""
    for body in (b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        with pytest.raises(eventtally.JsonError, match="nested deeper than 128"):
            engine.answer_json("results", body)


def test_query_errors_match_the_old_path(engine: eventtally.Engine) -> None:
    """Invalid queries raise the same exception and message as ``results``."""
    bad = [
        query("NOPE"),
        query("PERCENTILES"),
        {**query(), "filterId": "missing"},
        {**query(), "limit": -1},
        {**query(), "recalculatedInterval": {"type": "MINUTE", "frequency": "x"}},
    ]
    for q in bad:
        with pytest.raises(eventtally.EventtallyError) as old:
            engine.results(q)
        with pytest.raises(type(old.value)) as new:
            engine.answer_json("results", json.dumps(q).encode())
        assert str(new.value) == str(old.value)
    with pytest.raises(eventtally.QueryError) as err:
        engine.answer_json("multi", json.dumps([query(), query("NOPE")]).encode())
    with pytest.raises(eventtally.QueryError) as old_multi:
        engine.results_multi([query(), query("NOPE")])
    assert str(err.value) == str(old_multi.value)
