"""The admin API under ``/admin/v1``: organizations, ingests, filters, API keys, compaction.

Guarantees:
- The admin API is off (404) unless an admin token is configured; it needs
  ``Authorization: Bearer <token>`` (compared in constant time).
- Every change goes through :class:`~eventtally.server.manage.Manager` (validated by the
  engine), and the runtime follows it before the answer is sent.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from ..errors import (
    HTTPError,
)
from .base import Response, _json_response, _parse_time_ms
from .jobs import JobRoutes

log = logging.getLogger("eventtally.server")


class AdminRoutes(JobRoutes):
    """``/admin/v1/...``."""

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
        # A refused change is a MetadataError: 400, NotFound 404, Conflict 409 (errors.py).
        response = self._admin_route(environ, method, parts[1:])
        self.runtime.sync()
        return response

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
        view = self.runtime.view
        if org_id not in view.orgs:
            raise HTTPError(404, f"organization {org_id!r} not found")
        if len(rest) == 1:
            expect("GET")
            return _json_response(200, view.orgs[org_id].to_dict())
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
