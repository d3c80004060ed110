"""Read-path benchmark of issue 16: Metrics API answers through the real server and in-process.

Run it as a script (one run, prints a markdown table with ratios)::

    python benches/run_read.py                                  # this build only
    python benches/run_read.py --baseline-python /path/to/old/venv/bin/python
    python benches/run_read.py --groups 100000 --minutes 60     # 100,000 groups x 60 minutes
    python benches/run_read.py --per-cell 20                    # 20 events per cell
    python benches/run_read.py --quick                          # best of 2, no slow old-text figure

What this module guarantees:

- The workload of the issue: one filter at a 1-minute interval, one grouping ``@.g`` with
  ``--groups`` values, ``--minutes`` minutes, ``--per-cell`` events per (minute, group), one
  aggregation of ``@.v`` with COUNT, SUM, PERCENTILES and APPROX_COUNT_DISTINCT. Values come
  from integer formulas (deterministic, no randomness), with two decimals.
- HTTP figures go through the real server (``start_server`` on 127.0.0.1, port 0) and are timed
  by ``curl`` in its own process (``time_total``, so the client costs this process nothing):
  the plain SUM of the whole range, and the 4-query Grafana ``?multi=true`` panel (COUNT, SUM,
  PERCENTILES p99, APPROX_COUNT_DISTINCT, each Top 10 with ``recalculatedInterval`` 120 s). The
  data is ingested into the server's engine in-process (the read path is what is measured).
  The runaway-read caps (``max_answer_rows``/``max_answer_bytes``) are lifted where the build
  has them: the whole-range answers of the large shapes are what is measured.
- In-process figures: ``results_arrays`` per calculation and shape (plain, rollup to 1 hour,
  ``$__agg``, the Grafana shape) and, for the answer text, ``json.dumps(results(q))`` (the text
  the old server built) beside ``answer_json`` (the text the server sends now).
- ``--baseline-python`` runs this same script under another interpreter first (a venv with the
  old build: its server still parses and re-encodes in Python) and prints both runs' figures side
  by side with the ratio old/new. Every figure of a table comes from one invocation.
- Answers are checked, not only timed: row counts of the plain answer and of the Grafana panel,
  and the first value against the formula; a wrong answer raises ``AssertionError``.
- Times are the best of ``--repeat`` runs after one warm-up (the median is printed beside it).
  In-process times are CPU time of the calling thread (``--wall``: the clock), so a machine
  loaded by other jobs inflates them less; HTTP times are always ``curl``'s wall clock, and so
  are the in-process Grafana panel figures (a multi request's queries may run on several
  threads, whose work the calling thread's CPU time would leave out; best of at least 5).
- Each figure is printed beside its issue 16 target (for a quiet machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import eventtally
from eventtally.server import ServerConfig, load_config, start_server

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
KEY = "bench-read-key-0123456789"
FILTER: dict[str, Any] = {
    "id": "r",
    "name": "read bench",
    "groupingItems": [{"grouping": "@.g", "alias": None}],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "v",
            "calculations": ["COUNT", "SUM", "PERCENTILES", "APPROX_COUNT_DISTINCT"],
            "calculationField": "@.v",
        }
    ],
}
TOML = f"""
[server]
host = "127.0.0.1"
port = 0
data_dir = "data"
access_log = false
rate_limit = 0
save_interval = 0

[[organizations]]
id = "bench"
name = "Bench"

[[organizations.api_keys]]
name = "bench"
key = "{KEY}"
permissions = ["READ", "WRITE"]

[[organizations.ingests]]
id = "lines"
name = "Lines"
schema = "NEWLINE_DELIMITED"
timestamp = {{ source = "PROPERTY", path = "@.t", format = "UNIX_SECONDS" }}

