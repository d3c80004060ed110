"""The HTTP front under load and under attack, on loopback.

    python benches/load_fronts.py                     # every scenario, this tree and a baseline
    python benches/load_fronts.py --quick             # shorter runs, fewer idle connections
    python benches/load_fronts.py --scenarios throughput --duration 5 --fronts new

Each scenario runs twice in the same run: on this tree's server (``new``) and on a baseline
(``base``): the ``python/`` tree of ``--baseline`` (a commit, default 2159290: main before the
front's performance work) extracted with ``git archive`` into a temporary directory, with this
tree's compiled core copied beside it, and put first on the server's ``PYTHONPATH``.  A third
front, ``build`` (``--build-python``), runs the server on another install's interpreter, its
own compiled core included, so a change of the core is compared as well.  The table gives the
first front's ratio to each other one, which are far steadier than the absolute figures on
shared cores, and issue 9's target beside each figure.  (The comparison with the old
thread-per-connection front was taken at commit 252c955, where ``--fronts asyncio,threaded``
ran both.)

What this script guarantees:

- Loopback only; each scenario starts a fresh server (``serve_front.py``, a subprocess, throw-away
  data directory) and stops it; every phase is bounded in time and count.
- Each key is used once before anything is measured: a key's first use runs scrypt, and wrk's
  16 or 64 first requests would otherwise all wait for it (about 1 s each on loaded cores),
  which alone is 1 % of a short run: its p99.
- Scenarios (issue 9's performance section):
  1. 300-event Segment batches (≈ 300 KB), fsync ``always`` (group commit), rate limit off, with
     ``wrk`` at 16 and 64 connections: req/s, p50, p99.  The answer is checked: COUNT through
     the Metrics API must match the acknowledged batches (within the requests wrk left in flight).
  2. 2,000 idle keep-alive connections open: ``/healthz`` p99 (a prober issuing one request
     every 20 ms) while wrk ingests at 16 connections, and that ingest rate as a ratio to
     scenario 1's 16-connection rate.
  3. Header flood: connections each sending up to 95 header lines of 60 KB; the server's peak
     RSS growth (``/proc/<pid>/status``, sampled every 20 ms), at ``--flood`` connections and
     at ``--flood-old`` (the count the old front could be measured with: it kept every line).
  4. 64 trickled uploads from one organization (1 byte/s, reconnecting when cut) while another
     organization posts small batches one after the other: its statuses and p99.
- ``--variant NAME=JSON`` adds a front running this tree with other ``[server]`` or
  ``[durability]`` settings (say ``worker_threads`` or ``wal_preallocate``), interleaved with
  the others like any front; ``--fsync`` sets every front's WAL policy.
- ``--rounds N`` runs the throughput scenario N times per front, the fronts' order reversed
  every other round (new, base, base, new, ...): on these shared cores the front that runs
  second tends to do better, and a single pair cannot tell that from a change.  The table gives
  each figure's median over the rounds and a row with every round's rate.
- Results go to stdout as a markdown table and, with ``--json``, to a file; the server's CPU
  time per request (user + system) is reported beside each throughput figure, since on shared
  cores it varies far less than the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment_gen import BENCH_FILTER, BENCH_INGEST, batches, generate_events

KEY_A = "front-bench-key-a-" + "x" * 30
KEY_B = "front-bench-key-b-" + "y" * 30
HERE = Path(__file__).resolve().parent
WRK = shutil.which("wrk") or "/usr/bin/wrk"
EXTRA: dict[str, Any] = json.loads(os.environ.get("ET_FRONT_SETTINGS", "{}"))

LUA = r"""
local f = io.open(os.getenv("ET_BODY_FILE"), "rb")
wrk.method = os.getenv("ET_METHOD") or "POST"
if wrk.method == "POST" then wrk.body = f:read("*a") end
f:close()
wrk.headers["x-api-token"] = os.getenv("ET_KEY")
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,' ..
    '"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def _config(tmp: Path, server: dict[str, Any], durability: dict[str, Any]) -> Path:
    (tmp / "filter.json").write_text(json.dumps(BENCH_FILTER))
    ts = BENCH_INGEST["timestamp"]
    ingest_ts = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in ts.items()) + " }"
    settings = {"host": "127.0.0.1", "port": 0, "data_dir": "data", "rate_limit": 0, **server}
    lines = ["[server]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[durability]"] + [
        f"{k} = {json.dumps(v)}" for k, v in {"fsync": FSYNC, **durability}.items()
    ]
    for org, key in (("alpha", KEY_A), ("beta", KEY_B)):
        lines += [
            "[[organizations]]",
            f'id = "{org}"',
            "[[organizations.api_keys]]",
            'name = "load"',
            f'key = "{key}"',
            'permissions = ["READ", "WRITE"]',
            "[[organizations.ingests]]",
            f'id = "{BENCH_INGEST["id"]}-{org}"',
            f'schema = "{BENCH_INGEST["schema"]}"',
            f"timestamp = {ingest_ts}",
            "[[organizations.filters]]",
            'file = "filter.json"',
        ]
    path = tmp / "eventtally.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


