"""Metrics API queries (spec 7.2-7.4, 7.7; decisions 2 and 3) through the in-process engine.

Every plain query goes through both ``Engine.results`` and ``Engine.results_arrays`` and the two
must give the same rows (``answer``). Three kinds of tables:

- hand-computed tables over a tiny data set (``TINY``), with literal expected rows;
- every option and combination against the exact pure-Python reference
  (``tests/reference.py``'s ``ReferenceEngine``, the one oracle) over a generated data set,
  for every calculation (PERCENTILES as PERCENTILE_CONT, to the
  sketch's 0.5 % accuracy in cells of more than 100 values);
- exactness: collapsing a grouping or rolling up must give EXACTLY what a filter defined at that
  granularity computes from the raw events (COUNT/SUM/MIN/MAX/AVG, and the distinct and
  percentile sketches, decision 8).

The compact ``?multi=true`` rows are decoded by ``decode_multi``, a line-by-line transcription of
the Grafana plugin's ``queryMulti`` (``pkg/plugin/datasource.go``, spec 7.3).
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from eventtally import Engine, EventtallyError, NotFoundError, QueryError
from tests import strict_decoder
from tests.reference import ReferenceEngine
from tests.support import Clock

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
T0_MS = T0 * 1000
MINUTE_MS = 60_000
ALL_CALCS = ["COUNT", "SUM", "MIN", "MAX", "AVG", "APPROX_COUNT_DISTINCT", "PERCENTILES"]
DDSKETCH_REL = 0.005 + 1e-12  # the sketch is within 0.5 %, exactly 0.5 % at bin edges

INGEST = {
    "id": "ing",
    "name": "test",
    "schema": "NEWLINE_DELIMITED",
    "timestamp": {"source": "PROPERTY", "path": "@.ts", "format": "UNIX_SECONDS"},
}

Row = dict[str, Any]
Query = dict[str, Any]


def filter_def(
    fid: str,
    groupings: Iterable[tuple[str, str | None]] = (("@.device", "Device"), ("@.country", None)),
    interval: tuple[str, int] = ("MINUTE", 1),
    field: str = "@.v",
) -> dict[str, Any]:
    """A spec 5.7 filter: aggregation 1 has every calculation on ``field``, 2 is COUNT only."""
    return {
        "id": fid,
        "name": f"filter {fid}",
        "filter": None,
        "groupingItems": [{"grouping": g, "alias": a} for g, a in groupings],
        "intervalType": interval[0],
        "intervalCount": interval[1],
        "aggregations": [
            {
                "id": 1,
                "name": "v",
                "calculations": ALL_CALCS,
                "calculationField": field,
                "subFilter": None,
            },
            {
                "id": 2,
                "name": "n",
                "calculations": ["COUNT"],
                "calculationField": None,
                "subFilter": None,
            },
        ],
    }


def ndjson(events: Iterable[dict[str, Any]]) -> str:
    """Events as one NDJSON batch."""
    return "\n".join(json.dumps(e) for e in events)


def iso(ms: int) -> str:
    """RFC 3339 UTC as the engine writes it (semantics 4): milliseconds only when non-zero."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def parse_rfc3339(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 timestamp as Go's time package reads it."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return round(dt.timestamp() * 1000)


def arrays_rows(engine: Engine, query: Query) -> list[Row]:
    """``results_arrays`` converted to plain rows, checking the column types on the way."""
    arr = engine.results_arrays(query)
    assert arr.dt.dtype == np.dtype("datetime64[ms]")
    assert arr.values.dtype == np.float64
    assert arr.codes.dtype == np.uint32
    n = len(arr)
    assert arr.dt.shape == arr.values.shape == arr.codes.shape == (n,)
    for col in arr.groupings.values():
        # Object columns share the distinct value strings (no per-row string, no padding).
        assert col.dtype == np.dtype(object) and col.shape == (n,)
        assert all(type(v) is str for v in col)
    ms = arr.dt.astype("int64")
    return [
        {
            "dt": iso(int(ms[i])),
            "groupings": {k: str(v[i]) for k, v in arr.groupings.items()},
            "value": float(arr.values[i]),
        }
        for i in range(n)
    ]


def normalised(rows: list[Row]) -> list[Row]:
    """Rows with ``groupings: null`` (ungrouped filter) written as ``{}``, as arrays give it."""
    return [{**r, "groupings": r["groupings"] or {}} for r in rows]


def answer(engine: Engine, query: Query) -> list[Row]:
    """The rows of ``results``, after checking ``results_arrays`` gives the same answer."""
    rows = engine.results(query)
    assert normalised(rows) == arrays_rows(engine, query)
    return rows


def row(when: str, value: float, groupings: dict[str, str] | None) -> Row:
    """An expected row; ``when`` is ``HH:MM`` on 2024-01-01 or a full RFC 3339 time."""
    dt = when if "T" in when else f"2024-01-01T{when}:00Z"
    return {"dt": dt, "groupings": groupings, "value": float(value)}


def dc(device: str, country: str) -> dict[str, str]:
    """Groupings of filter ``f``: the aliased device and the un-aliased country."""
    return {"Device": device, "@.country": country}


def rows_of(
    table: list[tuple[Any, ...]], keys: tuple[str, ...] = ("Device", "@.country")
) -> list[Row]:
    """Expected rows from ``(when, *grouping values, value)`` tuples."""
    return [row(t[0], t[-1], dict(zip(keys, t[1:-1], strict=True))) for t in table]


# =============================================================================================
# The tiny data set: (seconds after T0, device or None, country or None, value or None)

TINY: list[tuple[int, str | None, str | None, Any]] = [
    (10, "ios", "US", 1),
    (20, "ios", "US", 3),
    (30, "android", "US", 10),
    (40, "ios", "DE", 5),
    (50, None, "US", 7),
    (70, "ios", "US", 2),
    (80, "android", "DE", 4),
    (90, "android", "DE", "apples"),
    (100, "web", None, 9),
    (130, "web", "US", 6),
    (3670, "ios", "US", 8),
]


def tiny_event(t: int, device: str | None, country: str | None, v: Any) -> dict[str, Any]:
    """One event of TINY as JSON data (absent members are left out)."""
    event: dict[str, Any] = {"ts": T0 + t, "v": v}
    if device is not None:
        event["device"] = device
    if country is not None:
        event["country"] = country
    return event


TINY_FILTERS = [
    filter_def("f"),
    filter_def("g", groupings=()),
    filter_def("fd", groupings=(("@.device", "Device"),)),
    filter_def("fh", interval=("HOUR", 1)),
    filter_def("fdh", groupings=(("@.device", "Device"),), interval=("HOUR", 1)),
]


def tiny_engine(clock: Callable[[], float] | None = None) -> Engine:
    """An engine holding TINY in every filter of TINY_FILTERS."""
    engine = Engine(INGEST, TINY_FILTERS, clock=clock or Clock(T0 + 86_400))
    engine.ingest(ndjson(tiny_event(*e) for e in TINY))
    return engine


@pytest.fixture(scope="module")
def tiny() -> Engine:
    return tiny_engine()


def q(
    filter_id: str = "f", aggregation_id: int = 2, calculation: str = "COUNT", **extra: Any
) -> Query:
    """A Metrics API request (spec 7.2) with the given extra fields."""
    return {
        "filterId": filter_id,
        "aggregationId": aggregation_id,
        "calculation": calculation,
        **extra,
    }


# COUNT per (minute, device, country) of TINY, in the engine's order (dt, then grouping tuple)
TINY_COUNT = [
    ("00:00", "", "US", 1),
    ("00:00", "android", "US", 1),
    ("00:00", "ios", "DE", 1),
    ("00:00", "ios", "US", 2),
    ("00:01", "android", "DE", 2),
    ("00:01", "ios", "US", 1),
    ("00:01", "web", "", 1),
    ("00:02", "web", "US", 1),
    ("01:01", "ios", "US", 1),
]
# SUM per (minute, device, country)
TINY_SUM = [
    ("00:00", "", "US", 7),
    ("00:00", "android", "US", 10),
    ("00:00", "ios", "DE", 5),
    ("00:00", "ios", "US", 4),
    ("00:01", "android", "DE", 4),
    ("00:01", "ios", "US", 2),
    ("00:01", "web", "", 9),
    ("00:02", "web", "US", 6),
    ("01:01", "ios", "US", 8),
]


def test_plain_count_rows(tiny: Engine) -> None:
    """A query with no options returns every cell, sorted by dt then grouping tuple."""
    assert answer(tiny, q()) == rows_of(TINY_COUNT)


def test_ungrouped_filter_has_null_groupings(tiny: Engine) -> None:
    """Rows of a filter without groupings carry ``groupings: null`` (spec 7.2 response)."""
    got = answer(tiny, q("g"))
    assert got == [
        row("00:00", 5, None),
        row("00:01", 4, None),
        row("00:02", 1, None),
        row("01:01", 1, None),
    ]


def test_non_numeric_values_skip_numeric_rows(tiny: Engine) -> None:
    """COUNT counts ``"apples"``, SUM/AVG skip it; distinct counts it (semantics 6)."""
    where = {
        "groupingFilters": [
            {"grouping": "@.device", "filters": ["android"], "returnGroupingValues": True}
        ],
        "startTime": "2024-01-01T00:01:00Z",
        "endTime": "2024-01-01T00:02:00Z",
    }
    expect = {"COUNT": 2, "SUM": 4, "AVG": 4, "MIN": 4, "MAX": 4, "APPROX_COUNT_DISTINCT": 2}
    for calc, value in expect.items():
        got = answer(tiny, q(aggregation_id=1, calculation=calc, **where))
        assert got == [row("00:01", value, dc("android", "DE"))], calc


# ---------------------------------------------------------------- time window (decision 3)

ALL_MINUTES = ["00:00", "00:01", "00:02", "01:01"]
TINY_TOTALS = {"00:00": 5, "00:01": 4, "00:02": 1, "01:01": 1}

