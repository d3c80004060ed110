"""Snapshots, exact merge and retention (docs/snapshot-format.md; decision 8 of docs/decisions.md).

- ``to_bytes``/``from_bytes`` and ``save``/``load`` keep every answer identical and carry the
  ingest and filter definitions; a corrupt, truncated, foreign or newer snapshot is refused with
  a ``SnapshotError`` that says what is wrong, and no byte change ever crashes the decoder.
- ``merge``: ``ingest(A + B) == merge(ingest(A), ingest(B))`` for every calculation (COUNT, SUM,
  MIN, MAX exact; AVG to 1e-9; distinct and percentile sketches EXACTLY equal), checked by a
  hypothesis property and on data big enough for the HyperLogLog and collapsed-DDSketch regimes.
  Engines with different filter definitions are refused and left untouched.
- ``drop_before``: buckets starting before the horizon go, per filter or everywhere.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventtally import (
    ConfigError,
    Engine,
    EventtallyError,
    NotFoundError,
    SnapshotError,
    _core,
)
from tests.test_query import (
    ALL_CALCS,
    INGEST,
    T0,
    Clock,
    answer,
    filter_def,
    ndjson,
)

FORMAT_VERSION = _core.SNAPSHOT_FORMAT_VERSION
HEADER = struct.Struct("<8sIQI")  # magic, version, payload length, CRC-32 of the payload
PERCENTILES = [0.001, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0]

FLAT_FILTER: dict[str, Any] = {
    "id": "flat",
    "name": "order lines",
    "filter": "$.kind == 'order'",
    "flattenPath": "@.items",
    "groupingItems": [
        {"grouping": "@.sku", "alias": None},
        {"grouping": "$.device", "alias": "Dev"},
    ],
    "intervalType": "MONTH",
    "intervalCount": 1,
    "aggregations": [
        {
            "id": 1,
            "name": "qty",
            "calculations": ["SUM", "COUNT", "MAX"],
            "calculationField": "@.qty",
            "subFilter": "@.qty > 1",
        },
        {
            "id": 7,
            "name": "skus",
            "calculations": ["APPROX_COUNT_DISTINCT"],
            "calculationField": "@.sku",
            "subFilter": None,
        },
    ],
}


def with_calculations(fdef: dict[str, Any], calcs: list[str]) -> dict[str, Any]:
    """``fdef`` with aggregation 1 restricted to ``calcs``."""
    first = {**fdef["aggregations"][0], "calculations": calcs}
    return {**fdef, "aggregations": [first, *fdef["aggregations"][1:]]}


FILTERS: list[dict[str, Any]] = [
    filter_def("f"),
    # users: strings, so only COUNT and distinct have rows; > 2,048 per day (HyperLogLog)
    with_calculations(
        filter_def("u", groupings=(), interval=("DAY", 1), field="@.u"),
        ["COUNT", "APPROX_COUNT_DISTINCT"],
    ),
    # 24 decades of floats: SUM/AVG would depend on addition order, so they are left out
    with_calculations(
        filter_def("w", groupings=(("@.country", "Country"),), interval=("MINUTE", 5), field="@.w"),
        ["COUNT", "MIN", "MAX", "APPROX_COUNT_DISTINCT", "PERCENTILES"],
    ),
    filter_def("n", groupings=(), interval=("DAY", 1)),
    FLAT_FILTER,
]


def make_events(n: int, seed: int, span_s: int = 2 * 86_400) -> list[dict[str, Any]]:
    """Events for every filter: v (quarters, numeric strings, junk), u (users), w (24 decades
    of magnitude, so DDSketch bins collapse), and order lines to flatten."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        e: dict[str, Any] = {
            "ts": T0 + rnd.randrange(span_s),
            "device": rnd.choice(["ios", "android", "web"]),
            "u": f"user-{rnd.randrange(20_000)}",
            "w": rnd.choice([-1, 1]) * 10.0 ** rnd.uniform(-12, 12),
        }
        if rnd.random() < 0.9:
            e["country"] = rnd.choice(["US", "DE", "FR", "JP"])
        kind = rnd.random()
        if kind < 0.85:
            e["v"] = rnd.randrange(-4000, 40_000) / 4
        elif kind < 0.95:
            e["v"] = str(rnd.randrange(5000, 6000))
        if i % 3 == 0:
            e["kind"] = "order"
            e["items"] = [
                {"sku": f"sku-{rnd.randrange(40)}", "qty": rnd.randrange(5)}
                for _ in range(rnd.randrange(4))
            ]
        events.append(e)
    return events


