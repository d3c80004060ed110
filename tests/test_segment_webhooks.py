"""Segment's Webhooks (Actions) destination against a real server (docs/segment-webhooks.md).

The request shapes come from Segment's public source, segmentio/action-destinations,
``packages/destination-actions/src/destinations/webhook``:

- ``send.perform`` (batching off): ``request(url, {method, headers, json: payload.data})``, one
  JSON object per request;
- ``send.performBatch`` (batching on): ``json: payload.map(({data}) => data)``, a JSON array of
  each event's ``data`` mapping, whose default is the whole event (``{'@path': '$.'}``);
- ``method`` is POST, PUT or PATCH (default POST); ``headers`` are the user's custom headers
  (here ``x-api-token``); with a shared secret, ``X-Signature`` is the hex HMAC-SHA1 of
  ``JSON.stringify`` of the first event's ``data``;
- ``packages/core/src/create-request-client.ts`` sets ``user-agent: Segment (Actions)`` and the
  ``json`` option sets ``content-type: application/json`` with a ``JSON.stringify`` body
  (compact, no spaces).

Each test sends exactly those requests over HTTP to a server on 127.0.0.1 and checks the
aggregates against a count made here from the same events.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventtally.server import EventtallyHTTPServer
from tests.server_support import (
    Client,
    expected_by_type,
    fixture_bytes,
    query,
    running_server,
    simple_points,
)

KEY = "segment-webhooks-key-0123456789"
SHARED_SECRET = "abc123"

ORGS = f"""
[[organizations]]
id = "shop"
name = "Shop"

[[organizations.api_keys]]
name = "segment-webhooks"
key = "{KEY}"
permissions = ["READ", "WRITE"]

[[organizations.ingests]]
id = "segment-batch"
name = "Segment Webhooks, batching on"
schema = "ARRAY_OF_EVENTS"
timestamp = {{ source = "PROPERTY", path = "@.receivedAt", format = "ISO_8601" }}

[[organizations.ingests]]
id = "segment-single"
name = "Segment Webhooks, batching off"
schema = "SINGLE_OBJECT"
timestamp = {{ source = "PROPERTY", path = "@.receivedAt", format = "ISO_8601" }}

