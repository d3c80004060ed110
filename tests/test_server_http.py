"""HTTP behaviour: keep-alive, ``Connection: close``, chunked bodies, 100-continue, shutdown."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventtally.server import EventtallyHTTPServer
from tests.server_support import (
    INGEST,
    SEGMENT_KEY,
    Client,
    fixture_bytes,
    plain_server,
    query,
    raw_exchange,
    running_server,
)

BODY = b'[{"type":"track","event":"A","receivedAt":"2024-05-14T10:00:00Z"}]'


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EventtallyHTTPServer]:
    with running_server(tmp_path) as srv:
        yield srv


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one response with a Content-Length body from ``sock``; return (head, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed early: {buf!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return head, rest[:length]


def _post(key: str = SEGMENT_KEY, body: bytes = BODY, extra: str = "") -> bytes:
    return (
        f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: {key}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(3)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_reuses_one_connection(server: EventtallyHTTPServer) -> None:
    """Several HTTP/1.1 requests travel over one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/api/v1/organization/ping", headers={"x-api-token": SEGMENT_KEY})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200 and resp.version == 11
    sock = conn.sock
    for _ in range(5):
        conn.request("POST", f"/{INGEST}", body=BODY, headers={"x-api-token": SEGMENT_KEY})
        resp = conn.getresponse()
        assert resp.read() == b"" and resp.status == 200
        assert resp.getheader("Connection") is None
    assert conn.sock is sock
    conn.close()


