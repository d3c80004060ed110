"""A compaction racing concurrent batches, run in a subprocess by ``test_retention`` (and by hand:
``python tests/race_compact.py --rounds 3``).

Each round loads one engine state (two simulated days of minute cells, 200 groups) twice.  On
the first copy, 4 threads apply batches (``prepare`` + ``apply`` and ``ingest``) while the main
thread runs ``compact``: late events inside the range being compacted, events in the minute
tier, events of new groups.  The second copy gets the same batches first and is compacted after
them.  Both must then answer every query exactly alike: COUNT, SUM, MIN, MAX (values are
multiples of 1/8, so sums do not depend on the order of addition), AVG, the percentile and the
distinct-count sketches, per bucket and rolled up by day; the raced copy must have nothing left
to compact; and some batches must really have been applied while the compaction ran.

With ``--hold-us N`` each compaction step keeps the state lock N microseconds longer (the
engine's test hook), so batches sent meanwhile take the pending path: they are queued and
applied by the step. The round then also checks that some were (``batches_deferred``), that
none was refused, and read-your-writes: thread 0 queries the total COUNT after each of its
batches, which must include every event whose ingest had returned before the query started.

A deadlock cannot stall the caller: ``faulthandler`` dumps every thread's stack and exits the
process from its own C watchdog thread, which needs no GIL, once a round (or the setup) has
taken longer than ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import random
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import eventtally

MINUTE = 60
HOUR = 3600
DAY = 86_400
#: 2024-03-01T00:00:00Z
T0 = 1_709_251_200
#: Minutes older than 12 hours go to hours, hours older than 30 hours to days: at NOW, day 0 is
#: merged into a day bucket and most of day 1 into hours.
NOW = T0 + 2 * DAY + 8 * HOUR
GROUPS = 200
THREADS = 4
BATCHES_PER_THREAD = 60

INGEST = {
    "id": "i",
    "timestamp": {"source": "PROPERTY", "path": "$.t", "format": "UNIX_SECONDS"},
}
FILTER = {
    "id": "f",
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "groupings": ["$.g"],
    "aggregations": [
        {
            "id": 1,
            "calculations": ["COUNT", "SUM", "AVG", "MIN", "MAX", "PERCENTILES"],
            "calculationField": "$.v",
        },
        {"id": 2, "calculations": ["APPROX_COUNT_DISTINCT"], "calculationField": "$.u"},
    ],
    "retention": [
        {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 12 * HOUR},
        {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 30 * HOUR},
        {"intervalType": "DAY", "intervalCount": 1, "keepSeconds": 0},
    ],
}
CALCS = [
    (1, "COUNT"),
    (1, "SUM"),
    (1, "AVG"),
    (1, "MIN"),
    (1, "MAX"),
    (1, "PERCENTILES"),
    (2, "APPROX_COUNT_DISTINCT"),
]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def base_state(rng: random.Random) -> bytes:
    """Two days of one event per group and minute, as a snapshot."""
    e = eventtally.Engine(INGEST, [FILTER], clock=lambda: float(T0))
    for hour in range(48):
        events = [
            {
                "t": T0 + hour * HOUR + m * MINUTE + rng.randrange(60),
                "g": f"g{g}",
                "v": rng.randrange(80_000) / 8,
                "u": f"u{rng.randrange(500)}",
            }
            for m in range(60)
            for g in range(GROUPS)
        ]
        e.ingest(json.dumps(events).encode())
    return e.to_bytes()


def concurrent_batches(rng: random.Random) -> list[list[bytes]]:
    """Per thread, its batches: late (day 0 and 1), young (the minute tier) and new groups."""
    out = []
    for th in range(THREADS):
        mine = []
        for b in range(BATCHES_PER_THREAD):
            events = []
            for _ in range(40):
                kind = rng.randrange(3)
                # Inside the compacted range, or in the minute tier.
                t = T0 + rng.randrange(2 * DAY) if kind == 0 else NOW - rng.randrange(10 * HOUR)
                g = f"g{rng.randrange(GROUPS)}" if kind < 2 else f"n{th}-{b % 7}"
                events.append(
                    {"t": t, "g": g, "v": rng.randrange(80_000) / 8, "u": f"u{rng.randrange(900)}"}
                )
            mine.append(json.dumps(events).encode())
        out.append(mine)
    return out


def answers(e: eventtally.Engine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for agg, calc in CALCS:
        for rollup in (None, "DAY"):
            q: dict[str, Any] = {
                "filterId": "f",
                "aggregationId": agg,
                "calculation": calc,
                "startTime": _iso(T0 - DAY),
                "endTime": _iso(NOW + DAY),
            }
            if calc == "PERCENTILES":
                q["percentile"] = 0.9
            if rollup:
                q["recalculatedInterval"] = {"type": rollup, "frequency": 1}
            out[f"{calc}/{rollup}"] = e.results(q)
    out["tiers"] = [(t["intervalType"], t["rows"]) for t in e.tier_usage()["f"]]
    return out


def total_count(e: eventtally.Engine) -> float:
    q = {
        "filterId": "f",
        "aggregationId": 1,
        "calculation": "COUNT",
        "startTime": _iso(T0 - DAY),
        "endTime": _iso(NOW + DAY),
        "recalculatedInterval": {"type": "DAY", "frequency": 1},
    }
    return sum(r["value"] for r in e.results(q))


def run_round(snapshot: bytes, batches: list[list[bytes]], hold_us: int) -> int:
    """One round; returns how many batches were applied while the compaction ran."""
    raced = eventtally.Engine.from_bytes(snapshot, clock=lambda: float(NOW))
    after = eventtally.Engine.from_bytes(snapshot, clock=lambda: float(NOW))
    base_total = total_count(raced)
    if hold_us:
        raced._inner.hold_compaction_steps(hold_us)
    barrier = threading.Barrier(THREADS + 1)
    spans: list[tuple[float, float]] = []
    failures: list[BaseException] = []
    returned_lock = threading.Lock()
    returned = [0]  # events of the batches whose ingest returned

    def applier(i: int) -> None:
        barrier.wait()
        try:
            for n, body in enumerate(batches[i]):
                t0 = time.perf_counter()
                if n % 2:
                    raced.ingest(body)
                else:
                    raced.apply(raced.prepare(body))
                spans.append((t0, time.perf_counter()))
                with returned_lock:
                    returned[0] += len(json.loads(body))
                if hold_us and i == 0:
                    with returned_lock:
                        must_see = returned[0]
                    seen = total_count(raced) - base_total
                    if seen < must_see:
                        raise AssertionError(
                            f"read-your-writes: counted {seen} events, {must_see} returned"
                        )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=applier, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    c0 = time.perf_counter()
    raced_report = raced.compact()
    c1 = time.perf_counter()
    for t in threads:
        t.join()
    raced._inner.hold_compaction_steps(0)
    if failures:
        raise failures[0]
    if hold_us and not raced_report["batches_deferred"]:
        raise AssertionError(f"no batch took the pending path: {raced_report}")
    if raced_report["batches_refused"]:
        raise AssertionError(f"queued batches were refused: {raced_report}")
    during = sum(1 for a, b in spans if a >= c0 and b <= c1)

    for mine in batches:
        for body in mine:
            after.ingest(body)
    after_report = after.compact()
    if raced_report["cells_merged"] == 0 or after_report["cells_merged"] == 0:
        raise AssertionError(f"nothing compacted: {raced_report} {after_report}")
    again = raced.compact()
    if again["cells_merged"] or again["cells_dropped"]:
        raise AssertionError(f"the raced compaction left work behind: {again}")
    mine, theirs = answers(raced), answers(after)
    for key in theirs:
        if mine[key] != theirs[key]:
            raise AssertionError(f"{key}: the raced compaction answers differently")
    total = sum(r["value"] for r in mine["COUNT/DAY"])
    expected = 48 * 60 * GROUPS + THREADS * BATCHES_PER_THREAD * 40
    if total != expected:
        raise AssertionError(f"counted {total}, expected {expected}")
    return during


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds a round (or the setup) may take before a stack dump",
    )
    parser.add_argument(
        "--hold-us", type=int, default=0, help="extra microseconds each compaction step holds"
    )
    args = parser.parse_args()
    # The watchdog is re-armed per round: a deadlock still fails within one deadline, while a
    # slow but progressing run (a loaded machine takes several times longer) does not trip it.
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    rng = random.Random(10)
    snapshot = base_state(rng)
    during = []
    for _ in range(args.rounds):
        faulthandler.dump_traceback_later(args.deadline, exit=True)
        during.append(run_round(snapshot, concurrent_batches(rng), args.hold_us))
    faulthandler.cancel_dump_traceback_later()
    if not any(during):
        raise AssertionError(f"no batch was applied while a compaction ran: {during}")
    print(f"ok: {args.rounds} rounds, batches applied during compaction: {during}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
