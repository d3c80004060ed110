"""Aggregations (spec 5.5, semantics.md §6-7): COUNT/SUM/AVG/MIN/MAX, numeric strings
(decision 6), sub-filters, APPROX_COUNT_DISTINCT, PERCENTILES, grouping strings (decision 9) and
aliases as result keys."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from eventtally import QueryError
from tests.support import (
    FIXED_NOW_DT,
    agg_def,
    by_group,
    dumps,
    filter_def,
    ingest_def,
    make_engine,
    query,
    rows,
    single_value,
    value_distribution,
)

ALL = ("COUNT", "SUM", "MIN", "MAX", "AVG", "APPROX_COUNT_DISTINCT", "PERCENTILES")


def all_calcs_engine(field: str = "@.num", sub_filter: str | None = None, **kw: Any) -> Any:
    """One filter, one aggregation computing every calculation of ``field``."""
    return make_engine(
        ingest_def(),
        [filter_def(aggregations=[agg_def(1, ALL, field, sub_filter)], **kw)],
    )


def values_of(engine: Any, p: float = 0.5) -> dict[str, float | None]:
    """``{calculation: value of the single row or None}``."""
    out: dict[str, float | None] = {}
    for calc in ALL:
        out[calc] = single_value(engine, calc, percentile=p if calc == "PERCENTILES" else None)
    return out


def test_spec_example_apples() -> None:
    """Spec 5.5: ``@.num`` over [2, 4, 0, "apples"] gives Sum 6, Avg 2, Count 4."""
    engine = all_calcs_engine()
    engine.ingest(b'[{"num":2},{"num":4},{"num":0},{"num":"apples"}]')
    got = values_of(engine)
    assert got["SUM"] == 6
    assert got["AVG"] == 2
    assert got["COUNT"] == 4
    assert got["MIN"] == 0
    assert got["MAX"] == 4
    assert got["APPROX_COUNT_DISTINCT"] == 4


NUMERIC = [
    # (JSON values of @.num, COUNT, SUM, MIN, MAX, AVG)
    ("integers", "[1,2,3]", 3, 6, 1, 3, 2),
    ("negative and fractional", "[-1.5,0.25,-3]", 3, -4.25, -3, 0.25, -4.25 / 3),
    ("numeric strings (decision 6)", '["19.99","-3","1e3","0"]', 4, 1016.99, -3, 1000, 1016.99 / 4),
    ("mixed numbers and strings", '[1,"2",3.0,"4.5"]', 4, 10.5, 1, 4.5, 10.5 / 4),
    ("booleans skipped", "[true,false,2]", 3, 2, 2, 2, 2),
    ("null skipped", "[null,5]", 2, 5, 5, 5, 5),
    ("containers skipped", '[[1],{"a":1},"[1]",7]', 4, 7, 7, 7, 7),
    (
        "non-numeric strings skipped",
        '["abc",""," 1","1 ","0x1","1e","+1","000123","NaN","Infinity","-",3]',
        12,
        3,
        3,
        3,
        3,
    ),
    ("non-finite numbers skipped", '[1e999,-1e999,"1e999",2]', 4, 2, 2, 2, 2),
    ("negative zero", '[-0,"-0",-0.0]', 3, 0, 0, 0, 0),
    (
        "large integers",
        "[9007199254740993,1]",
        2,
        9007199254740994.0,
        1,
        9007199254740993.0,
        4503599627370497.0,
    ),
    ("tiny values", "[1e-300,2e-300]", 2, 3e-300, 1e-300, 2e-300, 1.5e-300),
    ("escaped numeric strings", '["\\u0031\\u0030","1\\u002e5"]', 2, 11.5, 1.5, 10, 5.75),
]


@pytest.mark.parametrize(
    ("values", "count", "total", "low", "high", "mean"),
    [c[1:] for c in NUMERIC],
    ids=[c[0] for c in NUMERIC],
)
def test_numeric_calculations(
    values: str, count: int, total: float, low: float, high: float, mean: float
) -> None:
    """SUM/AVG/MIN/MAX take finite numbers and exact numeric strings; COUNT counts events."""
    engine = all_calcs_engine()
    elements = values[1:-1]
    body = events_with(_split_json_list(elements))
    engine.ingest(body)
    got = values_of(engine)
    assert got["COUNT"] == count
    assert got["SUM"] == pytest.approx(total, rel=1e-12, abs=1e-310)
    assert got["MIN"] == low
    assert got["MAX"] == high
    assert got["AVG"] == pytest.approx(mean, rel=1e-12, abs=1e-310)
    assert got["PERCENTILES"] is not None


def events_with(raw_values: list[str], member: str = "num") -> str:
    """A JSON array of events whose ``member`` holds each raw JSON text (``__missing__``: an
    event without the member)."""
    parts = ["{}" if v == "__missing__" else '{"' + member + '":' + v + "}" for v in raw_values]
    return "[" + ",".join(parts) + "]"


def _split_json_list(text: str) -> list[str]:
    """Top-level elements of a JSON list body, as raw text (keeps ``1e999`` and ``-0`` raw)."""
    out, depth, start, in_str, esc = [], 0, 0, False, False
    for i, c in enumerate(text):
        if in_str:
            esc = not esc and c == "\\"
            in_str = esc or c != '"'
            continue
        if c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [e for e in out if e.strip()]


@pytest.mark.parametrize(
    "values",
    ['["apples","pears"]', "[null,null]", "[true]", '[{},{"num":1}]', "[]"],
    ids=["strings", "nulls", "boolean", "objects", "missing"],
)
def test_cell_without_numbers_has_no_numeric_rows(values: str) -> None:
    """A cell with no numeric value has no SUM/AVG/MIN/MAX/PERCENTILES row; COUNT and
    APPROX_COUNT_DISTINCT rows still exist."""
    engine = all_calcs_engine()
    elements = _split_json_list(values[1:-1]) or ["__missing__"]
    body = events_with(elements)
    engine.ingest(body)
    got = values_of(engine)
    assert got["COUNT"] == len(elements)
    assert got["APPROX_COUNT_DISTINCT"] is not None
    for calc in ("SUM", "AVG", "MIN", "MAX", "PERCENTILES"):
        assert got[calc] is None, calc


def test_rows_exist_per_cell_independently() -> None:
    """In one bucket, groups with numbers get SUM rows and groups without do not."""
    engine = make_engine(
        ingest_def(), [filter_def(groupings=["@.g"], aggregations=[agg_def(1, ALL, "@.v")])]
    )
    engine.ingest(b'[{"g":"a","v":1},{"g":"b","v":"x"},{"g":"b"},{"g":"c","v":"2"}]')
    assert by_group(rows(engine), "@.g") == {"a": 1, "b": 2, "c": 1}
    assert by_group(rows(engine, "SUM"), "@.g") == {"a": 1, "c": 2}
    assert by_group(rows(engine, "APPROX_COUNT_DISTINCT"), "@.g") == {"a": 1, "b": 1, "c": 1}


# --------------------------------------------------------------------------------------------
# Filters and sub-filters
# --------------------------------------------------------------------------------------------


def test_sub_filters_apply_per_aggregation() -> None:
    """Each aggregation applies its own sub-filter on top of the filter (spec 5.3)."""
    engine = make_engine(
        ingest_def(),
        [
            filter_def(
                filter="@.eventName == 'AppOpen'",
                aggregations=[
                    agg_def(1, ("APPROX_COUNT_DISTINCT",), "@.userId"),
                    agg_def(
                        2,
                        ("SUM", "MAX", "MIN", "AVG", "COUNT"),
                        "@.notificationCount",
                        "@.notificationCount > 0",
                    ),
                    agg_def(3, ("COUNT",)),
                    agg_def(4, ("COUNT",), sub_filter="!(@.notificationCount)"),
                ],
            )
        ],
    )
    events = [
        {"eventName": "AppOpen", "userId": "u1", "notificationCount": 3},
        {"eventName": "AppOpen", "userId": "u1", "notificationCount": 0},
        {"eventName": "AppOpen", "userId": "u2", "notificationCount": "5"},
        {"eventName": "AppOpen", "userId": "u3"},
        {"eventName": "AppClose", "userId": "u4", "notificationCount": 100},
    ]
    stats = engine.ingest(dumps(events))
    assert stats.per_filter["f"]["matched"] == 4
    assert single_value(engine, "APPROX_COUNT_DISTINCT", aggregation_id=1) == 3
    assert single_value(engine, "SUM", aggregation_id=2) == 8
    assert single_value(engine, "MIN", aggregation_id=2) == 3
    assert single_value(engine, "MAX", aggregation_id=2) == 5
    assert single_value(engine, "AVG", aggregation_id=2) == 4
    assert single_value(engine, "COUNT", aggregation_id=2) == 2
    assert single_value(engine, "COUNT", aggregation_id=3) == 4
    assert single_value(engine, "COUNT", aggregation_id=4) == 1


def test_sub_filter_matching_nothing_gives_no_rows() -> None:
    """An aggregation whose sub-filter matches nothing has no rows, not zero rows."""
    engine = all_calcs_engine(sub_filter="@.num > 100")
    engine.ingest(b'[{"num":1},{"num":2}]')
    assert all(v is None for v in values_of(engine).values())


def test_filters_are_independent() -> None:
    """Several filters see the same batch and keep separate state."""
    engine = make_engine(
        ingest_def(),
        [
            filter_def("tracks", filter="@.type == 'track'"),
            filter_def("pages", filter="@.type == 'page'"),
            filter_def("all"),
        ],
    )
    stats = engine.ingest(b'[{"type":"track"},{"type":"track"},{"type":"page"},{}]')
    assert {k: v["matched"] for k, v in stats.per_filter.items()} == {
        "tracks": 2,
        "pages": 1,
        "all": 4,
    }
    assert single_value(engine, filter_id="tracks") == 2
    assert single_value(engine, filter_id="pages") == 1
    assert single_value(engine, filter_id="all") == 4


# --------------------------------------------------------------------------------------------
# APPROX_COUNT_DISTINCT
# --------------------------------------------------------------------------------------------

DISTINCT = [
    ("strings", '["a","b","a","c"]', 3),
    ("number 1 and string '1' differ", '[1,"1"]', 2),
    ("1 and 1.0 are the same number", "[1,1.0,1e0,10e-1]", 1),
    ("true and 'true' differ", '[true,"true",false,"false"]', 4),
    ("null and missing not counted", '[null,"null",""]', 2),
    ("objects by compact JSON", '[{"a":1},{ "a" : 1 },{"a":2},"{\\"a\\":1}"]', 3),
    ("arrays by compact JSON", '[[1,2],[ 1 , 2 ],[2,1],"[1,2]"]', 3),
    ("unicode", '["é","e\\u0301","é","🙂"]', 3),
    ("empty string is a value", '["",""]', 1),
]


@pytest.mark.parametrize(
    ("values", "expected"), [c[1:] for c in DISTINCT], ids=[c[0] for c in DISTINCT]
)
def test_distinct_identity(values: str, expected: int) -> None:
    """Distinct values are identified by type and string form; null and missing don't count."""
    engine = all_calcs_engine()
    body = events_with([*_split_json_list(values[1:-1]), "__missing__"])
    engine.ingest(body)
    assert single_value(engine, "APPROX_COUNT_DISTINCT") == expected


