"""Issue 13: eventtally's ``ingest_file`` against DuckDB ``read_ndjson``, end to end, whole process.

Run it as a script::

    python benches/run_vs_duckdb.py --events 300000 --repeat 3 [--baseline-python OTHER/bin/python]

What this module guarantees:

- Two data sets, one workload: ``segment_gen.generate_events`` and ``shaped_gen.generate_events``
  (other field order, a deeper ``context``, longer strings), each written once as NDJSON, as a
  one-line JSON array and as a multi-line array (``[\\n  e1,\\n  e2\\n]``), into ``/dev/shm``
  when it exists. The workload is ``BENCH_FILTER`` (SEG-ROLLUP: filter on type, ``@.receivedAt``,
  4 groupings, COUNT, SUM/MIN/MAX/AVG, distinct, p50).
- Whole process: each timed run is a fresh ``python`` child (``vs_duckdb_child.py``, which
  imports nothing of the benchmark's own) pinned to one core (``taskset -c 0``) that imports
  the engine, builds it, reads the file (``ingest_file``, ``threads=1``; DuckDB ``read_ndjson``
  with named columns and ``SET threads=1``), computes all seven answers and writes them out.
  The parent times the child from start to exit; "answer write excluded" subtracts the child's
  pickling of its answer for the parent, and the phase table splits each child's time (start =
  interpreter start, import, engine, ingest, answers, write, exit = interpreter teardown).
  Runs are interleaved across contenders and the best of ``--repeat`` is kept, so ratios come
  from one run on one machine.
  The "t=all" rows run unpinned with ``threads=os.cpu_count()`` (every core).
- Every answer is checked: each eventtally answer equals DuckDB's row by row (COUNT, MIN and
  MAX exactly, SUM and AVG within 1e-9 relative: the summation order differs; the distinct and
  p50 columns by row set, both being approximations), every eventtally file form gives the same
  answer as the NDJSON file, and total COUNT/SUM/MIN/MAX equal totals computed from the generated
  Python objects. Any disagreement is printed and the script exits 1.
- ``ingest`` alone: events/s of ``Engine.ingest`` on the NDJSON bytes already in memory, in a
  pinned child, best of ``--repeat``.
- Instructions per event (``--callgrind``): ``valgrind --tool=callgrind`` on a child reading a
  file of ``k`` events and one of ``k + --callgrind-events`` events; the difference of the two
  totals over the difference of the events, so start-up and import cost cancel. This count is
  repeatable on a noisy machine, unlike the times.
- ``--baseline-python`` runs the eventtally children a second time with another build's
  interpreter (main's, say) in the same interleaved run, for before/after ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

GENERATORS = ("segment", "shaped")

from rollup_workload import DUCKDB_SQL, QUERIES  # noqa: E402  (after the path setup)

FORMS = {"ndjson": "events.ndjson", "array": "events.json", "array-multiline": "multi.json"}
REL_SUM = 1e-9
CHILD = HERE / "vs_duckdb_child.py"
WORKLOAD = "workload.pkl"


def _write_workload(workdir: Path) -> None:
    """The definitions and queries the children read (they import no benchmark module)."""
    from segment_gen import BENCH_FILTER, BENCH_INGEST

    workload = {
        "ingest": BENCH_INGEST,
        "filter": BENCH_FILTER,
        "queries": QUERIES,
        "duckdb_sql": DUCKDB_SQL,
    }
    with open(workdir / WORKLOAD, "wb") as f:
        pickle.dump(workload, f)


@dataclass
class Contender:
    label: str
    generator: str
    kind: str  # "duckdb", "eventtally" or "ingest-only"
    form: str
    threads: str  # "1" or "all"
    python: str
    best: float = math.inf
    times: list[float] | None = None
    answer: Any = None
    phases: list[dict[str, float]] | None = None
    # Best wall time less the child's pickling of its answer for the parent (the harness's
    # transport, not the contender's work; both contenders' answers are numpy columns by then).
    best_unwritten: float = math.inf


def _run_child(c: Contender, workdir: Path) -> float:
    path = workdir / c.generator / FORMS[c.form]
    out = workdir / f"out-{os.getpid()}.pkl"
    cmd = [c.python, str(CHILD), c.kind, str(path), c.threads, str(out), str(workdir / WORKLOAD)]
    if c.threads == "1" and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    t_end = time.perf_counter()
    wall = t_end - t0
    with open(out, "rb") as f:
        tag, raw = pickle.load(f)
        marks = pickle.load(f)
    out.unlink()
    phases = _phases(t0, marks, t_end)
    c.phases = [*(c.phases or []), phases]
    c.best_unwritten = min(c.best_unwritten, wall - phases["write"])
    if tag == "seconds":
        return float(raw)
    if c.answer is None:
        from run_ingest import normalize_duckdb, normalize_eventtally

        c.answer = normalize_duckdb(raw) if tag == "duckdb" else normalize_eventtally(raw)
    return wall


def _phases(t0: float, marks: list[tuple[str, float]], t_end: float) -> dict[str, float]:
    """Seconds per phase of one child: ``start`` is from the parent's spawn to the child's
    first line (interpreter start and this script's imports), ``exit`` from the child's last
    mark until the parent saw it end (interpreter teardown)."""
    phases = {}
    last = t0
    for name, t in marks:
        phases[name] = t - last
        last = t
    phases["exit"] = t_end - last
    return phases


def _print_phases(contenders: list[Contender]) -> None:
    """Median seconds per phase of every one-thread contender (the phases differ by kind)."""
    print("### Phases of the one-thread children (median s; start = interpreter + script)\n")
    for kind in ("duckdb", "eventtally", "ingest-only"):
        rows = [c for c in contenders if c.kind == kind and c.threads == "1" and c.phases]
        if not rows:
            continue
        names = list(rows[0].phases[0]) if rows[0].phases else []
        print("| run | " + " | ".join(names) + " | total |")
        print("|---|" + "---:|" * (len(names) + 1))
        for c in rows:
            runs = c.phases or []
            med = [sorted(r[n] for r in runs)[len(runs) // 2] for n in names]
            total = sorted(sum(r.values()) for r in runs)[len(runs) // 2]
            print(f"| {c.label} | " + " | ".join(f"{m:.3f}" for m in med) + f" | {total:.3f} |")
        print()


def _callgrind_total(python: str, path: Path, extra_env: dict[str, str]) -> int:
    out = path.parent / "callgrind.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        python,
        str(CHILD),
        "eventtally",
        str(path),
        "1",
        str(path.parent / "cg.pkl"),
        str(path.parent.parent / WORKLOAD),
    ]
    env = {**os.environ, **extra_env, "PYTHONPATH": str(HERE.parent)}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if m is None:
        raise RuntimeError(f"no callgrind total in: {r.stderr[-2000:]}")
    out.unlink(missing_ok=True)
    return int(m.group(1))


def _write_forms(events: list[dict[str, Any]], gdir: Path) -> dict[str, int]:
    gdir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in events]
    sizes = {}
    with open(gdir / FORMS["ndjson"], "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    with open(gdir / FORMS["array"], "w", encoding="utf-8") as f:
        f.write("[" + ",".join(lines) + "]")
    with open(gdir / FORMS["array-multiline"], "w", encoding="utf-8") as f:
        f.write("[\n  " + ",\n  ".join(lines) + "\n]\n")
    for form, name in FORMS.items():
        sizes[form] = (gdir / name).stat().st_size
    return sizes


def _check(contenders: list[Contender], totals: dict[str, Any]) -> list[str]:
    from run_ingest import REL, _compare_column, check_totals

    problems: list[str] = []
    tolerances = {"count": 0.0, "sum": REL_SUM, "avg": REL_SUM, "min": 0.0, "max": 0.0}
    for gen in GENERATORS:
        mine = [c for c in contenders if c.generator == gen and c.answer is not None]
        duck = next(c for c in mine if c.kind == "duckdb")
        for c in mine:
            problems += [f"{c.label}: {p}" for p in check_totals(c.answer, totals[gen])]
            if c is duck:
                continue
            for name in ("count", "sum", "min", "max", "avg", "distinct", "p50"):
                got, want = c.answer.columns[name], duck.answer.columns[name]
                problems += [
                    f"{c.label} vs duckdb: {p}"
                    for p in _compare_column(name, got, want, tolerances.get(name))
                ]
    del REL
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-python", help="another build's python, run beside this one")
    ap.add_argument("--callgrind", action="store_true", help="instructions per event")
    ap.add_argument("--callgrind-events", type=int, default=10_000)
    ap.add_argument("--no-all-threads", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args(argv)

    import importlib.util

    if importlib.util.find_spec("duckdb") is None:
        print("duckdb is not installed (pip install duckdb)", file=sys.stderr)
        return 2
    import segment_gen
    import shaped_gen
    from run_ingest import scratch_dir, totals_of

    workdir = scratch_dir()
    _write_workload(workdir)
    try:
        return _run(args, workdir, segment_gen, shaped_gen, totals_of)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(
    args: argparse.Namespace, workdir: Path, segment_gen: Any, shaped_gen: Any, totals_of: Any
) -> int:
    totals: dict[str, Any] = {}
    sizes: dict[str, dict[str, int]] = {}
    small: dict[str, list[Path]] = {}
    for gen, module in (("segment", segment_gen), ("shaped", shaped_gen)):
        events = module.generate_events(args.events, seed=args.seed)
        totals[gen] = totals_of(events)
        sizes[gen] = _write_forms(events, workdir / gen)
        if args.callgrind:
            k = 1000
            small[gen] = []
            for n in (k, k + args.callgrind_events):
                d = workdir / f"{gen}-cg-{n}"
                _write_forms(events[:n], d)
                small[gen].append(d)
        del events

    pythons = [("this", sys.executable)]
    if args.baseline_python:
        pythons.append(("baseline", args.baseline_python))
    contenders: list[Contender] = []
    for gen in GENERATORS:
        contenders.append(
            Contender(f"{gen} duckdb ndjson", gen, "duckdb", "ndjson", "1", sys.executable)
        )
        for tag, py in pythons:
            for form in FORMS:
                contenders.append(
                    Contender(f"{gen} {tag} {form} t=1", gen, "eventtally", form, "1", py)
                )
            if not args.no_all_threads:
                for form in FORMS:
                    contenders.append(
                        Contender(f"{gen} {tag} {form} t=all", gen, "eventtally", form, "all", py)
                    )
            contenders.append(
                Contender(f"{gen} {tag} ingest-only", gen, "ingest-only", "ndjson", "1", py)
            )
    for _ in range(args.repeat):
        for c in contenders:
            t = _run_child(c, workdir)
            c.best = min(c.best, t)
            c.times = [*(c.times or []), t]

    problems = _check(contenders, totals)
    print(
        f"\n{args.events} events per data set (seed {args.seed}); best of {args.repeat}, "
        f"interleaved; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}\n"
    )
    for gen in GENERATORS:
        s = sizes[gen]
        print(
            f"### {gen}: NDJSON {s['ndjson'] / 2**20:.1f} MiB, "
            f"{s['ndjson'] / args.events:.0f} bytes/event\n"
        )
        print(
            "| run | best s | median s | vs DuckDB | vs DuckDB, answer write excluded "
            "| vs NDJSON file (same build, threads) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        duck = next(c for c in contenders if c.generator == gen and c.kind == "duckdb")
        for c in contenders:
            if c.generator != gen:
                continue
            med = sorted(c.times or [math.nan])[len(c.times or [0]) // 2]
            if c.kind == "ingest-only":
                rate = args.events / c.best
                print(
                    f"| {c.label} (ingest of bytes in memory) | {c.best:.3f} | {med:.3f} | "
                    f"{rate / 1e6:.3f} M events/s | | |"
                )
                continue
            ndj = next(
                o
                for o in contenders
                if o.generator == gen
                and o.python == c.python
                and o.kind == c.kind
                and o.form == "ndjson"
                and o.threads == c.threads
            )
            print(
                f"| {c.label} | {c.best:.3f} | {med:.3f} | {duck.best / c.best:.2f}x | "
                f"{duck.best_unwritten / c.best_unwritten:.2f}x | {c.best / ndj.best:.3f} |"
            )
        print()
    _print_phases(contenders)
    if args.callgrind:
        print("### callgrind instructions per event (ingest_file, threads=1)\n")
        print("| data | build | form | instructions/event |")
        print("|---|---|---|---:|")
        for gen in GENERATORS:
            for tag, py in pythons:
                for form in ("ndjson", "array", "array-multiline"):
                    a, b = (
                        _callgrind_total(py, d / FORMS[form], {"OPENBLAS_NUM_THREADS": "1"})
                        for d in small[gen]
                    )
                    print(f"| {gen} | {tag} | {form} | {(b - a) / args.callgrind_events:,.0f} |")
        print()
    if problems:
        print("ANSWERS DISAGREE:")
        for p in problems[:50]:
            print("  " + p)
        return 1
    print(
        "All answers agree (COUNT/MIN/MAX exactly, SUM/AVG within 1e-9, row sets of distinct "
        "and p50; totals equal those of the generated objects)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