def test_connection_close_is_honoured(server: EventtallyHTTPServer) -> None:
    """``Connection: close`` gets ``Connection: close`` back and the socket closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(_post(extra="Connection: close\r\n"))
        head, body = _read_response(s)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b""
        assert b"Connection: close" in head
        assert _closed(s)


def test_http_10_client_gets_one_response_then_close(server: EventtallyHTTPServer) -> None:
    """An HTTP/1.0 request without keep-alive is answered and closed."""
    answer = raw_exchange(
        server.port,
        f"GET /api/v1/organization/ping HTTP/1.0\r\nx-api-token: {SEGMENT_KEY}\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_every_response_has_content_length(server: EventtallyHTTPServer) -> None:
    """200, 4xx and JSON answers all carry an exact Content-Length."""
    c = Client(server)
    for reply in (
        c.ingest(BODY),
        c.ingest(BODY, key="bad"),
        c.request("GET", "/nope/x"),
        c.results(query()),
        c.request("GET", "/healthz"),
    ):
        assert reply.header("Content-Length") == str(len(reply.body))
    c.close()


def test_chunked_request_body_is_accepted(server: EventtallyHTTPServer) -> None:
    """``Transfer-Encoding: chunked`` bodies are de-chunked; the connection stays usable."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        head = (
            f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: {SEGMENT_KEY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        half = len(BODY) // 2
        chunks = b"%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: y\r\n\r\n" % (
            half,
            BODY[:half],
            len(BODY) - half,
            BODY[half:],
        )
        s.sendall(head + chunks)
        head1, _ = _read_response(s)
        assert head1.startswith(b"HTTP/1.1 200 "), head1
        s.sendall(_post())
        head2, _ = _read_response(s)
        assert head2.startswith(b"HTTP/1.1 200 ")
    c = Client(server)
    assert sum(r["value"] for r in c.results(query("all-events")).json()) == 2
    c.close()


def test_malformed_chunked_body_is_400(server: EventtallyHTTPServer) -> None:
    """A broken chunk-size line is a 400 JSON error and the connection closes."""
    answer = raw_exchange(
        server.port,
        (
            f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: {SEGMENT_KEY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n"
        ).encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"application/json" in answer


def test_content_length_with_transfer_encoding_is_400(server: EventtallyHTTPServer) -> None:
    """Both framing headers at once (request smuggling shape) are refused."""
    answer = raw_exchange(
        server.port,
        (
            f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: {SEGMENT_KEY}\r\n"
            "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ).encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert "message" in json.loads(body)


def test_bad_request_line_is_json_400(server: EventtallyHTTPServer) -> None:
    """Protocol errors are JSON ``{"message"}`` too."""
    answer = raw_exchange(server.port, b"NONSENSE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]


def test_expect_100_continue_after_headers_pass(server: EventtallyHTTPServer) -> None:
    """With a good key the server sends 100 Continue, then takes the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            _post(body=b"", extra="Expect: 100-continue\r\n").replace(
                b"Content-Length: 0", f"Content-Length: {len(BODY)}".encode()
            )
        )
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(BODY)
        head, _ = _read_response(s)
        assert head.startswith(b"HTTP/1.1 200 ")


def test_expect_100_refused_request_never_asks_for_the_body(
    server: EventtallyHTTPServer,
) -> None:
    """A bad key with Expect: 100-continue gets 401 directly, and the connection closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            f"POST /{INGEST} HTTP/1.1\r\nHost: t\r\nx-api-token: bad\r\n"
            f"Content-Length: {len(BODY)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        head, body = _read_response(s)
        assert head.startswith(b"HTTP/1.1 401 ")
        assert b"Connection: close" in head
        assert json.loads(body)["message"] == "Invalid API Key"


def test_small_unread_body_is_drained_and_connection_reused(
    server: EventtallyHTTPServer,
) -> None:
    """A refused request with a small body leaves the keep-alive connection usable."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(_post(key="bad") + _post())
        head1, _ = _read_response(s)
        head2, _ = _read_response(s)
        assert head1.startswith(b"HTTP/1.1 401 ") and b"Connection: close" not in head1
        assert head2.startswith(b"HTTP/1.1 200 ")


def test_large_unread_body_closes_the_connection(server: EventtallyHTTPServer) -> None:
    """A refused request with a large body answers ``Connection: close`` (not drained)."""
    big = b"[" + b" " * 200_000 + b"]"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(_post(key="bad", body=big))
        head, _ = _read_response(s)
        assert head.startswith(b"HTTP/1.1 401 ") and b"Connection: close" in head
        assert _closed(s)


def test_healthz(server: EventtallyHTTPServer) -> None:
    """GET /healthz answers without a key."""
    c = Client(server, key=None)
    assert c.request("GET", "/healthz").json() == {"status": "ok"}
    c.close()


def test_binds_loopback_by_default(tmp_path: Path) -> None:
    """The default bind address is 127.0.0.1."""
    srv, _thread = plain_server(tmp_path)
    try:
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.close()


def test_close_is_graceful(tmp_path: Path) -> None:
    """close() returns promptly with idle keep-alive clients, saves state, refuses new work."""
    with running_server(tmp_path) as srv:
        idle = Client(srv)
        assert idle.ingest(fixture_bytes("request-body-batch.json")).status == 200
        started = time.monotonic()
        srv.close()
        assert time.monotonic() - started < 5
        assert (tmp_path / "data" / "state" / "acme.snapshot").is_file()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        idle.close()


def test_close_waits_for_in_flight_requests(tmp_path: Path) -> None:
    """A request that is being processed when close() starts still gets its answer."""
    with running_server(tmp_path) as srv:
        app = srv.app
        original = app.runtime.ingest
        entered = threading.Event()

        def slow_ingest(*args: object, **kwargs: object) -> object:
            entered.set()
            time.sleep(0.5)
            return original(*args, **kwargs)  # type: ignore[arg-type]

        app.runtime.ingest = slow_ingest  # type: ignore[method-assign]
        result: dict[str, int] = {}

        def post() -> None:
            c = Client(srv)
            result["status"] = c.ingest(BODY).status
            c.close()

        t = threading.Thread(target=post)
        t.start()
        assert entered.wait(5)
        srv.close()
        t.join(5)
        assert result.get("status") == 200
