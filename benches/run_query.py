"""Query and snapshot benchmark (benches/README.md): eventtally's read side against DuckDB.

Run it as a script (one run, prints markdown tables with ratios)::

    python benches/run_query.py                       # one day x 1,000 combinations
    python benches/run_query.py --minutes 60 --a 10 --b 10 --repeat 3   # small

What this module guarantees:

- The workload: one day of 1-minute buckets x 1,000 grouping combinations (``@.a`` 50 values x
  ``@.b`` 20 values), one event per (minute, combination): 1,440,000 events generated as compact
  NDJSON from integer formulas (deterministic, no randomness) and ingested into one engine. The
  filter has COUNT, SUM, MIN, MAX, AVG, PERCENTILES of ``@.v`` and APPROX_COUNT_DISTINCT of ``@.u``.
- The three queries of the issue, for SUM over the whole day: ``plain`` (every cell: 1.44 M
  rows), ``rollup`` (``recalculatedInterval`` 1 hour: 24,000 rows), ``agg`` (``$__agg`` on
  ``@.b``: 72,000 rows). eventtally answers with ``Engine.results_arrays`` (numpy columns,
  including the grouping string columns); the JSON rows of ``Engine.results`` are timed too.
- DuckDB answers the same three queries from its own pre-rolled-up table (one row per minute and
  combination with count, sum, min, max: the same state eventtally keeps), built before timing,
  with ``SET threads=1`` like eventtally's single-threaded query; ``time_bucket`` for the rollup;
  ``ORDER BY`` time then groupings as eventtally orders; results fetched as Arrow (no Python
  object per row) when pyarrow is installed, else as numpy.
- Every timed answer is checked against values computed from the generating formulas (and
  DuckDB's against eventtally's); a wrong answer raises ``AssertionError``.
- Snapshots: ``to_bytes`` and ``from_bytes`` of the state after 1,000,000 events (1,000 minutes x
  1,000 combinations: one cell per event, the worst case for state size), plus its size.
- Times are the best of ``--repeat`` runs after one warm-up (the median is printed beside it);
  eventtally and DuckDB run interleaved, round by round, so background load hits both alike and
  the ratios of one run are robust even when the absolute numbers are not.

``bench_query.py`` (pytest-benchmark) imports the workload, queries and checks from here.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from eventtally import Engine

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
DAY_END = "2024-01-02T00:00:00Z"
INGEST = {
    "id": "q",
    "name": "query bench",
    "schema": "NEWLINE_DELIMITED",
    "timestamp": {"source": "PROPERTY", "path": "@.t", "format": "UNIX_SECONDS"},
}
FILTER = {
    "id": "q",
    "name": "query bench",
    "groupingItems": [{"grouping": "@.a", "alias": None}, {"grouping": "@.b", "alias": None}],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "v",
            "calculations": ["COUNT", "SUM", "MIN", "MAX", "AVG", "PERCENTILES"],
            "calculationField": "@.v",
        },
        {
            "id": 2,
            "name": "u",
            "calculations": ["APPROX_COUNT_DISTINCT"],
            "calculationField": "@.u",
        },
    ],
}
BATCH_EVENTS = 250_000

QUERIES: dict[str, dict[str, Any]] = {
    "plain": {},
    "rollup": {"recalculatedInterval": {"type": "SECOND", "frequency": 3600}},
    "agg": {
        "groupingFilters": [
            {"grouping": "@.b", "filters": ["$__agg"], "returnGroupingValues": False}
        ]
    },
}
QUERY_LABELS = {
    "plain": "plain (every cell)",
    "rollup": "rollup to 1 hour",
    "agg": "`$__agg` on `@.b`",
}


@dataclass(frozen=True)
class Workload:
    """``minutes`` x (``a`` x ``b``) cells, one event each."""

    minutes: int = 1440
    a: int = 50
    b: int = 20

    @property
    def combos(self) -> int:
        return self.a * self.b

    @property
    def events(self) -> int:
        return self.minutes * self.combos

    def columns(self) -> dict[str, np.ndarray]:
        """Per event (minute-major): minute, a index, b index, v, u; all integer formulas."""
        m = np.repeat(np.arange(self.minutes, dtype=np.int64), self.combos)
        c = np.tile(np.arange(self.combos, dtype=np.int64), self.minutes)
        return {
            "minute": m,
            "a": c // self.b,
            "b": c % self.b,
            "sec": c % 60,
            "v": (m * 37 + c * 101) % 1000,
            "u": (m * 13 + c) % 50_000,
        }

    def ndjson_batches(self, batch: int = BATCH_EVENTS) -> list[str]:
        """The events as NDJSON batches of at most ``batch`` lines."""
        cols = self.columns()
        t = (T0 + 60 * cols["minute"] + cols["sec"]).tolist()
        a, b = cols["a"].tolist(), cols["b"].tolist()
        v, u = cols["v"].tolist(), cols["u"].tolist()
        lines = [
            f'{{"t":{t[i]},"a":"a{a[i]:02d}","b":"b{b[i]:02d}","v":{v[i]},"u":"u{u[i]}"}}'
            for i in range(self.events)
        ]
        return ["\n".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]


def build_engine(work: Workload) -> Engine:
    """An engine holding the workload (clock after the day, so every interval is complete)."""
    engine = Engine(INGEST, [FILTER], clock=lambda: T0 + 2 * 86_400)
    for body in work.ndjson_batches():
        engine.ingest(body)
    return engine


def query(name: str, calculation: str = "SUM") -> dict[str, Any]:
    """The Metrics API request of one benchmark query over the whole day."""
    return {
        "filterId": "q",
        "aggregationId": 1,
        "calculation": calculation,
        "startTime": "2024-01-01T00:00:00Z",
        "endTime": DAY_END,
        **QUERIES[name],
    }


# ---------------------------------------------------------------- expected answers


def expected(work: Workload, name: str) -> dict[str, np.ndarray]:
    """The exact SUM answer of a query, from the formulas: keys dt (ms), a, b (str), value."""
    cols = work.columns()
    dt = (T0 + 60 * cols["minute"]) * 1000
    a = cols["a"]
    b = cols["b"]
    v = cols["v"].astype(np.float64)
    if name == "rollup":
        dt = dt // 3_600_000 * 3_600_000
    if name == "agg":
        b = np.zeros_like(b)
    key = np.stack([dt, a, b])
    uniq, inverse = np.unique(key, axis=1, return_inverse=True)
    sums = np.zeros(uniq.shape[1])
    np.add.at(sums, inverse.ravel(), v)
    out = {
        "dt": uniq[0],
        "a": np.char.add("a", np.char.zfill(uniq[1].astype(str), 2)),
        "value": sums,
    }
    if name != "agg":
        out["b"] = np.char.add("b", np.char.zfill(uniq[2].astype(str), 2))
    return out


def check_eventtally(arrays: Any, want: dict[str, np.ndarray]) -> None:
    """eventtally's arrays equal the expected answer, in order (dt, then grouping values)."""
    assert np.array_equal(arrays.dt.astype("int64"), want["dt"])
    assert np.array_equal(arrays.values, want["value"])
    assert np.array_equal(arrays.groupings["@.a"], want["a"])
    if "b" in want:
        assert np.array_equal(arrays.groupings["@.b"], want["b"])
    else:
        assert "@.b" not in arrays.groupings


