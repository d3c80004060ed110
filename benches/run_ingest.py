"""End-to-end ingest benchmark (benches/README.md): eventtally against the reference and DuckDB.

Run it as a script::

    python benches/run_ingest.py --events 200000 --repeat 5

What this module guarantees:

- One workload for everyone: the Segment events of ``segment_gen.generate_events(n, seed)``, the
  filter ``BENCH_FILTER`` (``@.type in ['track','page','screen']``, ``@.receivedAt`` ISO 8601,
  1-minute buckets, groupings ``@.type @.event @.name @.context.device.type``, COUNT,
  SUM/MIN/MAX/AVG of ``@.properties.revenue``, APPROX_COUNT_DISTINCT of ``@.anonymousId``,
  PERCENTILES of ``@.properties.value``), timed from raw bytes in memory to the columnar answer
  of every calculation (p50 for PERCENTILES). The engine is built inside the timed region.
- Every timed answer is checked, not only timed: :func:`compare` holds it to the exact answer of
  the pure-Python reference (``tests/reference.py``) row by row, and :func:`check_totals` holds
  it to totals computed directly from the generated Python objects (an oracle that shares no
  code with any engine). A run whose answers disagree prints the disagreement and exits 1.
- DuckDB runs the same query in SQL (``read_ndjson`` with named columns, ``SET threads=1``,
  ``date_trunc('minute', receivedAt)``, ``TRY_CAST(... AS DOUBLE)`` so numeric strings count as
  eventtally's decision 6 says, ``approx_count_distinct``, ``approx_quantile``). Its input is an
  NDJSON file in ``/dev/shm`` when that exists (in memory), since DuckDB reads files.
- All figures of one invocation come from the same process and the same data, and repeats are
  interleaved across engines, so the ratios are robust to the machine's background noise even
  when the absolute numbers are not. Throughput is the best of ``--repeat`` runs (the median is
  printed beside it).
- Peak memory is measured in a fresh child process per engine: it loads the input bytes, builds
  the engine, reads its resident set size, ingests and answers, and reports its peak RSS; the
  growth ``peak - RSS before`` is compared with the target "peak <= input + 256 MiB", i.e. the
  growth must stay under 256 MiB while the input is held. The peak is ``VmHWM`` reset through
  ``/proc/self/clear_refs`` rather than ``ru_maxrss``, which Linux carries across ``execve`` (a
  child of this large parent would start with the parent's peak). DuckDB reads its input from
  the file, so its growth excludes the input.

The pytest suite ``bench_ingest.py`` imports the runners and checks below, so the suite and the
script measure and verify the same code. Only local files and the loopback are used.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

# The engines are single-threaded; keep numpy's BLAS threads from competing for the 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from tests.reference import ReferenceEngine, parse_iso8601  # noqa: E402

import eventtally  # noqa: E402
from rollup_workload import DUCKDB_SQL, QUERIES  # noqa: E402
from segment_gen import (  # noqa: E402
    BENCH_FILTER,
    BENCH_INGEST,
    batches,
    encode_array,
    encode_ndjson,
    generate_events,
)

__all__ = [
    "BATCH_SIZE",
    "COLUMNS",
    "DUCKDB_SQL",
    "NDJSON_INGEST",
    "QUERIES",
    "Answer",
    "Totals",
    "check_totals",
    "compare",
    "normalize_duckdb",
    "normalize_eventtally",
    "normalize_reference",
    "run_duckdb",
    "run_eventtally",
    "run_reference",
    "totals_of",
]

MIB = 1024 * 1024
MEMORY_BUDGET = 256 * MIB
"""Issue 2 section 9: peak memory at most input size + 256 MiB."""
BATCH_SIZE = 300
"""Segment's default batch size: the realistic HTTP body."""
TRACKED_TYPES = frozenset({"track", "page", "screen"})

NDJSON_INGEST: dict[str, Any] = {**BENCH_INGEST, "schema": "NEWLINE_DELIMITED"}
"""``BENCH_INGEST`` for the same events encoded as NDJSON."""

