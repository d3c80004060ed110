"""Shared fixtures and builders for the engine suites (``test_formats`` … ``test_property``).

What lives here:

- a fixed clock (``FIXED_NOW`` = 2024-05-14T12:00:00Z, after every fixture event) so that
  ingest-time timestamps and "incomplete interval" checks are reproducible;
- builders for ingest, filter and aggregation definitions (semantics.md §1) with defaults that
  keep each test's table short;
- query helpers that turn ``Engine.results`` rows into comparable tables;
- ``snapshot(engine)``: every answer the engine can give for its filters, used to check that a
  rejected batch changes nothing and that equivalent inputs give identical state;
- the fixtures directory ``tests/data`` (copied from ``shared/spec/fixtures``);
- ``run_race_script``: a race script of ``tests/`` (``race_*.py``) in a subprocess under a hard
  limit, so a deadlock fails the test in bounded time instead of hanging the suite;
- ``sigkill_child_when``: runs a child that prints a line per acknowledged step and SIGKILLs it
  at a random moment once the child says it has reached a given state, for crash tests.

``tests`` is a package (``from tests.support import …``); ``benches/`` is put on ``sys.path``
so suites can ``import segment_gen``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
ROOT = HERE.parent
for _p in (ROOT / "benches",):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import eventtally  # noqa: E402

FIXED_NOW = 1715688000.0
"""2024-05-14T12:00:00Z in Unix seconds: the engine clock in every suite."""
FIXED_NOW_MS = 1715688000000
FIXED_NOW_DT = "2024-05-14T12:00:00Z"

ALL_CALCS = ("COUNT", "SUM", "MIN", "MAX", "AVG", "APPROX_COUNT_DISTINCT", "PERCENTILES")
NUMERIC_CALCS = ("SUM", "MIN", "MAX", "AVG", "PERCENTILES")
PERCENTILE_GRID = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
INPUT_FORMS: dict[str, Callable[[bytes], Any]] = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": memoryview,
    "str": lambda b: b.decode("utf-8"),
}
"""Every accepted Python input type, built from the same UTF-8 bytes."""


def fixed_clock() -> float:
    """The engine clock used by every suite."""
    return FIXED_NOW


# --------------------------------------------------------------------------------------------
# Definition builders (semantics.md §1)
# --------------------------------------------------------------------------------------------


def ingest_def(
    schema: str = "ARRAY_OF_EVENTS",
    *,
    path: str | None = None,
    fmt: str = "ISO_8601",
    on_invalid: str | None = None,
    array_path: str | None = None,
    ingest_id: str = "abc123",
) -> dict[str, Any]:
    """An ingest definition; ``path`` switches the timestamp source to ``PROPERTY``."""
    defn: dict[str, Any] = {"id": ingest_id, "name": "Test ingest", "schema": schema}
    if array_path is not None:
        defn["arrayPath"] = array_path
    if path is None:
        defn["timestamp"] = {"source": "INGEST"}
    else:
        ts: dict[str, Any] = {"source": "PROPERTY", "path": path, "format": fmt}
        if on_invalid is not None:
            ts["onInvalid"] = on_invalid
        defn["timestamp"] = ts
    return defn


def agg_def(
    agg_id: int = 1,
    calculations: Sequence[str] = ("COUNT",),
    field: str | None = None,
    sub_filter: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """One aggregation of a filter definition (spec 5.7)."""
    return {
        "id": agg_id,
        "name": name or f"aggregation {agg_id}",
        "calculations": list(calculations),
        "calculationField": field,
        "subFilter": sub_filter,
    }


Grouping = str | tuple[str, str | None]


def filter_def(
    filter_id: str = "f",
    *,
    filter: str | None = "",
    groupings: Iterable[Grouping] = (),
    interval: tuple[str, int] = ("MINUTE", 1),
    aggregations: Sequence[Mapping[str, Any]] | None = None,
    flatten: str | None = None,
) -> dict[str, Any]:
    """A filter definition (spec 5.7). ``groupings`` items are a path or ``(path, alias)``;
    the default aggregation is ``{"id": 1, COUNT}``."""
    items = []
    for g in groupings:
        path, alias = (g, None) if isinstance(g, str) else g
        items.append({"grouping": path, "alias": alias})
    defn: dict[str, Any] = {
        "id": filter_id,
        "name": f"filter {filter_id}",
        "filter": filter,
        "groupingItems": items,
        "intervalType": interval[0],
        "intervalCount": interval[1],
        "aggregations": [dict(a) for a in aggregations] if aggregations else [agg_def()],
    }
    if flatten is not None:
        defn["flattenPath"] = flatten
    return defn


def make_engine(
    ingest: Mapping[str, Any] | None = None,
    filters: Sequence[Mapping[str, Any]] | None = None,
    *,
    clock: Callable[[], float] = fixed_clock,
) -> eventtally.Engine:
    """An engine with the fixed clock; defaults: ARRAY_OF_EVENTS at ingest time, COUNT only."""
    return eventtally.Engine(
        ingest if ingest is not None else ingest_def(),
        list(filters) if filters is not None else [filter_def()],
        clock=clock,
    )


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as producers send it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def ndjson(events: Iterable[Any]) -> bytes:
    """One compact JSON value per line."""
    return b"".join(dumps(e) + b"\n" for e in events)


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


def query(
    calculation: str = "COUNT",
    *,
    filter_id: str = "f",
    aggregation_id: int = 1,
    percentile: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A plain Metrics API request (spec 7.2)."""
    q: dict[str, Any] = {
        "filterId": filter_id,
        "aggregationId": aggregation_id,
        "calculation": calculation,
    }
    if percentile is not None:
        q["percentile"] = percentile
    q.update(extra)
    return q


