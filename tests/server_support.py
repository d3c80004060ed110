"""Helpers shared by the ``test_server_*`` suites (imported explicitly; not a pytest conftest).

They start the real server in-process on 127.0.0.1 port 0 through the public
``(server, thread)`` API, speak HTTP with ``http.client`` (keep-alive) or raw sockets, and decode
``?multi=true`` answers exactly as the Grafana plugin does (spec 7.3).

Every 200 answer of the Metrics API that a :class:`Client` receives (``/metrics/results``, plain
and ``?multi=true``, ``/metrics/groupings``, ``/filter-definitions``) goes through the strict
decoder of ``strict_decoder.py`` first, so each test that reads through the server also holds
the answer to the Go plugin's typed decoding and to the rules of ``docs/queries.md``.
"""

from __future__ import annotations

import http.client
import json
import socket
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from eventtally.server import EventtallyHTTPServer, ServerConfig, load_config, start_server
from tests import strict_decoder
from tests.support import (
    fixture_bytes as fixture_bytes,  # re-export: server suites import from here
)

HERE = Path(__file__).resolve().parent

# 2024-05-14T12:00:00Z: after every fixture event, so nothing is an "incomplete interval" issue.
FIXED_NOW = 1715688000.0

SEGMENT_KEY = "super-secret-key"  # the upstream tests' key (requests.md)
READ_KEY = "read-only-key-0123456789"
WRITE_KEY = "write-only-key-0123456789"
DISABLED_KEY = "disabled-key-0123456789"
BETA_KEY = "beta-org-key-0123456789"
INGEST = "abc123"
BETA_INGEST = "beta-ingest"

TYPES_FILTER: dict[str, Any] = {
    "id": "by-type",
    "name": "Events by type",
    "filter": "",
    "groupingItems": [{"grouping": "@.type", "alias": "Type"}],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "Count",
            "calculations": ["COUNT"],
            "calculationField": None,
            "subFilter": None,
        },
        {
            "id": 2,
            "name": "Revenue",
            "calculations": ["SUM"],
            "calculationField": "@.properties.revenue",
            "subFilter": None,
        },
    ],
}
ALL_FILTER: dict[str, Any] = {
    "id": "all-events",
    "name": "All events",
    "intervalType": "HOUR",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "Count",
            "calculations": ["COUNT"],
            "calculationField": None,
            "subFilter": None,
        },
    ],
}


def segment_headers(body: bytes, key: str = SEGMENT_KEY) -> dict[str, str]:
    """The ingest headers of requests.md §2, in that order and case."""
    return {
        "user-agent": "Segment (Actions)",
        "x-api-token": key,
        "content-type": "application/json",
        "Accept": "*/*",
        "Content-Length": str(len(body)),
        "Accept-Encoding": "gzip,deflate",
        "Connection": "close",
        "Host": "ingest.aggregations.io",
    }


BASE_TOML = f"""
[[organizations]]
id = "acme"
name = "Acme"

[[organizations.api_keys]]
name = "segment"
key = "{SEGMENT_KEY}"
permissions = ["READ", "WRITE"]

[[organizations.api_keys]]
name = "reader"
key = "{READ_KEY}"
permissions = ["READ"]

[[organizations.api_keys]]
name = "writer"
key = "{WRITE_KEY}"
permissions = ["WRITE"]

[[organizations.api_keys]]
name = "old"
key = "{DISABLED_KEY}"
permissions = ["READ", "WRITE"]
enabled = false

[[organizations.ingests]]
id = "{INGEST}"
name = "Segment"
schema = "ARRAY_OF_EVENTS"
timestamp = {{ source = "PROPERTY", path = "@.receivedAt", format = "ISO_8601" }}

[[organizations.ingests]]
id = "ndjson"
name = "Lines"
schema = "NEWLINE_DELIMITED"

[[organizations.filters]]
file = "filters/by-type.json"

[[organizations.filters]]
file = "filters/all.json"

[[organizations]]
id = "beta"
name = "Beta"

[[organizations.api_keys]]
name = "beta"
key = "{BETA_KEY}"
permissions = ["READ", "WRITE"]

[[organizations.ingests]]
id = "{BETA_INGEST}"
schema = "ARRAY_OF_EVENTS"

[[organizations.filters]]
file = "filters/all.json"
"""


