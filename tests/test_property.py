"""Property tests (issue §8): on generated Segment-like events the Rust core answers exactly as
the pure-Python reference oracle (``tests/reference.py``), batches compose
(``ingest(A + B) == ingest(A); ingest(B)``), and every input form and schema gives the same
state.

Tolerances: COUNT, APPROX_COUNT_DISTINCT (exact while small), MIN and MAX are exact; SUM and AVG
within 1e-9 relative (float addition order); PERCENTILES within 1 % relative of the exact
PERCENTILE_CONT (equal for cells of at most 100 values; the sketch beyond guarantees 0.5 % per
rank).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import eventtally
from tests.reference import ReferenceEngine
from tests.support import (
    FIXED_NOW_MS,
    INPUT_FORMS,
    PERCENTILE_GRID,
    agg_def,
    filter_def,
    fixed_clock,
    ingest_def,
    query,
    snapshot,
)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

MISSING = object()
WINDOW_START = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)

# --------------------------------------------------------------------------------------------
# Strategies: Segment-like events
# --------------------------------------------------------------------------------------------

cents = st.integers(-(10**8), 10**8).map(lambda i: i / 100)
numbers = st.one_of(st.integers(-(10**6), 10**6), cents, st.sampled_from([0, -0.0, 0.5, 1e-3]))
numeric_strings = st.one_of(
    numbers.map(lambda x: json.dumps(x)),
    st.sampled_from(["1e3", "-0", "12.50", "007", " 1", "1.", "+5", "0x10"]),
)
scalars = st.one_of(
    numbers,
    numeric_strings,
    st.sampled_from(["", "abc", "Order", "ü🙂", "true", "null"]),
    st.booleans(),
    st.none(),
)
small_json = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abk"), inner, max_size=3)
    ),
    max_leaves=5,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy``, or MISSING (the member is left out) about one time in four."""
    return st.one_of(strategy, strategy, strategy, st.just(MISSING))


TYPES = ["track", "page", "screen", "identify", "group", "alias"]
EVENT_NAMES = ["Order Completed", "Product Viewed", "Signed Up", "Ünïcödé 🚀", "product viewed"]
USERS = ["u1", "u2", "u3", "u4", "ü5"]


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    """ISO 8601 receivedAt values in a 3-hour window (several spellings), sometimes broken."""
    kind = draw(st.sampled_from(["ms", "ms", "ms", "digits", "offset", "missing", "garbage"]))
    if kind == "missing":
        return MISSING
    if kind == "garbage":
        return draw(st.sampled_from(["not a date", 1715678400, None, "2024-02-30T00:00:00Z"]))
    ms = draw(st.integers(0, 3 * 3600 * 1000 - 1))
    t = WINDOW_START + timedelta(milliseconds=ms)
    if kind == "ms":
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    if kind == "digits":
        digits = draw(st.integers(0, 9))
        frac = f"{ms % 1000:03d}" + draw(st.text("0123456789", min_size=6, max_size=6))
        text = t.strftime("%Y-%m-%dT%H:%M:%S")
        return text + ("." + frac[:digits] if digits else "") + "Z"
    hours = draw(st.integers(-12, 14))
    local = t + timedelta(hours=hours)
    sign = "+" if hours >= 0 else "-"
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}{sign}{abs(hours):02d}:00"


