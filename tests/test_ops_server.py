"""Operations with real processes: health and readiness, the data-directory lock, Prometheus
metrics, the concurrency limit, the state-size limit and opt-in messageId deduplication."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ops_support import (
    KEY,
    ORG,
    ServerProcess,
    batch,
    counts_by_tag,
    post,
    request,
    write_config,
)

pytestmark = pytest.mark.slow


def metrics(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``/metrics`` parsed by prometheus_client: sample name → labels → value."""
    r = request(port, "GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(r.body.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_healthz_at_once_readyz_after_recovery(tmp_path: Path) -> None:
    """/healthz is 200 at once; /readyz and ingest are 503 + Retry-After until recovery ends."""
    write_config(tmp_path, durability={"lock_timeout_s": 60})
    data = tmp_path / "data"
    data.mkdir()
    fd = os.open(data / "LOCK", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with ServerProcess(tmp_path, wait=False) as srv:
            port = srv.wait_listening()
            assert request(port, "GET", "/healthz").json() == {"status": "ok"}
            ready = request(port, "GET", "/readyz")
            assert ready.status == 503 and ready.headers["retry-after"] == "1"
            assert "lock" in ready.json()["status"]
            refused = post(port, batch("r0", 10))
            assert refused.status == 503 and refused.headers["retry-after"] == "1"
            assert "not ready" in refused.json()["message"]
            assert metrics(port)["eventtally_ready"][()] == 0
            os.close(fd)
            fd = -1
            assert srv.wait_ready() == port
            assert request(port, "GET", "/readyz").json() == {"status": "ready"}
            assert post(port, batch("r1", 10)).status == 200
            assert counts_by_tag(port) == {"r1": 10}
            assert srv.stop() == 0
    finally:
        if fd >= 0:
            os.close(fd)


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """A second process on a data directory in use exits 1 naming the holder; the first serves."""
    write_config(tmp_path, durability={"lock_timeout_s": 0.3})
    with ServerProcess(tmp_path) as first:
        second = ServerProcess(tmp_path, wait=False)
        assert second.proc.wait(60) == 1
        assert f"in use by process {first.proc.pid}" in second.stderr()
        assert post(first.port, batch("x", 5)).status == 200
        assert first.stop() == 0


def test_metrics_parse_and_count(tmp_path: Path) -> None:
    """/metrics parses with prometheus_client and counts requests, events, WAL, state, latency."""
    write_config(tmp_path)
    with ServerProcess(tmp_path) as srv:
        for i in range(7):
            assert post(srv.port, batch(f"m{i}", 30)).status == 200
        assert post(srv.port, b'[{"broken": ').status == 400
        assert post(srv.port, batch("m", 1), key="nope").status == 401
        assert post(srv.port, b"[null, 1]").status == 200  # 2 events, both dropped
        m = metrics(srv.port)
        req = m["eventtally_http_requests_total"]
        assert req[(("route", "ingest"), ("status", "200"))] == 8
        assert req[(("route", "ingest"), ("status", "400"))] == 1
        assert req[(("route", "ingest"), ("status", "401"))] == 1
        org = (("org", ORG),)
        assert m["eventtally_events_received_total"][org] == 7 * 30 + 2
        assert m["eventtally_events_accepted_total"][org] == 7 * 30
        assert m["eventtally_events_dropped_total"][(("org", ORG), ("reason", "not_object"))] == 2
        assert m["eventtally_ingest_duration_seconds_count"][()] == 8
        assert m["eventtally_ingest_duration_seconds_bucket"][(("le", "+Inf"),)] == 8
        assert m["eventtally_wal_records_total"][()] == 8
        assert m["eventtally_wal_bytes_written_total"][()] > 7 * 30 * 100
        assert m["eventtally_wal_fsync_duration_seconds_count"][()] >= 1
        assert m["eventtally_wal_disk_bytes"][()] > 0
        assert m["eventtally_state_bytes"][org] > 0
        assert 0 <= m["eventtally_snapshot_age_seconds"][org] < 60
        assert m["eventtally_ready"][()] == 1
        assert m["eventtally_http_requests_in_flight"][()] == 0
        assert m["eventtally_recovery_records"][()] == 0
        assert srv.stop() == 0


def _hold_request(port: int, body: bytes) -> socket.socket:
    """An ingest request whose headers and first half of body are sent: it stays in flight."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    head = (
        f"POST /in HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-token: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    s.sendall(head.encode() + body[: len(body) // 2])
    return s


def _finish(s: socket.socket, body: bytes) -> bytes:
    s.sendall(body[len(body) // 2 :])
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def test_too_many_concurrent_requests_get_503_with_retry_after(tmp_path: Path) -> None:
    """Past max_concurrent_requests: 503 + Retry-After; probes answer; held requests finish."""
    write_config(tmp_path, server={"max_concurrent_requests": 2})
    with ServerProcess(tmp_path) as srv:
        bodies = [batch("c0", 20), batch("c1", 20)]
        held = [_hold_request(srv.port, b) for b in bodies]
        deadline = time.monotonic() + 20
        while metrics(srv.port)["eventtally_http_requests_in_flight"][()] < 2:
            assert time.monotonic() < deadline, "held requests never got in flight"
            time.sleep(0.02)
        busy = post(srv.port, batch("c2", 20))
        assert busy.status == 503
        assert busy.headers["retry-after"] == "1"
        assert busy.headers["content-type"] == "application/json"
        assert "too many concurrent requests" in busy.json()["message"]
        assert request(srv.port, "GET", "/healthz").status == 200
        assert request(srv.port, "GET", "/readyz").status == 200
        for s, b in zip(held, bodies, strict=True):
            assert _finish(s, b).startswith(b"HTTP/1.1 200 ")
        assert post(srv.port, batch("c2", 20)).status == 200
        assert counts_by_tag(srv.port) == {"c0": 20, "c1": 20, "c2": 20}
        assert metrics(srv.port)["eventtally_http_overload_total"][()] == 1
        assert srv.stop() == 0


def test_state_size_limit_is_429_and_the_refused_batch_is_not_logged(tmp_path: Path) -> None:
    """Over max_state_bytes_per_org: 429 + Retry-After, clear message, refused batch unlogged."""
    write_config(tmp_path, server={"max_state_bytes_per_org": 6000})
    acked: dict[str, int] = {}
    with ServerProcess(tmp_path) as srv:
        for i in range(200):
            r = post(srv.port, batch(f"g{i}", 3))
            if r.status == 429:
                break
            assert r.status == 200
            acked[f"g{i}"] = 3
        else:
            pytest.fail("the state-size limit was never reached")
        assert r.headers["retry-after"] == "60"
        message = r.json()["message"]
        assert "State size limit reached for organization acme" in message
        assert "max_state_bytes_per_org" in message
        assert post(srv.port, batch("again", 3)).status == 429
        assert counts_by_tag(srv.port) == acked
        m = metrics(srv.port)
        assert m["eventtally_ingest_refused_total"][(("org", ORG), ("reason", "state_limit"))] == 2
        assert m["eventtally_state_bytes"][(("org", ORG),)] >= 6000
        srv.kill()
    with ServerProcess(tmp_path) as srv:
        assert counts_by_tag(srv.port) == acked
        assert srv.stop() == 0


def _events(tag: str, ids: range) -> bytes:
    return json.dumps(
        [
            {
                "type": "track",
                "event": tag,
                "messageId": f"mid-{i}",
                "receivedAt": "2024-05-14T11:30:00Z",
            }
            for i in ids
        ]
    ).encode()


def test_dedup_is_opt_in_and_survives_a_crash(tmp_path: Path) -> None:
    """Dedup is off by default; on, a resend counts once, also after SIGKILL (window rebuilt)."""
    write_config(tmp_path)
    with ServerProcess(tmp_path) as srv:
        assert post(srv.port, _events("plain", range(10))).status == 200
        assert post(srv.port, _events("plain", range(10))).status == 200
        assert counts_by_tag(srv.port) == {"plain": 20}
        assert srv.stop() == 0
    write_config(tmp_path, durability={"dedup": True, "dedup_window_s": 600})
    with ServerProcess(tmp_path) as srv:
        assert post(srv.port, _events("d", range(100, 150))).status == 200
        assert post(srv.port, _events("d", range(100, 150))).status == 200  # all duplicates
        assert post(srv.port, _events("d", range(120, 200))).status == 200  # 30 dup, 50 new
        assert counts_by_tag(srv.port) == {"plain": 20, "d": 100}
        m = metrics(srv.port)
        assert m["eventtally_dedup_dropped_total"][(("org", ORG),)] == 80
        assert m["eventtally_dedup_ids"][()] == 110  # with the 10 logged before dedup was on
        srv.kill()
    with ServerProcess(tmp_path) as srv:
        assert post(srv.port, _events("d", range(100, 210))).status == 200  # 10 new
        assert counts_by_tag(srv.port) == {"plain": 20, "d": 110}
        assert srv.stop() == 0


def test_interim_server_snapshot_is_migrated(tmp_path: Path) -> None:
    """A data directory of the interim server (state/<org>.snapshot, no WAL) keeps its data."""
    import eventtally
    from eventtally.server import MetadataStore

    write_config(tmp_path)
    with ServerProcess(tmp_path) as srv:  # creates the metadata
        assert srv.stop() == 0
    data = tmp_path / "data"
    for sub in ("wal", "snapshots", "state"):
        for f in (data / sub).iterdir():
            f.unlink()
    store = MetadataStore(data)
    snap = store.view
    ingests = {i.id: i.definition for i in snap.org_ingests(ORG)}
    filters = {f.id: f.definition for f in snap.filters[ORG]}
    store.close()
    # The interim server kept a placeholder ingest in every engine; its snapshots still hold it.
    placeholder = {"id": "_eventtally_validate", "schema": "ARRAY_OF_EVENTS"}
    engine = eventtally.Engine([placeholder, *ingests.values()], filters.values())
    engine.ingest(batch("old", 33), ingest_id="in")
    meta = {
        "org": ORG,
        "ingests": {k: json.dumps(v, sort_keys=True) for k, v in ingests.items()},
        "filters": {k: json.dumps(v, sort_keys=True) for k, v in filters.items()},
    }
    (data / "state" / f"{ORG}.snapshot").write_bytes(
        b"eventtally-server-snapshot 1\n" + json.dumps(meta).encode() + b"\n" + engine.to_bytes()
    )
    with ServerProcess(tmp_path) as srv:
        assert "loaded the interim server's snapshot of acme" in srv.stderr()
        assert post(srv.port, batch("new", 2)).status == 200
        assert counts_by_tag(srv.port) == {"old": 33, "new": 2}
        assert srv.stop() == 0
    assert (data / "state" / f"{ORG}.snapshot").is_symlink()
    with ServerProcess(tmp_path) as srv:
        assert counts_by_tag(srv.port) == {"old": 33, "new": 2}
        assert srv.stop() == 0
