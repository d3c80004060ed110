"""What every route shares: response helpers, the app's fields, authentication and bodies.

Guarantees:
- :meth:`RouteBase.authenticate` picks up what another process committed to the metadata before
  it checks the key, so a key disabled by a command that has returned is refused at once.
- :meth:`RouteBase.read_body` never reads past ``max_body_bytes`` (chunked bodies too), and
  :meth:`RouteBase.decode_body` never inflates past ``max_decompressed_bytes``.
- Every JSON request body is parsed by ``safejson``: nested deeper than ``safejson.MAX_DEPTH``
  it is a 400 naming the limit, never a ``RecursionError``/500.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from ... import _safejson as safejson
from .. import health
from ..config import ServerConfig
from ..errors import (
    HTTPError,
)
from ..jobs import JobRunner
from ..manage import Manager
from ..metadata import ApiKeyRecord
from ..metrics import Family
from ..ratelimit import RateLimiter
from ..runtime import Runtime, parse_time_ms
from ..slots import Slots

log = logging.getLogger("eventtally.server")


#: environ keys between the front (``httpd.py``) and the app.  ``ENV_FRONT``: the front holds
#: the slot (the app takes none).  ``ENV_REFUSAL``: the answer decided before the body, sent
#: instead of dispatching.  ``ENV_ADMITTED``: the ingest record (an
#: :class:`~eventtally.server.metadata.IngestRecord`) whose head passed
#: :meth:`EventtallyApp.admit` (its rate-limit token is spent; the checks are not repeated).
#: ``ENV_FRESH``: the key's SHA-256 digest, set when :meth:`EventtallyApp.admit_now` found the
#: metadata unchanged for this request a moment ago (``PRAGMA data_version``), so
#: authentication neither asks SQLite nor hashes the key again.
ENV_FRONT = "eventtally.front"
ENV_FRESH = "eventtally.fresh"
ENV_REFUSAL = "eventtally.refusal"
ENV_ADMITTED = "eventtally.admitted"
ENV_STARTED = "eventtally.started"  # perf_counter() when the head arrived


Headers = list[tuple[str, str]]
#: A body is one ``bytes`` or, for large Metrics API answers, a list of chunks sent in turn.
Body = bytes | list[bytes]
Response = tuple[int, Headers, Body]
StartResponse = Callable[..., Any]

JSON_TYPE = "application/json"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def log_safe(text: object) -> str:
    """``text`` with control characters (and backslash) escaped, for one-line log records."""
    s = str(text)
    if _CONTROL.search(s) is None:
        return s
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _json_response(status: int, obj: Any, headers: Headers | None = None) -> Response:
    return status, [("Content-Type", JSON_TYPE), *(headers or [])], _json_bytes(obj)


def _empty(status: int = 200) -> Response:
    return status, [], b""


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


class RouteBase:
    """The app's fields and the helpers every route uses.  Build the app with
    :func:`eventtally.server.make_app`."""

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
        self.jobs = JobRunner()
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

    def authenticate(self, environ: dict[str, Any]) -> ApiKeyRecord:
        """The caller's key, or 401.  Header names are case-insensitive (WSGI upper-cases)."""
        raw = environ.get("HTTP_X_API_TOKEN")
        if raw is None:
            raise HTTPError(401, "No Authorization Header")
        # Every authentication first picks up what another process (the CLI) committed to the
        # metadata: one `PRAGMA data_version` when nothing changed. So a key disabled (or an
        # organization disabled, a key created) by a command that has returned is seen by the
        # next request, not a poll interval later.
        digest: bytes | None = environ.pop(ENV_FRESH, None)
        # With a digest, admit_now checked data_version for this very request.
        view = self.runtime.view if digest is not None else self.runtime.refresh(min_interval=0.0)
        key = self.store.authenticate(raw, digest)
        if key is None:
            raise HTTPError(401, "Invalid API Key")
        if not key.enabled:
            raise HTTPError(401, "Disabled API Key")
        org = view.orgs.get(key.org_id)
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

    def _admin_body(self, environ: dict[str, Any]) -> dict[str, Any]:
        body = (
            self.read_json(environ)
            if self._content_length(environ) or environ.get("wsgi.input_terminated")
            else {}
        )
        if not isinstance(body, dict):
            raise HTTPError(400, "Expected a JSON object")
        return body
