"""Metadata: organizations, ingests, filters and API keys in SQLite (stdlib ``sqlite3``).

:class:`MetadataStore` is built in layers, one module each:

=============== ==========================================================================
``records``      the frozen records and id rules
``keys``         API-key material: generation, pepper, lookup index, scrypt
``schema``       the SQLite schema
``view``         :class:`MetadataView`, the immutable view the request path reads
``store``        connection, transactions, the view, authentication
``crud``         the operator's create/list/enable/disable
``upserts``      provisioning support (idempotent upserts, ``disable_missing``)
=============== ==========================================================================

Guarantees (each module states its own in detail):
- Everything lives in ``<data_dir>/metadata.sqlite3`` (WAL mode), so the CLI can change it while a
  server runs; the server notices through ``PRAGMA data_version``
  (:meth:`MetadataStore.reload_if_changed`).
- Every object belongs to one organization.  Ingest ids are global (they are the ingest URL);
  filter ids and key names are per organization.
- Objects are never deleted, only disabled, so ids are never reused by accident.
- A raw API key is never stored (``keys.py``); authentication is O(1) and verifies with
  :func:`hmac.compare_digest`.
- Reads on the request path use the immutable :class:`MetadataView` (:attr:`MetadataStore.view`),
  never the database.
"""

from __future__ import annotations

from ..errors import Conflict, MetadataError, NotFound
from .keys import digest_from_sha256_hex, generate_key, key_digest
from .records import (
    PERMISSIONS,
    RESERVED_INGEST_IDS,
    ApiKeyRecord,
    FilterRecord,
    IngestRecord,
    Organization,
    parse_permissions,
    validate_id,
)
from .schema import DB_NAME
from .upserts import MetadataUpserts
from .view import MetadataView

__all__ = [
    "DB_NAME",
    "PERMISSIONS",
    "RESERVED_INGEST_IDS",
    "ApiKeyRecord",
    "Conflict",
    "FilterRecord",
    "IngestRecord",
    "MetadataError",
    "MetadataStore",
    "MetadataView",
    "NotFound",
    "Organization",
    "digest_from_sha256_hex",
    "generate_key",
    "key_digest",
    "parse_permissions",
    "validate_id",
]


class MetadataStore(MetadataUpserts):
    """The SQLite-backed store.  Thread-safe: one connection behind a lock."""
