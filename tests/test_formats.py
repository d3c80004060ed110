"""Ingest formats (spec 4.2, semantics.md §1-2): the four schemas, dropped elements, errors with
byte offsets, batch atomicity, every Python input type, and the Segment wire fixtures."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

import eventtally
from eventtally import FormatError, JsonError
from tests.support import (
    INPUT_FORMS,
    agg_def,
    by_group,
    dumps,
    filter_def,
    fixture_bytes,
    fixture_json,
    ingest_def,
    make_engine,
    rows,
    single_value,
    snapshot,
    total,
)

OBJ = "OBJECT_WITH_ARRAY_PROPERTY"
NDJSON = "NEWLINE_DELIMITED"


def count_engine(schema: str = "ARRAY_OF_EVENTS", array_path: str | None = None) -> Any:
    """An engine counting events per ``@.n`` (grouping) for one schema."""
    return make_engine(
        ingest_def(schema, array_path=array_path),
        [filter_def(groupings=["@.n"])],
    )


def counts(engine: Any) -> dict[str, float]:
    """``{@.n value: count}`` over the one bucket."""
    return by_group(rows(engine), "@.n")


# --------------------------------------------------------------------------------------------
# The four schemas
# --------------------------------------------------------------------------------------------

ARRAY_CASES = [
    ("empty array", b"[]", 0, 0, {}),
    ("one empty object", b"[{}]", 1, 1, {}),
    ("padded with whitespace", b' \r\n\t[ {"n":1} , {"n":2} ]\n ', 2, 2, {}),
    ("segment [null]", b"[null]", 1, 0, {"not_object": 1}),
    ("segment [null,null,null]", b"[null,null,null]", 3, 0, {"not_object": 3}),
    (
        "every non-object kind",
        b'[1,"x",true,false,null,[],[{}],{"n":1}]',
        8,
        1,
        {"not_object": 7},
    ),
]


@pytest.mark.parametrize(
    ("body", "events", "accepted", "dropped"),
    [c[1:] for c in ARRAY_CASES],
    ids=[c[0] for c in ARRAY_CASES],
)
def test_array_of_events(body: bytes, events: int, accepted: int, dropped: dict[str, int]) -> None:
    """ARRAY_OF_EVENTS: each element is an event; null and non-objects count as not_object."""
    engine = count_engine()
    stats = engine.ingest(body)
    assert (stats.events, stats.accepted, stats.dropped) == (events, accepted, dropped)
    assert total(rows(engine)) == accepted


NDJSON_CASES = [
    ("plain", b'{"n":1}\n{"n":2}\n', {"1": 1, "2": 1}, 2, {}),
    ("no final newline", b'{"n":1}\n{"n":2}', {"1": 1, "2": 1}, 2, {}),
    ("blank lines", b'\n\n{"n":1}\n\n\n{"n":2}\n\n', {"1": 1, "2": 1}, 2, {}),
    ("whitespace-only lines", b' \t \n{"n":1}\n   \n', {"1": 1}, 1, {}),
    ("CRLF", b'{"n":1}\r\n{"n":2}\r\n\r\n', {"1": 1, "2": 1}, 2, {}),
    ("trailing comma", b'{"n":1},\n{"n":2},\n', {"1": 1, "2": 1}, 2, {}),
    ("trailing comma, CRLF, spaces", b'{"n":1} , \r\n{"n":2},\r\n', {"1": 1, "2": 1}, 2, {}),
    (
        "docs' garbled example: [ … ] lines and commas",
        b'[\n{"n":1},\n{"n":2},\n{"n":3}\n]\n',
        {"1": 1, "2": 1, "3": 1},
        3,
        {},
    ),
    ("stray ] only", b'{"n":1},\n]', {"1": 1}, 1, {}),
    ("multi-line-free objects with nested arrays", b'{"n":[1,2]}\n', {"[1,2]": 1}, 1, {}),
    ("null and scalar lines", b'null\n{"n":1}\n7\n"s"\n', {"1": 1}, 4, {"not_object": 3}),
    ("array lines are not events", b'[{"n":1}]\n[]\n{"n":2}\n', {"2": 1}, 3, {"not_object": 2}),
    ("empty body", b"", {}, 0, {}),
    ("only blank lines", b"\n\r\n  \n", {}, 0, {}),
]


@pytest.mark.parametrize(
    ("body", "expected", "events", "dropped"),
    [c[1:] for c in NDJSON_CASES],
    ids=[c[0] for c in NDJSON_CASES],
)
def test_newline_delimited(
    body: bytes, expected: dict[str, int], events: int, dropped: dict[str, int]
) -> None:
    """NEWLINE_DELIMITED tolerates blank lines, CRLF, a trailing comma and stray [ ] lines."""
    engine = count_engine(NDJSON)
    stats = engine.ingest(body)
    assert stats.events == events
    assert stats.dropped == dropped
    assert counts(engine) == expected


OBJECT_CASES = [
    ("events property", "@.events", b'{"events":[{"n":1},{"n":2}]}', {"1": 1, "2": 1}, {}),
    ("other members ignored", "@.events", b'{"a":1,"events":[{"n":1}],"z":[{}]}', {"1": 1}, {}),
    ("nested path", "@.data.items", b'{"data":{"items":[{"n":1}]}}', {"1": 1}, {}),
    ("bracket path with a space", "@['my events']", b'{"my events":[{"n":1}]}', {"1": 1}, {}),
    ("empty array", "@.events", b'{"events":[]}', {}, {}),
    ("null elements", "@.events", b'{"events":[null,{"n":1},3]}', {"1": 1}, {"not_object": 2}),
]


@pytest.mark.parametrize(
    ("array_path", "body", "expected", "dropped"),
    [c[1:] for c in OBJECT_CASES],
    ids=[c[0] for c in OBJECT_CASES],
)
def test_object_with_array_property(
    array_path: str, body: bytes, expected: dict[str, int], dropped: dict[str, int]
) -> None:
    """OBJECT_WITH_ARRAY_PROPERTY reads the events array named by ``arrayPath``."""
    engine = count_engine(OBJ, array_path)
    stats = engine.ingest(body)
    assert stats.dropped == dropped
    assert counts(engine) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"event":[{}]}',
        b'{"events":null}',
        b'{"events":{}}',
        b'{"events":{"0":{}}}',
        b'{"events":"[{}]"}',
        b'{"events":3}',
        b'{"events":true}',
        b"[]",
        b'[{"events":[{}]}]',
        b'"events"',
        b"null",
    ],
)
def test_object_with_array_property_wrong_shape(body: bytes) -> None:
    """A missing or non-array property, or a body that is no object, is a FormatError."""
    engine = count_engine(OBJ, "@.events")
    with pytest.raises(FormatError) as info:
        engine.ingest(body)
    assert isinstance(info.value.offset, int) and 0 <= info.value.offset <= len(body)
    assert info.value.reason


SINGLE_CASES = [
    ("empty object", b"{}", {"": 1}),
    ("padded", b'\n {"n":1} \n', {"1": 1}),
    ("nested arrays kept as one event", b'{"n":1,"items":[{"n":2},{"n":3}]}', {"1": 1}),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in SINGLE_CASES], ids=[c[0] for c in SINGLE_CASES]
)
def test_single_object(body: bytes, expected: dict[str, int]) -> None:
    """SINGLE_OBJECT: the body is one event."""
    engine = count_engine("SINGLE_OBJECT")
    stats = engine.ingest(body)
    assert (stats.events, stats.accepted) == (1, 1)
    assert counts(engine) == expected


WRONG_SHAPE = [
    ("ARRAY_OF_EVENTS", b'{"n":1}'),
    ("ARRAY_OF_EVENTS", b'{"events":[{}]}'),
    ("ARRAY_OF_EVENTS", b"null"),
    ("ARRAY_OF_EVENTS", b"1"),
    ("ARRAY_OF_EVENTS", b'"[{}]"'),
    ("ARRAY_OF_EVENTS", b"true"),
    ("SINGLE_OBJECT", b"[{}]"),
    ("SINGLE_OBJECT", b"[]"),
    ("SINGLE_OBJECT", b"null"),
    ("SINGLE_OBJECT", b"42"),
    ("SINGLE_OBJECT", b'"{}"'),
    (OBJ, b"[{}]"),
    (OBJ, b"false"),
]


@pytest.mark.parametrize(("schema", "body"), WRONG_SHAPE)
def test_wrong_shape_is_format_error(schema: str, body: bytes) -> None:
    """Valid JSON of the wrong shape raises FormatError ("Incorrect event format")."""
    engine = count_engine(schema, "@.events" if schema == OBJ else None)
    with pytest.raises(FormatError) as info:
        engine.ingest(body)
    err = info.value
    assert isinstance(err, eventtally.EventtallyError)
    assert not isinstance(err, JsonError)
    assert isinstance(err.offset, int) and 0 <= err.offset <= len(body)
    assert isinstance(err.reason, str) and err.reason


# --------------------------------------------------------------------------------------------
# Malformed JSON: JsonError with the byte offset and a reason
# --------------------------------------------------------------------------------------------

MALFORMED = [
    # (schema, body, offset of the first offending byte)
    ("ARRAY_OF_EVENTS", b'[{"a":1},', 9),
    ("ARRAY_OF_EVENTS", b'[{"a":1}', 8),
    ("ARRAY_OF_EVENTS", b'[{"a" 1}]', 6),
    ("ARRAY_OF_EVENTS", b'[{"a":tru}]', 6),
    ("ARRAY_OF_EVENTS", b'[{"a":"abc}]', 6),
    ("ARRAY_OF_EVENTS", b"[{'a':1}]", 2),
    ("ARRAY_OF_EVENTS", b"[NaN]", 1),
    ("ARRAY_OF_EVENTS", b"[Infinity]", 1),
    ("ARRAY_OF_EVENTS", b'[{"a":01}]', 7),
    ("ARRAY_OF_EVENTS", b"[{},]", 4),
    ("ARRAY_OF_EVENTS", b'[{"a":1,}]', 8),
    ("ARRAY_OF_EVENTS", b"[{} {}]", 4),
    ("ARRAY_OF_EVENTS", b'["a\x01b"]', 3),
    ("ARRAY_OF_EVENTS", b'[{"a":1}]]', 9),
    ("ARRAY_OF_EVENTS", b'[{"a":1.}]', 8),
    ("ARRAY_OF_EVENTS", b'[{"a":"\\x"}]', 7),
    ("ARRAY_OF_EVENTS", b"", 0),
    ("ARRAY_OF_EVENTS", b'[{"a":1}]\x00', 9),
    ("SINGLE_OBJECT", b'{"a":1', 6),
    ("SINGLE_OBJECT", b'{"a":1}{"b":2}', 7),
    (OBJ, b'{"events":[{}],', 15),
    (OBJ, b'{"events":{}, "y": tru}', 19),
    (NDJSON, b'{"a":1}\n{"a":', 13),
    (NDJSON, b'{"a":1}\r\n{"a"\r\n', 13),
    (NDJSON, b"{}\n\n  {,}\n", 7),
    (NDJSON, b'{"a":1} {"a":2}\n', 8),
    (NDJSON, b'{"a":1},,\n', 7),
]


@pytest.mark.parametrize(("schema", "body", "offset"), MALFORMED)
def test_malformed_json_reports_offset_and_reason(schema: str, body: bytes, offset: int) -> None:
    """Malformed JSON raises JsonError carrying the byte offset of the problem and a reason."""
    engine = count_engine(schema, "@.events" if schema == OBJ else None)
    with pytest.raises(JsonError) as info:
        engine.ingest(body)
    err = info.value
    assert isinstance(err, eventtally.EventtallyError) and isinstance(err, ValueError)
    assert err.offset == offset
    assert isinstance(err.reason, str) and err.reason
    assert str(offset) in str(err)


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        ("ARRAY_OF_EVENTS", b"abc"),
        ("ARRAY_OF_EVENTS", b"}"),
        ("ARRAY_OF_EVENTS", b"]"),
        ("ARRAY_OF_EVENTS", b","),
        ("ARRAY_OF_EVENTS", b"/*comment*/[{}]"),
        ("ARRAY_OF_EVENTS", b"tru"),
        ("SINGLE_OBJECT", b"nul"),
        ("SINGLE_OBJECT", b"<xml/>"),
        (OBJ, b"x"),
    ],
)
def test_not_json_at_all_is_json_error(schema: str, body: bytes) -> None:
    """A body that is not JSON at all is malformed (JsonError), not a shape mismatch."""
    engine = count_engine(schema, "@.events" if schema == OBJ else None)
    with pytest.raises(JsonError) as info:
        engine.ingest(body)
    assert info.value.offset == 0


# --------------------------------------------------------------------------------------------
# Atomicity: a rejected batch changes nothing
# --------------------------------------------------------------------------------------------

GOOD = b'[{"n":1,"v":5,"u":"a"},{"n":2,"v":"7","u":"b"}]'
BAD_BATCHES = [
    ("malformed after valid events", "ARRAY_OF_EVENTS", b'[{"n":1,"v":5},{"n":3,"v":1},{"n":'),
    ("trailing garbage", "ARRAY_OF_EVENTS", b'[{"n":1,"v":5},{"n":9}] x'),
    ("invalid UTF-8 in the last event", "ARRAY_OF_EVENTS", b'[{"n":1},{"n":"\xff"}]'),
    ("wrong shape", "ARRAY_OF_EVENTS", b'{"n":1,"v":5}'),
    ("NDJSON bad last line", NDJSON, b'{"n":1,"v":5}\n{"n":2}\n{"n":\n'),
    ("NDJSON bad middle line", NDJSON, b'{"n":1}\n{oops}\n{"n":2}\n'),
    ("object: events not an array", OBJ, b'{"events":{"n":1}}'),
    ("object: malformed after the array", OBJ, b'{"events":[{"n":1}],"x":}'),
    ("single: two objects", "SINGLE_OBJECT", b'{"n":1}{"n":2}'),
]


def atomic_engine(schema: str) -> Any:
    """An engine with every calculation so that any partial update would show."""
    return make_engine(
        ingest_def(schema, array_path="@.events" if schema == OBJ else None),
        [
            filter_def(
                groupings=["@.n"],
                aggregations=[
                    agg_def(1, ("COUNT", "SUM", "MIN", "MAX", "AVG"), "@.v"),
                    agg_def(2, ("APPROX_COUNT_DISTINCT", "PERCENTILES"), "@.v"),
                ],
            ),
            filter_def("g", filter="@.n == 1"),
        ],
    )


def good_batch(schema: str) -> bytes:
    """``GOOD``'s two events in the given schema."""
    events = [{"n": 1, "v": 5, "u": "a"}, {"n": 2, "v": "7", "u": "b"}]
    if schema == NDJSON:
        return b"".join(dumps(e) + b"\n" for e in events)
    if schema == OBJ:
        return dumps({"events": events})
    if schema == "SINGLE_OBJECT":
        return dumps(events[0])
    return GOOD


