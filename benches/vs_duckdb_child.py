"""One timed child process of ``run_vs_duckdb.py``: reads one file with one contender, computes
the seven answers of the SEG-ROLLUP workload and pickles them for the parent to check.

What this module guarantees:

- It imports nothing at start but ``os``, ``pickle``, ``sys`` and ``time``; the workload (ingest
  and filter definitions, the eventtally queries, the DuckDB SQL) comes from a pickle the parent
  wrote, so the process times its contender, not the benchmark's own modules (``argparse``,
  ``subprocess``, ``dataclasses``, the generators: about 200 M instructions, more than
  ``import eventtally``).
- ``python vs_duckdb_child.py KIND PATH THREADS OUT WORKLOAD``, ``KIND`` one of ``duckdb``
  (``read_ndjson`` with named columns, ``SET threads=1``, ``fetchnumpy``), ``eventtally``
  (``ingest_file`` with ``threads``, then ``results_arrays`` per query) or ``ingest-only``
  (``Engine.ingest`` of the NDJSON bytes already in memory; the seconds of that call are the
  result).
- ``OUT`` receives two pickles: ``(tag, answer)``, then the phase marks, ``(phase,
  time.perf_counter())`` pairs taken as each phase ends (``perf_counter`` is the system-wide
  monotonic clock on Linux, so the parent lines them up with its own start and end of the
  process); the last mark ends the writing of the answer.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    kind, path, threads_arg, out, workload_path = argv
    marks = [("start", time.perf_counter())]
    with open(workload_path, "rb") as f:
        workload: dict[str, Any] = pickle.load(f)
    if kind == "duckdb":
        import duckdb

        marks.append(("import", time.perf_counter()))
        con = duckdb.connect(":memory:")
        con.execute("SET threads=1")
        marks.append(("engine", time.perf_counter()))
        raw = con.execute(workload["duckdb_sql"], [path]).fetchnumpy()
        marks.append(("ingest+answers", time.perf_counter()))
        _write_out(out, ("duckdb", raw), marks)
        return 0
    import eventtally

    marks.append(("import", time.perf_counter()))
    ingest, filters = workload["ingest"], [workload["filter"]]
    if kind == "ingest-only":
        # NDJSON bytes in memory: the engine's own speed, no file reading.
        with open(path, "rb") as f:
            data = f.read()
        ndjson = eventtally.Engine({**ingest, "schema": "NEWLINE_DELIMITED"}, filters)
        t0 = time.perf_counter()
        ndjson.ingest(data)
        seconds = time.perf_counter() - t0
        _write_out(out, ("seconds", seconds), marks)
        return 0
    # "all": every core (ingest_file with threads=None would read on one thread).
    threads = (os.cpu_count() or 1) if threads_arg == "all" else int(threads_arg)
    engine = eventtally.Engine(ingest, filters)
    marks.append(("engine", time.perf_counter()))
    engine.ingest_file(path, threads=threads)
    marks.append(("ingest", time.perf_counter()))
    answers = {name: engine.results_arrays(q) for name, q in workload["queries"].items()}
    marks.append(("answers", time.perf_counter()))
    _write_out(out, ("eventtally", answers), marks)
    return 0


def _write_out(out: str, result: tuple[str, Any], marks: list[tuple[str, float]]) -> None:
    """Pickles ``result``, then the phase marks with the end of that write."""
    with open(out, "wb") as f:
        pickle.dump(result, f)
        marks.append(("write", time.perf_counter()))
        pickle.dump(marks, f)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
