"""The event-driven HTTP/1.1 front for the WSGI app: one ``asyncio`` loop, a small worker pool.

Connections are coroutines on one event loop (no thread each): an idle or slow connection costs
a few KiB.  The application (admission, parse, WAL append, apply) runs on ``worker_threads``
threads; probes and the dashboard's static files are answered on the loop itself, so they answer
while every worker is busy.

Guarantees:
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
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from . import http11
from .app import ENV_FRONT, ENV_REFUSAL, ENV_STARTED, EventtallyApp, Response, log_safe
from .config import ServerConfig
from .slots import Pool

__all__ = ["EventtallyHTTPServer", "serve_in_thread"]

log = logging.getLogger("eventtally.server")

DRAIN_LIMIT = 65536
LINGER_SECONDS = 2.0
#: A body may start slowly; the minimum rate applies after this many seconds.
BODY_RATE_GRACE = 2.0
_READ = 65536
_BODY_READ = 1 << 20
_HEAD_READ = 16384
_STREAM_LIMIT = 32768  # asyncio pauses a connection's reads past twice this in its buffer


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


class _Conn:
    __slots__ = ("buf", "busy", "peer", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.busy = False
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "-"


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
        self._executor = ThreadPoolExecutor(cfg.worker_threads, "eventtally-worker")
        self._conns: set[_Conn] = set()
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self.draining = False
        self._ready = threading.Event()
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

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
        server = await asyncio.start_server(
            self._handle,
            sock=self.socket,
            limit=_STREAM_LIMIT,
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
                c.writer.transport.abort()
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
        self._executor.shutdown(wait=True)
        if self._on_close is not None:
            self._on_close()

    # ------------------------------------------------------------------ connections

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self._conns) >= self.config.max_connections or self.draining:
            await self._refuse_connection(conn)
            return
        self._conns.add(conn)
        try:
            await self._serve_connection(conn)
        except (_Closed, ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("error on a connection from %s", conn.peer)
        finally:
            self._conns.discard(conn)
            writer.close()

    async def _refuse_connection(self, conn: _Conn) -> None:
        self.app.m_requests.inc("connection", "503")
        log.warning("refused a connection from %s: max_connections reached", conn.peer)
        body = b'{"message":"Server busy: too many open connections; retry later"}'
        with contextlib.suppress(Exception):
            await self._send(conn, 503, [("Content-Type", "application/json"),
                                         ("Retry-After", "1")], body, close=True)  # fmt: skip
            await self._linger(conn, 0.5)
        conn.writer.transport.abort()

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

    async def _read(self, conn: _Conn, n: int, timeout: float | None) -> bytes:
        if timeout is not None and timeout <= 0:
            raise TimeoutError
        async with asyncio.timeout(timeout):
            data = await conn.reader.read(n)
        return data

    async def _read_head(self, conn: _Conn, first: bool) -> bytes | None:
        """The next request head (without its empty line), or ``None`` to close quietly."""
        buf = conn.buf
        cfg = self.config
        if not buf:
            idle = cfg.header_timeout if first else (self.keepalive_timeout or None)
            try:
                data = await self._read(conn, _HEAD_READ, idle)
            except TimeoutError:
                return None
            if not data:
                return None
            buf += data
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
            try:
                data = await self._read(conn, _HEAD_READ, deadline - time.monotonic())
            except TimeoutError:
                await self._protocol_error(
                    conn, 408, "Timed out waiting for the request headers", bytes(buf[:200])
                )
                return None
            if not data:
                return None
            buf += data

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
        loop = asyncio.get_running_loop()
        env = self._environ(conn, head, started)
        pool = app.pool_of(env)
        held = _Held(app.slots, None, None)
        body_done = not head.has_body
        try:
            if pool is not None:
                adm = await loop.run_in_executor(self._executor, app.admit, env)
                if adm.refusal is not None:
                    env[ENV_REFUSAL] = adm.refusal
                elif adm.pool is not None and not app.slots.try_acquire(adm.pool, adm.org):
                    env[ENV_REFUSAL] = app.busy()
                else:
                    held = _Held(app.slots, adm.pool, adm.org)
            if not body_done and ENV_REFUSAL not in env:
                if head.expect_continue:
                    conn.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                try:
                    body = await self._read_body(conn, head)
                except _Fail as exc:
                    held.release()
                    env[ENV_REFUSAL] = _error(exc.status, exc.message)
                    await self._answer(conn, head, env, held, close=True)
                    return False
                env["wsgi.input"] = io.BytesIO(body)
                env["CONTENT_LENGTH"] = str(len(body))
                body_done = True
            elif not body_done and self._may_drain(head):
                body_done = await self._drain(conn, head)
            close = not head.keep_alive or not body_done or self.draining
            await self._answer(conn, head, env, held, close=close, inline=pool is None)
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
            await self._read_body(conn, head)
        except (_Fail, _Closed):
            return False
        return True

    async def _read_body(self, conn: _Conn, head: http11.RequestHead) -> bytes:
        cfg = self.config
        limit = cfg.max_body_bytes
        too_large = _Fail(
            400, f"Body larger than the maximum payload ({limit} bytes); send smaller batches"
        )
        buf = conn.buf
        start = time.monotonic()
        deadline = start + cfg.body_timeout
        received = 0
        parts: list[bytes] = []
        decoder = http11.ChunkedDecoder() if head.chunked else None
        want = head.content_length or 0
        if decoder is None and want > limit:
            raise too_large
        total = 0
        if decoder is None and buf:
            n = min(want, len(buf))
            parts.append(bytes(buf[:n]))
            del buf[:n]
            total = n
        while True:
            if decoder is None:
                if total == want:
                    return b"".join(parts)
            else:
                try:
                    piece = decoder.decode(buf)
                except http11.ProtocolError as exc:
                    raise _Fail(400, f"Invalid request body: {exc.message}") from None
                total += len(piece)
                parts.append(piece)
                if total > limit:
                    raise too_large
                if decoder.done:
                    return b"".join(parts)
                if len(buf) > http11.MAX_CHUNK_LINE + http11.MAX_TRAILER_BYTES:
                    raise _Fail(400, "Invalid request body: malformed chunked framing")
            now = time.monotonic()
            elapsed = now - start
            if (
                cfg.body_min_rate
                and elapsed > BODY_RATE_GRACE
                and received < cfg.body_min_rate * (elapsed - BODY_RATE_GRACE)
            ):
                raise _Fail(408, "Request body too slow (under body_min_rate); send it faster")
            wait = deadline - now
            if cfg.body_min_rate:
                wait = min(wait, 0.5)  # wake up to check the rate even when nothing arrives
            try:
                # Content-Length bodies go straight to `parts` (no copy through `buf`); a read
                # never asks past the body, so pipelined bytes stay in the stream.
                size = _READ if decoder is not None else min(_BODY_READ, want - total)
                data = await self._read(conn, size, wait)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise _Fail(408, "Timed out reading the request body") from None
                continue
            if not data:
                raise _Closed
            received += len(data)
            if decoder is None:
                parts.append(data)
                total += len(data)
            else:
                buf += data

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
    ) -> None:
        if inline:
            status, headers, body = self._run_app(env, held)
        else:
            loop = asyncio.get_running_loop()
            status, headers, body = await loop.run_in_executor(
                self._executor, self._run_app, env, held
            )
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
        w = conn.writer
        if w.transport.is_closing():
            raise _Closed
        # One write for the usual small answer (TCP_NODELAY: one segment, no Nagle wait); a
        # chunked answer is written a chunk at a time, draining between, so the transport's
        # buffer holds about one chunk, not the whole answer again.
        pieces = [head + b"".join(chunks)] if len(chunks) <= 1 else [head, *chunks]
        try:
            for piece in pieces:
                w.write(piece)
                async with asyncio.timeout(self.config.body_timeout):
                    await w.drain()
        except TimeoutError:
            raise _Closed from None

    async def _linger(self, conn: _Conn, seconds: float) -> None:
        """Close after refusing a request whose body may still be arriving.

        Closing with unread input makes the kernel send RST, which can destroy the response
        before the client reads it.  So: send FIN, discard input for a bounded moment, close.
        """
        w = conn.writer
        with contextlib.suppress(Exception):
            if w.can_write_eof():
                w.write_eof()
            end = time.monotonic() + seconds
            while not self.draining and (left := end - time.monotonic()) > 0:
                try:
                    data = await self._read(conn, _READ, min(left, 0.25))
                except TimeoutError:
                    continue
                if not data:
                    break
        w.close()


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