@pytest.mark.parametrize(
    ("schema", "body"), [c[1:] for c in BAD_BATCHES], ids=[c[0] for c in BAD_BATCHES]
)
def test_rejected_batch_changes_nothing(schema: str, body: bytes) -> None:
    """A bad batch raises and leaves every answer exactly as before; later batches still work."""
    engine = atomic_engine(schema)
    engine.ingest(good_batch(schema))
    before = snapshot(engine)
    with pytest.raises((JsonError, FormatError)):
        engine.ingest(body)
    assert snapshot(engine) == before
    with pytest.raises((JsonError, FormatError)):
        engine.prepare(body)
    assert snapshot(engine) == before
    engine.ingest(good_batch(schema))
    fresh = atomic_engine(schema)
    fresh.ingest(good_batch(schema))
    fresh.ingest(good_batch(schema))
    assert snapshot(engine) == snapshot(fresh)


def test_rejected_first_batch_leaves_engine_empty() -> None:
    """A bad first batch leaves an engine with no rows at all."""
    engine = atomic_engine("ARRAY_OF_EVENTS")
    with pytest.raises(JsonError):
        engine.ingest(b'[{"n":1,"v":5},' * 1000 + b"]")
    assert all(v == [] for v in snapshot(engine).values())


# --------------------------------------------------------------------------------------------
# Python input types
# --------------------------------------------------------------------------------------------

