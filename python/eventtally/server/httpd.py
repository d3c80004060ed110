"""A threaded HTTP/1.1 server for the WSGI app, on stdlib ``wsgiref`` (STYLE.md habit 13).

``wsgiref`` alone speaks HTTP/1.0 and closes after every response; this module adds:

Guarantees:
- HTTP/1.1 keep-alive, and ``Connection: close`` (or an HTTP/1.0 client) closes after the
  response.  Every response carries ``Content-Length`` and goes out in one ``send`` with
  ``TCP_NODELAY``, so keep-alive clients never wait on Nagle/delayed-ACK.
- ``wsgi.input`` yields exactly the request body and then EOF (``wsgi.input_terminated``):
  ``Content-Length`` bodies and ``Transfer-Encoding: chunked`` bodies alike.  Both headers at
  once, several differing lengths, or another transfer coding are refused with 400.
- ``Expect: 100-continue`` is answered only when the application starts reading the body, so a
  request refused from its headers alone (401/403/404/429/400) never makes the client send it.
- A body the application did not read is drained when small (≤ 64 KiB) so the connection can be
  reused; otherwise the response says ``Connection: close`` and the connection is closed.
- Idle connections time out after ``keepalive_timeout`` seconds.  :meth:`EventtallyHTTPServer.close`
  stops accepting, lets in-flight requests finish (up to ``shutdown_grace``), closes idle
  connections, then saves every organization's state.
- Protocol errors are answered as JSON ``{"message"}`` like every other error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import IO, Any, cast
from wsgiref.handlers import SimpleHandler
from wsgiref.headers import Headers
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .app import EventtallyApp

__all__ = ["EventtallyHTTPServer", "serve_in_thread"]

log = logging.getLogger("eventtally.server")

DRAIN_LIMIT = 65536
LINGER_SECONDS = 2.0
_MAX_LINE = 65536


def _software() -> str:
    try:
        from importlib.metadata import version

        return f"eventtally/{version('eventtally')}"
    except Exception:
        return "eventtally"


SERVER_SOFTWARE = _software()


class BodyError(ValueError):
    """The request body is malformed at the HTTP level (bad chunked encoding, early EOF)."""


class _BodyReader:
    """``wsgi.input``: the request body only, de-chunked, then EOF."""

    def __init__(
        self,
        rfile: IO[bytes],
        length: int | None,
        chunked: bool,
        send_continue: Callable[[], None] | None,
    ) -> None:
        self._rfile = rfile
        self._remaining = 0 if length is None else length
        self.chunked = chunked
        self._chunk_left = 0
        self._eof = not chunked and not self._remaining
        self._send_continue = send_continue
        self.broken = False

    @property
    def expect_pending(self) -> bool:
        return self._send_continue is not None

    @property
    def finished(self) -> bool:
        return self._eof

    @property
    def remaining(self) -> int:
        return self._remaining

    def _continue(self) -> None:
        if self._send_continue is not None:
            send, self._send_continue = self._send_continue, None
            send()

    def _next_chunk(self) -> None:
        line = self._rfile.readline(_MAX_LINE + 1)
        if not line.endswith(b"\n") or len(line) > _MAX_LINE:
            raise BodyError("malformed chunked body: bad chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BodyError("malformed chunked body: bad chunk size") from None
        if size < 0 or not size_text.isalnum():
            raise BodyError("malformed chunked body: bad chunk size")
        if size == 0:
            while True:  # trailer section, ends with an empty line
                trailer = self._rfile.readline(_MAX_LINE + 1)
                if not trailer:
                    raise BodyError("malformed chunked body: missing final CRLF")
                if trailer in (b"\r\n", b"\n"):
                    break
            self._eof = True
        self._chunk_left = size

    def read(self, size: int | None = -1) -> bytes:
        if self._eof:
            return b""
        self._continue()
        try:
            return self._read(size)
        except (BodyError, OSError):
            self.broken = True
            raise

    def _read(self, size: int | None) -> bytes:
        if not self.chunked:
            n = self._remaining if size is None or size < 0 else min(size, self._remaining)
            data = self._rfile.read(n)
            self._remaining -= len(data)
            if len(data) < n:
                raise BodyError("connection closed before the whole body arrived")
            if not self._remaining:
                self._eof = True
            return data
        parts: list[bytes] = []
        want = -1 if size is None or size < 0 else size
        while not self._eof and want != 0:
            if not self._chunk_left:
                self._next_chunk()
                if self._eof:
                    break
            n = self._chunk_left if want < 0 else min(want, self._chunk_left)
            data = self._rfile.read(n)
            if len(data) < n:
                raise BodyError("connection closed before the whole body arrived")
            parts.append(data)
            self._chunk_left -= n
            if want > 0:
                want -= n
            if not self._chunk_left and self._rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BodyError("malformed chunked body: missing CRLF after a chunk")
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        # Rarely used by WSGI apps; byte-wise is simple and correct.
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            b = self.read(1)
            if not b:
                break
            out += b
            if b == b"\n":
                break
        return bytes(out)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def drain(self) -> bool:
        """Discard a small unread ``Content-Length`` body; False if the connection must close."""
        if self._eof:
            return True
        if self.chunked or self.expect_pending or self._remaining > DRAIN_LIMIT or self.broken:
            return False
        try:
            self.read()
        except (BodyError, OSError):
            return False
        return True


class _ServerHandler(SimpleHandler):
    """wsgiref's handler, speaking HTTP/1.1 and buffering each response into one send."""

    headers: Headers  # set by start_response (declared for the type checker)
    http_version = "1.1"
    server_software = SERVER_SOFTWARE
    os_environ: dict[str, str] = {}  # noqa: RUF012 - don't copy the process env into requests
    error_status = "500 Internal Server Error"
    error_headers = [("Content-Type", "application/json")]  # noqa: RUF012
    error_body = b'{"message":"Internal server error"}'

    def __init__(
        self, request_handler: _RequestHandler, reader: _BodyReader, environ: dict[str, Any]
    ) -> None:
        super().__init__(
            cast(IO[bytes], reader),
            cast(IO[bytes], request_handler.wfile),
            sys.stderr,
            environ,
            multithread=True,
            multiprocess=False,
        )
        self.request_handler = request_handler
        self.reader = reader
        self._out: list[bytes] = []

    def _write(self, data: bytes) -> None:
        self._out.append(data)

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.stdout.write(data)

    def flush_all(self) -> None:
        self._flush()

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        assert self.headers is not None
        if "Content-Length" not in self.headers:
            # Only reached for multi-chunk iterables, which this app never returns; without a
            # length the only honest framing is to close after the body.
            self.request_handler.close_connection = True
        if self.request_handler.decide_close(self.reader):
            self.headers["Connection"] = "close"
        elif self.request_handler.request_version == "HTTP/1.0":
            self.headers["Connection"] = "keep-alive"

    def log_exception(self, exc_info: Any) -> None:
        log.error("error in the WSGI application", exc_info=exc_info)

    def close(self) -> None:
        SimpleHandler.close(self)


