"""Snapshot backfill through real server processes (issue 12): history aggregated offline into
an engine snapshot is merged into an organization's live state, by ``eventtally backfill
--snapshot FILE --org ORG`` (through the admin API while the server runs, or on the data
directory while it does not). The merge is durable before the answer (it survives SIGKILL),
refused when repeated (content hash), refused with a message naming what differs when the
filter definitions do not match, and refused for bytes that are not a valid snapshot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import eventtally
from tests.ops_support import (
    ADMIN,
    BACKFILL_QUERIES,
    BY_BATCH,
    END,
    INGEST_DEF,
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

FILTERS = [BY_BATCH, PER_MINUTE]


def bodies(prefix: str, n: int, minute0: int) -> list[bytes]:
    return minute_batches(prefix, n, minute0, hour=10, first_size=30)


def expected(parts: list[bytes]) -> list[Any]:
    engine = eventtally.Engine([INGEST_DEF], FILTERS)
    for body in parts:
        engine.ingest(body)
    out = []
    for f, a, c in BACKFILL_QUERIES:
        q = {"filterId": f, "aggregationId": a, "calculation": c, "startTime": START,
             "endTime": END}  # fmt: skip
        out.append(sorted(json.dumps(r, sort_keys=True) for r in engine.results(q)))
    return out


def offline_snapshot(path: Path, parts: list[bytes], filters: list[dict[str, Any]]) -> Path:
    engine = eventtally.Engine([INGEST_DEF], filters)
    for body in parts:
        engine.ingest(body)
    engine.save(path)
    return path


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventtally", *args, "--config", str(tmp_path / "eventtally.toml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_snapshot_backfill_through_the_admin_api_and_offline(tmp_path: Path) -> None:
    write_config(tmp_path, filters=FILTERS)
    history, live, more = bodies("h", 12, 0), bodies("l", 12, 20), bodies("m", 6, 40)
    snap = offline_snapshot(tmp_path / "history.etsnap", history, FILTERS)
    with ServerProcess(tmp_path) as srv:
        for body in live:
            assert post(srv.port, body).status == 200
        url = ["--url", f"http://127.0.0.1:{srv.port}", "--admin-token", ADMIN]
        out = cli(tmp_path, "backfill", "--snapshot", str(snap), "--org", ORG, *url)
        assert out.returncode == 0, out.stderr
        assert f"merged snapshot {snap}" in out.stdout
        merged = expected(history + live)
        assert backfill_answers(srv.port) == merged
        # The same bytes again (another name) are refused: 409 through the API.
        copy = tmp_path / "copy.etsnap"
        copy.write_bytes(snap.read_bytes())
        again = cli(tmp_path, "backfill", "--snapshot", str(copy), "--org", ORG, *url)
        assert again.returncode == 1
        assert "409" in again.stderr and "already merged" in again.stderr
        r = request(
            srv.port,
            "POST",
            "/admin/v1/backfill",
            body=json.dumps({"organization": ORG, "snapshot": str(copy)}).encode(),
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert r.status == 409, r.body
        assert backfill_answers(srv.port) == merged
        srv.kill()  # the merge was durable before the 200
    with ServerProcess(tmp_path) as srv:
        assert backfill_answers(srv.port) == merged
        assert srv.stop() == 0
    # Offline, on the data directory.
    more_snap = offline_snapshot(tmp_path / "more.etsnap", more, FILTERS)
    out = cli(tmp_path, "backfill", "--snapshot", str(more_snap), "--org", ORG)
    assert out.returncode == 0, out.stderr
    again = cli(tmp_path, "backfill", "--snapshot", str(more_snap), "--org", ORG)
    assert again.returncode == 1 and "already merged" in again.stderr
    with ServerProcess(tmp_path) as srv:
        assert backfill_answers(srv.port) == expected(history + live + more)
        assert srv.stop() == 0


def test_mismatched_or_invalid_snapshots_are_refused(tmp_path: Path) -> None:
    write_config(tmp_path, filters=FILTERS)
    history = bodies("h", 4, 0)
    missing = offline_snapshot(tmp_path / "missing.etsnap", history, [BY_BATCH])
    changed = offline_snapshot(
        tmp_path / "changed.etsnap",
        history,
        [BY_BATCH, {**PER_MINUTE, "intervalType": "HOUR"}],
    )
    extra = {**BY_BATCH, "id": "extra"}
    more = offline_snapshot(tmp_path / "extra.etsnap", history, [*FILTERS, extra])
    garbage = tmp_path / "garbage.etsnap"
    data = bytearray(Path(missing).read_bytes())
    data[-5] ^= 0xFF
    garbage.write_bytes(bytes(data))
    with ServerProcess(tmp_path) as srv:
        for body in bodies("l", 3, 30):
            assert post(srv.port, body).status == 200
        before = backfill_answers(srv.port)
        url = ["--url", f"http://127.0.0.1:{srv.port}", "--admin-token", ADMIN]
        out = cli(tmp_path, "backfill", "--snapshot", str(missing), "--org", ORG, *url)
        assert out.returncode == 1
        assert "400" in out.stderr and "['per-minute']" in out.stderr
        assert "not in the snapshot" in out.stderr
        out = cli(tmp_path, "backfill", "--snapshot", str(changed), "--org", ORG, *url)
        assert out.returncode == 1 and "'per-minute' differs in intervalType" in out.stderr
        out = cli(tmp_path, "backfill", "--snapshot", str(more), "--org", ORG, *url)
        assert out.returncode == 1 and "['extra'] are in the snapshot" in out.stderr
        out = cli(tmp_path, "backfill", "--snapshot", str(garbage), "--org", ORG, *url)
        assert out.returncode == 1 and "not a valid engine snapshot" in out.stderr
        out = cli(tmp_path, "backfill", "--snapshot", str(missing), "--org", "nope", *url)
        assert out.returncode == 1 and "404" in out.stderr
        out = cli(tmp_path, "backfill", "--snapshot", str(missing), "--filter", "x", *url)
        assert out.returncode == 1 and "--snapshot carries its own filters" in out.stderr
        assert backfill_answers(srv.port) == before
        assert srv.stop() == 0