@pytest.mark.parametrize("n", [1, 2, 10, 100, 1000, 2047, 2048])
def test_distinct_is_exact_for_small_groups(n: int) -> None:
    """Up to 2,048 distinct values per cell the count is exact, duplicates included."""
    engine = all_calcs_engine(field="@.u")
    events = [{"u": f"user-{i % n}"} for i in range(2 * n)]
    engine.ingest(dumps(events))
    assert single_value(engine, "APPROX_COUNT_DISTINCT") == n


@pytest.mark.parametrize("n", [2049, 5000, 10_000, 30_000, 100_000])
def test_distinct_error_at_most_two_percent(n: int) -> None:
    """Beyond the exact range the estimate is within 2 %, next to tiny groups that stay exact."""
    engine = make_engine(
        ingest_def(),
        [
            filter_def(
                groupings=["@.g"], aggregations=[agg_def(1, ("APPROX_COUNT_DISTINCT",), "@.u")]
            )
        ],
    )
    rng = random.Random(n)
    big = [{"g": "big", "u": f"{rng.getrandbits(64):016x}-{i}"} for i in range(n)]
    tiny = [{"g": "tiny", "u": i % 7} for i in range(50)]
    for start in range(0, n, 20_000):
        engine.ingest(dumps(big[start : start + 20_000] + tiny))
    got = by_group(rows(engine, "APPROX_COUNT_DISTINCT"), "@.g")
    assert got["tiny"] == 7
    assert abs(got["big"] - n) <= 0.02 * n, got["big"]