GROUP_KEYS: tuple[str, ...] = tuple(item["grouping"] for item in BENCH_FILTER["groupingItems"])


"""One Metrics API query per calculation; the answer's column names are the keys."""
COLUMNS = tuple(QUERIES)


# ---------------------------------------------------------------------------------------------
# Runners: raw bytes in memory -> the columnar answer of every calculation (the timed region)
# ---------------------------------------------------------------------------------------------


def run_eventtally(
    data: bytes | list[bytes], ingest: dict[str, Any] = BENCH_INGEST
) -> dict[str, eventtally.ResultArrays]:
    """Builds an engine, ingests one body (or each of a list of bodies), answers every query."""
    engine = eventtally.Engine(ingest, [BENCH_FILTER])
    for body in data if isinstance(data, list) else (data,):
        engine.ingest(body)
    return {name: engine.results_arrays(query) for name, query in QUERIES.items()}


def run_reference(data: bytes) -> dict[str, list[dict[str, Any]]]:
    """The same with the pure-Python reference engine (exact sums, distincts and percentiles)."""
    engine = ReferenceEngine(BENCH_INGEST, [BENCH_FILTER], now_ms=int(time.time() * 1000))
    engine.ingest(data)
    return {name: engine.results(query) for name, query in QUERIES.items()}


def run_duckdb(ndjson_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The same in DuckDB on one thread, fetched as numpy columns."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET threads=1")
        cursor = con.execute(DUCKDB_SQL, [os.fspath(ndjson_path)])
        result: dict[str, np.ndarray] = cursor.fetchnumpy()
        return result
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# Answers and checks
# ---------------------------------------------------------------------------------------------

Key = tuple[int, str, str, str, str]
"""(bucket start in epoch ms, type, event, name, device type); missing groupings are ``""``."""


@dataclass
class Answer:
    """One engine's answer: for each calculation, the value of every row that exists."""

    columns: dict[str, dict[Key, float]]

    def total(self, column: str) -> float:
        """The exact sum of a column's values."""
        return math.fsum(self.columns[column].values())


def normalize_eventtally(raw: dict[str, eventtally.ResultArrays]) -> Answer:
    """Answer from ``run_eventtally``'s numpy columns."""
    columns: dict[str, dict[Key, float]] = {}
    for name, arrays in raw.items():
        dt = arrays.dt.astype("datetime64[ms]").astype(np.int64).tolist()
        groups = [arrays.groupings[k].tolist() for k in GROUP_KEYS]
        values = arrays.values.tolist()
        columns[name] = {
            (ms, t, e, n, d): v for ms, t, e, n, d, v in zip(dt, *groups, values, strict=True)
        }
    return Answer(columns)


def normalize_reference(raw: dict[str, list[dict[str, Any]]]) -> Answer:
    """Answer from ``run_reference``'s Metrics API rows."""
    columns: dict[str, dict[Key, float]] = {}
    for name, rows in raw.items():
        col: dict[Key, float] = {}
        for row in rows:
            ms = parse_iso8601(row["dt"])
            assert ms is not None, row
            g = row["groupings"]
            col[(ms, g[GROUP_KEYS[0]], g[GROUP_KEYS[1]], g[GROUP_KEYS[2]], g[GROUP_KEYS[3]])] = row[
                "value"
            ]
        columns[name] = col
    return Answer(columns)


def normalize_duckdb(raw: dict[str, np.ndarray]) -> Answer:
    """Answer from ``run_duckdb``'s columns: NULL groupings become ``""`` (eventtally's rule for
    missing values) and a NULL aggregate means the row does not exist (semantics 6)."""
    minute = np.asarray(raw["minute"]).astype("datetime64[ms]").astype(np.int64).tolist()

    def text(name: str) -> list[str]:
        col = raw[name]
        mask = np.ma.getmaskarray(col).tolist()
        return ["" if m else str(v) for v, m in zip(np.ma.getdata(col).tolist(), mask, strict=True)]

    keys: list[Key] = list(
        zip(minute, text("type"), text("event"), text("name"), text("device"), strict=True)
    )
    columns: dict[str, dict[Key, float]] = {}
    for name in COLUMNS:
        col = raw[name]
        mask = np.ma.getmaskarray(col).tolist()
        values = np.ma.getdata(col).astype(np.float64).tolist()
        columns[name] = {
            k: v for k, v, m in zip(keys, values, mask, strict=True) if not m and not math.isnan(v)
        }
    return Answer(columns)


