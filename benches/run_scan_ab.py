"""A/B benchmark of the JSON scanner (issue 13): ``ingest`` alone, two builds, one run.

Run it as a script, once per build pair::

    python benches/run_scan_ab.py --base /path/to/main-venv/bin/python --events 100000 --rounds 3
    python benches/run_scan_ab.py --base ... --callgrind

What this module guarantees:

- Both builds read the same bytes: ``segment_gen.generate_events(n, seed)`` and
  ``shaped_gen.generate_events(n, seed)`` (the second shape: other field order, a deeper
  ``context``, longer strings with escapes and non-ASCII text), as one JSON array each, written
  once to a temporary directory.
- Wall time: each build runs in its own child interpreter (``--base`` and ``--python``, by
  default the interpreter running this script), the two interleaved round by round so the
  machine's background load hits both alike. A child times ``Engine.ingest`` alone (engine built
  outside the timed region) in CPU time of its thread (``time.thread_time``: a descheduled child
  is not charged for other processes), best of ``--repeat``; the figure reported is the best
  over rounds, and each round's ratio is printed too.
- Answers are checked, not only timed: every child returns the answer of all seven calculations
  of ``BENCH_FILTER``; this process holds each shape's answer to the totals of its generated
  objects (``check_totals``) and requires every child's answer on a shape, of both builds and
  every round, to be exactly the same. A disagreement exits 1.
- ``--callgrind``: instructions per event from ``valgrind --tool=callgrind``, counted only
  inside the binding's ``Engine.ingest`` (``--toggle-collect``: the whole call, from the
  Python object to the applied state and the stats dict, without the interpreter), as the
  difference between a run on ``n`` events and one on ``n / 6``, divided by the difference in
  events, so per-batch set-up cancels out. The same run splits that total by inclusive cost
  (``callgrind_annotate``): ``Plan::prepare`` (scan and per-event update into the batch's
  delta), inside it the token walk (``extract_at``), the skip of unread containers
  (``skip_container``), the per-event ``update`` of the aggregate state, the timestamp parse
  and the UTF-8 check; and the rest of the call (the merge into the store, the binding). A
  function that LTO inlined everywhere reports 0. Instruction counts are repeatable on a
  shared machine where wall time is not.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import segment_gen  # noqa: E402
import shaped_gen  # noqa: E402
from segment_gen import BENCH_FILTER, BENCH_INGEST, encode_array  # noqa: E402

SHAPES = {"segment_gen": segment_gen.generate_events, "shaped_gen": shaped_gen.generate_events}
"""The two data shapes, by name: each name's generator of ``(n, seed)`` events."""


def _child(path: str, repeat: int, answer: bool) -> None:
    """Child mode: ingest the file ``repeat`` times, print best seconds and the answer."""
    import eventtally
    from run_ingest import QUERIES, normalize_eventtally

    data = Path(path).read_bytes()
    best = float("inf")
    engine = None
    for _ in range(repeat):
        engine = eventtally.Engine(BENCH_INGEST, [BENCH_FILTER])
        gc.collect()
        # CPU time of this thread: the machine is shared, and a descheduled child would
        # otherwise be charged for the other sessions' work.
        t0 = time.thread_time()
        engine.ingest(data)
        best = min(best, time.thread_time() - t0)
    out: dict[str, Any] = {"seconds": best}
    if answer and engine is not None:
        raw = {name: engine.results_arrays(q) for name, q in QUERIES.items()}
        cols = normalize_eventtally(raw).columns
        out["answer"] = {
            name: sorted([list(k), v] for k, v in col.items()) for name, col in cols.items()
        }
    print(json.dumps(out))


def _run_child(python: str, path: Path, repeat: int, answer: bool = True) -> dict[str, Any]:
    cmd = [python, __file__, "--child", str(path), "--repeat", str(repeat)]
    if not answer:
        cmd.append("--no-answer")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


PARTS: dict[str, tuple[str, ...]] = {
    "prepare": ("eventtally_core::engine::Plan::prepare ",),
    "extract_at": ("eventtally_core::batch::Scanner<S>::extract_at ",),
    "skip_container": ("eventtally_core::batch::Scanner<S>::skip_container ",),
    "update": ("eventtally_core::engine::update ",),
    # Builds since b13 parse event timestamps through `Iso8601Parser`; older ones call the
    # function directly. A build has only one of the two on the ingest path.
    "timestamp": (
        "eventtally_core::time::iso8601::Iso8601Parser::parse ",
        "eventtally_core::time::iso8601::parse_iso8601 ",
    ),
    "utf8": ("eventtally_core::batch::decode_utf8 ",),
}
"""Inclusive callgrind cost per part of the ingest (``--callgrind``): the names each part's
function may have in ``callgrind_annotate --inclusive=yes`` (its own entry, not a call site),
the first one found counting."""