def engine_with(events: list[dict[str, Any]], batch: int = 2000, **kw: Any) -> Engine:
    """A fresh engine over FILTERS that ingested ``events`` in batches."""
    engine = Engine(INGEST, FILTERS, clock=kw.get("clock") or Clock(T0 + 30 * 86_400))
    for i in range(0, len(events), batch):
        if events[i : i + batch]:
            engine.ingest(ndjson(events[i : i + batch]))
    return engine


def all_queries() -> list[dict[str, Any]]:
    """One query per (filter, aggregation, calculation[, percentile])."""
    queries = []
    for f in FILTERS:
        for agg in f["aggregations"]:
            for calc in agg["calculations"]:
                base = {"filterId": f["id"], "aggregationId": agg["id"], "calculation": calc}
                if calc == "PERCENTILES":
                    queries.extend({**base, "percentile": p} for p in PERCENTILES)
                else:
                    queries.append(base)
    return queries


QUERIES = all_queries()


def assert_same_answers(a: Engine, b: Engine, *, avg_rel: float = 0.0) -> None:
    """Every query gives the same rows and arrays on both engines; AVG within ``avg_rel``."""
    for query in QUERIES:
        got, want = a.results(query), b.results(query)
        arr_a, arr_b = a.results_arrays(query), b.results_arrays(query)
        assert np.array_equal(arr_a.dt, arr_b.dt), query
        assert arr_a.groupings.keys() == arr_b.groupings.keys(), query
        for key, column in arr_a.groupings.items():
            assert np.array_equal(column, arr_b.groupings[key]), query
        if query["calculation"] == "AVG" and avg_rel:
            assert [(r["dt"], r["groupings"]) for r in got] == [
                (r["dt"], r["groupings"]) for r in want
            ], query
            for g, w in zip(got, want, strict=True):
                assert g["value"] == pytest.approx(w["value"], rel=avg_rel, abs=1e-12), query
            assert np.allclose(arr_a.values, arr_b.values, rtol=avg_rel, atol=1e-12), query
        else:
            assert got == want, query
            assert np.array_equal(arr_a.values, arr_b.values), query
        assert [r["value"] for r in got] == arr_a.values.tolist(), query


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return make_events(12_000, seed=11)


@pytest.fixture(scope="module")
def full(events: list[dict[str, Any]]) -> Engine:
    return engine_with(events)


@pytest.fixture(scope="module")
def small() -> Engine:
    """A small engine whose snapshot is short enough to corrupt at every byte."""
    return engine_with(make_events(40, seed=5))


def test_every_calculation_is_exercised(full: Engine) -> None:
    """The data gives rows for every query (otherwise the comparisons below prove little)."""
    for query in QUERIES:
        assert answer(full, query), query


# ---------------------------------------------------------------- round trip


def test_round_trip_bytes_keeps_every_answer(full: Engine) -> None:
    """``from_bytes(to_bytes())`` answers every calculation identically."""
    data = full.to_bytes()
    assert isinstance(data, bytes)
    assert_same_answers(Engine.from_bytes(data), full)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_from_bytes_accepts_buffers(small: Engine, wrap: type) -> None:
    """bytes, bytearray and memoryview are accepted."""
    loaded = Engine.from_bytes(wrap(small.to_bytes()))
    assert_same_answers(loaded, small)


def test_round_trip_is_byte_stable(full: Engine) -> None:
    """Re-encoding a loaded snapshot gives the same bytes."""
    data = full.to_bytes()
    assert Engine.from_bytes(data).to_bytes() == data


def test_definitions_travel_inside(full: Engine) -> None:
    """Filter and ingest definitions come back with the state."""
    loaded = Engine.from_bytes(full.to_bytes())
    assert loaded.filter_definitions() == full.filter_definitions()
    assert loaded.ingest_definitions() == full.ingest_definitions()
    assert [d["id"] for d in loaded.filter_definitions()] == [f["id"] for f in FILTERS]