def test_distinct_merges_across_batches() -> None:
    """Distinct counting across batches equals counting the union once."""
    engine = all_calcs_engine(field="@.u")
    for start in range(0, 3000, 500):
        engine.ingest(dumps([{"u": i % 2500} for i in range(start, start + 1000)]))
    one = all_calcs_engine(field="@.u")
    one.ingest(dumps([{"u": i % 2500} for i in range(3500)]))
    assert single_value(engine, "APPROX_COUNT_DISTINCT") == single_value(
        one, "APPROX_COUNT_DISTINCT"
    )


# --------------------------------------------------------------------------------------------
# PERCENTILES
# --------------------------------------------------------------------------------------------

P_GRID = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)


def outside_rank_window(ordered: list[float], value: float, p: float) -> float:
    """How far ``value`` lies outside the ±1 % rank window of ``p`` (0 inside it): the values at
    ranks ``h - 0.01 n`` and ``h + 0.01 n`` (``h = p (n - 1)``), widened by the sketch's 0.5 %."""
    n = len(ordered)
    h = p * (n - 1)
    lo = ordered[max(0, math.floor(h - 0.01 * n))]
    hi = ordered[min(n - 1, math.ceil(h + 0.01 * n))]
    lo -= abs(lo) * 0.005
    hi += abs(hi) * 0.005
    if value < lo:
        return lo - value
    return max(0.0, value - hi)


