"""Regression tests for defects found in review: each test names the behaviour it pins down."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally import ConfigError, JsonError, LimitError, NotFoundError, QueryError

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def _ingest(ingest_id: str, schema: str = "ARRAY_OF_EVENTS") -> dict[str, Any]:
    return {"id": ingest_id, "schema": schema}


def _filter(groupings: tuple[str, ...] = ("@.g",), interval: str = "MINUTE") -> dict[str, Any]:
    return {
        "id": "f",
        "groupings": list(groupings),
        "intervalType": interval,
        "intervalCount": 1,
        "aggregations": [{"id": 1, "calculations": ["COUNT"]}],
    }


def _count(engine: eventtally.Engine, **extra: Any) -> float:
    rows = engine.results({"filterId": "f", "aggregationId": 1, "calculation": "COUNT", **extra})
    return sum(r["value"] for r in rows)


def test_ingest_resolves_its_ingest_by_id_when_definitions_change() -> None:
    """Removing another ingest while a batch is parsed re-resolves the batch's ingest by id."""
    engine = eventtally.Engine([_ingest("i0"), _ingest("i1")], [_filter()], clock=lambda: T0)
    big = json.dumps([{"g": str(i % 7)} for i in range(400_000)])
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            engine.ingest(big, ingest_id="i1")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    engine.remove_ingest("i0")
    thread.join()
    assert errors == []
    assert _count(engine) == 400_000


def test_prepared_batch_survives_a_failed_apply() -> None:
    """A prepared batch whose ingest disappeared fails to apply but can be applied later."""
    engine = eventtally.Engine([_ingest("i"), _ingest("j")], [_filter()], clock=lambda: T0)
    prepared = engine.prepare(b'[{"g":"a"}]', ingest_id="j")
    engine.remove_ingest("j")
    with pytest.raises(NotFoundError):
        engine.apply(prepared)
    engine.add_ingest(_ingest("j"))
    assert engine.apply(prepared).accepted == 1
    with pytest.raises(ConfigError):
        engine.apply(prepared)
    assert _count(engine) == 1


def test_default_ingest_is_kept_by_id_for_prepared_batches() -> None:
    """A batch prepared for the default ingest keeps that ingest after it stops being first."""
    engine = eventtally.Engine(
        [_ingest("arr"), _ingest("one", "SINGLE_OBJECT")], [_filter()], clock=lambda: T0
    )
    prepared = engine.prepare(b'[{"g":"a"},{"g":"b"}]')
    engine.add_filter({**_filter(), "id": "other"})  # forces a re-evaluation at apply time
    assert engine.apply(prepared).accepted == 2


@pytest.mark.parametrize(
    "body",
    [
        # A trailing comma lands on the split point between two 8 MiB chunks.
        lambda n: b"[" + b",".join([b'{"g":"x"}'] * n) + b"," + b" " * 64 + b"]",
        # A leading comma after only whitespace.
        lambda n: b"[" + b" " * (9 << 20) + b',{"g":"x"}]',
    ],
    ids=["trailing comma", "leading comma"],
)
def test_ingest_file_rejects_commas_that_ingest_rejects(tmp_path: Path, body: Any) -> None:
    """A JSON array file split into chunks is validated exactly like one batch."""
    data = body(1_000_000)
    path = tmp_path / "events.json"
    path.write_bytes(data)
    engine = eventtally.Engine(_ingest("i"), [_filter()], clock=lambda: T0)
    with pytest.raises(JsonError):
        engine.ingest(data)
    with pytest.raises(JsonError):
        engine.ingest_file(path)
    assert _count(engine) == 0


def test_retention_frees_grouping_tuples() -> None:
    """drop_before also forgets grouping tuples no remaining row uses (state stays bounded)."""
    engine = eventtally.Engine(_ingest("i"), [_filter()], clock=lambda: T0)
    sizes = []
    for round_ in range(4):
        t = T0 + round_ * 3600
        batch = [{"g": f"session-{round_}-{i}"} for i in range(20_000)]
        engine.ingest(json.dumps(batch), received_at=t)
        engine.drop_before(t)
        sizes.append(len(engine.to_bytes()))
    assert _count(engine) == 20_000
    assert max(sizes) < sizes[0] * 1.2


@pytest.mark.parametrize("received_at", [-9.2e15, 9.2e15, 1e13])
def test_ingest_time_outside_supported_years_is_refused(received_at: float) -> None:
    """An ingest time outside years 0000-9999 is a LimitError, not a bucket at year 291 million."""
    engine = eventtally.Engine(_ingest("i"), [_filter()], clock=lambda: T0)
    with pytest.raises(LimitError):
        engine.ingest(b'[{"g":"a"}]', received_at=received_at)
    assert _count(engine) == 0


def test_drop_before_accepts_any_float_horizon() -> None:
    """A huge retention horizon is clamped instead of overflowing."""
    engine = eventtally.Engine(_ingest("i"), [_filter()], clock=lambda: T0)
    engine.ingest(b'[{"g":"a"}]')
    assert engine.drop_before(-9.3e15) == 0
    assert engine.drop_before(9.3e15) == 1


@pytest.mark.parametrize(
    "rollup", [{"type": "YEAR", "frequency": 101}, {"type": "WEEK", "frequency": 100_000}]
)
def test_rollup_longer_than_supported_range_is_an_error(rollup: dict[str, Any]) -> None:
    """A rollup longer than 100 years is a QueryError naming the frequency, not ignored."""
    engine = eventtally.Engine(_ingest("i"), [_filter(interval="DAY")], clock=lambda: T0)
    engine.ingest(b'[{"g":"a"}]')
    with pytest.raises(QueryError) as info:
        _count(engine, recalculatedInterval=rollup)
    assert info.value.field == "recalculatedInterval.frequency"


def test_numeric_grouping_filter_values_use_the_grouping_form() -> None:
    """A number in groupingFilters matches the grouping string of that number (1.0 is "1")."""
    engine = eventtally.Engine(_ingest("i"), [_filter()], clock=lambda: T0)
    engine.ingest(b'[{"g":1},{"g":2.5},{"g":"x"}]')
    flt = [{"grouping": "@.g", "filters": [1.0, 2.5], "returnGroupingValues": True}]
    assert _count(engine, groupingFilters=flt) == 2


def test_forged_sparse_sketch_in_a_snapshot_is_refused() -> None:
    """A snapshot whose distinct sketch is a near-empty sparse HyperLogLog is refused."""
    flt = {
        "id": "f",
        "intervalType": "MINUTE",
        "intervalCount": 1,
        "aggregations": [
            {"id": 1, "calculations": ["APPROX_COUNT_DISTINCT"], "calculationField": "@.u"}
        ],
    }
    engine = eventtally.Engine(_ingest("i"), [flt], clock=lambda: T0)
    engine.ingest(b'[{"u":"a"}]')
    data = bytearray(engine.to_bytes())
    # The single exact sketch is: tag 0, varint 1, then 8 hash bytes; forge tag 2 (sparse HLL)
    # with zero entries and fix the length and checksum so only the sketch check can refuse it.
    exact = bytes([0, 1])
    at = data.rindex(exact)
    forged = data[:at] + bytes([2, 0]) + data[at + 10 :]
    import struct
    import zlib

    payload = forged[24:]
    header = forged[:12] + struct.pack("<Q", len(payload)) + struct.pack("<I", zlib.crc32(payload))
    with pytest.raises(eventtally.SnapshotError):
        eventtally.Engine.from_bytes(bytes(header + payload))
