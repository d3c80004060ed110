"""The ingest endpoint ``POST /{ingest_id}``: every row of the status matrix and the check order."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventtally.server import EventtallyHTTPServer
from tests.server_support import (
    BETA_INGEST,
    BETA_KEY,
    DISABLED_KEY,
    INGEST,
    READ_KEY,
    SEGMENT_KEY,
    WRITE_KEY,
    Client,
    expected_by_type,
    fixture_bytes,
    query,
    raw_exchange,
    running_server,
    segment_headers,
    simple_points,
)

TRACK = fixture_bytes("request-body-single-track.json")
BATCH = fixture_bytes("request-body-batch.json")


def _count(client: Client) -> float:
    rows = client.results(query("all-events")).json()
    return sum(r["value"] for r in rows)


def _assert_json_error(reply: object, status: int) -> str:
    from tests.server_support import Reply

    assert isinstance(reply, Reply)
    assert reply.status == status, (reply.status, reply.body)
    assert "application/json" in (reply.header("Content-Type") or "")
    assert reply.header("Content-Length") == str(len(reply.body))
    return reply.message


# ---------------------------------------------------------------- 200


def test_single_event_with_segment_headers_is_200_empty(client: Client) -> None:
    """The exact single-event request of requests.md §2 gets 200 with an empty body."""
    reply = client.ingest(TRACK, headers=segment_headers(TRACK), key=False)
    assert reply.status == 200
    assert reply.body == b""
    assert reply.header("Content-Length") == "0"
    assert _count(client) == 1


def test_batch_is_accepted_and_counted_per_type(client: Client) -> None:
    """The 7-event batch of requests.md §3 lands in the right minute buckets by type."""
    assert client.ingest(BATCH, headers=segment_headers(BATCH), key=False).status == 200
    got = simple_points(client.results(query()).json())
    assert got == expected_by_type(json.loads(BATCH))


def test_null_elements_and_minimal_bodies_are_accepted(client: Client) -> None:
    """``[null]``, ``[null,null,null]`` and the minimal event (requests.md §5) are 200."""
    for body in (
        b"[null]",
        b"[null,null,null]",
        b'[{"anonymousId":"anon-1","event":"Ping","messageId":"m-1","type":"track"}]',
        b"[{}]",
    ):
        assert client.ingest(body).status == 200, body
    assert _count(client) == 2  # the minimal event and the empty object; nulls are skipped


def test_edge_value_event_is_accepted(client: Client) -> None:
    """The edge-case body (requests.md §4) is accepted and counted at the ingest time."""
    body = fixture_bytes("request-body-single-edge.json")
    assert client.ingest(body, headers=segment_headers(body), key=False).status == 200
    assert _count(client) == 1


def test_header_names_are_case_insensitive(client: Client) -> None:
    """``X-API-TOKEN`` works like ``x-api-token``."""
    reply = client.ingest(TRACK, headers={"X-API-TOKEN": SEGMENT_KEY}, key=False)
    assert reply.status == 200


def test_gzip_body_is_accepted(client: Client) -> None:
    """``Content-Encoding: gzip`` bodies are decompressed."""
    reply = client.ingest(gzip.compress(BATCH), headers={"Content-Encoding": "gzip"})
    assert reply.status == 200
    assert _count(client) == 7


def test_other_formats_follow_the_ingest_schema(client: Client) -> None:
    """A NEWLINE_DELIMITED ingest takes NDJSON."""
    body = b'{"type":"track","event":"A"}\n{"type":"page","name":"B"}\n'
    assert client.ingest(body, ingest="ndjson").status == 200
    assert _count(client) == 2


# ---------------------------------------------------------------- 400


def test_malformed_json_is_400_naming_the_problem(client: Client) -> None:
    """Malformed JSON: 400 with a message, nothing applied."""
    message = _assert_json_error(client.ingest(b'[{"type":"track",}]'), 400)
    assert "alformed" in message
    assert any(ch.isdigit() for ch in message), message  # the byte offset
    assert _count(client) == 0


def test_wrong_format_is_400(client: Client) -> None:
    """A bare object sent to an ARRAY_OF_EVENTS ingest is 400 'Incorrect event format'."""
    message = _assert_json_error(client.ingest(b'{"type":"track"}'), 400)
    assert "format" in message.lower()


def test_batch_is_all_or_nothing(client: Client) -> None:
    """One bad byte at the end rejects the whole batch: nothing is counted."""
    bad = BATCH[:-1] + b",}"
    assert client.ingest(bad).status == 400
    assert _count(client) == 0
    assert client.ingest(BATCH).status == 200
    assert _count(client) == 7


def test_declared_oversize_body_is_400_without_reading_it(server: EventtallyHTTPServer) -> None:
    """Content-Length over the limit: 400 before the body is sent (the server never waits)."""
    head = (
        f"POST /{INGEST} HTTP/1.1\r\nHost: x\r\nx-api-token: {SEGMENT_KEY}\r\n"
        "content-type: application/json\r\nContent-Length: 2000000\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = raw_exchange(server.port, head, read_timeout=5)
    assert time.monotonic() - started < 4
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"].startswith("Body larger")


def test_oversize_chunked_body_is_400(client: Client) -> None:
    """A chunked body (no Content-Length) is cut off at the limit too."""

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(1200):
            yield b'{"type":"track","pad":"' + b"x" * 1000 + b'"},'
        yield b"{}]"

    client.conn.putrequest("POST", f"/{INGEST}")
    client.conn.putheader("x-api-token", SEGMENT_KEY)
    client.conn.putheader("Transfer-Encoding", "chunked")
    client.conn.endheaders()
    try:
        for c in chunks():
            client.conn.send(b"%x\r\n%s\r\n" % (len(c), c))
        client.conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before everything is sent
    resp = client.conn.getresponse()
    assert resp.status == 400
    assert "Body larger" in json.loads(resp.read())["message"]


def test_body_at_the_limit_is_accepted(tmp_path: Path) -> None:
    """The limit is configurable and inclusive: a body of exactly max_body_bytes passes."""
    body = b'[{"type":"track","pad":"' + b"x" * 100 + b'"}]'
    with running_server(tmp_path, {"max_body_bytes": len(body)}) as srv:
        c = Client(srv)
        assert c.ingest(body).status == 200
        assert c.ingest(body[:-1] + b" ]").status == 400  # one byte more
        c.close()


def test_gzip_bomb_is_400(client: Client) -> None:
    """A small gzip body that inflates past max_decompressed_bytes is refused."""
    bomb = gzip.compress(b"[" + b" " * 20_000_000 + b"]")
    assert len(bomb) < 1_048_576
    message = _assert_json_error(client.ingest(bomb, headers={"Content-Encoding": "gzip"}), 400)
    assert "Decompressed" in message


def test_corrupt_gzip_is_400(client: Client) -> None:
    """A body that is not gzip despite the header is 400."""
    _assert_json_error(client.ingest(b"not gzip", headers={"Content-Encoding": "gzip"}), 400)


def test_unknown_content_encoding_is_415(client: Client) -> None:
    """Encodings other than gzip/deflate are refused with 415."""
    _assert_json_error(client.ingest(BATCH, headers={"Content-Encoding": "br"}), 415)


# ---------------------------------------------------------------- 401 / 403 / 404


def test_missing_header_is_401_no_authorization_header(client: Client) -> None:
    """No ``x-api-token``: 401 with exactly ``No Authorization Header``."""
    assert _assert_json_error(client.ingest(TRACK, key=None), 401) == "No Authorization Header"


def test_swapped_header_name_and_value_is_401_no_authorization_header(client: Client) -> None:
    """A user who swapped header name and value sees ``No Authorization Header``."""
    reply = client.ingest(TRACK, headers={SEGMENT_KEY: "x-api-token"}, key=None)
    assert _assert_json_error(reply, 401) == "No Authorization Header"


def test_invalid_key_is_401(client: Client) -> None:
    """An unknown key: 401 ``Invalid API Key``."""
    assert _assert_json_error(client.ingest(TRACK, key="nope"), 401) == "Invalid API Key"
    assert _assert_json_error(client.ingest(TRACK, key=""), 401) == "Invalid API Key"


def test_disabled_key_is_401(client: Client) -> None:
    """A disabled key: 401 ``Disabled API Key``."""
    assert _assert_json_error(client.ingest(TRACK, key=DISABLED_KEY), 401) == "Disabled API Key"


def test_read_only_key_is_403(client: Client) -> None:
    """A key without Write: 403."""
    assert "Write" in _assert_json_error(client.ingest(TRACK, key=READ_KEY), 403)
    assert client.ingest(TRACK, key=WRITE_KEY).status == 200


def test_unknown_ingest_is_404(client: Client) -> None:
    """An unknown ingest id: 404."""
    assert _assert_json_error(client.ingest(TRACK, ingest="nosuch"), 404) == "Ingest not found"


def test_other_organizations_ingest_is_404_like_unknown(client: Client) -> None:
    """Another organization's ingest answers exactly like an unknown one."""
    theirs = client.ingest(TRACK, ingest=BETA_INGEST)
    unknown = client.ingest(TRACK, ingest="nosuch")
    assert (
        (theirs.status, theirs.body)
        == (unknown.status, unknown.body)
        == (404, b'{"message":"Ingest not found"}')
    )
    assert client.ingest(TRACK, ingest=BETA_INGEST, key=BETA_KEY).status == 200


