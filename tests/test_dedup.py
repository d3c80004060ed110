"""Opt-in messageId deduplication: window, bounded memory, batch filtering, two-phase commit."""

from __future__ import annotations

import json
import threading
import tracemalloc
from typing import Any

import pytest

from eventtally.durability import MessageIdDeduplicator
from segment_gen import batches, generate_events
from tests.support import dumps, ingest_def, make_engine, ndjson, single_value


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def events(ids: list[Any], **extra: Any) -> list[dict[str, Any]]:
    """One small event per messageId (None: an event without the field)."""
    out = []
    for i, mid in enumerate(ids):
        ev: dict[str, Any] = {"type": "track", "n": i, "text": 'é\u2028\\"}]', **extra}
        if mid is not None:
            ev["messageId"] = mid
        out.append(ev)
    return out


# --------------------------------------------------------------------------------------------
# Single ids, window and memory
# --------------------------------------------------------------------------------------------


def test_seen_is_test_and_set() -> None:
    """seen() is False the first time and True after; `in` only tests."""
    d = MessageIdDeduplicator()
    assert "a" not in d
    assert d.seen("a") is False
    assert "a" in d
    assert d.seen("a") is True
    assert d.seen("b") is False
    assert d.seen(12) is False and d.seen("12") is False  # a number is not its string
    assert len(d) == 4
    st = d.stats()
    assert (st.checked, st.dropped, st.ids) == (5, 1, 4)


def test_window_expires_old_ids() -> None:
    """Ids older than `window` seconds are forgotten (and counted as expired)."""
    clock = FakeClock()
    d = MessageIdDeduplicator(window=60, clock=clock)
    d.seen("old")
    clock.now += 30
    d.seen("mid")
    clock.now += 31
    assert d.seen("mid") is True
    assert d.seen("old") is False  # expired, so new again
    assert d.stats().expired == 1


def test_max_ids_bounds_memory_oldest_first() -> None:
    """At most max_ids are remembered; the oldest are evicted first."""
    d = MessageIdDeduplicator(window=None, max_ids=1000)
    for i in range(5000):
        d.seen(f"id-{i}")
        assert len(d) <= 1000
    assert d.stats().evicted == 4000
    assert all(f"id-{i}" in d for i in range(4000, 5000))
    assert not any(f"id-{i}" in d for i in range(0, 4000, 7))


