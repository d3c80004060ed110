"""The event-driven HTTP/1.1 front for the WSGI app: one ``asyncio`` loop, a small worker pool.

Connections are coroutines on one event loop (no thread each): an idle or slow connection costs
a few KiB.  The application (admission, parse, WAL append, apply) runs on ``worker_threads``
threads; probes and the dashboard's static files are answered on the loop itself, so they answer
while every worker is busy.

Guarantees:
- Input is bounded per connection: heads arrive through one receive buffer shared by the loop and
  a connection keeps only its unparsed bytes (reading pauses past ``max_header_bytes`` + 16 KiB);
  a ``Content-Length`` body is received into one buffer of exactly its size, never past its end.
  Body buffers are reused (:class:`_BodyBuffers`: at most ``2 × worker_threads`` kept, none over
  ``_POOL_MAX_BYTES``), so the loop neither zero-fills nor allocates a batch's buffer each time.
- Admission runs on the loop only when it needs neither scrypt nor SQLite
  (:meth:`EventtallyApp.admit_now`); otherwise on a worker.
- Heads are parsed strictly (``http11.py``); any violation answers 400 (414, 417, 505) as JSON
  ``{"message"}`` and closes the connection.  A head larger than ``max_header_bytes`` is 431; one
  not complete ``header_timeout`` seconds after its first byte is 408; both close.
- :meth:`EventtallyApp.admit` decides from the head alone (key, permission, ingest, rate limit,
  declared size): a refused request never has its body read and never makes a client that sent
  ``Expect: 100-continue`` send it.  An admitted request then takes a fair slot (``slots.py``; 503
  with ``Retry-After`` if none is free) and holds it while its body arrives and the app runs.
  The slot is released before the response is written, so a client that got its answer can
  always start the next request.
- A body must arrive within ``body_timeout`` and, after a 2-second grace, at ``body_min_rate``
  bytes/second at least; otherwise 408 and close, so a trickle cannot hold a slot.
- HTTP/1.1 keep-alive and pipelining; ``Connection: close`` or an HTTP/1.0 request without
  ``keep-alive`` closes after the response.  Every response has ``Content-Length`` and goes out
  in one write with ``TCP_NODELAY``.  A small unread body (≤ 64 KiB) is drained so the connection
  can be reused; otherwise the response says ``Connection: close``.
- At most ``max_connections`` connections are open; past it a connection gets 503 and is
  closed.  Idle keep-alive connections close after ``keepalive_timeout``.
- :meth:`EventtallyHTTPServer.close` stops accepting, lets in-flight requests finish (up to
  ``shutdown_grace``), closes idle connections, waits for the workers, then saves state.
- With ``tls_cert``/``tls_key`` the front speaks HTTPS only (stdlib ``ssl``, TLS 1.2 or newer).
- ``X-Forwarded-For`` names the client (``REMOTE_ADDR``) only when the peer is one of the
  ``trusted_proxies``; the rightmost address that is not a trusted proxy wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import io
import ipaddress
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from . import http11
from .app import ENV_FRONT, ENV_REFUSAL, ENV_STARTED, EventtallyApp, Response, log_safe
from .config import ServerConfig
from .slots import Pool
from .workers import Workers

__all__ = ["EventtallyHTTPServer", "serve_in_thread"]

log = logging.getLogger("eventtally.server")

DRAIN_LIMIT = 65536
LINGER_SECONDS = 2.0
#: A body may start slowly; the minimum rate applies after this many seconds.
BODY_RATE_GRACE = 2.0
#: Size of the loop's one receive buffer for heads and chunked bodies (shared by every
#: connection: the protocol copies what arrived out of it at once).
_HEAD_READ = 16384
#: Body buffers larger than this are not kept for reuse (the default ``max_body_bytes``).
_POOL_MAX_BYTES = 1 << 20


def _software() -> str:
    try:
        from importlib.metadata import version

        return f"eventtally/{version('eventtally')}"
    except Exception:
        return "eventtally"


SERVER_SOFTWARE = _software()
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class _Date:
    """The ``Date`` header value, formatted at most once a second."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.value = t, email.utils.formatdate(t, usegmt=True)
        return cls.value


