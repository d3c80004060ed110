"""Create, list, enable and disable organizations, ingests, filters and API keys.

Guarantees:
- Every object belongs to one organization.  Ingest ids are global (they are the ingest URL);
  filter ids and key names are per organization.
- The per-organization filter limit is checked inside the creating (or re-enabling)
  transaction, so two concurrent creations cannot both pass it.
- A new key's raw secret is returned once and never stored.
"""

from __future__ import annotations

import itertools
import json
import secrets
import sqlite3
from collections.abc import Iterable
from typing import Any

from ..errors import Conflict, MetadataError, NotFound
from .keys import _hash_new, generate_key, key_digest
from .records import (
    RESERVED_INGEST_IDS,
    ApiKeyRecord,
    FilterRecord,
    IngestRecord,
    Organization,
    _now,
    _of_org,
    parse_permissions,
    validate_id,
)
from .schema import _write_enabled
from .store import MetadataStoreBase


class MetadataCrud(MetadataStoreBase):
    """The operator's operations (CLI, admin API), one transaction each."""

    # ----------------------------------------------------------------- organizations

    def _require_org(self, c: sqlite3.Connection, org_id: str) -> None:
        if c.execute("SELECT 1 FROM organizations WHERE id=?", (org_id,)).fetchone() is None:
            raise NotFound(f"organization {org_id!r} not found")

    def create_org(
        self,
        org_id: str | None,
        name: str | None = None,
        *,
        rate_limit: float | None = None,
        source: str = "cli",
    ) -> Organization:
        org_id = validate_id("organization", org_id or secrets.token_hex(4))
        now = _now()
        with self._tx() as c:
            if c.execute("SELECT 1 FROM organizations WHERE id=?", (org_id,)).fetchone():
                raise Conflict(f"organization {org_id!r} already exists")
            c.execute(
                "INSERT INTO organizations VALUES (?,?,1,?,?,?,?)",
                (org_id, name or org_id, rate_limit, source, now, now),
            )
        return self._view.orgs[org_id]

    def list_orgs(self) -> list[Organization]:
        return list(self._view.orgs.values())

    def set_org_enabled(self, org_id: str, enabled: bool) -> Organization:
        with self._tx() as c:
            self._require_org(c, org_id)
            _write_enabled(c, "organizations", enabled, _now(), org_id)
        return self._view.orgs[org_id]

    # ----------------------------------------------------------------- ingests

    def create_ingest(
        self, org_id: str, definition: dict[str, Any], *, source: str = "cli"
    ) -> IngestRecord:
        """Store a validated ingest definition; its ``id`` is generated when absent."""
        definition = dict(definition)
        ingest_id = definition.get("id") or secrets.token_hex(4)
        validate_id("ingest", ingest_id)
        if ingest_id in RESERVED_INGEST_IDS:
            raise MetadataError(f"ingest id {ingest_id!r} is reserved")
        definition["id"] = ingest_id
        now = _now()
        with self._tx() as c:
            self._require_org(c, org_id)
            if c.execute("SELECT 1 FROM ingests WHERE id=?", (ingest_id,)).fetchone():
                raise Conflict(f"ingest {ingest_id!r} already exists")
            c.execute(
                "INSERT INTO ingests VALUES (?,?,?,?,?,1,?,?,?)",
                (
                    ingest_id,
                    org_id,
                    str(definition.get("name") or ingest_id),
                    str(definition.get("schema", "ARRAY_OF_EVENTS")),
                    json.dumps(definition, sort_keys=True),
                    source,
                    now,
                    now,
                ),
            )
        return self._view.ingests[ingest_id]

    def list_ingests(self, org_id: str | None = None) -> list[IngestRecord]:
        return _of_org(self._view.ingests.values(), org_id)

    def set_ingest_enabled(
        self, ingest_id: str, enabled: bool, *, org_id: str | None = None
    ) -> IngestRecord:
        self._set_enabled_by_id("ingests", "ingest", ingest_id, enabled, org_id)
        return self._view.ingests[ingest_id]

    # ----------------------------------------------------------------- filters

    def count_enabled_filters(self, c: sqlite3.Connection, org_id: str) -> int:
        row = c.execute(
            "SELECT COUNT(*) FROM filters WHERE org_id=? AND enabled=1", (org_id,)
        ).fetchone()
        return int(row[0])

    def create_filter(
        self, org_id: str, definition: dict[str, Any], *, max_filters: int, source: str = "cli"
    ) -> FilterRecord:
        """Store a validated filter definition; its ``id`` is generated when absent."""
        definition = dict(definition)
        filter_id = definition.get("id") or secrets.token_hex(5)[:9]
        if isinstance(filter_id, int) and not isinstance(filter_id, bool):
            filter_id = str(filter_id)
        validate_id("filter", filter_id)
        definition["id"] = filter_id
        now = _now()
        with self._tx() as c:
            self._require_org(c, org_id)
            if c.execute(
                "SELECT 1 FROM filters WHERE org_id=? AND id=?", (org_id, filter_id)
            ).fetchone():
                raise Conflict(f"filter {filter_id!r} already exists in {org_id!r}")
            if self.count_enabled_filters(c, org_id) >= max_filters:
                raise MetadataError(
                    f"organization {org_id!r} already has {max_filters} filters (the limit)"
                )
            c.execute(
                "INSERT INTO filters VALUES (?,?,?,?,1,?,?,?)",
                (
                    org_id,
                    filter_id,
                    str(definition.get("name") or filter_id),
                    json.dumps(definition, sort_keys=True),
                    source,
                    now,
                    now,
                ),
            )
        return next(f for f in self._view.filters[org_id] if f.id == filter_id)

    def list_filters(self, org_id: str | None = None) -> list[FilterRecord]:
        return _of_org(itertools.chain.from_iterable(self._view.filters.values()), org_id)

    def set_filter_enabled(
        self, org_id: str, filter_id: str, enabled: bool, *, max_filters: int | None = None
    ) -> FilterRecord:
        with self._tx() as c:
            row = c.execute(
                "SELECT enabled FROM filters WHERE org_id=? AND id=?", (org_id, filter_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"filter {filter_id!r} not found in organization {org_id!r}")
            if (
                enabled
                and not row["enabled"]
                and max_filters is not None
                and self.count_enabled_filters(c, org_id) >= max_filters
            ):
                raise MetadataError(f"organization {org_id!r} already has {max_filters} filters")
            _write_enabled(c, "filters", enabled, _now(), org_id, filter_id)
        return next(f for f in self._view.filters[org_id] if f.id == filter_id)

    # ----------------------------------------------------------------- API keys

    def _new_key_id(self, c: sqlite3.Connection, preferred: str | None = None) -> str:
        key_id = preferred or secrets.token_hex(4)
        while c.execute("SELECT 1 FROM api_keys WHERE id=?", (key_id,)).fetchone():
            key_id = secrets.token_hex(4)
        return key_id

    def create_key(
        self,
        org_id: str,
        name: str,
        permissions: Iterable[str],
        *,
        org_wide: bool = True,
        source: str = "cli",
    ) -> tuple[ApiKeyRecord, str]:
        """Create a key with a fresh random secret; returns the record and the raw key (once)."""
        perms = parse_permissions(list(permissions))
        if not name:
            raise MetadataError("key name: must not be empty")
        raw, display = generate_key()
        digest = key_digest(raw)
        params, salt, hashed = _hash_new(digest)
        now = _now()
        with self._tx() as c:
            self._require_org(c, org_id)
            key_id = self._new_key_id(c, display)
            c.execute(
                "INSERT INTO api_keys VALUES (?,?,?,?,?,?,1,?,?,?,?,?,?,?,?)",
                (
                    key_id,
                    org_id,
                    name,
                    int(org_wide),
                    int("READ" in perms),
                    int("WRITE" in perms),
                    self._lookup(digest),
                    params,
                    salt,
                    hashed,
                    display,
                    source,
                    now,
                    now,
                ),
            )
        return self._view.keys[key_id], raw

    def list_keys(self, org_id: str | None = None) -> list[ApiKeyRecord]:
        return _of_org(self._view.keys.values(), org_id)

    def set_key_enabled(
        self, key_id: str, enabled: bool, *, org_id: str | None = None
    ) -> ApiKeyRecord:
        self._set_enabled_by_id("api_keys", "API key", key_id, enabled, org_id)
        return self._view.keys[key_id]