#: ``--access-log``: servers log every request at INFO (to their server.log), as ``serve`` does.
ACCESS_LOG = False
#: front name -> the directory put first on the server's PYTHONPATH ("": this tree as installed).
PYTHONPATHS: dict[str, str] = {"new": ""}
#: ``--fsync``: the WAL policy of every front (``always``: the issue's figures; ``never``: what the
#: front and the core can do without waiting for the disk).
FSYNC = "always"
#: ``--variant NAME=JSON``: front name -> ``{"server": {...}, "durability": {...}}``, settings
#: over the defaults; a variant runs this tree, like ``new``, so one setting is compared in one run.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {}
#: front name -> the interpreter that runs its server (``build``: ``--build-python``, a whole
#: other install, core included); every other front runs on this interpreter.
INTERPRETERS: dict[str, str] = {}


def baseline_tree(commit: str, into: Path) -> str:
    """Extract ``python/`` at ``commit`` into ``into`` with this install's compiled core."""
    import importlib.util

    repo = HERE.parent
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", commit, "python"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    spec = importlib.util.find_spec("eventtally._core")
    if spec is None or spec.origin is None:
        raise SystemExit("eventtally._core is not built: run `make install` first")
    shutil.copy2(spec.origin, into / "python" / "eventtally" / Path(spec.origin).name)
    return str(into / "python")


