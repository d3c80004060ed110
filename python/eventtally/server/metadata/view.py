"""The immutable in-memory view of all metadata that the request path reads.

Guarantees:
- A :class:`MetadataView` never changes after it is built; the store replaces it whole after
  every committed change, so a reader holding one sees one consistent state without a lock.
- Its cache of verified keys lives and dies with it: any metadata change starts a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .keys import _KeySecret
from .records import ApiKeyRecord, FilterRecord, IngestRecord, Organization, _of_org


@dataclass(frozen=True)
class MetadataView:
    """An immutable view of all metadata, rebuilt whenever the database changes."""

    orgs: dict[str, Organization] = field(default_factory=dict)
    ingests: dict[str, IngestRecord] = field(default_factory=dict)
    #: org id → its filters (enabled and disabled), in creation order
    filters: dict[str, tuple[FilterRecord, ...]] = field(default_factory=dict)
    keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    keys_by_lookup: dict[str, tuple[str, ...]] = field(default_factory=dict)
    secrets: dict[str, _KeySecret] = field(default_factory=dict)
    #: sha256(key) → key id, only for keys whose scrypt hash verified.  It lives and dies with
    #: the view, so any metadata change (a rotated or disabled key) starts a fresh cache.
    verified: dict[bytes, str] = field(default_factory=dict, compare=False, repr=False)

    def org_ingests(self, org_id: str) -> list[IngestRecord]:
        return _of_org(self.ingests.values(), org_id)
