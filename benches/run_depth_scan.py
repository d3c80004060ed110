"""Cost of the JSON depth scan (``eventtally/_safejson.py``) against ``json.loads``, in one run.

Run it as a script (prints a markdown table)::

    python benches/run_depth_scan.py [--repeat 20] [--seed 1]

What this module guarantees:

- Bodies: a 300-event Segment batch from ``segment_gen`` (what the deduplicator scans), a typical
  Metrics API query (what ``read_json`` scans), and three hostile 1 MiB bodies: a run of openers,
  interleaved ``[[],`` nesting, and a "caterpillar" (a spine whose every level carries a deep
  sibling, the worst shape for the peeling passes).
- Every scan's answer is checked: the batch and the query against a recursive walk of the parsed
  value, the hostile bodies must be refused (depth over the limit of 64).
- Times are the best of ``--repeat`` runs; ratios are against ``json.loads`` of the 300-event
  batch measured in the same run, so background load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from eventtally import _safejson as safejson
from segment_gen import batches, generate_events

MIB = 1 << 20


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _caterpillar(size: int) -> bytes:
    # Siblings 60 deep with no run of openers: level-by-level peeling would need 60 passes.
    sibling = b"[[]," * 59 + b"1" + b"]" * 59
    levels = size // (len(sibling) + 3)
    return b"[" + (sibling + b",[") * levels + b"1" + b"]" * (levels + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    batch = batches(generate_events(300, seed=args.seed), 300)[0]
    query = json.dumps(
        {"filterId": "f", "aggregationId": 1, "calculation": "SUM",
         "startTime": "2024-05-14T00:00:00Z", "endTime": "2024-05-15T00:00:00Z",
         "groupingFilters": [{"alias": "Plan", "values": ["pro", "team"]}]}
    ).encode()  # fmt: skip
    assert safejson.depth(batch) == _depth(json.loads(batch))
    assert safejson.depth(query) == _depth(json.loads(query))
    hostile = {
        "run of openers": b"[" * (MIB // 2) + b"]" * (MIB // 2),
        "interleaved [[],": b"[[]," * (MIB // 5) + b"1" + b"]" * (MIB // 5),
        "caterpillar": _caterpillar(MIB),
    }
    for name, body in hostile.items():
        assert safejson.depth(body) > safejson.MAX_DEPTH, name

    baseline = _best(lambda: json.loads(batch), args.repeat)
    rows = [
        ("json.loads, 300-event batch (baseline)", len(batch), baseline),
        ("scan, 300-event batch", len(batch),
         _best(lambda: safejson.check_depth(batch), args.repeat)),
        ("scan, Metrics API query", len(query),
         _best(lambda: safejson.check_depth(query), args.repeat)),
    ]  # fmt: skip
    for name, body in hostile.items():
        rows.append(
            (
                f"scan, hostile: {name} (refused)",
                len(body),
                _best(lambda body=body: safejson.depth(body), args.repeat),
            )
        )
    print("| body | bytes | best µs | ratio to the baseline |")
    print("|---|---:|---:|---:|")
    for name, size, seconds in rows:
        print(f"| {name} | {size:,} | {seconds * 1e6:,.1f} | {seconds / baseline:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