# ---------------------------------------------------------------- 405 / 429 / no redirects


def test_wrong_method_is_405_with_allow(client: Client) -> None:
    """GET, DELETE and OPTIONS on an ingest URL are 405 with ``Allow: POST, PUT, PATCH``."""
    for method in ("GET", "DELETE", "OPTIONS"):
        reply = client.request(method, f"/{INGEST}")
        _assert_json_error(reply, 405)
        assert reply.message == "Method not allowed; ingest with POST, PUT or PATCH"
        assert reply.header("Allow") == "POST, PUT, PATCH"


def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    """Over an organization's rate: 429 with an integer ``Retry-After``; other orgs unaffected."""
    with running_server(tmp_path, {"rate_limit": 1}) as srv:
        c = Client(srv)
        replies = [c.ingest(b"[{}]") for _ in range(4)]
        assert replies[0].status == 200
        limited = [r for r in replies[1:] if r.status == 429]
        assert limited
        reply = limited[0]
        assert _assert_json_error(reply, 429)
        assert int(reply.header("Retry-After") or "0") >= 1
        assert c.ingest(b"[{}]", ingest=BETA_INGEST, key=BETA_KEY).status == 200
        time.sleep(1.1)
        assert c.ingest(b"[{}]").status == 200
        c.close()