WINDOW_CASES: list[tuple[str, dict[str, str], list[str]]] = [
    ("none", {}, ALL_MINUTES),
    ("start-at-bucket-start", {"startTime": "2024-01-01T00:01:00Z"}, ALL_MINUTES[1:]),
    ("start-inside-bucket-excludes-it", {"startTime": "2024-01-01T00:00:30Z"}, ALL_MINUTES[1:]),
    ("start-at-first-bucket", {"startTime": "2024-01-01T00:00:00Z"}, ALL_MINUTES),
    ("end-exclusive", {"endTime": "2024-01-01T00:02:00Z"}, ALL_MINUTES[:2]),
    ("end-1ms-after-start", {"endTime": "2024-01-01T00:01:00.001Z"}, ALL_MINUTES[:2]),
    ("end-sub-ms-floored", {"endTime": "2024-01-01T00:01:00.0009Z"}, ALL_MINUTES[:1]),
    ("end-7-digits-floored", {"endTime": "2024-01-01T00:01:00.0000001Z"}, ALL_MINUTES[:1]),
    ("start-7-digits-just-before", {"startTime": "2024-01-01T00:00:59.9999999Z"}, ALL_MINUTES[1:]),
    ("start-dotnet-7-digits", {"startTime": "2024-01-01T00:01:00.1234567Z"}, ALL_MINUTES[2:]),
    ("start-fraction-half", {"startTime": "2024-01-01T00:01:00.5Z"}, ALL_MINUTES[2:]),
    ("no-offset-is-utc", {"startTime": "2024-01-01T00:01:00"}, ALL_MINUTES[1:]),
    ("no-offset-7-digits", {"startTime": "2024-01-01T00:01:00.0000000"}, ALL_MINUTES[1:]),
    ("offset-plus", {"startTime": "2024-01-01T01:01:00+01:00"}, ALL_MINUTES[1:]),
    ("offset-minus", {"startTime": "2023-12-31T19:01:00-05:00"}, ALL_MINUTES[1:]),
    ("offset-zero", {"startTime": "2024-01-01T00:01:00+00:00"}, ALL_MINUTES[1:]),
    ("offset-compact", {"startTime": "2024-01-01T01:01:00+0100"}, ALL_MINUTES[1:]),
    ("offset-with-fraction", {"startTime": "2024-01-01T01:01:00.1234567+01:00"}, ALL_MINUTES[2:]),
    ("lowercase-t-z", {"startTime": "2024-01-01t00:01:00z"}, ALL_MINUTES[1:]),
    ("date-only-start", {"startTime": "2024-01-01"}, ALL_MINUTES),
    ("date-only-end", {"endTime": "2024-01-01"}, []),
    (
        "start-equals-end",
        {"startTime": "2024-01-01T00:01:00Z", "endTime": "2024-01-01T00:01:00Z"},
        [],
    ),
    (
        "one-bucket",
        {"startTime": "2024-01-01T01:01:00Z", "endTime": "2024-01-01T01:02:00Z"},
        ["01:01"],
    ),
    (
        "grafana-range",
        {"startTime": "2024-01-01T00:00:00Z", "endTime": "2024-01-01T01:00:00Z"},
        ALL_MINUTES[:3],
    ),
    ("before-data", {"startTime": "2023-01-01T00:00:00Z", "endTime": "2023-06-01T00:00:00Z"}, []),
    ("null-times", {"startTime": None, "endTime": None}, ALL_MINUTES),
]


@pytest.mark.parametrize(
    ("window", "minutes"), [(c[1], c[2]) for c in WINDOW_CASES], ids=[c[0] for c in WINDOW_CASES]
)
def test_window_is_half_open_over_bucket_starts(
    tiny: Engine, window: dict[str, str], minutes: list[str]
) -> None:
    """startTime <= bucket start < endTime; RFC 3339 with or without offset, 0-9 digits."""
    assert answer(tiny, q("g", **window)) == [row(m, TINY_TOTALS[m], None) for m in minutes]


@pytest.mark.parametrize("digits", range(8))
@pytest.mark.parametrize("bound", ["startTime", "endTime"])
def test_zero_to_seven_fraction_digits(tiny: Engine, digits: int, bound: str) -> None:
    """``00:01:00``, ``00:01:00.0`` ... ``00:01:00.0000000`` all mean the same instant."""
    text = "2024-01-01T00:01:00" + ("." + "0" * digits if digits else "") + "Z"
    expected = ALL_MINUTES[1:] if bound == "startTime" else ALL_MINUTES[:1]
    assert answer(tiny, q("g", **{bound: text})) == [row(m, TINY_TOTALS[m], None) for m in expected]


# ---------------------------------------------------------------- groupingFilters (spec 7.2)


def gf(grouping: str, filters: list[str] | None, ret: bool = True) -> dict[str, Any]:
    """One list-shape grouping filter item as the Grafana plugin sends it."""
    return {"grouping": grouping, "filters": filters, "returnGroupingValues": ret}


DEVICE = ("Device",)
COUNTRY = ("@.country",)
TINY_COUNT_BY_DEVICE = [
    ("00:00", "", 1),
    ("00:00", "android", 1),
    ("00:00", "ios", 3),
    ("00:01", "android", 2),
    ("00:01", "ios", 1),
    ("00:01", "web", 1),
    ("00:02", "web", 1),
    ("01:01", "ios", 1),
]
IOS_ONLY = [r for r in TINY_COUNT if r[1] == "ios"]

GROUPING_CASES: list[tuple[str, Any, list[Row]]] = [
    ("null", None, rows_of(TINY_COUNT)),
    ("empty-list", [], rows_of(TINY_COUNT)),
    ("empty-map", {}, rows_of(TINY_COUNT)),
    ("include-explicit", [gf("@.device", None), gf("@.country", [])], rows_of(TINY_COUNT)),
    ("filter-list-shape", [gf("@.device", ["ios"])], rows_of(IOS_ONLY)),
    ("filter-legacy-map-shape", {"@.device": ["ios"]}, rows_of(IOS_ONLY)),
    ("filter-by-alias", [gf("Device", ["ios"])], rows_of(IOS_ONLY)),
    (
        "filter-two-values",
        [gf("@.device", ["ios", "web"])],
        rows_of([r for r in TINY_COUNT if r[1] in ("ios", "web")]),
    ),
    ("filter-empty-value", [gf("@.device", [""])], rows_of([("00:00", "", "US", 1)])),
    ("filter-no-match", [gf("@.device", ["nokia"])], []),
    (
        "filter-two-groupings-map",
        {"@.device": ["ios"], "@.country": ["US"]},
        rows_of([r for r in IOS_ONLY if r[2] == "US"]),
    ),
    (
        "filter-without-returning",
        [gf("@.device", ["ios"], ret=False)],
        rows_of(
            [("00:00", "DE", 1), ("00:00", "US", 2), ("00:01", "US", 1), ("01:01", "US", 1)],
            COUNTRY,
        ),
    ),
    (
        "agg-not-returned",
        [gf("@.country", ["$__agg"], ret=False)],
        rows_of(TINY_COUNT_BY_DEVICE, DEVICE),
    ),
    (
        "agg-returned-flag-true",
        [gf("@.country", ["$__agg"], ret=True)],
        rows_of(TINY_COUNT_BY_DEVICE, DEVICE),
    ),
    (
        "not-returned-no-values",
        [gf("@.country", None, ret=False)],
        rows_of(TINY_COUNT_BY_DEVICE, DEVICE),
    ),
    ("agg-legacy-map-shape", {"@.country": ["$__agg"]}, rows_of(TINY_COUNT_BY_DEVICE, DEVICE)),
    (
        "agg-both",
        [gf("@.device", ["$__agg"], ret=False), gf("@.country", ["$__agg"], ret=False)],
        [row(m, n, {}) for m, n in TINY_TOTALS.items()],
    ),
    (
        "filter-one-agg-other",
        [gf("@.country", ["DE"]), gf("@.device", ["$__agg"], ret=False)],
        rows_of([("00:00", "DE", 1), ("00:01", "DE", 2)], COUNTRY),
    ),
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [(c[1], c[2]) for c in GROUPING_CASES],
    ids=[c[0] for c in GROUPING_CASES],
)
def test_grouping_filters(tiny: Engine, filters: Any, expected: list[Row]) -> None:
    """Include, exclude, filter to values, ``$__agg``; list and legacy map shapes."""
    assert answer(tiny, q(groupingFilters=filters)) == expected


EXCLUDE_EMPTY_CASES: list[tuple[str, Any, list[Row]]] = [
    ("plain", None, rows_of([r for r in TINY_COUNT if "" not in r[1:3]])),
    # The web event without a country is merged into "web" once the country is collapsed.
    (
        "collapsed-grouping-not-judged",
        [gf("@.country", ["$__agg"], ret=False)],
        rows_of([r for r in TINY_COUNT_BY_DEVICE if r[1] != ""], DEVICE),
    ),
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [(c[1], c[2]) for c in EXCLUDE_EMPTY_CASES],
    ids=[c[0] for c in EXCLUDE_EMPTY_CASES],
)
def test_exclude_empty_groupings(tiny: Engine, filters: Any, expected: list[Row]) -> None:
    """``excludeEmptyGroupings`` drops rows whose returned grouping value is ``""``."""
    assert answer(tiny, q(groupingFilters=filters, excludeEmptyGroupings=True)) == expected
    assert answer(tiny, q(groupingFilters=filters, excludeEmptyGroupings=False)) == answer(
        tiny, q(groupingFilters=filters)
    )


# ---------------------------------------------------------------- collapse and rollup values

