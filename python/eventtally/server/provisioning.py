"""Declarative provisioning from the TOML config, and the quick-start demo.

Guarantees:
- :func:`apply_provisioning` makes the store match the ``[[organizations]]`` tables (with their
  ``api_keys``, ``ingests`` and ``filters``) in one transaction: all of it applies or none.
- It is idempotent: re-applying an unchanged file (every restart does) writes nothing, keeps
  every key id, and keeps every filter's aggregates.
- Objects the file declared before but no longer declares are disabled, never deleted; objects
  created with the CLI or the admin API are never touched by provisioning.
- Every definition is validated by the engine before anything is written; an error names its
  place in the file (``organizations[0].filters[1]: ...``).
- Filters come from ``file = "..."`` (a JSON object or array, relative to the config file) or
  from inline tables in the filter-definition shape of spec 5.7.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import LoadedConfig
from .errors import ProvisioningError
from .manage import Manager, validate_filter, validate_ingest
from .metadata import (
    MetadataError,
    MetadataStore,
    digest_from_sha256_hex,
    key_digest,
    parse_permissions,
    validate_id,
)

__all__ = [
    "DEMO_FILTER",
    "DEMO_INGEST",
    "DEMO_ORG",
    "DemoSetup",
    "ProvisioningError",
    "apply_provisioning",
    "ensure_demo",
    "parse_organizations",
]

SOURCE = "config"


@dataclass(frozen=True)
class _Key:
    name: str
    digest: bytes
    permissions: frozenset[str]
    org_wide: bool
    enabled: bool


@dataclass(frozen=True)
class _Org:
    id: str
    name: str
    enabled: bool
    rate_limit: float | None
    keys: list[_Key]
    ingests: list[tuple[dict[str, Any], bool]]
    filters: list[tuple[dict[str, Any], bool]]


def _pop_enabled(table: dict[str, Any], where: str) -> bool:
    enabled = table.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise ProvisioningError(f"{where}.enabled: expected true or false")
    return enabled


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ProvisioningError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")


def _parse_key(table: dict[str, Any], where: str) -> _Key:
    _check_keys(table, {"name", "key", "key_sha256", "permissions", "enabled", "org_wide"}, where)
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ProvisioningError(f"{where}.name: required (a non-empty string)")
    if ("key" in table) == ("key_sha256" in table):
        raise ProvisioningError(f"{where}: give exactly one of key or key_sha256")
    try:
        if "key" in table:
            raw = table["key"]
            if not isinstance(raw, str) or not raw:
                raise ProvisioningError(f"{where}.key: expected a non-empty string")
            digest = key_digest(raw)
        else:
            digest = digest_from_sha256_hex(table["key_sha256"])
        perms = parse_permissions(table.get("permissions", ["READ", "WRITE"]))
    except MetadataError as exc:
        raise ProvisioningError(f"{where}: {exc}") from exc
    org_wide = table.get("org_wide", True)
    if not isinstance(org_wide, bool):
        raise ProvisioningError(f"{where}.org_wide: expected true or false")
    return _Key(name, digest, perms, org_wide, _pop_enabled(dict(table), where))


def _load_filter_file(path: Path, where: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProvisioningError(f"{where}.file: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ProvisioningError(f"{where}.file: {path} is not valid JSON: {exc}") from exc
    items = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(i, dict) for i in items):
        raise ProvisioningError(f"{where}.file: {path} must hold a filter object or an array")
    return items


def parse_organizations(loaded: LoadedConfig) -> list[_Org]:
    """Check the ``[[organizations]]`` tables and return them normalized (nothing written)."""
    orgs: list[_Org] = []
    seen_orgs: set[str] = set()
    seen_ingests: set[str] = set()
    seen_digests: dict[bytes, str] = {}
    for i, raw in enumerate(loaded.organizations):
        where = f"organizations[{i}]"
        table = dict(raw)
        _check_keys(
            table,
            {"id", "name", "enabled", "rate_limit", "api_keys", "ingests", "filters"},
            where,
        )
        try:
            org_id = validate_id("organization", table.get("id"))
        except MetadataError as exc:
            raise ProvisioningError(f"{where}.id: {exc}") from exc
        if org_id in seen_orgs:
            raise ProvisioningError(f"{where}.id: organization {org_id!r} is declared twice")
        seen_orgs.add(org_id)
        name = table.get("name", org_id)
        if not isinstance(name, str):
            raise ProvisioningError(f"{where}.name: expected a string")
        rate = table.get("rate_limit")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
            raise ProvisioningError(f"{where}.rate_limit: expected a number")
        if rate is not None and rate < 0:
            raise ProvisioningError(f"{where}.rate_limit: must not be negative")

        keys: list[_Key] = []
        for k, key_table in enumerate(table.get("api_keys", [])):
            kwhere = f"{where}.api_keys[{k}]"
            key = _parse_key(dict(key_table), kwhere)
            if any(other.name == key.name for other in keys):
                raise ProvisioningError(f"{kwhere}.name: key {key.name!r} is declared twice")
            if key.digest in seen_digests:
                other = seen_digests[key.digest]
                raise ProvisioningError(f"{kwhere}: same key material as {other}")
            seen_digests[key.digest] = kwhere
            keys.append(key)

        ingests: list[tuple[dict[str, Any], bool]] = []
        for n, ingest_table in enumerate(table.get("ingests", [])):
            iwhere = f"{where}.ingests[{n}]"
            defn = dict(ingest_table)
            enabled = _pop_enabled(defn, iwhere)
            try:
                ingest_id = validate_id("ingest", defn.get("id"))
                defn = validate_ingest(defn)
            except MetadataError as exc:
                raise ProvisioningError(f"{iwhere}: {exc}") from exc
            if ingest_id in seen_ingests:
                raise ProvisioningError(f"{iwhere}.id: ingest {ingest_id!r} is declared twice")
            seen_ingests.add(ingest_id)
            ingests.append((defn, enabled))

        filters: list[tuple[dict[str, Any], bool]] = []
        seen_filters: set[str] = set()
        for n, filter_table in enumerate(table.get("filters", [])):
            fwhere = f"{where}.filters[{n}]"
            ftable = dict(filter_table)
            enabled = _pop_enabled(ftable, fwhere)
            if "file" in ftable:
                _check_keys(ftable, {"file"}, fwhere)
                path = Path(str(ftable["file"])).expanduser()
                if not path.is_absolute():
                    path = loaded.base_dir / path
                defs = _load_filter_file(path, fwhere)
            else:
                defs = [ftable]
            for defn in defs:
                fid = defn.get("id")
                if isinstance(fid, int) and not isinstance(fid, bool):
                    defn = {**defn, "id": str(fid)}
                try:
                    validate_id("filter", defn.get("id"))
                    defn = validate_filter(defn)
                except MetadataError as exc:
                    raise ProvisioningError(f"{fwhere}: {exc}") from exc
                if defn["id"] in seen_filters:
                    raise ProvisioningError(f"{fwhere}: filter {defn['id']!r} is declared twice")
                seen_filters.add(defn["id"])
                filters.append((defn, enabled))
        orgs.append(
            _Org(
                org_id,
                name,
                _pop_enabled(table, where),
                None if rate is None else float(rate),
                keys,
                ingests,
                filters,
            )
        )
    return orgs


def apply_provisioning(
    store: MetadataStore, loaded: LoadedConfig, *, max_filters_per_org: int = 100
) -> None:
    """Make the store match ``loaded``'s organizations (see the module guarantees)."""
    orgs = parse_organizations(loaded)
    for org in orgs:
        enabled_filters = sum(1 for _, on in org.filters if on)
        if enabled_filters > max_filters_per_org:
            raise ProvisioningError(
                f"organization {org.id!r}: {enabled_filters} filters, the limit is "
                f"{max_filters_per_org} (server.max_filters_per_org)"
            )
    try:
        with store.transaction() as c:
            for org in orgs:
                store.upsert_org(c, org.id, org.name, org.enabled, org.rate_limit, SOURCE)
                for defn, enabled in org.ingests:
                    store.upsert_ingest(c, org.id, defn, enabled, SOURCE)
                for defn, enabled in org.filters:
                    store.upsert_filter(c, org.id, defn, enabled, SOURCE)
                for key in org.keys:
                    store.upsert_key(
                        c,
                        org.id,
                        key.name,
                        key.digest,
                        key.permissions,
                        key.org_wide,
                        key.enabled,
                        SOURCE,
                    )
                if store.count_enabled_filters(c, org.id) > max_filters_per_org:
                    raise ProvisioningError(
                        f"organization {org.id!r}: more than {max_filters_per_org} enabled "
                        "filters with those created outside the config"
                    )
            store.disable_missing(
                c,
                SOURCE,
                orgs={o.id for o in orgs},
                ingests={d["id"] for o in orgs for d, _ in o.ingests},
                filters={(o.id, d["id"]) for o in orgs for d, _ in o.filters},
                keys={(o.id, k.name) for o in orgs for k in o.keys},
            )
    except MetadataError as exc:
        raise ProvisioningError(str(exc)) from exc


