"""The ingest API: ``POST /{ingest_id}`` (``PUT`` and ``PATCH`` too).

Guarantees:
- ``PUT`` and ``PATCH`` on an ingest URL are the same ingest as ``POST`` (same checks, statuses
  and bodies): Segment's Webhooks (Actions) destination lets the user pick any of the three.
- The checks run in the order of decision 4 (docs/decisions.md), all before the body is read:
  401, 403, 404 (another organization's ingest answers exactly like an unknown one), 429, 400
  (declared length over the limit).  Then the body: size while reading, gunzip (bounded), JSON
  and format (400, naming the problem and its byte offset).  A batch is applied whole or not
  at all; success is ``200`` with an empty body.
- The ingest record found by the checks is what the runtime ingests into: it is not looked up
  again.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import health
from ..errors import (
    BatchNotLoggedError,
    DefinitionsPendingError,
    HTTPError,
)
from ..metadata import IngestRecord
from ..ratelimit import retry_after_header
from .base import ENV_ADMITTED, Response, RouteBase, _empty

log = logging.getLogger("eventtally.server")

#: Methods an ingest URL takes.  Segment's Webhooks (Actions) destination sends POST, PUT or
#: PATCH (the user's choice), so all three are the same ingest, with the same checks.
INGEST_METHODS = ("POST", "PUT", "PATCH")


class IngestRoutes(RouteBase):
    """``POST /{ingest_id}``."""

    def ingest(self, environ: dict[str, Any], method: str, ingest_id: str) -> Response:
        """Read, decode and ingest the body; what the runtime raises is answered per
        ``errors.py`` (engine errors 400, state limit 429, a batch not persisted 503)."""
        ingest: IngestRecord = environ.get(ENV_ADMITTED) or self.ingest_head(
            environ, method, ingest_id
        )
        environ[health.ENV_BODY] = raw = self.read_body(environ)
        environ[health.ENV_BODY] = body = self.decode_body(environ, raw)
        try:
            stats = self.runtime.ingest(ingest, body)
        except (BatchNotLoggedError, DefinitionsPendingError) as exc:
            log.error("could not persist a batch for %s: %s", ingest.org_id, exc)
            raise
        self.health.record_batch(ingest.org_id, ingest_id, stats.events, stats.accepted,
                                 stats.dropped, stats.timestamp_fallback)  # fmt: skip
        return _empty(200)

    def ingest_head(self, environ: dict[str, Any], method: str, ingest_id: str) -> IngestRecord:
        """The checks of decision 4 (docs/decisions.md) that need no body; the ingest they
        found (passed down to the runtime, not looked up again), else raise."""
        if method not in INGEST_METHODS:
            raise HTTPError(
                405,
                "Method not allowed; ingest with POST, PUT or PATCH",
                [("Allow", ", ".join(INGEST_METHODS))],
            )
        key = self.authenticate(environ)
        if not key.can_write:
            raise HTTPError(403, "This API key does not have the Write permission")
        view = self.runtime.view
        ingest = view.ingests.get(ingest_id)
        if ingest is None:
            view = self.runtime.refresh(min_interval=0.05)  # created a moment ago by the CLI?
            ingest = view.ingests.get(ingest_id)
        # Another organization's ingest is answered exactly like a missing one.
        if ingest is None or ingest.org_id != key.org_id or not ingest.enabled:
            raise HTTPError(404, "Ingest not found")
        environ[health.ENV_INGEST] = (key.org_id, ingest_id)  # refusals from here on count
        org = view.orgs[key.org_id]
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
        return ingest