# Values of aggregation 1 per calculation, country collapsed, rolled up to 1 hour:
# android [10, 4, "apples"], ios [1, 3, 5, 2] then [8], web [9, 6], "" [7].
COLLAPSED_HOURLY: dict[str, dict[tuple[str, str], float]] = {
    "COUNT": {
        ("00:00", ""): 1,
        ("00:00", "android"): 3,
        ("00:00", "ios"): 4,
        ("00:00", "web"): 2,
        ("01:00", "ios"): 1,
    },
    "SUM": {
        ("00:00", ""): 7,
        ("00:00", "android"): 14,
        ("00:00", "ios"): 11,
        ("00:00", "web"): 15,
        ("01:00", "ios"): 8,
    },
    "MIN": {
        ("00:00", ""): 7,
        ("00:00", "android"): 4,
        ("00:00", "ios"): 1,
        ("00:00", "web"): 6,
        ("01:00", "ios"): 8,
    },
    "MAX": {
        ("00:00", ""): 7,
        ("00:00", "android"): 10,
        ("00:00", "ios"): 5,
        ("00:00", "web"): 9,
        ("01:00", "ios"): 8,
    },
    # from sum and count: ios is 11 / 4, not the mean of the minute means (3 + 2) / 2
    "AVG": {
        ("00:00", ""): 7,
        ("00:00", "android"): 7,
        ("00:00", "ios"): 2.75,
        ("00:00", "web"): 7.5,
        ("01:00", "ios"): 8,
    },
    "APPROX_COUNT_DISTINCT": {
        ("00:00", ""): 1,
        ("00:00", "android"): 3,
        ("00:00", "ios"): 4,
        ("00:00", "web"): 2,
        ("01:00", "ios"): 1,
    },
    # p = 0.5, PERCENTILE_CONT of the numeric values (exact: every cell holds few values)
    "PERCENTILES": {
        ("00:00", ""): 7,
        ("00:00", "android"): 7,
        ("00:00", "ios"): 2.5,
        ("00:00", "web"): 7.5,
        ("01:00", "ios"): 8,
    },
}


@pytest.mark.parametrize("calc", ALL_CALCS)
def test_collapse_and_rollup_combine_cells(tiny: Engine, calc: str) -> None:
    """COUNT/SUM add, MIN/MAX combine, AVG from sum and count, sketches merge (spec 7.7)."""
    got = answer(
        tiny,
        q(
            aggregation_id=1,
            calculation=calc,
            percentile=0.5,
            groupingFilters=[gf("@.country", ["$__agg"], ret=False)],
            recalculatedInterval={"type": "SECOND", "frequency": 3600},
        ),
    )
    assert [(r["dt"][11:16], r["groupings"]["Device"]) for r in got] == list(COLLAPSED_HOURLY[calc])
    for r in got:
        expected = COLLAPSED_HOURLY[calc][(r["dt"][11:16], r["groupings"]["Device"])]
        assert r["value"] == expected


COLLAPSED_MINUTE_IOS = {
    "COUNT": 3,
    "SUM": 9,
    "MIN": 1,
    "MAX": 5,
    "AVG": 3,
    "APPROX_COUNT_DISTINCT": 3,
    "PERCENTILES": 3,
}


@pytest.mark.parametrize("calc", ALL_CALCS)
def test_agg_collapse_of_one_minute(tiny: Engine, calc: str) -> None:
    """ios at 00:00 is US [1, 3] plus DE [5]; ``$__agg`` on country merges them."""
    got = answer(
        tiny,
        q(
            aggregation_id=1,
            calculation=calc,
            percentile=0.5,
            endTime="2024-01-01T00:01:00Z",
            groupingFilters=[gf("@.device", ["ios"]), gf("@.country", ["$__agg"], ret=False)],
        ),
    )
    assert len(got) == 1 and got[0]["groupings"] == {"Device": "ios"}
    assert got[0]["value"] == pytest.approx(COLLAPSED_MINUTE_IOS[calc], rel=DDSKETCH_REL)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, "1"], 2),  # semantics 6: the string "1" and the number 1 differ
        ([True, "true"], 2),
        ([1.5, "1.5"], 2),
        ([{"a": 1}, '{"a":1}'], 2),
        ([1, 1.0, "x", "x"], 2),  # 1 and 1.0 have one string form
    ],
)
def test_distinct_type_and_text(values: list[Any], expected: int) -> None:
    """APPROX_COUNT_DISTINCT identifies values by type and string form (semantics 6)."""
    engine = Engine(INGEST, [filter_def("g", groupings=())], clock=Clock(T0))
    engine.ingest(ndjson({"ts": T0, "v": v} for v in values))
    got = answer(engine, q("g", 1, "APPROX_COUNT_DISTINCT"))
    assert got == [row("00:00", expected, None)]


@pytest.mark.parametrize("pair", [(102, "101"), (176, "175"), (100, "103"), (101, "102")])
def test_distinct_number_and_other_string_differ(pair: tuple[int, str]) -> None:
    """A number and a string with a different text are two distinct values."""
    engine = Engine(INGEST, [filter_def("g", groupings=())], clock=Clock(T0))
    engine.ingest(ndjson({"ts": T0, "v": v} for v in pair))
    assert answer(engine, q("g", 1, "APPROX_COUNT_DISTINCT")) == [row("00:00", 2, None)]


def test_distinct_mixed_numbers_and_numeric_strings() -> None:
    """Over 0..999 as numbers and as strings, every value is counted (2,000 distinct)."""
    engine = Engine(INGEST, [filter_def("g", groupings=())], clock=Clock(T0))
    engine.ingest(ndjson({"ts": T0, "v": v} for i in range(1000) for v in (i, str(i))))
    value = answer(engine, q("g", 1, "APPROX_COUNT_DISTINCT"))[0]["value"]
    assert value == 2000


@pytest.mark.parametrize(("p", "expected"), [(1, 5), (1.0, 5), (0.999, 4.996), (1e-9, 1)])
def test_percentile_bounds(tiny: Engine, p: float, expected: float) -> None:
    """``p = 1`` is the exact maximum; tiny p gives the minimum; in between PERCENTILE_CONT
    interpolates (ios is [1, 3, 5]), exactly as numpy does."""
    got = answer(
        tiny,
        q(
            aggregation_id=1,
            calculation="PERCENTILES",
            percentile=p,
            endTime="2024-01-01T00:01:00Z",
            groupingFilters=[gf("@.device", ["ios"]), gf("@.country", ["$__agg"], ret=False)],
        ),
    )
    assert got[0]["value"] == float(np.quantile([1.0, 3.0, 5.0], p))
    assert got[0]["value"] == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- recalculatedInterval

ROLLUP_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("second-3600", {"type": "SECOND", "frequency": 3600}, ["00:00", "01:00"]),
    ("minute-60", {"type": "MINUTE", "frequency": 60}, ["00:00", "01:00"]),
    ("hour-1", {"type": "HOUR", "frequency": 1}, ["00:00", "01:00"]),
    ("frequency-as-string", {"type": "SECOND", "frequency": "3600"}, ["00:00", "01:00"]),
    # epoch-truncated 7-minute buckets: 23:54, 00:01, ..., 00:57, 01:04
    (
        "minute-7-epoch",
        {"type": "MINUTE", "frequency": 7},
        ["2023-12-31T23:54:00Z", "00:01", "00:57"],
    ),
    # 90 s does not divide into minutes: base buckets are grouped by their start
    ("second-90", {"type": "SECOND", "frequency": 90}, ["00:00", "00:01:30", "01:00"]),
    ("day-1", {"type": "DAY", "frequency": 1}, ["00:00"]),
    # weeks from the epoch start on Thursdays: 2023-12-28
    ("week-1", {"type": "WEEK", "frequency": 1}, ["2023-12-28T00:00:00Z"]),
    ("month-1", {"type": "MONTH", "frequency": 1}, ["00:00"]),
    ("year-1", {"type": "YEAR", "frequency": 1}, ["00:00"]),
    # Decision 12: frequency 0 (the plugin's int64 seconds of a sub-second panel) or null is
    # no rollup, like one that is not coarser than the filter's interval.
    ("zero-is-noop", {"type": "SECOND", "frequency": 0}, ALL_MINUTES),
    ("null-is-noop", {"type": "SECOND", "frequency": None}, ALL_MINUTES),
    ("zero-needs-no-type", {"frequency": 0}, ALL_MINUTES),
    ("zero-ignores-an-empty-type", {"type": "", "frequency": 0}, ALL_MINUTES),
    ("finer-is-noop", {"type": "SECOND", "frequency": 30}, ALL_MINUTES),
    ("equal-is-noop", {"type": "SECOND", "frequency": 60}, ALL_MINUTES),
    ("null", None, ALL_MINUTES),
]


def _when(label: str) -> str:
    if "T" in label:
        return label
    if label.count(":") == 2:
        return f"2024-01-01T{label}Z"
    return f"2024-01-01T{label}:00Z"


TINY_MINUTE_MS = {m: T0_MS + int(m[:2]) * 3_600_000 + int(m[3:]) * MINUTE_MS for m in ALL_MINUTES}


@pytest.mark.parametrize(
    ("rollup", "buckets"), [(c[1], c[2]) for c in ROLLUP_CASES], ids=[c[0] for c in ROLLUP_CASES]
)
def test_rollup_buckets(tiny: Engine, rollup: dict[str, Any], buckets: list[str]) -> None:
    """Rolled-up buckets are epoch-truncated; finer-than-base or equal is a no-op."""
    got = answer(tiny, q("g", recalculatedInterval=rollup))
    assert [r["dt"] for r in got] == [_when(b) for b in buckets]
    assert sum(r["value"] for r in got) == sum(TINY_TOTALS.values())
    plain = answer(tiny, q("g"))
    if [r["dt"] for r in plain] == [r["dt"] for r in got]:
        assert got == plain


def test_rollup_groups_the_selected_base_buckets(tiny: Engine) -> None:
    """Decision 3: the window selects base buckets first; 00:00 then holds only 00:01-00:59."""
    got = answer(
        tiny,
        q(
            "g",
            startTime="2024-01-01T00:01:00Z",
            recalculatedInterval={"type": "SECOND", "frequency": 3600},
        ),
    )
    assert got == [row("00:00", 5, None), row("01:00", 1, None)]