def test_loaded_engine_keeps_ingesting(events: list[dict[str, Any]]) -> None:
    """A loaded engine parses and aggregates new batches exactly like the original."""
    original = engine_with(events[:6000])
    loaded = Engine.from_bytes(original.to_bytes(), clock=Clock(T0 + 30 * 86_400))
    for engine in (original, loaded):
        engine.ingest(ndjson(events[6000:]))
    assert_same_answers(loaded, original)
    assert_same_answers(loaded, engine_with(events), avg_rel=1e-9)


def test_snapshot_is_independent_of_the_source(events: list[dict[str, Any]]) -> None:
    """Ingesting into the source after ``to_bytes`` does not change the loaded copy."""
    engine = engine_with(events[:100])
    loaded = Engine.from_bytes(engine.to_bytes())
    engine.ingest(ndjson(events[100:200]))
    assert_same_answers(loaded, engine_with(events[:100]))


def test_empty_engine_round_trip() -> None:
    """An engine with no events (and one with no filters) round-trips."""
    for filters in (FILTERS, []):
        engine = Engine(INGEST, filters)
        loaded = Engine.from_bytes(engine.to_bytes())
        assert loaded.filter_definitions() == engine.filter_definitions()
        assert loaded.to_bytes() == engine.to_bytes()


def test_from_bytes_clock_is_used() -> None:
    """The clock given to ``from_bytes``/``load`` decides which intervals are incomplete."""
    engine = Engine(INGEST, [filter_def("g", groupings=())], clock=Clock(T0))
    engine.ingest(ndjson([{"ts": T0 + 10, "v": 1}, {"ts": T0 + 70, "v": 1}]))
    query = {
        "filterId": "g",
        "aggregationId": 2,
        "calculation": "COUNT",
        "includeIncompleteIntervals": False,
    }
    assert answer(Engine.from_bytes(engine.to_bytes(), clock=Clock(T0 + 60)), query) == [
        {"dt": "2024-01-01T00:00:00Z", "groupings": None, "value": 1.0}
    ]
    assert len(answer(Engine.from_bytes(engine.to_bytes(), clock=Clock(T0 + 120)), query)) == 2


def test_save_and_load(full: Engine, tmp_path: Path) -> None:
    """``save`` writes the snapshot atomically (no temporary file left); ``load`` reads it."""
    path = tmp_path / "state.etally"
    full.save(path)
    assert path.read_bytes() == full.to_bytes()
    assert os.listdir(tmp_path) == ["state.etally"]
    assert_same_answers(Engine.load(path), full)
    assert_same_answers(Engine.load(str(path), clock=Clock(T0)), full)


def test_save_replaces_an_existing_file(small: Engine, full: Engine, tmp_path: Path) -> None:
    """Saving over an older snapshot replaces it."""
    path = tmp_path / "state.etally"
    full.save(path)
    small.save(path)
    assert path.read_bytes() == small.to_bytes()
    assert sorted(os.listdir(tmp_path)) == ["state.etally"]


def test_load_corrupt_file(small: Engine, tmp_path: Path) -> None:
    """Loading a damaged file raises SnapshotError."""
    path = tmp_path / "state.etally"
    data = bytearray(small.to_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError):
        Engine.load(path)


# ---------------------------------------------------------------- refused snapshots


def refused(data: bytes | bytearray) -> SnapshotError:
    """The SnapshotError that ``from_bytes`` raises for ``data``."""
    with pytest.raises(SnapshotError) as info:
        Engine.from_bytes(bytes(data))
    err = info.value
    assert isinstance(err, EventtallyError) and isinstance(err, ValueError)
    assert isinstance(err.reason, str) and err.reason
    return err


