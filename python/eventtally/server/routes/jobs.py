"""The backfill API: ``/admin/v1/backfill`` jobs and synchronous snapshot merges.

Guarantees:
- ``POST /admin/v1/backfill`` validates what it can at once (400/404) and then answers 202
  with the job and its ``Location``; the job runs on the server's bounded job runner
  (``jobs.py``) and ``GET /admin/v1/backfill[/{id}]`` reports it.
- With ``"snapshot"`` the merge is synchronous: 200 once it is durable, 400 for a bad or
  mismatched snapshot, 404 for an unknown organization, 409 for a snapshot merged before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import eventtally

from ..errors import (
    BackfillError,
    HTTPError,
)
from ..jobs import Progress
from .base import Response, _json_response, _parse_time_ms
from .metrics import MetricsRoutes

log = logging.getLogger("eventtally.server")


class JobRoutes(MetricsRoutes):
    """``/admin/v1/backfill``."""

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
        # A bad or mismatched snapshot is a BackfillError (400), a repeat 409 (errors.py).
        result = self.runtime.backfill_snapshot(org_id, data, source=path)
        return _json_response(200, result.to_dict())

    def admin_backfill(self, environ: dict[str, Any], method: str, rest: list[str]) -> Response:
        """``POST /admin/v1/backfill`` starts a job (202); ``GET .../backfill[/{id}]`` reports."""
        if rest:
            if method != "GET" or len(rest) != 1:
                raise HTTPError(405 if len(rest) == 1 else 404, "Method not allowed",
                                [("Allow", "GET")])  # fmt: skip
            found = self.jobs.get(rest[0])
            if found is None:
                raise HTTPError(404, f"backfill job {rest[0]!r} not found")
            return _json_response(200, found)
        if method == "GET":
            return _json_response(200, self.jobs.list())
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
        runtime = self.runtime
        # Validate what can be validated synchronously, so mistakes are a 400 here.
        try:
            st = runtime.org(org_id)
        except KeyError as exc:
            raise HTTPError(404, f"organization {org_id!r} not found") from exc
        if filter_id not in st.filters:
            raise HTTPError(404, f"filter {filter_id!r} is not enabled in {org_id!r}")
        org: str = org_id

        def work(progress: Progress) -> dict[str, Any]:
            if files:
                result = runtime.backfill_files(
                    org, filter_id, files, ingest_id=ingest_id,
                    force=bool(body.get("force")), progress=progress,
                )  # fmt: skip
            else:
                result = runtime.backfill_wal(org, filter_id, start_ms, end_ms, progress=progress)
            return result.to_dict()

        job = self.jobs.submit(
            work,
            {"organization": org, "filter": filter_id, "kind": "file" if files else "wal"},
            expected=(BackfillError, eventtally.EventtallyError, OSError),
        )
        return _json_response(202, job, [("Location", f"/admin/v1/backfill/{job['id']}")])
