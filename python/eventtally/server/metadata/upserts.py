"""Provisioning support: declared objects written idempotently, missing ones disabled.

Guarantees:
- An ``upsert_*`` writes only on a change, so applying an unchanged config writes nothing (a
  key's hash is replaced only when the declared digest no longer verifies against it).
- :meth:`MetadataUpserts.disable_missing` disables what a source no longer declares and never
  deletes anything.
- They run inside one :meth:`MetadataUpserts.transaction`: a config applies whole or not at all.
"""

from __future__ import annotations

import hmac
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import Conflict, MetadataError
from .crud import MetadataCrud
from .keys import _hash_new, _scrypt
from .records import RESERVED_INGEST_IDS, _now, validate_id
from .schema import _write_enabled


class MetadataUpserts(MetadataCrud):
    """Writes declared (provisioned) objects."""

    def upsert_org(
        self,
        c: sqlite3.Connection,
        org_id: str,
        name: str,
        enabled: bool,
        rate_limit: float | None,
        source: str,
    ) -> None:
        """Insert or update (inside a provisioning transaction); writes only on a change."""
        validate_id("organization", org_id)
        row = c.execute("SELECT * FROM organizations WHERE id=?", (org_id,)).fetchone()
        now = _now()
        if row is None:
            c.execute(
                "INSERT INTO organizations VALUES (?,?,?,?,?,?,?)",
                (org_id, name, int(enabled), rate_limit, source, now, now),
            )
        elif (row["name"], bool(row["enabled"]), row["rate_limit"], row["source"]) != (
            name,
            enabled,
            rate_limit,
            source,
        ):
            c.execute(
                "UPDATE organizations SET name=?, enabled=?, rate_limit=?, source=?, updated_at=?"
                " WHERE id=?",
                (name, int(enabled), rate_limit, source, now, org_id),
            )

    def upsert_ingest(
        self,
        c: sqlite3.Connection,
        org_id: str,
        definition: dict[str, Any],
        enabled: bool,
        source: str,
    ) -> None:
        ingest_id = validate_id("ingest", definition.get("id"))
        if ingest_id in RESERVED_INGEST_IDS:
            raise MetadataError(f"ingest id {ingest_id!r} is reserved")
        row = c.execute("SELECT * FROM ingests WHERE id=?", (ingest_id,)).fetchone()
        text = json.dumps(definition, sort_keys=True)
        name = str(definition.get("name") or ingest_id)
        schema = str(definition.get("schema", "ARRAY_OF_EVENTS"))
        now = _now()
        if row is None:
            c.execute(
                "INSERT INTO ingests VALUES (?,?,?,?,?,?,?,?,?)",
                (ingest_id, org_id, name, schema, text, int(enabled), source, now, now),
            )
            return
        if row["org_id"] != org_id:
            raise Conflict(
                f"ingest {ingest_id!r} already belongs to organization {row['org_id']!r}"
            )
        if (row["definition"], bool(row["enabled"]), row["source"]) != (text, enabled, source):
            c.execute(
                "UPDATE ingests SET name=?, schema=?, definition=?, enabled=?, source=?,"
                " updated_at=? WHERE id=?",
                (name, schema, text, int(enabled), source, now, ingest_id),
            )

    def upsert_filter(
        self,
        c: sqlite3.Connection,
        org_id: str,
        definition: dict[str, Any],
        enabled: bool,
        source: str,
    ) -> None:
        filter_id = validate_id("filter", definition.get("id"))
        row = c.execute(
            "SELECT * FROM filters WHERE org_id=? AND id=?", (org_id, filter_id)
        ).fetchone()
        text = json.dumps(definition, sort_keys=True)
        name = str(definition.get("name") or filter_id)
        now = _now()
        if row is None:
            c.execute(
                "INSERT INTO filters VALUES (?,?,?,?,?,?,?,?)",
                (org_id, filter_id, name, text, int(enabled), source, now, now),
            )
        elif (row["definition"], bool(row["enabled"]), row["source"]) != (text, enabled, source):
            c.execute(
                "UPDATE filters SET name=?, definition=?, enabled=?, source=?, updated_at=?"
                " WHERE org_id=? AND id=?",
                (name, text, int(enabled), source, now, org_id, filter_id),
            )

    def upsert_key(
        self,
        c: sqlite3.Connection,
        org_id: str,
        name: str,
        digest: bytes,
        permissions: frozenset[str],
        org_wide: bool,
        enabled: bool,
        source: str,
    ) -> None:
        """Provisioning: the key ``name`` of ``org_id`` (from ``source``) gets this material.

        The stored hash is replaced only when ``digest`` no longer verifies against it, so a
        restart with an unchanged config writes nothing.
        """
        row = c.execute(
            "SELECT * FROM api_keys WHERE org_id=? AND name=? AND source=?",
            (org_id, name, source),
        ).fetchone()
        now = _now()
        lookup = self._lookup(digest)
        can_read, can_write = int("READ" in permissions), int("WRITE" in permissions)
        if row is None:
            params, salt, hashed = _hash_new(digest)
            c.execute(
                "INSERT INTO api_keys VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    self._new_key_id(c),
                    org_id,
                    name,
                    int(org_wide),
                    can_read,
                    can_write,
                    int(enabled),
                    lookup,
                    params,
                    salt,
                    hashed,
                    "",
                    source,
                    now,
                    now,
                ),
            )
            return
        same_secret = row["lookup"] == lookup and hmac.compare_digest(
            _scrypt(digest, row["salt"], row["hash_params"]), row["hash"]
        )
        if not same_secret:
            params, salt, hashed = _hash_new(digest)
            c.execute(
                "UPDATE api_keys SET lookup=?, hash_params=?, salt=?, hash=?, updated_at=?"
                " WHERE id=?",
                (lookup, params, salt, hashed, now, row["id"]),
            )
        if (row["org_wide"], row["can_read"], row["can_write"], row["enabled"]) != (
            int(org_wide),
            can_read,
            can_write,
            int(enabled),
        ):
            c.execute(
                "UPDATE api_keys SET org_wide=?, can_read=?, can_write=?, enabled=?, updated_at=?"
                " WHERE id=?",
                (int(org_wide), can_read, can_write, int(enabled), now, row["id"]),
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction for callers that combine several ``upsert_*`` calls."""
        with self._tx() as c:
            yield c

    def disable_missing(
        self,
        c: sqlite3.Connection,
        source: str,
        *,
        orgs: set[str],
        ingests: set[str],
        filters: set[tuple[str, str]],
        keys: set[tuple[str, str]],
    ) -> None:
        """Disable objects from ``source`` that are no longer declared (never deletes)."""
        now = _now()
        for r in c.execute(
            "SELECT id FROM organizations WHERE source=? AND enabled=1", (source,)
        ).fetchall():
            if r["id"] not in orgs:
                _write_enabled(c, "organizations", False, now, r["id"])
        rows = c.execute("SELECT id FROM ingests WHERE source=? AND enabled=1", (source,))
        for r in rows.fetchall():
            if r["id"] not in ingests:
                _write_enabled(c, "ingests", False, now, r["id"])
        for r in c.execute(
            "SELECT org_id, id FROM filters WHERE source=? AND enabled=1", (source,)
        ).fetchall():
            if (r["org_id"], r["id"]) not in filters:
                _write_enabled(c, "filters", False, now, r["org_id"], r["id"])
        for r in c.execute(
            "SELECT id, org_id, name FROM api_keys WHERE source=? AND enabled=1", (source,)
        ).fetchall():
            if (r["org_id"], r["name"]) not in keys:
                _write_enabled(c, "api_keys", False, now, r["id"])