INPUT_BODIES = [
    ("ARRAY_OF_EVENTS", '[{"n":"é🙂","v":1.5},{"n":2,"v":"3"},null]'.encode()),
    (NDJSON, '{"n":"日本","v":1}\r\n\r\n{"n":2,"v":2},\n'.encode()),
    (OBJ, '{"events":[{"n":"ü","v":4}]}'.encode()),
    ("SINGLE_OBJECT", b'{"n":"x","v":-1}'),
]


@pytest.mark.parametrize(("schema", "body"), INPUT_BODIES, ids=[c[0] for c in INPUT_BODIES])
def test_every_input_type_gives_identical_results(schema: str, body: bytes) -> None:
    """bytes, bytearray, memoryview and str holding the same batch give identical stats and
    state."""
    snaps = {}
    stats = {}
    for name, convert in INPUT_FORMS.items():
        engine = atomic_engine(schema)
        stats[name] = engine.ingest(convert(body)).to_dict()
        snaps[name] = snapshot(engine)
    assert all(s == stats["bytes"] for s in stats.values())
    assert all(s == snaps["bytes"] for s in snaps.values())
    assert any(v for v in snaps["bytes"].values())


def test_memoryview_slices_and_strides() -> None:
    """A memoryview slice or strided view is read as the bytes it shows."""
    plain = atomic_engine("ARRAY_OF_EVENTS")
    plain.ingest(GOOD)
    sliced = atomic_engine("ARRAY_OF_EVENTS")
    sliced.ingest(memoryview(b"xx" + GOOD + b"yy")[2:-2])
    strided = atomic_engine("ARRAY_OF_EVENTS")
    strided.ingest(memoryview(bytes(b for c in GOOD for b in (c, 0x20)))[::2])
    assert snapshot(sliced) == snapshot(plain) == snapshot(strided)


