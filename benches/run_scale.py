"""Scale-out benchmark of issue 12: ``Engine.ingest_files`` on every core, and
``eventtally.dask.aggregate`` on local worker processes, against one single-threaded engine.

Run it as a script::

    python benches/run_scale.py --events-per-file 25000 --files 8 --repeat 3

What this module guarantees:

- One workload: ``--files`` gzipped NDJSON files of the realistic Segment events of
  ``segment_gen.generate_events`` (about 1 KB each), aggregated by ``BENCH_FILTER`` (every
  calculation) through ``run_ingest.NDJSON_INGEST``; the engine is built inside the timed region
  and every figure includes reading and decompressing the files.
- Ratios from one run: ``threads=2`` against ``threads=1`` (target at least 1.7x), repeats
  interleaved so background noise hits both alike; throughput is the best of ``--repeat`` runs
  (the median beside it), in events per second.
- Dask: ``eventtally.dask.aggregate`` on a ``LocalCluster`` of 2 worker processes (one thread
  each, one file per task) against one engine ingesting the same files one by one; reported as
  a speed ratio and as overhead per task: ``(dask wall time x workers - single-engine time) /
  tasks``, the cost each task adds beyond a perfect split (cluster start-up is excluded and
  reported on its own).
- CPU seconds (``getrusage``, all threads) are reported beside wall time, with ``cpu/wall``:
  on a machine shared with other work the wall-clock ratio only means something when the run
  actually got two cores, which ``cpu/wall`` (and the printed load average) tells.
- Every timed answer is checked: the answers of ``threads=2`` and of Dask equal those of
  ``threads=1`` for every query (AVG to 1e-9 relative, as summation order differs); a mismatch
  exits 1.
- Peak memory with 2 threads is measured in a fresh child process (``VmHWM`` reset through
  ``/proc/self/clear_refs``, see ``run_ingest._start_measuring``) and compared with the target
  ``2 x (buffer + state) + 256 MiB``, the buffer being one parse chunk plus the read buffer
  (9 MiB) and the state ``Engine.state_bytes()`` after ingestion.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
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

import eventtally  # noqa: E402
from run_ingest import NDJSON_INGEST, QUERIES, _start_measuring, _status_bytes  # noqa: E402
from segment_gen import BENCH_FILTER, encode_ndjson, generate_events  # noqa: E402

MIB = 1024 * 1024
BUFFER_BYTES = 9 * MIB
"""One parse chunk (``file::CHUNK_BYTES``, 8 MiB) plus the 1 MiB read buffer, per thread."""
SPEEDUP_TARGET = 1.7


def write_files(workdir: Path, files: int, per_file: int) -> tuple[list[Path], int]:
    """``files`` gzipped NDJSON files of ``per_file`` events each (one hour of data apiece)."""
    paths = []
    for i in range(files):
        events = generate_events(
            per_file, seed=100 + i, start=f"2024-05-14T{i % 24:02d}:00:00Z", span_seconds=3600
        )
        path = workdir / f"hour-{i:02d}.ndjson.gz"
        path.write_bytes(gzip.compress(encode_ndjson(events), compresslevel=6))
        paths.append(path)
    return paths, files * per_file


def answers(engine: eventtally.Engine) -> dict[str, list[dict[str, Any]]]:
    return {name: engine.results(query) for name, query in QUERIES.items()}


def same(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Names of the queries whose answers differ (AVG within 1e-9 relative)."""
    bad = []
    for name in a:
        ra, rb = a[name], b[name]
        if len(ra) != len(rb):
            bad.append(name)
            continue
        for x, y in zip(ra, rb, strict=True):
            if (x["dt"], x["groupings"]) != (y["dt"], y["groupings"]):
                bad.append(name)
                break
            vx, vy = x["value"], y["value"]
            if vx != vy and abs(vx - vy) > 1e-9 * max(abs(vx), abs(vy)):
                bad.append(name)
                break
    return bad


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


CPU: dict[int, list[float]] = {1: [], 2: []}
"""CPU seconds (user + system, all threads) of each ``run_threads`` run, by thread count."""


def run_threads(paths: list[Path], threads: int) -> tuple[float, eventtally.Engine]:
    cpu = _cpu()
    start = time.perf_counter()
    engine = eventtally.Engine(NDJSON_INGEST, [BENCH_FILTER])
    engine.ingest_files(paths, threads=threads)
    wall = time.perf_counter() - start
    CPU.setdefault(threads, []).append(_cpu() - cpu)
    return wall, engine


def run_one_by_one(paths: list[Path]) -> tuple[float, eventtally.Engine]:
    start = time.perf_counter()
    engine = eventtally.Engine(NDJSON_INGEST, [BENCH_FILTER])
    for p in paths:
        engine.ingest_file(p)
    return time.perf_counter() - start, engine