class _Fail(Exception):
    """Answer ``status`` with ``message`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Closed(Exception):
    """The peer went away (or the server is stopping): nothing more to send."""


class _Held:
    """A slot released exactly once, by the worker (before the answer goes out) or on failure."""

    __slots__ = ("_lock", "org", "pool", "slots")

    def __init__(self, slots: Any, pool: Pool | None, org: str | None) -> None:
        self.slots, self.pool, self.org = slots, pool, org
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            pool, self.pool = self.pool, None
        if pool is not None:
            self.slots.release(pool, self.org)


class _BodyBuffers:
    """Body buffers for reuse, taken and given back on the loop thread only (so no lock).

    A fresh ``bytearray(n)`` is zero-filled and, at batch sizes, allocated anew each time: both
    on the loop, under the GIL.  A buffer is given back once its request is answered (the app
    copied the body out on its worker by then), and only the ``keep`` largest, each at most
    ``max_bytes``, are kept: memory held is bounded by ``keep × max_bytes``.
    """

    __slots__ = ("_free", "keep", "max_bytes")

    def __init__(self, keep: int, max_bytes: int) -> None:
        self.keep, self.max_bytes = keep, max_bytes
        self._free: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        """A buffer of at least ``size`` bytes (its content is stale: overwrite before use)."""
        free = self._free
        for i, buf in enumerate(free):
            if len(buf) >= size:
                return free.pop(i)
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        if len(buf) > self.max_bytes:
            return
        free = self._free
        if len(free) < self.keep:
            free.append(buf)
            return
        smallest = min(range(len(free)), key=lambda i: len(free[i]), default=None)
        if smallest is not None and len(free[smallest]) < len(buf):
            free[smallest] = buf


class _Conn(asyncio.BufferedProtocol):
    """One connection: a ``BufferedProtocol`` the transport reads into, and its serving task.

    Head bytes (and anything pipelined after a request) are received into the server's one
    scratch buffer and appended to :attr:`buf`, which stops growing (reading pauses) past
    ``high_water`` until the task consumes it.  A ``Content-Length`` body is received straight
    into one preallocated buffer of exactly its size (:meth:`expect_body`), never past its end,
    so pipelined bytes stay in the socket and the body is copied once, by the kernel.
    """

    __slots__ = (
        "_drain",
        "_into_target",
        "_paused_read",
        "_paused_write",
        "_waiter",
        "buf",
        "busy",
        "discard",
        "eof",
        "filled",
        "high_water",
        "lost",
        "peer",
        "scratch",
        "server",
        "target",
        "task",
        "transport",
    )

    def __init__(self, server: EventtallyHTTPServer) -> None:
        self.server = server
        self.scratch = server._scratch
        self.high_water = server.config.max_header_bytes + 4 + _HEAD_READ
        self.transport: Any = None
        self.buf = bytearray()
        self.busy = False
        self.peer = "-"
        self.target: memoryview | None = None
        self.filled = 0
        self.discard = False
        self.eof = False
        self.lost = False
        self.task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused_read = False
        self._paused_write = False
        self._drain: asyncio.Future[None] | None = None
        self._into_target = False

    # ---------------------------------------------------------------- protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "-"
        self.task = self.server._running_loop().create_task(self.server._handle(self))

    def get_buffer(self, sizehint: int) -> memoryview:
        # Never an empty buffer: a transport reads again before the task has ended the body,
        # and an empty buffer is an error (plain) or taken for close_notify (TLS).
        target = self.target
        if target is not None and self.filled < len(target):
            self._into_target = True
            return target[self.filled :]
        self._into_target = False
        return self.scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._into_target:
            assert self.target is not None
            self.filled += nbytes
            if self.filled >= len(self.target):
                self._wake()
            return
        if self.discard:
            return
        self.buf += self.scratch[:nbytes]
        if len(self.buf) >= self.high_water and not self._paused_read:
            self._paused_read = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Keep the write side open so the answer to a request sent before the FIN goes out
        # (a TLS transport ignores this and closes).
        return self.server.ssl_context is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._paused_write = True

    def resume_writing(self) -> None:
        self._paused_write = False
        d, self._drain = self._drain, None
        if d is not None and not d.done():
            d.set_result(None)

    def _wake(self) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    # ---------------------------------------------------------------- for the serving task

    async def wait(self, timeout: float | None) -> None:
        """Wait until more input (or EOF) arrives; ``TimeoutError`` after ``timeout`` seconds."""
        if self.eof:
            return
        if timeout is not None and timeout <= 0:
            raise TimeoutError
        if self._paused_read:
            self._paused_read = False
            self.transport.resume_reading()
        # The server's loop and one timer handle, not ``asyncio.timeout``: this runs several
        # times per request on the loop thread, and the context manager costs a ``Timeout``
        # object, a task lookup and ``get_running_loop`` calls (each a ``getpid`` system call on
        # Python 3.11) every time.
        loop = self.server._running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiter is waiter:
                self._waiter = None

    def expect_body(self, size: int, buffer: bytearray) -> memoryview:
        """Receive the next ``size`` bytes into ``buffer`` (at least that long; bytes already in
        :attr:`buf` first); :attr:`filled` counts them.  Returns the view of those ``size``
        bytes.  Call :meth:`end_body` when done or abandoned."""
        body = view = memoryview(buffer)[:size]
        n = min(size, len(self.buf))
        if n:
            view[:n] = self.buf[:n]
            del self.buf[:n]
        self.filled = n
        self.target = view if n < size else None
        return body

    def end_body(self) -> None:
        self.target = None

    def write(self, data: bytes) -> None:
        if self.lost or self.transport.is_closing():
            raise _Closed
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self.lost:
            raise _Closed
        if not self._paused_write:
            return
        d = self._drain = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await d
        except TimeoutError:
            raise _Closed from None
        if self.lost:
            raise _Closed


def _expire(waiter: asyncio.Future[None]) -> None:
    """A wait's deadline passed: its ``await`` raises ``TimeoutError`` (unless woken first)."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Input(io.RawIOBase):
    """``wsgi.input`` over a body received whole.  ``read`` copies out only what is asked, on
    the caller's thread (a worker), so the loop never copies a body."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = self._view[self._pos :]
        n = min(len(buffer), len(view))
        memoryview(buffer).cast("B")[:n] = view[:n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        end = (
            len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        )
        data = bytes(self._view[self._pos : end])
        self._pos = max(self._pos, end)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        rest = self._view[self._pos :]
        limit = len(rest) if size is None or size < 0 else min(size, len(rest))
        end = bytes(rest[:limit]).find(b"\n") + 1 or limit
        return self.read(end)


def _tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


LISTEN_BACKLOG = 1024


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, as :class:`EventtallyHTTPServer` binds it.

    A failure raises ``OSError`` (same ``errno``) whose message names the address, e.g.
    ``cannot listen on 127.0.0.1:8080: Address already in use``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        hint = (
            " (another process uses the port; stop it or choose another with --port)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        err = OSError(f"cannot listen on {where}: {exc.strerror or exc}{hint}")
        err.errno = exc.errno
        raise err from exc
    return sock


class EventtallyHTTPServer:
    """The server.  ``server.app`` is the WSGI app, ``server.port`` the bound port."""

    def __init__(
        self,
        address: tuple[str, int],
        app: EventtallyApp,
        *,
        keepalive_timeout: float | None = None,
        shutdown_grace: float | None = None,
        on_close: Callable[[], None] | None = None,
        config: ServerConfig | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        """``listener``: a socket :func:`listen_socket` already bound and listening, so a port
        clash is found before anything (the data directory) is created; else bind here."""
        cfg = config or app.config
        self.app = app
        self.config = cfg
        self.keepalive_timeout = (
            cfg.keepalive_timeout if keepalive_timeout is None else keepalive_timeout
        )
        self.shutdown_grace = cfg.shutdown_grace if shutdown_grace is None else shutdown_grace
        self.ssl_context = _tls_context(cfg)
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in cfg.trusted_proxies]
        self._on_close = on_close
        sock = listener if listener is not None else listen_socket(*address)
        sock.setblocking(False)
        self.socket = sock
        self.server_address: tuple[Any, ...] = sock.getsockname()
        self.server_name = str(self.server_address[0])
        self._workers = Workers(cfg.worker_threads, "eventtally-worker")
        # Every connection receives heads here first (on the loop thread, one at a time).
        self._scratch = memoryview(bytearray(_HEAD_READ))
        self._bodies = _BodyBuffers(2 * cfg.worker_threads, _POOL_MAX_BYTES)
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self.draining = False
        self._ready = threading.Event()
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this server runs on, for code on it: ``asyncio.get_running_loop()`` is a
        ``getpid`` system call on Python 3.11, and the request path asks several times."""
        return self._loop or asyncio.get_running_loop()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        host = self.server_name
        return (
            f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"
        )

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`close` (``poll_interval`` is accepted for compatibility)."""
        with self._lock:
            if self._closed or self._started:
                return
            self._started = True
        try:
            asyncio.run(self._serve())
        finally:
            self._ready.set()
            self._done.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await self._loop.create_server(
            lambda: _Conn(self),
            sock=self.socket,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.config.header_timeout if self.ssl_context else None,
        )
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()  # stop accepting; open connections stay
            deadline = time.monotonic() + self.shutdown_grace
            while any(c.busy for c in self._conns) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            for c in list(self._conns):
                c.transport.abort()
            await asyncio.sleep(0)

    def close(self) -> None:
        """Graceful stop: no new connections, finish in-flight requests, save state."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        self.draining = True
        if started:
            self._ready.wait(10)
            loop, stop = self._loop, self._stop
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(stop.set)
            self._done.wait(self.shutdown_grace + 10)
        self.socket.close()
        self._workers.shutdown()
        if self._on_close is not None:
            self._on_close()

    # ------------------------------------------------------------------ connections

    async def _handle(self, conn: _Conn) -> None:
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self._conns) >= self.config.max_connections or self.draining:
            await self._refuse_connection(conn)
            return
        self._conns.add(conn)
        try:
            await self._serve_connection(conn)
        except (_Closed, ConnectionError, OSError, ssl.SSLError):
            pass
        except Exception:
            log.exception("error on a connection from %s", conn.peer)
        finally:
            self._conns.discard(conn)
            conn.end_body()
            conn.transport.close()

    async def _refuse_connection(self, conn: _Conn) -> None:
        self.app.m_requests.inc("connection", "503")
        log.warning("refused a connection from %s: max_connections reached", conn.peer)
        body = b'{"message":"Server busy: too many open connections; retry later"}'
        with contextlib.suppress(Exception):
            await self._send(conn, 503, [("Content-Type", "application/json"),
                                         ("Retry-After", "1")], body, close=True)  # fmt: skip
            await self._linger(conn, 0.5)
        conn.transport.abort()

    async def _serve_connection(self, conn: _Conn) -> None:
        first = True
        while not self.draining:
            block = await self._read_head(conn, first)
            if block is None:
                return
            first = False
            started = time.perf_counter()
            try:
                head = http11.parse_head(block)
            except http11.ProtocolError as exc:
                await self._protocol_error(conn, exc.status, exc.message, block)
                return
            conn.busy = True
            try:
                keep = await self._request(conn, head, started)
            finally:
                conn.busy = False
            if not keep:
                return

    async def _read_head(self, conn: _Conn, first: bool) -> bytes | None:
        """The next request head (without its empty line), or ``None`` to close quietly."""
        buf = conn.buf
        cfg = self.config
        if not buf:
            idle = cfg.header_timeout if first else (self.keepalive_timeout or None)
            try:
                await conn.wait(idle)
            except TimeoutError:
                return None
            if not buf:
                return None  # EOF
        deadline = time.monotonic() + cfg.header_timeout
        limit = cfg.max_header_bytes
        while True:
            end = buf.find(b"\r\n\r\n", 0, limit + 4)
            if end >= 0:
                block = bytes(buf[:end])
                del buf[: end + 4]
                return block
            if len(buf) >= limit + 4:
                status = 431 if buf.find(b"\r\n", 0, 8192) >= 0 or len(buf) < 8192 else 414
                msg = (
                    f"Request header fields too large (more than {limit} bytes)"
                    if status == 431
                    else "Request line too long"
                )
                await self._protocol_error(conn, status, msg, bytes(buf[:200]))
                return None
            if conn.eof:
                return None
            size = len(buf)
            try:
                await conn.wait(deadline - time.monotonic())
            except TimeoutError:
                await self._protocol_error(
                    conn, 408, "Timed out waiting for the request headers", bytes(buf[:200])
                )
                return None
            if len(buf) == size and conn.eof:
                return None

    async def _protocol_error(self, conn: _Conn, status: int, message: str, head: bytes) -> None:
        line = head.split(b"\r\n", 1)[0][:200].decode("latin-1")
        self.app.m_requests.inc("protocol", str(status))
        log.info('%s "%s" %d (%s)', conn.peer, log_safe(line), status, message)
        body = json.dumps({"message": message}).encode()
        with contextlib.suppress(Exception):
            await self._send(conn, status, [("Content-Type", "application/json")], body, close=True)
            await self._linger(conn, LINGER_SECONDS)

    # ------------------------------------------------------------------ one request

    def _environ(self, conn: _Conn, head: http11.RequestHead, started: float) -> dict[str, Any]:
        target = head.target
        if not target.startswith("/") and "://" in target:  # absolute-form (RFC 9112 3.2.2)
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        env: dict[str, Any] = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "iso-8859-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.server_name,
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": head.version,
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "REMOTE_ADDR": conn.peer,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.ssl_context is not None else "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.input": io.BytesIO(b""),
            ENV_FRONT: True,
            ENV_STARTED: started,
        }
        for name, value in head.headers:
            if "_" in name:
                continue  # x_api_token must not pass for x-api-token (as wsgiref does)
            if name == "content-type":
                env["CONTENT_TYPE"] = value
                continue
            if name in ("content-length", "transfer-encoding"):
                continue  # framing is the front's; the app sees the decoded length
            key = "HTTP_" + name.upper().replace("-", "_")
            env[key] = f"{env[key]},{value}" if key in env else value
        if head.has_body:
            env["CONTENT_LENGTH"] = str(head.content_length or 0)
        elif head.content_length == 0:
            env["CONTENT_LENGTH"] = "0"
        if self._trusted and "HTTP_X_FORWARDED_FOR" in env:
            env["REMOTE_ADDR"] = self._client_address(conn.peer, env["HTTP_X_FORWARDED_FOR"])
        return env

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def _client_address(self, peer: str, forwarded: str) -> str:
        if not self._is_trusted(peer):
            return peer
        client = peer
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # not an address: stop trusting the chain here
            client = hop
            if not self._is_trusted(hop):
                break
        return client

    async def _request(self, conn: _Conn, head: http11.RequestHead, started: float) -> bool:
        """Serve one request; whether the connection may carry another."""
        app = self.app
        env = self._environ(conn, head, started)
        pool = app.pool_of(env)
        held = _Held(app.slots, None, None)
        body_done = not head.has_body
        buffer: bytearray | None = None  # the body's pooled buffer, reused once the app is done
        try:
            if pool is not None:
                # A known key is admitted here on the loop; a first use (scrypt) or a reload
                # (SQLite) runs on a worker.
                adm = app.admit_now(env)
                if adm is None:
                    adm = await self._workers.run_on(self._running_loop(), app.admit, env)
                if adm.refusal is not None:
                    env[ENV_REFUSAL] = adm.refusal
                elif adm.pool is not None and not app.slots.try_acquire(adm.pool, adm.org):
                    env[ENV_REFUSAL] = app.busy()
                else:
                    held = _Held(app.slots, adm.pool, adm.org)
            if not body_done and ENV_REFUSAL not in env:
                if head.expect_continue:
                    conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                try:
                    body, buffer = await self._read_body(conn, head)
                except _Fail as exc:
                    held.release()
                    env[ENV_REFUSAL] = _error(exc.status, exc.message)
                    await self._answer(conn, head, env, held, close=True)
                    return False
                env["wsgi.input"] = _Input(body)
                env["CONTENT_LENGTH"] = str(len(body))
                body_done = True
            elif not body_done and self._may_drain(head):
                body_done = await self._drain(conn, head)
            close = not head.keep_alive or not body_done or self.draining
            await self._answer(
                conn, head, env, held, close=close, inline=pool is None, reuse=buffer
            )
            if close and not body_done:
                await self._linger(conn, LINGER_SECONDS)
            return not close
        finally:
            held.release()

    def _may_drain(self, head: http11.RequestHead) -> bool:
        return (
            not head.chunked
            and not head.expect_continue
            and (head.content_length or 0) <= DRAIN_LIMIT
        )

    async def _drain(self, conn: _Conn, head: http11.RequestHead) -> bool:
        try:
            _, buffer = await self._read_body(conn, head)
        except (_Fail, _Closed):
            return False
        if buffer is not None:
            self._bodies.give(buffer)
        return True

    async def _read_body(
        self, conn: _Conn, head: http11.RequestHead
    ) -> tuple[bytes | memoryview, bytearray | None]:
        """The body, and the pooled buffer under it (``None`` for a chunked body): give it
        back (:class:`_BodyBuffers`) only once nothing reads the body any more."""
        cfg = self.config
        limit = cfg.max_body_bytes
        too_large = _Fail(
            400, f"Body larger than the maximum payload ({limit} bytes); send smaller batches"
        )
        if not head.chunked:
            want = head.content_length or 0
            if want > limit:
                raise too_large
            buffer = self._bodies.take(want)
            body = conn.expect_body(want, buffer)
            try:
                await self._await_body(conn, lambda: conn.filled >= want, lambda: conn.filled)
            except BaseException:
                conn.end_body()
                self._bodies.give(buffer)  # nothing received into it will be read
                raise
            conn.end_body()
            return body, buffer
        buf = conn.buf
        decoder = http11.ChunkedDecoder()
        parts: list[bytes] = []
        total = 0
        received = [len(buf)]

        def complete() -> bool:
            nonlocal total
            try:
                piece = decoder.decode(buf)
            except http11.ProtocolError as exc:
                raise _Fail(400, f"Invalid request body: {exc.message}") from None
            total += len(piece)
            parts.append(piece)
            if total > limit:
                raise too_large
            if decoder.done:
                return True
            if len(buf) > http11.MAX_CHUNK_LINE + http11.MAX_TRAILER_BYTES:
                raise _Fail(400, "Invalid request body: malformed chunked framing")
            return False

        def arrived() -> int:
            return received[0]

        await self._await_body(conn, complete, arrived, received)
        return b"".join(parts), None

    async def _await_body(
        self,
        conn: _Conn,
        complete: Callable[[], bool],
        arrived: Callable[[], int],
        counter: list[int] | None = None,
    ) -> None:
        """Wait until ``complete()``, within ``body_timeout`` and above ``body_min_rate``
        (``arrived()``: body bytes received so far); 408 otherwise, ``_Closed`` on EOF."""
        cfg = self.config
        start = time.monotonic()
        deadline = start + cfg.body_timeout
        while not complete():
            now = time.monotonic()
            elapsed = now - start
            if (
                cfg.body_min_rate
                and elapsed > BODY_RATE_GRACE
                and arrived() < cfg.body_min_rate * (elapsed - BODY_RATE_GRACE)
            ):
                raise _Fail(408, "Request body too slow (under body_min_rate); send it faster")
            if conn.eof:
                raise _Closed
            wait = deadline - now
            if cfg.body_min_rate:
                wait = min(wait, 0.5)  # wake up to check the rate even when nothing arrives
            size = len(conn.buf)
            try:
                await conn.wait(wait)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise _Fail(408, "Timed out reading the request body") from None
            if counter is not None:
                counter[0] += len(conn.buf) - size

    def _run_app(self, env: dict[str, Any], held: _Held) -> Response:
        """Call the WSGI app (on a worker, or inline for probes); release the slot at once."""
        out: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            out["status"] = int(status.split(" ", 1)[0])
            out["headers"] = headers
            return lambda data: None

        try:
            # Kept as the app's chunks: a large Metrics API answer is written chunk by chunk,
            # never joined into one more copy of itself.
            body = list(self.app(env, start_response))
        finally:
            held.release()
        return out["status"], out["headers"], body

    async def _answer(
        self,
        conn: _Conn,
        head: http11.RequestHead,
        env: dict[str, Any],
        held: _Held,
        *,
        close: bool,
        inline: bool = False,
        reuse: bytearray | None = None,
    ) -> None:
        """Run the app and send its answer; ``reuse``: the body's pooled buffer, given back
        once the app has returned (not if this task is cancelled while a worker may still read
        it)."""
        if inline:
            status, headers, body = self._run_app(env, held)
        else:
            status, headers, body = await self._workers.run_on(
                self._running_loop(), self._run_app, env, held
            )
        if reuse is not None:
            self._bodies.give(reuse)
        if head.method == "HEAD":
            body = []
        extra = [] if close or head.version != "HTTP/1.0" else [("Connection", "keep-alive")]
        await self._send(conn, status, headers + extra, body, close=close, has_length=True)

    async def _send(
        self,
        conn: _Conn,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes | list[bytes],
        *,
        close: bool,
        has_length: bool = False,
    ) -> None:
        chunks = [body] if isinstance(body, bytes) else body
        lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if not has_length:
            lines.append(f"Content-Length: {sum(map(len, chunks))}")
        lines.append(f"Date: {_Date.now()}")
        lines.append(f"Server: {SERVER_SOFTWARE}")
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write for the usual small answer (TCP_NODELAY: one segment, no Nagle wait); a
        # chunked answer is written a chunk at a time, draining between, so the transport's
        # buffer holds about one chunk, not the whole answer again.
        pieces = [head + b"".join(chunks)] if len(chunks) <= 1 else [head, *chunks]
        for piece in pieces:
            conn.write(piece)
            await conn.drain(self.config.body_timeout)

    async def _linger(self, conn: _Conn, seconds: float) -> None:
        """Close after refusing a request whose body may still be arriving.

        Closing with unread input makes the kernel send RST, which can destroy the response
        before the client reads it.  So: send FIN, discard input for a bounded moment, close.
        """
        transport = conn.transport
        conn.end_body()
        conn.discard = True
        conn.buf.clear()
        with contextlib.suppress(Exception):
            if transport.can_write_eof():
                transport.write_eof()
            end = time.monotonic() + seconds
            while not self.draining and not conn.eof and (left := end - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await conn.wait(min(left, 0.25))
        transport.close()


def _error(status: int, message: str) -> Response:
    return status, [("Content-Type", "application/json")], json.dumps({"message": message}).encode()


def serve_in_thread(server: EventtallyHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread and return the thread."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=f"eventtally-http-{server.port}",
        daemon=True,
    )
    thread.start()
    return thread
