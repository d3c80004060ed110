"""Validated management operations shared by the CLI, the admin API and provisioning.

Guarantees:
- An ingest or filter definition is checked by the engine itself (``eventtally.Engine``) before it
  is stored, so a stored definition never fails when the server builds an organization's engine.
- The per-organization filter limit (default 100) is enforced on creation and re-enabling.
- Errors are :class:`~eventtally.server.metadata.MetadataError` with an operator-readable message.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import eventtally

from .metadata import (
    ApiKeyRecord,
    FilterRecord,
    IngestRecord,
    MetadataError,
    MetadataStore,
    Organization,
    parse_permissions,
)

__all__ = ["Manager", "validate_filter", "validate_ingest"]


def validate_ingest(definition: object) -> dict[str, Any]:
    """Check an ingest definition with the engine; return it (``schema`` defaulted)."""
    if not isinstance(definition, dict):
        raise MetadataError("ingest definition: expected a JSON object")
    defn = dict(definition)
    defn.setdefault("schema", "ARRAY_OF_EVENTS")
    try:
        eventtally.Engine([copy.deepcopy(defn)], [])
    except (eventtally.EventtallyError, TypeError) as exc:
        raise MetadataError(f"invalid ingest definition: {exc}") from exc
    return defn


def validate_filter(definition: object) -> dict[str, Any]:
    """Check a filter definition (spec 5.7) with the engine; return it."""
    if not isinstance(definition, dict):
        raise MetadataError("filter definition: expected a JSON object")
    defn = dict(definition)
    try:
        eventtally.Engine([], [copy.deepcopy(defn)])
    except (eventtally.EventtallyError, TypeError) as exc:
        raise MetadataError(f"invalid filter definition: {exc}") from exc
    return defn


def _checked_definition(
    definition: dict[str, Any], validate: Callable[[object], dict[str, Any]]
) -> dict[str, Any]:
    """A copy of ``definition`` without an empty ``id``, checked by ``validate``.

    A definition without an id is checked under a probe id; the store generates the real one.
    """
    defn = dict(definition)
    if not defn.get("id"):
        defn.pop("id", None)
    probe = dict(defn)
    probe.setdefault("id", "_eventtally_probe")
    validate(probe)
    return defn


class Manager:
    """Create, list, enable and disable metadata objects with validation."""

    def __init__(self, store: MetadataStore, *, max_filters_per_org: int = 100) -> None:
        self.store = store
        self.max_filters = max_filters_per_org

    # organizations
    def create_org(
        self,
        org_id: str | None,
        name: str | None = None,
        *,
        rate_limit: float | None = None,
        source: str = "cli",
    ) -> Organization:
        if rate_limit is not None and rate_limit < 0:
            raise MetadataError("rate limit: must not be negative")
        return self.store.create_org(org_id, name, rate_limit=rate_limit, source=source)

    def list_orgs(self) -> list[Organization]:
        return self.store.list_orgs()

    def set_org_enabled(self, org_id: str, enabled: bool) -> Organization:
        return self.store.set_org_enabled(org_id, enabled)

    # ingests
    def create_ingest(
        self, org_id: str, definition: dict[str, Any], *, source: str = "cli"
    ) -> IngestRecord:
        defn = _checked_definition(definition, validate_ingest)
        defn.setdefault("schema", "ARRAY_OF_EVENTS")
        return self.store.create_ingest(org_id, defn, source=source)

    def list_ingests(self, org_id: str | None = None) -> list[IngestRecord]:
        return self.store.list_ingests(org_id)

    def set_ingest_enabled(
        self, ingest_id: str, enabled: bool, *, org_id: str | None = None
    ) -> IngestRecord:
        return self.store.set_ingest_enabled(ingest_id, enabled, org_id=org_id)

    # filters
    def create_filter(
        self, org_id: str, definition: dict[str, Any], *, source: str = "cli"
    ) -> FilterRecord:
        defn = _checked_definition(definition, validate_filter)
        return self.store.create_filter(org_id, defn, max_filters=self.max_filters, source=source)

    def list_filters(self, org_id: str | None = None) -> list[FilterRecord]:
        return self.store.list_filters(org_id)

    def set_filter_enabled(self, org_id: str, filter_id: str, enabled: bool) -> FilterRecord:
        return self.store.set_filter_enabled(
            org_id, filter_id, enabled, max_filters=self.max_filters
        )

    # API keys
    def create_key(
        self,
        org_id: str,
        name: str,
        permissions: Any,
        *,
        org_wide: bool = True,
        source: str = "cli",
    ) -> tuple[ApiKeyRecord, str]:
        perms = parse_permissions(permissions)
        return self.store.create_key(org_id, name, perms, org_wide=org_wide, source=source)

    def list_keys(self, org_id: str | None = None) -> list[ApiKeyRecord]:
        return self.store.list_keys(org_id)

    def set_key_enabled(
        self, key_id: str, enabled: bool, *, org_id: str | None = None
    ) -> ApiKeyRecord:
        return self.store.set_key_enabled(key_id, enabled, org_id=org_id)
