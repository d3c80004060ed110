"""Declarative TOML provisioning: exact issue shape, idempotent reapply, persistence, errors."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from eventtally.server import (
    ConfigFileError,
    MetadataStore,
    ProvisioningError,
    apply_provisioning,
    load_config,
    start_server,
)
from tests.server_support import (
    ALL_FILTER,
    BASE_TOML,
    BETA_INGEST,
    BETA_KEY,
    INGEST,
    SEGMENT_KEY,
    Client,
    fixture_bytes,
    query,
    running_server,
)

ISSUE_TOML = """
[server]
host = "127.0.0.1"
port = 8080
data_dir = "./eventtally-data"

[[organizations]]
id = "acme"
name = "Acme"

[[organizations.api_keys]]
name = "segment"
key = "super-secret-key"        # or key_sha256 = "…"
permissions = ["WRITE"]         # READ and/or WRITE
enabled = true

[[organizations.ingests]]       # the ingest JSON of the core issue, in TOML
id = "abc123"
name = "Segment"
schema = "ARRAY_OF_EVENTS"
timestamp = { source = "PROPERTY", path = "@.receivedAt", format = "ISO_8601" }

[[organizations.filters]]
file = "filters/events.json"    # a filter-definition JSON file; inline tables work too
"""


def _rows(data_dir: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(data_dir / "metadata.sqlite3")
    try:
        return {
            t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("organizations", "ingests", "filters", "api_keys")
        }
    finally:
        con.close()


def test_issue_example_config_serves(tmp_path: Path) -> None:
    """A complete provisioning TOML loads; data_dir and filter files resolve beside the file."""
    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / "events.json").write_text(json.dumps({**ALL_FILTER, "id": "events"}))
    cfg_path = tmp_path / "eventtally.toml"
    cfg_path.write_text(ISSUE_TOML)
    loaded = load_config(cfg_path)
    assert loaded.server.data_dir == tmp_path / "eventtally-data"
    assert loaded.server.port == 8080
    srv, _thread = start_server(loaded.server.with_overrides(port=0), provisioning=loaded)
    try:
        c = Client(srv)
        assert c.ingest(fixture_bytes("request-body-batch.json")).status == 200
        assert c.results(query("events")).status == 403  # the key is Write-only
        c.close()
    finally:
        srv.close()


def test_reapply_is_idempotent_and_aggregates_survive_restart(tmp_path: Path) -> None:
    """Restarting with the same config writes nothing new and keeps the aggregates."""
    with running_server(tmp_path) as srv:
        c = Client(srv)
        assert c.ingest(fixture_bytes("request-body-batch.json")).status == 200
        c.close()
    before = _rows(tmp_path / "data")
    with running_server(tmp_path) as srv:
        c = Client(srv)
        assert sum(r["value"] for r in c.results(query("all-events")).json()) == 7
        c.close()
    assert _rows(tmp_path / "data") == before


def test_changed_filter_is_redefined_and_unchanged_one_keeps_data(tmp_path: Path) -> None:
    """Editing one filter's file resets only that filter's aggregates."""
    with running_server(tmp_path) as srv:
        c = Client(srv)
        assert c.ingest(fixture_bytes("request-body-batch.json")).status == 200
        c.close()
    changed = {**ALL_FILTER, "name": "All events, renamed"}
    with running_server(tmp_path, filters={"all.json": changed}) as srv:
        c = Client(srv)
        assert c.results(query("all-events")).json() == []
        assert sum(r["value"] for r in c.results(query("by-type")).json()) == 7
        names = {d["id"]: d["name"] for d in c.request("GET", "/api/v1/filter-definitions").json()}
        assert names["all-events"] == "All events, renamed"
        c.close()


def test_objects_removed_from_config_are_disabled(tmp_path: Path) -> None:
    """A key, ingest and filter dropped from the file are disabled (not deleted)."""
    with running_server(tmp_path):
        pass
    smaller = textwrap.dedent(f"""
    [[organizations]]
    id = "acme"
    name = "Acme"

    [[organizations.api_keys]]
    name = "segment"
    key = "{SEGMENT_KEY}"
    permissions = ["READ", "WRITE"]

    [[organizations.ingests]]
    id = "{INGEST}"
    schema = "ARRAY_OF_EVENTS"
    """)
    with running_server(tmp_path, orgs=smaller) as srv:
        c = Client(srv)
        assert c.ingest(b"[{}]", ingest="ndjson").status == 404
        assert c.request("GET", "/api/v1/filter-definitions").json() == []
        assert c.ingest(b"[{}]", key="read-only-key-0123456789").message == "Disabled API Key"
        assert c.ingest(b"[{}]", key="beta-org-key-0123456789").status == 401
        c.close()
    store = MetadataStore(tmp_path / "data")
    try:
        assert {o.id: o.enabled for o in store.list_orgs()} == {"acme": True, "beta": False}
    finally:
        store.close()


def test_cli_objects_are_left_alone_by_provisioning(tmp_path: Path) -> None:
    """An organization created outside the config survives a reapply."""
    with running_server(tmp_path) as srv:
        srv.app.manager.create_org("manual", "Manual")
    with running_server(tmp_path) as srv:
        assert srv.app.store.view.orgs["manual"].enabled


def test_inline_filter_tables_work(tmp_path: Path) -> None:
    """A filter given inline as TOML tables is provisioned."""
    extra = """