@st.composite
def events(draw: st.DrawFn) -> Any:
    """A Segment-like event (occasionally not an object at all)."""
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from([None, 1, "x", [], [{}]]))
    items = draw(
        st.one_of(
            st.lists(
                st.one_of(
                    st.fixed_dictionaries(
                        {"sku": st.sampled_from(["A", "B", "C"]), "qty": maybe(scalars)}
                    ).map(lambda d: {k: v for k, v in d.items() if v is not MISSING}),
                    st.sampled_from([None, 3, "sku"]),
                ),
                max_size=4,
            ),
            st.just(MISSING),
            small_json,
        )
    )
    fields = {
        "type": maybe(st.sampled_from(TYPES)),
        "event": maybe(st.sampled_from(EVENT_NAMES)),
        "userId": maybe(st.one_of(st.sampled_from(USERS), st.none())),
        "anonymousId": maybe(st.sampled_from(["a1", "a2", "a3"])),
        "receivedAt": timestamps(),
        "context": maybe(
            st.fixed_dictionaries(
                {
                    "device": maybe(
                        st.fixed_dictionaries(
                            {"type": maybe(st.sampled_from(["ios", "android", "web", ""]))}
                        )
                    )
                }
            )
        ),
        "properties": maybe(
            st.fixed_dictionaries(
                {
                    "revenue": maybe(scalars),
                    "value": maybe(st.one_of(numbers, numeric_strings, st.just("n/a"))),
                    "flag": maybe(st.booleans()),
                    "items": st.just(items),
                    "extra": maybe(small_json),
                }
            )
        ),
    }
    event = {k: draw(v) for k, v in fields.items()}
    return _strip(event)


def _strip(value: Any) -> Any:
    """Remove MISSING members recursively."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not MISSING}
    return value


ATOMS = [
    "@.type == 'track'",
    "@.type != 'page'",
    "@.type in ['track','page','screen']",
    "@.properties.revenue > 10",
    "@.properties.revenue <= 0",
    "@.properties.revenue == 5",
    "@.properties.revenue != '5'",
    "@.properties.revenue in [1, '2', true, null]",
    "@.properties.revenue LIKE '1%'",
    "@.properties.value >= -100.5",
    "@.properties.value",
    "@.properties.flag == true",
    "@.properties.items.length > 1",
    "@.userId",
    "@.userId == null",
    "@.userId in ['u1', 'u2']",
    "@.event LIKE 'Order%'",
    "@.event ILIKE '%viewed'",
    "@.event =~ /^[A-Z]/",
    "@.event < 'P'",
    "@.context.device.type == ''",
    "@['context']['device'].type != 'web'",
]
conditions = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda t: f"{t[0]} && {t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]} || {t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} || {t[1]})"),
        inner.map(lambda e: f"!({e})"),
    ),
    max_leaves=5,
)

# --------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------

NUMERIC = ("SUM", "MIN", "MAX", "AVG", "PERCENTILES")


def filters_for(condition: str) -> list[dict[str, Any]]:
    """The filters every property runs: every calculation, sub-filters, grouping strings of
    arbitrary JSON, flattening with ``$``, and a generated condition."""
    return [
        filter_def(
            "web",
            filter="@.type in ['track','page','screen']",
            groupings=["@.type", ("@.context.device.type", "Device")],
            interval=("MINUTE", 5),
            aggregations=[
                agg_def(1, ("COUNT",)),
                agg_def(2, NUMERIC, "@.properties.revenue"),
                agg_def(3, ("APPROX_COUNT_DISTINCT",), "@.userId"),
                agg_def(
                    4,
                    ("COUNT", "SUM"),
                    "@.properties.revenue",
                    "@.properties.revenue > 10 || @.event LIKE 'Order%'",
                ),
                agg_def(5, ("APPROX_COUNT_DISTINCT", "PERCENTILES"), "@.properties.value"),
            ],
        ),
        filter_def(
            "shapes",
            groupings=["@.event", "@.properties.revenue"],
            interval=("HOUR", 1),
            aggregations=[
                agg_def(1, ("COUNT", "APPROX_COUNT_DISTINCT"), "@.properties.extra"),
                agg_def(2, ("APPROX_COUNT_DISTINCT",), "@.properties"),
            ],
        ),
        filter_def(
            "items",
            filter="$.type == 'track' || @.qty",
            groupings=["@.sku", ("$.userId", "User")],
            interval=("MINUTE", 13),
            flatten="@.properties.items",
            aggregations=[
                agg_def(1, ("COUNT", "SUM", "MAX"), "@.qty"),
                agg_def(2, ("APPROX_COUNT_DISTINCT",), "$.anonymousId"),
            ],
        ),
        filter_def(
            "generated",
            filter=condition,
            interval=("DAY", 1),
            groupings=["@.type"],
            aggregations=[
                agg_def(1, ("COUNT", "SUM", "MIN"), "@.properties.value", sub_filter=condition)
            ],
        ),
    ]


def ingest_for(schema: str = "ARRAY_OF_EVENTS", on_invalid: str = "INGEST_TIME") -> dict[str, Any]:
    """Segment's setup: ``@.receivedAt`` in ISO 8601."""
    return ingest_def(
        schema,
        path="@.receivedAt",
        on_invalid=on_invalid,
        array_path="@.batch" if schema == "OBJECT_WITH_ARRAY_PROPERTY" else None,
    )


