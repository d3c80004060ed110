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
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from . import ui
from .errors import RETRY_BUSY, RETRY_PERSIST, HTTPError, NotReadyError, http_error
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .routes.admin import AdminRoutes
from .routes.base import (
    _API_ROUTES,
    _PROBES,
    ENV_ADMITTED,
    ENV_FRESH,
    ENV_FRONT,
    ENV_REFUSAL,
    ENV_STARTED,
    Body,
    Headers,
    Response,
    StartResponse,
    _ingest_id,
    _json_response,
    _route_label,
    log_safe,
)
from .slots import Pool

__all__ = [
    "ENV_ADMITTED",
    "ENV_FRONT",
    "ENV_REFUSAL",
    "ENV_STARTED",
    "Admission",
    "Body",
    "EventtallyApp",
    "HTTPError",
    "Headers",
    "Response",
    "log_safe",
]

log = logging.getLogger("eventtally.server")


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`EventtallyApp.admit` decided from a request head.

    ``refusal`` set: answer it without reading the body.  Otherwise ``pool`` (``None``: no slot
    needed) and ``org`` (the organization the slot is charged to, if known).
    """

    pool: Pool | None = None
    org: str | None = None
    refusal: Response | None = None


class EventtallyApp(AdminRoutes):
    """The WSGI callable.  Build it with :func:`eventtally.server.make_app`.

    The routes live one module per API in ``routes/`` (``ingest``, ``metrics``, ``admin``,
    ``jobs``); this class is the WSGI entry, admission, dispatch and the probes."""

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
        if raw is not None:
            digest = self.store.cached_digest(raw)
            if digest is None:
                return None
            # cached_digest just read data_version and hashed the key: authentication does
            # neither again.
            environ[ENV_FRESH] = digest
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
                    ingest = self.ingest_head(environ, method, ingest_id)
                except HTTPError as exc:
                    self.health.refused_from_environ(environ, exc.status, exc.message)
                    raise
                environ[ENV_ADMITTED] = ingest
                return Admission("ingest", ingest.org_id)
            if route == "admin":
                self.check_admin(environ)
                return Admission("read", None)
            api = path[len("/api/v1/") :].rstrip("/")
            if _API_ROUTES.get(api) == method:
                return Admission("read", self.authenticate(environ).org_id)
            return Admission("read", None)  # 404/405: the dispatch answers, the key is not needed
        except Exception as exc:
            return Admission(refusal=self._error_response(exc, "admitting", method, path))

    def _respond(self, environ: dict[str, Any]) -> Response:
        try:
            return self.dispatch(environ)
        except Exception as exc:
            method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
            return self._error_response(exc, "for", method, path)

    def _error_response(self, exc: Exception, doing: str, method: object, path: object) -> Response:
        """The answer to what a route raised, per the one table of ``errors.py``; a 500 (logged)
        for anything the table does not know."""
        err = http_error(exc)
        if err is None:
            log.error("unhandled error %s %s %s", doing, log_safe(method), log_safe(path),
                      exc_info=exc)  # fmt: skip
            return _json_response(500, {"message": "Internal server error"})
        return _json_response(err.status, {"message": err.message}, err.headers)

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
        except Exception as exc:
            err = http_error(exc)
            # ingest-health records the batch's refusals, not the server's own state
            if err is not None and not isinstance(exc, NotReadyError):
                self.health.refused_from_environ(environ, err.status, err.message)
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