DISTRIBUTIONS = ["uniform", "latency ms", "revenue", "normal around zero", "exponential"]


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_percentile_rank_error_at_most_one_percent(name: str) -> None:
    """PERCENTILES of a large cell is within 1 % of numpy's PERCENTILE_CONT at any p in (0, 1)
    and never outside the ±1 % rank window."""
    rng = random.Random(name)
    data = value_distribution(name, rng, 20_000)
    engine = all_calcs_engine(field="@.v", interval=("DAY", 1))
    for start in range(0, len(data), 5000):
        engine.ingest(dumps([{"v": v} for v in data[start : start + 5000]]))
    ordered = sorted(data)
    for p in P_GRID:
        value = single_value(engine, "PERCENTILES", percentile=p)
        assert value is not None
        assert outside_rank_window(ordered, value, p) <= 1e-9 * abs(value), (p, value)
        exact = float(np.quantile(ordered, p))
        assert value == pytest.approx(exact, rel=0.01, abs=1e-9), (p, value, exact)
    assert single_value(engine, "PERCENTILES", percentile=1.0) == max(data)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5.0], {0.01: 5.0, 0.5: 5.0, 1.0: 5.0}),
        ([1.0, 2.0, 3.0, 4.0, 5.0], {0.01: 1.04, 0.25: 2.0, 0.5: 3.0, 0.99: 4.96, 1.0: 5.0}),
        ([0.0, 0.0, 10.0], {0.5: 0.0, 0.75: 5.0, 1.0: 10.0}),
        ([-10.0, -1.0, 0.0, 1.0, 10.0], {0.01: -9.64, 0.5: 0.0, 0.75: 1.0, 1.0: 10.0}),
        ([7.0] * 100, {0.01: 7.0, 0.5: 7.0, 0.99: 7.0}),
    ],
    ids=["one value", "five values", "zeros", "negatives", "constant"],
)
def test_small_percentiles_interpolate_like_numpy(
    values: list[float], expected: dict[float, float]
) -> None:
    """A small cell answers PERCENTILE_CONT exactly: bit for bit ``numpy.quantile``; ``p = 1``
    is the maximum."""
    engine = all_calcs_engine(field="@.v")
    engine.ingest(dumps([{"v": v} for v in values]))
    for p, want in expected.items():
        got = single_value(engine, "PERCENTILES", percentile=p)
        assert got == float(np.quantile(values, p)), (p, got)
        assert got == pytest.approx(want, abs=1e-12), (p, got, want)


