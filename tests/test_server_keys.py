"""API keys: Write-only, Read-only, disabled, cross-organization; hashing and live changes."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eventtally.server import EventtallyHTTPServer, Manager, MetadataStore
from eventtally.server.metadata import MetadataError
from eventtally.server.metadata import store as metadata_store
from tests.server_support import (
    BETA_INGEST,
    BETA_KEY,
    DISABLED_KEY,
    INGEST,
    READ_KEY,
    SEGMENT_KEY,
    WRITE_KEY,
    Client,
    query,
    running_server,
)

BODY = b'[{"type":"track","event":"A","receivedAt":"2024-05-14T10:00:00Z"}]'


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_write_only_key_writes_but_cannot_read(client: Client) -> None:
    """A Write-only key ingests (200) and is refused on reads (403)."""
    assert client.ingest(BODY, key=WRITE_KEY).status == 200
    assert client.results(query("all-events"), key=WRITE_KEY).status == 403


def test_read_only_key_reads_but_cannot_write(client: Client) -> None:
    """A Read-only key reads (200) and is refused on ingest (403)."""
    assert client.results(query("all-events"), key=READ_KEY).status == 200
    assert client.ingest(BODY, key=READ_KEY).status == 403


def test_disabled_key_is_refused_everywhere(client: Client) -> None:
    """A disabled key gets 401 on ingest, reads and ping."""
    assert client.ingest(BODY, key=DISABLED_KEY).message == "Disabled API Key"
    assert client.results(query("all-events"), key=DISABLED_KEY).status == 401
    assert client.request("GET", "/api/v1/organization/ping", key=DISABLED_KEY).status == 401


def test_cross_organization_key_sees_and_writes_nothing(client: Client) -> None:
    """Beta's key cannot write acme's ingest nor read acme's data, and vice versa."""
    assert client.ingest(BODY).status == 200
    assert client.ingest(BODY, ingest=INGEST, key=BETA_KEY).status == 404
    assert client.ingest(BODY, ingest=BETA_INGEST, key=SEGMENT_KEY).status == 404
    assert client.results(query("by-type"), key=BETA_KEY).status == 404
    assert client.results(query("all-events"), key=BETA_KEY).json() == []
    assert sum(r["value"] for r in client.results(query("all-events")).json()) == 1


def test_raw_keys_are_not_stored(server: EventtallyHTTPServer, tmp_path: Path) -> None:
    """Neither the raw key nor its plain SHA-256 appears in the database; the pepper is 0600."""
    data = tmp_path / "data"
    db = b"".join(p.read_bytes() for p in data.glob("metadata.sqlite3*"))
    for raw in (SEGMENT_KEY, READ_KEY, WRITE_KEY):
        assert raw.encode() not in db
        digest = hashlib.sha256(raw.encode()).digest()
        assert digest not in db and digest.hex().encode() not in db
    mode = stat.S_IMODE((data / "secret.key").stat().st_mode)
    assert mode == 0o600


def test_key_sha256_provisioning_works(tmp_path: Path) -> None:
    """A key provisioned as ``key_sha256`` authenticates with the raw key."""
    raw = "hashed-only-key-7f3a"
    extra = f"""
[[organizations]]
id = "gamma"

[[organizations.api_keys]]
name = "ci"
key_sha256 = "{hashlib.sha256(raw.encode()).hexdigest()}"
permissions = ["READ"]
"""
    with running_server(tmp_path, extra=extra) as srv:
        c = Client(srv, key=raw)
        assert c.request("GET", "/api/v1/filter-definitions").json() == []
        c.close()


def test_key_created_in_another_process_works_at_once(
    server: EventtallyHTTPServer, tmp_path: Path
) -> None:
    """A key created through a second store (as the CLI does) is usable on the next request."""
    other = MetadataStore(tmp_path / "data")
    try:
        record, raw = Manager(other).create_key("acme", "new", ["WRITE"])
    finally:
        other.close()
    assert len(raw) == 72 and raw.startswith(record.id + "-")
    c = Client(server, key=raw)
    assert c.ingest(BODY).status == 200
    c.close()


def test_disabling_a_key_in_another_process_takes_effect(
    server: EventtallyHTTPServer, tmp_path: Path
) -> None:
    """Disabling a key through a second store (as the CLI does) refuses the very next request:
    the revocation has taken effect by the time the command returns."""
    other = MetadataStore(tmp_path / "data")
    try:
        key_id = next(k.id for k in other.list_keys("acme") if k.name == "writer")
        c = Client(server, key=WRITE_KEY)
        assert c.ingest(BODY).status == 200  # verified and cached
        Manager(other).set_key_enabled(key_id, False)
        assert c.ingest(BODY).message == "Disabled API Key"
        assert c.results(query("all-events"), key=WRITE_KEY).status == 401
        c.close()
    finally:
        other.close()


def test_disabled_organization_refuses_its_keys(
    server: EventtallyHTTPServer, tmp_path: Path
) -> None:
    """Disabling an organization makes its keys answer 401."""
    other = MetadataStore(tmp_path / "data")
    try:
        Manager(other).set_org_enabled("beta", False)
    finally:
        other.close()
    c = Client(server, key=BETA_KEY)
    assert c.ingest(BODY, ingest=BETA_INGEST).message == "Organization is disabled"
    c.close()


def test_permissions_are_validated(tmp_path: Path) -> None:
    """Unknown permissions and empty names are refused."""
    store = MetadataStore(tmp_path)
    try:
        m = Manager(store)
        m.create_org("o1")
        with pytest.raises(MetadataError):
            m.create_key("o1", "k", ["ADMIN"])
        with pytest.raises(MetadataError):
            m.create_key("o1", "", ["READ"])
        with pytest.raises(MetadataError):
            m.create_key("nosuch", "k", ["READ"])
    finally:
        store.close()


def test_authentication_does_not_scan_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With many keys, an unknown key is rejected without any scrypt work (index lookup); a
    known key costs one scrypt, for itself only, and is answered from memory after that."""
    store = MetadataStore(tmp_path)
    try:
        m = Manager(store)
        m.create_org("o1")
        raws = [m.create_key("o1", f"k{i}", ["READ"])[1] for i in range(20)]
        # Count the scrypt runs rather than time them: a time bound holds only on an idle machine.
        scrypts: list[bytes] = []
        real_scrypt = metadata_store._scrypt

        def counted_scrypt(digest: bytes, salt: bytes, params: str) -> bytes:
            scrypts.append(digest)
            return real_scrypt(digest, salt, params)

        monkeypatch.setattr(metadata_store, "_scrypt", counted_scrypt)
        for i in range(200):
            assert store.authenticate(f"wrong-{i}") is None
        assert scrypts == []
        assert store.authenticate(raws[7]) is not None
        assert len(scrypts) == 1  # the one candidate the lookup index names
        for _ in range(1000):
            assert store.authenticate(raws[7]) is not None  # cached after one verification
        assert len(scrypts) == 1
    finally:
        store.close()


def test_keys_database_rows_hold_salted_hashes(tmp_path: Path) -> None:
    """Two keys get different salts; rows carry scrypt parameters."""
    store = MetadataStore(tmp_path)
    try:
        m = Manager(store)
        m.create_org("o1")
        m.create_key("o1", "a", ["READ"])
        m.create_key("o1", "b", ["READ"])
    finally:
        store.close()
    con = sqlite3.connect(tmp_path / "metadata.sqlite3")
    rows = con.execute("SELECT salt, hash, hash_params FROM api_keys").fetchall()
    con.close()
    assert len({r[0] for r in rows}) == 2
    assert all(r[2].startswith("scrypt$") for r in rows)
