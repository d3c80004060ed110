"""The dashboard's HTTP side: ``GET /`` and ``/ui/`` static serving, and the Read-key
endpoints ``/api/v1/ingest-health`` and ``/api/v1/server-info`` (docs/server.md, "Dashboard")."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from eventtally.server import health as health_mod
from tests.server_support import (
    BETA_INGEST,
    BETA_KEY,
    INGEST,
    READ_KEY,
    SEGMENT_KEY,
    WRITE_KEY,
    Client,
    fixture_bytes,
    running_server,
)


def _health(client: Client, key: str = READ_KEY, query: str = "") -> dict[str, Any]:
    reply = client.request("GET", "/api/v1/ingest-health" + query, key=key)
    assert reply.status == 200, reply.body
    doc = reply.json()
    assert isinstance(doc, dict)
    return doc


def _ingest(doc: dict[str, Any], ingest_id: str) -> dict[str, Any]:
    found = [i for i in doc["ingests"] if i["id"] == ingest_id]
    assert len(found) == 1, doc
    return found[0]


# ---------------------------------------------------------------- static page


def test_root_redirects_to_the_dashboard_and_says_where(client: Client) -> None:
    """``GET /`` answers 302 to ``ui/`` with an HTML body naming /ui/; ``GET /ui`` too."""
    for path in ("/", "/ui"):
        reply = client.request("GET", path, key=False)
        assert reply.status == 302
        assert reply.header("Location") == "ui/"
        assert b'href="ui/"' in reply.body and b"/ui/" in reply.body


def test_page_and_assets_are_served_with_a_strict_policy(client: Client) -> None:
    """``/ui/`` is the page; its CSS and JS come from the package; CSP allows only self."""
    page = client.request("GET", "/ui/", key=False)
    assert page.status == 200
    assert page.header("Content-Type") == "text/html; charset=utf-8"
    assert b'<input id="apiKey" name="apiKey"' in page.body
    csp = page.header("Content-Security-Policy") or ""
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.header("X-Content-Type-Options") == "nosniff"
    for name, ctype in health_assets():
        reply = client.request("GET", f"/ui/{name}", key=False)
        assert reply.status == 200, name
        assert reply.header("Content-Type") == ctype
        assert len(reply.body) > 1000
    assert b"https://" not in page.body  # no CDN
    js = client.request("GET", "/ui/dashboard.js", key=False).body
    assert b"sessionStorage" in js and b"localStorage" not in js


def health_assets() -> list[tuple[str, str]]:
    from eventtally.server import ui

    return [(n, t) for n, t in ui.ASSETS.items() if n != "index.html"]


def test_unknown_asset_is_404_and_post_to_ui_is_still_an_ingest(client: Client) -> None:
    """Only GET is routed to the page: ``POST /ui`` goes through the ingest checks."""
    assert client.request("GET", "/ui/../secret.key", key=False).status == 404
    assert client.request("GET", "/ui/nope.js", key=False).status == 404
    reply = client.request("POST", "/ui", b"[]", key=False)
    assert reply.status == 401 and reply.message == "No Authorization Header"
    reply = client.request("POST", "/ui", b"[]")
    assert reply.status == 404 and reply.message == "Ingest not found"


# ---------------------------------------------------------------- ingest health


def test_health_needs_a_read_key(client: Client) -> None:
    """No key 401, write-only key 403, like the other Read endpoints."""
    for route in ("ingest-health", "server-info"):
        assert client.request("GET", f"/api/v1/{route}", key=False).status == 401
        reply = client.request("GET", f"/api/v1/{route}", key=WRITE_KEY)
        assert reply.status == 403
        assert reply.message == "This API key does not have the Read permission"
        assert client.request("POST", f"/api/v1/{route}", key=READ_KEY).status == 405


def test_counters_equal_what_the_ingest_endpoint_answered(client: Client) -> None:
    """Accepted batches add their events; every refusal after the ingest is resolved counts."""
    batch = fixture_bytes("request-body-batch.json")
    events = len(json.loads(batch))
    accepted = 0
    for _ in range(3):
        assert client.ingest(batch).status == 200
        accepted += events
    bad = [b"[{", b'{"not": "an array"}', b"\xff\xfe garbage"]
    for body in bad:
        assert client.ingest(body).status == 400
    doc = _health(client)
    ing = _ingest(doc, INGEST)
    assert ing["totals"]["batches"] == 3
    assert ing["totals"]["received"] == accepted
    assert ing["totals"]["accepted"] == accepted
    assert ing["totals"]["rejected"] == {"400": 3}
    assert sum(m["accepted"] for m in ing["series"]) == accepted
    assert sum(sum(m["rejected"].values()) for m in ing["series"]) == 3
    assert ing["lastEventAt"] is not None and ing["lagSeconds"] == 0.0
    refused = ing["rejectedBatches"]
    assert [r["bodyPrefix"] for r in refused] == ["\\xff\\xfe garbage", '{"not": "an array"}', "[{"]
    assert all(r["status"] == 400 and r["message"] for r in refused)
    assert refused[2]["message"].startswith("malformed JSON at byte")
    other = _ingest(doc, "ndjson")
    assert other["totals"]["batches"] == 0 and other["rejectedBatches"] == []


def test_dropped_events_are_counted_by_reason(client: Client) -> None:
    """The engine's drop reasons of accepted batches reach the per-ingest totals."""
    body = b'[{"type": "track", "receivedAt": "2024-05-14T09:00:00Z"}, 5, "x"]'
    reply = client.ingest(body)
    assert reply.status == 200, reply.body
    ing = _ingest(_health(client), INGEST)
    assert ing["totals"]["received"] == 3
    assert ing["totals"]["accepted"] == 1
    assert sum(ing["totals"]["dropped"].values()) == 2, ing["totals"]