@dataclass
class Totals:
    """Totals computed straight from the generated event objects, sharing no engine code."""

    events: int
    matched: int
    revenue_n: int
    revenue_sum: float
    revenue_min: float
    revenue_max: float


def totals_of(events: Iterable[dict[str, Any]]) -> Totals:
    """Matched events and the numeric ``properties.revenue`` of those (decision 6)."""
    n = matched = 0
    revenue: list[float] = []
    for event in events:
        n += 1
        if event.get("type") not in TRACKED_TYPES:
            continue
        matched += 1
        value = event.get("properties", {}).get("revenue")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            revenue.append(float(value))
    return Totals(
        events=n,
        matched=matched,
        revenue_n=len(revenue),
        revenue_sum=math.fsum(revenue),
        revenue_min=min(revenue, default=math.nan),
        revenue_max=max(revenue, default=math.nan),
    )


REL = 1e-6
"""Relative tolerance for sums and averages (summation order differs between engines)."""


def check_totals(answer: Answer, totals: Totals) -> list[str]:
    """Total COUNT equals the matched events; revenue sum/min/max agree with the objects."""
    problems = []
    count = answer.total("count")
    if count != totals.matched:
        problems.append(f"total COUNT {count:.0f} != {totals.matched} matched events")
    revenue = answer.total("sum")
    if not math.isclose(revenue, totals.revenue_sum, rel_tol=REL):
        problems.append(f"total revenue SUM {revenue!r} != {totals.revenue_sum!r}")
    low = min(answer.columns["min"].values(), default=math.nan)
    high = max(answer.columns["max"].values(), default=math.nan)
    if (low, high) != (totals.revenue_min, totals.revenue_max):
        problems.append(
            f"revenue MIN/MAX {low!r}/{high!r} != {totals.revenue_min!r}/{totals.revenue_max!r}"
        )
    return problems


def _compare_column(
    name: str, got: dict[Key, float], want: dict[Key, float], rel: float | None
) -> list[str]:
    if got.keys() != want.keys():
        extra, missing = len(got.keys() - want.keys()), len(want.keys() - got.keys())
        example = next(iter((got.keys() - want.keys()) or (want.keys() - got.keys())))
        return [f"{name}: {extra} extra rows, {missing} missing rows (e.g. {example})"]
    if rel is None:
        return []
    bad = [k for k, v in want.items() if not math.isclose(got[k], v, rel_tol=rel, abs_tol=1e-9)]
    if not bad:
        return []
    worst = max(bad, key=lambda k: abs(got[k] - want[k]) / max(abs(want[k]), 1e-300))
    return [
        f"{name}: {len(bad)} of {len(want)} rows differ by more than {rel:g} relative "
        f"(worst {worst}: {got[worst]!r} vs {want[worst]!r})"
    ]


SKETCH_TOLERANCE = {"distinct": 0.02, "p50": 0.02}
"""eventtally's sketch guarantees (semantics 6): distinct counts within 2 % in every cell (exact
up to 2,048 per cell); PERCENTILE_CONT exact up to 100 values per cell and within 0.5 % of it
beyond (both ranks it interpolates between), so 2 % leaves room for zero crossings."""


def compare(got: Answer, want: Answer, *, sketches: dict[str, float] | None) -> list[str]:
    """Row-by-row comparison: COUNT exactly, SUM/AVG within ``REL``, MIN/MAX exactly (both parse
    the same text), the sketch columns within ``sketches`` (row sets only when ``None``)."""
    tolerances: dict[str, float | None] = {
        "count": 0.0,
        "sum": REL,
        "avg": REL,
        "min": 0.0,
        "max": 0.0,
        "distinct": None,
        "p50": None,
    }
    tolerances.update(sketches or {})
    problems = []
    for name in COLUMNS:
        problems += _compare_column(name, got.columns[name], want.columns[name], tolerances[name])
    return problems


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------


