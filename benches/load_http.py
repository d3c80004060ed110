"""HTTP load test of the ingest endpoint: 300-event Segment batches over loopback keep-alive.

Run it as a script (it starts its own server in a subprocess on 127.0.0.1)::

    python benches/load_http.py --requests 5000 --duration 30 --connections 8
    python benches/load_http.py --rate 1000 --duration 20          # paced: latency at 1,000 req/s
    python benches/load_http.py --rate 1000 --duration 15 --compare-fsync --recovery-requests 2000

What this module guarantees:

- Loopback only: it starts ``python -m eventtally serve`` bound to 127.0.0.1 on a free port with a
  throw-away data directory (or, with ``--url``, targets a server that must be on a loopback
  address), and it refuses anything else.
- Bounded in count and time: it stops at ``--requests`` requests or ``--duration`` seconds,
  whichever comes first, and every request has a timeout.
- The workload is Segment's: bodies from ``segment_gen.batches(generate_events(...), 300)``, the
  headers of the real destination, the ingest ``BENCH_INGEST`` and the filter ``BENCH_FILTER``.
- It reports throughput (requests/s, events/s, MB/s), latency p50/p90/p99/max, and the ratio of
  the HTTP event rate to the engine's in-process rate on the same bodies (``Engine.ingest`` in a
  loop, one thread and two threads).  With ``--rate`` the load is paced (open loop) and latency is
  measured from each request's scheduled start, so a stalled server cannot hide its queueing
  (no coordinated omission).
- Durability is on, as in production: the server logs every batch to its write-ahead log before
  answering (``--fsync always`` by default, group commit).  ``--compare-fsync`` runs the same
  workload once per policy (``off`` = no log at all, ``always``, ``interval``, ``never``) in one
  invocation, each from a clean page cache (``os.sync()`` before it), and reports each one's
  throughput and latency as a ratio to ``off``.
  ``--recovery-requests N`` then posts N batches, SIGKILLs the server and times the restart's
  WAL replay (events/s, from the server's recovery log line).
- It checks the answer, not only the speed: after the run, ``COUNT`` through
  ``/api/v1/metrics/results`` must equal the number of track/page/screen events in the batches the
  server acknowledged with 200.  A mismatch exits 1.

The Python client itself costs CPU on the same two cores; ``--procs`` spreads it over processes.
``wrk`` (Debian package) can be used instead for the raw rate; this script does not need it.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import multiprocessing as mp
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment_gen import BENCH_FILTER, BENCH_INGEST, batches, generate_events

KEY = "load-test-key-" + "x" * 40
COUNTED_TYPES = ("track", "page", "screen")  # BENCH_FILTER's condition


@dataclass
class WorkerResult:
    latencies: list[float] = field(default_factory=list)  # seconds
    statuses: dict[int, int] = field(default_factory=dict)
    ok_bodies: dict[int, int] = field(default_factory=dict)  # body index -> times acknowledged
    errors: int = 0
    bytes_sent: int = 0
    first_send: float = float("inf")  # wall clock (time.time) of the first request
    last_done: float = 0.0  # wall clock when the last response arrived


def _worker(
    host: str,
    port: int,
    ingest: str,
    key: str,
    bodies: list[bytes],
    start_index: int,
    n_requests: int,
    deadline: float,
    interval: float | None,
    t0: float,
) -> WorkerResult:
    """One keep-alive connection sending ``n_requests`` bodies (paced when ``interval``)."""
    out = WorkerResult()
    conn = http.client.HTTPConnection(host, port, timeout=15)
    headers = {
        "user-agent": "Segment (Actions)",
        "x-api-token": key,
        "content-type": "application/json",
        "Accept": "*/*",
        "Accept-Encoding": "gzip,deflate",
    }
    for i in range(n_requests):
        scheduled = t0 + i * interval if interval else time.perf_counter()
        if interval:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if time.perf_counter() >= deadline:
            break
        idx = (start_index + i) % len(bodies)
        body = bodies[idx]
        out.first_send = min(out.first_send, time.time())
        try:
            conn.request("POST", f"/{ingest}", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException):
            out.errors += 1
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=15)
            continue
        out.latencies.append(time.perf_counter() - scheduled)
        out.last_done = time.time()
        out.statuses[status] = out.statuses.get(status, 0) + 1
        out.bytes_sent += len(body)
        if status == 200:
            out.ok_bodies[idx] = out.ok_bodies.get(idx, 0) + 1
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=15)
    conn.close()
    return out


def _proc_main(args: tuple[Any, ...], queue: Any) -> None:
    """A load process: ``threads`` connections, results sent back through ``queue``."""
    (host, port, ingest, key, bodies, threads, first, per_thread, duration, interval, t0_wall) = (
        args
    )
    # Align the paced schedule across processes on the wall clock.
    t0 = time.perf_counter() + (t0_wall - time.time())
    deadline = t0 + duration
    results: list[WorkerResult] = []
    lock = threading.Lock()

    def run(j: int) -> None:
        offset = (j * interval / threads) if interval else 0.0
        r = _worker(
            host,
            port,
            ingest,
            key,
            bodies,
            first + j * per_thread,
            per_thread,
            deadline,
            interval,
            t0 + offset,
        )
        with lock:
            results.append(r)

    ts = [threading.Thread(target=run, args=(j,)) for j in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    merged = WorkerResult()
    for r in results:
        merged.latencies.extend(r.latencies)
        merged.errors += r.errors
        merged.bytes_sent += r.bytes_sent
        merged.first_send = min(merged.first_send, r.first_send)
        merged.last_done = max(merged.last_done, r.last_done)
        for k, v in r.statuses.items():
            merged.statuses[k] = merged.statuses.get(k, 0) + v
        for k, v in r.ok_bodies.items():
            merged.ok_bodies[k] = merged.ok_bodies.get(k, 0) + v
    queue.put(merged)


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p * (len(sorted_values) - 1))))
    return sorted_values[k]


def _toml(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


def start_server(
    tmp: Path, log_level: str, durability: dict[str, Any] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Serve the benchmark org (``python -m eventtally serve``, 127.0.0.1:0); return its URL."""
    dur = "\n".join(f"{k} = {_toml(v)}" for k, v in (durability or {}).items())
    (tmp / "filter.json").write_text(json.dumps(BENCH_FILTER))
    ts = BENCH_INGEST["timestamp"]
    ingest_toml = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in ts.items()) + " }"
    config = f"""
[server]
host = "127.0.0.1"
port = 0
data_dir = "data"
rate_limit = 0        # measure capacity, not the limiter
max_concurrent_requests = 0

[durability]
{dur}

[[organizations]]
id = "bench"

[[organizations.api_keys]]
name = "load"
key = "{KEY}"
permissions = ["READ", "WRITE"]

[[organizations.ingests]]
id = "{BENCH_INGEST["id"]}"
schema = "{BENCH_INGEST["schema"]}"
timestamp = {ingest_toml}

[[organizations.filters]]
file = "filter.json"
"""
    (tmp / "eventtally.toml").write_text(config)
    stderr = (tmp / "server.log").open("a")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eventtally",
            "serve",
            "--config",
            str(tmp / "eventtally.toml"),
            "--log-level",
            log_level,
        ],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"serving on (http://\S+)", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
            return proc, m.group(1)
    proc.kill()
    raise SystemExit(f"server did not start; see {tmp / 'server.log'}")