def write_config(
    directory: Path,
    server: dict[str, Any] | None = None,
    extra: str = "",
    orgs: str = BASE_TOML,
    filters: dict[str, Any] | None = None,
) -> Path:
    """Write ``eventtally.toml`` (and the filter files it names) into ``directory``."""
    (directory / "filters").mkdir(parents=True, exist_ok=True)
    files = {"by-type.json": TYPES_FILTER, "all.json": ALL_FILTER, **(filters or {})}
    for name, defn in files.items():
        (directory / "filters" / name).write_text(json.dumps(defn))
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "data_dir": "data"}
    settings.update(server or {})
    lines = ["[server]"]
    for k, v in settings.items():
        lines.append(f"{k} = {json.dumps(v)}")
    text = "\n".join(lines) + "\n" + textwrap.dedent(orgs) + "\n" + extra
    path = directory / "eventtally.toml"
    path.write_text(text)
    return path


@contextmanager
def running_server(
    directory: Path,
    server: dict[str, Any] | None = None,
    *,
    extra: str = "",
    orgs: str = BASE_TOML,
    clock: Any = None,
    filters: dict[str, Any] | None = None,
) -> Iterator[EventtallyHTTPServer]:
    """Provision ``directory`` with the base config and serve it on a free port."""
    loaded = load_config(write_config(directory, server, extra, orgs, filters))
    srv, thread = start_server(
        loaded.server, provisioning=loaded, clock=clock or (lambda: FIXED_NOW)
    )
    try:
        yield srv
    finally:
        srv.close()
        thread.join(5)  # type: ignore[attr-defined]


def plain_server(directory: Path, **settings: Any) -> tuple[EventtallyHTTPServer, Any]:
    """A server on an unprovisioned data directory."""
    cfg = ServerConfig(port=0, data_dir=directory, **settings)
    return start_server(cfg, clock=lambda: FIXED_NOW)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        doc = self.json()
        assert isinstance(doc, dict) and isinstance(doc.get("message"), str), doc
        return str(doc["message"])

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


class Client:
    """A keep-alive HTTP/1.1 client for one server."""

    def __init__(self, server: EventtallyHTTPServer, key: str | None = SEGMENT_KEY) -> None:
        self.server = server
        self.key = key
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def close(self) -> None:
        self.conn.close()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Any | None = None,
        headers: dict[str, str] | None = None,
        *,
        key: str | bool | None = True,
    ) -> Reply:
        h: dict[str, str] = {}
        token = self.key if key is True else key
        if isinstance(token, str):
            h["x-api-token"] = token
        data: bytes | None
        if body is None or isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
            h["content-type"] = "application/json"
        h.update(headers or {})
        self.conn.request(method, path, body=data, headers=h)
        resp = self.conn.getresponse()
        payload = resp.read()
        reply = Reply(resp.status, dict(resp.getheaders()), payload)
        strict_check(path, data, reply)
        return reply

    def ingest(self, body: bytes, ingest: str = INGEST, **kw: Any) -> Reply:
        return self.request("POST", f"/{ingest}", body, **kw)

    def results(self, query: dict[str, Any], **kw: Any) -> Reply:
        return self.request("POST", "/api/v1/metrics/results", query, **kw)

    def multi(self, queries: list[dict[str, Any]], **kw: Any) -> Reply:
        return self.request("POST", "/api/v1/metrics/results?multi=true", queries, **kw)


