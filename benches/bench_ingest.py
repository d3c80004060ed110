"""pytest-benchmark suites for ingest (benches/README.md): Segment events, raw bytes to columnar
answers.

What this module guarantees:

- Every benchmark times the whole path, from raw bytes in memory to the answer of every
  calculation (engine construction included), on the workload of ``BENCH_FILTER``, and then
  CHECKS that answer: total COUNT equals the matched events and the revenue SUM/MIN/MAX equal the
  totals of the generated objects (sums within 1e-6 relative); eventtally and DuckDB also match
  the reference's exact answer row by row (COUNT exactly, SUM/AVG within 1e-6, MIN/MAX exactly;
  for eventtally the sketches within their documented error too).
- Benchmarks are grouped per dataset (``benchmark.group`` is the dataset name), so each table
  compares eventtally (JSON array, NDJSON, 300-event arrays), the reference and DuckDB on the
  same bytes.
- Under ``--benchmark-disable`` (the project's default ``addopts``) each runs once, so this file
  is a smoke test of the benchmark itself; ``--benchmark-enable`` (``make bench``) times it.
- DuckDB's benchmark is skipped when ``duckdb`` is not installed (it is in the ``bench`` extra).

The runners and checks live in ``run_ingest.py`` so the standalone script measures the same code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from run_ingest import (
    NDJSON_INGEST,
    SKETCH_TOLERANCE,
    Answer,
    check_totals,
    compare,
    normalize_duckdb,
    normalize_eventtally,
    normalize_reference,
    run_duckdb,
    run_eventtally,
    run_reference,
)

if TYPE_CHECKING:  # only for annotations
    from bench_support import Dataset

ROUNDS = max(1, int(os.environ.get("EVENTTALLY_BENCH_ROUNDS", "5")))
"""Timed rounds per benchmark when timing is enabled; the reference gets one (seconds a round)."""


def rounds(engine: str) -> int:
    """Timed rounds for ``engine``."""
    return 1 if engine == "reference" else ROUNDS


def _bench(
    benchmark: Any, dataset: Dataset, engine: str, size: int, fn: Callable[..., Any], *args: Any
) -> Any:
    """Times ``fn(*args)`` in the dataset's group and returns its (last) result."""
    benchmark.group = dataset.name
    benchmark.extra_info.update(events=dataset.n, input_bytes=size)
    result = benchmark.pedantic(fn, args=args, rounds=rounds(engine), iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        best = stats.stats.min
        benchmark.extra_info.update(events_per_s=dataset.n / best, gb_per_s=size / best / 1e9)
    return result


def _assert_ok(problems: list[str]) -> None:
    assert not problems, "answers disagree:\n" + "\n".join(problems)


def _check_eventtally(answer: Answer, dataset: Dataset, oracle: Answer) -> None:
    _assert_ok(
        check_totals(answer, dataset.data.totals)
        + compare(answer, oracle, sketches=SKETCH_TOLERANCE)
    )


def test_eventtally_array(benchmark: Any, segment: Dataset, oracle: Answer) -> None:
    """eventtally on one JSON-array body gives the reference's answer."""
    data = segment.data.array
    raw = _bench(benchmark, segment, "eventtally", len(data), run_eventtally, data)
    _check_eventtally(normalize_eventtally(raw), segment, oracle)


def test_eventtally_ndjson(benchmark: Any, segment: Dataset, oracle: Answer) -> None:
    """eventtally on the same events as one NDJSON body gives the reference's answer."""
    data = segment.data.ndjson
    raw = _bench(benchmark, segment, "eventtally", len(data), run_eventtally, data, NDJSON_INGEST)
    _check_eventtally(normalize_eventtally(raw), segment, oracle)


def test_eventtally_segment_batches(benchmark: Any, segment: Dataset, oracle: Answer) -> None:
    """eventtally on Segment-sized 300-event array bodies gives the reference's answer."""
    bodies = segment.data.bodies
    size = sum(map(len, bodies))
    raw = _bench(benchmark, segment, "eventtally", size, run_eventtally, bodies)
    _check_eventtally(normalize_eventtally(raw), segment, oracle)


def test_reference(benchmark: Any, segment: Dataset) -> None:
    """The pure-Python reference agrees with the totals of the generated objects."""
    data = segment.data.array
    raw = _bench(benchmark, segment, "reference", len(data), run_reference, data)
    _assert_ok(check_totals(normalize_reference(raw), segment.data.totals))


def test_duckdb(benchmark: Any, segment: Dataset, oracle: Answer) -> None:
    """DuckDB (one thread, read_ndjson) computes the same workload as the reference."""
    pytest.importorskip("duckdb")
    path = segment.data.ndjson_path
    size = len(segment.data.ndjson)
    raw = _bench(benchmark, segment, "duckdb", size, run_duckdb, path)
    answer = normalize_duckdb(raw)
    # DuckDB's HyperLogLog and t-digest are its own approximations: only their row sets are
    # compared; everything exact is compared exactly.
    _assert_ok(check_totals(answer, segment.data.totals) + compare(answer, oracle, sketches=None))