def test_subclasses_of_bytes_and_str_are_accepted() -> None:
    """Subclasses of bytes and str are accepted like their base types."""

    class B(bytes):
        pass

    class S(str):
        pass

    engine = make_engine()
    assert engine.ingest(B(b"[{},{}]")).accepted == 2
    assert engine.ingest(S("[{}]")).accepted == 1


def test_mutating_a_bytearray_after_prepare_does_not_change_the_batch() -> None:
    """A prepared batch owns its data: mutating the bytearray afterwards changes nothing."""
    engine = count_engine()
    buf = bytearray(b'[{"n":1}]')
    prepared = engine.prepare(buf)
    buf[6] = ord("9")
    engine.apply(prepared)
    assert counts(engine) == {"1": 1}


@pytest.mark.parametrize(
    "data",
    [None, 5, 1.5, ["[{}]"], {"a": 1}, (b"[]",), object()],
    ids=["None", "int", "float", "list", "dict", "tuple", "object"],
)
def test_other_input_types_raise_type_error(data: Any) -> None:
    """Anything other than bytes, bytearray, memoryview or str is a TypeError."""
    engine = make_engine()
    with pytest.raises(TypeError):
        engine.ingest(data)
    with pytest.raises(TypeError):
        engine.prepare(data)


def test_array_module_buffer_is_type_error() -> None:
    """A non-bytes buffer (array.array of int16) is rejected with TypeError."""
    import array

    with pytest.raises(TypeError):
        make_engine().ingest(memoryview(array.array("h", [91, 93])))


