"""The WSGI application: ingest ``POST /{ingest_id}``, the Metrics API under ``/api/v1`` and the
admin API under ``/admin/v1``.

Guarantees:
- ``PUT`` and ``PATCH`` on an ingest URL are the same ingest as ``POST`` (same checks, statuses
  and bodies): Segment's Webhooks (Actions) destination lets the user pick any of the three.
- Ingest checks run in the order of decision 4 (docs/decisions.md), all before the body is read:
  401 (no ``x-api-token``: exactly ``No Authorization Header``; unknown or disabled key),
  403 (no Write), 404 (no such ingest *in the key's organization*: another organization's
  ingest answers exactly like an unknown one), 429 (``Retry-After``), 400 (declared length over
  the limit).  Then the body: size while reading (chunked too), gunzip (bounded), JSON and
  format (400, the message names the problem and its byte offset).  A batch is applied whole or
  not at all; success is ``200`` with an empty body.
- Every JSON request body (queries, admin documents) is parsed by ``safejson``: nested deeper
  than ``safejson.MAX_DEPTH`` it is a 400 naming the limit, never a ``RecursionError``/500.
- Metrics API answers (``metrics/results``, ``?multi=true``, ``metrics/groupings``) are written
  by the core from the request bytes, in chunks of ``ANSWER_CHUNK_BYTES``, byte for byte the
  compact ``json.dumps`` text of the rows; more than ``max_answer_rows`` value rows or
  ``max_answer_bytes`` of text is 400 with advice to add a limit, narrow the window or roll up.
  Bodies nested deeper than ``safejson.MAX_DEPTH`` are 400 before the core parses them.
- Every error is ``{"message": "..."}`` with ``Content-Type: application/json``; wrong methods
  get 405 with ``Allow``; nothing redirects but ``GET /`` and ``GET /ui`` (to the dashboard,
  ``ui.py``); every response has a ``Content-Length``.
- ``GET /ui/`` serves the dashboard (no key; ``ui.py``).  ``GET /api/v1/ingest-health`` and
  ``GET /api/v1/server-info`` need Read (``health.py``); every ingest request refused after its
  ingest was found in the key's organization is recorded there, with its first bytes only.
- Reads need Read; ``ping`` needs any valid key; ``ping-w`` needs Write and an ingest of the
  key's organization with the given schema.  A key never sees another organization's data.
- The admin API is off (404) unless an admin token is configured; it needs
  ``Authorization: Bearer <token>``.
- ``GET /healthz`` answers 200 while the process runs; ``GET /readyz`` answers 503 until
  recovery has finished (every other route, except ``/metrics``, answers 503 with
  ``Retry-After`` meanwhile), and again, with the reason, whenever ingest would answer 503
  because of the server (write-ahead log closed, failed or unable to write; definitions not
  persisted), back to 200 as soon as writes work again.  ``GET /metrics`` is the Prometheus text
  format; with ``metrics_token`` configured it needs that token (``Authorization: Bearer`` or
  ``x-api-token``), else 401.
- At most ``max_concurrent_requests`` ingest requests and ``max_concurrent_reads`` other requests
  are in flight at once, each organization holding at most ``org_slot_share`` of a pool
  (``slots.py``); more are answered at once with 503, ``Retry-After: 1`` and a JSON message,
  before their body is read.  Probes, ``/metrics`` and the dashboard's files are not counted.
- :meth:`EventtallyApp.admit` runs every check that needs no body (decision 4 in
  docs/decisions.md: key, permission, ingest, rate limit, declared length) and names the
  organization, so an event-driven front (``httpd.py``) takes a fair slot and reads the body
  only for admitted requests; the WSGI call then skips the checks already made and answers
  exactly as before.
- Access-log lines escape control characters (``%0a`` in a path cannot forge a line).
- A batch is answered 200 only after it is in the write-ahead log per the fsync policy.  A log
  failure is 503 (Segment retries), never 400; an organization over its state-size limit gets
  429 with ``Retry-After`` (Segment retries; see ``docs/server.md`` for the reasoning).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import eventtally

from .. import _safejson as safejson
from . import health, ui
from .config import ServerConfig
from .manage import Manager
from .metadata import ApiKeyRecord, Conflict, MetadataError, NotFound
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Family
from .ratelimit import RateLimiter, retry_after_header
from .runtime import (
    BackfillError,
    NotReadyError,
    RepeatedBackfillError,
    Runtime,
    StateLimitError,
    parse_time_ms,
)
from .slots import Pool, Slots

__all__ = [
    "ENV_ADMITTED",
    "ENV_FRONT",
    "ENV_REFUSAL",
    "ENV_STARTED",
    "Admission",
    "EventtallyApp",
    "HTTPError",
]

log = logging.getLogger("eventtally.server")

Headers = list[tuple[str, str]]
#: A body is one ``bytes`` or, for large Metrics API answers, a list of chunks sent in turn.
Body = bytes | list[bytes]
Response = tuple[int, Headers, Body]
StartResponse = Callable[..., Any]

JSON_TYPE = "application/json"
#: Size of the chunks a Metrics API answer is sent in: the answer is held once, as chunks, and
#: the HTTP layer writes them one after another under one ``Content-Length``.
ANSWER_CHUNK_BYTES = 1 << 20


#: environ keys between the front (``httpd.py``) and the app.  ``ENV_FRONT``: the front holds
#: the slot (the app takes none).  ``ENV_REFUSAL``: the answer decided before the body, sent
#: instead of dispatching.  ``ENV_ADMITTED``: the organization whose ingest head passed
#: :meth:`EventtallyApp.admit` (its rate-limit token is spent; the checks are not repeated).
ENV_FRONT = "eventtally.front"
ENV_REFUSAL = "eventtally.refusal"
ENV_ADMITTED = "eventtally.admitted"
ENV_STARTED = "eventtally.started"  # perf_counter() when the head arrived

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def log_safe(text: object) -> str:
    """``text`` with control characters (and backslash) escaped, for one-line log records."""
    s = str(text)
    if _CONTROL.search(s) is None:
        return s
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


class HTTPError(Exception):
    """An error response: ``status`` and a message for the ``{"message"}`` body."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _json_response(status: int, obj: Any, headers: Headers | None = None) -> Response:
    return status, [("Content-Type", JSON_TYPE), *(headers or [])], _json_bytes(obj)