# ---------------------------------------------------------------------- quick-start demo

DEMO_ORG = "demo"
DEMO_INGEST: dict[str, Any] = {
    "id": "demo",
    "name": "Segment (demo)",
    "schema": "ARRAY_OF_EVENTS",
    "timestamp": {"source": "PROPERTY", "path": "@.receivedAt", "format": "ISO_8601"},
}
DEMO_FILTER: dict[str, Any] = {
    "id": "segment-events",
    "name": "Track, page and screen events by name",
    "filter": "@.type in ['track', 'page', 'screen']",
    # A track event names itself in `event`, a page or screen in `name`.
    "groupingItems": [
        {"grouping": "@.type", "alias": "type"},
        {"grouping": "@.event", "alias": "event"},
        {"grouping": "@.name", "alias": "name"},
    ],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "Events",
            "calculations": ["COUNT"],
            "calculationField": None,
            "subFilter": None,
        },
    ],
}


@dataclass(frozen=True)
class DemoSetup:
    org_id: str
    ingest_id: str
    filter_id: str
    key_id: str
    raw_key: str


def ensure_demo(manager: Manager) -> DemoSetup:
    """Create the demo organization, ingest and filter if missing, and a fresh Read+Write key.

    Raw keys are shown once and never stored, so every call issues a new demo key and disables
    the demo keys issued before it.
    """
    store = manager.store
    view = store.view
    if DEMO_ORG not in view.orgs:
        manager.create_org(DEMO_ORG, "Demo", source="demo")
    elif not view.orgs[DEMO_ORG].enabled:
        manager.set_org_enabled(DEMO_ORG, True)
    view = store.view
    ingest = view.ingests.get(DEMO_INGEST["id"])
    if ingest is None:
        manager.create_ingest(DEMO_ORG, DEMO_INGEST, source="demo")
    elif ingest.org_id == DEMO_ORG and not ingest.enabled:
        manager.set_ingest_enabled(ingest.id, True)
    elif ingest.org_id != DEMO_ORG:
        raise ProvisioningError(
            f"ingest id {ingest.id!r} is taken by organization {ingest.org_id!r}"
        )
    existing = {f.id: f for f in store.list_filters(DEMO_ORG)}
    if DEMO_FILTER["id"] not in existing:
        manager.create_filter(DEMO_ORG, DEMO_FILTER, source="demo")
    elif not existing[DEMO_FILTER["id"]].enabled:
        manager.set_filter_enabled(DEMO_ORG, DEMO_FILTER["id"], True)
    for old in store.list_keys(DEMO_ORG):
        if old.source == "demo" and old.enabled:
            manager.set_key_enabled(old.id, False)
    record, raw = manager.create_key(
        DEMO_ORG, "demo", ["READ", "WRITE"], org_wide=True, source="demo"
    )
    return DemoSetup(DEMO_ORG, DEMO_INGEST["id"], DEMO_FILTER["id"], record.id, raw)