def strict_check(path: str, sent: bytes | None, reply: Reply) -> None:
    """Decode a 200 Metrics API answer as strictly as the Grafana plugin's Go backend."""
    if reply.status != 200:
        return
    route, _, qs = path.partition("?")
    if route == "/api/v1/filter-definitions":
        strict_decoder.decode_filter_definitions(reply.body)
    elif route == "/api/v1/metrics/groupings":
        strict_decoder.decode_groupings(reply.body)
    elif route == "/api/v1/metrics/results":
        multi = parse_qs(qs).get("multi", [""])[-1].lower() in ("true", "1", "yes")
        if not multi:
            strict_decoder.decode_results(reply.body)
            return
        queries = json.loads(sent or b"[]")
        queries = [queries] if isinstance(queries, dict) else queries
        # A query without queryId is labelled "A" when alone, else "Q<index>" (docs/queries.md).
        ids = [
            str(q["queryId"])
            if q.get("queryId") is not None
            else ("A" if len(queries) == 1 else f"Q{i}")
            for i, q in enumerate(queries)
        ]
        strict_decoder.decode_multi(reply.body, ids)


def raw_exchange(port: int, data: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout); return what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def query(
    filter_id: str = "by-type", aggregation_id: int = 1, calculation: str = "COUNT", **extra: Any
) -> dict[str, Any]:
    q: dict[str, Any] = {
        "filterId": filter_id,
        "aggregationId": aggregation_id,
        "calculation": calculation,
        "startTime": "2024-01-01T00:00:00Z",
        "endTime": "2025-01-01T00:00:00Z",
    }
    q.update(extra)
    return q


def parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def decode_multi(
    rows: list[dict[str, Any]], query_ids: list[str]
) -> list[tuple[str, datetime, float, dict[str, str]]]:
    """Decode the compact ``?multi=true`` rows as the Grafana plugin's ``queryMulti`` does.

    Returns ``(queryId, time, value, groupings)`` points, decoded by ``strict_decoder``
    (the Go plugin's rules: separators carry a non-null ``groupings`` object, every value row
    names its query), which fails the test on any answer the plugin could not read.
    """
    answer = strict_decoder.decode_multi(json.dumps(rows, allow_nan=True), query_ids)
    return [
        (qid, t, value, groupings)
        for qid, points in answer.points.items()
        for t, groupings, value in points
    ]


def simple_points(
    rows: list[dict[str, Any]],
) -> dict[tuple[datetime, tuple[tuple[str, str], ...]], float]:
    """Index a simple ``/metrics/results`` answer by (time, sorted groupings)."""
    out = {}
    for row in rows:
        g = tuple(sorted((row.get("groupings") or {}).items()))
        out[(parse_dt(row["dt"]), g)] = float(row["value"])
    return out


def expected_by_type(
    events: list[Any], revenue: bool = False
) -> dict[tuple[datetime, tuple[tuple[str, str], ...]], float]:
    """Reference answer for TYPES_FILTER: count (or revenue sum) per minute of receivedAt."""
    out: dict[tuple[datetime, tuple[tuple[str, str], ...]], float] = {}
    for ev in events:
        if not isinstance(ev, dict):
            continue
        ts = ev.get("receivedAt")
        t = parse_dt(ts) if isinstance(ts, str) else datetime.fromtimestamp(FIXED_NOW, UTC)
        minute = t.replace(second=0, microsecond=0)
        key = (minute, (("Type", str(ev.get("type") or "")),))
        if revenue:
            value = (ev.get("properties") or {}).get("revenue")
            if not isinstance(value, int | float):
                continue
            out[key] = out.get(key, 0.0) + float(value)
        else:
            out[key] = out.get(key, 0.0) + 1.0
    return out


# The in-process server and a keep-alive client on it: the fixtures the test_server_* suites
# share, registered for every suite by `tests/conftest.py`.
@pytest.fixture
def server(tmp_path: Path) -> Iterator[EventtallyHTTPServer]:
    with running_server(tmp_path) as srv:
        yield srv


@pytest.fixture
def client(server: EventtallyHTTPServer) -> Iterator[Client]:
    c = Client(server)
    yield c
    c.close()