def _callgrind_ir(python: str, path: Path) -> dict[str, int]:
    """Instructions of one ``Engine.ingest`` call: the total and each part of ``PARTS``."""
    # Only inside the binding's `ingest` (the whole call): the interpreter, the import and
    # numpy's thread pool stay out of the count.
    with tempfile.NamedTemporaryFile(prefix="et-callgrind-", suffix=".out") as out:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}"]
        cmd += ["--toggle-collect=_core::engine::Engine::__pymethod_ingest__", python, __file__]
        done = subprocess.run(
            [*cmd, "--child", str(path), "--repeat", "1", "--no-answer"],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"no callgrind total in: {done.stderr[-500:]}")
        annotated = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", out.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout
    return {"total": int(found.group(1)), **parts_of(annotated)}


def parts_of(annotated: str) -> dict[str, int]:
    """Each part of ``PARTS``: its function's inclusive count in ``callgrind_annotate`` text."""
    counts = {}
    for part, patterns in PARTS.items():
        counts[part] = 0
        for pattern in patterns:
            # A function's own line reads "<count> (<pct>)  ???:<name> [<object>]"; call-site
            # lines carry "=>" or "<" before the name and are left out by the anchor.
            line = re.search(
                r"^\s*([\d,]+) \([^)]*\)\s+\S*:" + re.escape(pattern).replace(r"\ ", r"\s"),
                annotated,
                re.M,
            )
            if line:
                counts[part] = int(line.group(1).replace(",", ""))
                break
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="python of the baseline build (e.g. main's)")
    ap.add_argument("--python", default=sys.executable, help="python of the build under test")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per build")
    ap.add_argument("--repeat", type=int, default=3, help="timed ingests per child")
    ap.add_argument("--callgrind", action="store_true", help="instructions per event instead")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--no-answer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.repeat, not args.no_answer)
        return 0
    if not args.base:
        ap.error("--base is required")
    if args.events < 12:
        ap.error("--events must be at least 12")
    builds = {"base": args.base, "new": args.python}

    from run_ingest import check_totals, normalize_eventtally, run_eventtally, totals_of

    with tempfile.TemporaryDirectory(prefix="et-scan-ab-") as tmp:
        small = max(args.events // 6, 1)
        files: dict[tuple[str, int], Path] = {}
        for n in (args.events, small) if args.callgrind else (args.events,):
            for shape, generate in SHAPES.items():
                events = generate(n, seed=args.seed)
                files[shape, n] = Path(tmp) / f"{shape}-{n}.json"
                files[shape, n].write_bytes(encode_array(events))
                if n != args.events:
                    continue
                problems = check_totals(
                    normalize_eventtally(run_eventtally(files[shape, n].read_bytes())),
                    totals_of(events),
                )
                if problems:
                    print(f"{shape}: " + "; ".join(problems))
                    return 1

        if args.callgrind:
            print(f"instructions per event (callgrind, {args.events} - {small} events)")
            for shape in SHAPES:
                per: dict[str, dict[str, float]] = {}
                for name, python in builds.items():
                    big = _callgrind_ir(python, files[shape, args.events])
                    little = _callgrind_ir(python, files[shape, small])
                    per[name] = {
                        part: (big[part] - little[part]) / (args.events - small) for part in big
                    }
                    per[name]["outside prepare"] = per[name]["total"] - per[name]["prepare"]
                for part in per["base"]:
                    b, n = per["base"][part], per["new"][part]
                    # A part that costs nothing in the baseline has no ratio.
                    ratio = f"{n / b:.3f}" if abs(b) >= 1 else "-"
                    label = f"{shape} {part}"
                    print(f"  {label:32} base {b:8.0f}  new {n:8.0f}  new/base {ratio}")
            return 0

        best = {(b, s): float("inf") for b in builds for s in SHAPES}
        answers: dict[str, list[Any]] = {shape: [] for shape in SHAPES}
        for r in range(args.rounds):
            for shape in SHAPES:
                secs = {}
                for name, python in builds.items():
                    got = _run_child(python, files[shape, args.events], args.repeat)
                    answers[shape].append(got["answer"])
                    secs[name] = got["seconds"]
                    best[name, shape] = min(best[name, shape], got["seconds"])
                print(
                    f"round {r + 1} {shape:12} "
                    f"base {args.events / secs['base'] / 1e6:.3f} M/CPU-s"
                    f"  new {args.events / secs['new'] / 1e6:.3f} M/CPU-s"
                    f"  new/base {secs['base'] / secs['new']:.3f}"
                )
        if any(a != got[0] for got in answers.values() for a in got):
            print("answers differ between builds or rounds")
            return 1
        print(f"best of {args.rounds} rounds x {args.repeat}, {args.events} events:")
        for shape in SHAPES:
            b, n = best["base", shape], best["new", shape]
            print(
                f"  {shape:12} base {args.events / b / 1e6:.3f} M/CPU-s  "
                f"new {args.events / n / 1e6:.3f} M/CPU-s  new/base {b / n:.3f}"
            )
        print("answers: all equal per shape, totals match the generated events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