[[organizations]]
id = "inline"

[[organizations.api_keys]]
name = "k"
key = "inline-key-123456"
permissions = ["READ"]

[[organizations.filters]]
id = "f"
name = "Inline"
intervalType = "MINUTE"
intervalCount = 5
aggregations = [{ id = 1, name = "n", calculations = ["COUNT"] }]
"""
    with running_server(tmp_path, extra=extra) as srv:
        c = Client(srv, key="inline-key-123456")
        assert [d["id"] for d in c.request("GET", "/api/v1/filter-definitions").json()] == ["f"]
        c.close()


@pytest.mark.parametrize(
    ("snippet", "needle"),
    [
        (
            '[[organizations]]\nid = "x"\n[[organizations.api_keys]]\nname = "k"\nkey = "abc"\n'
            'permissions = ["ADMIN"]\n',
            "organizations[0].api_keys[0]",
        ),
        (
            '[[organizations]]\nid = "x"\n[[organizations.api_keys]]\nname = "k"\n'
            'permissions = ["READ"]\n',
            "exactly one of key or key_sha256",
        ),
        ('[[organizations]]\nid = "bad id!"\n', "organizations[0].id"),
        (
            '[[organizations]]\nid = "x"\n[[organizations.filters]]\nfile = "missing.json"\n',
            "organizations[0].filters[0].file",
        ),
        (
            '[[organizations]]\nid = "x"\n[[organizations.filters]]\nid = "f"\n'
            'intervalType = "FORTNIGHT"\naggregations = [{ id = 1, name = "n", calculations = '
            '["COUNT"] }]\n',
            "organizations[0].filters[0]",
        ),
        ('[[organizations]]\nid = "x"\n[[organizations.ingests]]\nid = "api"\n', "reserved"),
        ('[[organizations]]\nid = "x"\ncolour = "red"\n', "colour"),
    ],
)
def test_bad_provisioning_is_refused_with_its_place(
    tmp_path: Path, snippet: str, needle: str
) -> None:
    """Invalid declarations raise ProvisioningError naming where they are; nothing is written."""
    cfg = tmp_path / "eventtally.toml"
    cfg.write_text(f'[server]\ndata_dir = "data"\n{snippet}')
    loaded = load_config(cfg)
    store = MetadataStore(tmp_path / "data")
    try:
        with pytest.raises(ProvisioningError) as info:
            apply_provisioning(store, loaded)
        assert needle in str(info.value)
        assert store.list_orgs() == []
    finally:
        store.close()


def test_filter_limit_per_organization(tmp_path: Path) -> None:
    """More enabled filters than max_filters_per_org is refused."""
    with (
        pytest.raises(ProvisioningError, match="limit"),
        running_server(tmp_path, {"max_filters_per_org": 1}),
    ):
        pass


def test_unknown_server_setting_is_an_error(tmp_path: Path) -> None:
    """A typo in [server] is reported instead of silently using a default."""
    cfg = tmp_path / "eventtally.toml"
    cfg.write_text("[server]\nprot = 8080\n")
    with pytest.raises(ConfigFileError, match="prot"):
        load_config(cfg)
    cfg.write_text('[server]\nport = "8080"\n')
    with pytest.raises(ConfigFileError, match="port"):
        load_config(cfg)


def test_redefined_single_ingest_takes_effect_on_restart(tmp_path: Path) -> None:
    """Changing an organization's only ingest (its timestamp rule) applies after a restart."""
    with running_server(tmp_path):
        pass
    plain = f'id = "{BETA_INGEST}"\nschema = "ARRAY_OF_EVENTS"\n'
    assert plain in BASE_TOML
    timed = plain + 'timestamp = { source = "PROPERTY", path = "@.ts", format = "UNIX_SECONDS" }\n'
    with running_server(tmp_path, orgs=BASE_TOML.replace(plain, timed)) as srv:
        c = Client(srv, key=BETA_KEY)
        assert c.ingest(b'[{"ts": 946684800}]', ingest=BETA_INGEST).status == 200
        rows = c.results(query("all-events", startTime="1999-01-01T00:00:00Z")).json()
        assert [(r["dt"], r["value"]) for r in rows] == [("2000-01-01T00:00:00Z", 1.0)]
        c.close()