def engine_rate(
    bodies: list[bytes], events_per_body: list[int], seconds: float, threads: int
) -> float:
    """Events/s of ``Engine.ingest`` in-process on the same bodies (``threads`` threads)."""
    import eventtally

    engine = eventtally.Engine(BENCH_INGEST, [BENCH_FILTER])
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def run(j: int) -> None:
        i = j
        while time.perf_counter() < stop:
            engine.ingest(bodies[i % len(bodies)], ingest_id=BENCH_INGEST["id"])
            done[j] += events_per_body[i % len(bodies)]
            i += threads

    started = time.perf_counter()
    ts = [threading.Thread(target=run, args=(j,)) for j in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def server_count(host: str, port: int, key: str) -> float:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    query = {
        "filterId": BENCH_FILTER["id"],
        "aggregationId": 1,
        "calculation": "COUNT",
        "startTime": "1970-01-01T00:00:00Z",
        "endTime": "2100-01-01T00:00:00Z",
    }
    conn.request(
        "POST",
        "/api/v1/metrics/results",
        body=json.dumps(query),
        headers={"x-api-token": key, "content-type": "application/json"},
    )
    resp = conn.getresponse()
    rows = json.loads(resp.read())
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"results query failed: {resp.status} {rows}")
    return float(sum(r["value"] for r in rows))


POLICIES = ("off", "always", "interval", "never")


def durability_for(policy: str, snapshot_interval: float) -> dict[str, Any]:
    """The ``[durability]`` table of one fsync policy (``off``: no write-ahead log)."""
    if policy == "off":
        return {"wal": False, "snapshot_interval_s": snapshot_interval}
    return {"fsync": policy, "snapshot_interval_s": snapshot_interval}