def test_header_layout(small: Engine) -> None:
    """Magic, version, payload length and CRC-32 as documented in snapshot.rs."""
    data = small.to_bytes()
    magic, version, length, crc = HEADER.unpack_from(data)
    assert magic == b"ETALLY\x00\x01" and version == FORMAT_VERSION
    assert length == len(data) - HEADER.size
    assert crc == zlib.crc32(data[HEADER.size :])


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("magic", ("magic",)),
        ("version", ("version",)),
        ("length", ("truncated", "trailing")),
        ("crc", ("checksum",)),
        ("payload", ("checksum",)),
    ],
)
def test_flipped_byte_is_refused_everywhere(small: Engine, where: str, words: tuple[str]) -> None:
    """Flipping any byte of any part is refused, with a message naming the problem."""
    data = small.to_bytes()
    spans = {
        "magic": (0, 8),
        "version": (8, 12),
        "length": (12, 20),
        "crc": (20, 24),
        "payload": (24, len(data)),
    }
    lo, hi = spans[where]
    for pos in range(lo, hi):
        for mask in (0x01, 0x80, 0xFF):
            corrupt = bytearray(data)
            corrupt[pos] ^= mask
            message = str(refused(corrupt)).lower()
            assert any(w in message for w in words), (pos, mask, message)


def test_truncated_is_refused_at_every_length(small: Engine) -> None:
    """Every proper prefix of a snapshot is refused as truncated or too short."""
    data = small.to_bytes()
    for n in range(len(data)):
        message = str(refused(data[:n])).lower()
        assert "truncated" in message or "too short" in message, (n, message)


def test_trailing_bytes_are_refused(small: Engine) -> None:
    """Bytes after the payload are refused."""
    assert "trailing" in str(refused(small.to_bytes() + b"\x00")).lower()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 64,
        b"PK\x03\x04" + b"\x00" * 60,
        b'{"ingests": [], "filters": []}',
        b"ETALLY\x00\x02" + b"\x00" * 40,
    ],
)
def test_foreign_data_is_refused(data: bytes) -> None:
    """Empty, zip, JSON or other data is not a snapshot."""
    message = str(refused(data)).lower()
    assert "magic" in message or "too short" in message


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, FORMAT_VERSION + 100, 0, 2**32 - 1])
def test_other_version_is_refused(small: Engine, version: int) -> None:
    """A snapshot of another format version is refused, naming both versions."""
    data = bytearray(small.to_bytes())
    struct.pack_into("<I", data, 8, version)
    message = str(refused(data))
    assert "version" in message and str(version) in message and str(FORMAT_VERSION) in message


_SMALL_SNAPSHOT = engine_with(make_events(40, seed=5)).to_bytes()


def with_valid_checksum(payload: bytes) -> bytes:
    """A header that matches ``payload`` (so only the structure decoder can object)."""
    return HEADER.pack(b"ETALLY\x00\x01", FORMAT_VERSION, len(payload), zlib.crc32(payload)) + (
        payload
    )


def damaged_grouping_key() -> bytes:
    """The small snapshot with the length of the value ``ios`` inside a grouping tuple key set
    to 65,535 (the key's own length untouched), behind a valid checksum."""
    payload = bytearray(_SMALL_SNAPSHOT[HEADER.size :])
    at = payload.find(b"\x03\x00\x00\x00ios")
    assert at > 0
    payload[at : at + 4] = struct.pack("<I", 0xFFFF)
    return with_valid_checksum(bytes(payload))


def test_damaged_grouping_key_is_refused() -> None:
    """A tuple key whose component length overruns the key is refused when loaded."""
    with pytest.raises(SnapshotError):
        loaded = Engine.from_bytes(damaged_grouping_key())
        loaded.results(QUERIES[0])  # had it loaded, a query must not panic either


def test_structural_damage_never_crashes() -> None:
    """Payload damage behind a valid checksum is refused or decodes; it never panics."""
    rnd = random.Random(2024)
    query_panics = []
    for case in range(400):
        payload = bytearray(_SMALL_SNAPSHOT[HEADER.size :])
        for _ in range(rnd.randint(1, 4)):
            payload[rnd.randrange(len(payload))] = rnd.randrange(256)
        if rnd.random() < 0.3:
            payload = payload[: rnd.randrange(len(payload) + 1)]
        try:
            loaded = Engine.from_bytes(with_valid_checksum(bytes(payload)))
        except SnapshotError:
            continue
        for query in QUERIES[:6]:
            try:
                loaded.results(query)
            except EventtallyError:
                pass
            except BaseException as exc:
                if type(exc).__name__ != "PanicException":
                    raise
                query_panics.append((case, str(exc)))
                break
    assert not query_panics, f"damaged snapshots loaded and then panicked: {query_panics[:3]}"


