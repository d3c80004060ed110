"""Backfill with real processes: a filter added later, applied to the batches still in the WAL
(offline on the data directory, or through a running server's admin API, by time range) and to
gzipped NDJSON archive files, gives exactly the answers it would have had from the start, and
leaves every other filter untouched."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import eventtally
from tests.ops_support import (
    ADMIN,
    BACKFILL_QUERIES,
    BY_BATCH,
    END,
    INGEST,
    INGEST_DEF,
    KEY,
    ORG,
    PER_MINUTE,
    START,
    ServerProcess,
    backfill_answers,
    minute_batches,
    post,
    request,
    write_config,
)

pytestmark = pytest.mark.slow


def bodies(prefix: str, n: int, minute0: int) -> list[bytes]:
    return minute_batches(prefix, n, minute0, hour=11, first_size=40)


def expected(per_minute: list[bytes], by_batch: list[bytes]) -> list[Any]:
    pm = eventtally.Engine([INGEST_DEF], [PER_MINUTE])
    for body in per_minute:
        pm.ingest(body)
    bb = eventtally.Engine([INGEST_DEF], [BY_BATCH])
    for body in by_batch:
        bb.ingest(body)
    out = []
    for f, a, c in BACKFILL_QUERIES:
        engine = pm if f == "per-minute" else bb
        q = {"filterId": f, "aggregationId": a, "calculation": c, "startTime": START,
             "endTime": END}  # fmt: skip
        out.append(sorted(json.dumps(r, sort_keys=True) for r in engine.results(q)))
    return out


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventtally", *args, "--config", str(tmp_path / "eventtally.toml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def add_filter_while_running(tmp_path: Path, port: int) -> None:
    """``eventtally filter create`` in another process; wait until the server applied it."""
    out = cli(tmp_path, "filter", "create", "--org", ORG, "--json", json.dumps(PER_MINUTE))
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while True:
        r = request(port, "GET", "/api/v1/filter-definitions", headers={"x-api-token": KEY})
        if any(f["id"] == "per-minute" for f in r.json()):
            return
        assert time.monotonic() < deadline, "the server never picked the new filter up"
        time.sleep(0.05)


def wal_config(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        durability={
            "segment_bytes": 64 * 1024,  # many segments
            "snapshot_interval_s": 0.2,  # snapshots would truncate them...
            "wal_retention_seconds": 3600,  # ...but retention keeps them for backfill
        },
    )


def test_offline_wal_backfill_equals_having_had_the_filter_from_the_start(tmp_path: Path) -> None:
    """Offline WAL backfill equals having had the filter from the start; a repeat is refused."""
    wal_config(tmp_path)
    early, late = bodies("e", 25, 0), bodies("l", 25, 30)
    with ServerProcess(tmp_path) as srv:
        for body in early:
            assert post(srv.port, body).status == 200
        add_filter_while_running(tmp_path, srv.port)
        for body in late:
            assert post(srv.port, body).status == 200
        before = backfill_answers(srv.port)
        assert before != expected(early + late, early + late)  # the filter missed "early"
        assert srv.stop() == 0
    assert len(list((tmp_path / "data" / "wal").glob("wal-*.log"))) > 5
    out = cli(tmp_path, "backfill", "--filter", "per-minute")
    assert out.returncode == 0, out.stderr
    assert "backfill per-minute:" in out.stderr and "100.0%" in out.stderr
    assert "backfilled filter per-minute of acme from 25 logged batch(es)" in out.stdout
    with ServerProcess(tmp_path) as srv:
        assert backfill_answers(srv.port) == expected(early + late, early + late)
        assert srv.stop() == 0
    again = cli(tmp_path, "backfill", "--filter", "per-minute", "--org", ORG)
    assert again.returncode == 1
    assert "already backfilled" in again.stderr
    with ServerProcess(tmp_path) as srv:
        assert backfill_answers(srv.port) == expected(early + late, early + late)
        assert srv.stop() == 0


def test_online_backfill_by_time_range_through_the_admin_api(tmp_path: Path) -> None:
    """Online backfill (admin API) in two time ranges applies each batch once; overlap refused."""
    wal_config(tmp_path)
    first, second, late = bodies("a", 12, 0), bodies("b", 12, 20), bodies("c", 12, 40)
    with ServerProcess(tmp_path) as srv:
        for body in first:
            assert post(srv.port, body).status == 200
        time.sleep(0.05)
        middle = f"{time.time():.3f}"
        time.sleep(0.05)
        for body in second:
            assert post(srv.port, body).status == 200
        add_filter_while_running(tmp_path, srv.port)
        for body in late:
            assert post(srv.port, body).status == 200
        url = ["--url", f"http://127.0.0.1:{srv.port}", "--admin-token", ADMIN]
        out = cli(tmp_path, "backfill", "--filter", "per-minute", "--to", middle, *url)
        assert out.returncode == 0, out.stderr
        assert "from 12 logged batch(es)" in out.stdout
        assert backfill_answers(srv.port) == expected(first + late, first + second + late)
        overlap = cli(tmp_path, "backfill", "--filter", "per-minute", "--from", "0", *url)
        assert overlap.returncode == 1 and "overlapping" in overlap.stderr
        out = cli(tmp_path, "backfill", "--filter", "per-minute", "--from", middle, *url)
        assert out.returncode == 0, out.stderr
        assert "from 12 logged batch(es)" in out.stdout
        full = expected(first + second + late, first + second + late)
        assert backfill_answers(srv.port) == full
        offline = cli(tmp_path, "backfill", "--filter", "per-minute", "--from", "0")
        assert offline.returncode == 1 and "--url" in offline.stderr  # the server holds the dir
        srv.kill()
    with ServerProcess(tmp_path) as srv:  # the backfill was snapshotted: it survives SIGKILL
        assert backfill_answers(srv.port) == full
        assert srv.stop() == 0


def test_backfill_from_gzipped_ndjson_archive_files(tmp_path: Path) -> None:
    """Gzipped NDJSON archives backfill only the new filter; the same file twice is refused."""
    write_config(tmp_path)
    archived, live = bodies("z", 15, 0), bodies("y", 15, 30)
    archives = []
    for k in range(3):
        path = tmp_path / f"segment-archive-{k}"  # Segment archives are gzipped, any name
        with gzip.open(path, "wt") as fh:
            for body in archived[k * 5 : (k + 1) * 5]:
                for ev in json.loads(body):
                    fh.write(json.dumps(ev) + "\n")
        archives.append(str(path))
    with ServerProcess(tmp_path) as srv:
        add_filter_while_running(tmp_path, srv.port)
        for body in live:
            assert post(srv.port, body).status == 200
        assert srv.stop() == 0
    out = cli(tmp_path, "backfill", "--filter", "per-minute", "--file", *archives)
    assert out.returncode == 1 and "--ingest" in out.stderr  # two ingests: which timestamps?
    out = cli(
        tmp_path, "backfill", "--filter", "per-minute", "--ingest", INGEST, "--file", *archives
    )
    assert out.returncode == 0, out.stderr
    assert "from 3 file(s)" in out.stdout
    with ServerProcess(tmp_path) as srv:
        assert backfill_answers(srv.port) == expected(archived + live, live)
        assert srv.stop() == 0
    again = cli(tmp_path, "backfill", "--filter", "per-minute", "--ingest", INGEST, "--file",
                archives[1])  # fmt: skip
    assert again.returncode == 1 and "already backfilled" in again.stderr