class Server:
    """One server subprocess with one front."""

    def __init__(self, front: str, server: dict[str, Any]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="et-fronts-"))
        variant = VARIANTS.get(front, {})
        cfg = _config(
            self.tmp, {**server, **variant.get("server", {})}, variant.get("durability", {})
        )
        self.log = (self.tmp / "server.log").open("w")
        env = dict(os.environ)
        if PYTHONPATHS.get(front):
            env["PYTHONPATH"] = PYTHONPATHS[front]
        python = INTERPRETERS.get(front, sys.executable)
        self.proc = subprocess.Popen(
            [python, str(HERE / "serve_front.py"), "--config", str(cfg)]
            + (["--log"] if ACCESS_LOG else []),
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.match(r"PORT (\d+)", line)
        if not m:
            self.stop()
            raise SystemExit(f"server did not start: {(self.tmp / 'server.log').read_text()}")
        self.port = int(m.group(1))

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def rss_kib(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wrk(port: int, path: str, conns: int, seconds: float, body_file: Path, key: str) -> dict:
    lua = body_file.parent / "post.lua"
    lua.write_text(LUA)
    env = {**os.environ, "ET_BODY_FILE": str(body_file), "ET_KEY": key, "ET_METHOD": "POST"}
    out = subprocess.run(
        [
            WRK,
            "-t",
            "2",
            "-c",
            str(conns),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(lua),
            f"http://127.0.0.1:{port}{path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    m = re.search(r"^JSON (.*)$", out, re.M)
    assert m, out
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def warm(port: int, *keys: str) -> None:
    """One authenticated request per key before measuring: a key's first use runs scrypt
    (tens of ms, more on loaded cores), which would otherwise land in the percentiles."""
    for key in keys:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/api/v1/organization/ping", headers={"x-api-token": key})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200, resp.status


def count(port: int, key: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    q = {"filterId": BENCH_FILTER["id"], "aggregationId": 1, "calculation": "COUNT",
         "startTime": "1970-01-01T00:00:00Z", "endTime": "2100-01-01T00:00:00Z"}  # fmt: skip
    conn.request("POST", "/api/v1/metrics/results", json.dumps(q), {"x-api-token": key})
    resp = conn.getresponse()
    rows = json.loads(resp.read())
    conn.close()
    assert resp.status == 200, rows
    return float(sum(r["value"] for r in rows))


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] if s else float("nan")


def scenario_throughput(
    front: str, body_file: Path, counted: int, seconds: float, warmup: float = 0.0
) -> dict:
    out: dict[str, Any] = {}
    for conns in (16, 64):
        with Server(front, {"max_concurrent_requests": 0, **EXTRA}) as srv:
            warm(srv.port, KEY_A)
            warmed = 0
            if warmup:  # the same load first, unmeasured: a server in its steady state
                w = wrk(srv.port, f"/{BENCH_INGEST['id']}-alpha", conns, warmup, body_file, KEY_A)
                warmed = w["requests"] - w["non2xx"]
            u0, s0 = srv.cpu_seconds()
            r = wrk(srv.port, f"/{BENCH_INGEST['id']}-alpha", conns, seconds, body_file, KEY_A)
            u1, s1 = srv.cpu_seconds()
            r["cpu_user_ms"] = (u1 - u0) * 1000 / max(1, r["requests"])
            r["cpu_sys_ms"] = (s1 - s0) * 1000 / max(1, r["requests"])
            ok = r["requests"] - r["non2xx"]
            got = count(srv.port, KEY_A) / counted - warmed
            # wrk stops with up to `conns` requests in flight that the server may still apply.
            in_flight = conns * (2 if warmup else 1) + r["errors"]
            assert ok <= got <= ok + in_flight, (ok, got, r)
            out[f"c{conns}"] = r
    return out


def median_throughput(rounds: list[dict]) -> dict:
    """One throughput result from several rounds: each figure's median (non-2xx summed)."""
    out: dict[str, Any] = {}
    for conns in rounds[0]:
        runs = [r[conns] for r in rounds]
        merged = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        merged["non2xx"] = sum(run["non2xx"] for run in runs)
        merged["rounds_rps"] = [run["rps"] for run in runs]
        out[conns] = merged
    return out


def _open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n")
        socks.append(s)
    for s in socks:  # each answered once: now an idle keep-alive connection
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(4096)
            assert chunk
            data += chunk
    return socks


def _probe(port: int, stop: threading.Event, out: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        t = time.perf_counter()
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        out.append(time.perf_counter() - t)
        time.sleep(0.02)
    conn.close()


def scenario_idle(front: str, body_file: Path, seconds: float, idle: int) -> dict:
    with Server(front, {"max_concurrent_requests": 0, "keepalive_timeout": 120.0}) as srv:
        warm(srv.port, KEY_A)
        socks = _open_idle(srv.port, idle)
        try:
            lat: list[float] = []
            stop = threading.Event()
            t = threading.Thread(target=_probe, args=(srv.port, stop, lat))
            t.start()
            r = wrk(srv.port, f"/{BENCH_INGEST['id']}-alpha", 16, seconds, body_file, KEY_A)
            stop.set()
            t.join()
            rss = srv.rss_kib()
        finally:
            for s in socks:
                s.close()
    return {"rps": r["rps"], "healthz_p99_ms": _pct(lat, 99) * 1000, "probes": len(lat),
            "rss_mib": rss / 1024}  # fmt: skip


async def _flood_one(port: int, lines: int, line: bytes) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"POST /{BENCH_INGEST['id']}-alpha HTTP/1.1\r\nHost: b\r\n".encode())
        for _ in range(lines):
            writer.write(line)
            await writer.drain()
        writer.write(b"\r\n")
        await writer.drain()
        await reader.read(65536)
        writer.close()
    except (ConnectionError, OSError):
        pass


def scenario_flood(front: str, conns: int, lines: int = 95) -> dict:
    with Server(front, {}) as srv:
        time.sleep(0.5)
        base = srv.rss_kib()
        peak = base
        line = b"X-Flood: " + b"a" * 60_000 + b"\r\n"

        async def run() -> None:
            tasks = [_flood_one(srv.port, lines, line) for _ in range(conns)]
            await asyncio.wait_for(asyncio.gather(*tasks), 60)

        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, srv.rss_kib())
                time.sleep(0.02)

        t = threading.Thread(target=sample)
        t.start()
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            asyncio.run(run())
        elapsed = time.monotonic() - started
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            ok = s.recv(100).startswith(b"HTTP/1.1 200")
        healthz_ms = (time.perf_counter() - t0) * 1000
        done.set()
        t.join()
    return {"conns": conns, "rss_growth_mib": (peak - base) / 1024, "seconds": elapsed,
            "healthz_after_ms": healthz_ms, "healthz_ok": ok}  # fmt: skip


def scenario_trickle(front: str, seconds: float, trickles: int = 64) -> dict:
    with Server(front, {}) as srv:
        stop = threading.Event()
        cut = [0]

        async def trickle() -> None:
            head = (
                f"POST /{BENCH_INGEST['id']}-alpha HTTP/1.1\r\nHost: b\r\nx-api-token: {KEY_A}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n["
            ).encode()
            while not stop.is_set():
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
                    writer.write(head)
                    while not stop.is_set():
                        try:
                            data = await asyncio.wait_for(reader.read(4096), 1.0)
                        except TimeoutError:
                            writer.write(b" ")
                            await writer.drain()
                            continue
                        if not data or data.startswith(b"HTTP/"):
                            cut[0] += 1
                            break
                    writer.close()
                except (ConnectionError, OSError):
                    await asyncio.sleep(0.05)

        async def attack() -> None:
            await asyncio.gather(*(trickle() for _ in range(trickles)))

        warm(srv.port, KEY_A, KEY_B)
        t = threading.Thread(target=lambda: asyncio.run(attack()))
        t.start()
        time.sleep(2.0)  # let the trickles take their slots
        body = json.dumps([{"type": "track", "event": "small",
                            "receivedAt": "2024-05-14T10:00:00Z"}] * 10).encode()  # fmt: skip
        statuses: dict[int, int] = {}
        lat: list[float] = []
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                conn.request("POST", f"/{BENCH_INGEST['id']}-beta", body, {"x-api-token": KEY_B})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (ConnectionError, OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                status = 0
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(0.01)
        conn.close()
        stop.set()
        t.join(30)
    return {"statuses": statuses, "p99_ms": _pct(lat, 99) * 1000, "requests": len(lat),
            "trickles_cut": cut[0]}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--fronts",
        default="new,base",
        help="new (this tree), base (--baseline's python/ with this core), build (the whole "
        "install of --build-python, its own core)",
    )
    p.add_argument(
        "--build-python",
        help="front `build`: the interpreter of another install (e.g. a venv of main), so a "
        "change of the Rust core is compared too",
    )
    p.add_argument(
        "--baseline", default="2159290", help="the baseline commit (default: %(default)s)"
    )
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    p.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="throughput: seconds of the same load before the measured run (steady state: with "
        "ET_FRONT_SETTINGS='{\"save_interval\": 2}' snapshots free WAL segments meanwhile)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="throughput: runs per front, the fronts' order reversed every other round; the "
        "table gives medians (default: %(default)s)",
    )
    p.add_argument("--idle", type=int, default=2000)
    p.add_argument("--flood", type=int, default=300, help="flood connections (first flood)")
    p.add_argument("--flood-old", type=int, default=40, help="flood connections (second flood)")
    p.add_argument("--scenarios", default="throughput,idle,flood,trickle")
    p.add_argument("--quick", action="store_true", help="4 s runs, 500 idle connections")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--access-log", action="store_true", help="servers write the access log")
    p.add_argument(
        "--fsync",
        choices=("always", "interval", "never"),
        default="always",
        help="the servers' WAL fsync policy (default: %(default)s; `never` shows the ceiling "
        "of the front and core without the disk)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a front NAME running this tree with other [server] and [durability] settings, "
        "e.g. `--fronts new,plain --variant "
        '\'plain={"durability": {"wal_preallocate": false}}\'` (repeatable)',
    )
    args = p.parse_args()
    global ACCESS_LOG, FSYNC
    ACCESS_LOG = args.access_log
    FSYNC = args.fsync
    for spec in args.variant:
        name, sep, settings = spec.partition("=")
        if not sep or not name or name in ("new", "base", "build"):
            raise SystemExit(f"--variant {spec!r}: expected NAME=JSON with a new front name")
        extra = json.loads(settings)
        if not isinstance(extra, dict) or not set(extra) <= {"server", "durability"}:
            raise SystemExit(
                f"--variant {spec!r}: expected a JSON object with `server` and/or `durability`"
            )
        VARIANTS[name] = extra
    if args.quick:
        args.duration, args.idle = min(args.duration, 4.0), min(args.idle, 500)
    body = batches(generate_events(300, seed=1), 300)[0]
    counted = sum(1 for e in json.loads(body) if e.get("type") in ("track", "page", "screen"))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        fronts = args.fronts.split(",")
        if "base" in fronts:
            PYTHONPATHS["base"] = baseline_tree(args.baseline, Path(d))
        if "build" in fronts:
            if not args.build_python:
                raise SystemExit("front `build` needs --build-python")
            INTERPRETERS["build"] = args.build_python
        body_file = Path(d) / "body.json"
        body_file.write_bytes(body)
        todo = args.scenarios.split(",")
        # Interleaved (new, base, new, base ...) so a change in the machine's load hits both.
        for front in fronts:
            results[front] = {}
        if "throughput" in todo:
            rounds: dict[str, list[dict]] = {front: [] for front in fronts}
            for k in range(max(1, args.rounds)):
                for front in fronts if k % 2 == 0 else fronts[::-1]:
                    print(f"[{front}] throughput, round {k + 1}", file=sys.stderr, flush=True)
                    rounds[front].append(
                        scenario_throughput(front, body_file, counted, args.duration, args.warmup)
                    )
            for front in fronts:
                results[front]["throughput"] = median_throughput(rounds[front])
        for scenario in ("idle", "flood", "trickle"):
            if scenario not in todo:
                continue
            for front in fronts:
                r = results[front]
                print(f"[{front}] {scenario}", file=sys.stderr, flush=True)
                if scenario == "idle":
                    r["idle"] = scenario_idle(front, body_file, args.duration, args.idle)
                elif scenario == "flood":
                    r["flood"] = [scenario_flood(front, args.flood)]
                    if args.flood_old != args.flood:
                        r["flood"].append(scenario_flood(front, args.flood_old))
                else:
                    r["trickle"] = scenario_trickle(front, args.duration)
    print(
        f"body: {len(body)} bytes, 300 events; wrk -t2, {args.duration:.0f} s per run; "
        + (f"medians of {args.rounds} rounds; " if args.rounds > 1 else "")
        + f"fsync {FSYNC}"
        + "".join(f"; {n}: {json.dumps(v)}" for n, v in VARIANTS.items())
        + "\n"
    )
    names = list(results)
    # One ratio column per other front: the first front over it.
    ratios = [f"{names[0]} / {other}" for other in names[1:]]
    print("| measure | " + " | ".join(names + ratios) + " | target |")
    print("|---|" + "---:|" * (len(names) + len(ratios)) + "---|")

    def row(name: str, fn: Any, target: str = "", value: Any = None) -> None:
        cells, nums = [], []
        for r in results.values():
            try:
                cells.append(fn(r))
                nums.append(value(r) if value else None)
            except (KeyError, IndexError):
                cells.append("-")
                nums.append(None)
        a = nums[0]
        for b in nums[1:]:
            cells.append(f"{a / b:.2f}x" if a is not None and b else "")
        print(f"| {name} | " + " | ".join(cells) + f" | {target} |")

    targets = {"c16": ("≥ 1,250 (stretch 2,000)", "≤ 50"), "c64": ("", "≤ 150")}
    for c in ("c16", "c64"):
        n = c[1:]

        def tp(r: dict, c: str = c) -> dict:
            return r["throughput"][c]

        row(f"{n} conns: req/s", lambda r, tp=tp: f"{tp(r)['rps']:.0f}", targets[c][0],
            lambda r, tp=tp: tp(r)["rps"])  # fmt: skip
        if args.rounds > 1:
            row(f"{n} conns: req/s, each round",
                lambda r, tp=tp: " ".join(f"{v:.0f}" for v in tp(r)["rounds_rps"]))  # fmt: skip
        row(f"{n} conns: p50 ms", lambda r, tp=tp: f"{tp(r)['p50_us'] / 1000:.1f}", "",
            lambda r, tp=tp: tp(r)["p50_us"])  # fmt: skip
        row(f"{n} conns: p99 ms", lambda r, tp=tp: f"{tp(r)['p99_us'] / 1000:.1f}", targets[c][1],
            lambda r, tp=tp: tp(r)["p99_us"])  # fmt: skip
        row(f"{n} conns: non-2xx", lambda r, tp=tp: str(tp(r)["non2xx"]), "0")
        row(
            f"{n} conns: server CPU ms/request (user + sys)",
            lambda r, tp=tp: f"{tp(r)['cpu_user_ms']:.2f} + {tp(r)['cpu_sys_ms']:.2f}",
            "old threaded front: 1.62" if c == "c16" else "",
            lambda r, tp=tp: tp(r)["cpu_user_ms"] + tp(r)["cpu_sys_ms"],
        )
    row(f"{args.idle} idle: /healthz p99 ms", lambda r: f"{r['idle']['healthz_p99_ms']:.1f}",
        "≤ 50", lambda r: r["idle"]["healthz_p99_ms"])  # fmt: skip
    row(f"{args.idle} idle: ingest req/s (16 conns)", lambda r: f"{r['idle']['rps']:.0f}", "",
        lambda r: r["idle"]["rps"])  # fmt: skip
    row(
        f"{args.idle} idle: ingest vs without",
        lambda r: f"{r['idle']['rps'] / r['throughput']['c16']['rps']:.0%}",
        "≥ 80 %",
    )
    row(f"{args.idle} idle: server RSS MiB", lambda r: f"{r['idle']['rss_mib']:.0f}", "",
        lambda r: r["idle"]["rss_mib"])  # fmt: skip
    for i in range(2):
        row(
            f"flood #{i + 1}: conns x 95 x 60 KB, RSS growth MiB",
            lambda r, i=i: f"{r['flood'][i]['conns']}: {r['flood'][i]['rss_growth_mib']:.0f}",
            "≤ 64 (300 conns)" if i == 0 else "",
            lambda r, i=i: r["flood"][i]["rss_growth_mib"],
        )
    row("64 trickles: other org statuses", lambda r: json.dumps(r["trickle"]["statuses"]),
        "all 200")  # fmt: skip
    row("64 trickles: other org p99 ms", lambda r: f"{r['trickle']['p99_ms']:.1f}", "≤ 250",
        lambda r: r["trickle"]["p99_ms"])  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