def test_trailing_slash_is_served_not_redirected(client: Client) -> None:
    """``POST /abc123/`` is handled directly: only ``GET /`` (to the dashboard) redirects."""
    assert client.ingest(TRACK, ingest=f"{INGEST}/").status == 200
    assert client.request("POST", "/", b"[]").status == 404
    assert client.request("GET", "/").status == 302
    assert client.request("POST", "/a/b", b"[]").status == 404


# ---------------------------------------------------------------- order of checks (decision 4)


def test_check_order_401_before_403_before_404(client: Client) -> None:
    """Invalid key beats unknown ingest; a read-only key learns nothing about ingests."""
    assert client.ingest(TRACK, ingest="nosuch", key="bad").status == 401
    assert client.ingest(TRACK, ingest="nosuch", key=READ_KEY).status == 403
    assert client.ingest(TRACK, ingest=BETA_INGEST, key=READ_KEY).status == 403


def test_check_order_404_and_429_before_size(tmp_path: Path) -> None:
    """Unknown ingest beats an oversize body; the rate limit beats it too."""
    head = "POST /{} HTTP/1.1\r\nHost: x\r\nx-api-token: {}\r\nContent-Length: 5000000\r\n\r\n"
    with running_server(tmp_path, {"rate_limit": 1}) as srv:
        answer = raw_exchange(srv.port, head.format("nosuch", SEGMENT_KEY).encode())
        assert answer.startswith(b"HTTP/1.1 404 ")
        assert Client(srv).ingest(b"[{}]").status == 200  # spends the only token
        answer = raw_exchange(srv.port, head.format(INGEST, SEGMENT_KEY).encode())
        assert answer.startswith(b"HTTP/1.1 429 ")
        assert b"Retry-After: " in answer


def test_one_log_line_per_request(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    """Each request logs one INFO line on ``eventtally.server``; the key is never logged."""
    import logging

    with caplog.at_level(logging.INFO, logger="eventtally.server"):
        client.ingest(TRACK)
        client.ingest(TRACK, key="bad")
    lines = [r.getMessage() for r in caplog.records if r.name == "eventtally.server"]
    assert len(lines) == 2
    assert f"/{INGEST}" in lines[0] and " 200 " in lines[0]
    assert " 401 " in lines[1]
    assert all(SEGMENT_KEY not in line for line in lines)
