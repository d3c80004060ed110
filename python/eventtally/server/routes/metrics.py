"""The Metrics API under ``/api/v1``: filter definitions, results, groupings, pings, health.

Guarantees:
- Reads need Read; ``ping`` needs any valid key; ``ping-w`` needs Write and an ingest of the
  key's organization with the given schema.  A key never sees another organization's data.
- ``metrics/results`` (``?multi=true`` too) and ``metrics/groupings`` answers are written by
  the core from the request bytes, in chunks of ``ANSWER_CHUNK_BYTES``, byte for byte the
  compact ``json.dumps`` text of the rows; more than ``max_answer_rows`` value rows or
  ``max_answer_bytes`` of text is 400 with advice to add a limit, narrow the window or roll up.
  Bodies nested deeper than ``safejson.MAX_DEPTH`` are 400 before the core parses them.
- ``ingest-health`` and ``server-info`` need Read (``health.py``).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import eventtally

from ... import _safejson as safejson
from .. import health
from ..errors import (
    HTTPError,
)
from ..metadata import ApiKeyRecord
from .base import _API_ROUTES, JSON_TYPE, Response, _empty, _json_bytes, _json_response
from .ingest import IngestRoutes

log = logging.getLogger("eventtally.server")

#: Size of the chunks a Metrics API answer is sent in: the answer is held once, as chunks, and
#: the HTTP layer writes them one after another under one ``Content-Length``.
ANSWER_CHUNK_BYTES = 1 << 20


class MetricsRoutes(IngestRoutes):
    """``/api/v1/...``."""

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
        except TypeError as exc:
            # The engine's word for a query value of the wrong type: the request is at fault.
            # Engine errors proper go to the table of errors.py (400, NotFoundError 404).
            raise HTTPError(400, str(exc)) from exc

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
        ingests = self.runtime.view.org_ingests(key.org_id)
        doc = health.ingest_health(
            self.health, ingests, key.org_id, environ.get("QUERY_STRING", "")
        )  # a parameter out of range is a HealthQueryError: 400 (errors.py)
        return _json_response(200, doc)

    def ping_w(self, environ: dict[str, Any], key: ApiKeyRecord) -> Response:
        """Segment's credential test: Write, and the ingest exists with that schema."""
        if not key.can_write:
            raise HTTPError(403, "This API key does not have the Write permission")
        params = parse_qs(environ.get("QUERY_STRING", ""))
        ingest_id = params.get("ingest_id", [""])[-1].strip()
        if not ingest_id:
            raise HTTPError(400, "Missing the ingest_id parameter")
        ingest = self.runtime.view.ingests.get(ingest_id)
        if ingest is None:
            ingest = self.runtime.refresh(min_interval=0.05).ingests.get(ingest_id)
        if ingest is None or ingest.org_id != key.org_id or not ingest.enabled:
            raise HTTPError(404, f"Ingest {ingest_id} not found")
        schema = params.get("schema", [""])[-1].strip()
        if schema and schema != ingest.schema:
            raise HTTPError(400, f"Ingest {ingest_id} expects {ingest.schema}, not {schema}")
        return _empty(200)
