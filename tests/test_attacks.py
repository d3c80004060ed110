"""Attacks on the HTTP front, on loopback: each bounded in time and count, none can hang.

Header floods get 431, slowloris heads 408, trickled bodies 408 while another organization's
ingests answer 200, connections past the cap 503, smuggling primitives 400 with nothing after
them run, and a ``%0a`` in a path cannot forge an access-log line.  Every socket has a timeout
and every server uses short deadlines (``SHORT``), so a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import pytest

from eventtally.server import EventtallyHTTPServer
from tests.server_support import (
    BETA_INGEST,
    BETA_KEY,
    INGEST,
    SEGMENT_KEY,
    Client,
    query,
    running_server,
)

pytestmark = pytest.mark.timeout(120)

BODY = b'[{"type":"track","event":"A","receivedAt":"2024-05-14T10:00:00Z"}]'
SHORT: dict[str, Any] = {
    "header_timeout": 1.0,
    "body_timeout": 4.0,
    "body_min_rate": 4096,
    "keepalive_timeout": 5.0,
    "rate_limit": 0,
}


def _connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


# Bytes received past the response being read: pipelined answers may share one recv(), and
# dropping them would leave the next read waiting for answers already consumed.
_PENDING: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (status, lower-cased headers, body) from ``sock``."""
    buf = _PENDING.pop(sock, b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    if len(rest) > length:
        _PENDING[sock] = rest[length:]
    return status, headers, rest[:length]


def _closed_after(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within its timeout."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _healthz(port: int) -> int:
    with _connect(port, 5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return _read_response(s)[0]


def _count(server: EventtallyHTTPServer) -> float:
    c = Client(server)
    try:
        r = c.results(query("all-events"))
        assert r.status == 200, r.body
        return sum(float(row["value"]) for row in r.json())
    finally:
        c.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EventtallyHTTPServer]:
    with running_server(tmp_path, SHORT) as srv:
        yield srv


def test_header_memory_flood_gets_431_and_the_server_still_answers(tmp_path: Path) -> None:
    """Many connections streaming big header lines: each gets 431 past 32 KiB, /healthz is 200."""
    with running_server(tmp_path, SHORT) as srv, ExitStack() as stack:
        socks = [stack.enter_context(_connect(srv.port)) for _ in range(40)]
        line = b"X-Pad: " + b"a" * 8000 + b"\r\n"
        for s in socks:
            s.sendall(b"POST /abc123 HTTP/1.1\r\nHost: t\r\n")
        for _ in range(5):  # 40 KB each: past max_header_bytes
            for s in socks:
                with suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(line)
        assert _healthz(srv.port) == 200
        statuses = []
        for s in socks:
            try:
                status, _, body = _read_response(s)
            except (ConnectionResetError, BrokenPipeError):
                continue  # the kernel may reset a connection whose input was still arriving
            statuses.append(status)
            assert b"too large" in body
        assert statuses and set(statuses) == {431}
        assert _healthz(srv.port) == 200


def test_slowloris_heads_get_408_at_the_header_deadline(server: EventtallyHTTPServer) -> None:
    """Heads trickled a byte at a time are cut at header_timeout, whatever they send."""
    with ExitStack() as stack:
        socks = [stack.enter_context(_connect(server.port)) for _ in range(30)]
        for s in socks:
            s.sendall(b"POST /abc123 HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        cut: set[int] = set()
        while len(cut) < len(socks) and time.monotonic() - started < 15:
            for i, s in enumerate(socks):
                if i in cut:
                    continue
                try:
                    s.sendall(b"X")
                except OSError:
                    cut.add(i)
            assert _healthz(server.port) == 200
            time.sleep(0.3)
            for i, s in enumerate(socks):
                if i not in cut:
                    s.settimeout(0.01)
                    try:
                        data = s.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        data = b""
                    assert not data or data.startswith(b"HTTP/1.1 408 "), data
                    cut.add(i)
        assert len(cut) == len(socks), "some slow heads were never cut"


def test_an_idle_connection_without_a_byte_is_closed(server: EventtallyHTTPServer) -> None:
    """A connection that sends nothing is closed after header_timeout, with no thread held."""
    with _connect(server.port, 10) as s:
        assert _closed_after(s)


def test_trickled_bodies_of_one_org_do_not_block_another(tmp_path: Path) -> None:
    """One org trickling uploads holds at most its share; the other org's ingests answer 200;
    the trickles end with 408."""
    settings = {**SHORT, "max_concurrent_requests": 8, "org_slot_share": 0.75}
    with running_server(tmp_path, settings) as srv, ExitStack() as stack:
        trickles = []
        for _ in range(8):
            s = stack.enter_context(_connect(srv.port))
            s.sendall(
                f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: {SEGMENT_KEY}\r\n"
                f"Content-Length: 100000\r\n\r\n[".encode()
            )
            trickles.append(s)
        deadline = time.monotonic() + 10
        while srv.app.slots.held_by("ingest", "acme") < 6:
            assert time.monotonic() < deadline, "the trickled uploads never took their slots"
            time.sleep(0.02)
        beta = Client(srv, key=BETA_KEY)
        try:
            for _ in range(10):
                assert beta.ingest(BODY, ingest=BETA_INGEST).status == 200
        finally:
            beta.close()
        statuses = []
        for s in trickles:
            s.settimeout(15)
            try:
                statuses.append(_read_response(s)[0])
            except (ConnectionResetError, BrokenPipeError):
                statuses.append(0)
        # ceil(8 x 0.75) = 6 slots for acme: two uploads were refused at once, six cut at 408.
        assert sorted(statuses) == [408] * 6 + [503] * 2
        assert srv.app.slots.in_flight == 0


def test_connection_cap_answers_503_and_frees_up(tmp_path: Path) -> None:
    """Past max_connections a new connection gets 503 and is closed; capacity comes back."""
    with running_server(tmp_path, {**SHORT, "max_connections": 10}) as srv, ExitStack() as stack:
        held = [stack.enter_context(_connect(srv.port)) for _ in range(10)]
        deadline = time.monotonic() + 10
        while srv.open_connections < 10:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with _connect(srv.port) as extra:
            status, headers, body = _read_response(extra)
            assert status == 503
            assert headers["retry-after"] == "1"
            assert "too many open connections" in json.loads(body)["message"]
            assert _closed_after(extra)
        for s in held:
            s.close()
        deadline = time.monotonic() + 10
        while srv.open_connections:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert _healthz(srv.port) == 200


SMUGGLED = f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: {SEGMENT_KEY}\r\n".encode()


def _smuggle(front: bytes) -> bytes:
    """``front`` headers, then a Content-Length body that holds a whole second ingest."""
    inner = SMUGGLED + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY
    return front + f"Content-Length: {len(inner)}\r\n\r\n".encode() + inner


@pytest.mark.parametrize(
    ("front", "words"),
    [
        (SMUGGLED + b"Transfer-Encoding : chunked\r\n", "Whitespace between"),
        (SMUGGLED + "X-Caf\u00e9: 1\r\n".encode(), "Invalid character"),
        (SMUGGLED + b"Transfer-Encoding: chunked\r\n", "Both Content-Length"),
        (SMUGGLED + b"Content-Length: 3\r\n", "More than one Content-Length"),
        (SMUGGLED + b"X-A: 1\r\n Transfer-Encoding: chunked\r\n", "obs-fold"),
        (SMUGGLED + b"X-A: 1\rTransfer-Encoding: chunked\r\n", "Bare CR"),
        (SMUGGLED + b"X-A: a\x00b\r\n", "Control character"),
        (SMUGGLED + b"Transfer-Encoding: chunked, identity\r\n", "Transfer-Encoding"),
    ],
)
def test_smuggling_primitives_are_400_and_nothing_after_them_runs(
    server: EventtallyHTTPServer, front: bytes, words: str
) -> None:
    """Each ambiguity is refused whole: 400, the connection closes, no event is counted."""
    with _connect(server.port) as s:
        s.sendall(_smuggle(front))
        status, _, body = _read_response(s)
        assert status == 400
        assert words in json.loads(body)["message"]
        assert _closed_after(s)
    assert _count(server) == 0
    c = Client(server)
    try:
        assert c.ingest(BODY).status == 200  # the server is fine for honest clients
    finally:
        c.close()
    assert _count(server) == 1


def test_pipelined_requests_still_work(server: EventtallyHTTPServer) -> None:
    """Three well-formed requests in one write get three answers, in order."""
    one = SMUGGLED + f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY
    with _connect(server.port) as s:
        s.sendall(one * 2 + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert [_read_response(s)[0] for _ in range(3)] == [200, 200, 200]
    assert _count(server) == 2


def test_control_characters_in_a_path_cannot_forge_log_lines(
    server: EventtallyHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``%0a``/``%0d`` in a path are escaped in the access log: one request, one line."""
    caplog.set_level(logging.INFO, logger="eventtally.server")
    with _connect(server.port) as s:
        s.sendall(
            b"GET /x%0a127.0.0.1%20%22GET%20/admin%22%20200%0d HTTP/1.1\r\nHost: t\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert _read_response(s)[0] == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "eventtally.server"]
    forged = [m for m in lines if "/x" in m]
    assert len(forged) == 1
    assert "\n" not in forged[0] and "\r" not in forged[0]
    assert "\\x0a" in forged[0]


def test_expect_continue_is_not_sent_to_a_refused_request(server: EventtallyHTTPServer) -> None:
    """A bad key is refused from its head: no 100 Continue, the body is never wanted."""
    with _connect(server.port) as s:
        s.sendall(
            f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: nope\r\n"
            f"Expect: 100-continue\r\nContent-Length: 500000\r\n\r\n".encode()
        )
        status, headers, _ = _read_response(s)
        assert status == 401
        assert headers.get("connection") == "close"


def test_many_idle_connections_hold_no_threads(tmp_path: Path) -> None:
    """Hundreds of open idle connections add no threads (they are coroutines)."""
    with (
        running_server(tmp_path, {**SHORT, "header_timeout": 30.0}) as server,
        ExitStack() as stack,
    ):
        before = threading.active_count()
        for _ in range(300):
            stack.enter_context(_connect(server.port))
        deadline = time.monotonic() + 10
        while server.open_connections < 300:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert threading.active_count() <= before + 1
        assert _healthz(server.port) == 200