# ---------------------------------------------------------------- merge (decision 8)


def merged(*parts: list[dict[str, Any]]) -> Engine:
    """One engine per part, merged left to right into the first."""
    engines = [engine_with(p) for p in parts]
    for other in engines[1:]:
        engines[0].merge(other)
    return engines[0]


def test_merge_equals_one_engine(events: list[dict[str, Any]]) -> None:
    """merge(ingest(A), ingest(B)) == ingest(A + B), sketches exactly (HLL, collapsed bins)."""
    rnd = random.Random(1)
    side = [rnd.random() < 0.4 for _ in events]
    a = [e for e, left in zip(events, side, strict=True) if left]
    b = [e for e, left in zip(events, side, strict=True) if not left]
    assert_same_answers(merged(a, b), engine_with(a + b), avg_rel=1e-9)
    daily_users = answer(
        engine_with(a + b),
        {"filterId": "u", "aggregationId": 1, "calculation": "APPROX_COUNT_DISTINCT"},
    )
    assert min(r["value"] for r in daily_users) > 2048  # beyond the exact set


def test_merge_is_associative_and_commutative(events: list[dict[str, Any]]) -> None:
    """Four parts merged in different orders and trees give the same state."""
    parts = [events[i::4] for i in range(4)]
    left = merged(*parts)
    tree_a, tree_b = merged(parts[2], parts[0]), merged(parts[3], parts[1])
    tree_a.merge(tree_b)
    assert_same_answers(left, tree_a, avg_rel=1e-9)
    assert_same_answers(left, engine_with(events), avg_rel=1e-9)


def test_merge_with_overlapping_cells_and_duplicates(events: list[dict[str, Any]]) -> None:
    """Both sides holding the same cells (and the same events) still merge exactly."""
    part = events[:3000]
    assert_same_answers(merged(part, part), engine_with(part + part), avg_rel=1e-9)


def test_merge_into_a_loaded_snapshot(events: list[dict[str, Any]]) -> None:
    """A snapshot-loaded engine accepts a merge; the merged state survives a round trip."""
    a, b = events[:5000], events[5000:]
    target = Engine.from_bytes(engine_with(a).to_bytes())
    target.merge(engine_with(b))
    again = Engine.from_bytes(target.to_bytes())
    assert_same_answers(again, engine_with(a + b), avg_rel=1e-9)


def test_merge_leaves_the_other_engine_unchanged(events: list[dict[str, Any]]) -> None:
    """``merge`` reads ``other`` without changing it."""
    a, b = engine_with(events[:500]), engine_with(events[500:1000])
    before = b.to_bytes()
    a.merge(b)
    assert b.to_bytes() == before


def test_merge_of_an_empty_engine_changes_nothing(events: list[dict[str, Any]]) -> None:
    """Merging an empty engine (either way) is the identity."""
    a = engine_with(events[:800])
    a.merge(engine_with([]))
    assert_same_answers(a, engine_with(events[:800]))
    empty = engine_with([])
    empty.merge(engine_with(events[:800]))
    assert_same_answers(empty, engine_with(events[:800]))


def _value_strategy() -> st.SearchStrategy[Any]:
    """v: quarters (sums stay exact), numeric strings, junk, missing-equivalents."""
    return st.one_of(
        st.integers(-10_000, 10_000),
        st.integers(-40_000, 40_000).map(lambda x: x / 4),
        st.sampled_from(["5001", "5002.5", "x", "", True, None, [1], {"a": 1}]),
    )


