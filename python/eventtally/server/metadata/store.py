"""The SQLite-backed store: connection, transactions, the view, authentication.

Guarantees:
- Everything lives in ``<data_dir>/metadata.sqlite3`` (WAL mode), so the CLI can change it while
  a server runs; the server notices through ``PRAGMA data_version``
  (:meth:`MetadataStoreBase.reload_if_changed`).
- Every write is one ``BEGIN IMMEDIATE`` transaction; the view is rebuilt after it commits.
- Authentication is O(1): one indexed candidate is checked with scrypt (using
  :func:`hmac.compare_digest`), and a verified key is cached until the metadata changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventtally.durability.files import make_private_dirs, open_private

from ..errors import NotFound
from .keys import _LOOKUP_HEX, _KeySecret, _load_pepper, _scrypt, key_digest
from .records import ApiKeyRecord, FilterRecord, IngestRecord, Organization, _now
from .schema import _SCHEMA, DB_NAME, _write_enabled
from .view import MetadataView


class MetadataStoreBase:
    """The connection and the view; the CRUD and provisioning layers build on it."""

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
        self._view = MetadataView()
        self.reload()

    # ----------------------------------------------------------------- plumbing

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the view is rebuilt after it commits."""
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
    def view(self) -> MetadataView:
        """The current immutable view (cheap: no database access)."""
        return self._view

    def data_version(self) -> int:
        with self._lock:
            row = self._conn.execute("PRAGMA data_version").fetchone()
            return int(row[0])

    def reload_if_changed(self) -> bool:
        """Rebuild the view if another connection (the CLI) committed; True if it did."""
        if self.data_version() == self._data_version:
            return False
        self.reload()
        return True

    def reload(self) -> None:
        """Rebuild the view from the database and forget verified keys."""
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
            self._view = MetadataView(
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

    def cached_digest(self, raw_key: str) -> bytes | None:
        """``raw_key``'s digest when :meth:`authenticate` would answer it from memory: its key
        verified before (no scrypt) and no other connection committed since (no reload); else
        ``None``.  Never waits for the store's lock (``None`` while another thread holds it), so
        an event loop may call it.  Passing the digest on to :meth:`authenticate` spares that
        call its own SHA-256 of the key.
        """
        digest = key_digest(raw_key)
        if digest not in self._view.verified:
            return None
        if not self._lock.acquire(blocking=False):
            return None
        try:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        finally:
            self._lock.release()
        return digest if int(row[0]) == self._data_version else None

    def authenticate(self, raw_key: str, digest: bytes | None = None) -> ApiKeyRecord | None:
        """The key record for ``raw_key`` (enabled or not), or ``None`` if no key matches.
        ``digest``: ``key_digest(raw_key)`` when the caller has it already
        (:meth:`cached_digest`)."""
        if digest is None:
            digest = key_digest(raw_key)
        snap = self._view
        key_id = snap.verified.get(digest)
        if key_id is not None:
            return snap.keys.get(key_id)
        if not snap.keys_by_lookup.get(self._lookup(digest), ()):
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
        snap = self._view
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