def test_refused_bodies_keep_only_their_first_bytes_and_never_the_key(client: Client) -> None:
    """A big bad body keeps PREFIX_BYTES bytes (after gunzip) and its size; no key is stored."""
    big = b"[" + b'{"a":1},' * 5000 + b"oops]"
    assert client.ingest(big).status == 400
    zipped = gzip.compress(b'{"gz": true}')
    reply = client.ingest(zipped, headers={"Content-Encoding": "gzip"})
    assert reply.status == 400
    raw = client.request("GET", "/api/v1/ingest-health", key=READ_KEY)
    assert SEGMENT_KEY.encode() not in raw.body and READ_KEY.encode() not in raw.body
    refused = _ingest(raw.json(), INGEST)["rejectedBatches"]
    assert refused[0]["bodyPrefix"] == '{"gz": true}' and refused[0]["contentEncoding"] == "gzip"
    assert len(refused[1]["bodyPrefix"]) == health_mod.PREFIX_BYTES
    assert refused[1]["bodyBytes"] == len(big)


def test_the_ring_is_bounded_and_newest_first(client: Client) -> None:
    """At most RING_SIZE refused batches are kept per ingest; ``rejected`` limits the answer."""
    n = health_mod.RING_SIZE + 7
    for i in range(n):
        assert client.ingest(f"[{{ {i}".encode()).status == 400
    ing = _ingest(_health(client, query="?rejected=50"), INGEST)
    assert ing["totals"]["rejected"] == {"400": n}
    prefixes = [r["bodyPrefix"] for r in ing["rejectedBatches"]]
    assert len(prefixes) == health_mod.RING_SIZE
    assert prefixes[0] == f"[{{ {n - 1}" and prefixes[-1] == f"[{{ {n - health_mod.RING_SIZE}"
    assert len(_ingest(_health(client, query="?rejected=3"), INGEST)["rejectedBatches"]) == 3


