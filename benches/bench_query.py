"""pytest-benchmark suites for the read side (benches/README.md): queries, and snapshots of the
state.

- The workload, queries and checks come from ``run_query.py``: one event per (minute, grouping
  combination), SUM answered ``plain``, rolled up to 1 hour, and with ``$__agg`` on ``@.b``;
  eventtally (``results_arrays`` and ``results``) against DuckDB reading its own pre-rolled-up
  table (skipped without duckdb and pyarrow or pandas).
- In normal runs (the project's ``--benchmark-disable``) each benchmark runs once on a small
  workload (60 minutes x 50 combinations) and checks its answer: a smoke test of a few seconds.
  ``EVENTTALLY_BENCH_FULL=1`` selects the issue's size: 1,440 minutes x 1,000 combinations
  (1.44 M events) and a snapshot of 1,000,000 events.
- Every timed answer is checked against values computed from the generating formulas.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from eventtally import Engine
from run_query import (
    QUERIES,
    DuckDB,
    Workload,
    build_engine,
    check_eventtally,
    duckdb_available,
    expected,
    query,
)

FULL = os.environ.get("EVENTTALLY_BENCH_FULL", "") == "1"
WORK = Workload() if FULL else Workload(minutes=60, a=10, b=5)
SNAPSHOT_WORK = Workload(minutes=1000) if FULL else Workload(minutes=40, a=10, b=5)
NAMES = list(QUERIES)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return build_engine(WORK)


@pytest.fixture(scope="module")
def duck() -> DuckDB:
    if not duckdb_available():
        pytest.skip("DuckDB comparison needs duckdb and pyarrow (or pandas)")
    return DuckDB(WORK)


@pytest.fixture(scope="module")
def snapshot_engine() -> Engine:
    return build_engine(SNAPSHOT_WORK)


@pytest.mark.parametrize("name", NAMES)
def test_eventtally_arrays(benchmark: Any, engine: Engine, name: str) -> None:
    """eventtally answers the query as numpy columns, exactly."""
    benchmark.group = f"query {name}"
    arrays = benchmark(engine.results_arrays, query(name))
    check_eventtally(arrays, expected(WORK, name))


@pytest.mark.parametrize("name", NAMES)
def test_eventtally_rows(benchmark: Any, engine: Engine, name: str) -> None:
    """eventtally answers the query as JSON rows, the same rows as the arrays."""
    benchmark.group = f"query {name}"
    rows = benchmark(engine.results, query(name))
    want = expected(WORK, name)
    assert len(rows) == len(want["value"])
    assert [r["value"] for r in rows] == want["value"].tolist()


@pytest.mark.parametrize("name", NAMES)
def test_duckdb(benchmark: Any, duck: DuckDB, name: str) -> None:
    """DuckDB answers the same query from its pre-rolled-up table, exactly."""
    benchmark.group = f"query {name}"
    answer = benchmark(duck.run, name)
    duck.check(answer, expected(WORK, name))


@pytest.mark.parametrize("calc", ["AVG", "PERCENTILES", "APPROX_COUNT_DISTINCT"])
@pytest.mark.parametrize("name", NAMES)
def test_eventtally_other_calculations(
    benchmark: Any, engine: Engine, name: str, calc: str
) -> None:
    """Merging sketches (rollup, ``$__agg``) answers every cell."""
    benchmark.group = f"query {name}"
    q = query(name, calc)
    if calc == "PERCENTILES":
        q["percentile"] = 0.99
    if calc == "APPROX_COUNT_DISTINCT":
        q["aggregationId"] = 2
    arrays = benchmark(engine.results_arrays, q)
    assert len(arrays) == len(expected(WORK, name)["value"])


def test_snapshot_to_bytes(benchmark: Any, snapshot_engine: Engine) -> None:
    """``to_bytes`` of the whole state."""
    benchmark.group = "snapshot"
    data = benchmark(snapshot_engine.to_bytes)
    assert data[:8] == b"ETALLY\x00\x01"


def test_snapshot_from_bytes(benchmark: Any, snapshot_engine: Engine) -> None:
    """``from_bytes`` rebuilds an engine that answers exactly like the original."""
    benchmark.group = "snapshot"
    data = snapshot_engine.to_bytes()
    loaded = benchmark(Engine.from_bytes, data)
    for name in NAMES:
        check_eventtally(loaded.results_arrays(query(name)), expected(SNAPSHOT_WORK, name))