def encode(batch: list[Any], schema: str = "ARRAY_OF_EVENTS", ascii_only: bool = False) -> bytes:
    """The batch in the schema's wire form (with insignificant whitespace, as producers send;
    ``ascii_only`` writes every non-ASCII character as a ``\\u`` escape)."""
    if schema == "NEWLINE_DELIMITED":
        return "".join(json.dumps(e, ensure_ascii=ascii_only) + "\r\n" for e in batch).encode()
    if schema == "OBJECT_WITH_ARRAY_PROPERTY":
        return json.dumps({"batch": batch, "sentAt": "x"}, ensure_ascii=ascii_only).encode()
    return json.dumps(batch, ensure_ascii=ascii_only).encode()


def queries(defs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (filter, aggregation, calculation[, percentile]) query of the definitions."""
    out = []
    for f in defs:
        for a in f["aggregations"]:
            for calc in a["calculations"]:
                grid = PERCENTILE_GRID if calc == "PERCENTILES" else (None,)
                for p in grid:
                    out.append(query(calc, filter_id=f["id"], aggregation_id=a["id"], percentile=p))
    return out


def assert_same_answer(
    q: dict[str, Any], got: list[dict[str, Any]], want: list[dict[str, Any]]
) -> None:
    """Same rows in the same order; values equal within the calculation's tolerance."""
    where = f"{q['filterId']}/{q['aggregationId']}/{q['calculation']}/{q.get('percentile')}"
    assert [(r["dt"], r["groupings"]) for r in got] == [(r["dt"], r["groupings"]) for r in want], (
        where
    )
    calc = q["calculation"]
    for g, w in zip(got, want, strict=True):
        a, b = g["value"], w["value"]
        if calc in ("SUM", "AVG"):
            ok = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
        elif calc == "PERCENTILES":
            ok = math.isclose(a, b, rel_tol=0.01, abs_tol=1e-9)
        else:
            ok = a == b
        assert ok, f"{where} {g['dt']} {g['groupings']}: core {a!r} != reference {b!r}"


def core_and_reference(
    condition: str, schema: str = "ARRAY_OF_EVENTS", on_invalid: str = "INGEST_TIME"
) -> tuple[eventtally.Engine, ReferenceEngine, list[dict[str, Any]]]:
    defs = filters_for(condition)
    ingest = ingest_for(schema, on_invalid)
    core = eventtally.Engine(ingest, defs, clock=fixed_clock)
    ref = ReferenceEngine(ingest, defs, now_ms=FIXED_NOW_MS)
    return core, ref, defs


def _comparable(state: dict[Any, Any]) -> dict[Any, Any]:
    """A snapshot with SUM/AVG values rounded to 9 significant digits (addition order)."""
    out = {}
    for key, result in state.items():
        if key[2] in ("SUM", "AVG"):
            result = [{**r, "value": float(f"{r['value']:.9g}")} for r in result]
        out[key] = result
    return out


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(
    batches=st.lists(st.lists(events(), max_size=30), min_size=1, max_size=3),
    condition=conditions,
    on_invalid=st.sampled_from(["INGEST_TIME", "DROP"]),
    ascii_only=st.booleans(),
)
def test_core_equals_reference(
    batches: list[list[Any]], condition: str, on_invalid: str, ascii_only: bool
) -> None:
    """For every calculation, the core's results (and stats) equal the reference oracle's."""
    core, ref, defs = core_and_reference(condition, on_invalid=on_invalid)
    for batch in batches:
        body = encode(batch, ascii_only=ascii_only)
        core_stats = core.ingest(body)
        ref_stats = ref.ingest(body)
        assert core_stats.to_dict() == ref_stats
    for q in queries(defs):
        assert_same_answer(q, core.results(q), ref.results(q))


@SETTINGS
@given(
    first=st.lists(events(), max_size=25),
    second=st.lists(events(), max_size=25),
    condition=conditions,
)
def test_one_batch_equals_two_batches(first: list[Any], second: list[Any], condition: str) -> None:
    """``ingest(A + B)`` and ``ingest(A); ingest(B)`` give the same state."""
    whole, _, _ = core_and_reference(condition)
    split, _, _ = core_and_reference(condition)
    stats = whole.ingest(encode(first + second))
    s1 = split.ingest(encode(first))
    s2 = split.ingest(encode(second))
    assert stats.events == s1.events + s2.events
    assert stats.accepted == s1.accepted + s2.accepted
    assert stats.timestamp_fallback == s1.timestamp_fallback + s2.timestamp_fallback
    for fid, pf in stats.per_filter.items():
        assert pf["matched"] == s1.per_filter[fid]["matched"] + s2.per_filter[fid]["matched"]
    assert _comparable(snapshot(whole)) == _comparable(snapshot(split))


@SETTINGS
@given(batch=st.lists(events(), max_size=25), condition=conditions)
def test_every_input_form_and_schema_gives_the_same_state(batch: list[Any], condition: str) -> None:
    """bytes, bytearray, memoryview and str, and the array, NDJSON and object schemas, all give
    the same state for the same events."""
    states = []
    for schema in ("ARRAY_OF_EVENTS", "NEWLINE_DELIMITED", "OBJECT_WITH_ARRAY_PROPERTY"):
        body = encode(batch, schema)
        for convert in INPUT_FORMS.values():
            engine, _, _ = core_and_reference(condition, schema)
            engine.ingest(convert(body))
            states.append(snapshot(engine))
    assert all(s == states[0] for s in states[1:])


@SETTINGS
@given(batch=st.lists(events(), min_size=1, max_size=20))
def test_single_object_replay_equals_the_batch(batch: list[Any]) -> None:
    """Sending each event alone (SINGLE_OBJECT) equals sending them as one array."""
    objects = [e for e in batch if isinstance(e, dict)]
    array, _, _ = core_and_reference("@.type")
    array.ingest(encode(objects))
    single, _, _ = core_and_reference("@.type", "SINGLE_OBJECT")
    for event in objects:
        single.ingest(json.dumps(event).encode())
    assert _comparable(snapshot(array)) == _comparable(snapshot(single))


@pytest.mark.parametrize("seed", [1, 2])
def test_segment_generator_core_equals_reference(seed: int) -> None:
    """On the benchmark's realistic generator (all six types, skewed users) the core equals
    the reference for the benchmark filter and the property filters."""
    import segment_gen

    events = segment_gen.generate_events(1500, seed=seed, span_seconds=7200, users=200)
    defs = [segment_gen.BENCH_FILTER, *filters_for("@.type == 'track' && @.properties.revenue")]
    ingest = segment_gen.BENCH_INGEST
    core = eventtally.Engine(ingest, defs, clock=fixed_clock)
    ref = ReferenceEngine(ingest, defs, now_ms=FIXED_NOW_MS)
    for body in segment_gen.batches(events, size=300):
        assert core.ingest(body).to_dict() == ref.ingest(body)
    for q in queries(defs):
        assert_same_answer(q, core.results(q), ref.results(q))
