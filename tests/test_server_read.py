"""Fixture replay (requests.md) and the Metrics API under ``/api/v1``, decoded like the plugin."""

from __future__ import annotations

import copy
import json
from typing import Any

from eventtally.server import EventtallyHTTPServer
from tests.server_support import (
    BETA_INGEST,
    BETA_KEY,
    INGEST,
    READ_KEY,
    SEGMENT_KEY,
    TYPES_FILTER,
    WRITE_KEY,
    Client,
    decode_multi,
    expected_by_type,
    fixture_bytes,
    query,
    raw_exchange,
    segment_headers,
    simple_points,
)


def batch_of_300() -> list[dict[str, Any]]:
    """300 Segment events: the fixture batch repeated, each with its own messageId."""
    base = json.loads(fixture_bytes("batch.json"))
    events = []
    for i in range(300):
        ev = copy.deepcopy(base[i % len(base)])
        ev["messageId"] = f"{ev['messageId']}-{i}"
        events.append(ev)
    return events


def js_stringify(obj: Any) -> bytes:
    """Compact JSON like the destination's ``JSON.stringify`` (raw UTF-8)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- fixture replay


def test_replay_auth_test_request(server: EventtallyHTTPServer) -> None:
    """requests.md §1 byte for byte (no body, Connection: close) is answered 2xx."""
    request = (
        f"GET /api/v1/organization/ping-w?ingest_id={INGEST}&schema=ARRAY_OF_EVENTS HTTP/1.1\r\n"
        "user-agent: Segment (Actions)\r\n"
        f"x-api-token: {SEGMENT_KEY}\r\n"
        "Accept: */*\r\n"
        "Accept-Encoding: gzip,deflate\r\n"
        "Connection: close\r\n"
        "Host: app.aggregations.io\r\n\r\n"
    ).encode()
    answer = raw_exchange(server.port, request)
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_replay_single_batch_and_edge_requests(server: EventtallyHTTPServer) -> None:
    """requests.md §2-§4 with their exact headers; aggregates via results and ?multi=true."""
    sent: list[Any] = []
    for name in (
        "request-body-single-track.json",
        "request-body-batch.json",
        "request-body-single-edge.json",
    ):
        body = fixture_bytes(name)
        head = "".join(f"{k}: {v}\r\n" for k, v in segment_headers(body).items())
        answer = raw_exchange(server.port, f"POST /{INGEST} HTTP/1.1\r\n{head}\r\n".encode() + body)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert answer.endswith(b"\r\n\r\n")  # empty body
        assert b"Content-Length: 0\r\n" in answer
        sent.extend(json.loads(body))
    c = Client(server)
    big = batch_of_300()
    body = js_stringify(big)
    assert c.ingest(body, headers=segment_headers(body), key=False).status == 200
    sent.extend(big)

    expected = expected_by_type(sent)
    assert simple_points(c.results(query()).json()) == expected

    rows = c.multi([query(queryId="A", optimized=True)]).json()
    decoded = decode_multi(rows, ["A"])
    got = {(t, tuple(sorted(g.items()))): v for _, t, v, g in decoded}
    assert got == expected

    revenue = expected_by_type(sent, revenue=True)
    assert simple_points(c.results(query(aggregation_id=2, calculation="SUM")).json()) == revenue
    c.close()


def test_multi_with_two_queries_tags_every_value_row(client: Client) -> None:
    """Two queries in one ?multi=true call decode to the same answers as two simple calls."""
    body = fixture_bytes("request-body-batch.json")
    assert client.ingest(body).status == 200
    queries = [
        query(queryId="A", optimized=True),
        query("all-events", queryId="B", optimized=True),
    ]
    decoded = decode_multi(client.multi(queries).json(), ["A", "B"])
    for q in queries:
        simple = simple_points(client.results(q).json())
        mine = {(t, tuple(sorted(g.items()))): v for qid, t, v, g in decoded if qid == q["queryId"]}
        assert mine == simple


def test_multi_accepts_grafana_extra_fields(client: Client) -> None:
    """Fields the plugin also serialises (alias, hide, mode, ...) are ignored."""
    assert client.ingest(fixture_bytes("request-body-batch.json")).status == 200
    q = query(
        queryId="A",
        optimized=True,
        alias="",
        hide=False,
        mode="",
        longResult=False,
        includeGroupingLabels=True,
        filterDefinitionName="Events by type",
        groupingFilters=None,
        limit=None,
        limitType="Top",
        excludeEmptyGroupings=False,
        includeIncompleteIntervals=True,
        recalculatedInterval=None,
    )
    reply = client.multi([q], headers={"X-IS_GRAFANA": "1"})
    assert reply.status == 200
    assert len(decode_multi(reply.json(), ["A"])) == 7  # 6 types, track in two minutes


# ---------------------------------------------------------------- Metrics API


def test_filter_definitions_lists_the_orgs_filters(client: Client) -> None:
    """GET /filter-definitions returns this organization's filters in the spec 5.7 shape."""
    reply = client.request("GET", "/api/v1/filter-definitions")
    assert reply.status == 200
    defs = {d["id"]: d for d in reply.json()}
    assert set(defs) == {"by-type", "all-events"}
    assert defs["by-type"]["name"] == TYPES_FILTER["name"]
    assert [a["id"] for a in defs["by-type"]["aggregations"]] == [1, 2]
    assert defs["by-type"]["organizationId"] == "acme"