EVENT = st.fixed_dictionaries(
    {
        "ts": st.integers(T0 - 86_400, T0 + 3 * 86_400),
        "device": st.sampled_from(["ios", "android", "web"]),
    },
    optional={
        "country": st.sampled_from(["US", "DE", ""]),
        "v": _value_strategy(),
        "u": st.one_of(st.integers(0, 300), st.text(max_size=3)),
        "w": st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
        "kind": st.just("order"),
        "items": st.lists(
            st.fixed_dictionaries(
                {"sku": st.sampled_from(["a", "b", "c"]), "qty": st.integers(0, 5)}
            ),
            max_size=3,
        ),
    },
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=st.lists(EVENT, max_size=60), b=st.lists(EVENT, max_size=60))
def test_merge_property(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """Property: ingest(A + B) == merge(ingest(A), ingest(B)) for every calculation."""
    left, right = engine_with(a, batch=25), engine_with(b, batch=25)
    left.merge(right)
    assert_same_answers(left, engine_with(a + b, batch=25), avg_rel=1e-9)


# ---------------------------------------------------------------- merge refused

MUTATIONS: list[tuple[str, Any]] = [
    ("interval", lambda fs: [{**fs[0], "intervalCount": 5}, *fs[1:]]),
    (
        "alias",
        lambda fs: [
            {
                **fs[0],
                "groupingItems": [
                    {"grouping": "@.device", "alias": "Dev"},
                    {"grouping": "@.country", "alias": None},
                ],
            },
            *fs[1:],
        ],
    ),
    ("filter-expression", lambda fs: [{**fs[0], "filter": "@.device == 'ios'"}, *fs[1:]]),
    ("calculations", lambda fs: [{**fs[0], "aggregations": fs[0]["aggregations"][:1]}, *fs[1:]]),
    (
        "sub-filter",
        lambda fs: [
            *fs[:-1],
            {
                **fs[-1],
                "aggregations": [
                    {**fs[-1]["aggregations"][0], "subFilter": None},
                    fs[-1]["aggregations"][1],
                ],
            },
        ],
    ),
    ("extra-filter", lambda fs: [*fs, filter_def("extra")]),
    ("missing-filter", lambda fs: fs[:-1]),
    ("renamed-filter", lambda fs: [{**fs[0], "id": "f2"}, *fs[1:]]),
]


@pytest.mark.parametrize("mutate", [m[1] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_merge_with_different_definitions_is_refused(
    events: list[dict[str, Any]], mutate: Any
) -> None:
    """Different filter definitions: ConfigError naming ``other``; this engine is untouched."""
    target = engine_with(events[:1000])
    before = target.to_bytes()
    other = Engine(INGEST, mutate(FILTERS), clock=Clock(T0))
    other.ingest(ndjson(events[1000:2000]))
    with pytest.raises(ConfigError) as info:
        target.merge(other)
    assert info.value.field == "other"
    assert target.to_bytes() == before


def test_merge_into_itself_is_refused(small: Engine) -> None:
    """An engine cannot be merged into itself (it would double its counts)."""
    before = small.to_bytes()
    with pytest.raises(ConfigError):
        small.merge(small)
    assert small.to_bytes() == before


def test_merge_needs_an_engine(small: Engine) -> None:
    """Anything but an Engine is a TypeError."""
    with pytest.raises(TypeError):
        small.merge(small.to_bytes())  # type: ignore[arg-type]


# ---------------------------------------------------------------- retention


def cell_count(engine: Engine, filter_id: str) -> int:
    """Stored cells (bucket, grouping tuple) of a filter: its COUNT rows of aggregation 2."""
    return len(answer(engine, {"filterId": filter_id, "aggregationId": 2, "calculation": "COUNT"}))


def dts(engine: Engine, filter_id: str) -> list[str]:
    """Bucket starts present in a filter (COUNT of aggregation 2)."""
    return [
        r["dt"]
        for r in answer(engine, {"filterId": filter_id, "aggregationId": 2, "calculation": "COUNT"})
    ]


RETAINED = ["f", "u", "w", "n"]  # filters whose aggregation 2 is a plain COUNT


def test_drop_before_one_filter(events: list[dict[str, Any]]) -> None:
    """Per filter: buckets starting before the horizon go; other filters are untouched."""
    engine = engine_with(events)
    reference = engine_with(events)
    horizon = T0 + 1800  # mid-day: the day bucket starting before it goes
    assert engine.drop_before(horizon, filter_id="n") == 1
    assert dts(engine, "n") == ["2024-01-02T00:00:00Z"]
    query = {
        "filterId": "n",
        "aggregationId": 1,
        "calculation": "PERCENTILES",
        "percentile": 0.5,
        "startTime": "2024-01-01T00:30:00Z",
    }
    assert answer(engine, query) == answer(
        reference, {**query, "startTime": "2024-01-02T00:00:00Z"}
    )
    for fid in ("f", "u", "w", "flat"):
        assert engine.results({"filterId": fid, "aggregationId": 1, "calculation": "COUNT"}) == (
            reference.results({"filterId": fid, "aggregationId": 1, "calculation": "COUNT"})
        )


def test_drop_before_everywhere(events: list[dict[str, Any]]) -> None:
    """Without ``filter_id`` every filter is trimmed; the total of dropped cells is returned."""
    engine = engine_with(events)
    horizon = T0 + 86_400
    cut = "2024-01-02T00:00:00Z"
    expected = sum(sum(1 for dt in dts(engine, f) if dt < cut) for f in RETAINED)
    flat_q = {"filterId": "flat", "aggregationId": 7, "calculation": "APPROX_COUNT_DISTINCT"}
    expected += sum(1 for r in answer(engine, flat_q) if r["dt"] < cut)
    assert engine.drop_before(horizon) == expected
    for fid in RETAINED:
        assert all(dt >= cut for dt in dts(engine, fid))
    # the monthly filter's only bucket (2024-01-01) started before the horizon
    assert answer(engine, flat_q) == []
    assert engine.drop_before(horizon) == 0


def test_drop_before_keeps_a_bucket_starting_at_the_horizon(events: list[dict[str, Any]]) -> None:
    """A bucket whose start equals the horizon stays."""
    engine = engine_with(events)
    engine.drop_before(T0 + 86_400, filter_id="n")
    assert dts(engine, "n")[0] == "2024-01-02T00:00:00Z"
    before = cell_count(engine, "n")
    assert engine.drop_before(T0 + 86_400, filter_id="n") == 0
    assert cell_count(engine, "n") == before


def test_drop_before_then_snapshot_merge_and_ingest(events: list[dict[str, Any]]) -> None:
    """A trimmed state snapshots, merges and keeps ingesting like one built after the horizon."""
    late = [e for e in events if e["ts"] >= T0 + 86_400]
    engine = engine_with(events)
    engine.drop_before(T0 + 86_400)
    loaded = Engine.from_bytes(engine.to_bytes())
    loaded.merge(engine_with(late[:10]))
    expected = engine_with(late + late[:10])
    for query in QUERIES:
        if query["filterId"] != "flat":  # its monthly bucket started before the horizon
            assert answer(loaded, query) == answer(expected, query)


def test_drop_before_unknown_filter(small: Engine) -> None:
    """An unknown filter id is NotFoundError."""
    with pytest.raises(NotFoundError) as info:
        small.drop_before(T0, filter_id="nope")
    assert (info.value.kind, info.value.id) == ("filter", "nope")


def test_drop_before_updates_grouping_values() -> None:
    """Grouping values seen only in dropped buckets disappear from ``groupings``."""
    engine = Engine(INGEST, [filter_def("f")], clock=Clock(T0))
    engine.ingest(
        ndjson([{"ts": T0, "device": "old", "v": 1}, {"ts": T0 + 3600, "device": "new", "v": 1}])
    )
    query = {
        "filterId": "f",
        "aggregationId": 2,
        "calculation": "COUNT",
        "groupingName": "@.device",
    }
    assert engine.groupings(query) == [{"value": "new"}, {"value": "old"}]
    assert engine.drop_before(T0 + 3600) == 1
    assert engine.groupings(query) == [{"value": "new"}]


@pytest.mark.parametrize("calc", ALL_CALCS)
def test_round_trip_after_drop_every_calculation(events: list[dict[str, Any]], calc: str) -> None:
    """Each calculation survives drop + round trip identically."""
    engine = engine_with(events[:3000])
    engine.drop_before(T0 + 43_200)
    loaded = Engine.from_bytes(engine.to_bytes())
    query = {"filterId": "f", "aggregationId": 1, "calculation": calc, "percentile": 0.9}
    assert answer(loaded, query) == answer(engine, query)