@pytest.mark.parametrize(
    ("interval", "rollup", "days"),
    [
        # 2024-01-01 and 2024-03-01: two months, one 365-day bucket (from 2023-12-19)
        (("MONTH", 1), {"type": "SECOND", "frequency": 365 * 86_400}, 60),
        # ... and one 400-day bucket (from 2023-08-31)
        (("MONTH", 1), {"type": "DAY", "frequency": 400}, 60),
        # 2024 and 2025: two years, one 24-month bucket (from 2024-01)
        (("YEAR", 1), {"type": "MONTH", "frequency": 24}, 366),
        (("YEAR", 1), {"type": "YEAR", "frequency": 2}, 366),
    ],
)
def test_coarser_rollup_of_calendar_interval(
    interval: tuple[str, int], rollup: Query, days: int
) -> None:
    """Decision 3: any coarser rollup groups base buckets, also over calendar months/years."""
    engine = Engine(INGEST, [filter_def("m", interval=interval)], clock=Clock(T0))
    engine.ingest(ndjson([{"ts": T0, "v": 1}, {"ts": T0 + days * 86_400, "v": 1}]))
    assert len(answer(engine, q("m"))) == 2
    got = answer(engine, q("m", recalculatedInterval=rollup))
    assert [r["value"] for r in got] == [2.0]


# ---------------------------------------------------------------- limit (spec 7.7)

LIMIT_CASES: list[tuple[str, Query, list[Row]]] = [
    (
        "top-2",
        {"limit": 2, "limitType": "Top"},
        rows_of(
            [
                ("00:00", "", "US", 7),
                ("00:00", "android", "US", 10),
                ("00:01", "android", "DE", 4),
                ("00:01", "web", "", 9),
                ("00:02", "web", "US", 6),
                ("01:01", "ios", "US", 8),
            ]
        ),
    ),
    (
        "top-is-default",
        {"limit": 2},
        rows_of(
            [
                ("00:00", "", "US", 7),
                ("00:00", "android", "US", 10),
                ("00:01", "android", "DE", 4),
                ("00:01", "web", "", 9),
                ("00:02", "web", "US", 6),
                ("01:01", "ios", "US", 8),
            ]
        ),
    ),
    (
        "null-limit-type",
        {"limit": 1, "limitType": None},
        rows_of(
            [
                ("00:00", "android", "US", 10),
                ("00:01", "web", "", 9),
                ("00:02", "web", "US", 6),
                ("01:01", "ios", "US", 8),
            ]
        ),
    ),
    (
        "bottom-2",
        {"limit": 2, "limitType": "Bottom"},
        rows_of(
            [
                ("00:00", "ios", "DE", 5),
                ("00:00", "ios", "US", 4),
                ("00:01", "android", "DE", 4),
                ("00:01", "ios", "US", 2),
                ("00:02", "web", "US", 6),
                ("01:01", "ios", "US", 8),
            ]
        ),
    ),
    ("larger-than-groups", {"limit": 999_999}, rows_of(TINY_SUM)),
    ("null-limit", {"limit": None, "limitType": "Top"}, rows_of(TINY_SUM)),
    (
        "after-exclude-empty",
        {"limit": 1, "excludeEmptyGroupings": True},
        rows_of(
            [
                ("00:00", "android", "US", 10),
                ("00:01", "android", "DE", 4),
                ("00:02", "web", "US", 6),
                ("01:01", "ios", "US", 8),
            ]
        ),
    ),
    (
        "after-collapse",
        {"limit": 1, "groupingFilters": [gf("@.country", ["$__agg"], False)]},
        rows_of(
            [
                ("00:00", "android", 10),
                ("00:01", "web", 9),
                ("00:02", "web", 6),
                ("01:01", "ios", 8),
            ],
            DEVICE,
        ),
    ),
    (
        "after-rollup",
        {"limit": 2, "recalculatedInterval": {"type": "HOUR", "frequency": 1}},
        rows_of(
            [("00:00", "android", "US", 10), ("00:00", "web", "", 9), ("01:00", "ios", "US", 8)]
        ),
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [(c[1], c[2]) for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES]
)
def test_limit_per_time_slice(tiny: Engine, extra: Query, expected: list[Row]) -> None:
    """``limit`` keeps the top or bottom N grouping combinations of every time slice."""
    assert answer(tiny, q(aggregation_id=1, calculation="SUM", **extra)) == expected


# ---------------------------------------------------------------- includeIncompleteIntervals

INCOMPLETE_CASES: list[tuple[str, float, Query, list[str]]] = [
    # now = 00:02:00 exactly: 00:01 has just ended, 00:02 is open, 01:01 is in the future
    ("false-at-boundary", 120, {"includeIncompleteIntervals": False}, ["00:00", "00:01"]),
    ("false-mid-bucket", 119.999, {"includeIncompleteIntervals": False}, ["00:00"]),
    ("true", 120, {"includeIncompleteIntervals": True}, ALL_MINUTES),
    ("absent-means-true", 120, {}, ALL_MINUTES),
    ("null-means-true", 120, {"includeIncompleteIntervals": None}, ALL_MINUTES),
    ("false-all-complete", 7200, {"includeIncompleteIntervals": False}, ALL_MINUTES),
    (
        "false-rollup-open-hour",
        7199,
        {
            "includeIncompleteIntervals": False,
            "recalculatedInterval": {"type": "HOUR", "frequency": 1},
        },
        ["00:00"],
    ),
    (
        "false-rollup-closed",
        7200,
        {
            "includeIncompleteIntervals": False,
            "recalculatedInterval": {"type": "HOUR", "frequency": 1},
        },
        ["00:00", "01:00"],
    ),
    (
        "false-with-window",
        3700,
        {"includeIncompleteIntervals": False, "startTime": "2024-01-01T00:01:00Z"},
        ["00:01", "00:02"],
    ),
]


@pytest.mark.parametrize(
    ("now", "extra", "minutes"),
    [(c[1], c[2], c[3]) for c in INCOMPLETE_CASES],
    ids=[c[0] for c in INCOMPLETE_CASES],
)
def test_include_incomplete_intervals(now: float, extra: Query, minutes: list[str]) -> None:
    """The open bucket is judged against the injected clock; absent means true (decision 2)."""
    engine = tiny_engine(Clock(T0 + now))
    got = answer(engine, q("g", **extra))
    assert [r["dt"] for r in got] == [_when(m) for m in minutes]


def test_incomplete_intervals_follow_a_moving_clock() -> None:
    """The clock is read at query time, so the same query changes as time passes."""
    clock = Clock(T0 + 90)
    engine = tiny_engine(clock)
    query = q("g", includeIncompleteIntervals=False)
    assert [r["dt"] for r in answer(engine, query)] == [_when("00:00")]
    clock.now = T0 + 180
    assert [r["dt"] for r in answer(engine, query)] == [_when(m) for m in ALL_MINUTES[:3]]


# ---------------------------------------------------------------- unknown fields

# QueryOptions of pkg/plugin/types.go exactly as Go's encoding/json marshals it (every field,
# nulls included), as sent to /metrics/results?multi=true.
GRAFANA_QUERY: Query = {
    "filterId": "f",
    "startTime": "2024-01-01T00:00:00Z",
    "endTime": "2024-01-02T00:00:00Z",
    "groupingFilters": None,
    "aggregationId": 1,
    "calculation": "SUM",
    "limit": None,
    "limitType": None,
    "alias": "",
    "excludeEmptyGroupings": False,
    "hide": None,
    "filterDefinitionName": "filter f - v - Sum",
    "longResult": None,
    "includeGroupingLabels": True,
    "groupingName": "",
    "mode": "query",
    "includeAggregateOption": False,
    "includeIncompleteIntervals": True,
    "percentile": None,
    "optimized": True,
    "queryId": "A",
    "fast_mode": True,
    "shouldRecalculate": False,
    "recalculatedInterval": None,
}


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"alias": "My series", "hide": False, "longResult": True, "mode": "variables"},
        {"fast_mode": False, "shouldRecalculate": True, "optimized": False, "queryId": "Z"},
        {
            "datasource": {"type": "aggregations-io-datasource", "uid": "abc"},
            "refId": "A",
            "rand_id": "x1y2",
            "grouping_filter_mapping": {},
            "nested": [1, {"a": None}],
        },
    ],
)
def test_unknown_and_client_fields_are_ignored(tiny: Engine, extra: Query) -> None:
    """The plugin's full field set (and anything else unknown) changes nothing."""
    minimal = q(
        aggregation_id=1,
        calculation="SUM",
        startTime="2024-01-01T00:00:00Z",
        endTime="2024-01-02T00:00:00Z",
    )
    assert answer(tiny, {**GRAFANA_QUERY, **extra}) == answer(tiny, minimal)
    assert answer(tiny, minimal) == rows_of(TINY_SUM)


def test_blazor_demo_request(tiny: Engine) -> None:
    """The official demo's request (spec 7.2: 7 fraction digits, excludeEmptyGroupings)."""
    got = answer(
        tiny,
        {
            "filterId": "f",
            "aggregationId": 1,
            "calculation": "PERCENTILES",
            "startTime": "2023-12-31T15:04:05.1234567Z",
            "endTime": "2024-01-31T15:04:05.1234567Z",
            "percentile": 0.99,
            "excludeEmptyGroupings": True,
        },
    )
    keys = [(r["dt"], r["groupings"]["Device"], r["groupings"]["@.country"]) for r in got]
    assert keys == [(_when(m), d, c) for m, d, c, _ in TINY_SUM if d and c]


def test_percentile_ignored_for_other_calculations(tiny: Engine) -> None:
    """``percentile`` only matters for PERCENTILES (Grafana may leave an old value set)."""
    assert answer(tiny, q(percentile=0.99)) == answer(tiny, q())


# ---------------------------------------------------------------- invalid queries

