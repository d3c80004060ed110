"""Two builds' pytest-benchmark suites in one run, as a ratio table.

Guarantees: each build runs its *own* tree's benchmark files with its own interpreter (so a
benchmark written against an older API still runs on the older build), the builds alternate round
by round (A, B, A, B, ...) so that a noisy neighbour weighs on both alike, and only benchmarks that
exist in both trees are compared. Each figure is the lowest median over the rounds; the ratio is
this build's figure over the baseline's (below 1 is faster). Every benchmark still checks its own
answer, so a build that answers wrongly fails its run instead of reporting a time.

    python benches/compare_builds.py --baseline-tree /path/to/old/checkout \
        --baseline-python /path/to/old/venv/bin/python --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ("benches/bench_ingest.py", "benches/bench_query.py", "benches/bench_wal.py")
# DuckDB and the pure-Python reference are the same code in both trees: timing them twice per
# round only lengthens the run.
DEFAULT_SELECT = "not duckdb and not test_reference"


def run_suite(
    tree: Path, python: str, files: list[str], select: str, events: str
) -> dict[str, float]:
    """One pass of the suites in ``tree`` with ``python``; medians in seconds by benchmark name."""
    present = [f for f in files if (tree / f).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        cmd = [
            python, "-m", "pytest", *present, "-q", "-p", "no:cacheprovider",
            "--benchmark-enable", "--benchmark-only", f"--benchmark-json={out}", "-k", select,
        ]  # fmt: skip
        env = {**os.environ, "EVENTTALLY_BENCH_EVENTS": events}
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"the suites failed in {tree} (exit {done.returncode})")
        report = json.loads(out.read_text())
    return {b["fullname"].split("::", 1)[1]: b["stats"]["median"] for b in report["benchmarks"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--baseline-tree", type=Path, required=True, help="checkout of the old build")
    ap.add_argument("--baseline-python", required=True, help="interpreter with the old build")
    ap.add_argument("--python", default=sys.executable, help="interpreter with this build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--events", default="200000", help="EVENTTALLY_BENCH_EVENTS for both")
    ap.add_argument("--select", default=DEFAULT_SELECT, help="pytest -k expression")
    ap.add_argument("files", nargs="*", default=list(DEFAULT_FILES))
    args = ap.parse_args()

    best: dict[str, dict[str, float]] = {"base": {}, "new": {}}
    for round_no in range(args.rounds):
        for label, tree, python in (
            ("base", args.baseline_tree, args.baseline_python),
            ("new", HERE, args.python),
        ):
            print(f"round {round_no + 1}/{args.rounds}: {label}", file=sys.stderr, flush=True)
            for name, median in run_suite(
                tree, python, args.files, args.select, args.events
            ).items():
                seen = best[label].get(name)
                best[label][name] = median if seen is None else min(seen, median)

    common = sorted(set(best["base"]) & set(best["new"]))
    if not common:
        raise SystemExit("no benchmark exists in both trees")
    print("| benchmark | baseline ms | this build ms | ratio |")
    print("|---|---:|---:|---:|")
    for name in common:
        base, new = best["base"][name] * 1e3, best["new"][name] * 1e3
        print(f"| `{name}` | {base:.2f} | {new:.2f} | {new / base:.2f} |")
    only = sorted(set(best["base"]) ^ set(best["new"]))
    if only:
        print(f"\nin one tree only (not compared): {', '.join(only)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