def test_rate_limited_batches_are_recorded_without_a_body(tmp_path: Path) -> None:
    """A 429 is refused before the body is read: it is counted with its declared size only."""
    with running_server(tmp_path, {"rate_limit": 1, "rate_burst": 1}) as srv:
        c = Client(srv)
        try:
            statuses = [c.ingest(b"[]").status for _ in range(3)]
            assert 429 in statuses
            ing = _ingest(_health(c), INGEST)
            assert ing["totals"]["rejected"]["429"] == statuses.count(429)
            r = ing["rejectedBatches"][0]
            assert r["status"] == 429 and r["bodyPrefix"] == "" and r["bodyBytes"] == 2
        finally:
            c.close()


def test_health_is_scoped_to_the_keys_organization(client: Client) -> None:
    """Beta's key sees only beta's ingests; requests refused before the ingest is resolved
    in the key's organization (401, 404 for another organization's ingest) count nowhere."""
    assert client.ingest(b"[{", key=BETA_KEY).status == 404  # acme's ingest, beta's key
    assert client.ingest(b"[{", key="wrong").status == 401
    assert client.ingest(b"[{", ingest=BETA_INGEST, key=BETA_KEY).status == 400
    beta = _health(client, key=BETA_KEY)
    assert [i["id"] for i in beta["ingests"]] == [BETA_INGEST]
    assert beta["ingests"][0]["totals"]["rejected"] == {"400": 1}
    acme = _health(client)
    assert sorted(i["id"] for i in acme["ingests"]) == [INGEST, "ndjson"]
    assert all(i["totals"]["rejected"] == {} for i in acme["ingests"])


def test_bad_parameters_are_400_naming_them(client: Client) -> None:
    """``minutes`` and ``rejected`` are bounded integers."""
    for query, name in (("?minutes=0", "minutes"), ("?minutes=x", "minutes"),
                        ("?rejected=51", "rejected")):  # fmt: skip
        reply = client.request("GET", "/api/v1/ingest-health" + query, key=READ_KEY)
        assert reply.status == 400 and reply.message.startswith(name + ":"), reply.body


def test_series_uses_one_minute_buckets_of_the_server_clock(tmp_path: Path) -> None:
    """Batches land in the minute of the server clock; ``minutes`` limits the window."""
    now = [1715688000.0]
    with running_server(tmp_path, clock=lambda: now[0]) as srv:
        c = Client(srv)
        try:
            assert c.ingest(b"[{}]").status == 200
            now[0] += 125
            assert c.ingest(b"[{}, {}]").status == 200
            ing = _ingest(_health(c), INGEST)
            assert [(m["dt"], m["received"]) for m in ing["series"]] == [
                ("2024-05-14T12:00:00.000Z", 1),
                ("2024-05-14T12:02:00.000Z", 2),
            ]
            assert ing["lagSeconds"] == 0.0
            now[0] += 30
            ing = _ingest(_health(c, query="?minutes=1"), INGEST)
            assert [m["received"] for m in ing["series"]] == [2]
            assert ing["lagSeconds"] == 30.0
        finally:
            c.close()


def test_server_info_reports_version_clock_sizes_and_ages(client: Client) -> None:
    """Version, the server clock, uptime, data-directory size, WAL and snapshot facts."""
    assert client.ingest(fixture_bytes("request-body-batch.json")).status == 200
    reply = client.request("GET", "/api/v1/server-info", key=READ_KEY)
    assert reply.status == 200
    info = reply.json()
    from importlib.metadata import version

    assert info["version"] == version("eventtally")
    assert info["now"] == "2024-05-14T12:00:00.000Z"  # the server's (test) clock
    assert info["uptimeSeconds"] >= 0 and info["status"] == "ready"
    assert info["organization"] == "acme"
    assert info["dataDirBytes"] > 0
    wal = info["wal"]
    assert wal["enabled"] and wal["segments"] >= 1 and wal["bytes"] > 0 and wal["lastSeq"] >= 1
    assert wal["lastWriteAgeSeconds"] is not None
    assert info["snapshot"]["ageSeconds"] is not None
    assert str(client.server.app.config.data_dir) not in reply.body.decode()