INVALID_CASES: list[tuple[str, Query, type[Exception], str]] = [
    ("missing-filter", {"filterId": None}, QueryError, "filterId"),
    ("empty-filter", {"filterId": ""}, QueryError, "filterId"),
    ("unknown-filter", {"filterId": "nope"}, NotFoundError, "filter"),
    ("missing-aggregation", {"aggregationId": None}, QueryError, "aggregationId"),
    ("aggregation-not-int", {"aggregationId": "one"}, QueryError, "aggregationId"),
    ("aggregation-fraction", {"aggregationId": 1.5}, QueryError, "aggregationId"),
    ("unknown-aggregation", {"aggregationId": 99}, NotFoundError, "aggregation"),
    ("missing-calculation", {"calculation": None}, QueryError, "calculation"),
    ("unknown-calculation", {"calculation": "MEDIAN"}, QueryError, "calculation"),
    ("lowercase-calculation", {"calculation": "count"}, QueryError, "calculation"),
    (
        "calculation-not-in-aggregation",
        {"aggregationId": 2, "calculation": "SUM"},
        QueryError,
        "calculation",
    ),
    (
        "percentiles-not-in-aggregation",
        {"aggregationId": 2, "calculation": "PERCENTILES", "percentile": 0.5},
        QueryError,
        "calculation",
    ),
    ("bad-start", {"startTime": "yesterday"}, QueryError, "startTime"),
    ("start-number", {"startTime": T0}, QueryError, "startTime"),
    ("bad-end-month", {"endTime": "2024-13-01T00:00:00Z"}, QueryError, "endTime"),
    ("bad-end-offset", {"endTime": "2024-01-01T00:00:00+25:00"}, QueryError, "endTime"),
    (
        "end-before-start",
        {"startTime": "2024-01-02T00:00:00Z", "endTime": "2024-01-01T00:00:00Z"},
        QueryError,
        "endTime",
    ),
    (
        "percentile-missing",
        {"aggregationId": 1, "calculation": "PERCENTILES"},
        QueryError,
        "percentile",
    ),
    (
        "percentile-null",
        {"aggregationId": 1, "calculation": "PERCENTILES", "percentile": None},
        QueryError,
        "percentile",
    ),
    (
        "percentile-zero",
        {"aggregationId": 1, "calculation": "PERCENTILES", "percentile": 0},
        QueryError,
        "percentile",
    ),
    (
        "percentile-negative",
        {"aggregationId": 1, "calculation": "PERCENTILES", "percentile": -0.5},
        QueryError,
        "percentile",
    ),
    (
        "percentile-above-one",
        {"aggregationId": 1, "calculation": "PERCENTILES", "percentile": 1.0001},
        QueryError,
        "percentile",
    ),
    (
        "percentile-99",
        {"aggregationId": 1, "calculation": "PERCENTILES", "percentile": 99},
        QueryError,
        "percentile",
    ),
    (
        "percentile-bool",
        {"aggregationId": 1, "calculation": "PERCENTILES", "percentile": True},
        QueryError,
        "percentile",
    ),
    ("grouping-filters-string", {"groupingFilters": "ios"}, QueryError, "groupingFilters"),
    ("grouping-filter-not-object", {"groupingFilters": [1]}, QueryError, "groupingFilters[0]"),
    (
        "grouping-filter-no-grouping",
        {"groupingFilters": [{"filters": ["ios"]}]},
        QueryError,
        "groupingFilters[0].grouping",
    ),
    (
        "grouping-filter-unknown",
        {"groupingFilters": [gf("@.device", None), gf("@.os", None)]},
        QueryError,
        "groupingFilters[1].grouping",
    ),
    (
        "grouping-filter-values-object",
        {"groupingFilters": [{"grouping": "@.device", "filters": {"a": 1}}]},
        QueryError,
        "groupingFilters[0].filters",
    ),
    (
        "grouping-filter-return-string",
        {"groupingFilters": [{"grouping": "@.device", "returnGroupingValues": "no"}]},
        QueryError,
        "groupingFilters[0].returnGroupingValues",
    ),
    (
        "grouping-map-unknown",
        {"groupingFilters": {"@.os": ["x"]}},
        QueryError,
        "groupingFilters.@.os.grouping",
    ),
    ("limit-negative", {"limit": -1}, QueryError, "limit"),
    ("limit-text", {"limit": "ten"}, QueryError, "limit"),
    ("limit-fraction", {"limit": 1.5}, QueryError, "limit"),
    ("limit-type-unknown", {"limit": 2, "limitType": "Middle"}, QueryError, "limitType"),
    ("limit-type-number", {"limitType": 1}, QueryError, "limitType"),
    ("exclude-empty-string", {"excludeEmptyGroupings": "yes"}, QueryError, "excludeEmptyGroupings"),
    (
        "incomplete-number",
        {"includeIncompleteIntervals": 1},
        QueryError,
        "includeIncompleteIntervals",
    ),
    ("rollup-string", {"recalculatedInterval": "1h"}, QueryError, "recalculatedInterval"),
    (
        "rollup-no-type",
        {"recalculatedInterval": {"frequency": 60}},
        QueryError,
        "recalculatedInterval.type",
    ),
    (
        "rollup-unknown-type",
        {"recalculatedInterval": {"type": "FORTNIGHT", "frequency": 1}},
        QueryError,
        "recalculatedInterval.type",
    ),
    (
        "rollup-negative",
        {"recalculatedInterval": {"type": "SECOND", "frequency": -60}},
        QueryError,
        "recalculatedInterval.frequency",
    ),
    (
        "rollup-no-frequency",
        {"recalculatedInterval": {"type": "SECOND"}},
        QueryError,
        "recalculatedInterval.frequency",
    ),
]


@pytest.mark.parametrize(
    ("extra", "error", "name"),
    [(c[1], c[2], c[3]) for c in INVALID_CASES],
    ids=[c[0] for c in INVALID_CASES],
)
def test_invalid_query_names_the_field(
    tiny: Engine, extra: Query, error: type[Exception], name: str
) -> None:
    """QueryError names the field; unknown filter/aggregation is NotFoundError with its kind."""
    query = {k: v for k, v in {**q(), **extra}.items() if v is not None or k == "percentile"}
    calls: list[Callable[[Query], object]] = [tiny.results, tiny.results_arrays]
    for call in calls:
        with pytest.raises(error) as info:
            call(query)
        err = info.value
        assert isinstance(err, EventtallyError) and isinstance(err, ValueError)
        if isinstance(err, QueryError):
            assert err.field == name
            assert err.reason and name in str(err)
        else:
            assert isinstance(err, NotFoundError) and err.kind == name


def test_unknown_ids_name_the_id(tiny: Engine) -> None:
    """NotFoundError carries the unknown filter id and filter/aggregation id."""
    with pytest.raises(NotFoundError) as info:
        tiny.results(q("nope"))
    assert (info.value.kind, info.value.id) == ("filter", "nope")
    with pytest.raises(NotFoundError) as info:
        tiny.results(q(aggregation_id=7))
    assert info.value.kind == "aggregation" and "7" in info.value.id


def test_calculation_error_lists_the_allowed_ones(tiny: Engine) -> None:
    """The message of a calculation the aggregation lacks names the ones it has."""
    with pytest.raises(QueryError) as info:
        tiny.results(q(aggregation_id=2, calculation="AVG"))
    assert info.value.field == "calculation" and "COUNT" in info.value.reason


def test_query_must_be_json_serialisable(tiny: Engine) -> None:
    """A query that is not JSON data is a TypeError, not a crash."""
    with pytest.raises(TypeError):
        tiny.results(q(startTime=object()))


# =============================================================================================
# The reference (the one oracle): every option over a generated data set, every calculation

DEVICES = ["ios", "android", "web", None]
COUNTRIES = ["US", "DE", "FR", "JP", None]


def generated_events(n: int, seed: int, span_s: int = 3 * 3600) -> list[dict[str, Any]]:
    """Events with skewed groupings, integer values, numeric strings, junk and missing values."""
    rnd = random.Random(seed)
    events = []
    for _ in range(n):
        e: dict[str, Any] = {"ts": T0 + rnd.randrange(span_s)}
        device = rnd.choices(DEVICES, weights=[5, 4, 2, 1])[0]
        country = rnd.choices(COUNTRIES, weights=[8, 4, 2, 1, 1])[0]
        if device is not None:
            e["device"] = device
        if country is not None:
            e["country"] = country
        kind = rnd.random()
        if kind < 0.8:
            e["v"] = rnd.randint(-50, 1000)
        elif kind < 0.9:
            e["v"] = str(rnd.randint(0, 300))  # texts shared with the numbers
        elif kind < 0.95:
            e["v"] = rnd.choice(["n/a", "", True])
        events.append(e)
    return events


def assert_rows_match(got: list[Row], expected: list[Row], calc: str) -> None:
    """Same rows in the same order; values exact except PERCENTILES (sketch accuracy)."""
    assert [(r["dt"], r["groupings"]) for r in got] == [(r["dt"], r["groupings"]) for r in expected]
    for g, e in zip(got, expected, strict=True):
        if calc == "PERCENTILES":
            assert g["value"] == pytest.approx(e["value"], rel=DDSKETCH_REL, abs=1e-9), g
        else:
            assert g["value"] == e["value"], g


def assert_limited(got: list[Row], full: list[Row], n: int, top: bool) -> None:
    """Per dt, the kept rows are N rows of ``full`` whose values are the N best (any tie)."""
    by_dt: dict[str, list[Row]] = defaultdict(list)
    for r in full:
        by_dt[r["dt"]].append(r)
    kept: dict[str, list[Row]] = defaultdict(list)
    for r in got:
        kept[r["dt"]].append(r)
    assert set(kept) == set(by_dt)
    for dt, rows in by_dt.items():
        best = sorted((r["value"] for r in rows), reverse=top)[:n]
        assert sorted((r["value"] for r in kept[dt]), reverse=top) == best
        for r in kept[dt]:
            assert r in rows