def test_percentile_chosen_at_read_time() -> None:
    """The same state answers any p in (0, 1]; p outside that range is a QueryError."""
    engine = all_calcs_engine(field="@.v")
    engine.ingest(dumps([{"v": i} for i in range(1, 1001)]))
    answers = [single_value(engine, "PERCENTILES", percentile=p) for p in (0.1, 0.5, 0.9, 1.0)]
    assert answers == sorted(answers)
    assert answers[-1] == 1000
    for bad in (0, -0.5, 1.5, None):
        with pytest.raises(QueryError):
            engine.results(query("PERCENTILES", percentile=bad))


def test_percentiles_use_numeric_values_only() -> None:
    """PERCENTILES skips non-numeric values and reads numeric strings (decision 6)."""
    engine = all_calcs_engine(field="@.v")
    engine.ingest(b'[{"v":"100"},{"v":"x"},{"v":true},{"v":null},{},{"v":200}]')
    assert single_value(engine, "PERCENTILES", percentile=0.01) == 101.0  # 100 + 0.01 * 100
    assert single_value(engine, "PERCENTILES", percentile=1) == 200


# --------------------------------------------------------------------------------------------
# Grouping values (decision 9) and result keys
# --------------------------------------------------------------------------------------------

GROUPING_STRINGS = [
    ('"text"', "text"),
    ('""', ""),
    ('"é 🙂"', "é 🙂"),
    ('"\\u00e9\\n"', "é\n"),
    ("42", "42"),
    ("-7", "-7"),
    ("0", "0"),
    ("-0", "0"),
    ("1.0", "1"),
    ("100.0", "100"),
    ("1E2", "100"),
    ("1.5", "1.5"),
    ("0.1", "0.1"),
    ("-1.25e-10", "-1.25e-10"),
    ("1e-7", "1e-7"),
    ("0.000001", "0.000001"),
    ("1.5e21", "1.5e+21"),
    ("1e21", "1e+21"),
    ("1e20", "100000000000000000000"),
    ("123456789012345678901234567890.0", "1.2345678901234568e+29"),
    ("9007199254740993", "9007199254740993"),
    ("12345678901234567890", "12345678901234567890"),
    ("1e999", "1e999"),
    ("true", "true"),
    ("false", "false"),
    ("null", ""),
    ("{}", "{}"),
    ("[]", "[]"),
    ('{ "b" : [1, 2] , "a":"x y" }', '{"b":[1,2],"a":"x y"}'),
    ('[ 1 , "two" , null , { } ]', '[1,"two",null,{}]'),
    ('{"k":"\\u00e9\\"q"}', '{"k":"\\u00e9\\"q"}'),
    ('{"b":1,"a":2}', '{"b":1,"a":2}'),
    ("[1.50, 1e2]", "[1.50,1e2]"),
]


@pytest.mark.parametrize(("raw", "expected"), GROUPING_STRINGS)
def test_grouping_strings(raw: str, expected: str) -> None:
    """Decision 9: strings as-is, integers without a point, other numbers in shortest form,
    booleans, null → "", objects and arrays as compact JSON (content unchanged)."""
    engine = make_engine(ingest_def(), [filter_def(groupings=["@.g"])])
    engine.ingest(events_with([raw], "g"))
    assert rows(engine) == [{"dt": FIXED_NOW_DT, "groupings": {"@.g": expected}, "value": 1.0}]