def test_memory_per_id_is_bounded() -> None:
    """Measured memory per remembered id stays under 125 bytes (docs/durability.md has it)."""
    n = 100_000
    ids = [f"{i:08x}-1c2d-4e5f-8a9b-{i * 7919:012x}" for i in range(n)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        d = MessageIdDeduplicator(window=3600, max_ids=n)
        for mid in ids:
            d.seen(mid)
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(d) == n
    assert 40 < used / n < 125, used / n


# --------------------------------------------------------------------------------------------
# Batch filtering
# --------------------------------------------------------------------------------------------


def test_array_batch_drops_seen_ids_and_keeps_bytes_exact() -> None:
    """ARRAY_OF_EVENTS: seen ids are cut out; kept events keep their exact original bytes."""
    d = MessageIdDeduplicator()
    first = dumps(events(["a", "b", "c"]))
    body, dropped = d.filter_batch(first, "ARRAY_OF_EVENTS")
    assert (body, dropped) == (first, 0)
    assert body is first  # untouched when nothing is dropped
    evs = events(["b", "d", "a", "e"])
    raw = b"[ %s ,\n  %s,%s , %s ]" % tuple(json.dumps(e).encode() for e in evs)
    body, dropped = d.filter_batch(raw, "ARRAY_OF_EVENTS")
    assert dropped == 2
    assert body == b"[%s,%s]" % (json.dumps(evs[1]).encode(), json.dumps(evs[3]).encode())
    assert json.loads(body) == [evs[1], evs[3]]
    assert d.stats().dropped == 2


def test_duplicates_inside_one_batch_are_dropped() -> None:
    """A messageId repeated inside one batch is kept once."""
    d = MessageIdDeduplicator()
    body, dropped = d.filter_batch(dumps(events(["x", "y", "x", "x"])), "ARRAY_OF_EVENTS")
    assert dropped == 2
    assert [e["messageId"] for e in json.loads(body)] == ["x", "y"]


def test_events_without_message_id_are_always_kept() -> None:
    """Events lacking messageId (or with null) and non-objects pass through and are counted."""
    d = MessageIdDeduplicator()
    batch: list[Any] = [*events([None, "a", None]), None, 5]
    batch[2]["messageId"] = None
    for _ in range(2):
        plan = d.check_batch(dumps(batch), "ARRAY_OF_EVENTS")
        d.commit(plan)
    assert (plan.dropped, plan.kept, plan.no_message_id) == (1, 4, 4)
    assert json.loads(plan.body) == [batch[0], batch[2], None, 5]


def test_ndjson_batch_drops_lines() -> None:
    """NEWLINE_DELIMITED: duplicate lines go; CRLF, trailing commas and blank lines stay."""
    d = MessageIdDeduplicator()
    d.filter_batch(ndjson(events(["a"])), "NEWLINE_DELIMITED")
    evs = events(["a", "b", "a", "c"])
    lines = [json.dumps(e).encode() for e in evs]
    raw = lines[0] + b"\r\n" + lines[1] + b",\r\n\n" + lines[2] + b"\n" + lines[3]
    body, dropped = d.filter_batch(raw, "NDJSON")
    assert dropped == 2
    assert body == lines[1] + b",\r\n\n" + lines[3]
    engine = make_engine(ingest_def("NEWLINE_DELIMITED"))
    assert engine.ingest(body).events == 2


def test_object_with_array_property_batch() -> None:
    """OBJECT_WITH_ARRAY_PROPERTY: the array at arrayPath is filtered in place."""
    ingest = ingest_def("OBJECT_WITH_ARRAY_PROPERTY", array_path="@.data['events']")
    d = MessageIdDeduplicator()
    evs = events(["a", "b", "c"])
    raw = json.dumps({"meta": {"events": [1]}, "data": {"x": [1, 2], "events": evs}}).encode()
    d.filter_batch(dumps({"data": {"events": events(["b"])}}), ingest)
    body, dropped = d.filter_batch(raw, ingest)
    assert dropped == 1
    parsed = json.loads(body)
    assert parsed["data"]["events"] == [evs[0], evs[2]]
    assert parsed["meta"] == {"events": [1]} and parsed["data"]["x"] == [1, 2]
    engine = make_engine(ingest)
    assert engine.ingest(body).events == 2


def test_single_object_duplicate_leaves_nothing_to_ingest() -> None:
    """SINGLE_OBJECT: a repeated event empties the plan; the server answers 200 without ingest."""
    d = MessageIdDeduplicator()
    one = dumps(events(["a"])[0])
    first = d.check_batch(one, "SINGLE_OBJECT")
    assert (first.body, first.kept, first.empty) == (one, 1, False)
    d.commit(first)
    again = d.check_batch(one, "SINGLE_OBJECT")
    assert (again.body, again.dropped, again.kept, again.empty) == (b"", 1, 0, True)


@pytest.mark.parametrize(
    "body",
    [b'[{"messageId": "a"}, {"messageId": ', b"\xff\xfe", b'{"not": "an array"}', b"[1] x"],
)
def test_unparsable_bodies_pass_through(body: bytes) -> None:
    """A body this module cannot parse is passed on untouched for the engine to judge."""
    d = MessageIdDeduplicator()
    d.seen("a")
    plan = d.check_batch(body, "ARRAY_OF_EVENTS")
    assert (plan.body, plan.dropped, plan.parsed, plan.empty) == (body, 0, False, False)
    assert d.stats().unparsed == 1


def test_unknown_schema_is_an_error() -> None:
    """A schema name that is not an ingest schema raises ValueError."""
    with pytest.raises(ValueError):
        MessageIdDeduplicator().check_batch(b"[]", "CSV")


# --------------------------------------------------------------------------------------------
# Two-phase use by a server
# --------------------------------------------------------------------------------------------


def test_aborted_batch_releases_its_ids() -> None:
    """A batch refused after check (WAL error -> 503) does not make its retry a duplicate."""
    d = MessageIdDeduplicator()
    body = dumps(events(["a", "b"]))
    with pytest.raises(OSError), d.batch(body, "ARRAY_OF_EVENTS"):
        raise OSError("disk full")
    with d.batch(body, "ARRAY_OF_EVENTS") as retry:
        assert retry.dropped == 0
    with d.batch(body, "ARRAY_OF_EVENTS") as third:
        assert third.dropped == 2 and third.empty


def test_in_flight_ids_are_reserved() -> None:
    """A concurrent copy of an in-flight batch drops its ids; committing is idempotent."""
    d = MessageIdDeduplicator()
    body = dumps(events(["a", "b"]))
    first = d.check_batch(body, "ARRAY_OF_EVENTS")
    second = d.check_batch(body, "ARRAY_OF_EVENTS")
    assert (first.dropped, second.dropped) == (0, 2)
    d.commit(first)
    d.commit(first)
    d.abort(second)
    assert first.state == "committed" and second.state == "aborted"
    assert len(d) == 2


def test_observe_batch_rebuilds_the_window() -> None:
    """observe_batch (WAL replay after a restart) remembers ids without filtering."""
    d = MessageIdDeduplicator()
    assert d.observe_batch(dumps(events(["a", "b", None])), "ARRAY_OF_EVENTS") == 2
    assert d.observe_batch(b"garbage", "ARRAY_OF_EVENTS") == 0
    assert d.filter_batch(dumps(events(["a", "c"])), "ARRAY_OF_EVENTS")[1] == 1


def test_segment_retries_count_once_in_the_engine() -> None:
    """Segment batches resent with overlaps: the engine's COUNT equals the distinct events."""
    evs = generate_events(3000, seed=3)
    bodies = batches(evs, size=300)
    resent = bodies + bodies[2:5] + batches(evs[450:1350], size=300)
    d = MessageIdDeduplicator()
    engine = make_engine()
    dropped = 0
    for body in resent:
        plan = d.check_batch(body, "ARRAY_OF_EVENTS")
        dropped += plan.dropped
        if not plan.empty:
            engine.ingest(plan.body)
        d.commit(plan)
    assert single_value(engine) == 3000
    assert dropped == 1800 == d.stats().dropped


def test_threads_filtering_the_same_batches_keep_each_event_once() -> None:
    """Eight threads racing on the same batches keep every messageId exactly once overall."""
    d = MessageIdDeduplicator()
    bodies = [dumps(events([f"{b}-{i}" for i in range(50)])) for b in range(40)]
    kept: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for body in bodies:
            with d.batch(body, "ARRAY_OF_EVENTS") as plan:
                ids = [e["messageId"] for e in json.loads(plan.body)] if not plan.empty else []
                with lock:
                    kept.extend(ids)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(kept) == sorted(f"{b}-{i}" for b in range(40) for i in range(50))
    assert d.stats().dropped == 7 * 2000
