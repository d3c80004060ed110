"""The admin HTTP API under ``/admin/v1``: token guard and create/list/disable of every object."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventtally.server import EventtallyHTTPServer
from tests.server_support import ALL_FILTER, Client, plain_server, query

TOKEN = "admin-token-for-tests"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EventtallyHTTPServer]:
    srv, _thread = plain_server(tmp_path, admin_token=TOKEN, max_filters_per_org=2)
    yield srv
    srv.close()


@pytest.fixture
def admin(server: EventtallyHTTPServer) -> Iterator[Client]:
    c = Client(server, key=None)
    yield c
    c.close()


def call(c: Client, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return c.request(method, f"/admin/v1{path}", body, headers=headers)


def test_admin_api_is_off_without_a_token(tmp_path: Path) -> None:
    """With no admin token configured, /admin answers 404."""
    srv, _thread = plain_server(tmp_path)
    try:
        c = Client(srv, key=None)
        assert call(c, "GET", "/organizations").status == 404
        c.close()
    finally:
        srv.close()


def test_admin_token_is_required(admin: Client) -> None:
    """A missing or wrong bearer token is 401."""
    assert call(admin, "GET", "/organizations", token=None).status == 401
    assert call(admin, "GET", "/organizations", token="wrong").status == 401
    assert call(admin, "GET", "/organizations").json() == []


def test_admin_creates_everything_and_the_key_works(admin: Client) -> None:
    """Org, ingest, filter and key created over HTTP serve traffic at once."""
    assert call(admin, "POST", "/organizations", {"id": "acme", "name": "Acme"}).status == 201
    ingest = {"id": "abc123", "schema": "ARRAY_OF_EVENTS"}
    assert call(admin, "POST", "/organizations/acme/ingests", ingest).status == 201
    assert call(admin, "POST", "/organizations/acme/filters", ALL_FILTER).status == 201
    reply = call(
        admin,
        "POST",
        "/organizations/acme/api-keys",
        {"name": "ci", "permissions": ["READ", "WRITE"]},
    )
    assert reply.status == 201
    created = reply.json()
    raw = created["key"]
    assert created["permissions"] == ["READ", "WRITE"]

    listed = call(admin, "GET", "/organizations/acme/api-keys").json()
    assert [k["id"] for k in listed] == [created["id"]]
    assert all("key" not in k for k in listed)  # the raw key is shown once

    c = Client(admin.server, key=raw)
    assert c.ingest(b'[{"type":"track"}]').status == 200
    assert sum(r["value"] for r in c.results(query("all-events")).json()) == 1

    assert (
        call(admin, "POST", f"/organizations/acme/api-keys/{created['id']}/disable").status == 200
    )
    assert c.ingest(b"[{}]").message == "Disabled API Key"
    c.close()


def test_admin_errors_are_json(admin: Client) -> None:
    """Duplicates 409, unknown objects 404, invalid definitions 400, limits 400."""
    assert call(admin, "POST", "/organizations", {"id": "o"}).status == 201
    assert call(admin, "POST", "/organizations", {"id": "o"}).status == 409
    assert call(admin, "GET", "/organizations/nosuch/filters").status == 404
    bad = {**ALL_FILTER, "intervalType": "FORTNIGHT"}
    reply = call(admin, "POST", "/organizations/o/filters", bad)
    assert reply.status == 400 and "invalid filter" in reply.message
    for i in range(2):
        filt = {**ALL_FILTER, "id": f"f{i}"}
        assert call(admin, "POST", "/organizations/o/filters", filt).status == 201
    reply = call(admin, "POST", "/organizations/o/filters", {**ALL_FILTER, "id": "f9"})
    assert reply.status == 400 and "limit" in reply.message
    assert call(admin, "POST", "/organizations/o/ingests", {"id": "api"}).status == 400
    assert call(admin, "DELETE", "/organizations/o").status == 405
    assert call(admin, "POST", "/organizations/o/filters/nosuch/disable").status == 404


def test_admin_disable_filter_and_ingest(admin: Client) -> None:
    """Disabled filters leave filter-definitions; disabled ingests answer 404."""
    call(admin, "POST", "/organizations", {"id": "o"})
    call(admin, "POST", "/organizations/o/ingests", {"id": "in1"})
    call(admin, "POST", "/organizations/o/filters", ALL_FILTER)
    raw = call(admin, "POST", "/organizations/o/api-keys", {"name": "k"}).json()["key"]
    c = Client(admin.server, key=raw)
    assert [d["id"] for d in c.request("GET", "/api/v1/filter-definitions").json()] == [
        "all-events"
    ]
    assert call(admin, "POST", "/organizations/o/filters/all-events/disable").status == 200
    assert c.request("GET", "/api/v1/filter-definitions").json() == []
    assert call(admin, "POST", "/organizations/o/ingests/in1/disable").status == 200
    assert c.ingest(b"[{}]", ingest="in1").status == 404
    assert call(admin, "POST", "/organizations/o/ingests/in1/enable").status == 200
    assert c.ingest(b"[{}]", ingest="in1").status == 200
    c.close()