def run_load(
    args: argparse.Namespace,
    bodies: list[bytes],
    events_per_body: list[int],
    counted_per_body: list[int],
    durability: dict[str, Any],
) -> dict[str, Any]:
    """One load run against a fresh server (or ``--url``); the report without engine rates."""
    tmpdir: tempfile.TemporaryDirectory[str] | None = None
    proc: subprocess.Popen[str] | None = None
    if args.url:
        parts = urlsplit(args.url)
        host = parts.hostname or ""
        port = parts.port or 80
    else:
        tmpdir = tempfile.TemporaryDirectory(prefix="eventtally-load-", dir=args.tmp)
        proc, url = start_server(Path(tmpdir.name), args.server_log_level, durability)
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
    baseline = server_count(host, port, args.key)
    wal_bytes = 0
    try:
        per_conn = -(-args.requests // args.connections)
        interval = (args.connections / args.rate) if args.rate else None
        conns_per_proc = [args.connections // args.procs] * args.procs
        for i in range(args.connections % args.procs):
            conns_per_proc[i] += 1
        ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
        queue = ctx.Queue()
        t0_wall = time.time() + 0.3
        workers = []
        first = 0
        for n in conns_per_proc:
            payload = (
                host,
                port,
                args.ingest,
                args.key,
                bodies,
                n,
                first,
                per_conn,
                args.duration,
                interval,
                t0_wall,
            )
            workers.append(ctx.Process(target=_proc_main, args=(payload, queue)))
            first += n * per_conn
        for w in workers:
            w.start()
        parts_out = [queue.get(timeout=args.duration + 120) for _ in workers]
        for w in workers:
            w.join(30)
    finally:
        final = server_count(host, port, args.key) if proc is None or proc.poll() is None else None
        if proc is not None:
            wal_dir = Path(tmpdir.name if tmpdir else ".") / "data" / "wal"
            wal_bytes = sum(f.stat().st_size for f in wal_dir.glob("wal-*.log"))
            proc.terminate()
            proc.wait(120)
        if tmpdir is not None:
            tmpdir.cleanup()

    latencies = sorted(x for p in parts_out for x in p.latencies)
    statuses: dict[int, int] = {}
    ok_bodies: dict[int, int] = {}
    for p in parts_out:
        for k, v in p.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in p.ok_bodies.items():
            ok_bodies[k] = ok_bodies.get(k, 0) + v
    errors = sum(p.errors for p in parts_out)
    elapsed = max(max(p.last_done for p in parts_out) - min(p.first_send for p in parts_out), 1e-9)
    sent_bytes = sum(p.bytes_sent for p in parts_out)
    done = len(latencies)
    ok_events = sum(events_per_body[i] * n for i, n in ok_bodies.items())
    expected = sum(counted_per_body[i] * n for i, n in ok_bodies.items())
    report: dict[str, Any] = {
        "durability": durability,
        "requests": done,
        "ok": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "client_errors": errors,
        "seconds": round(elapsed, 3),
        "connections": args.connections,
        "procs": args.procs,
        "paced_rate": args.rate,
        "mean_body_bytes": round(statistics.fmean(len(b) for b in bodies)),
        "requests_per_s": round(done / elapsed, 1),
        "events_per_s": round(ok_events / elapsed),
        "mb_per_s": round(sent_bytes / elapsed / 1e6, 1),
        "latency_ms": {
            "p50": round(_percentile(latencies, 0.50) * 1000, 2),
            "p90": round(_percentile(latencies, 0.90) * 1000, 2),
            "p99": round(_percentile(latencies, 0.99) * 1000, 2),
            "max": round((latencies[-1] if latencies else float("nan")) * 1000, 2),
        },
        "wal_disk_bytes_at_end": wal_bytes,
        "counted_expected": expected,
        "counted_by_server": None if final is None else final - baseline,
    }
    report["answer_checked"] = (
        report["counted_by_server"] is None or report["counted_by_server"] == expected
    )
    return report


_RECOVERY_RE = re.compile(
    r"replayed (\d+) record\(s\), (\d+) event\(s\) in ([\d.]+) s \(([\d,]+) events/s\)"
)


def measure_recovery(args: argparse.Namespace, bodies: list[bytes], n: int) -> dict[str, Any]:
    """Post ``n`` batches with no snapshot in between, SIGKILL, restart, time the WAL replay."""
    with tempfile.TemporaryDirectory(prefix="eventtally-recovery-", dir=args.tmp) as tmp:
        tmpdir = Path(tmp)
        durability = {"fsync": "never", "snapshot_interval_s": 0}
        proc, url = start_server(tmpdir, "INFO", durability)
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        headers = {"x-api-token": args.key, "content-type": "application/json"}
        conns = [http.client.HTTPConnection(host, port, timeout=30) for _ in range(4)]
        sent = [0]
        lock = threading.Lock()

        def post(conn: http.client.HTTPConnection, j: int) -> None:
            for i in range(j, n, len(conns)):
                conn.request("POST", f"/{args.ingest}", body=bodies[i % len(bodies)],
                             headers=headers)  # fmt: skip
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    with lock:
                        sent[0] += 1

        ts = [threading.Thread(target=post, args=(c, j)) for j, c in enumerate(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        before = server_count(host, port, args.key)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        wal_bytes = sum(f.stat().st_size for f in (tmpdir / "data" / "wal").glob("wal-*.log"))
        started = time.perf_counter()
        proc, url = start_server(tmpdir, "INFO", durability)
        ready = time.perf_counter() - started
        parts = urlsplit(url)
        after = server_count(parts.hostname or "127.0.0.1", parts.port or 80, args.key)
        proc.terminate()
        proc.wait(120)
        log = (tmpdir / "server.log").read_text()
        m = _RECOVERY_RE.findall(log)
        if not m:
            raise SystemExit("no recovery line in the server log")
        records, events, seconds, _rate = m[-1]
        return {
            "batches_acknowledged": sent[0],
            "wal_bytes": wal_bytes,
            "records_replayed": int(records),
            "events_replayed": int(events),
            "replay_seconds": float(seconds),
            "replay_events_per_s": round(int(events) / max(float(seconds), 1e-9)),
            "restart_to_ready_seconds": round(ready, 2),
            "count_before_kill": before,
            "count_after_restart": after,
            "answer_checked": before == after,
        }


def _print_run(report: dict[str, Any], args: argparse.Namespace) -> None:
    lat = report["latency_ms"]
    print(
        f"requests     {report['requests']} in {report['seconds']} s over {args.connections}"
        f" connections ({args.procs} client process(es)); statuses {report['statuses']},"
        f" client errors {report['client_errors']}; durability {report['durability']}"
    )
    print(
        f"throughput   {report['requests_per_s']} req/s, {report['events_per_s']:,} events/s,"
        f" {report['mb_per_s']} MB/s (mean body {report['mean_body_bytes']:,} bytes)"
    )
    print(
        f"latency      p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms,"
        f" max {lat['max']} ms" + (f" (paced at {args.rate} req/s)" if args.rate else "")
    )
    print(
        f"check        COUNT via /api/v1/metrics/results = {report['counted_by_server']},"
        f" expected {report['counted_expected']}:"
        f" {'ok' if report['answer_checked'] else 'MISMATCH'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000, help="stop after this many requests")
    ap.add_argument("--duration", type=float, default=30.0, help="stop after this many seconds")
    ap.add_argument("--connections", type=int, default=8, help="keep-alive connections in total")
    ap.add_argument("--procs", type=int, default=1, help="client processes (connections split)")
    ap.add_argument(
        "--rate",
        type=float,
        default=None,
        help="pace the load at this many requests/s (default: as fast as possible)",
    )
    ap.add_argument("--batches", type=int, default=40, help="distinct 300-event bodies to cycle")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--url", help="target an already running server (loopback only)")
    ap.add_argument("--key", default=KEY, help="API key for --url")
    ap.add_argument("--ingest", default=BENCH_INGEST["id"], help="ingest id for --url")
    ap.add_argument("--server-log-level", default="INFO", help="log level of the started server")
    ap.add_argument(
        "--fsync", choices=POLICIES, default="always", help="durability of the started server"
    )
    ap.add_argument(
        "--compare-fsync",
        action="store_true",
        help="run once per policy (off, always, interval, never) and report ratios",
    )
    ap.add_argument(
        "--snapshot-interval", type=float, default=10.0, help="server snapshot interval (s)"
    )
    ap.add_argument(
        "--recovery-requests",
        type=int,
        default=0,
        help="then post this many batches, SIGKILL, and time the WAL replay (0: skip)",
    )
    ap.add_argument("--tmp", help="directory for the data directories (default: system temp)")
    ap.add_argument(
        "--engine-seconds",
        type=float,
        default=3.0,
        help="seconds for the in-process engine rate (0 skips it)",
    )
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.duration <= 0 or args.connections < 1 or args.procs < 1:
        ap.error("--requests, --duration, --connections and --procs must be positive")
    if args.connections < args.procs:
        args.procs = args.connections
    if args.url:
        host = urlsplit(args.url).hostname or ""
        if not ipaddress.ip_address(host if host != "localhost" else "127.0.0.1").is_loopback:
            ap.error("--url must point at a loopback address")
        if args.compare_fsync or args.recovery_requests:
            ap.error("--compare-fsync and --recovery-requests start their own servers")

    print(f"generating {args.batches} batches of 300 Segment events ...", file=sys.stderr)
    events = generate_events(args.batches * 300, seed=args.seed)
    bodies = batches(events, 300)
    events_per_body = [min(300, len(events) - i * 300) for i in range(len(bodies))]
    counted_per_body = [
        sum(1 for e in events[i * 300 : (i + 1) * 300] if e.get("type") in COUNTED_TYPES)
        for i in range(len(bodies))
    ]

    policies = POLICIES if args.compare_fsync else (args.fsync,)
    runs: dict[str, dict[str, Any]] = {}
    for policy in policies:
        print(f"load run, durability {policy} ...", file=sys.stderr)
        # Start each run with no dirty pages left by the previous one: otherwise a run pays
        # for its predecessor's writeback (gigabytes of log at 300 MB/s).
        os.sync()
        time.sleep(1.0)
        runs[policy] = run_load(
            args,
            bodies,
            events_per_body,
            counted_per_body,
            durability_for(policy, args.snapshot_interval),
        )
    report: dict[str, Any] = dict(runs[policies[-1]]) if len(runs) == 1 else {"runs": runs}
    if len(runs) > 1:
        base = runs["off"]
        report["cost_vs_off"] = {
            p: {
                "throughput": round(base["requests_per_s"] / max(r["requests_per_s"], 1e-9), 3),
                "p50": round(r["latency_ms"]["p50"] / max(base["latency_ms"]["p50"], 1e-9), 2),
                "p99": round(r["latency_ms"]["p99"] / max(base["latency_ms"]["p99"], 1e-9), 2),
            }
            for p, r in runs.items()
        }
    if args.recovery_requests:
        print(f"recovery: posting {args.recovery_requests} batches ...", file=sys.stderr)
        os.sync()
        report["recovery"] = measure_recovery(args, bodies, args.recovery_requests)
    if args.engine_seconds > 0:
        one = engine_rate(bodies, events_per_body, args.engine_seconds, 1)
        two = engine_rate(bodies, events_per_body, args.engine_seconds, 2)
        report["engine_events_per_s"] = {"1_thread": round(one), "2_threads": round(two)}
        main_run = runs[policies[-1]]
        report["http_to_engine_ratio"] = {
            "vs_1_thread": round(main_run["events_per_s"] / one, 3),
            "vs_2_threads": round(main_run["events_per_s"] / two, 3),
        }
    correct = all(r["answer_checked"] for r in runs.values()) and report.get("recovery", {}).get(
        "answer_checked", True
    )

    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if correct else 1
    for policy, r in runs.items():
        if len(runs) > 1:
            print(f"--- durability: {policy}")
        _print_run(r, args)
    if "cost_vs_off" in report:
        print()
        print("| policy | req/s | p50 ms | p99 ms | throughput cost (off/policy) | p99 ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        for p, r in runs.items():
            c = report["cost_vs_off"][p]
            lat = r["latency_ms"]
            print(
                f"| {p} | {r['requests_per_s']:,} | {lat['p50']} | {lat['p99']} | "
                f"{c['throughput']}x | {c['p99']}x |"
            )
    if "recovery" in report:
        rec = report["recovery"]
        print(
            f"recovery     {rec['records_replayed']} batches, {rec['events_replayed']:,} events "
            f"({rec['wal_bytes'] / 1e6:,.0f} MB of WAL) replayed in {rec['replay_seconds']} s = "
            f"{rec['replay_events_per_s']:,} events/s; restart to ready "
            f"{rec['restart_to_ready_seconds']} s; counts before/after "
            f"{rec['count_before_kill']}/{rec['count_after_restart']}"
        )
    if "engine_events_per_s" in report:
        e = report["engine_events_per_s"]
        r2 = report["http_to_engine_ratio"]
        print(
            f"engine       in-process {e['1_thread']:,} events/s (1 thread), "
            f"{e['2_threads']:,} (2 threads); HTTP/engine = {r2['vs_1_thread']} / "
            f"{r2['vs_2_threads']}"
        )
    return 0 if correct else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
