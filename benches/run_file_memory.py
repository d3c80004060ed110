"""Issue 13: peak memory of ``ingest_file`` on a ~1 GB file (target: at most 256 MiB beyond the
input, without holding the input; the file is read through a reused buffer, not mapped).

Run it as a script::

    python benches/run_file_memory.py --mib 1024 [--baseline-python OTHER/bin/python]

What this module guarantees:

- The input is ``segment_gen`` events (``--events`` of them, seed 1) repeated until the file
  reaches ``--mib`` MiB, written once as NDJSON and once as a multi-line JSON array, into
  ``/dev/shm`` when it exists (so no disk is involved; the page cache is not the process's).
- Each measurement is a fresh child (``python -c``) that builds the engine, reads its resident
  set size, runs ``ingest_file`` (``threads=1``, then ``threads=os.cpu_count()`` in another
  child) and reports its peak: ``VmHWM`` from ``/proc/self/status`` (the high-water mark of the
  child's own address space) and ``ru_maxrss``, which Linux carries across ``execve`` from the
  parent and so is only an upper bound. The growth ``VmHWM - RSS before`` is the figure checked
  against 256 MiB, and each child checks its event count.
- ``--baseline-python`` measures another build (main's, say) the same way in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

MIB = 1 << 20

CHILD = r"""
import json, os, resource, sys
import eventtally
from segment_gen import BENCH_FILTER, BENCH_INGEST

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

path, threads, expect = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = eventtally.Engine(BENCH_INGEST, [BENCH_FILTER])
before = status("VmRSS")
n_threads = (os.cpu_count() or 1) if threads == "all" else int(threads)
stats = engine.ingest_file(path, threads=n_threads)
assert stats.events == expect, (stats.events, expect)
print(json.dumps({"before": before, "hwm": status("VmHWM"),
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def _write(workdir: Path, events: int, mib: int) -> tuple[Path, Path, int]:
    import segment_gen

    lines = [
        json.dumps(e, separators=(",", ":"), ensure_ascii=False)
        for e in segment_gen.generate_events(events, seed=1)
    ]
    block = "".join(line + "\n" for line in lines).encode()
    copies = max(1, -(-mib * MIB // len(block)))
    ndjson, array = workdir / "big.ndjson", workdir / "big.json"
    with open(ndjson, "wb") as f:
        for _ in range(copies):
            f.write(block)
    inner = ",\n  ".join(lines).encode()
    with open(array, "wb") as f:
        f.write(b"[\n  ")
        for i in range(copies):
            f.write(inner if i == 0 else b",\n  " + inner)
        f.write(b"\n]\n")
    return ndjson, array, copies * len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--baseline-python")
    args = ap.parse_args(argv)
    from run_ingest import scratch_dir

    workdir = scratch_dir()
    try:
        ndjson, array, n = _write(workdir, args.events, args.mib)
        pythons = [("this", sys.executable)]
        if args.baseline_python:
            pythons.append(("baseline", args.baseline_python))
        print(
            f"{n} events; NDJSON {ndjson.stat().st_size / MIB:.0f} MiB, multi-line array "
            f"{array.stat().st_size / MIB:.0f} MiB\n"
        )
        print(
            "| build | file | threads | RSS before MiB | peak (VmHWM) MiB | growth MiB | "
            "ru_maxrss MiB | growth <= 256 MiB |"
        )
        print("|---|---|---|---:|---:|---:|---:|---|")
        env = {**os.environ, "PYTHONPATH": str(HERE), "OPENBLAS_NUM_THREADS": "1"}
        worst = 0
        for tag, py in pythons:
            for path in (ndjson, array):
                for threads in ("1", "all"):
                    r = subprocess.run(
                        [py, "-c", CHILD, str(path), threads, str(n)],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    m = json.loads(r.stdout)
                    growth = m["hwm"] - m["before"]
                    if tag == "this":
                        worst = max(worst, growth)
                    print(
                        f"| {tag} | {path.suffix[1:]} | {threads} | {m['before'] / MIB:.0f} | "
                        f"{m['hwm'] / MIB:.0f} | {growth / MIB:.0f} | {m['maxrss'] / MIB:.0f} | "
                        f"{'yes' if growth <= 256 * MIB else 'NO'} |"
                    )
        return 0 if worst <= 256 * MIB else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