GEN_NOW = T0 + 2 * 3600 + 1234  # inside the data: the last hour is partly in the future
ORACLE_CASES: list[tuple[str, Query]] = [
    ("plain", {}),
    ("window", {"startTime": "2024-01-01T00:17:00Z", "endTime": "2024-01-01T02:03:30Z"}),
    (
        "filter-values",
        {
            "groupingFilters": [
                gf("@.device", ["ios", "android"]),
                gf("@.country", ["US", "JP", ""]),
            ]
        },
    ),
    ("collapse-country", {"groupingFilters": [gf("@.country", ["$__agg"], False)]}),
    (
        "collapse-device-filter-country",
        {
            "groupingFilters": [
                gf("@.device", ["$__agg"], False),
                gf("@.country", ["US", "DE"], False),
            ]
        },
    ),
    (
        "collapse-both",
        {
            "groupingFilters": [
                gf("@.device", ["$__agg"], False),
                gf("@.country", ["$__agg"], False),
            ]
        },
    ),
    ("exclude-empty", {"excludeEmptyGroupings": True}),
    ("rollup-hour", {"recalculatedInterval": {"type": "SECOND", "frequency": 3600}}),
    (
        "rollup-15min-window",
        {
            "recalculatedInterval": {"type": "MINUTE", "frequency": 15},
            "startTime": "2024-01-01T00:37:00Z",
        },
    ),
    ("rollup-7min-epoch", {"recalculatedInterval": {"type": "MINUTE", "frequency": 7}}),
    (
        "rollup-day-collapse",
        {
            "recalculatedInterval": {"type": "DAY", "frequency": 1},
            "groupingFilters": [gf("@.country", ["$__agg"], False)],
        },
    ),
    ("incomplete-false", {"includeIncompleteIntervals": False}),
    (
        "incomplete-false-rollup",
        {
            "includeIncompleteIntervals": False,
            "recalculatedInterval": {"type": "HOUR", "frequency": 1},
        },
    ),
    (
        "everything",
        {
            "startTime": "2024-01-01T00:05:00Z",
            "endTime": "2024-01-01T02:55:00Z",
            "groupingFilters": [gf("@.country", ["US", "DE", "FR"], False)],
            "excludeEmptyGroupings": True,
            "includeIncompleteIntervals": False,
            "recalculatedInterval": {"type": "MINUTE", "frequency": 20},
        },
    ),
]
LIMIT_ORACLE_CASES: list[tuple[str, Query]] = [
    ("top-3", {"limit": 3, "limitType": "Top"}),
    ("bottom-2", {"limit": 2, "limitType": "Bottom"}),
    (
        "top-1-rollup-collapse",
        {
            "limit": 1,
            "recalculatedInterval": {"type": "HOUR", "frequency": 1},
            "groupingFilters": [gf("@.country", ["$__agg"], False)],
        },
    ),
]


@pytest.fixture(scope="module")
def gen() -> tuple[Engine, ReferenceEngine]:
    """The same generated batches in the Rust engine and in the reference."""
    events = generated_events(4000, seed=7)
    engine = Engine(INGEST, [filter_def("f")], clock=Clock(GEN_NOW))
    oracle = ReferenceEngine(INGEST, [filter_def("f")], now_ms=GEN_NOW * 1000)
    for i in range(0, len(events), 1000):
        body = ndjson(events[i : i + 1000])
        engine.ingest(body)
        oracle.ingest(body)
    return engine, oracle


CALC_PARAMS = [*ALL_CALCS[:-1], "PERCENTILES-0.5", "PERCENTILES-0.99", "PERCENTILES-1"]


def calc_query(calc_param: str, extra: Query) -> Query:
    """A query of aggregation 1 for ``CALC_PARAMS`` entries such as ``PERCENTILES-0.99``."""
    calc, _, p = calc_param.partition("-")
    query = q(aggregation_id=1, calculation=calc, **extra)
    if p:
        query["percentile"] = float(p)
    return query


@pytest.mark.parametrize("calc_param", CALC_PARAMS)
@pytest.mark.parametrize("extra", [c[1] for c in ORACLE_CASES], ids=[c[0] for c in ORACLE_CASES])
def test_options_against_oracle(
    gen: tuple[Engine, ReferenceEngine], extra: Query, calc_param: str
) -> None:
    """Every option and combination equals the exact oracle for every calculation."""
    engine, oracle = gen
    query = calc_query(calc_param, extra)
    got = answer(engine, query)
    assert got, "the case should not be empty"
    assert_rows_match(got, oracle.results(query), query["calculation"])


@pytest.mark.parametrize("calc_param", [c for c in CALC_PARAMS if not c.startswith("PERC")])
@pytest.mark.parametrize(
    "extra", [c[1] for c in LIMIT_ORACLE_CASES], ids=[c[0] for c in LIMIT_ORACLE_CASES]
)
def test_limit_against_oracle(
    gen: tuple[Engine, ReferenceEngine], extra: Query, calc_param: str
) -> None:
    """Top/Bottom N per time slice keeps N rows with the N best exact values (ties either way)."""
    engine, oracle = gen
    query = calc_query(calc_param, extra)
    unlimited = {k: v for k, v in query.items() if k not in ("limit", "limitType")}
    full = oracle.results(unlimited)
    assert_rows_match(answer(engine, unlimited), full, query["calculation"])
    limited = answer(engine, query)
    assert_limited(limited, full, query["limit"], query.get("limitType") != "Bottom")
    # docs/queries.md: ties are broken by the grouping values, so the kept rows are exactly the
    # reference's
    assert_rows_match(limited, oracle.results(query), query["calculation"])


# =============================================================================================
# Exactness: collapse and rollup equal a filter defined at that granularity (decision 8)


def wide_events(n: int, seed: int) -> list[dict[str, Any]]:
    """Events for the sketch regimes: > 2,048 distinct users per hour and values over 24
    decades (DDSketch bins collapse). Numeric values are multiples of 1/4 so sums are exact."""
    rnd = random.Random(seed)
    events = []
    for _ in range(n):
        events.append(
            {
                "ts": T0 + rnd.randrange(2 * 3600),
                "device": rnd.choice(["ios", "android"]),
                "country": rnd.choice(["US", "DE", "FR"]),
                "v": rnd.randrange(-400, 40_000) / 4,
                "u": f"user-{rnd.randrange(50_000)}",
                "w": 10.0 ** rnd.uniform(-12, 12),
            }
        )
    return events


EXACT_SHAPES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "f": (("@.device", "Device"), ("@.country", None)),
    "fd": (("@.device", "Device"),),
    "fn": (),
}
# f, fh, fd, fdh, fn, fnh over @.v; the same with suffix _u (@.u) and _w (@.w)
EXACT_FILTERS = [
    filter_def(f"{name}{hourly}{suffix}", groupings=shape, interval=interval, field=field)
    for name, shape in EXACT_SHAPES.items()
    for hourly, interval in (("", ("MINUTE", 1)), ("h", ("HOUR", 1)))
    for suffix, field in (("", "@.v"), ("_u", "@.u"), ("_w", "@.w"))
]


@pytest.fixture(scope="module")
def exact() -> Engine:
    engine = Engine(INGEST, EXACT_FILTERS, clock=Clock(T0 + 86_400))
    events = wide_events(24_000, seed=3)
    for i in range(0, len(events), 4000):
        engine.ingest(ndjson(events[i : i + 4000]))
    return engine


AGG_COUNTRY = [gf("@.country", ["$__agg"], False)]
AGG_BOTH = [gf("@.device", ["$__agg"], False), gf("@.country", ["$__agg"], False)]
HOURLY = {"type": "SECOND", "frequency": 3600}
EXACT_CASES: list[tuple[str, str, Query, str]] = [
    ("collapse-country", "f", {"groupingFilters": AGG_COUNTRY}, "fd"),
    ("collapse-both", "f", {"groupingFilters": AGG_BOTH}, "fn"),
    ("rollup", "f", {"recalculatedInterval": HOURLY}, "fh"),
    (
        "collapse-and-rollup",
        "f",
        {"groupingFilters": AGG_COUNTRY, "recalculatedInterval": HOURLY},
        "fdh",
    ),
    (
        "collapse-both-rollup",
        "f",
        {"groupingFilters": AGG_BOTH, "recalculatedInterval": HOURLY},
        "fnh",
    ),
]
EXACT_CALCS = [(fld, c) for fld in ("v",) for c in CALC_PARAMS] + [
    ("u", "APPROX_COUNT_DISTINCT"),
    ("u", "COUNT"),
    ("w", "PERCENTILES-0.001"),
    ("w", "PERCENTILES-0.5"),
    ("w", "PERCENTILES-0.99"),
    ("w", "PERCENTILES-0.999"),
    ("w", "MIN"),
    ("w", "MAX"),
]


@pytest.mark.parametrize(
    ("fld", "calc_param"), EXACT_CALCS, ids=[f"{f}-{c}" for f, c in EXACT_CALCS]
)
@pytest.mark.parametrize(
    ("source", "extra", "target"),
    [(c[1], c[2], c[3]) for c in EXACT_CASES],
    ids=[c[0] for c in EXACT_CASES],
)
def test_merged_cells_equal_direct_aggregation(
    exact: Engine, source: str, extra: Query, target: str, fld: str, calc_param: str
) -> None:
    """Collapsing/rolling up equals a filter that saw the events at that granularity, exactly."""
    suffix = "" if fld == "v" else f"_{fld}"
    merged = answer(exact, {**calc_query(calc_param, extra), "filterId": source + suffix})
    direct = answer(exact, {**calc_query(calc_param, {}), "filterId": target + suffix})
    assert normalised(merged) == normalised(direct)
    assert len(merged) > 0


def test_distinct_regime_is_exercised(exact: Engine) -> None:
    """The hourly distinct counts above are beyond the exact set (> 2,048), near the truth."""
    rows = answer(exact, q("fnh_u", 1, "APPROX_COUNT_DISTINCT"))
    assert all(r["value"] > 2048 for r in rows)


# =============================================================================================
# results_multi (spec 7.3), decoded exactly like the Grafana plugin


def go_decodable(mr: dict[str, Any]) -> None:
    """What Go's ``json.Unmarshal`` into ``MetricResult`` would refuse, refused here too."""
    assert set(mr) <= {"isSeperator", "dt", "dtSecLater", "val", "groupings", "queryId"}, mr
    assert mr.get("isSeperator") is None or isinstance(mr["isSeperator"], bool)
    if mr.get("dt") is not None:
        parse_rfc3339(mr["dt"])
    # int64: a JSON number with a fraction or exponent is an error in Go
    assert isinstance(mr.get("dtSecLater", 0), int) and not isinstance(mr.get("dtSecLater"), bool)
    assert mr.get("val") is None or (
        isinstance(mr["val"], int | float) and not isinstance(mr["val"], bool)
    )
    g = mr.get("groupings")
    assert g is None or (isinstance(g, dict) and all(isinstance(v, str) for v in g.values()))
    assert mr.get("queryId") is None or isinstance(mr["queryId"], str)