[[organizations.filters]]
file = "filter.json"
"""


def value(minute: int, group: int, k: int) -> float:
    """The ``@.v`` of event ``k`` of a cell (two decimals)."""
    return ((minute % 60) * 7919 + group * 104_729 + k * 31) % 100_000 / 100


def ingest(engine: eventtally.Engine, groups: int, minutes: int, per_cell: int) -> None:
    """One NDJSON batch per minute; lines differ between minutes only in ``t`` and, through
    ``minute % 60``, in ``v`` (60 templates built once)."""
    templates = []
    for m in range(min(minutes, 60)):
        lines = [
            f'{{"t":TTTTTTTTTT,"g":"g{g:06d}","v":{value(m, g, k)}}}\n'
            for g in range(groups)
            for k in range(per_cell)
        ]
        templates.append("".join(lines).encode())
    for m in range(minutes):
        engine.ingest(
            templates[m % 60].replace(b"TTTTTTTTTT", str(T0 + 60 * m).encode()), ingest_id="lines"
        )


def iso(minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 60 * minute))


def q(calc: str, minutes: int, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "filterId": "r",
        "aggregationId": 1,
        "calculation": calc,
        "startTime": iso(0),
        "endTime": iso(minutes),
    }
    if calc == "PERCENTILES":
        out["percentile"] = 0.99
    out.update(extra)
    return out


CALCS = ("COUNT", "SUM", "PERCENTILES", "APPROX_COUNT_DISTINCT")
GRAFANA = {
    "limit": 10,
    "limitType": "Top",
    "recalculatedInterval": {"type": "SECOND", "frequency": 120},
}
SHAPES: dict[str, dict[str, Any]] = {
    "plain": {},
    "rollup 1 h": {"recalculatedInterval": {"type": "HOUR", "frequency": 1}},
    "$__agg": {"groupingFilters": [{"grouping": "@.g", "filters": ["$__agg"]}]},
    "Top 10, 120 s": GRAFANA,
}


#: In-process figures are CPU time of the calling thread (the core's work runs on it, detached
#: from the interpreter): on a machine loaded by other jobs that counts this query's work, not
#: the time it waited for a core. ``--wall`` times them by the clock instead.
CLOCK: Callable[[], float] = time.thread_time

#: The issue 16 targets (quiet machine), printed beside each figure.
TARGETS = {
    "HTTP plain SUM": "<= 500 ms (250)",
    "HTTP Grafana panel (4 queries)": "<= 50 ms",
    "results_arrays SUM plain": "<= 40 ms",
}


def target(name: str) -> str:
    if name in TARGETS:
        return TARGETS[name]
    return "<= 50 ms" if name.startswith("results_arrays") else ""


def best_of(
    fn: Callable[[], Any], repeat: int, clock: Callable[[], float] | None = None
) -> tuple[float, float]:
    clock = clock or CLOCK
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        gc.collect()
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times), statistics.median(times)


def curl_time(url: str, body_file: Path) -> float:
    out = subprocess.run(
        [
            "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
            "-H", f"x-api-token: {KEY}", "-H", "content-type: application/json",
            "--data-binary", f"@{body_file}", "--max-time", "600", url,
        ],
        check=True, capture_output=True, text=True, timeout=660,
    ).stdout.split()  # fmt: skip
    assert out[0] == "200", out
    return float(out[1])


def curl_best(url: str, body_file: Path, repeat: int) -> tuple[float, float]:
    curl_time(url, body_file)
    times = [curl_time(url, body_file) for _ in range(repeat)]
    return min(times), statistics.median(times)


def measure(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """Every figure of this build, by name."""
    groups, minutes, per_cell, repeat = args.groups, args.minutes, args.per_cell, args.repeat
    out: dict[str, tuple[float, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="eventtally-read-"))
    try:
        (tmp / "filter.json").write_text(json.dumps(FILTER))
        toml = TOML
        if "max_answer_rows" in {f.name for f in fields(ServerConfig)}:
            # The whole-range answers of the large shapes pass the default runaway-read cap.
            toml = toml.replace(
                "[server]\n", "[server]\nmax_answer_rows = 0\nmax_answer_bytes = 0\n"
            )
        (tmp / "eventtally.toml").write_text(toml)
        loaded = load_config(tmp / "eventtally.toml")
        now = T0 + 60 * minutes + 3600
        server, thread = start_server(loaded.server, provisioning=loaded, clock=lambda: now)
        try:
            engine = server.app.runtime.engine("bench")
            t = time.perf_counter()
            ingest(engine, groups, minutes, per_cell)
            events = groups * minutes * per_cell
            took = time.perf_counter() - t
            print(f"# ingest {events:,} events: {took:.1f} s", file=sys.stderr)
            url = f"http://127.0.0.1:{server.port}/api/v1/metrics/results"
            plain = q("SUM", minutes)
            panel = [dict(q(c, minutes, **GRAFANA), queryId=c) for c in CALCS]
            # Check the answers once (untimed) through the server itself.
            import urllib.request

            def post(path: str, body: Any) -> bytes:
                req = urllib.request.Request(
                    path, json.dumps(body).encode(), {"x-api-token": KEY}, method="POST"
                )
                with urllib.request.urlopen(req, timeout=600) as resp:
                    data: bytes = resp.read()
                    return data

            text = post(url, plain)
            assert text.count(b'{"dt"') == groups * minutes, "plain SUM rows"
            head = text[1 : text.index(b"}", text.index(b'"value"')) + 1]
            first = json.loads(head)
            want = sum(value(0, 0, k) for k in range(per_cell))
            assert abs(first["value"] - want) < 1e-6 * max(1.0, want), (first, want)
            del text
            rows = json.loads(post(url + "?multi=true", panel))
            value_rows = [r for r in rows if "val" in r]
            buckets = -(-minutes // 2)
            assert len(value_rows) == 4 * buckets * min(10, groups), len(value_rows)
            del rows
            plain_file, panel_file = tmp / "plain.json", tmp / "panel.json"
            plain_file.write_text(json.dumps(plain))
            panel_file.write_text(json.dumps(panel))
            gc.collect()
            out["HTTP plain SUM"] = curl_best(url, plain_file, repeat)
            out["HTTP Grafana panel (4 queries)"] = curl_best(
                url + "?multi=true", panel_file, max(repeat, 5)
            )

            # In-process.
            if not args.quick:
                out["in-process: old text json.dumps(results)"] = best_of(
                    lambda: json.dumps(
                        engine.results(plain), separators=(",", ":"), ensure_ascii=False
                    ).encode(),
                    max(1, repeat // 2),
                )
            answer = getattr(engine, "answer_json", None)
            if answer is not None:
                body = json.dumps(plain).encode()
                out["in-process: answer_json text"] = best_of(
                    lambda: answer("results", body), repeat
                )
                pbody = json.dumps(panel).encode()
                # A multi request's queries may run on several threads: by the clock, since
                # the calling thread's CPU time would leave the helpers' work out.
                out["in-process: Grafana panel answer_json"] = best_of(
                    lambda: answer("multi", pbody), max(repeat, 5), time.perf_counter
                )
            out["in-process: Grafana panel json.dumps(results_multi)"] = best_of(
                lambda: json.dumps(engine.results_multi(panel), separators=(",", ":")).encode(),
                max(repeat, 5),
                time.perf_counter,
            )
            for shape, extra in SHAPES.items():
                for calc in CALCS:
                    qq = q(calc, minutes, **extra)
                    out[f"results_arrays {calc} {shape}"] = best_of(
                        lambda qq=qq: engine.results_arrays(qq), repeat
                    )
        finally:
            server.close()
            thread.join(10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=1440)
    ap.add_argument("--per-cell", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="best of 2, and skip the slow old-path text figure (json.dumps(results))",
    )
    ap.add_argument("--wall", action="store_true", help="in-process figures by the wall clock")
    ap.add_argument("--baseline-python", help="interpreter of the old build, run first")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON (internal)")
    args = ap.parse_args()
    if args.quick:
        args.repeat = min(args.repeat, 2)
    if args.wall:
        global CLOCK
        CLOCK = time.perf_counter
    baseline: dict[str, Any] = {}
    if args.baseline_python:
        cmd = [args.baseline_python, __file__, "--json"]
        for name in ("groups", "minutes", "per_cell", "repeat"):
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        cmd += ["--quick"] * args.quick + ["--wall"] * args.wall
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600)
        sys.stderr.write(done.stderr)
        baseline = json.loads(done.stdout)
        print(f"# baseline figures: {done.stdout.strip()}", file=sys.stderr)
    mine = measure(args)
    if args.json:
        print(json.dumps(mine))
        return
    cells = args.groups * args.minutes
    print(
        textwrap.dedent(f"""
        ### {args.groups:,} groups x {args.minutes:,} minutes ({cells:,} cells), \
{args.per_cell} event(s) per cell; best of {args.repeat} (median)
        """).strip()
    )
    print()
    clock = "wall clock" if args.wall else "CPU time of the calling thread"
    print(
        f"HTTP figures by curl's wall clock; in-process Grafana panel figures by the wall "
        f"clock (best of at least 5); other in-process figures by {clock}."
    )
    print()
    print("| figure | old build | this build | old / new | target |")
    print("|---|---:|---:|---:|---|")

    def ms(v: tuple[float, float] | list[float] | None) -> str:
        return "-" if v is None else f"{v[0] * 1000:.1f} ms ({v[1] * 1000:.1f})"

    for name, value_ in mine.items():
        # A baseline without answer_json (before issue 16) is compared with the text its
        # server built.
        old = baseline.get(name)
        if old is None and name == "in-process: answer_json text":
            old = baseline.get("in-process: old text json.dumps(results)")
        if old is None and name == "in-process: Grafana panel answer_json":
            old = baseline.get("in-process: Grafana panel json.dumps(results_multi)")
        ratio = f"{old[0] / value_[0]:.1f}x" if old else "-"
        print(f"| {name} | {ms(old)} | {ms(value_)} | {ratio} | {target(name)} |")


if __name__ == "__main__":
    main()