# --------------------------------------------------------------------------------------------
# Segment fixtures, replayed byte for byte
# --------------------------------------------------------------------------------------------

REQUEST_BODIES = {
    "request-body-single-track.json": (
        1334,
        "a5025bda04bcfd6feffd005b1cc8cc4e4d52153191e353b8c6b11b5e0daa2f75",
    ),
    "request-body-batch.json": (
        8086,
        "c80e0d1a400f71ec34f544674efd41a6cd9f403a092122781729f07b42ea5fbb",
    ),
    "request-body-single-edge.json": (
        21948,
        "c495657ba43c328afd04d61e0ce6cf889b1bff6d7719f8dac498340ab7997896",
    ),
}


@pytest.mark.parametrize("name", sorted(REQUEST_BODIES))
def test_request_body_fixtures_are_the_exact_wire_bytes(name: str) -> None:
    """The copied request bodies are byte-identical to requests.md (size and SHA-256)."""
    body = fixture_bytes(name)
    size, sha = REQUEST_BODIES[name]
    assert len(body) == size
    assert hashlib.sha256(body).hexdigest() == sha


def segment_engine() -> Any:
    """Segment's default setup: array bodies, ``@.receivedAt`` ISO timestamps, counts per type,
    revenue-like sums and distinct users."""
    return make_engine(
        ingest_def(path="@.receivedAt"),
        [
            filter_def(
                "types",
                groupings=[("@.type", "Type")],
                aggregations=[
                    agg_def(1, ("COUNT",)),
                    agg_def(2, ("APPROX_COUNT_DISTINCT",), "@.userId"),
                ],
            ),
            filter_def(
                "web",
                filter="@.type in ['track','page','screen']",
                groupings=["@.event", "@.name", "@.context.device.type"],
                interval=("HOUR", 1),
                aggregations=[agg_def(1, ("COUNT", "SUM", "MAX"), "@.properties.revenue")],
            ),
        ],
    )


