"""The SQLite schema of ``<data_dir>/metadata.sqlite3`` and the one row update every table shares.

Guarantees:
- Objects are never deleted, only disabled (``enabled`` and ``updated_at``), so ids are never
  reused by accident.
"""

from __future__ import annotations

import sqlite3

DB_NAME = "metadata.sqlite3"

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
