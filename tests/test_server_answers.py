"""Metrics API answers through the real server: the body the core writes is byte for byte the
old ``json.dumps`` text, errors keep their status and message, the answer caps answer 400 with
advice, deep bodies answer 400 (never 500), and chunked answers carry one exact Content-Length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally._safejson import MAX_DEPTH
from eventtally.server import EventtallyHTTPServer
from eventtally.server.routes import metrics as metrics_routes
from tests.server_support import INGEST, Client, query, running_server

EVENTS = [
    {
        "type": t,
        "receivedAt": f"2024-05-13T{h:02d}:{m:02d}:30Z",
        "properties": {"revenue": r},
    }
    for h in range(9, 12)
    for m in range(0, 60, 7)
    for t, r in (("track", 1.5), ("page", 1e16), ('sp"é\n', -0.0), ("identify", 1e-7))
]


def org_engine(server: EventtallyHTTPServer) -> eventtally.Engine:
    return server.app.runtime.engine("acme")


def old_text(rows: Any) -> bytes:
    return json.dumps(rows, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def fill(c: Client) -> None:
    assert c.ingest(json.dumps(EVENTS).encode()).status == 200


def test_answers_are_the_old_text(client: Client, server: EventtallyHTTPServer) -> None:
    """results, ?multi=true and groupings answers equal the old text, with its length."""
    fill(client)
    engine = org_engine(server)
    shapes = [
        query(),
        query(aggregation_id=2, calculation="SUM"),
        query(limit=2, recalculatedInterval={"type": "MINUTE", "frequency": 30}),
        query(groupingFilters=[{"grouping": "Type", "filters": ["$__agg"]}]),
        query(startTime="2030-01-01T00:00:00Z", endTime="2031-01-01T00:00:00Z"),
    ]
    for q in shapes:
        reply = client.results(q)
        assert reply.status == 200
        assert reply.body == old_text(engine.results(q))
        assert reply.header("Content-Length") == str(len(reply.body))
        assert reply.header("Content-Type") == "application/json"
    reply = client.multi(shapes)
    assert reply.status == 200 and reply.body == old_text(engine.results_multi(shapes))
    g = {"filterId": "by-type", "groupingName": "Type"}
    reply = client.request("POST", "/api/v1/metrics/groupings", g)
    assert reply.status == 200 and reply.body == old_text(engine.groupings(g))


def test_large_answers_go_out_in_chunks(
    client: Client, server: EventtallyHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With small chunks the app returns many of them and the client gets the same bytes."""
    fill(client)
    whole = client.results(query()).body
    monkeypatch.setattr(metrics_routes, "ANSWER_CHUNK_BYTES", 200)
    seen: list[int] = []
    original = server.app.metrics_answer

    def spy(*args: Any) -> Any:
        status, headers, body = original(*args)
        seen.append(len(body) if isinstance(body, list) else 1)
        return status, headers, body

    monkeypatch.setattr(server.app, "metrics_answer", spy)
    reply = client.results(query())
    assert reply.status == 200 and reply.body == whole
    assert reply.header("Content-Length") == str(len(whole))
    assert seen and seen[0] > 5
    # The connection stays usable after a many-chunk answer.
    assert client.results(query()).body == whole


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/api/v1/metrics/results",
            b"",
            "Malformed JSON request body: Expecting value: line 1 column 1 (char 0)",
        ),
        (
            "/api/v1/metrics/results",
            b'{"filterId": ',
            "Malformed JSON request body: Expecting value: line 1 column 14 (char 13)",
        ),
        (
            "/api/v1/metrics/results",
            b"[]",
            "Expected a JSON object (send arrays with ?multi=true)",
        ),
        ("/api/v1/metrics/results?multi=true", b"[1]", "Expected a JSON array of query objects"),
        ("/api/v1/metrics/groupings", b"[]", "Expected a JSON object"),
        (
            "/api/v1/metrics/results",
            b'{"filterId": "by-type", "aggregationId": 1, "calculation": "COUNT", "x": NaN}',
            "query must be JSON-serializable: Out of range float values are not JSON compliant",
        ),
        (
            "/api/v1/metrics/results",
            json.dumps(query(calculation="NOPE")).encode(),
            'invalid query field calculation: unknown calculation "NOPE"',
        ),
    ],
)
def test_bad_bodies_keep_their_status_and_message(
    client: Client, path: str, body: bytes, message: str
) -> None:
    """Malformed, misshapen and invalid bodies answer 400 with the messages they always had."""
    reply = client.request("POST", path, body)
    assert reply.status == 400
    assert reply.message.startswith(message), reply.message


def test_non_strict_json_that_python_accepts_still_answers(client: Client) -> None:
    """A UTF-16 body (json.loads detects it) answers like its UTF-8 form."""
    fill(client)
    q = query()
    want = client.results(q).body
    reply = client.request("POST", "/api/v1/metrics/results", json.dumps(q).encode("utf-16"))
    assert reply.status == 200 and reply.body == want


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 150_000])
def test_deeply_nested_bodies_are_400(client: Client, depth: int) -> None:
    """Bodies nested past the server's one limit (64 levels, checked before the core's parser
    or Python's) answer 400 naming the limit, never 500."""
    for path in ("/api/v1/metrics/results", "/api/v1/metrics/results?multi=true"):
        body = b'{"a":' * depth + b"1" + b"}" * depth
        reply = client.request("POST", path, body)
        assert reply.status == 400, reply.body[:200]
        assert f"nested deeper than the limit of {MAX_DEPTH} levels" in reply.message


def test_answer_caps(tmp_path: Path) -> None:
    """Past max_answer_rows or max_answer_bytes: 400 suggesting a limit or a rollup; a query
    that fits (a rollup, a Top-N limit) still answers, and nothing accepted is lost."""
    rolled = query(recalculatedInterval={"type": "HOUR", "frequency": 1})  # 3 hours x 4 types
    with running_server(tmp_path / "rows", {"max_answer_rows": 30}) as srv:
        c = Client(srv)
        fill(c)
        reply = c.results(query())  # 3 x 9 minutes x 4 types
        assert reply.status == 400
        assert "108 rows" in reply.message and "max_answer_rows of 30" in reply.message
        assert "recalculatedInterval" in reply.message and '"limit"' in reply.message
        assert c.results(rolled).status == 200
        assert c.multi([rolled, rolled]).status == 200
        reply = c.multi([rolled] * 3)  # 36 rows in all
        assert reply.status == 400 and "36 rows" in reply.message
        assert c.results(query(limit=1)).status == 200  # 27 rows
        c.close()
    with running_server(tmp_path / "bytes", {"max_answer_bytes": 2000}) as srv:
        c = Client(srv)
        fill(c)
        reply = c.results(query())
        assert reply.status == 400 and "max_answer_bytes of 2000" in reply.message
        fits = c.results(rolled)
        assert fits.status == 200 and len(fits.body) <= 2000
        assert c.ingest(json.dumps(EVENTS[:1]).encode(), ingest=INGEST).status == 200
        assert c.results(rolled).status == 200
        c.close()


def test_answer_caps_are_validated(tmp_path: Path) -> None:
    """Negative caps are a config error naming the setting."""
    from eventtally.server.config import ConfigFileError, ServerConfig

    with pytest.raises(ConfigFileError, match="max_answer_rows"):
        ServerConfig(max_answer_rows=-1).validate()
    with pytest.raises(ConfigFileError, match="max_answer_bytes"):
        ServerConfig(max_answer_bytes=-1).validate()
    assert ServerConfig(max_answer_rows=0, max_answer_bytes=0).validate()