def rows(engine: Any, calculation: str = "COUNT", **kwargs: Any) -> list[dict[str, Any]]:
    """``engine.results(query(...))``; works for ``Engine`` and ``ReferenceEngine``."""
    result: list[dict[str, Any]] = engine.results(query(calculation, **kwargs))
    return result


RowKey = tuple[str, tuple[tuple[str, str], ...]]


def row_key(row: Mapping[str, Any]) -> RowKey:
    """(dt, sorted grouping items) of a result row."""
    groups = row.get("groupings") or {}
    return row["dt"], tuple(sorted(groups.items()))


def table(result: Iterable[Mapping[str, Any]]) -> dict[RowKey, float]:
    """Rows as ``{(dt, groupings): value}``."""
    return {row_key(r): r["value"] for r in result}


def by_group(result: Iterable[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Rows of one bucket as ``{grouping value: value}`` for the grouping named ``key``."""
    out: dict[str, float] = {}
    for r in result:
        g = r["groupings"][key]
        assert g not in out, f"grouping value {g!r} appears in two rows"
        out[g] = r["value"]
    return out


def total(result: Iterable[Mapping[str, Any]]) -> float:
    """Sum of the values of every row."""
    return sum(r["value"] for r in result)


def single_value(engine: Any, calculation: str = "COUNT", **kwargs: Any) -> float | None:
    """The value of the only row of a query, or ``None`` when there is no row."""
    result = rows(engine, calculation, **kwargs)
    assert len(result) <= 1, result
    return result[0]["value"] if result else None


def bucket_starts(engine: Any, calculation: str = "COUNT", **kwargs: Any) -> list[str]:
    """The ``dt`` of every row, in answer order."""
    return [r["dt"] for r in rows(engine, calculation, **kwargs)]


def snapshot(engine: eventtally.Engine) -> dict[tuple[str, int, str, float | None], Any]:
    """Every answer the engine gives: each filter, aggregation and calculation (percentiles on
    ``PERCENTILE_GRID``). Equal snapshots mean equal observable state."""
    out: dict[tuple[str, int, str, float | None], Any] = {}
    for f in engine.filter_definitions():
        for a in f["aggregations"]:
            for calc in a["calculations"]:
                grid: Sequence[float | None] = PERCENTILE_GRID if calc == "PERCENTILES" else (None,)
                for p in grid:
                    q = query(calc, filter_id=f["id"], aggregation_id=a["id"], percentile=p)
                    out[(f["id"], a["id"], calc, p)] = engine.results(q)
    return out


def matched(
    expression: str,
    event: Any,
    *,
    sub_filter: bool = False,
    flatten: str | None = None,
) -> bool:
    """Whether one event (a dict, or raw JSON text/bytes) passes ``expression`` used as the
    filter (or, with ``sub_filter``, as the sub-filter of the only aggregation)."""
    if sub_filter:
        filt = filter_def(flatten=flatten, aggregations=[agg_def(sub_filter=expression)])
    else:
        filt = filter_def(filter=expression, flatten=flatten)
    engine = make_engine(ingest_def("SINGLE_OBJECT"), [filt])
    body = event if isinstance(event, (str, bytes)) else dumps(event)
    stats = engine.ingest(body)
    if sub_filter:
        return bool(rows(engine))
    count = stats.per_filter["f"]["matched"]
    assert count in (0, 1)
    return count == 1


# --------------------------------------------------------------------------------------------
class Clock:
    """An injectable engine clock (Unix seconds) that a test moves by setting ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def value_distribution(name: str, rng: random.Random, n: int) -> list[float]:
    """``n`` values of a named shape seen in product analytics, drawn from ``rng``."""
    return {
        "latency ms": lambda: [rng.lognormvariate(4, 1.2) for _ in range(n)],
        "revenue": lambda: [round(rng.paretovariate(1.2) * 10, 2) for _ in range(n)],
        "seats": lambda: [float(rng.randint(1, 50)) for _ in range(n)],
        "normal around zero": lambda: [rng.gauss(0, 50) for _ in range(n)],
        "uniform": lambda: [rng.uniform(0, 1000) for _ in range(n)],
        "exponential": lambda: [rng.expovariate(0.01) for _ in range(n)],
    }[name]()


# Fixtures
# --------------------------------------------------------------------------------------------


def fixture_bytes(name: str) -> bytes:
    """Exact bytes of a file in ``tests/data``."""
    return (DATA / name).read_bytes()


def fixture_json(name: str) -> Any:
    """A file in ``tests/data``, parsed."""
    return json.loads(fixture_bytes(name))


@pytest.fixture
def clock() -> Callable[[], float]:
    """The fixed engine clock (2024-05-14T12:00:00Z)."""
    return fixed_clock


@pytest.fixture
def data_dir() -> Path:
    """``tests/data``: the Segment fixtures copied from ``shared/spec/fixtures``."""
    return DATA


@pytest.fixture
def engine() -> eventtally.Engine:
    """A default engine: ARRAY_OF_EVENTS at ingest time, one filter ``f`` with COUNT."""
    return make_engine()


def run_race_script(
    name: str, rounds: int, deadline: int, timeout: int, extra: tuple[str, ...] = ()
) -> None:
    """Runs ``tests/<name>`` for ``rounds`` rounds (with ``extra`` arguments); it must exit 0
    and report every round.

    ``deadline`` is the script's own watchdog (it dumps every thread's stack and exits);
    ``timeout`` is this process's hard limit on the child, past the watchdog's."""
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / name),
            "--rounds",
            str(rounds),
            "--deadline",
            str(deadline),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ok: {rounds} rounds" in result.stdout


def sigkill_child_when(
    argv: Sequence[str], delay_s: float, ready: Callable[[list[str]], bool], what: str
) -> list[str]:
    """Starts ``argv`` (a child printing one line per acknowledged step) and SIGKILLs it once
    ``delay_s`` has passed **and** ``ready(lines so far)`` holds; returns every complete line it
    printed (a half-printed last line was never acknowledged).

    Waiting for the child's own report, not for a fixed time, keeps a crash test testing the same
    state on a slow machine (a slow fsync disk reaches it later). The rest of the output is read
    through the same buffered reader ``readline()`` filled (``communicate`` with a timeout reads
    the pipe beneath it and loses those lines), and a watchdog kills a child that stalls without
    dying, so the read ends and the test fails naming ``what`` instead of hanging."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        deadline = time.monotonic() + delay_s
        seen: list[str] = []
        while True:
            line = proc.stdout.readline()
            assert line, f"child died before it was killed ({what})"
            seen.append(line)
            if time.monotonic() >= deadline and ready(seen):
                break
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{what}: exit status {proc.returncode}"
    return [ln for ln in ("".join(seen) + rest).splitlines(keepends=True) if ln.endswith("\n")]


def last_wal_record_bounds(segment: Path) -> tuple[int, int]:
    """(offset, end) of the last record of a WAL segment (frame: magic, length, crc). A killed
    server's newest segment is preallocated: its records end at an end marker (``ETWE``)
    followed by the reservation's zeros."""
    data = segment.read_bytes()
    pos, last = 24, (24, 24)
    while pos + 12 <= len(data):
        magic, length, _crc = struct.unpack_from("<4sII", data, pos)
        if magic == b"ETWE":
            break
        assert magic == b"ETWR"
        last = (pos, pos + 12 + length)
        pos = last[1]
    return last