def run_dask(paths: list[Path], repeat: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from eventtally import dask as etdask

    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        startup = time.perf_counter() - t0
        times = []
        engine = None
        for _ in range(repeat):
            start = time.perf_counter()
            engine = etdask.aggregate(
                [str(p) for p in paths],
                NDJSON_INGEST,
                [BENCH_FILTER],
                client=client,
                files_per_task=1,
            )
            times.append(time.perf_counter() - start)
    assert engine is not None
    return {"startup": startup, "times": times, "engine": engine}


def child_main(paths: list[str]) -> int:
    """Memory child: ingest every file with 2 threads and report the peak growth."""
    engine = eventtally.Engine(NDJSON_INGEST, [BENCH_FILTER])
    before = _start_measuring()
    engine.ingest_files(paths, threads=2)
    peak = _status_bytes("VmHWM")
    print(json.dumps({"before": before, "peak": peak, "state": engine.state_bytes()}))
    return 0


def measure_memory(paths: list[Path]) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--events-per-file", type=int, default=25_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask measurement")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    with tempfile.TemporaryDirectory(prefix="et-scale-", dir="/dev/shm" if os.path.isdir(
        "/dev/shm") else None) as tmp:  # fmt: skip
        workdir = Path(tmp)
        print(f"generating {args.files} files of {args.events_per_file:,} events...", flush=True)
        paths, events = write_files(workdir, args.files, args.events_per_file)
        size = sum(p.stat().st_size for p in paths)
        print(f"{events:,} events, {size / MIB:.1f} MiB gzipped, cores: {os.cpu_count()}")
        t1, t2, one = [], [], []
        base = ans2 = ans_one = None
        for _ in range(args.repeat):
            dt, engine = run_threads(paths, 1)
            t1.append(dt)
            base = base or answers(engine)
            dt, engine = run_threads(paths, 2)
            t2.append(dt)
            ans2 = ans2 or answers(engine)
            dt, engine = run_one_by_one(paths)
            one.append(dt)
            ans_one = ans_one or answers(engine)
        assert base is not None and ans2 is not None and ans_one is not None
        failures = {
            "threads=2": same(base, ans2),
            "one by one": same(base, ans_one),
        }
        best1, best2 = min(t1), min(t2)
        ratio = best1 / best2
        print(
            f"ingest_files threads=1: {events / best1:,.0f} events/s "
            f"(median {events / statistics.median(t1):,.0f})"
        )
        print(
            f"ingest_files threads=2: {events / best2:,.0f} events/s "
            f"(median {events / statistics.median(t2):,.0f})"
        )
        print(
            f"speed-up threads=2 / threads=1: {ratio:.2f}x (target >= {SPEEDUP_TARGET}x) "
            f"{'OK' if ratio >= SPEEDUP_TARGET else 'BELOW TARGET'}"
        )
        print(f"ingest_file one by one: {events / min(one):,.0f} events/s")
        for n, w in ((1, t1), (2, t2)):
            cpu = CPU[n]
            print(
                f"threads={n}: {events / min(cpu):,.0f} events/CPU-s, cpu/wall "
                f"{statistics.median(c / x for c, x in zip(cpu, w, strict=True)):.2f} "
                "(how many cores the run actually got)"
            )
        print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        mem = measure_memory(paths)
        growth = mem["peak"] - mem["before"]
        budget = 2 * (BUFFER_BYTES + mem["state"]) + 256 * MIB
        print(
            f"peak memory growth with 2 threads: {growth / MIB:.1f} MiB "
            f"(state {mem['state'] / MIB:.1f} MiB; target <= {budget / MIB:.1f} MiB) "
            f"{'OK' if growth <= budget else 'OVER BUDGET'}"
        )
        if not args.no_dask:
            d = run_dask(paths, args.repeat)
            failures["dask"] = same(base, answers(d["engine"]))
            best = min(d["times"])
            single = min(one)
            overhead = (best * 2 - single) / len(paths)
            print(f"dask LocalCluster(2 processes) start-up: {d['startup']:.2f} s")
            print(
                f"dask.aggregate, 2 worker processes: {events / best:,.0f} events/s; "
                f"speed-up over one engine {single / best:.2f}x; "
                f"overhead per task {overhead * 1000:.0f} ms ({len(paths)} tasks)"
            )
        bad = {k: v for k, v in failures.items() if v}
        if bad:
            print(f"ANSWERS DIFFER: {bad}")
            return 1
        print("answers: threads=2, one by one and dask equal threads=1 for every query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