def test_groupings_lists_distinct_values(client: Client) -> None:
    """POST /metrics/groupings returns the distinct values of one grouping."""
    assert client.ingest(fixture_bytes("request-body-batch.json")).status == 200
    reply = client.request(
        "POST", "/api/v1/metrics/groupings", query(mode="variables", groupingName="@.type")
    )
    assert reply.status == 200
    values = {row["value"] for row in reply.json()}
    assert values == {"track", "page", "screen", "identify", "group", "alias"}


def test_reads_need_read_permission(client: Client) -> None:
    """A Write-only key gets 403 on every read endpoint; a Read-only key reads."""
    for method, path, body in (
        ("GET", "/api/v1/filter-definitions", None),
        ("POST", "/api/v1/metrics/results", query()),
        ("POST", "/api/v1/metrics/results?multi=true", [query(queryId="A")]),
        ("POST", "/api/v1/metrics/groupings", query(groupingName="@.type")),
    ):
        reply = client.request(method, path, body, key=WRITE_KEY)
        assert reply.status == 403, path
        assert "Read" in reply.message
        assert client.request(method, path, body, key=READ_KEY).status == 200, path
        assert client.request(method, path, body, key=None).message == "No Authorization Header"


def test_ping_accepts_any_valid_key(client: Client) -> None:
    """GET /organization/ping: 200 for any valid key, 401 otherwise."""
    for key in (SEGMENT_KEY, READ_KEY, WRITE_KEY, BETA_KEY):
        assert client.request("GET", "/api/v1/organization/ping", key=key).status == 200
    assert client.request("GET", "/api/v1/organization/ping", key="bad").status == 401


def test_ping_w_checks_write_ingest_and_schema(client: Client) -> None:
    """ping-w: 200 only with Write and an ingest of the key's org with that schema."""
    url = "/api/v1/organization/ping-w?ingest_id={}&schema={}"
    assert client.request("GET", url.format(INGEST, "ARRAY_OF_EVENTS"), key=WRITE_KEY).status == 200
    cases = [
        (READ_KEY, INGEST, "ARRAY_OF_EVENTS", 403),
        ("bad", INGEST, "ARRAY_OF_EVENTS", 401),
        (SEGMENT_KEY, "nosuch", "ARRAY_OF_EVENTS", 404),
        (SEGMENT_KEY, BETA_INGEST, "ARRAY_OF_EVENTS", 404),
        (SEGMENT_KEY, "ndjson", "ARRAY_OF_EVENTS", 400),
    ]
    for key, ingest, schema, status in cases:
        reply = client.request("GET", url.format(ingest, schema), key=key)
        assert reply.status == status, (key, ingest)
        assert reply.message  # the Segment UI shows it after "Credentials are invalid:"
    reply = client.request("GET", "/api/v1/organization/ping-w", key=SEGMENT_KEY)
    assert reply.status == 400 and "ingest_id" in reply.message


def test_query_errors_are_4xx_json(client: Client) -> None:
    """Unknown filter 404, bad calculation 400, malformed JSON 400, arrays without multi 400."""
    assert client.results(query("nosuch")).status == 404
    assert client.results(query(calculation="MAX")).status == 400
    assert client.results(query(aggregation_id=99)).status in (400, 404)
    reply = client.request("POST", "/api/v1/metrics/results", b"{nope")
    assert reply.status == 400 and reply.message
    assert client.request("POST", "/api/v1/metrics/results", [query()]).status == 400


def test_unknown_api_route_is_404_and_wrong_method_405(client: Client) -> None:
    """Unknown /api/v1 paths are 404; known ones with the wrong method 405 with Allow."""
    assert client.request("GET", "/api/v1/nope").status == 404
    reply = client.request("GET", "/api/v1/metrics/results")
    assert reply.status == 405 and reply.header("Allow") == "POST"
    reply = client.request("POST", "/api/v1/filter-definitions", b"")
    assert reply.status == 405 and reply.header("Allow") == "GET"


def test_organizations_are_isolated(client: Client) -> None:
    """Beta's key sees only beta's filters and data; it cannot read acme's filter."""
    assert client.ingest(fixture_bytes("request-body-batch.json")).status == 200
    defs = client.request("GET", "/api/v1/filter-definitions", key=BETA_KEY).json()
    assert [d["id"] for d in defs] == ["all-events"]
    assert client.results(query("by-type"), key=BETA_KEY).status == 404
    assert client.results(query("all-events"), key=BETA_KEY).json() == []
    assert sum(r["value"] for r in client.results(query("all-events")).json()) == 7
