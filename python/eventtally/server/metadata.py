"""Metadata store: organizations, ingests, filters and API keys in SQLite (stdlib ``sqlite3``).

Guarantees:
- Everything lives in ``<data_dir>/metadata.sqlite3`` (WAL mode), so the CLI can change it while a
  server runs; the server notices through ``PRAGMA data_version``
  (:meth:`MetadataStore.reload_if_changed`).
- Every object belongs to one organization.  Ingest ids are global (they are the ingest URL);
  filter ids and key names are per organization.
- Objects are never deleted, only disabled, so ids are never reused by accident.
- A raw API key is never stored.  A key is stored as ``scrypt(sha256(key), per-key salt)``; a
  provisioned ``key_sha256`` is the same ``sha256(key)``, so both forms verify the same way.
  Verification uses :func:`hmac.compare_digest`.
- Authentication is O(1): keys are indexed by ``HMAC-SHA256(pepper, sha256(key))`` truncated to
  80 bits, where the pepper is a random secret in ``<data_dir>/secret.key`` (not in the
  database, so a leaked database alone does not allow fast offline guessing).  Only the one
  matching candidate is checked with scrypt, and a verified key is cached in memory until the
  metadata changes.
- Reads on the request path use an immutable in-memory :class:`Snapshot`, never the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from eventtally.durability.files import make_private_dirs, open_private

__all__ = [
    "PERMISSIONS",
    "ApiKeyRecord",
    "Conflict",
    "FilterRecord",
    "IngestRecord",
    "MetadataError",
    "MetadataStore",
    "NotFound",
    "Organization",
    "Snapshot",
    "generate_key",
    "parse_permissions",
    "validate_id",
]

PERMISSIONS = ("READ", "WRITE")
DB_NAME = "metadata.sqlite3"
PEPPER_NAME = "secret.key"
# scrypt cost: about 35 ms and 16 MiB per verification on the reference machine.  It is paid
# once per key per process (verified keys are cached), never per request.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_LOOKUP_HEX = 20  # 80 bits of the peppered HMAC: collisions are negligible for any key count
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Single path segments with another meaning on the server; an ingest may not be named so.
RESERVED_INGEST_IDS = frozenset({"api", "admin", "healthz"})


class MetadataError(ValueError):
    """A metadata operation was refused; the message is safe to show to the operator."""


class NotFound(MetadataError):
    """The named organization, ingest, filter or key does not exist."""


class Conflict(MetadataError):
    """An object with that id already exists."""


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


def generate_key() -> tuple[str, str]:
    """A new raw key and its display prefix: ``XXXXXXXX-`` + 63 random URL-safe characters.

    The shape (72 characters) follows the hosted service's documented placeholder; the 8 hex
    characters before the dash are the public key id, the rest carries 378 random bits.
    """
    display = secrets.token_hex(4)
    return f"{display}-{secrets.token_urlsafe(48)[:63]}", display


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


@dataclass(frozen=True)
class _KeySecret:
    params: str
    salt: bytes
    digest: bytes


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of all metadata, rebuilt whenever the database changes."""

    orgs: dict[str, Organization] = field(default_factory=dict)
    ingests: dict[str, IngestRecord] = field(default_factory=dict)
    #: org id → its filters (enabled and disabled), in creation order
    filters: dict[str, tuple[FilterRecord, ...]] = field(default_factory=dict)
    keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    keys_by_lookup: dict[str, tuple[str, ...]] = field(default_factory=dict)
    secrets: dict[str, _KeySecret] = field(default_factory=dict)
    #: sha256(key) → key id, only for keys whose scrypt hash verified.  It lives and dies with
    #: the snapshot, so any metadata change (a rotated or disabled key) starts a fresh cache.
    verified: dict[bytes, str] = field(default_factory=dict, compare=False, repr=False)

    def org_ingests(self, org_id: str) -> list[IngestRecord]:
        return _of_org(self.ingests.values(), org_id)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS organizations(
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  rate_limit REAL,
  source TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS ingests(
  id TEXT PRIMARY KEY,
  org_id TEXT NOT NULL REFERENCES organizations(id),
  name TEXT NOT NULL,
  schema TEXT NOT NULL,
  definition TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  source TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ingests_org ON ingests(org_id);
CREATE TABLE IF NOT EXISTS filters(
  org_id TEXT NOT NULL REFERENCES organizations(id),
  id TEXT NOT NULL,
  name TEXT NOT NULL,
  definition TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  source TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  PRIMARY KEY (org_id, id));
CREATE TABLE IF NOT EXISTS api_keys(
  id TEXT PRIMARY KEY,
  org_id TEXT NOT NULL REFERENCES organizations(id),
  name TEXT NOT NULL,
  org_wide INTEGER NOT NULL DEFAULT 1,
  can_read INTEGER NOT NULL,
  can_write INTEGER NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  lookup TEXT NOT NULL,
  hash_params TEXT NOT NULL,
  salt BLOB NOT NULL,
  hash BLOB NOT NULL,
  display TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS api_keys_lookup ON api_keys(lookup);
CREATE INDEX IF NOT EXISTS api_keys_org ON api_keys(org_id, name);
"""


def _load_pepper(data_dir: Path) -> bytes:
    """Read ``secret.key``, creating it (mode 0600, atomically) on first use."""
    path = data_dir / PEPPER_NAME
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    tmp = data_dir / f".{PEPPER_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        # Fails if another process won the race: then use theirs.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text().strip())


def key_digest(raw_key: str) -> bytes:
    """SHA-256 of the raw key's UTF-8 bytes: the material that is salted and hashed."""
    return hashlib.sha256(raw_key.encode("utf-8")).digest()


def digest_from_sha256_hex(value: object) -> bytes:
    """Parse a provisioned ``key_sha256`` (64 hex digits)."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        raise MetadataError("key_sha256: expected 64 hexadecimal digits (sha256 of the key)")
    return bytes.fromhex(value.strip())


def _scrypt(digest: bytes, salt: bytes, params: str) -> bytes:
    name, n, r, p = params.split("$")
    if name != "scrypt":
        raise MetadataError(f"unknown key hash scheme {name!r}")
    return hashlib.scrypt(digest, salt=salt, n=int(n), r=int(r), p=int(p), dklen=32)


def _hash_new(digest: bytes) -> tuple[str, bytes, bytes]:
    params = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}"
    salt = secrets.token_bytes(16)
    return params, salt, _scrypt(digest, salt, params)


#: The ``WHERE`` clause that names one row of each table.
_ROW_KEY = {
    "organizations": "id=?",
    "ingests": "id=?",
    "filters": "org_id=? AND id=?",
    "api_keys": "id=?",
}


def _write_enabled(c: sqlite3.Connection, table: str, enabled: bool, now: float, *key: str) -> None:
    """Set ``enabled`` (and ``updated_at``) of the one row of ``table`` named by ``key``."""
    c.execute(
        f"UPDATE {table} SET enabled=?, updated_at=? WHERE {_ROW_KEY[table]}",
        (int(enabled), now, *key),
    )


_Owned = TypeVar("_Owned", IngestRecord, FilterRecord, ApiKeyRecord)


def _of_org(records: Iterable[_Owned], org_id: str | None) -> list[_Owned]:
    """``records`` of organization ``org_id`` (all of them when ``None``), in order."""
    return [r for r in records if org_id is None or r.org_id == org_id]


class MetadataStore:
    """The SQLite-backed store.  Thread-safe: one connection behind a lock."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        make_private_dirs(self.data_dir)
        self._pepper = _load_pepper(self.data_dir)
        db = self.data_dir / DB_NAME
        if not db.exists():
            # SQLite gives its -wal and -shm files the database file's mode: create it 0600.
            os.close(open_private(db, os.O_RDWR | os.O_CREAT))
        self._lock = threading.RLock()
        # sha256(key) -> the lock its scrypt verification runs under, while one runs.
        self._verifying: dict[bytes, threading.Lock] = {}
        self._verifying_lock = threading.Lock()
        self._conn = sqlite3.connect(
            db, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
        self._data_version = -1
        self._snapshot = Snapshot()
        self.reload()

    # ----------------------------------------------------------------- plumbing

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the snapshot is rebuilt after it commits."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            self.reload()

    def _set_enabled_by_id(
        self, table: str, kind: str, obj_id: str, enabled: bool, org_id: str | None
    ) -> None:
        """Enable or disable the ingest or key ``obj_id``; with ``org_id``, only if it owns it."""
        with self._tx() as c:
            row = c.execute(f"SELECT org_id FROM {table} WHERE id=?", (obj_id,)).fetchone()
            if row is None or (org_id is not None and row["org_id"] != org_id):
                raise NotFound(f"{kind} {obj_id!r} not found")
            _write_enabled(c, table, enabled, _now(), obj_id)

    @property
    def snapshot(self) -> Snapshot:
        """The current immutable view (cheap: no database access)."""
        return self._snapshot

    def data_version(self) -> int:
        with self._lock:
            row = self._conn.execute("PRAGMA data_version").fetchone()
            return int(row[0])

    def reload_if_changed(self) -> bool:
        """Rebuild the snapshot if another connection (the CLI) committed; True if it did."""
        if self.data_version() == self._data_version:
            return False
        self.reload()
        return True

    def reload(self) -> None:
        """Rebuild the snapshot from the database and forget verified keys."""
        with self._lock:
            self._data_version = self.data_version()
            c = self._conn
            orgs = {
                r["id"]: Organization(
                    r["id"],
                    r["name"],
                    bool(r["enabled"]),
                    r["rate_limit"],
                    r["source"],
                    r["created_at"],
                )
                for r in c.execute("SELECT * FROM organizations ORDER BY created_at, id")
            }
            ingests = {
                r["id"]: IngestRecord(
                    r["id"],
                    r["org_id"],
                    r["name"],
                    r["schema"],
                    json.loads(r["definition"]),
                    bool(r["enabled"]),
                    r["source"],
                    r["created_at"],
                )
                for r in c.execute("SELECT * FROM ingests ORDER BY created_at, id")
            }
            filters: dict[str, list[FilterRecord]] = {}
            for r in c.execute("SELECT * FROM filters ORDER BY created_at, id"):
                filters.setdefault(r["org_id"], []).append(
                    FilterRecord(
                        r["org_id"],
                        r["id"],
                        r["name"],
                        json.loads(r["definition"]),
                        bool(r["enabled"]),
                        r["source"],
                        r["created_at"],
                    )
                )
            keys: dict[str, ApiKeyRecord] = {}
            by_lookup: dict[str, list[str]] = {}
            key_secrets: dict[str, _KeySecret] = {}
            for r in c.execute("SELECT * FROM api_keys ORDER BY created_at, id"):
                perms = {p for p, col in (("READ", "can_read"), ("WRITE", "can_write")) if r[col]}
                keys[r["id"]] = ApiKeyRecord(
                    r["id"],
                    r["org_id"],
                    r["name"],
                    bool(r["org_wide"]),
                    frozenset(perms),
                    bool(r["enabled"]),
                    r["display"],
                    r["source"],
                    r["created_at"],
                )
                by_lookup.setdefault(r["lookup"], []).append(r["id"])
                key_secrets[r["id"]] = _KeySecret(r["hash_params"], r["salt"], r["hash"])
            self._snapshot = Snapshot(
                orgs=orgs,
                ingests=ingests,
                filters={k: tuple(v) for k, v in filters.items()},
                keys=keys,
                keys_by_lookup={k: tuple(v) for k, v in by_lookup.items()},
                secrets=key_secrets,
            )

    # ----------------------------------------------------------------- authentication

    def _lookup(self, digest: bytes) -> str:
        return hmac.new(self._pepper, digest, hashlib.sha256).hexdigest()[:_LOOKUP_HEX]

    def key_is_cached(self, raw_key: str) -> bool:
        """Whether :meth:`authenticate` would answer ``raw_key`` from memory: its key verified
        before (no scrypt) and no other connection committed since (no reload).  Never waits for
        the store's lock (``False`` while another thread holds it), so an event loop may call it.
        """
        if key_digest(raw_key) not in self._snapshot.verified:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        finally:
            self._lock.release()
        return int(row[0]) == self._data_version

    def authenticate(self, raw_key: str) -> ApiKeyRecord | None:
        """The key record for ``raw_key`` (enabled or not), or ``None`` if no key matches."""
        digest = key_digest(raw_key)
        snap = self._snapshot
        key_id = snap.verified.get(digest)
        if key_id is not None:
            return snap.keys.get(key_id)
        candidates = snap.keys_by_lookup.get(self._lookup(digest), ())
        if not candidates:
            return None
        # Concurrent first uses of one key (a client's parallel batches after a restart) wait
        # for one scrypt instead of each running its own.
        with self._verifying_lock:
            lock = self._verifying.setdefault(digest, threading.Lock())
        try:
            with lock:
                return self._verify(digest)
        finally:
            with self._verifying_lock:
                if self._verifying.get(digest) is lock:
                    del self._verifying[digest]

    def _verify(self, digest: bytes) -> ApiKeyRecord | None:
        snap = self._snapshot
        verified = snap.verified
        key_id = verified.get(digest)
        if key_id is not None:  # verified while this thread waited
            return snap.keys.get(key_id)
        for candidate in snap.keys_by_lookup.get(self._lookup(digest), ()):
            secret = snap.secrets[candidate]
            if hmac.compare_digest(_scrypt(digest, secret.salt, secret.params), secret.digest):
                if len(verified) > 100_000:  # bound memory; re-verification is only slower
                    verified.clear()
                verified[digest] = candidate
                return snap.keys.get(candidate)
        return None

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
        return self._snapshot.orgs[org_id]

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

    def list_orgs(self) -> list[Organization]:
        return list(self._snapshot.orgs.values())

    def set_org_enabled(self, org_id: str, enabled: bool) -> Organization:
        with self._tx() as c:
            self._require_org(c, org_id)
            _write_enabled(c, "organizations", enabled, _now(), org_id)
        return self._snapshot.orgs[org_id]

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
        return self._snapshot.ingests[ingest_id]

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

    def list_ingests(self, org_id: str | None = None) -> list[IngestRecord]:
        return _of_org(self._snapshot.ingests.values(), org_id)

    def set_ingest_enabled(
        self, ingest_id: str, enabled: bool, *, org_id: str | None = None
    ) -> IngestRecord:
        self._set_enabled_by_id("ingests", "ingest", ingest_id, enabled, org_id)
        return self._snapshot.ingests[ingest_id]

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
        return next(f for f in self._snapshot.filters[org_id] if f.id == filter_id)

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

    def list_filters(self, org_id: str | None = None) -> list[FilterRecord]:
        return _of_org(itertools.chain.from_iterable(self._snapshot.filters.values()), org_id)

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
        return next(f for f in self._snapshot.filters[org_id] if f.id == filter_id)

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
        return self._snapshot.keys[key_id], raw

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

    def list_keys(self, org_id: str | None = None) -> list[ApiKeyRecord]:
        return _of_org(self._snapshot.keys.values(), org_id)

    def set_key_enabled(
        self, key_id: str, enabled: bool, *, org_id: str | None = None
    ) -> ApiKeyRecord:
        self._set_enabled_by_id("api_keys", "API key", key_id, enabled, org_id)
        return self._snapshot.keys[key_id]

    # ----------------------------------------------------------------- provisioning support

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
