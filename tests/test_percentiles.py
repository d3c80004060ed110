"""PERCENTILES as PERCENTILE_CONT (decision 11, ``docs/decisions.md``; ``docs/semantics.md``).

- A cell of at most 100 values answers exactly: bit for bit ``numpy.quantile(values, p)``
  (method ``linear``), which is also pandas, DuckDB ``quantile_cont`` and warehouse
  ``PERCENTILE_CONT``; the two examples of issue 11 hold.
- A larger cell answers within 1 % of numpy on realistic data and never outside the ±1 % rank
  window (widened by the sketch's 0.5 %).
- Merge equals replay bit for bit for every calculation (decision 8), also when exact cells
  merge into a sketch because their total passes the bound, in any split and order, and for
  query-time rollups and ``$__agg``.
- A version-1 snapshot (bins only, written by the build before this change) still loads and
  answers within the sketch's bounds.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eventtally import Engine
from tests.reference import percentile_cont
from tests.support import value_distribution

HERE = Path(__file__).resolve().parent
GRID = (1e-3, 0.01, 0.05, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
LIMIT = 100

INGEST = {
    "id": "in",
    "schema": "ARRAY_OF_EVENTS",
    "timestamp": {"source": "PROPERTY", "path": "@.t", "format": "ISO_8601"},
}
FILTER = {
    "id": "pct",
    "name": "Percentiles",
    "filter": "",
    "groupingItems": [{"grouping": "@.g", "alias": "G"}],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "V",
            "calculations": ["COUNT", "PERCENTILES"],
            "calculationField": "@.v",
        }
    ],
}
T = "2024-05-14T09:21:00Z"


def engine_with(values: list[float], group: str = "a", minute: int = 21) -> Engine:
    e = Engine(INGEST, [FILTER])
    e.ingest(events(values, group, minute))
    return e


def events(values: list[float], group: str = "a", minute: int = 21) -> bytes:
    t = f"2024-05-14T09:{minute:02d}:00Z"
    return json.dumps([{"g": group, "v": v, "t": t} for v in values]).encode()


def pct(engine: Engine, p: float, **extra: Any) -> list[float]:
    q = {"filterId": "pct", "aggregationId": 1, "calculation": "PERCENTILES", "percentile": p}
    return [r["value"] for r in engine.results({**q, **extra})]


def one(engine: Engine, p: float, **extra: Any) -> float:
    (value,) = pct(engine, p, **extra)
    return value


def window(ordered: list[float], p: float) -> tuple[float, float]:
    """The ±1 % rank window of ``p``, widened by the sketch's 0.5 % relative value error."""
    n = len(ordered)
    h = p * (n - 1)
    lo = ordered[max(0, math.floor(h - 0.01 * n))]
    hi = ordered[min(n - 1, math.ceil(h + 0.01 * n))]
    return lo - abs(lo) * 0.005, hi + abs(hi) * 0.005


# ---------------------------------------------------------------------------------------------
# Exact cells


def test_issue_examples() -> None:
    """p99 of seats {3, 5} is 4.98 and the median of the eight prices is 20.64, as numpy says."""
    assert one(engine_with([3, 5]), 0.99) == float(np.quantile([3, 5], 0.99)) == 4.98
    prices = [6.97, 12.9, 15.9, 15.91, 25.37, 32.44, 91.97, 183.8]
    got = one(engine_with(prices), 0.5)
    assert got == float(np.quantile(prices, 0.5))
    assert got == pytest.approx(20.64, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 33, 64, 99, 100])
@pytest.mark.parametrize("kind", ["lognormal", "integers", "signed", "ties"])
def test_small_cells_equal_numpy_bit_for_bit(n: int, kind: str) -> None:
    """Every cell of at most 100 values answers exactly numpy's linear quantile."""
    rng = random.Random(f"{n}-{kind}")
    values: list[float] = {
        "lognormal": lambda: [rng.lognormvariate(3, 1.5) for _ in range(n)],
        "integers": lambda: [float(rng.randint(1, 12)) for _ in range(n)],
        "signed": lambda: [rng.gauss(0, 100) for _ in range(n)],
        "ties": lambda: [float(rng.choice([0, 2.5, 2.5, 7])) for _ in range(n)],
    }[kind]()
    e = engine_with(values)
    for p in GRID:
        got = one(e, p)
        assert got == float(np.quantile(values, p)), (p, got)
        assert got == percentile_cont(sorted(values), p)


def test_limit_is_one_hundred_values() -> None:
    """100 values are exact; the 101st moves the cell into the sketch (documented bound)."""
    values = [float(i) * 1.001 for i in range(1, 102)]
    exact = engine_with(values[:LIMIT])
    assert all(one(exact, p) == float(np.quantile(values[:LIMIT], p)) for p in GRID)
    binned = engine_with(values)
    diffs = [one(binned, p) != float(np.quantile(values, p)) for p in GRID]
    assert any(diffs), "a 101-value cell reads bins, not the values"


# ---------------------------------------------------------------------------------------------
# Large cells


@pytest.mark.parametrize("n", [101, 500, 5000, 50_000])
@pytest.mark.parametrize(
    "name", ["latency ms", "revenue", "seats", "normal around zero", "uniform"]
)
def test_large_cells_stay_close_to_numpy(name: str, n: int) -> None:
    """Within 1 % of numpy (away from zero crossings) and never outside the ±1 % rank window."""
    rng = random.Random(f"{name}-{n}")
    values = value_distribution(name, rng, n)
    e = Engine(INGEST, [FILTER])
    for start in range(0, n, 10_000):
        e.ingest(events(values[start : start + 10_000]))
    ordered = sorted(values)
    for p in GRID:
        got = one(e, p)
        exact = float(np.quantile(values, p))
        lo, hi = window(ordered, p)
        assert lo - 1e-9 <= got <= hi + 1e-9, (p, got, lo, hi)
        h = p * (n - 1)
        a, b = ordered[math.floor(h)], ordered[min(n - 1, math.floor(h) + 1)]
        if a * b > 0:  # same sign: the relative error is meaningful
            assert got == pytest.approx(exact, rel=0.01), (p, got, exact)
    assert one(e, 1.0) == max(values)