@dataclass
class Input:
    """The encoded workload, plus files for DuckDB and the memory children."""

    n: int
    array: bytes
    ndjson: bytes
    bodies: list[bytes]
    totals: Totals
    workdir: Path
    array_path: Path = field(init=False)
    ndjson_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.array_path = self.workdir / "events.json"
        self.ndjson_path = self.workdir / "events.ndjson"
        self.array_path.write_bytes(self.array)
        self.ndjson_path.write_bytes(self.ndjson)


def scratch_dir() -> Path:
    """A private directory in ``/dev/shm`` (RAM) when available, else the temp directory."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="eventtally-bench-", dir=base))


def make_input(n: int, seed: int, workdir: Path) -> Input:
    """Generates ``n`` events once and encodes them every way the engines need."""
    events = generate_events(n, seed=seed)
    return Input(
        n=n,
        array=encode_array(events),
        ndjson=encode_ndjson(events),
        bodies=batches(events, size=BATCH_SIZE),
        totals=totals_of(events),
        workdir=workdir,
    )


@dataclass
class Contender:
    """One row of the table: how to run it on the input, and how to read its answer."""

    label: str
    run: Callable[[Input], Any]
    normalize: Callable[[Any], Answer]
    input_bytes: Callable[[Input], int]
    child: str | None  # name for the memory child, None when not measured
    times: list[float] = field(default_factory=list)  # wall seconds per run
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per run
    answer: Answer | None = None


def engines(with_reference: bool, with_duckdb: bool) -> list[Contender]:
    """The engines of the table, in order."""
    rows = [
        Contender(
            "eventtally, JSON array",
            lambda i: run_eventtally(i.array),
            normalize_eventtally,
            lambda i: len(i.array),
            "eventtally-array",
        ),
        Contender(
            "eventtally, NDJSON",
            lambda i: run_eventtally(i.ndjson, NDJSON_INGEST),
            normalize_eventtally,
            lambda i: len(i.ndjson),
            "eventtally-ndjson",
        ),
        Contender(
            f"eventtally, {BATCH_SIZE}-event arrays",
            lambda i: run_eventtally(i.bodies),
            normalize_eventtally,
            lambda i: sum(map(len, i.bodies)),
            None,
        ),
    ]
    if with_duckdb:
        rows.append(
            Contender(
                "DuckDB, NDJSON (threads=1)",
                lambda i: run_duckdb(i.ndjson_path),
                normalize_duckdb,
                lambda i: len(i.ndjson),
                "duckdb",
            )
        )
    if with_reference:
        rows.append(
            Contender(
                "reference (pure Python), JSON array",
                lambda i: run_reference(i.array),
                normalize_reference,
                lambda i: len(i.array),
                "reference",
            )
        )
    return rows


def time_once(engine: Contender, data: Input) -> None:
    """Runs once, records wall and CPU time, keeps the first answer."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    raw = engine.run(data)
    engine.times.append(time.perf_counter() - start)
    engine.cpu.append(time.process_time() - cpu)
    if engine.answer is None:
        engine.answer = engine.normalize(raw)
    del raw


def eventtally_phases(data: Input, repeat: int) -> tuple[float, float]:
    """Best ingest time and best time of all queries, for eventtally on the JSON array."""
    ingest, queries = [], []
    for _ in range(repeat):
        gc.collect()
        engine = eventtally.Engine(BENCH_INGEST, [BENCH_FILTER])
        start = time.perf_counter()
        engine.ingest(data.array)
        middle = time.perf_counter()
        for query in QUERIES.values():
            engine.results_arrays(query)
        ingest.append(middle - start)
        queries.append(time.perf_counter() - middle)
    return min(ingest), min(queries)