def test_replay_single_track() -> None:
    """The single-track request body is one accepted track event at its receivedAt minute."""
    engine = segment_engine()
    stats = engine.ingest(fixture_bytes("request-body-single-track.json"))
    assert (stats.events, stats.accepted, stats.dropped, stats.timestamp_fallback) == (1, 1, {}, 0)
    assert rows(engine, filter_id="types") == [
        {"dt": "2024-05-14T09:21:00Z", "groupings": {"Type": "track"}, "value": 1.0}
    ]


def test_replay_batch_counts_every_type() -> None:
    """The 7-event batch body gives one event per Segment type (two tracks) in their minutes."""
    engine = segment_engine()
    body = fixture_bytes("request-body-batch.json")
    stats = engine.ingest(body)
    assert (stats.events, stats.accepted, stats.dropped, stats.timestamp_fallback) == (7, 7, {}, 0)
    assert stats.per_filter["types"]["matched"] == 7
    assert stats.per_filter["web"]["matched"] == 4
    got = {(r["dt"], r["groupings"]["Type"]): r["value"] for r in rows(engine, filter_id="types")}
    assert got == {
        ("2024-05-14T09:21:00Z", "track"): 1.0,
        ("2024-05-14T09:21:00Z", "page"): 1.0,
        ("2024-05-14T09:21:00Z", "screen"): 1.0,
        ("2024-05-14T09:22:00Z", "identify"): 1.0,
        ("2024-05-14T09:22:00Z", "group"): 1.0,
        ("2024-05-14T09:22:00Z", "alias"): 1.0,
        ("2024-05-14T09:23:00Z", "track"): 1.0,
    }
    # The batch file parsed as JSON equals the wire body parsed (they are the same events).
    assert fixture_json("batch.json") == fixture_json("request-body-batch.json")
    distinct = rows(engine, "APPROX_COUNT_DISTINCT", filter_id="types", aggregation_id=2)
    # page has userId null: no distinct value; every other event has user_97980cfea0067.
    assert {r["groupings"]["Type"]: r["value"] for r in distinct} == {
        "track": 1.0,
        "page": 0.0,
        "screen": 0.0,
        "identify": 1.0,
        "group": 1.0,
        "alias": 1.0,
    }
    revenue = rows(engine, "SUM", filter_id="web")
    assert revenue == [
        {
            "dt": "2024-05-14T09:00:00Z",
            "groupings": {"@.event": "Order Completed", "@.name": "", "@.context.device.type": ""},
            "value": 25.0,
        }
    ]


