"""The metadata's records: organizations, ingests, filters and API keys, and their ids.

Guarantees:
- Records are frozen: the request path shares them between threads without copies.
- :func:`validate_id` accepts exactly 1-64 of ``[A-Za-z0-9_.-]`` starting alphanumeric, so an
  id is always one URL path segment; the ingest ids in :data:`RESERVED_INGEST_IDS` are refused.
- ``to_dict`` is the admin API's JSON shape (camelCase, RFC 3339 UTC times, never a secret).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..errors import MetadataError

PERMISSIONS = ("READ", "WRITE")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Single path segments with another meaning on the server; an ingest may not be named so.
RESERVED_INGEST_IDS = frozenset({"api", "admin", "healthz"})


def validate_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a usable id: 1-64 of ``[A-Za-z0-9_.-]``, starting alphanumeric."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise MetadataError(
            f"{kind} id {value!r} is invalid: use 1-64 characters of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return value


def parse_permissions(value: object) -> frozenset[str]:
    """``["READ", "WRITE"]`` (any case; a comma-separated string also works) → a frozenset."""
    items: Iterable[object]
    if isinstance(value, str):
        items = [p for p in value.split(",") if p.strip()]
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        raise MetadataError('permissions: expected a list such as ["READ", "WRITE"]')
    perms: set[str] = set()
    for item in items:
        if not isinstance(item, str) or item.strip().upper() not in PERMISSIONS:
            raise MetadataError(f"permissions: {item!r} is not READ or WRITE")
        perms.add(item.strip().upper())
    if not perms:
        raise MetadataError("permissions: give READ and/or WRITE")
    return frozenset(perms)


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Organization:
    """A tenant.  ``rate_limit`` ``None`` means the server default."""

    id: str
    name: str
    enabled: bool
    rate_limit: float | None
    source: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "enabled": self.enabled,
            "rateLimit": self.rate_limit,
            "source": self.source,
            "createdAt": _iso(self.created_at),
        }


@dataclass(frozen=True)
class IngestRecord:
    """An ingest: its engine definition (semantics.md §1) plus status."""

    id: str
    org_id: str
    name: str
    schema: str
    definition: dict[str, Any]
    enabled: bool
    source: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organizationId": self.org_id,
            "name": self.name,
            "schema": self.schema,
            "definition": self.definition,
            "enabled": self.enabled,
            "source": self.source,
            "createdAt": _iso(self.created_at),
        }


@dataclass(frozen=True)
class FilterRecord:
    """A filter definition (spec 5.7) plus status."""

    org_id: str
    id: str
    name: str
    definition: dict[str, Any]
    enabled: bool
    source: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organizationId": self.org_id,
            "name": self.name,
            "definition": self.definition,
            "enabled": self.enabled,
            "source": self.source,
            "createdAt": _iso(self.created_at),
        }


@dataclass(frozen=True)
class ApiKeyRecord:
    """The public side of an API key (never its secret)."""

    id: str
    org_id: str
    name: str
    org_wide: bool
    permissions: frozenset[str]
    enabled: bool
    display: str
    source: str
    created_at: float

    @property
    def can_read(self) -> bool:
        return "READ" in self.permissions

    @property
    def can_write(self) -> bool:
        return "WRITE" in self.permissions

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organizationId": self.org_id,
            "name": self.name,
            "orgWide": self.org_wide,
            "permissions": [p for p in PERMISSIONS if p in self.permissions],
            "enabled": self.enabled,
            "display": self.display,
            "source": self.source,
            "createdAt": _iso(self.created_at),
        }


_Owned = TypeVar("_Owned", IngestRecord, FilterRecord, ApiKeyRecord)


def _of_org(records: Iterable[_Owned], org_id: str | None) -> list[_Owned]:
    """``records`` of organization ``org_id`` (all of them when ``None``), in order."""
    return [r for r in records if org_id is None or r.org_id == org_id]