# ---------------------------------------------------------------------------------------------
# Merge == replay (decision 8)


def _answers(e: Engine) -> list[Any]:
    out = []
    for p in GRID:
        for extra in (
            {},
            {"recalculatedInterval": {"type": "HOUR", "frequency": 1}},
            {"groupingFilters": [{"grouping": "@.g", "filters": ["$__agg"]}]},
        ):
            out.append(pct(e, p, **extra))
    count = {"filterId": "pct", "aggregationId": 1, "calculation": "COUNT"}
    out.append([r["value"] for r in e.results(count)])
    return out


@pytest.mark.parametrize("seed", range(12))
def test_merge_equals_replay_across_the_bound(seed: int) -> None:
    """Cells split over engines (each part exact, the total past 100 or not) merge to the bits
    one engine that saw every event answers, in any merge order; rollups and $__agg too."""
    rng = random.Random(seed)
    parts = rng.randint(2, 6)
    batches: list[list[bytes]] = [[] for _ in range(parts)]
    everything: list[bytes] = []
    for minute in range(20, 26):
        for group in ("a", "b"):
            n = rng.choice([1, 30, 60, 99, 100, 101, 150, 400])
            values = [round(rng.lognormvariate(2, 1), 3) for _ in range(n)]
            for chunk in (values[i : i + 37] for i in range(0, n, 37)):
                body = events(chunk, group, minute)
                everything.append(body)
                batches[rng.randrange(parts)].append(body)
    replay = Engine(INGEST, [FILTER])
    for body in everything:
        replay.ingest(body)
    engines = []
    for bodies in batches:
        e = Engine(INGEST, [FILTER])
        for body in bodies:
            e.ingest(body)
        engines.append(e)
    rng.shuffle(engines)
    merged = engines[0]
    for other in engines[1:]:
        merged.merge(other)
    assert _answers(merged) == _answers(replay)
    # The merged state also survives a snapshot round trip bit for bit.
    assert _answers(Engine.from_bytes(merged.to_bytes())) == _answers(replay)


def test_rollup_of_small_cells_is_exact_then_binned() -> None:
    """A rollup over exact cells answers exactly while they hold at most 100 values together."""
    e = Engine(INGEST, [FILTER])
    minutes = {m: [float(m * 10 + i) for i in range(20)] for m in range(20, 26)}
    for m, values in minutes.items():
        e.ingest(events(values, "a", m))
    hour = {"recalculatedInterval": {"type": "HOUR", "frequency": 1}}
    five = {"startTime": "2024-05-14T09:20:00Z", "endTime": "2024-05-14T09:25:00Z"}
    first_five = [v for m in range(20, 25) for v in minutes[m]]  # exactly 100 values
    for p in GRID:
        assert pct(e, p, **hour, **five) == [float(np.quantile(first_five, p))]
    everything = [v for vs in minutes.values() for v in vs]  # 120 values: binned
    ordered = sorted(everything)
    for p in GRID:
        (got,) = pct(e, p, **hour)
        lo, hi = window(ordered, p)
        assert lo <= got <= hi


# ---------------------------------------------------------------------------------------------
# Version-1 snapshots


V1_SIZES = {"one": 1, "two": 2, "eight": 8, "hundred": 100, "h1": 101, "big": 3000}


def v1_values() -> dict[str, list[float]]:
    """The values in ``data/snapshot-v1-percentiles.etsnap`` (written by the version-1 build
    from this same generator)."""
    rng = random.Random(20261202)
    out: dict[str, list[float]] = {}
    for g, n in V1_SIZES.items():
        out[g] = [
            round(rng.lognormvariate(3, 1), 2) if i % 10 else -rng.random() * 5 for i in range(n)
        ]
    return out


def test_version_1_snapshot_loads_and_answers_within_the_sketch_bounds() -> None:
    """Cells from a version-1 snapshot kept only bins: they load, count exactly, answer inside
    the rank window, and keep merging equal to replaying new events on top."""
    e = Engine.load(HERE / "data" / "snapshot-v1-percentiles.etsnap")
    values = v1_values()
    count = {"filterId": "pct", "aggregationId": 1, "calculation": "COUNT"}
    counts = {r["groupings"]["G"]: r["value"] for r in e.results(count)}
    assert counts == {g: float(len(v)) for g, v in values.items()}
    for p in GRID:
        q = {"filterId": "pct", "aggregationId": 1, "calculation": "PERCENTILES", "percentile": p}
        for row in e.results(q):
            ordered = sorted(values[row["groupings"]["G"]])
            lo, hi = window(ordered, p)
            assert lo <= row["value"] <= hi, (row, lo, hi)
    # Saved again, it is a version-2 snapshot that answers the same.
    again = Engine.from_bytes(e.to_bytes())
    assert _answers(again) == _answers(e)
    # New events on top: merging a loaded engine with a fresh one equals ingesting into it.
    extra = events([1.5, 2.5, 3.5], "eight")
    direct = Engine.load(HERE / "data" / "snapshot-v1-percentiles.etsnap")
    direct.ingest(extra)
    fresh = Engine(INGEST, [FILTER])
    fresh.ingest(extra)
    e.merge(fresh)
    assert _answers(e) == _answers(direct)