def test_batch_replayed_as_ndjson_and_single_objects_matches_array() -> None:
    """The batch's events give the same state as an array, as NDJSON and one by one."""
    events = fixture_json("batch.json")
    array = segment_engine()
    array.ingest(fixture_bytes("request-body-batch.json"))
    lines = make_engine(
        {**ingest_def(NDJSON, path="@.receivedAt")}, segment_engine().filter_definitions()
    )
    lines.ingest(b"".join(dumps(e) + b"\n" for e in events))
    single = make_engine(
        ingest_def("SINGLE_OBJECT", path="@.receivedAt"), segment_engine().filter_definitions()
    )
    for name in ("track", "page", "screen", "identify", "group", "alias", "nested-properties"):
        single.ingest(fixture_bytes(f"{name}.json"))
    assert snapshot(lines) == snapshot(array) == snapshot(single)


def edge_engine(schema: str) -> Any:
    """Groupings and sums over the edge-values fixture's tricky members."""
    return make_engine(
        ingest_def(schema, path="@.receivedAt"),
        [
            filter_def(
                "keys",
                groupings=[
                    "@.event",
                    "@.properties['clé ünïcode']",
                    "@.properties['key with spaces']",
                    "@.properties['a.b.c']",
                    "@.properties['$dollar']",
                    "@.properties['']",
                    "@.context.traits.email",
                    "@.version",
                    "@.userId",
                ],
            ),
            *[
                filter_def(
                    f"num-{member}",
                    groupings=[f"@.properties.{member}"],
                    aggregations=[
                        agg_def(1, ("COUNT", "SUM", "MIN", "MAX", "AVG"), f"@.properties.{member}")
                    ],
                )
                for member in EDGE_NUMBERS
            ],
        ],
    )


# member: (grouping string in the request body, numeric value or None when not numeric)
EDGE_NUMBERS: dict[str, tuple[str, float | None]] = {
    "price_as_string": ("19.99", 19.99),
    "quantity_as_string": ("3", 3.0),
    "negative_as_string": ("-42", -42.0),
    "zero_as_string": ("0", 0.0),
    "exponent_as_string": ("1e3", 1000.0),
    "epoch_s_as_string": ("1715678580", 1715678580.0),
    "bool_as_string": ("true", None),
    "null_as_string": ("null", None),
    "leading_zero_id": ("000123", None),
    "phone_like": ("+1 (555) 010-9999", None),
    "price": ("19.99", 19.99),
    "quantity": ("3", 3.0),
    "decimal_trailing_zeros": ("1.5", 1.5),
    "whole_float": ("100", 100.0),
    "negative_zero": ("0", 0.0),
    "tiny": ("1e-7", 1e-7),
    "big_exponent": ("1.5e+21", 1.5e21),
    "max_safe_integer": ("9007199254740991", 9007199254740991.0),
    "unsafe_integer": ("12345678901234567000", 12345678901234567000.0),
    "bool_true": ("true", None),
    "null_value": ("", None),
    "empty_string": ("", None),
    "whitespace_only": ("   ", None),
    "empty_object": ("{}", None),
    "empty_array": ("[]", None),
    "mixed_array": ('[1,"two",3.5,true,null,{"k":"v"},[1,2]]', None),
    "numeric_keys": ('{"2":"two","10":"ten","b":1,"a":2,"007":"leading-zero key"}', None),
    "missing_member": ("", None),
}


def test_replay_edge_values_body() -> None:
    """The edge-values body: unicode keys and values, no receivedAt (ingest-time fallback)."""
    engine = edge_engine("ARRAY_OF_EVENTS")
    stats = engine.ingest(fixture_bytes("request-body-single-edge.json"))
    assert (stats.events, stats.accepted, stats.timestamp_fallback) == (1, 1, 1)
    (row,) = rows(engine, filter_id="keys")
    assert row["dt"] == "2024-05-14T12:00:00Z"
    assert row["groupings"] == {
        "@.event": "Ünïcödé Évent 🚀 — 测试 «quotes» \"double\" 'single' \\ backslash / slash",
        "@.properties['clé ünïcode']": "unicode key",
        "@.properties['key with spaces']": "true",
        "@.properties['a.b.c']": "dotted key (not a path)",
        "@.properties['$dollar']": "dollar-prefixed key",
        "@.properties['']": "empty key",
        "@.context.traits.email": "ユーザー@例え.jp",
        "@.version": "1.1",
        "@.userId": "",
    }