EPOCH_MS = 0


def decode_multi(rows: list[dict[str, Any]], queries: list[Query]) -> dict[str, Any]:
    """``queryMulti`` of the Grafana plugin, statement by statement.

    Returns, per queryId, ``(frame_set, columns, points)`` with points ``(dt_ms, groupings
    restricted to the frame's columns with "" for missing keys, val)`` sorted by time.
    """
    qids = [qo["queryId"] for qo in queries]
    set_frames = dict.fromkeys(qids, False)
    names: dict[str, list[str]] = {qid: [] for qid in qids}
    finals: dict[str, list[tuple[int, dict[str, str], float]]] = {qid: [] for qid in qids}
    current_dt_start = EPOCH_MS  # time.Unix(0, 0)
    current_groupings: dict[str, str] = {}
    single_q = len(queries) == 1
    for mr in rows:
        go_decodable(mr)
        query_id = mr.get("queryId")  # null.String: Valid only when present and not null
        if mr.get("isSeperator") is None and single_q:  # !mr.IsSeperator.Valid && single_q
            query_id = qids[0]
        if (
            query_id is not None
            and not set_frames.get(query_id, False)
            and (current_dt_start != EPOCH_MS)
        ):
            set_frames[query_id] = True
            names[query_id] = list(current_groupings)  # frame columns time, <keys>, value
        if mr.get("isSeperator") is True:  # mr.IsSeperator.Bool
            current_dt_start = parse_rfc3339(mr["dt"])
            assert mr.get("groupings") is not None, "the plugin dereferences *mr.Groupings"
            current_groupings = mr["groupings"]
            continue
        point = (
            current_dt_start + 1000 * mr.get("dtSecLater", 0),
            current_groupings,
            float(mr.get("val") or 0),
        )
        finals.setdefault(query_id or "", []).append(point)
    out = {}
    for qid in qids:
        points = sorted(finals[qid], key=lambda pt: pt[0])
        framed = [(dt, {k: g.get(k, "") for k in names[qid]}, v) for dt, g, v in points]
        out[qid] = (set_frames[qid], names[qid], framed)
    return out


def as_points(rows: list[Row]) -> list[tuple[int, tuple[tuple[str, str], ...], float]]:
    """Plain rows as sortable points."""
    return sorted(
        (parse_rfc3339(r["dt"]), tuple(sorted((r["groupings"] or {}).items())), r["value"])
        for r in rows
    )


def check_multi(engine: Engine, queries: list[Query]) -> list[dict[str, Any]]:
    """Decoded multi rows == the plain answer of every query, and the rows pass the strict Go
    decoder (``strict_decoder.py``: the text is re-made from the parsed rows, which keeps NaN and
    the integer/float literal kinds); returns the raw rows."""
    raw = engine.results_multi(queries)
    strict_decoder.decode_multi(json.dumps(raw), [str(qo["queryId"]) for qo in queries])
    decoded = decode_multi(raw, queries)
    for query in queries:
        plain = answer(engine, query)
        frame_set, columns, points = decoded[query["queryId"]]
        assert frame_set == bool(plain)
        if plain:
            assert set(columns) == set(plain[0]["groupings"] or {})
        got = sorted((dt, tuple(sorted(g.items())), v) for dt, g, v in points)
        assert got == as_points(plain)
    return raw


MULTI_QUERIES: list[Query] = [
    {**GRAFANA_QUERY, "queryId": "A"},
    {
        **GRAFANA_QUERY,
        "queryId": "B",
        "calculation": "PERCENTILES",
        "percentile": 0.9,
        "groupingFilters": [gf("@.country", ["$__agg"], False)],
    },
    {**GRAFANA_QUERY, "queryId": "C", "filterId": "g", "calculation": "COUNT"},
    {
        **GRAFANA_QUERY,
        "queryId": "D",
        "startTime": "2023-01-01T00:00:00Z",
        "endTime": "2023-01-02T00:00:00Z",
    },
    {
        **GRAFANA_QUERY,
        "queryId": "E",
        "aggregationId": 2,
        "calculation": "COUNT",
        "recalculatedInterval": {"type": "SECOND", "frequency": 3600},
        "limit": 2,
        "groupingFilters": [gf("@.device", ["ios", "android"])],
    },
    {**GRAFANA_QUERY, "queryId": "F", "groupingFilters": AGG_BOTH, "calculation": "AVG"},
]


@pytest.mark.parametrize("query", MULTI_QUERIES, ids=[m["queryId"] for m in MULTI_QUERIES])
def test_multi_single_query_decodes_to_plain(tiny: Engine, query: Query) -> None:
    """One query: the plugin's decoding of the compact rows equals ``results``."""
    check_multi(tiny, [query])


def test_multi_single_query_without_query_ids() -> None:
    """With one query the plugin fills in a missing queryId; decoding still matches."""
    engine = tiny_engine()
    raw = engine.results_multi([MULTI_QUERIES[0]])
    stripped = [{k: v for k, v in mr.items() if k != "queryId"} for mr in raw]
    decoded = decode_multi(stripped, [MULTI_QUERIES[0]])
    assert as_points(answer(engine, MULTI_QUERIES[0])) == sorted(
        (dt, tuple(sorted(g.items())), v) for dt, g, v in decoded["A"][2]
    )


@pytest.mark.parametrize("order", [list(range(6)), [3, 5, 0, 4, 2, 1]])
def test_multi_several_queries_decode_to_plain(tiny: Engine, order: list[int]) -> None:
    """Several queries: every value row carries its queryId and decodes to its plain answer."""
    queries = [MULTI_QUERIES[i] for i in order]
    raw = check_multi(tiny, queries)
    for mr in raw:
        if mr.get("isSeperator"):
            assert isinstance(mr["groupings"], dict) and "queryId" not in mr
        else:
            assert mr["queryId"] in {m["queryId"] for m in queries}
            assert mr.get("dtSecLater", 0) >= 0


def test_multi_each_query_gets_its_own_separators(tiny: Engine) -> None:
    """No value row of a query follows a separator emitted for another query's series."""
    raw = tiny.results_multi(MULTI_QUERIES)
    owner = None
    seen_after_separator: set[str] = set()
    for mr in raw:
        if mr.get("isSeperator"):
            owner = None
            seen_after_separator = set()
            continue
        seen_after_separator.add(mr["queryId"])
        owner = owner or mr["queryId"]
        assert seen_after_separator == {owner}


def test_multi_rollup_offsets_are_whole_intervals(tiny: Engine) -> None:
    """``dtSecLater`` counts seconds from the separator's base ``dt``."""
    query = {**GRAFANA_QUERY, "queryId": "R", "recalculatedInterval": HOURLY}
    raw = check_multi(tiny, [query])
    assert {mr.get("dtSecLater", 0) % 3600 for mr in raw if not mr.get("isSeperator")} == {0}


def test_multi_on_generated_data(gen: tuple[Engine, ReferenceEngine]) -> None:
    """Hundreds of series over several queries decode exactly."""
    engine, _ = gen
    queries = [
        {**GRAFANA_QUERY, "queryId": "A", "endTime": "2024-01-01T03:00:00Z"},
        {
            **GRAFANA_QUERY,
            "queryId": "B",
            "endTime": "2024-01-01T03:00:00Z",
            "calculation": "APPROX_COUNT_DISTINCT",
            "recalculatedInterval": {"type": "MINUTE", "frequency": 10},
        },
        {
            **GRAFANA_QUERY,
            "queryId": "C",
            "endTime": "2024-01-01T03:00:00Z",
            "calculation": "MAX",
            "groupingFilters": AGG_COUNTRY,
            "includeIncompleteIntervals": False,
        },
    ]
    raw = check_multi(engine, queries)
    assert sum(1 for mr in raw if mr.get("isSeperator")) > 20


def test_multi_error_names_the_query(tiny: Engine) -> None:
    """An invalid query in a batch raises a QueryError whose field names its index."""
    bad = {**GRAFANA_QUERY, "queryId": "B", "calculation": "PERCENTILES", "percentile": 2}
    with pytest.raises(QueryError) as info:
        tiny.results_multi([MULTI_QUERIES[0], bad])
    assert info.value.field == "[1].percentile"


def test_multi_empty_batch(tiny: Engine) -> None:
    """No queries, no rows."""
    assert tiny.results_multi([]) == []


# =============================================================================================
# groupings (spec 7.4)


def gq(name: str, **extra: Any) -> Query:
    """A variables-mode request of a grouping's distinct values."""
    return {
        "filterId": "f",
        "aggregationId": 2,
        "calculation": "COUNT",
        "mode": "variables",
        "groupingName": name,
        **extra,
    }


GROUPINGS_CASES: list[tuple[str, Query, list[str]]] = [
    ("device", gq("@.device"), ["", "android", "ios", "web"]),
    ("by-alias", gq("Device"), ["", "android", "ios", "web"]),
    ("country", gq("@.country"), ["", "DE", "US"]),
    ("window-start", gq("@.device", startTime="2024-01-01T00:01:00Z"), ["android", "ios", "web"]),
    ("window-end", gq("@.device", endTime="2024-01-01T00:01:00Z"), ["", "android", "ios"]),
    ("empty-window", gq("@.device", startTime="2025-01-01T00:00:00Z"), []),
    (
        "narrowed-by-other-filter",
        gq("@.device", groupingFilters=[gf("@.country", ["DE"])]),
        ["android", "ios"],
    ),
    ("own-filter", gq("@.device", groupingFilters=[gf("@.device", ["ios", "nokia"])]), ["ios"]),
    ("exclude-empty", gq("@.country", excludeEmptyGroupings=True), ["DE", "US"]),
    (
        "grafana-fields",
        {
            **GRAFANA_QUERY,
            "mode": "variables",
            "groupingName": "@.country",
            "includeAggregateOption": True,
            "queryId": "tempvar",
        },
        ["", "DE", "US"],
    ),
]