def test_missing_and_null_group_together_as_empty_string() -> None:
    """A missing member, null and the empty string all give the grouping value ""."""
    engine = make_engine(ingest_def(), [filter_def(groupings=["@.g", "@.h"])])
    engine.ingest(b'[{"g":null},{},{"g":""},{"g":"x","h":null}]')
    assert {tuple(r["groupings"][k] for k in ("@.g", "@.h")): r["value"] for r in rows(engine)} == {
        ("", ""): 3.0,
        ("x", ""): 1.0,
    }


def test_aliases_are_result_keys() -> None:
    """A grouping's alias is its result key; without an alias the JPath is the key."""
    engine = make_engine(
        ingest_def(),
        [
            filter_def(
                groupings=[
                    ("@.device.type", "Device Type"),
                    ("@.app.version", None),
                    ("@['country code']", "Country 🌍"),
                ]
            )
        ],
    )
    engine.ingest(b'[{"device":{"type":"ios"},"app":{"version":"1.0"},"country code":"FR"}]')
    assert rows(engine) == [
        {
            "dt": FIXED_NOW_DT,
            "groupings": {"Device Type": "ios", "@.app.version": "1.0", "Country 🌍": "FR"},
            "value": 1.0,
        }
    ]


def test_legacy_groupings_list_is_keyed_by_path() -> None:
    """The legacy ``groupings`` list (no ``groupingItems``) groups by each path, keyed by it."""
    defn = filter_def()
    del defn["groupingItems"]
    defn["groupings"] = ["@.a", "@.b"]
    engine = make_engine(ingest_def(), [defn])
    engine.ingest(b'[{"a":1,"b":"x"},{"a":1,"b":"x"},{"a":2}]')
    assert {(r["groupings"]["@.a"], r["groupings"]["@.b"]): r["value"] for r in rows(engine)} == {
        ("1", "x"): 2.0,
        ("2", ""): 1.0,
    }


def test_no_groupings_gives_null_groupings() -> None:
    """A filter without groupings answers rows whose ``groupings`` is null."""
    engine = make_engine()
    engine.ingest(b"[{},{}]")
    assert rows(engine) == [{"dt": FIXED_NOW_DT, "groupings": None, "value": 2.0}]


def test_rows_sorted_by_bucket_then_grouping() -> None:
    """Rows are sorted by bucket start, then by grouping values."""
    engine = make_engine(
        ingest_def(path="@.t"), [filter_def(groupings=["@.g"], interval=("MINUTE", 1))]
    )
    engine.ingest(
        b'[{"t":"2024-05-14T09:22:00Z","g":"b"},{"t":"2024-05-14T09:21:00Z","g":"c"},'
        b'{"t":"2024-05-14T09:22:00Z","g":"a"},{"t":"2024-05-14T09:21:00Z","g":"a"}]'
    )
    assert [(r["dt"][11:16], r["groupings"]["@.g"]) for r in rows(engine)] == [
        ("09:21", "a"),
        ("09:21", "c"),
        ("09:22", "a"),
        ("09:22", "b"),
    ]


def test_results_arrays_match_results() -> None:
    """``results_arrays`` holds the same rows as ``results`` (dt, groupings, values)."""
    engine = make_engine(
        ingest_def(path="@.t"),
        [filter_def(groupings=[("@.g", "G")], aggregations=[agg_def(1, ("SUM",), "@.v")])],
    )
    engine.ingest(
        b'[{"t":"2024-05-14T09:21:00Z","g":"a","v":1},{"t":"2024-05-14T09:22:00Z","g":"b","v":2},'
        b'{"t":"2024-05-14T09:22:00Z","g":"a","v":"3.5"}]'
    )
    plain = rows(engine, "SUM")
    arrays = engine.results_arrays(query("SUM"))
    assert len(arrays) == len(plain) == 3
    assert [str(d) + "Z" for d in arrays.dt.astype("datetime64[s]")] == [r["dt"] for r in plain]
    assert list(arrays.groupings["G"]) == [r["groupings"]["G"] for r in plain]
    assert list(arrays.values) == [r["value"] for r in plain]