@pytest.mark.parametrize("member", sorted(EDGE_NUMBERS))
def test_edge_values_numbers_and_strings(member: str) -> None:
    """Edge values: grouping strings (decision 9) and numeric strings in SUM (decision 6)."""
    engine = edge_engine("ARRAY_OF_EVENTS")
    engine.ingest(fixture_bytes("request-body-single-edge.json"))
    grouping, number = EDGE_NUMBERS[member]
    fid = f"num-{member}"
    (row,) = rows(engine, filter_id=fid)
    assert row["groupings"] == {f"@.properties.{member}": grouping}
    assert row["value"] == 1.0
    for calc in ("SUM", "MIN", "MAX", "AVG"):
        assert single_value(engine, calc, filter_id=fid) == number


SOURCE_GROUPINGS = {
    # The pretty-printed fixture keeps the source spelling of numbers; integers keep their text,
    # other numbers use the shortest round-trip form (decision 9).
    "decimal_trailing_zeros": "1.5",
    "whole_float": "100",
    "negative_zero": "0",
    "big_exponent": "1.5e+21",
    "unsafe_integer": "12345678901234567890",
    "numeric_keys": '{"b":1,"10":"ten","a":2,"2":"two","007":"leading-zero key"}',
}


@pytest.mark.parametrize("member", sorted(SOURCE_GROUPINGS))
def test_edge_values_source_file_as_single_object(member: str) -> None:
    """The pretty-printed edge-values.json replays as SINGLE_OBJECT with source number text."""
    engine = edge_engine("SINGLE_OBJECT")
    stats = engine.ingest(fixture_bytes("edge-values.json"))
    assert (stats.events, stats.accepted, stats.timestamp_fallback) == (1, 1, 1)
    (row,) = rows(engine, filter_id=f"num-{member}")
    assert row["groupings"] == {f"@.properties.{member}": SOURCE_GROUPINGS[member]}


def test_edge_values_control_characters_and_invisible_unicode() -> None:
    """Escaped control characters and raw U+2028/U+200B/U+FEFF survive as grouping values."""
    engine = make_engine(
        ingest_def(),
        [
            filter_def(
                groupings=[
                    "@.properties.control_chars",
                    "@.properties.zero_width",
                    "@.properties.line_separators",
                    "@.properties.escaped_unicode_in_source",
                ]
            )
        ],
    )
    engine.ingest(fixture_bytes("request-body-single-edge.json"))
    (row,) = rows(engine)
    assert row["groupings"] == {
        "@.properties.control_chars": "tab\tnewline\ncr\rnul\u0000bell\u0007esc\u001bdel\u007f",
        "@.properties.zero_width": "a\u200bb\u200dc\ufeffd",
        "@.properties.line_separators": "x\u2028y\u2029z",
        "@.properties.escaped_unicode_in_source": "é中🚀",
    }


@pytest.mark.parametrize(
    ("body", "events", "dropped"),
    [
        (b'[{"anonymousId":"anon-1","event":"Ping","messageId":"m-1","type":"track"}]', 1, {}),
        (b"[null]", 1, {"not_object": 1}),
        (b"[null,null,null]", 3, {"not_object": 3}),
        (
            b'[{"plan":"Pro Annual","billing_cycle":"annual","price":299.99,"currency":"USD",'
            b'"seats":5,"trial":false}]',
            1,
            {},
        ),
    ],
    ids=["minimal", "null", "three nulls", "custom mapping"],
)
def test_degenerate_segment_bodies(body: bytes, events: int, dropped: dict[str, int]) -> None:
    """The degenerate bodies of requests.md §5 are accepted; nulls are counted, not errors."""
    engine = segment_engine()
    stats = engine.ingest(body)
    assert (stats.events, stats.dropped) == (events, dropped)
    assert stats.accepted == events - sum(dropped.values())
    assert stats.timestamp_fallback == stats.accepted