@pytest.mark.parametrize(
    ("query", "values"),
    [(c[1], c[2]) for c in GROUPINGS_CASES],
    ids=[c[0] for c in GROUPINGS_CASES],
)
def test_grouping_values(tiny: Engine, query: Query, values: list[str]) -> None:
    """Distinct values of ``groupingName`` in the window, as ``[{"value": ...}]``, sorted."""
    assert tiny.groupings(query) == [{"value": v} for v in values]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        (gq("@.os"), "groupingName"),
        ({k: v for k, v in gq("x").items() if k != "groupingName"}, "groupingName"),
        (gq(""), "groupingName"),
        (gq("@.device", startTime="soon"), "startTime"),
    ],
)
def test_grouping_values_invalid(tiny: Engine, query: Query, name: str) -> None:
    """A missing or unknown groupingName is a QueryError naming it."""
    with pytest.raises(QueryError) as info:
        tiny.groupings(query)
    assert info.value.field == name


@pytest.mark.parametrize(
    "agg_fields",
    [
        {"aggregationId": 0, "calculation": ""},  # what Go marshals for an unset variable query
        {},
    ],
)
def test_grouping_values_of_a_grafana_variable(tiny: Engine, agg_fields: Query) -> None:
    """The plugin's variables-mode request (no aggregation chosen) lists the values."""
    query = {
        **GRAFANA_QUERY,
        "mode": "variables",
        "groupingName": "@.device",
        "queryId": "tempvar",
        "includeAggregateOption": True,
    }
    for key in ("aggregationId", "calculation"):
        query.pop(key)
    assert tiny.groupings({**query, **agg_fields}) == [
        {"value": v} for v in ["", "android", "ios", "web"]
    ]


def test_grouping_values_unknown_filter(tiny: Engine) -> None:
    """An unknown filter is NotFoundError."""
    with pytest.raises(NotFoundError):
        tiny.groupings({**gq("@.device"), "filterId": "nope"})


# =============================================================================================
# filter definitions (spec 5.7 / 7.1)


def test_filter_definitions_shape(tiny: Engine) -> None:
    """Every filter as spec 5.7 JSON, with the fields the plugin and the demo read."""
    defs = tiny.filter_definitions()
    assert [d["id"] for d in defs] == [f["id"] for f in TINY_FILTERS]
    json.dumps(defs)
    for d, source in zip(defs, TINY_FILTERS, strict=True):
        assert {
            "id",
            "name",
            "filter",
            "groupings",
            "groupingItems",
            "intervalType",
            "intervalCount",
            "aggregations",
        } <= set(d)
        assert d["name"] == source["name"]
        assert d["filter"] in (None, "")
        assert d["groupingItems"] == source["groupingItems"]
        assert d["groupings"] == [g["grouping"] for g in source["groupingItems"]]
        assert (d["intervalType"], d["intervalCount"]) == (
            source["intervalType"],
            source["intervalCount"],
        )
        for a, sa in zip(d["aggregations"], source["aggregations"], strict=True):
            assert {"id", "name", "calculations", "calculationField", "subFilter"} <= set(a)
            for key in ("id", "name", "calculations", "calculationField"):
                assert a[key] == sa[key]
            assert a["subFilter"] in (None, "")
            assert all(c in ALL_CALCS for c in a["calculations"])


def test_filter_definitions_round_trip(tiny: Engine) -> None:
    """The definitions build an equal engine (spec 5.7 JSON is also the input shape)."""
    again = Engine(INGEST, tiny.filter_definitions())
    assert again.filter_definitions() == tiny.filter_definitions()


def test_filter_definitions_keep_filter_and_sub_filter() -> None:
    """Filter and sub-filter expressions come back as given."""
    fdef = filter_def("x")
    fdef["filter"] = "@.device == 'ios'"
    fdef["aggregations"][0]["subFilter"] = "@.v > 2"
    defs = Engine(INGEST, [fdef]).filter_definitions()
    assert defs[0]["filter"] == "@.device == 'ios'"
    assert defs[0]["aggregations"][0]["subFilter"] == "@.v > 2"


# =============================================================================================
# ResultArrays


def test_result_arrays_columns(tiny: Engine) -> None:
    """dt is datetime64[ms], values float64, one unicode column per returned grouping key."""
    arr = tiny.results_arrays(q(aggregation_id=1, calculation="SUM"))
    assert len(arr) == len(TINY_SUM)
    assert set(arr.groupings) == {"Device", "@.country"}
    assert arr.dt[0] == np.datetime64("2024-01-01T00:00:00", "ms")
    assert arr.values.tolist() == [float(r[-1]) for r in TINY_SUM]
    assert arr.groupings["Device"].tolist() == [r[1] for r in TINY_SUM]
    assert [arr.tuples[c] for c in arr.codes] == [[r[1], r[2]] for r in TINY_SUM]


def test_result_arrays_empty_and_ungrouped(tiny: Engine) -> None:
    """An empty answer keeps its columns; an ungrouped filter has no grouping columns."""
    empty = tiny.results_arrays(q(startTime="2030-01-01T00:00:00Z"))
    assert len(empty) == 0 and set(empty.groupings) == {"Device", "@.country"}
    assert empty.dt.dtype == np.dtype("datetime64[ms]")
    assert tiny.results_arrays(q("g")).groupings == {}


def test_result_arrays_to_pandas(tiny: Engine) -> None:
    """``to_pandas()`` gives dt, one column per grouping, value (skipped without pandas)."""
    pd = pytest.importorskip("pandas")
    arr = tiny.results_arrays(q(aggregation_id=1, calculation="SUM"))
    frame = arr.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["dt", *arr.groupings, "value"]
    assert len(frame) == len(arr)
    assert frame["value"].tolist() == arr.values.tolist()
    assert frame["dt"].iloc[0] == pd.Timestamp("2024-01-01T00:00:00")
    assert frame["Device"].tolist() == arr.groupings["Device"].tolist()


def test_result_arrays_to_arrow(tiny: Engine) -> None:
    """``to_arrow()`` gives a table with a millisecond timestamp column (skipped w/o pyarrow)."""
    pa = pytest.importorskip("pyarrow")
    arr = tiny.results_arrays(q(aggregation_id=1, calculation="SUM"))
    table = arr.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.column_names == ["dt", *arr.groupings, "value"]
    assert table.num_rows == len(arr)
    assert table.schema.field("dt").type == pa.timestamp("ms")
    assert table.column("value").to_pylist() == arr.values.tolist()


@pytest.mark.parametrize("calc", ["SUM", "AVG"])
def test_overflowing_sum_same_both_ways(calc: str) -> None:
    """An overflowing SUM/AVG is the largest finite float in results, arrays and multi rows."""
    engine = Engine(INGEST, [filter_def("f")], clock=Clock(T0))
    engine.ingest(ndjson([{"ts": T0, "device": "a", "country": "b", "v": 1e308}] * 2))
    for extra in ({}, {"recalculatedInterval": HOURLY}):
        query = q(aggregation_id=1, calculation=calc, **extra)
        rows = answer(engine, query)
        assert rows[0]["value"] == sys.float_info.max
        multi = engine.results_multi([{**query, "queryId": "A"}])
        assert multi[1]["val"] == sys.float_info.max


def test_arrays_keep_values_exactly() -> None:
    """Grouping columns keep every value as is: trailing NULs and long values are not padded or
    cut, and rows share one string object per distinct value."""
    engine = Engine(INGEST, [filter_def("f")], clock=Clock(T0))
    long = "x" * 20_000
    events = [{"ts": T0, "device": v, "country": "c", "v": 1} for v in ("a\x00", long, "a\x00")]
    engine.ingest(ndjson(events))
    arr = engine.results_arrays(q(aggregation_id=1, calculation="COUNT"))
    col = arr.groupings["Device"]
    assert sorted(set(col)) == sorted({"a\x00", long})
    assert col.dtype == np.dtype(object)


def test_rollup_answers_do_not_depend_on_storage_order() -> None:
    """Rollups, collapses and Top/Bottom-N give the same bytes whether rows were stored in time
    order (one streaming pass) or not (cells numbered first): integer values, so sums are exact."""
    rnd = random.Random(16)
    events = [
        {
            "ts": T0 + rnd.randrange(180 * 60),
            "device": f"d{rnd.randrange(25)}",
            "country": rnd.choice(["", "fr", "de"]),
            "v": rnd.randrange(-40, 400),
        }
        for _ in range(3000)
    ]
    now = T0 + 170 * 60
    engines = []
    for ordered in (True, False):
        engine = Engine(INGEST, [filter_def("f")], clock=lambda: now)
        batch = sorted(events, key=lambda e: e["ts"]) if ordered else events
        for i in range(0, len(batch), 250):
            engine.ingest(ndjson(batch[i : i + 250]))
        engines.append(engine)
    hour = {"type": "HOUR", "frequency": 1}
    shapes: list[dict[str, Any]] = [
        {"recalculatedInterval": {"type": "MINUTE", "frequency": 7}},
        {"groupingFilters": [{"grouping": "@.device", "filters": ["$__agg"]}]},
        {"groupingFilters": [{"grouping": "@.country", "returnGroupingValues": False}]},
        {"limit": 3, "recalculatedInterval": {"type": "SECOND", "frequency": 120}},
        {"limit": 2, "limitType": "Bottom", "recalculatedInterval": hour},
        {"limit": 40, "recalculatedInterval": {"type": "SECOND", "frequency": 300}},
        {"includeIncompleteIntervals": False, "recalculatedInterval": hour},
    ]
    for calc in ALL_CALCS:
        for shape in shapes:
            query = {"filterId": "f", "aggregationId": 1, "calculation": calc, **shape}
            if calc == "PERCENTILES":
                query["percentile"] = 0.9
            body = json.dumps(query).encode()
            ordered_text, stored_text = (b"".join(e.answer_json("results", body)) for e in engines)
            assert ordered_text == stored_text, query
            assert json.loads(ordered_text), query