[[organizations.filters]]
file = "filters/by-type.json"
"""

#: Seven Segment events of every type (track, page, screen, identify, group, alias), as Segment
#: delivers them to destinations (receivedAt set by Segment's API).
EVENTS: list[dict[str, Any]] = json.loads(fixture_bytes("batch.json"))


def _stringify(value: Any) -> bytes:
    """``JSON.stringify``: compact separators, non-ASCII kept as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def segment_webhook_request(
    data: Any, *, host: str, signature_of: Any = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers Segment's Webhooks (Actions) ``send`` puts on the wire.

    ``data`` is the JSON value (an object, or the array of a batch).  The headers are those of
    Node's fetch (undici) plus Segment's defaults and the user's custom ``x-api-token`` header.
    """
    body = _stringify(data)
    headers = {
        "host": host,
        "connection": "keep-alive",
        "x-api-token": KEY,  # the mapping's custom header
        "user-agent": "Segment (Actions)",
        "content-type": "application/json",
        "accept": "*/*",
        "accept-language": "*",
        "sec-fetch-mode": "cors",
        "accept-encoding": "gzip, deflate",
        "content-length": str(len(body)),
    }
    if signature_of is not None:
        headers["x-signature"] = hmac.new(
            SHARED_SECRET.encode(), _stringify(signature_of), hashlib.sha1
        ).hexdigest()
    return body, headers


@pytest.fixture
def hooks_server(tmp_path: Path) -> Iterator[EventtallyHTTPServer]:
    with running_server(tmp_path, orgs=ORGS) as srv:
        yield srv


@pytest.fixture
def hooks(hooks_server: EventtallyHTTPServer) -> Iterator[Client]:
    c = Client(hooks_server, key=KEY)
    yield c
    c.close()


def _send(client: Client, method: str, ingest: str, data: Any, **kw: Any) -> int:
    body, headers = segment_webhook_request(data, host="events.example.com", **kw)
    reply = client.request(method, f"/{ingest}", body, headers, key=False)
    if reply.status == 200:
        assert reply.body == b""  # success is an empty 200, as for the Aggregations.io path
    return reply.status


def _counts(client: Client) -> dict[Any, float]:
    reply = client.results(query())
    assert reply.status == 200, reply.body
    return simple_points(reply.json())


def _revenue(client: Client) -> dict[Any, float]:
    reply = client.results(query(aggregation_id=2, calculation="SUM"))
    assert reply.status == 200, reply.body
    return simple_points(reply.json())


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_batching_on_default_mapping_whole_events(hooks: Client, method: str) -> None:
    """Batching on, ``data`` = the whole event: an array of events into ARRAY_OF_EVENTS."""
    assert _send(hooks, method, "segment-batch", EVENTS) == 200
    assert _counts(hooks) == expected_by_type(EVENTS)
    assert _revenue(hooks) == expected_by_type(EVENTS, revenue=True)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_batching_off_one_object_per_request(hooks: Client, method: str) -> None:
    """Batching off: one JSON object per request into SINGLE_OBJECT, with every method."""
    for event in EVENTS:
        assert _send(hooks, method, "segment-single", event) == 200
    assert _counts(hooks) == expected_by_type(EVENTS)
    assert _revenue(hooks) == expected_by_type(EVENTS, revenue=True)


def test_batching_on_custom_mapping_and_batch_size(hooks: Client) -> None:
    """A custom ``data`` mapping (only the fields the filters read) in batches of 3."""

    def mapped(event: dict[str, Any]) -> dict[str, Any]:
        # Segment's mapping: {type: @path $.type, event: @path $.event, receivedAt: @path
        # $.receivedAt, properties: @path $.properties}; a missing path leaves the key out.
        return {k: event[k] for k in ("type", "event", "receivedAt", "properties") if k in event}

    data = [mapped(e) for e in EVENTS]
    for i in range(0, len(data), 3):
        assert _send(hooks, "POST", "segment-batch", data[i : i + 3]) == 200
    assert _counts(hooks) == expected_by_type(EVENTS)
    assert _revenue(hooks) == expected_by_type(EVENTS, revenue=True)


def test_signed_requests_are_accepted(hooks: Client) -> None:
    """A shared secret adds ``X-Signature`` (HMAC of the first event only); it is not needed."""
    assert _send(hooks, "POST", "segment-batch", EVENTS[:2], signature_of=EVENTS[0]) == 200
    assert _send(hooks, "PUT", "segment-single", EVENTS[2], signature_of=EVENTS[2]) == 200
    assert _counts(hooks) == expected_by_type(EVENTS[:3])


def test_segment_test_event_single_track(hooks: Client) -> None:
    """The mapping editor's test event (one track call) lands in the SINGLE_OBJECT ingest."""
    event = json.loads(fixture_bytes("track.json"))
    assert _send(hooks, "POST", "segment-single", event) == 200
    assert _counts(hooks) == expected_by_type([event])


def test_shape_and_format_must_agree(hooks: Client) -> None:
    """A batch into SINGLE_OBJECT or an object into ARRAY_OF_EVENTS is 400 naming the format,
    and nothing is counted (so the guide pairs batching on/off with the right ingest)."""
    body, headers = segment_webhook_request(EVENTS, host="events.example.com")
    wrong = hooks.request("POST", "/segment-single", body, headers, key=False)
    assert wrong.status == 400
    assert "incorrect event format" in wrong.message
    body, headers = segment_webhook_request(EVENTS[0], host="events.example.com")
    wrong = hooks.request("PATCH", "/segment-batch", body, headers, key=False)
    assert wrong.status == 400
    assert "expected a JSON array of events" in wrong.message
    assert _counts(hooks) == {}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_put_and_patch_get_the_same_checks_as_post(hooks: Client, method: str) -> None:
    """PUT and PATCH answer every refusal exactly like POST (status, body, headers)."""
    body, headers = segment_webhook_request(EVENTS, host="events.example.com")
    cases: list[tuple[str, dict[str, str]]] = [
        ("/segment-batch", {k: v for k, v in headers.items() if k != "x-api-token"}),  # 401
        ("/segment-batch", {**headers, "x-api-token": "wrong"}),  # 401
        ("/no-such-ingest", headers),  # 404
        ("/segment-batch", {**headers, "content-encoding": "br"}),  # 415
    ]
    for path, h in cases:
        post = hooks.request("POST", path, body, h, key=False)
        other = hooks.request(method, path, body, h, key=False)
        assert post.status in (401, 404, 415)
        assert (other.status, other.body) == (post.status, post.body)
        assert other.header("Content-Type") == post.header("Content-Type")
    assert _counts(hooks) == {}