# ---------------------------------------------------------------- DuckDB

_WINDOW = "minute >= TIMESTAMP '2024-01-01 00:00:00' AND minute < TIMESTAMP '2024-01-02 00:00:00'"
DUCKDB_SQL = {
    "plain": f"SELECT minute AS dt, a, b, s AS value FROM rolled WHERE {_WINDOW} ORDER BY dt, a, b",
    "rollup": "SELECT time_bucket(INTERVAL 1 HOUR, minute) AS dt, a, b, sum(s) AS value "
    f"FROM rolled WHERE {_WINDOW} GROUP BY ALL ORDER BY dt, a, b",
    "agg": "SELECT minute AS dt, a, sum(s) AS value FROM rolled "
    f"WHERE {_WINDOW} GROUP BY ALL ORDER BY dt, a",
}


def duckdb_available() -> bool:
    """Whether the DuckDB comparison can run (duckdb, and pyarrow or pandas to load it)."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return _frame_module() is not None


def _frame_module() -> str | None:
    for name in ("pyarrow", "pandas"):
        try:
            __import__(name)
        except ImportError:
            continue
        return name
    return None


class DuckDB:
    """DuckDB with the workload's pre-rolled-up table ``rolled(minute, a, b, cnt, s, mn, mx)``."""

    def __init__(self, work: Workload, threads: int = 1) -> None:
        import duckdb

        cols = work.columns()
        raw = {
            "t": (T0 + 60 * cols["minute"] + cols["sec"]) * 1_000_000,  # microseconds
            "a": np.char.add("a", np.char.zfill(cols["a"].astype(str), 2)),
            "b": np.char.add("b", np.char.zfill(cols["b"].astype(str), 2)),
            "v": cols["v"].astype(np.float64),
        }
        self.con = duckdb.connect()
        self.con.execute(f"SET threads={threads}")
        self.arrow = _frame_module() == "pyarrow"
        if self.arrow:
            import pyarrow as pa

            frame: Any = pa.table({**raw, "t": pa.array(raw["t"], pa.timestamp("us"))})
        else:
            import pandas as pd

            frame = pd.DataFrame({**raw, "t": raw["t"].astype("datetime64[us]")})
        self.con.register("raw_events", frame)
        self.con.execute(
            "CREATE TABLE rolled AS SELECT date_trunc('minute', t) AS minute, a, b, "
            "count(*) AS cnt, sum(v) AS s, min(v) AS mn, max(v) AS mx "
            "FROM raw_events GROUP BY ALL"
        )
        self.con.unregister("raw_events")

    def run(self, name: str) -> Any:
        """One query answered as columns (Arrow table, or a dict of numpy arrays)."""
        relation = self.con.sql(DUCKDB_SQL[name])
        if not self.arrow:
            return relation.fetchnumpy()
        # DuckDB 2 names it to_arrow_table; 1.x has arrow()
        fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
        return fetch()

    def check(self, answer: Any, want: dict[str, np.ndarray]) -> None:
        """DuckDB's answer equals the expected one, in the same order."""
        cols = {k: np.asarray(answer[k]) for k in (answer.column_names if self.arrow else answer)}
        assert np.array_equal(cols["dt"].astype("datetime64[ms]").astype("int64"), want["dt"])
        assert np.array_equal(cols["value"], want["value"])
        assert np.array_equal(cols["a"].astype(str), want["a"])
        if "b" in want:
            assert np.array_equal(cols["b"].astype(str), want["b"])