def _status_bytes(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def _start_measuring() -> int:
    """Resets the peak-RSS mark to the current RSS (when the kernel allows) and returns the RSS.

    Why not ``ru_maxrss``: Linux carries it across ``execve``, so a child spawned by this
    (large) parent starts with the parent's peak. ``VmHWM`` belongs to the child's own address
    space, and writing ``5`` to ``/proc/self/clear_refs`` resets it to the current RSS.
    """
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


def child_main(name: str, workdir: Path) -> int:
    """Memory child: load the input, build the engine, measure RSS, ingest and answer."""
    if name == "duckdb":
        import duckdb

        con = duckdb.connect(":memory:")
        con.execute("SET threads=1")
        path = workdir / "events.ndjson"
        size = path.stat().st_size
        before = _start_measuring()
        con.execute(DUCKDB_SQL, [str(path)]).fetchnumpy()
    else:
        ndjson = name == "eventtally-ndjson"
        data = (workdir / ("events.ndjson" if ndjson else "events.json")).read_bytes()
        size = len(data)
        if name == "reference":
            ref = ReferenceEngine(BENCH_INGEST, [BENCH_FILTER])
            before = _start_measuring()
            ref.ingest(data)
            for query in QUERIES.values():
                ref.results(query)
        else:
            engine = eventtally.Engine(NDJSON_INGEST if ndjson else BENCH_INGEST, [BENCH_FILTER])
            before = _start_measuring()
            engine.ingest(data)
            for query in QUERIES.values():
                engine.results_arrays(query)
    peak = _status_bytes("VmHWM")
    print(json.dumps({"input": size, "before": before, "peak": peak}))
    return 0


def measure_memory(name: str, workdir: Path) -> dict[str, int]:
    """Runs the memory child for ``name`` in a fresh interpreter and returns its report."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--workdir", str(workdir)],
        check=True,
        capture_output=True,
        text=True,
    )
    report: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def _rate(x: float) -> str:
    return f"{x / 1e6:.3f} M" if x >= 1e5 else f"{x / 1e3:.1f} k"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints markdown tables and returns 1 if any answer is wrong."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=200_000, help="events in the workload")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per engine")
    ap.add_argument(
        "--reference-repeat", type=int, default=1, help="timed runs of the (slow) reference"
    )
    ap.add_argument("--no-reference", action="store_true", help="skip the reference engine")
    ap.add_argument("--no-duckdb", action="store_true", help="skip DuckDB")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, args.workdir)

    with_duckdb = not args.no_duckdb
    if with_duckdb and importlib.util.find_spec("duckdb") is None:
        print("duckdb is not installed (pip install duckdb): skipping it", file=sys.stderr)
        with_duckdb = False
    workdir = scratch_dir()
    try:
        return _run(args, with_duckdb, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(args: argparse.Namespace, with_duckdb: bool, workdir: Path) -> int:
    t0 = time.perf_counter()
    data = make_input(args.events, args.seed, workdir)
    print(
        f"generated {data.n} events in {time.perf_counter() - t0:.1f} s: JSON array "
        f"{len(data.array) / MIB:.1f} MiB ({len(data.array) / data.n:.0f} B/event), NDJSON "
        f"{len(data.ndjson) / MIB:.1f} MiB; {data.totals.matched} match the filter",
        file=sys.stderr,
    )
    rows = engines(not args.no_reference, with_duckdb)
    fast = [e for e in rows if not e.label.startswith("reference")]
    for _ in range(args.repeat):  # interleaved, so background noise hits every engine alike
        for engine in fast:
            time_once(engine, data)
    for engine in rows:
        if engine.label.startswith("reference"):
            for _ in range(args.reference_repeat):
                time_once(engine, data)
    print(f"timed in {time.perf_counter() - t0:.1f} s total", file=sys.stderr)

    # -- correctness: every answer against the objects' totals and the reference, row by row
    problems: list[str] = []
    oracle = next((e.answer for e in rows if e.label.startswith("reference")), None)
    for engine in rows:
        assert engine.answer is not None
        found = [f"{engine.label}: {p}" for p in check_totals(engine.answer, data.totals)]
        if oracle is not None and not engine.label.startswith("reference"):
            sketches = None if engine.label.startswith("DuckDB") else SKETCH_TOLERANCE
            found += [
                f"{engine.label}: {p}" for p in compare(engine.answer, oracle, sketches=sketches)
            ]
        problems += found

    # -- memory children
    memory: dict[str, dict[str, int]] = {}
    if not args.no_memory:
        for engine in rows:
            if engine.child:
                memory[engine.child] = measure_memory(engine.child, workdir)

    # -- the tables
    phases = eventtally_phases(data, args.repeat)
    best = {e.label: min(e.times) for e in rows}
    rate = {e.label: data.n / best[e.label] for e in rows}
    cpu_rate = {e.label: data.n / min(e.cpu) for e in rows}
    duck = next((e.label for e in rows if e.label.startswith("DuckDB")), None)
    print()
    print(
        f"Workload: {data.n} Segment events (seed {args.seed}), {data.totals.matched} matching, "
        f"JSON array {len(data.array) / MIB:.1f} MiB; best of {args.repeat} interleaved runs "
        f"(reference: {args.reference_repeat}); Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs."
    )
    print()
    print(
        "| engine | events/s (best) | events/s (median) | events/CPU-s (best) | cpu/wall "
        "| GB/s (best) | vs DuckDB | input MiB | RSS growth MiB | <= input + 256 MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for e in rows:
        size = e.input_bytes(data)
        median = data.n / statistics.median(e.times)
        fastest = min(range(len(e.times)), key=e.times.__getitem__)
        share = e.cpu[fastest] / e.times[fastest]
        gbs = size / best[e.label] / 1e9
        vs = f"{rate[e.label] / rate[duck]:.2f}x" if duck else "-"
        mem = memory.get(e.child or "")
        if mem:
            growth = max(0, mem["peak"] - mem["before"])
            verdict = "yes" if growth <= MEMORY_BUDGET else "**no**"
            mem_cells = f"{growth / MIB:.0f} | {verdict}"
        else:
            mem_cells = "- | -"
        print(
            f"| {e.label} | {_rate(rate[e.label])} | {_rate(median)} | {_rate(cpu_rate[e.label])} "
            f"| {share:.2f} | {gbs:.3f} | {vs} | {size / MIB:.1f} | {mem_cells} |"
        )
    print()
    arr, nd, batched = rows[0].label, rows[1].label, rows[2].label
    pairs = [
        ("eventtally array / NDJSON", arr, nd),
        (f"eventtally {BATCH_SIZE}-event arrays / one array", batched, arr),
    ]
    if duck:
        pairs += [
            ("eventtally array / DuckDB", arr, duck),
            ("eventtally NDJSON / DuckDB", nd, duck),
        ]
    ref = next((e.label for e in rows if e.label.startswith("reference")), None)
    if ref:
        pairs += [
            ("eventtally array / reference", arr, ref),
            ("eventtally NDJSON / reference", nd, ref),
        ]
        if duck:
            pairs.append(("DuckDB / reference", duck, ref))
    print("| throughput ratio (same run) | wall, best | CPU, best |")
    print("|---|---:|---:|")
    for label, a, b in pairs:
        print(f"| {label} | {rate[a] / rate[b]:.2f} | {cpu_rate[a] / cpu_rate[b]:.2f} |")
    print()
    ingest_s, query_s = phases
    print(
        f"eventtally (JSON array) phases, best of {args.repeat}: ingest {ingest_s * 1e3:.0f} ms "
        f"({data.n / ingest_s / 1e6:.2f} M events/s, {len(data.array) / ingest_s / 1e9:.2f} GB/s), "
        f"the {len(QUERIES)} queries {query_s * 1e3:.0f} ms "
        f"({query_s / (ingest_s + query_s):.0%} of the end-to-end time)."
    )
    print()
    if problems:
        print("ANSWERS DISAGREE:")
        for p in problems:
            print(f"- {p}")
        return 1
    checked = "the generated objects' totals" + (
        " and the reference, row by row" if oracle is not None else ""
    )
    print(f"All answers agree with {checked}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
