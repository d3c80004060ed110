"""Differential check of the read path: many queries answered by this build and by another.

Run it as a script::

    python benches/diff_read.py --baseline-python /path/to/main-venv/bin/python

What this module guarantees:

- Both interpreters build the same engines from the same deterministic events (no randomness
  beyond a fixed-seed generator) and answer the same list of queries: every calculation, with
  and without a percentile, plain, rolled up (2 min, 1 h, 1 day), collapsed (``$__agg``),
  narrowed to some values, Top/Bottom-N of several sizes, incomplete intervals kept or not,
  narrow and empty windows; as ``answer_json`` (``results`` and ``multi``, one query and the
  whole list in one request), ``results_multi`` and ``results_arrays``.
- The datasets cover what the fast paths branch on: one event per cell, 20 per cell, cells
  past the quantile sketch's exact limit (binned) and the distinct sketch's (HyperLogLog),
  negative values and zeros, two groupings, and rows stored in time order and shuffled.
- Each answer is reduced to a SHA-256 of its bytes (arrays: of their raw buffers); the script
  prints how many answers were compared and exits non-zero naming the first that differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import time
from typing import Any

import eventtally

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
CALCS = ("COUNT", "SUM", "AVG", "MIN", "MAX", "PERCENTILES", "APPROX_COUNT_DISTINCT")


def filter_def(two_groupings: bool) -> dict[str, Any]:
    groupings = [{"grouping": "@.g", "alias": None}]
    if two_groupings:
        groupings.append({"grouping": "@.h", "alias": "h"})
    return {
        "id": "f",
        "name": "f",
        "groupingItems": groupings,
        "intervalType": "MINUTE",
        "intervalCount": 1,
        "aggregations": [
            {"id": 1, "name": "v", "calculations": list(CALCS), "calculationField": "@.v"}
        ],
    }


INGEST = {
    "id": "lines",
    "name": "Lines",
    "schema": "NEWLINE_DELIMITED",
    "timestamp": {"source": "PROPERTY", "path": "@.t", "format": "UNIX_SECONDS"},
}

#: (name, groups, minutes, events per cell, value spread, two groupings, shuffled storage)
DATASETS = (
    ("1 per cell", 40, 300, 1, 1000, False, False),
    ("1 per cell, shuffled", 40, 300, 1, 1000, False, True),
    ("20 per cell", 30, 200, 20, 100_000, False, False),
    ("20 per cell, shuffled, 2 groupings", 12, 150, 20, 100_000, True, True),
    ("150 per cell (binned), negatives", 6, 90, 150, 5000, False, False),
    ("3000 per cell (HLL)", 2, 12, 3000, 10**9, False, False),
)


def events(
    rng: random.Random, groups: int, minutes: int, per_cell: int, spread: int, two: bool
) -> list[list[str]]:
    """One list of NDJSON lines per minute."""
    out = []
    for m in range(minutes):
        lines = []
        for g in range(groups):
            for _ in range(per_cell):
                v = rng.randrange(-spread // 4, spread) / 100
                if rng.random() < 0.02:
                    v = 0
                h = f',"h":"h{rng.randrange(3)}"' if two else ""
                t = T0 + 60 * m + rng.randrange(60)
                lines.append(f'{{"t":{t},"g":"g{g:03d}"{h},"v":{v}}}\n')
        out.append(lines)
    return out


def iso(minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 60 * minute))


def queries(minutes: int, groups: int, two: bool) -> list[dict[str, Any]]:
    shapes: list[dict[str, Any]] = [
        {},
        {"recalculatedInterval": {"type": "SECOND", "frequency": 120}},
        {"recalculatedInterval": {"type": "HOUR", "frequency": 1}},
        {"recalculatedInterval": {"type": "DAY", "frequency": 1}},
        {"groupingFilters": [{"grouping": "@.g", "filters": ["$__agg"]}]},
        {
            "groupingFilters": [{"grouping": "@.g", "filters": ["$__agg"]}],
            "recalculatedInterval": {"type": "MINUTE", "frequency": 10},
        },
        {"groupingFilters": [{"grouping": "@.g", "filters": ["g001", "g003", "g005"]}]},
    ]
    if two:
        shapes.append({"groupingFilters": [{"grouping": "h", "filters": ["$__agg"]}]})
    limits: list[dict[str, Any]] = [
        {},
        {"limit": 1, "limitType": "Top"},
        {"limit": 3, "limitType": "Bottom"},
        {"limit": 10, "limitType": "Top"},
        {"limit": 40, "limitType": "Top"},
    ]
    windows = [(0, minutes), (minutes // 3, minutes // 3 + 7), (minutes + 5, minutes + 9)]
    out = []
    for calc in CALCS:
        for si, shape in enumerate(shapes):
            for li, lim in enumerate(limits):
                for wi, (a, b) in enumerate(windows):
                    if wi and (li or si % 2):
                        continue
                    q: dict[str, Any] = {
                        "filterId": "f",
                        "aggregationId": 1,
                        "calculation": calc,
                        "startTime": iso(a),
                        "endTime": iso(b),
                        "includeIncompleteIntervals": (si + li) % 2 == 0,
                        "queryId": f"{calc}-{si}-{li}-{wi}",
                        **shape,
                        **lim,
                    }
                    if calc == "PERCENTILES":
                        q["percentile"] = (0.5, 0.99, 0.01, 1.0)[(si + li) % 4]
                    out.append(q)
    return out


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:24]


def answers() -> dict[str, str]:
    """Every answer of this build, by name, as a digest."""
    out: dict[str, str] = {}
    for name, groups, minutes, per_cell, spread, two, shuffled in DATASETS:
        rng = random.Random(name)
        # The clock ends mid-way through the last hour, so the last rollup buckets are
        # incomplete and "includeIncompleteIntervals" matters.
        now = T0 + 60 * minutes - 600
        engine = eventtally.Engine(INGEST, [filter_def(two)], clock=lambda now=now: now)
        per_minute = events(rng, groups, minutes, per_cell, spread, two)
        if shuffled:
            lines = [line for batch in per_minute for line in batch]
            rng.shuffle(lines)
            batches = [lines[i : i + 5000] for i in range(0, len(lines), 5000)]
        else:
            batches = per_minute
        for batch in batches:
            engine.ingest("".join(batch).encode(), ingest_id="lines")
        qs = queries(minutes, groups, two)
        for q in qs:
            key = f"{name} | {q['queryId']}"
            body = json.dumps(q).encode()
            text = engine.answer_json("results", body)
            assert text is not None
            out[f"{key} | results"] = digest(b"".join(text))
            multi = engine.answer_json("multi", body)
            assert multi is not None
            out[f"{key} | multi"] = digest(b"".join(multi))
            arrays = engine.results_arrays(q)
            parts = [arrays.dt.tobytes(), arrays.values.tobytes(), arrays.codes.tobytes()]
            for k, v in sorted(arrays.groupings.items()):
                parts.append(k.encode() + json.dumps(list(v)).encode())
            out[f"{key} | arrays"] = digest(b"\0".join(parts))
        for i in range(0, len(qs), 6):
            chunk = qs[i : i + 6]
            whole = engine.answer_json("multi", json.dumps(chunk).encode())
            assert whole is not None
            out[f"{name} | multi list {i}"] = digest(b"".join(whole))
            rows = json.dumps(engine.results_multi(chunk)).encode()
            out[f"{name} | results_multi {i}"] = digest(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-python", help="interpreter of the other build")
    ap.add_argument("--json", action="store_true", help="print the digests as JSON (internal)")
    args = ap.parse_args()
    if args.json:
        print(json.dumps(answers()))
        return
    mine = answers()
    if not args.baseline_python:
        print(f"{len(mine)} answers (no baseline given, nothing compared)")
        return
    done = subprocess.run(
        [args.baseline_python, __file__, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    theirs = json.loads(done.stdout)
    assert theirs.keys() == mine.keys(), "the two runs asked different questions"
    differ = [k for k in mine if mine[k] != theirs[k]]
    print(f"{len(mine)} answers compared, {len(differ)} differ")
    for k in differ[:20]:
        print(f"  differs: {k}")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