# ---------------------------------------------------------------- timing


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best (minimum) seconds of ``repeat`` calls after one warm-up, and the last result."""
    times, result = race({"fn": fn}, repeat)
    return min(times["fn"]), result["fn"]


def race(
    fns: dict[str, Callable[[], Any]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Runs the callables interleaved, ``repeat`` rounds after one warm-up each, so background
    load hits all of them alike; returns every time and the last result of each."""
    results = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times, results


def snapshot_times(engine: Engine, repeat: int) -> tuple[list[float], list[float], int]:
    """Times of ``to_bytes`` and ``from_bytes`` (interleaved), and the snapshot size in bytes."""
    data = engine.to_bytes()
    times, results = race({"to": engine.to_bytes, "from": lambda: Engine.from_bytes(data)}, repeat)
    assert results["to"] == data and results["from"].to_bytes() == data
    return times["to"], times["from"], len(data)


def ms(seconds: list[float]) -> str:
    """Best time, with the median in parentheses."""
    return f"{min(seconds) * 1000:.1f} ms ({statistics.median(seconds) * 1000:.1f})"


def query_tables(engine: Engine, duck: DuckDB | None, work: Workload, repeat: int) -> None:
    """Times and checks the three queries; prints two markdown tables."""
    print(
        "| query | rows | eventtally `results_arrays` | DuckDB (pre-rolled table) "
        "| DuckDB / eventtally | eventtally `results` (JSON rows) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in QUERIES:
        want = expected(work, name)
        fns: dict[str, Callable[[], Any]] = {
            "arrays": lambda n=name: engine.results_arrays(query(n)),
        }
        if duck is not None:
            fns["duck"] = lambda n=name: duck.run(n)
        times, results = race(fns, repeat)
        check_eventtally(results["arrays"], want)
        duck_cell = ratio = "-"
        if duck is not None:
            duck.check(results["duck"], want)
            duck_cell = ms(times["duck"])
            ratio = f"{min(times['duck']) / min(times['arrays']):.2f}x"
        n_rows = len(results["arrays"])
        # JSON rows build one dict per row: slow for big answers, so fewer runs
        rows_repeat = 1 if n_rows > 100_000 else max(1, repeat // 3)
        start = time.perf_counter()
        for _ in range(rows_repeat):
            rows = engine.results(query(name))
        rows_s = (time.perf_counter() - start) / rows_repeat
        assert len(rows) == n_rows
        del rows
        print(
            f"| {QUERY_LABELS[name]} | {n_rows:,} | {ms(times['arrays'])} | {duck_cell} | "
            f"{ratio} | {rows_s * 1000:.1f} ms |",
            flush=True,
        )

    print(
        "\nOther calculations, eventtally `results_arrays` (DuckDB has no mergeable state for "
        "the sketches):\n"
    )
    print("| query | AVG | MAX | PERCENTILES p99 | APPROX_COUNT_DISTINCT |")
    print("|---|---:|---:|---:|---:|")
    for name in QUERIES:
        cells = []
        for calc in ("AVG", "MAX", "PERCENTILES", "APPROX_COUNT_DISTINCT"):
            q = query(name, calc)
            if calc == "PERCENTILES":
                q["percentile"] = 0.99
            if calc == "APPROX_COUNT_DISTINCT":
                q["aggregationId"] = 2
            times, _ = race({"q": lambda q=q: engine.results_arrays(q)}, repeat)
            cells.append(ms(times["q"]))
        print(f"| {QUERY_LABELS[name]} | " + " | ".join(cells) + " |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="eventtally query and snapshot benchmark")
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--a", type=int, default=50, help="values of grouping @.a")
    parser.add_argument("--b", type=int, default=20, help="values of grouping @.b")
    parser.add_argument("--snapshot-events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--no-duckdb", action="store_true")
    args = parser.parse_args(argv)
    work = Workload(args.minutes, args.a, args.b)

    t = time.perf_counter()
    engine = build_engine(work)
    build_s = time.perf_counter() - t
    print(
        f"eventtally query benchmark: {work.minutes} minutes x {work.combos} combinations "
        f"({work.a} x {work.b}) = {work.events:,} events, ingested in {build_s:.2f} s; "
        f"state {engine.state_bytes() / 2**20:.0f} MiB; best of {args.repeat} interleaved "
        f"runs (median in parentheses)\n"
    )
    duck = None
    if not args.no_duckdb and duckdb_available():
        import duckdb

        duck = DuckDB(work)
        print(
            f"DuckDB {duckdb.__version__}, threads=1, answers fetched as "
            f"{'Arrow' if duck.arrow else 'numpy'}\n"
        )
    elif not args.no_duckdb:
        print("DuckDB comparison skipped: install duckdb and pyarrow (or pandas)\n")
    query_tables(engine, duck, work, args.repeat)
    engine = duck = None  # type: ignore[assignment]
    gc.collect()

    minutes = max(1, args.snapshot_events // work.combos)
    snap_work = Workload(minutes, work.a, work.b)
    snap_engine = build_engine(snap_work)
    to_s, from_s, size = snapshot_times(snap_engine, max(1, args.repeat // 2))
    print(
        f"\nSnapshot of the state of {snap_work.events:,} events ({snap_work.events:,} cells, "
        f"every calculation; state {snap_engine.state_bytes() / 2**20:.0f} MiB):\n"
    )
    print("| operation | time | size |")
    print("|---|---:|---:|")
    print(f"| `to_bytes` | {ms(to_s)} | {size / 2**20:.1f} MiB |")
    print(f"| `from_bytes` | {ms(from_s)} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