class _RequestHandler(WSGIRequestHandler):
    """One connection: any number of requests while keep-alive holds."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: EventtallyHTTPServer

    def setup(self) -> None:
        super().setup()
        # Idle keep-alive connections and stalled requests time out.
        self.connection.settimeout(self.server.keepalive_timeout or None)
        self.server.track(self.connection, busy=False)

    _linger = False

    def finish(self) -> None:
        try:
            super().finish()
            if self._linger:
                self._lingering_close()
        finally:
            self.server.untrack(self.connection)

    def _lingering_close(self) -> None:
        """Close after refusing a request whose body is still arriving.

        Closing a socket with unread input makes the kernel send RST, which can destroy the
        response before the client reads it.  So: send FIN, discard input for a moment
        (bounded by LINGER_SECONDS), then close.
        """
        sock = self.connection
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            while (left := deadline - time.monotonic()) > 0 and not self.server.draining:
                sock.settimeout(min(left, 0.25))
                try:
                    if not sock.recv(65536):
                        break
                except TimeoutError:
                    continue
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()

    def handle_expect_100(self) -> bool:
        # Deferred: the body reader sends "100 Continue" when the app first reads the body.
        self._expect_100 = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors as JSON ``{"message"}``; always closes the connection."""
        self.close_connection = True
        self._linger = True
        if getattr(self, "request_version", "HTTP/0.9") in ("HTTP/0.9", ""):
            # HTTP/0.9 responses have no status line; nobody speaks it, so answer in 1.1.
            self.request_version = "HTTP/1.1"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        body = json.dumps({"message": message or phrase}).encode()
        self.send_response(code, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        log.info('%s "%s" %d %d', self.client_address[0], self.requestline, code, len(body))

    def decide_close(self, reader: _BodyReader) -> bool:
        """Whether this response ends the connection (decided before its headers go out)."""
        if self.server.draining or (
            not reader.finished
            and (
                reader.chunked
                or reader.expect_pending
                or reader.broken
                or reader.remaining > DRAIN_LIMIT
            )
        ):
            self.close_connection = True
        return bool(self.close_connection)

    def _send_continue(self) -> None:
        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
        except OSError:  # idle timeout, reset, or shutdown while idle
            self.close_connection = True
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > _MAX_LINE:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        self.server.set_busy(self.connection, True)
        try:
            self._handle_request()
        except OSError:
            self.close_connection = True
        finally:
            self.server.set_busy(self.connection, False)

    def _handle_request(self) -> None:
        self._expect_100 = False
        if not self.parse_request():
            return
        lengths = self.headers.get_all("Content-Length") or []
        te = self.headers.get_all("Transfer-Encoding") or []
        length: int | None = None
        chunked = False
        if te:
            if [t.strip().lower() for t in ",".join(te).split(",")] != ["chunked"]:
                self.send_error(400, "Unsupported Transfer-Encoding")
                return
            if lengths:
                self.send_error(400, "Both Content-Length and Transfer-Encoding")
                return
            chunked = True
        elif lengths:
            values = {v.strip() for v in lengths}
            if len(values) != 1 or not next(iter(values)).isdigit():
                self.send_error(400, "Invalid Content-Length header")
                return
            length = int(next(iter(values)))
        environ = self.get_environ()
        environ["wsgi.input_terminated"] = True
        if chunked:
            environ.pop("CONTENT_LENGTH", None)
        send_continue = self._send_continue if self._expect_100 and (chunked or length) else None
        reader = _BodyReader(cast(IO[bytes], self.rfile), length, chunked, send_continue)
        handler = _ServerHandler(self, reader, environ)
        handler.run(self.server.app)
        handler.flush_all()
        if not self.close_connection and not reader.finished and not reader.drain():
            self.close_connection = True
        if self.close_connection and not reader.finished:
            self._linger = True


def listen_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` and listening, as :class:`EventtallyHTTPServer` binds it.

    A failure raises ``OSError`` (same ``errno``) whose message names the address, e.g.
    ``cannot listen on 127.0.0.1:8080: Address already in use``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if EventtallyHTTPServer.allow_reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(EventtallyHTTPServer.request_queue_size)
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


class EventtallyHTTPServer(socketserver.ThreadingMixIn, WSGIServer):
    """The threaded server.  ``server.app`` is the WSGI app, ``server.port`` the bound port."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        app: EventtallyApp,
        *,
        keepalive_timeout: float = 30.0,
        shutdown_grace: float = 10.0,
        on_close: Callable[[], None] | None = None,
        listener: socket.socket | None = None,
    ) -> None:
        """``listener``: a socket :func:`listen_socket` already bound and listening, so a port
        clash is found before anything (the data directory) is created; else bind here."""
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.keepalive_timeout = keepalive_timeout
        self.shutdown_grace = shutdown_grace
        self.draining = False
        self._on_close = on_close
        self._conns: dict[socket.socket, bool] = {}  # connection → busy with a request
        self._cond = threading.Condition()
        self._serving = False
        self._closed = False
        super().__init__(address, _RequestHandler, bind_and_activate=listener is None)
        if listener is not None:
            self.socket.close()
            self.socket = listener
            self.server_address = listener.getsockname()
            self._bound()
        self.app = app
        self.set_app(app)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would call socket.getfqdn(), a reverse DNS lookup that can
        # stall for seconds on machines without DNS.
        socketserver.TCPServer.server_bind(self)
        self._bound()

    def _bound(self) -> None:
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    # connection bookkeeping for graceful shutdown
    def track(self, conn: socket.socket, busy: bool) -> None:
        with self._cond:
            self._conns[conn] = busy

    def untrack(self, conn: socket.socket) -> None:
        with self._cond:
            self._conns.pop(conn, None)
            self._cond.notify_all()

    def set_busy(self, conn: socket.socket, busy: bool) -> None:
        with self._cond:
            if conn in self._conns:
                self._conns[conn] = busy
            self._cond.notify_all()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving = False

    def close(self) -> None:
        """Graceful stop: no new connections, finish in-flight requests, save state."""
        if self._closed:
            return
        self._closed = True
        self.draining = True
        if self._serving:
            self.shutdown()  # returns once serve_forever has left its loop
        self.server_close()  # the listening socket: new connections are refused
        deadline = time.monotonic() + self.shutdown_grace
        with self._cond:
            while any(self._conns.values()) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            leftovers = list(self._conns)
        for conn in leftovers:  # idle keep-alive connections (or requests past the grace)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._on_close is not None:
            self._on_close()


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