def _empty(status: int = 200) -> Response:
    return status, [], b""


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`EventtallyApp.admit` decided from a request head.

    ``refusal`` set: answer it without reading the body.  Otherwise ``pool`` (``None``: no slot
    needed) and ``org`` (the organization the slot is charged to, if known).
    """

    pool: Pool | None = None
    org: str | None = None
    refusal: Response | None = None


def _engine_error(exc: Exception) -> HTTPError:
    """One mapping from engine exceptions to HTTP (documented in docs/server.md)."""
    if isinstance(exc, eventtally.NotFoundError):
        return HTTPError(404, str(exc))
    if isinstance(exc, eventtally.EventtallyError | TypeError):
        # JsonError ("malformed JSON at byte N: ..."), FormatError ("incorrect event format at
        # byte N: ..."), QueryError, ConfigError, PathSyntaxError, LimitError: the request is
        # at fault, and the engine's message names the problem and where it is.
        return HTTPError(400, str(exc))
    raise exc


def _admin_error(exc: MetadataError) -> HTTPError:
    if isinstance(exc, NotFound):
        return HTTPError(404, str(exc))
    if isinstance(exc, Conflict):
        return HTTPError(409, str(exc))
    return HTTPError(400, str(exc))


#: Retry-After (seconds) of the 503s and 429s this module sends.
RETRY_BUSY = 1
RETRY_PERSIST = 5
RETRY_STATE_LIMIT = 60

_PROBES = ("/healthz", "/readyz", "/metrics")

#: Methods an ingest URL takes.  Segment's Webhooks (Actions) destination sends POST, PUT or
#: PATCH (the user's choice), so all three are the same ingest, with the same checks.
INGEST_METHODS = ("POST", "PUT", "PATCH")


def _route_label(path: str) -> str:
    """A low-cardinality route name for metrics (ingest ids are not labels)."""
    if path.startswith("/api/v1/"):
        route = path[len("/api/v1/") :].rstrip("/")
        return f"api/{route}" if route in _API_ROUTES else "api/other"
    if path == "/admin" or path.startswith("/admin/"):
        return "admin"
    stripped = path.rstrip("/")
    if stripped in _PROBES:
        return stripped[1:]
    return "ingest"


def _ingest_id(path: str) -> str | None:
    ingest_id = path[1:]
    if ingest_id.endswith("/"):
        ingest_id = ingest_id[:-1]
    if not ingest_id or "/" in ingest_id:
        return None
    return ingest_id


def _parse_time_ms(value: object, what: str) -> int | None:
    try:
        return parse_time_ms(value, what)
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from exc


_API_ROUTES: dict[str, str] = {
    "filter-definitions": "GET",
    "metrics/results": "POST",
    "metrics/groupings": "POST",
    "organization/ping": "GET",
    "organization/ping-w": "GET",
    **health.ROUTES,
}


class EventtallyApp:
    """The WSGI callable.  Build it with :func:`eventtally.server.make_app`."""

    def __init__(
        self,
        runtime: Runtime,
        config: ServerConfig,
        *,
        limiter: RateLimiter | None = None,
        manager: Manager | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.config = config
        self.limiter = limiter or RateLimiter(config.rate_limit, config.rate_burst)
        self.manager = manager or Manager(
            self.store, max_filters_per_org=config.max_filters_per_org
        )
        self.admin_token = config.resolved_admin_token()
        self.metrics_token = config.resolved_metrics_token()
        self.slots = Slots(
            config.max_concurrent_requests, config.max_concurrent_reads, config.org_slot_share
        )
        self._jobs: dict[str, dict[str, Any]] = {}
        self._jobs_lock = threading.Lock()
        self.health = health.IngestHealth(clock=runtime.clock)
        r = runtime.registry
        self.m_requests = r.counter(
            "eventtally_http_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
        )
        self.m_ingest_latency = r.histogram(
            "eventtally_ingest_duration_seconds",
            "Time to answer an ingest request with 200 (body read, parse, WAL, apply)",
        )
        self.m_overload = r.counter(
            "eventtally_http_overload_total",
            "Requests refused with 503 because max_concurrent_requests were in flight",
        )
        r.collector(self._collect)

    def _collect(self) -> Iterable[Family]:
        yield Family("eventtally_http_requests_in_flight", "gauge", "Requests being processed").add(
            self.slots.in_flight
        )
        yield Family(
            "eventtally_http_max_concurrent_requests", "gauge", "The concurrency limit (0: none)"
        ).add(self.config.max_concurrent_requests)

    # ------------------------------------------------------------------ WSGI entry

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        started = environ.get(ENV_STARTED) or time.perf_counter()
        path: str = environ.get("PATH_INFO") or "/"
        route = _route_label(path)
        refusal = environ.pop(ENV_REFUSAL, None)
        pool = None if environ.get(ENV_FRONT) else self.pool_of(environ)
        if refusal is not None:
            status, headers, body = refusal
        elif pool is None:
            status, headers, body = self._respond(environ)
        elif not self.slots.try_acquire(pool, None):
            status, headers, body = self.busy()
        else:
            try:
                status, headers, body = self._respond(environ)
            finally:
                self.slots.release(pool, None)
        headers = list(headers)
        self.m_requests.inc(route, str(status))
        if route == "ingest" and status == 200:
            self.m_ingest_latency.observe(time.perf_counter() - started)
        chunks = body if isinstance(body, list) else [body]
        length = sum(map(len, chunks))
        headers.append(("Content-Length", str(length)))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        if self.config.access_log and log.isEnabledFor(logging.INFO):
            log.info(
                '%s "%s %s" %d %d %.1fms',
                log_safe(environ.get("REMOTE_ADDR", "-")),
                log_safe(environ.get("REQUEST_METHOD")),
                log_safe(environ.get("PATH_INFO")),
                status,
                length,
                (time.perf_counter() - started) * 1000.0,
            )
        return chunks

    def pool_of(self, environ: dict[str, Any]) -> Pool | None:
        """The slot pool a request needs: ``None`` for probes, ``/metrics`` and static files."""
        path: str = environ.get("PATH_INFO") or "/"
        route = _route_label(path)
        if route in ("healthz", "readyz", "metrics"):
            return None
        if ui.handles(environ.get("REQUEST_METHOD", "GET").upper(), path):
            return None
        return "ingest" if route == "ingest" else "read"

    def busy(self) -> Response:
        """The 503 for a request that found no free slot (counted in the overload metric)."""
        self.m_overload.inc()
        return _json_response(
            503,
            {"message": "Server busy: too many concurrent requests; retry later"},
            [("Retry-After", str(RETRY_BUSY))],
        )

    def admit_now(self, environ: dict[str, Any]) -> Admission | None:
        """:meth:`admit`, when it decides from memory alone; else ``None``: run :meth:`admit` on
        a worker.  For an event loop: a request with no key, or whose key verified before while
        nothing needs reloading (no scrypt, no SQLite reads); never the admin API."""
        path: str = environ.get("PATH_INFO") or "/"
        if path == "/admin" or path.startswith("/admin/"):
            return None
        raw = environ.get("HTTP_X_API_TOKEN")
        if raw is not None and not self.store.key_is_cached(raw):
            return None
        return self.admit(environ)

    def admit(self, environ: dict[str, Any]) -> Admission:
        """Every check that needs no body, in the order of decision 4 (docs/decisions.md), and
        the slot pool and organization to charge.  Never raises; a refusal carries its response.

        An admitted ingest has spent its rate-limit token: the WSGI call that follows must get
        the same ``environ`` (it carries ``ENV_ADMITTED``).
        """
        path: str = environ.get("PATH_INFO") or "/"
        method: str = environ.get("REQUEST_METHOD", "GET").upper()
        route = _route_label(path)
        if self.pool_of(environ) is None:
            return Admission()
        try:
            if not self.runtime.ready:
                raise NotReadyError(self.runtime.status)
            if route == "ingest":
                ingest_id = _ingest_id(path)
                if ingest_id is None:
                    raise HTTPError(404, "Not found")
                try:
                    org_id = self.ingest_head(environ, method, ingest_id)
                except HTTPError as exc:
                    self.health.refused_from_environ(environ, exc.status, exc.message)
                    raise
                environ[ENV_ADMITTED] = org_id
                return Admission("ingest", org_id)
            if route == "admin":
                self.check_admin(environ)
                return Admission("read", None)
            api = path[len("/api/v1/") :].rstrip("/")
            if _API_ROUTES.get(api) == method:
                return Admission("read", self.authenticate(environ).org_id)
            return Admission("read", None)  # 404/405: the dispatch answers, the key is not needed
        except HTTPError as exc:
            return Admission(refusal=_json_response(exc.status, {"message": exc.message},
                                                    exc.headers))  # fmt: skip
        except NotReadyError:
            return Admission(refusal=self._not_ready())
        except Exception:
            log.exception("unhandled error admitting %s %s", log_safe(method), log_safe(path))
            return Admission(refusal=_json_response(500, {"message": "Internal server error"}))

    def _not_ready(self) -> Response:
        return _json_response(
            503,
            {"message": f"Server not ready ({self.runtime.status}); retry later"},
            [("Retry-After", str(RETRY_BUSY))],
        )

    def _respond(self, environ: dict[str, Any]) -> Response:
        try:
            return self.dispatch(environ)
        except HTTPError as exc:
            return _json_response(exc.status, {"message": exc.message}, exc.headers)
        except NotReadyError:
            return self._not_ready()
        except Exception:
            log.exception(
                "unhandled error for %s %s",
                log_safe(environ.get("REQUEST_METHOD")),
                log_safe(environ.get("PATH_INFO")),
            )
            return _json_response(500, {"message": "Internal server error"})

    def dispatch(self, environ: dict[str, Any]) -> Response:
        path: str = environ.get("PATH_INFO") or "/"
        method: str = environ.get("REQUEST_METHOD", "GET").upper()
        probe = path.rstrip("/")
        if probe in _PROBES:
            if method != "GET":
                raise HTTPError(405, "Method not allowed", [("Allow", "GET")])
            if probe == "/healthz":
                return _json_response(200, {"status": "ok"})
            if probe == "/readyz":
                return self.readyz()
            if not self.config.metrics:
                raise HTTPError(404, "Not found")
            self.check_metrics_token(environ)
            return 200, [("Content-Type", METRICS_CONTENT_TYPE)], self.runtime.registry.render()
        if ui.handles(method, path):  # static: served while recovering too
            return ui.respond(path)
        if not self.runtime.ready:
            raise NotReadyError(self.runtime.status)
        if path.startswith("/api/v1/"):
            return self.api(environ, method, path[len("/api/v1/") :].rstrip("/"))
        if path == "/admin" or path.startswith("/admin/"):
            return self.admin(environ, method, path)
        ingest_id = _ingest_id(path)
        if ingest_id is None:
            raise HTTPError(404, "Not found")
        try:
            return self.ingest(environ, method, ingest_id)
        except HTTPError as exc:
            self.health.refused_from_environ(environ, exc.status, exc.message)
            raise

    # ------------------------------------------------------------------ probes

    def readyz(self) -> Response:
        """200 when a batch would be accepted now; 503 with the reason while it would be 503."""
        if not self.runtime.ready:
            return _json_response(
                503,
                {"status": self.runtime.status, "message": "Not ready: " + self.runtime.status},
                [("Retry-After", str(RETRY_BUSY))],
            )
        reason = self.runtime.write_refusal()
        if reason is None:
            return _json_response(200, {"status": "ready"})
        return _json_response(
            503,
            {"status": "not accepting writes", "message": "Not ready: " + reason},
            [("Retry-After", str(RETRY_PERSIST))],
        )

    def check_metrics_token(self, environ: dict[str, Any]) -> None:
        """With ``metrics_token`` set, ``/metrics`` needs it (Bearer or ``x-api-token``): 401."""
        expected = self.metrics_token
        if expected is None:
            return
        scheme, _, bearer = (environ.get("HTTP_AUTHORIZATION") or "").partition(" ")
        given = bearer.strip() if scheme.lower() == "bearer" else None
        if given is None:
            given = environ.get("HTTP_X_API_TOKEN")
        challenge = [("WWW-Authenticate", 'Bearer realm="metrics"')]
        if given is None:
            raise HTTPError(
                401, "Missing metrics token (Authorization: Bearer or x-api-token)", challenge
            )
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise HTTPError(401, "Invalid metrics token", challenge)

    # ------------------------------------------------------------------ helpers

    def authenticate(self, environ: dict[str, Any]) -> ApiKeyRecord:
        """The caller's key, or 401.  Header names are case-insensitive (WSGI upper-cases)."""
        raw = environ.get("HTTP_X_API_TOKEN")
        if raw is None:
            raise HTTPError(401, "No Authorization Header")
        # Every authentication first picks up what another process (the CLI) committed to the
        # metadata: one `PRAGMA data_version` when nothing changed. So a key disabled (or an
        # organization disabled, a key created) by a command that has returned is seen by the
        # next request, not a poll interval later.
        self.runtime.poll(min_interval=0.0)
        key = self.store.authenticate(raw)
        if key is None:
            raise HTTPError(401, "Invalid API Key")
        if not key.enabled:
            raise HTTPError(401, "Disabled API Key")
        org = self.store.snapshot.orgs.get(key.org_id)
        if org is None or not org.enabled:
            raise HTTPError(401, "Organization is disabled")
        return key

    def _content_length(self, environ: dict[str, Any]) -> int | None:
        raw = environ.get("CONTENT_LENGTH") or ""
        if not raw.strip():
            return None
        if not raw.strip().isdigit():
            raise HTTPError(400, "Invalid Content-Length header")
        return int(raw)

    def _too_large(self) -> HTTPError:
        limit = self.config.max_body_bytes
        return HTTPError(
            400, f"Body larger than the maximum payload ({limit} bytes); send smaller batches"
        )

    def read_body(self, environ: dict[str, Any]) -> bytes:
        """The request body, at most ``max_body_bytes`` (400 beyond), without reading further."""
        try:
            return self._read_body(environ)
        except TimeoutError as exc:
            raise HTTPError(408, "Timed out reading the request body") from exc
        except ValueError as exc:  # another WSGI server's input: bad chunked framing, early EOF
            raise HTTPError(400, f"Invalid request body: {exc}") from exc

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        limit = self.config.max_body_bytes
        length = self._content_length(environ)
        stream = environ["wsgi.input"]
        if length is not None:
            if length > limit:
                raise self._too_large()
            data = stream.read(length) if length else b""
            if len(data) != length:
                raise HTTPError(400, "Body shorter than its Content-Length")
            return bytes(data)
        if not environ.get("wsgi.input_terminated"):
            return b""  # no Content-Length and no chunking: an HTTP request without a body
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = stream.read(min(65536, limit + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise self._too_large()
        return b"".join(parts)

    def decode_body(self, environ: dict[str, Any], body: bytes) -> bytes:
        """Undo ``Content-Encoding: gzip`` (or ``deflate``), bounded by max_decompressed_bytes."""
        encoding = (environ.get("HTTP_CONTENT_ENCODING") or "").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding in ("gzip", "x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif encoding == "deflate":
            wbits = zlib.MAX_WBITS
        else:
            raise HTTPError(415, f"Unsupported Content-Encoding: {encoding}")
        limit = self.config.max_decompressed_bytes
        out: list[bytes] = []
        total = 0
        data = body
        try:
            while data:
                d = zlib.decompressobj(wbits=wbits)
                chunk = d.decompress(data, limit + 1 - total)
                total += len(chunk)
                out.append(chunk)
                if total > limit or d.unconsumed_tail:
                    raise HTTPError(
                        400, f"Decompressed body larger than the maximum ({limit} bytes)"
                    )
                if not d.eof:
                    raise HTTPError(400, f"Truncated {encoding} body")
                data = d.unused_data  # gzip allows several members back to back
                if wbits != 16 + zlib.MAX_WBITS:
                    break
        except zlib.error as exc:
            raise HTTPError(400, f"Invalid {encoding} body: {exc}") from exc
        return b"".join(out)

    def read_json(self, environ: dict[str, Any]) -> Any:
        return self.parse_json(self.decode_body(environ, self.read_body(environ)))

    def parse_json(self, body: bytes) -> Any:
        """A request body as Python JSON data; 400 when malformed or nested deeper than the
        limit."""
        try:
            return safejson.loads(body)
        except safejson.TooDeepError as exc:
            raise HTTPError(400, f"Request body rejected: {exc}") from exc
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise HTTPError(400, f"Malformed JSON request body: {exc}") from exc

    # ------------------------------------------------------------------ ingest

    def ingest(self, environ: dict[str, Any], method: str, ingest_id: str) -> Response:
        org_id = environ.get(ENV_ADMITTED) or self.ingest_head(environ, method, ingest_id)
        environ[health.ENV_BODY] = raw = self.read_body(environ)
        environ[health.ENV_BODY] = body = self.decode_body(environ, raw)
        try:
            stats = self.runtime.ingest(org_id, ingest_id, body)
        except eventtally.EventtallyError as exc:
            raise _engine_error(exc) from exc
        except StateLimitError as exc:
            raise HTTPError(429, str(exc), [("Retry-After", str(RETRY_STATE_LIMIT))]) from exc
        except OSError as exc:  # the write-ahead log could not persist it: retryable
            log.error("could not persist a batch for %s: %s", org_id, exc)
            raise HTTPError(
                503,
                "Could not persist the batch; retry later",
                [("Retry-After", str(RETRY_PERSIST))],
            ) from exc
        self.health.record_batch(org_id, ingest_id, stats.events, stats.accepted, stats.dropped,
                                 stats.timestamp_fallback)  # fmt: skip
        return _empty(200)

    def ingest_head(self, environ: dict[str, Any], method: str, ingest_id: str) -> str:
        """The checks of decision 4 (docs/decisions.md) that need no body; the organization's id,
        else raise."""
        if method not in INGEST_METHODS:
            raise HTTPError(
                405,
                "Method not allowed; ingest with POST, PUT or PATCH",
                [("Allow", ", ".join(INGEST_METHODS))],
            )
        key = self.authenticate(environ)
        if not key.can_write:
            raise HTTPError(403, "This API key does not have the Write permission")
        ingest = self.store.snapshot.ingests.get(ingest_id)
        if ingest is None:
            self.runtime.poll(min_interval=0.05)  # created a moment ago by the CLI?
            ingest = self.store.snapshot.ingests.get(ingest_id)
        # Another organization's ingest is answered exactly like a missing one.
        if ingest is None or ingest.org_id != key.org_id or not ingest.enabled:
            raise HTTPError(404, "Ingest not found")
        environ[health.ENV_INGEST] = (key.org_id, ingest_id)  # refusals from here on count
        org = self.store.snapshot.orgs[key.org_id]
        wait = self.limiter.acquire(org.id, org.rate_limit)
        if wait > 0:
            raise HTTPError(
                429,
                "Too many requests: over the rate limit",
                [("Retry-After", retry_after_header(wait))],
            )
        declared = self._content_length(environ)
        if declared is not None and declared > self.config.max_body_bytes:
            raise self._too_large()  # the body is never read (decision 4, docs/decisions.md)
        return org.id

    # ------------------------------------------------------------------ Metrics API

    def api(self, environ: dict[str, Any], method: str, route: str) -> Response:
        allowed = _API_ROUTES.get(route)
        if allowed is None:
            raise HTTPError(404, "Not found")
        if method != allowed:
            raise HTTPError(405, "Method not allowed", [("Allow", allowed)])
        key = self.authenticate(environ)
        if route == "organization/ping":
            return _empty(200)
        if route == "organization/ping-w":
            return self.ping_w(environ, key)
        if not key.can_read:
            raise HTTPError(403, "This API key does not have the Read permission")
        if route in health.ROUTES:
            return self.health_route(environ, route, key)
        try:
            engine = self.runtime.engine(key.org_id)
        except KeyError as exc:  # pragma: no cover - the key's org always exists
            raise HTTPError(404, "Organization not found") from exc
        try:
            if route == "filter-definitions":
                defs = engine.filter_definitions()
                for d in defs:
                    d.setdefault("organizationId", key.org_id)
                return _json_response(200, defs)
            multi = parse_qs(environ.get("QUERY_STRING", "")).get("multi", [""])[-1]
            if route == "metrics/groupings":
                kind = "groupings"
            elif multi.lower() in ("true", "1", "yes"):
                kind = "multi"
            else:
                kind = "results"
            return self.metrics_answer(environ, engine, kind)
        except (eventtally.EventtallyError, TypeError) as exc:
            raise _engine_error(exc) from exc

    def metrics_answer(
        self, environ: dict[str, Any], engine: eventtally.Engine, kind: str
    ) -> Response:
        """The answer of ``metrics/results`` (``kind`` ``results`` or ``multi``) and
        ``metrics/groupings``: the body goes to the core as bytes and the answer text comes back
        in chunks, capped by ``max_answer_rows``/``max_answer_bytes``."""
        body = self.decode_body(environ, self.read_body(environ))
        try:
            # The server's one depth limit, before any parser (the core's or Python's) recurses.
            safejson.check_depth(body)
        except safejson.TooDeepError as exc:
            raise HTTPError(400, f"Request body rejected: {exc}") from exc
        limits = {
            "max_rows": self.config.max_answer_rows,
            "max_bytes": self.config.max_answer_bytes,
            "chunk_bytes": ANSWER_CHUNK_BYTES,
        }
        query: Any = None
        chunks = engine.answer_json(kind, body, **limits)
        if chunks is None:
            # Not strict JSON of the expected shape: Python's parser decides, so malformed or
            # misshapen bodies keep their messages and what it accepts (NaN, UTF-16) still works.
            query = self.parse_json(body)
            if kind == "groupings" and not isinstance(query, dict):
                raise HTTPError(400, "Expected a JSON object")
            if kind == "multi":
                if isinstance(query, dict):
                    query = [query]
                if not isinstance(query, list) or not all(isinstance(q, dict) for q in query):
                    raise HTTPError(400, "Expected a JSON array of query objects")
            if kind == "results" and not isinstance(query, dict):
                raise HTTPError(400, "Expected a JSON object (send arrays with ?multi=true)")
            try:
                strict = json.dumps(query, allow_nan=False).encode()
            except (TypeError, ValueError) as exc:
                what = "queries" if kind == "multi" else "query"
                raise HTTPError(400, f"{what} must be JSON-serializable: {exc}") from exc
            chunks = engine.answer_json(kind, strict, **limits)
            if chunks is None:  # pragma: no cover - json.dumps writes strict JSON
                raise HTTPError(400, "Malformed JSON request body")
        headers = [("Content-Type", JSON_TYPE)]
        if kind == "results":
            # Which tiers served the window (docs/queries.md); the body keeps the spec's shape.
            if query is None:
                query = self.parse_json(body)
            resolutions = _json_bytes(engine.resolutions(query)).decode()
            headers.append(("X-Eventtally-Resolutions", resolutions))
        return 200, headers, chunks

    def health_route(self, environ: dict[str, Any], route: str, key: ApiKeyRecord) -> Response:
        """``ingest-health`` and ``server-info`` (``health.py``), for the key's organization."""
        if route == "server-info":
            return _json_response(200, health.server_info(self.health, self.runtime, key.org_id))
        ingests = self.store.snapshot.org_ingests(key.org_id)
        try:
            doc = health.ingest_health(
                self.health, ingests, key.org_id, environ.get("QUERY_STRING", "")
            )
        except health.QueryError as exc:
            raise HTTPError(400, str(exc)) from exc
        return _json_response(200, doc)

    def ping_w(self, environ: dict[str, Any], key: ApiKeyRecord) -> Response:
        """Segment's credential test: Write, and the ingest exists with that schema."""
        if not key.can_write:
            raise HTTPError(403, "This API key does not have the Write permission")
        params = parse_qs(environ.get("QUERY_STRING", ""))
        ingest_id = params.get("ingest_id", [""])[-1].strip()
        if not ingest_id:
            raise HTTPError(400, "Missing the ingest_id parameter")
        ingest = self.store.snapshot.ingests.get(ingest_id)
        if ingest is None:
            self.runtime.poll(min_interval=0.05)
            ingest = self.store.snapshot.ingests.get(ingest_id)
        if ingest is None or ingest.org_id != key.org_id or not ingest.enabled:
            raise HTTPError(404, f"Ingest {ingest_id} not found")
        schema = params.get("schema", [""])[-1].strip()
        if schema and schema != ingest.schema:
            raise HTTPError(400, f"Ingest {ingest_id} expects {ingest.schema}, not {schema}")
        return _empty(200)

    # ------------------------------------------------------------------ admin API

    def check_admin(self, environ: dict[str, Any]) -> None:
        """404 while the admin API is off; 401 without the right bearer token."""
        if not self.admin_token:
            raise HTTPError(404, "Not found")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.admin_token.encode()
        ):
            raise HTTPError(401, "Invalid admin token", [("WWW-Authenticate", "Bearer")])

    def admin(self, environ: dict[str, Any], method: str, path: str) -> Response:
        self.check_admin(environ)
        parts = [p for p in path.split("/") if p][2:]  # drop "admin", "v1"
        if path.split("/")[2:3] == ["v1"] and parts and parts[0] == "backfill":
            return self.admin_backfill(environ, method, parts[1:])
        if path.split("/")[2:3] == ["v1"] and parts == ["compact"]:
            return self.admin_compact(environ, method)
        if path.split("/")[2:3] != ["v1"] or not parts or parts[0] != "organizations":
            raise HTTPError(404, "Not found")
        try:
            response = self._admin_route(environ, method, parts[1:])
        except MetadataError as exc:
            raise _admin_error(exc) from exc
        self.runtime.sync()
        return response

    def _admin_body(self, environ: dict[str, Any]) -> dict[str, Any]:
        body = (
            self.read_json(environ)
            if self._content_length(environ) or environ.get("wsgi.input_terminated")
            else {}
        )
        if not isinstance(body, dict):
            raise HTTPError(400, "Expected a JSON object")
        return body

    def _admin_route(self, environ: dict[str, Any], method: str, rest: list[str]) -> Response:
        m = self.manager

        def expect(allowed: str) -> None:
            if method != allowed:
                raise HTTPError(405, "Method not allowed", [("Allow", allowed)])

        def collection(allowed: str = "GET, POST") -> None:
            if method not in ("GET", "POST"):
                raise HTTPError(405, "Method not allowed", [("Allow", allowed)])

        if not rest:  # /organizations
            collection()
            if method == "GET":
                return _json_response(200, [o.to_dict() for o in m.list_orgs()])
            body = self._admin_body(environ)
            rate = body.get("rateLimit")
            if rate is not None and not isinstance(rate, int | float):
                raise HTTPError(400, "rateLimit: expected a number")
            org = m.create_org(body.get("id"), body.get("name"), rate_limit=rate, source="admin")
            return _json_response(201, org.to_dict())
        org_id = rest[0]
        if org_id not in self.store.snapshot.orgs:
            raise HTTPError(404, f"organization {org_id!r} not found")
        if len(rest) == 1:
            expect("GET")
            return _json_response(200, self.store.snapshot.orgs[org_id].to_dict())
        if len(rest) == 2 and rest[1] in ("enable", "disable"):
            expect("POST")
            return _json_response(200, m.set_org_enabled(org_id, rest[1] == "enable").to_dict())
        kind = rest[1]
        if kind not in ("ingests", "filters", "api-keys"):
            raise HTTPError(404, "Not found")
        if len(rest) == 2:
            collection()
            if method == "GET":
                items: list[Any]
                if kind == "ingests":
                    items = m.list_ingests(org_id)
                elif kind == "filters":
                    items = m.list_filters(org_id)
                else:
                    items = m.list_keys(org_id)
                return _json_response(200, [i.to_dict() for i in items])
            body = self._admin_body(environ)
            if kind == "ingests":
                return _json_response(201, m.create_ingest(org_id, body, source="admin").to_dict())
            if kind == "filters":
                return _json_response(201, m.create_filter(org_id, body, source="admin").to_dict())
            record, raw = m.create_key(
                org_id,
                str(body.get("name") or ""),
                body.get("permissions", ["READ", "WRITE"]),
                org_wide=bool(body.get("orgWide", True)),
                source="admin",
            )
            return _json_response(201, {**record.to_dict(), "key": raw})
        if len(rest) == 4 and rest[3] in ("enable", "disable"):
            expect("POST")
            enabled = rest[3] == "enable"
            obj_id = rest[2]
            if kind == "ingests":
                return _json_response(
                    200, m.set_ingest_enabled(obj_id, enabled, org_id=org_id).to_dict()
                )
            if kind == "filters":
                return _json_response(200, m.set_filter_enabled(org_id, obj_id, enabled).to_dict())
            return _json_response(200, m.set_key_enabled(obj_id, enabled, org_id=org_id).to_dict())
        raise HTTPError(404, "Not found")

    # ------------------------------------------------------------------ admin compaction

    def admin_compact(self, environ: dict[str, Any], method: str) -> Response:
        """``POST /admin/v1/compact`` compacts now: every organization, or ``{"organization":
        id}``; ``"now"`` (Unix seconds or RFC 3339) overrides the clock.  Answers the reports by
        organization id."""
        if method != "POST":
            raise HTTPError(405, "Method not allowed", [("Allow", "POST")])
        body = self._admin_body(environ)
        org = body.get("organization")
        if org is not None and (not isinstance(org, str) or org not in self.runtime.org_ids()):
            raise HTTPError(404, f"Organization {org!r} not found")
        now_ms = _parse_time_ms(body.get("now"), "now")
        now = None if now_ms is None else now_ms / 1000
        if org is not None:
            reports = {org: self.runtime.compact_org(org, now=now)}
        else:
            reports = self.runtime.compact_all(now=now)
        return _json_response(200, {"organizations": reports})

    # ------------------------------------------------------------------ admin backfill

    def _admin_backfill_snapshot(self, body: dict[str, Any]) -> Response:
        """``POST /admin/v1/backfill`` with ``{"organization", "snapshot": server-side path}``:
        merges the engine snapshot into the organization's live state and answers 200 once the
        merge is durable; 400 for a bad or mismatched snapshot, 404 for an unknown
        organization, 409 for a snapshot merged before."""
        org_id, path = body.get("organization"), body.get("snapshot")
        if not isinstance(org_id, str) or not isinstance(path, str) or not path:
            raise HTTPError(400, "snapshot backfill needs organization and snapshot (a path)")
        extra = sorted(set(body) - {"organization", "snapshot"})
        if extra:
            raise HTTPError(400, f"snapshot backfill takes no {', '.join(extra)}")
        if org_id not in self.runtime.org_ids():
            raise HTTPError(404, f"organization {org_id!r} not found")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise HTTPError(400, f"cannot read {path}: {exc.strerror}") from exc
        try:
            result = self.runtime.backfill_snapshot(org_id, data, source=path)
        except BackfillError as exc:
            status = 409 if isinstance(exc, RepeatedBackfillError) else 400
            raise HTTPError(status, str(exc)) from exc
        return _json_response(200, result.to_dict())

    def admin_backfill(self, environ: dict[str, Any], method: str, rest: list[str]) -> Response:
        """``POST /admin/v1/backfill`` starts a job (202); ``GET .../backfill[/{id}]`` reports."""
        if rest:
            if method != "GET" or len(rest) != 1:
                raise HTTPError(405 if len(rest) == 1 else 404, "Method not allowed",
                                [("Allow", "GET")])  # fmt: skip
            with self._jobs_lock:
                found = self._jobs.get(rest[0])
                if found is None:
                    raise HTTPError(404, f"backfill job {rest[0]!r} not found")
                return _json_response(200, dict(found))
        if method == "GET":
            with self._jobs_lock:
                return _json_response(200, [dict(j) for j in self._jobs.values()])
        if method != "POST":
            raise HTTPError(405, "Method not allowed", [("Allow", "GET, POST")])
        body = self._admin_body(environ)
        if "snapshot" in body:
            return self._admin_backfill_snapshot(body)
        org_id = body.get("organization")
        filter_id = body.get("filter")
        if not isinstance(filter_id, str) or not isinstance(org_id, str | None):
            raise HTTPError(400, "filter (and organization, if given) must be strings")
        if org_id is None:
            having = [o for o in self.runtime.org_ids() if filter_id in self.runtime.org(o).filters]
            if not having:
                raise HTTPError(
                    404,
                    f"unknown filter {filter_id!r}: no organization has an enabled filter "
                    "with that id",
                )
            if len(having) > 1:
                raise HTTPError(
                    400,
                    f"filter {filter_id!r} exists in several organizations "
                    f"({', '.join(having)}); name one with organization",
                )
            org_id = having[0]
        files = body.get("files")
        if files is not None and (
            not isinstance(files, list) or not all(isinstance(f, str) for f in files) or not files
        ):
            raise HTTPError(400, "files: expected a non-empty array of server-side paths")
        start_ms = _parse_time_ms(body.get("from"), "from")
        end_ms = _parse_time_ms(body.get("to"), "to")
        ingest_id = body.get("ingest")
        if ingest_id is not None and not isinstance(ingest_id, str):
            raise HTTPError(400, "ingest: expected a string")
        job_id = uuid.uuid4().hex[:12]
        job: dict[str, Any] = {
            "id": job_id,
            "status": "running",
            "organization": org_id,
            "filter": filter_id,
            "kind": "file" if files else "wal",
            "startedAt": time.time(),
            "progress": {},
        }
        runtime = self.runtime
        # Validate what can be validated synchronously, so mistakes are a 400 here.
        try:
            st = runtime.org(org_id)
        except KeyError as exc:
            raise HTTPError(404, f"organization {org_id!r} not found") from exc
        if filter_id not in st.filters:
            raise HTTPError(404, f"filter {filter_id!r} is not enabled in {org_id!r}")

        def progress(p: dict[str, Any]) -> None:
            with self._jobs_lock:
                job["progress"] = p

        def run() -> None:
            try:
                if files:
                    result = runtime.backfill_files(
                        org_id, filter_id, files, ingest_id=ingest_id,
                        force=bool(body.get("force")), progress=progress,
                    )  # fmt: skip
                else:
                    result = runtime.backfill_wal(
                        org_id, filter_id, start_ms, end_ms, progress=progress
                    )
            except (BackfillError, eventtally.EventtallyError, OSError) as exc:
                with self._jobs_lock:
                    job.update(status="failed", error=str(exc), finishedAt=time.time())
                return
            except Exception as exc:  # pragma: no cover - logged, reported
                log.exception("backfill job %s failed", job_id)
                with self._jobs_lock:
                    job.update(status="failed", error=repr(exc), finishedAt=time.time())
                return
            with self._jobs_lock:
                job.update(status="done", result=result.to_dict(), finishedAt=time.time())

        with self._jobs_lock:
            self._jobs[job_id] = job
        threading.Thread(target=run, name=f"eventtally-backfill-{job_id}", daemon=True).start()
        return _json_response(202, dict(job), [("Location", f"/admin/v1/backfill/{job_id}")])
