"""Retention benchmark of issue 10: bounded state over a simulated year, compaction time, and
ingest latency while a compaction runs.

Run it as a script::

    python benches/run_retention.py --groupings 1000 --days 365

What this module guarantees:

- Simulated time only: the engine's clock is injected and every batch is dated by
  ``received_at`` (ingest-time timestamps), so a year runs in minutes.  Every simulated minute
  brings one batch with one event per grouping (``--groupings``, default 1,000), i.e. one new
  cell per grouping and minute, the cell count of the issue's 1,000 req/s x 300 events load.
- The engine uses the server's documented default tiers (minutes 7 days, hours 400 days, days
  forever) and is compacted every ``--compact-every`` simulated minutes (default 1,440: daily;
  the state sampled at the end of each day does not depend on it, only the work per call
  does); state bytes (``Engine.state_bytes``) and rows per tier are reported per simulated day,
  beside an engine without retention over the same days (``--baseline-days``).
- Compaction time: one day of minute cells (``groupings x 1,440``, 1.44 M at 1,000 groupings)
  moved into hours in one ``compact`` call, best of ``--repeat`` fresh copies; checked: the hourly
  COUNT total equals the events.
- Ingest latency: a thread posts 300-event batches into the same engine; p99 of the batches that
  overlapped a compaction is compared with p99 of a run without one, in interleaved pairs of
  runs (``--latency-repeat``), each pair a ratio, and the compaction's time under that ingest;
  batches are sent at ``--rate`` a second (default 1,000, the issue's load; 0 = back to back).
  The compaction runs on its own thread at ``--compaction-nice`` lower priority, as the
  server's compaction thread does (default: the server's ``compaction_nice``; 0 = the ingest
  thread's priority); each pair also reports how many batches took the engine's pending path
  (``batches_deferred``).
- Only local memory is used; nothing is written outside the process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

import eventtally  # noqa: E402
from eventtally.server.config import DEFAULT_RETENTION, ServerConfig  # noqa: E402
from eventtally.server.runtime.maintenance import lower_thread_priority  # noqa: E402

MINUTE = 60
HOUR = 3600
DAY = 86_400
#: 2025-01-01T00:00:00Z
T0 = 1_735_689_600

INGEST = {"id": "i"}  # ingest-time timestamps: the batch's received_at dates its events


def filter_def(retention: bool) -> dict[str, Any]:
    f: dict[str, Any] = {
        "id": "f",
        "intervalType": "MINUTE",
        "intervalCount": 1,
        "groupings": ["$.g"],
        "aggregations": [
            {"id": 1, "calculations": ["COUNT"]},
            {"id": 2, "calculations": ["SUM", "MIN", "MAX", "AVG"], "calculationField": "$.v"},
        ],
    }
    if retention:
        f["retention"] = [dict(t) for t in DEFAULT_RETENTION]
    return f


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def minute_batch(groupings: int, salt: int) -> bytes:
    return json.dumps(
        [{"g": f"g{g}", "v": (g * 31 + salt) % 997 / 4} for g in range(groupings)]
    ).encode()


def simulate_year(
    groupings: int, days: int, baseline_days: int, compact_every: int
) -> list[dict[str, Any]]:
    clock = Clock(T0)
    tiered = eventtally.Engine(INGEST, [filter_def(True)], clock=clock)
    plain = eventtally.Engine(INGEST, [filter_def(False)], clock=clock) if baseline_days else None
    batches = [minute_batch(groupings, s) for s in range(4)]
    rows: list[dict[str, Any]] = []
    compact_s = 0.0
    for day in range(days):
        for m in range(1440):
            t = T0 + day * DAY + m * MINUTE
            body = batches[m % 4]
            tiered.ingest(body, received_at=t)
            if plain is not None and day < baseline_days:
                plain.ingest(body, received_at=t)
            if m % compact_every == compact_every - 1:
                clock.now = t + MINUTE
                t0 = time.perf_counter()
                tiered.compact()
                compact_s += time.perf_counter() - t0
        usage = {u["intervalType"]: u["rows"] for u in tiered.tier_usage()["f"]}
        row = {
            "day": day + 1,
            "state_bytes": tiered.state_bytes(),
            "minute_rows": usage.get("MINUTE", 0),
            "hour_rows": usage.get("HOUR", 0),
            "day_rows": usage.get("DAY", 0),
            "plain_bytes": plain.state_bytes()
            if plain is not None and day < baseline_days
            else None,
            "compaction_s_total": round(compact_s, 2),
        }
        rows.append(row)
        if plain is not None and day + 1 == baseline_days:
            plain = None  # free it: the baseline only has to show the unbounded slope
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def day_of_minutes(groupings: int) -> eventtally.Engine:
    clock = Clock(T0)
    e = eventtally.Engine(INGEST, [filter_def(True)], clock=clock)
    batches = [minute_batch(groupings, s) for s in range(4)]
    for m in range(1440):
        e.ingest(batches[m % 4], received_at=T0 + m * MINUTE)
    return e


def compaction_time(groupings: int, repeat: int) -> dict[str, Any]:
    base = day_of_minutes(groupings)
    snapshot = base.to_bytes()
    cells = base.tier_usage()["f"][0]["rows"]
    times = []
    for _ in range(repeat):
        e = eventtally.Engine.from_bytes(snapshot, clock=Clock(T0 + 8 * DAY))
        t0 = time.perf_counter()
        report = e.compact()
        times.append(time.perf_counter() - t0)
        assert report["cells_merged"] == cells - 24 * groupings, report
        total = sum(
            r["value"]
            for r in e.results({"filterId": "f", "aggregationId": 1, "calculation": "COUNT"})
        )
        assert total == 1440 * groupings, total
    return {
        "cells": cells,
        "best_s": round(min(times), 3),
        "median_s": round(statistics.median(times), 3),
    }


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


def ingest_latency(
    groupings: int, seconds: float, repeat: int, rate: float, nice: int
) -> dict[str, Any]:
    """p99 of 300-event batch latency with and without a concurrent compaction; batches are
    sent at ``rate`` a second (a batch that is late is sent at once; 0 = back to back); the
    compaction runs on a thread ``nice`` lower in priority."""
    snapshot = day_of_minutes(groupings).to_bytes()
    batch = json.dumps([{"g": f"g{i % groupings}", "v": i % 97} for i in range(300)]).encode()

    def run(compact: bool) -> tuple[list[float], float, int]:
        clock = Clock(T0 + 8 * DAY)
        e = eventtally.Engine.from_bytes(snapshot, clock=clock)
        lat: list[tuple[float, float]] = []
        stop = threading.Event()

        def post() -> None:
            gap = 1.0 / rate if rate > 0 else 0.0
            due = time.perf_counter()
            while not stop.is_set():
                due += gap
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                else:
                    due = time.perf_counter()  # behind: do not send a burst to catch up
                t0 = time.perf_counter()
                e.ingest(batch, received_at=T0 + 8 * DAY)
                lat.append((t0, time.perf_counter()))

        th = threading.Thread(target=post)
        th.start()
        time.sleep(seconds / 2)
        report: dict[str, Any] = {}

        def compaction() -> None:
            lower_thread_priority(nice)
            report.update(e.compact())

        c0 = time.perf_counter()
        if compact:
            worker = threading.Thread(target=compaction, name="compaction")
            worker.start()
            worker.join()
        c1 = time.perf_counter()
        time.sleep(seconds / 2)
        stop.set()
        th.join()
        if compact:
            overlapped = [b - a for a, b in lat if b >= c0 and a <= c1]
        else:
            overlapped = [b - a for a, b in lat]
        return overlapped, c1 - c0, int(report.get("batches_deferred", 0))

    # Pairs of runs, without and with a compaction, interleaved so machine load hits both alike;
    # the ratio of each pair is reported, and their median.
    pairs = []
    for _ in range(repeat):
        base, _, _ = run(False)
        during, took, deferred = run(True)
        pairs.append(
            {
                "baseline_p99_ms": round(_p99(base) * 1000, 3),
                "during_p99_ms": round(_p99(during) * 1000, 3),
                "ratio": round(_p99(during) / _p99(base), 2),
                "batches_during": len(during),
                "batches_deferred": deferred,
                "compaction_s": round(took, 3),
            }
        )
    return {"pairs": pairs, "median_ratio": statistics.median(p["ratio"] for p in pairs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groupings", type=int, default=1000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--baseline-days", type=int, default=14)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=4.0)
    ap.add_argument("--latency-repeat", type=int, default=3, help="pairs of runs")
    ap.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="batches a second while measuring p99 (0 = back to back)",
    )
    ap.add_argument("--compact-every", type=int, default=1440, help="simulated minutes")
    ap.add_argument(
        "--compaction-nice",
        type=int,
        default=ServerConfig().compaction_nice,
        help="nice increment of the compaction thread (the server's default)",
    )
    ap.add_argument("--skip-year", action="store_true")
    args = ap.parse_args(argv)

    comp = compaction_time(args.groupings, args.repeat)
    print(f"\n## Compaction of one day of minute cells ({comp['cells']:,} cells)\n")
    print(f"best {comp['best_s']} s, median {comp['median_s']} s (target <= 2 s)")
    lat = ingest_latency(
        args.groupings, args.latency_seconds, args.latency_repeat, args.rate, args.compaction_nice
    )
    rate = f"{args.rate:g} a second" if args.rate > 0 else "back to back"
    print(
        f"\n## Ingest p99 of 300-event batches ({rate}), compaction thread at nice "
        f"+{args.compaction_nice}, same run\n"
    )
    print(
        "| without compaction | overlapping a compaction | ratio | compaction under ingest "
        "| batches queued |"
    )
    print("|---|---|---|---|---|")
    for p in lat["pairs"]:
        print(
            f"| {p['baseline_p99_ms']} ms | {p['during_p99_ms']} ms "
            f"({p['batches_during']} batches) | {p['ratio']}x | {p['compaction_s']} s "
            f"| {p['batches_deferred']} |"
        )
    print(f"\nmedian ratio {lat['median_ratio']}x (target <= 2x)")
    if not args.skip_year:
        rows = simulate_year(args.groupings, args.days, args.baseline_days, args.compact_every)
        print(f"\n## A simulated year, {args.groupings:,} groupings, default tiers\n")
        print("| day | state MiB | minute rows | hour rows | day rows | no retention MiB |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            if r["day"] in (1, 7, 8, 14, 30, 60, 90, 180, 270, 365) or r["day"] == args.days:
                plain = "" if r["plain_bytes"] is None else f"{r['plain_bytes'] / 2**20:.0f}"
                print(
                    f"| {r['day']} | {r['state_bytes'] / 2**20:.0f} | {r['minute_rows']:,} | "
                    f"{r['hour_rows']:,} | {r['day_rows']:,} | {plain} |"
                )
        print(f"\ncompaction time over the whole run: {rows[-1]['compaction_s_total']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
