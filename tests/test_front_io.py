"""The front's I/O paths: bodies received into one buffer, pipelining around them, and the
admission that runs on the event loop only when it needs neither scrypt nor SQLite.

Every socket has a timeout and every server short deadlines, so a regression fails, not hangs.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventtally.server import EventtallyHTTPServer, Manager, MetadataStore
from tests.server_support import INGEST, SEGMENT_KEY, Client, query, running_server

pytestmark = pytest.mark.timeout(120)

EVENT = {"type": "track", "event": "A", "receivedAt": "2024-05-14T10:00:00Z"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EventtallyHTTPServer]:
    with running_server(tmp_path, {"rate_limit": 0, "body_min_rate": 0}) as srv:
        yield srv


def _post(body: bytes, key: str = SEGMENT_KEY, extra: str = "") -> bytes:
    return (
        f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _responses(sock: socket.socket, n: int) -> list[int]:
    """The statuses of the next ``n`` responses (each with a Content-Length body)."""
    buf, statuses = b"", []
    while len(statuses) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {statuses}: {buf!r}"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        statuses.append(int(lines[0].split(" ")[1]))
        length = next(
            int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
            if k.lower() == "content-length"
        )  # fmt: skip
        while len(buf) < length:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
        buf = buf[length:]
    return statuses


def _count(server: EventtallyHTTPServer) -> float:
    c = Client(server)
    rows = c.results(query("all-events")).json()
    c.close()
    return float(sum(r["value"] for r in rows))


def test_large_bodies_in_pieces_with_pipelined_requests_between(
    server: EventtallyHTTPServer,
) -> None:
    """Bodies far larger than the receive buffer, cut at every awkward place (inside the head,
    right after it, mid-body, with the next request's head in the same segment as the last body
    byte) all arrive whole, and every pipelined request after them is answered."""
    big = json.dumps([EVENT] * 4000).encode()  # ~ 280 KB
    small = json.dumps([EVENT]).encode()
    stream = _post(big) + _post(small) + _post(big) + _post(small)
    cuts = [7, 60, len(_post(b"")) + len(big) - 3, 200_000]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        at = 0
        for cut in sorted(cuts):
            s.sendall(stream[at:cut])
            time.sleep(0.05)
            at = cut
        s.sendall(stream[at:])
        assert _responses(s, 4) == [200, 200, 200, 200]
    assert _count(server) == 2 * 4000 + 2


def test_body_in_one_send_with_the_next_head(server: EventtallyHTTPServer) -> None:
    """Two requests in one write: the first body is not read past, the second is answered."""
    body = json.dumps([EVENT] * 3).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(_post(body) + _post(body, extra="Connection: close\r\n"))
        assert _responses(s, 2) == [200, 200]
        assert s.recv(10) == b""  # closed after the second, as it asked
    assert _count(server) == 6


def test_a_body_cut_short_by_the_client_is_not_applied(server: EventtallyHTTPServer) -> None:
    body = json.dumps([EVENT] * 1000).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(_post(body)[: -len(body) // 2])
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""  # nothing to answer: the request never completed
    c = Client(server)
    assert c.ingest(json.dumps([EVENT]).encode()).status == 200
    c.close()
    assert _count(server) == 1


def test_reused_body_buffers_never_leak_an_earlier_body(server: EventtallyHTTPServer) -> None:
    """Body buffers are reused: a large body, then smaller ones into the same buffer, then a
    large one again, each answered and counted as itself (a stale tail of an earlier, longer
    body would make the JSON invalid or add its events)."""
    sizes = [3000, 10, 2999, 1, 3000, 400]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        for n in sizes:  # one at a time, so each body goes into a buffer given back before
            s.sendall(_post(json.dumps([EVENT] * n).encode()))
            assert _responses(s, 1) == [200]
        s.sendall(b"".join(_post(json.dumps([EVENT] * n).encode()) for n in sizes))
        assert _responses(s, len(sizes)) == [200] * len(sizes)
    assert _count(server) == 2 * sum(sizes)
    pool = server._bodies
    assert 0 < len(pool._free) <= pool.keep


def test_a_refused_body_leaves_no_buffer_in_use(server: EventtallyHTTPServer) -> None:
    """A body cut short gives its buffer back; the next request's body fills it anew."""
    big = json.dumps([EVENT] * 2000).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(_post(big)[: -len(big) // 3])
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(_post(json.dumps([EVENT] * 5).encode()))
        assert _responses(s, 1) == [200]
    assert _count(server) == 5


def test_admission_runs_on_the_loop_only_from_memory(
    server: EventtallyHTTPServer, tmp_path: Path
) -> None:
    """``admit_now`` decides only for a key verified before while nothing needs reloading; a
    key's first use, a commit by another process and the admin API go to a worker."""
    app = server.app
    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/{INGEST}",
        "HTTP_X_API_TOKEN": SEGMENT_KEY,
        "CONTENT_LENGTH": "10",
    }
    assert app.admit_now(dict(env)) is None  # first use: scrypt, never on the loop
    c = Client(server)
    assert c.ingest(json.dumps([EVENT]).encode()).status == 200  # verifies and caches the key
    c.close()
    adm = app.admit_now(dict(env))
    assert adm is not None and adm.pool == "ingest" and adm.refusal is None
    assert app.admit_now({**env, "HTTP_X_API_TOKEN": "unknown-key"}) is None  # scrypt or SQLite
    no_key = {k: v for k, v in env.items() if k != "HTTP_X_API_TOKEN"}
    adm = app.admit_now(no_key)
    assert adm is not None and adm.refusal is not None and adm.refusal[0] == 401
    assert app.admit_now({**env, "PATH_INFO": "/admin/orgs", "REQUEST_METHOD": "GET"}) is None
    other = MetadataStore(tmp_path / "data")
    try:
        Manager(other).create_org("late")  # another process commits: the snapshot is stale
    finally:
        other.close()
    assert app.admit_now(dict(env)) is None
    adm = app.admit(dict(env))  # the worker's path reloads
    assert adm.refusal is None
    assert app.admit_now(dict(env)) is not None  # and memory suffices again


def test_concurrent_first_uses_of_a_key_run_scrypt_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parallel first requests with one key (a client's batches after a restart) wait for one
    verification instead of each running scrypt; a wrong key is still refused."""
    from eventtally.server.metadata import store as metadata

    store = MetadataStore(tmp_path)
    try:
        m = Manager(store)
        m.create_org("o1")
        _, raw = m.create_key("o1", "k", ["WRITE"])
        calls: list[int] = []
        real = metadata._scrypt

        def counted(*args: object) -> bytes:
            calls.append(1)
            time.sleep(0.05)  # long enough for every thread to arrive meanwhile
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(metadata, "_scrypt", counted)
        barrier = threading.Barrier(8)
        found: list[object] = []

        def first_use() -> None:
            barrier.wait(10)
            found.append(store.authenticate(raw))

        threads = [threading.Thread(target=first_use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(found) == 8 and all(k is not None and k.org_id == "o1" for k in found)
        assert len(calls) == 1
        assert store.authenticate(raw[:-1] + ("a" if raw[-1] != "a" else "b")) is None
    finally:
        store.close()
