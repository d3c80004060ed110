"""Hardening of the server's bodies, files and probes (issue 9 §1 "Correctness").

- Every JSON request body parsed in Python is depth-limited: too deep is a 400 naming the limit
  on ``/metrics/results``, ``?multi=true``, ``/metrics/groupings`` and the admin API, never a 500.
- Files in the data directory are 0600 and directories 0700, whatever the umask.
- ``/readyz`` is 503 with the reason while the write-ahead log refuses writes (a real ``EFBIG``
  from ``RLIMIT_FSIZE`` in a subprocess server, or a closed log), and 200 again once writes work.
- ``/metrics`` takes an optional read token.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventtally import _safejson as safejson
from eventtally.durability.files import make_private_dirs, open_private
from eventtally.server import ConfigFileError, EventtallyHTTPServer, ServerConfig
from tests.server_support import (
    TYPES_FILTER,
    Client,
    expected_by_type,
    fixture_bytes,
    query,
    running_server,
    simple_points,
)
from tests.support import last_wal_record_bounds

HERE = Path(__file__).resolve().parent
ADMIN = "admin-token-0123456789"
DEEP = 100_000  # far past the interpreter's recursion limit
BATCH = fixture_bytes("request-body-batch.json")


def _deep_array(n: int = DEEP) -> bytes:
    return b"[" * n + b"]" * n


def _deep_object(n: int = DEEP) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


# ---------------------------------------------------------------- depth-limited JSON


def test_safejson_limit_is_exact_and_strings_do_not_count() -> None:
    """Depth MAX_DEPTH parses, one more is TooDeepError; brackets in strings are text."""
    limit = safejson.MAX_DEPTH
    assert safejson.loads(b"[" * limit + b"]" * limit) is not None
    with pytest.raises(safejson.TooDeepError) as info:
        safejson.loads(b"[" * (limit + 1) + b"]" * (limit + 1))
    assert f"limit of {limit} levels" in str(info.value)
    assert isinstance(info.value, ValueError)
    tricky = json.dumps({"s": "[[[[{{{{" * 100, "e": '\\"[[[', "n": [[["x"]]]})
    assert safejson.loads(tricky) == json.loads(tricky)
    assert safejson.depth(tricky.encode()) == 4
    assert safejson.depth(b'"unterminated [[[') == 0  # all inside the (bad) string
    assert safejson.depth(b'["a\\\\", ["b\\"]"]]') == 2  # escaped backslash, escaped quote
    assert safejson.depth(b"[[],[[],[[]") == 4  # unbalanced: as deep as a parser could get
    with pytest.raises(safejson.TooDeepError):  # unclosed openers past the limit: refused too
        safejson.loads(b"[[]," * 30 + b"[" * 70)
    assert safejson.depth(b"[" * 100 + b"[]") == 101
    interleaved = b"[[]," * 70 + b"1" + b"]" * 70  # no run of openers
    assert safejson.depth(interleaved) == 71 and json.loads(interleaved)
    with pytest.raises(safejson.TooDeepError):
        safejson.loads(interleaved)
    with pytest.raises(safejson.TooDeepError):
        safejson.loads(_deep_object())
    with pytest.raises(ValueError):
        safejson.loads(b'{"a": ')  # malformed stays a JSONDecodeError


def _reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_reference_depth(v) for v in value.values()), default=0)
    return 0


_TEXT = st.text(alphabet='[]{}"\\,:ab \n\u00e9', max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.booleans())
def test_depth_scan_matches_a_recursive_walk(value: Any, ascii_only: bool) -> None:
    """The C-level scan equals the recursive depth, whatever brackets, quotes and backslashes the
    strings (and keys) hold, in either escaping style."""
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert safejson.depth(raw) == _reference_depth(value)
    assert safejson.loads(raw, max_depth=64) == value


@pytest.mark.parametrize("body", [_deep_array(), _deep_object()], ids=["array", "object"])
@pytest.mark.parametrize(
    "path",
    ["/api/v1/metrics/results", "/api/v1/metrics/results?multi=true", "/api/v1/metrics/groupings"],
)
def test_deep_query_bodies_are_400(client: Client, path: str, body: bytes) -> None:
    """Deeply nested query bodies are a 400 naming the limit; the connection stays usable."""
    reply = client.request("POST", path, body, {"content-type": "application/json"})
    assert reply.status == 400, reply.body
    assert f"limit of {safejson.MAX_DEPTH} levels" in reply.message
    assert client.results(query()).status == 200


def test_nesting_within_the_limit_is_an_ordinary_answer(client: Client) -> None:
    """A query nested just inside the limit is parsed and answered by the engine as usual."""
    nested: Any = "x"
    for _ in range(safejson.MAX_DEPTH - 1):
        nested = [nested]
    assert client.ingest(BATCH).status == 200
    plain = client.results(query())
    reply = client.results({**query(), "extra": nested})  # 64 levels with the query object
    assert reply.status == 200, reply.body
    assert reply.json() == plain.json() != []


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/organizations",
        "/admin/v1/organizations/acme/ingests",
        "/admin/v1/organizations/acme/filters",
        "/admin/v1/organizations/acme/api-keys",
        "/admin/v1/backfill",
    ],
)
def test_deep_admin_bodies_are_400(tmp_path: Path, path: str) -> None:
    with running_server(tmp_path, {"admin_token": ADMIN}) as srv:
        c = Client(srv, key=None)
        headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
        for body in (_deep_array(), _deep_object()):
            reply = c.request("POST", path, body, headers)
            assert reply.status == 400, reply.body
            assert f"limit of {safejson.MAX_DEPTH} levels" in reply.message
        assert c.request("GET", "/admin/v1/organizations", None, headers).status == 200
        c.close()


def test_deep_ingest_body_is_the_engines_400_with_dedup_on(tmp_path: Path) -> None:
    """Ingest bodies are parsed by the engine (limit 512); with deduplication on, the Python
    deduplicator skips a deep body instead of recursing, and the engine answers its 400."""
    with running_server(tmp_path, extra="[durability]\ndedup = true\n") as srv:
        assert srv.app.runtime.storage.dedup is not None
        c = Client(srv)
        reply = c.ingest(_deep_array())
        assert reply.status == 400
        assert reply.message.startswith("malformed JSON at byte")
        assert c.ingest(BATCH).status == 200
        assert c.ingest(BATCH).status == 200  # the resend is deduplicated
        assert simple_points(c.results(query()).json()) == expected_by_type(json.loads(BATCH))
        # Deeper than the scan's 64 levels but within the engine's 512: counted, not deduplicated.
        deep = b'[{"messageId": "deep-1", "v": ' + _deep_array(100) + b"}]"
        dedup = srv.app.runtime.storage.dedup
        before = dedup.stats().unparsed
        assert c.ingest(deep).status == 200
        assert c.ingest(deep).status == 200
        assert dedup.stats().unparsed == before + 2
        total = sum(r["value"] for r in c.results(query("all-events")).json())
        assert total == len(json.loads(BATCH)) + 2
        c.close()


# ---------------------------------------------------------------- file modes


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                continue
            out[str(p.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return out


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277])
def test_data_directory_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """WAL segments, snapshots (and their temp files), SQLite and its -wal/-shm, the lock and
    the key pepper are 0600; every directory the server creates is 0700."""
    old = os.umask(umask)
    try:
        with running_server(tmp_path) as srv:
            c = Client(srv)
            assert c.ingest(BATCH).status == 200
            assert srv.app.runtime.save_all(force=True) >= 1
            live = _modes(tmp_path / "data")
            c.close()
        after = _modes(tmp_path / "data")
    finally:
        os.umask(old)
    names = set(live) | set(after)
    assert any(n.startswith("wal/wal-") for n in names)
    assert any(n.startswith("snapshots/snap-") for n in names)
    assert any(n.endswith("-wal") for n in live) and any(n.endswith("-shm") for n in live)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    for name, mode in {**live, **after}.items():
        is_dir = (tmp_path / "data" / name).is_dir()
        assert mode == (0o700 if is_dir else 0o600), (name, oct(mode))


def test_private_helpers_make_parents_and_tighten(tmp_path: Path) -> None:
    """Missing parents are made 0700; an old 0644 file opened with O_CREAT becomes 0600."""
    made = make_private_dirs(tmp_path / "a" / "b" / "c")
    for p in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700
    old = tmp_path / "old"
    old.write_bytes(b"x")
    old.chmod(0o644)
    os.close(open_private(old, os.O_RDWR | os.O_CREAT))
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert old.read_bytes() == b"x"


# ---------------------------------------------------------------- /readyz follows the WAL


def _wal_segment(data: Path) -> Path:
    segments = sorted((data / "wal").glob("wal-*.log"))
    assert segments
    return segments[-1]


def test_readyz_is_503_while_the_disk_refuses_wal_writes(tmp_path: Path) -> None:
    """A real EFBIG on the WAL segment: ingest 503, /readyz 503 naming it; lifted: both 200."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fsize_server.py"), str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def command(line: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ok"

    try:
        port = int(proc.stdout.readline())
        srv = _Port(port)
        c = Client(srv)  # type: ignore[arg-type]
        track = fixture_bytes("request-body-single-track.json")
        assert c.ingest(BATCH).status == 200
        assert c.request("GET", "/readyz").json() == {"status": "ready"}

        # The segment is preallocated: the limit sits where its records end, so the next write
        # (not the file's size) is past it.
        _start, records_end = last_wal_record_bounds(_wal_segment(tmp_path / "data"))
        command(f"limit {records_end}")
        refused = c.ingest(track)
        assert refused.status == 503
        assert refused.message == "Could not persist the batch; retry later"
        for _ in range(2):  # stays refused: the probe hits the same limit
            ready = c.request("GET", "/readyz")
            assert ready.status == 503
            assert ready.header("Retry-After") == "5"
            assert ready.json()["status"] == "not accepting writes"
            assert "cannot write" in ready.message and "File too large" in ready.message
        assert c.request("GET", "/healthz").status == 200

        command("unlimit")
        assert c.request("GET", "/readyz").json() == {"status": "ready"}
        assert c.ingest(track).status == 200
        events = [*json.loads(BATCH), json.loads(track)[0]]
        assert simple_points(c.results(query()).json()) == expected_by_type(events)
        c.close()
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class _Port:
    """What ``Client`` needs of a server: its port (the server runs in another process)."""

    def __init__(self, port: int) -> None:
        self.port = port


def test_readyz_is_503_once_the_wal_is_closed(server: EventtallyHTTPServer, client: Client) -> None:
    """A closed log (what a shutdown does first) refuses ingest; /readyz says so."""
    assert client.request("GET", "/readyz").status == 200
    wal = server.app.runtime.storage.wal
    assert wal is not None
    wal.close()
    assert client.ingest(BATCH).status == 503
    ready = client.request("GET", "/readyz")
    assert ready.status == 503
    assert "is closed" in ready.message


def test_readyz_is_503_while_definitions_wait_for_a_snapshot(tmp_path: Path) -> None:
    """A snapshot that fails after a definition change (its directory replaced by a file, a
    real ENOTDIR) refuses the organization's ingest; /readyz names it until a retry lands."""
    with running_server(tmp_path, {"admin_token": ADMIN, "save_interval": 0.2}) as srv:
        c = Client(srv)
        snapshots = tmp_path / "data" / "snapshots"
        moved = tmp_path / "data" / "snapshots.away"
        snapshots.rename(moved)
        snapshots.write_bytes(b"not a directory")
        try:
            headers = {"authorization": f"Bearer {ADMIN}"}
            reply = c.request(
                "POST",
                "/admin/v1/organizations/acme/filters",
                {**TYPES_FILTER, "id": "by-type-2"},
                headers,
                key=False,
            )
            assert reply.status == 201, reply.body
            assert c.ingest(BATCH).status == 503
            ready = c.request("GET", "/readyz")
            assert ready.status == 503
            assert "organization(s) acme are not persisted" in ready.message
        finally:
            snapshots.unlink()
            moved.rename(snapshots)
        for _ in range(200):  # the maintenance thread retries every save_interval
            if c.request("GET", "/readyz").status == 200:
                break
            time.sleep(0.05)
        assert c.request("GET", "/readyz").json() == {"status": "ready"}
        assert c.ingest(BATCH).status == 200
        c.close()


# ---------------------------------------------------------------- /metrics read key


def test_metrics_is_open_by_default(client: Client) -> None:
    reply = client.request("GET", "/metrics", key=False)
    assert reply.status == 200 and b"eventtally_ready 1" in reply.body


def test_metrics_token_when_configured(tmp_path: Path) -> None:
    """With ``metrics_token``: 401 without it or with a wrong one; Bearer or x-api-token works."""
    token = "scrape-token-0123456789"
    with running_server(tmp_path, {"metrics_token": token}) as srv:
        c = Client(srv)
        missing = c.request("GET", "/metrics", key=False)
        assert missing.status == 401
        assert missing.header("WWW-Authenticate") == 'Bearer realm="metrics"'
        assert "Missing metrics token" in missing.message
        assert c.request("GET", "/metrics", key="wrong").message == "Invalid metrics token"
        bearer = {"authorization": "Bearer wrong"}
        assert c.request("GET", "/metrics", None, bearer, key=False).status == 401
        # An ingest key is not the metrics token.
        assert c.request("GET", "/metrics").status == 401
        ok = c.request("GET", "/metrics", None, {"authorization": f"Bearer {token}"}, key=False)
        assert ok.status == 200 and b"eventtally_ready 1" in ok.body
        assert c.request("GET", "/metrics", key=token).status == 200
        # Probes stay open: orchestrators call them without credentials.
        assert c.request("GET", "/readyz", key=False).status == 200
        assert c.request("GET", "/healthz", key=False).status == 200
        c.close()


def test_empty_metrics_token_is_a_config_error() -> None:
    with pytest.raises(ConfigFileError, match="metrics_token"):
        ServerConfig(metrics_token=" ").validate()
