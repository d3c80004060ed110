"""Write-ahead log and recovery benchmarks (docs/durability.md).

Run it as a script for the numbers in ``docs/durability.md``::

    python benches/bench_wal.py [--seconds 3] [--threads 16] [--replay-events 300000] [--dir D]

What this module guarantees:

- One run measures all three fsync policies on the same payloads, directory and thread count,
  interleaved over ``--repeat`` rounds (best round kept), and prints each policy's throughput and
  its cost as a ratio to ``never``: ``always`` is group commit with ``--threads`` concurrent
  appenders (as the HTTP server's request threads would be). Payloads are Segment-sized bodies,
  300 events (about 300 KB) each, from ``segment_gen.batches``.
- Every timed run is also checked: the log is reopened and replayed, and must hold exactly the
  records whose ``append`` returned, byte for byte.
- Recovery is timed end to end through ``recover()`` into real ``eventtally.Engine`` objects
  (``BENCH_INGEST``/``BENCH_FILTER``, every calculation), and the recovered engine must give the
  same answers as an engine that ingested the same batches directly.
- The directory must be on a real disk: on tmpfs (``/dev/shm``) fsync costs nothing and the
  ratios mean nothing, so the filesystem type is printed beside the numbers.

As a pytest module (``pytest benches/bench_wal.py``, timing disabled by default) each benchmark
runs once on a small workload, as a smoke test of the same code.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import eventtally  # noqa: E402
from eventtally.durability import (  # noqa: E402
    SnapshotFiles,
    WalRecord,
    WriteAheadLog,
    recover,
    to_ms,
)
from segment_gen import BENCH_FILTER, BENCH_INGEST, batches, generate_events  # noqa: E402

POLICIES = ("never", "interval", "always")
PLAIN = "always, plain segs"
RECEIVED_AT = 1_715_688_000.0
CLOCK: Callable[[], float] = lambda: RECEIVED_AT + 86_400  # noqa: E731 - every bucket complete


@functools.lru_cache(maxsize=4)
def bodies(n_events: int, seed: int = 1) -> tuple[bytes, ...]:
    """Segment-sized (300-event) JSON array bodies of ``n_events`` generated events."""
    return tuple(batches(generate_events(n_events, seed=seed), size=300))


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding ``path`` (from /proc/mounts), or ``unknown``."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if (
                    len(parts) >= 3
                    and str(path.resolve()).startswith(parts[1])
                    and len(parts[1]) > len(best)
                ):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


# --------------------------------------------------------------------------------------------
# Append throughput per fsync policy
# --------------------------------------------------------------------------------------------


@dataclass
class AppendResult:
    """One timed append run."""

    policy: str
    threads: int
    records: int
    seconds: float
    bytes: int
    fsyncs: int
    latencies: list[float]

    @property
    def per_second(self) -> float:
        """Appends per second."""
        return self.records / self.seconds

    @property
    def mb_per_second(self) -> float:
        """Payload megabytes per second."""
        return self.bytes / self.seconds / 1e6

    def latency_ms(self, q: float) -> float:
        """Append latency quantile ``q`` in milliseconds."""
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_appends(
    directory: Path,
    policy: str,
    payloads: tuple[bytes, ...],
    *,
    threads: int,
    seconds: float | None = None,
    records: int | None = None,
    rate: float | None = None,
    preallocate: bool = True,
) -> AppendResult:
    """Append ``payloads`` round-robin from ``threads`` threads for ``seconds`` (or until
    ``records`` appends in total), then verify the log holds exactly what was acknowledged.
    With ``rate``, the k-th append starts no earlier than ``k / rate`` seconds in (an open-loop
    load like the HTTP target's 1,000 requests/s), so latencies are those at that load.
    ``preallocate=False``: plain segments that grow record by record (the log's option)."""
    shutil.rmtree(directory, ignore_errors=True)
    wal = WriteAheadLog(
        directory,
        fsync=policy,  # type: ignore[arg-type]
        interval_ms=100,
        preallocate=preallocate,
    )
    acked: dict[int, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**12))
    start_barrier = threading.Barrier(threads + 1)
    start = [0.0]

    def worker() -> None:
        mine: list[tuple[int, int, float]] = []
        start_barrier.wait()
        while not stop.is_set():
            with lock:
                k = next(counter)
            if records is not None and k >= records:
                break
            if rate is not None:
                delay = start[0] + k / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            payload = payloads[k % len(payloads)]
            t = time.perf_counter()
            seq = wal.append(WalRecord("org", payload, "bench", k))
            mine.append((seq, k, time.perf_counter() - t))
        with lock:
            for seq, k, dt in mine:
                acked[seq] = k
                latencies.append(dt)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    base_fsyncs = wal.stats().fsyncs
    start[0] = time.perf_counter()
    start_barrier.wait()
    t0 = time.perf_counter()
    if seconds is not None:
        time.sleep(seconds)
        stop.set()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    stats = wal.stats()
    wal.close()
    result = AppendResult(
        policy,
        threads,
        len(acked),
        elapsed,
        sum(len(payloads[k % len(payloads)]) for k in acked.values()),
        stats.fsyncs - base_fsyncs,
        latencies,
    )
    with WriteAheadLog(directory, fsync="never") as reopened:  # the answer, not only the time
        seen = 0
        for rec in reopened.replay():
            k = acked.pop(rec.seq)
            assert rec.payload == payloads[k % len(payloads)] and rec.received_at_ms == k
            seen += 1
    assert not acked and seen == result.records, "the log does not hold what was acknowledged"
    shutil.rmtree(directory, ignore_errors=True)
    os.sync()  # the next run must not pay for this one's dirty pages
    return result


# --------------------------------------------------------------------------------------------
# Recovery replay rate
# --------------------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    """One timed recovery."""

    records: int
    events: int
    seconds: float
    read_seconds: float

    @property
    def events_per_second(self) -> float:
        """Events replayed per second through the engine."""
        return self.events / self.seconds


def build_log(directory: Path, payloads: tuple[bytes, ...], records: int) -> eventtally.Engine:
    """A log of ``records`` batches (payloads round-robin), and the engine that ingested them."""
    shutil.rmtree(directory, ignore_errors=True)
    direct = eventtally.Engine(BENCH_INGEST, [BENCH_FILTER], clock=CLOCK)
    with WriteAheadLog(directory / "wal", fsync="never") as wal:
        for k in range(records):
            received = RECEIVED_AT + k
            wal.append(WalRecord("org", payloads[k % len(payloads)], None, to_ms(received)))
            direct.ingest(payloads[k % len(payloads)], received_at=received)
    return direct


def answers(engine: eventtally.Engine) -> list[list[dict[str, Any]]]:
    """Every calculation's rows for BENCH_FILTER (p50 for PERCENTILES)."""
    out = []
    for agg in BENCH_FILTER["aggregations"]:
        for calc in agg["calculations"]:
            q = {"filterId": "bench", "aggregationId": agg["id"], "calculation": calc}
            if calc == "PERCENTILES":
                q["percentile"] = 0.5
            out.append(engine.results(q))
    return out


def run_replay(directory: Path, direct: eventtally.Engine, workers: int | None) -> ReplayResult:
    """Recover the log in ``directory`` into a fresh engine; check it equals ``direct``."""
    wal = WriteAheadLog(directory / "wal", fsync="never")
    t0 = time.perf_counter()
    n = sum(len(r.payload) for r in wal.replay())
    read_seconds = time.perf_counter() - t0
    assert n > 0

    def make(org: str, data: bytes | None) -> eventtally.Engine:
        if data is not None:
            return eventtally.Engine.from_bytes(data, clock=CLOCK)
        return eventtally.Engine(BENCH_INGEST, [BENCH_FILTER], clock=CLOCK)

    report = recover(SnapshotFiles(directory / "snapshots"), wal, make, workers=workers)
    wal.close()
    assert report.records_failed == 0
    assert answers(report.engines["org"]) == answers(direct), "recovered state differs"
    return ReplayResult(report.records_replayed, report.events, report.seconds, read_seconds)


# --------------------------------------------------------------------------------------------
# pytest smoke benchmarks (timing disabled by default)
# --------------------------------------------------------------------------------------------


def test_bench_append_never(benchmark: Any, tmp_path: Path) -> None:
    """Append throughput with fsync=never (one thread), checked against a replay."""
    payloads = bodies(1500)
    result = benchmark(run_appends, tmp_path / "wal", "never", payloads, threads=1, records=20)
    assert result.records == 20 and result.fsyncs == 0


def test_bench_append_always_group_commit(benchmark: Any, tmp_path: Path) -> None:
    """Append throughput with fsync=always and 16 threads: group commit shares fsyncs."""
    payloads = bodies(1500)
    result = benchmark(run_appends, tmp_path / "wal", "always", payloads, threads=16, records=96)
    assert result.records == 96 and 0 < result.fsyncs < 96


def test_bench_recovery_replay(benchmark: Any, tmp_path: Path) -> None:
    """Recovery through a real Engine equals direct ingestion of the same batches."""
    payloads = bodies(1500)
    direct = build_log(tmp_path, payloads, 10)
    result = benchmark(run_replay, tmp_path, direct, None)
    assert result.events == 3000


# --------------------------------------------------------------------------------------------
# Script
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Print append throughput per fsync policy (with ratios to never) and the replay rate."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per policy and round")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; best kept")
    ap.add_argument("--rate", type=float, default=1000.0, help="appends/s of the paced run")
    ap.add_argument("--events", type=int, default=30_000, help="distinct generated events")
    ap.add_argument("--replay-events", type=int, default=300_000)
    ap.add_argument("--dir", type=Path, default=None, help="on the disk to measure (not tmpfs)")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="eventtally-bench-wal-", dir=args.dir))
    try:
        payloads = bodies(args.events)
        avg = statistics.mean(len(p) for p in payloads)
        print(f"directory {root} ({fs_type(root)}); {len(payloads)} distinct payloads of "
              f"{avg / 1000:.0f} KB (300 events); {args.threads} appending threads")  # fmt: skip
        best: dict[str, AppendResult] = {}
        # Every policy on preallocated segments (the default), and ``always`` on plain ones,
        # interleaved, so the preallocation's effect is a ratio within the run.
        runs = [(p, p, True) for p in POLICIES] + [(PLAIN, "always", False)]
        for _ in range(args.repeat):
            for name, policy, preallocate in runs:
                r = run_appends(
                    root / policy,
                    policy,
                    payloads,
                    threads=args.threads,
                    seconds=args.seconds,
                    preallocate=preallocate,
                )
                if name not in best or r.per_second > best[name].per_second:
                    best[name] = r
        single = run_appends(root / "single", "always", payloads, threads=1, seconds=args.seconds)
        paced = run_appends(
            root / "paced",
            "always",
            payloads,
            threads=args.threads,
            seconds=args.seconds,
            rate=args.rate,
        )
        base = best["never"].per_second
        print(f"\n{'policy':<22}{'appends/s':>11}{'MB/s':>9}{'events/s':>12}{'fsyncs':>8}"
              f"{'rec/fsync':>10}{'p50 ms':>8}{'p99 ms':>8}{'cost vs never':>15}")  # fmt: skip
        rows = [(p, best[p]) for p in (*POLICIES, PLAIN)]
        rows += [("always, 1 thread", single), (f"always @ {args.rate:,.0f}/s", paced)]
        for name, r in rows:
            per_fsync = r.records / r.fsyncs if r.fsyncs else float("nan")
            cost = "-" if r is paced else f"{base / r.per_second:.2f}x"
            print(f"{name:<22}{r.per_second:>11,.0f}{r.mb_per_second:>9,.0f}"
                  f"{300 * r.per_second:>12,.0f}{r.fsyncs:>8}{per_fsync:>10.1f}"
                  f"{r.latency_ms(0.5):>8.2f}{r.latency_ms(0.99):>8.2f}{cost:>15}")  # fmt: skip

        n_records = max(1, args.replay_events // 300)
        direct = build_log(root / "replay", payloads, n_records)
        print(f"\nrecovery of {n_records} records ({300 * n_records:,} events) into a real Engine:")
        for workers in (1, None):
            r2 = run_replay(root / "replay", direct, workers)
            label = "1 thread" if workers == 1 else "prepare on all cores"
            print(f"  {label:<22}{r2.events_per_second:>12,.0f} events/s"
                  f"  ({r2.seconds:.2f} s; reading + CRC alone {r2.read_seconds:.2f} s, "
                  f"{300 * n_records / r2.read_seconds:,.0f} events/s)")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
