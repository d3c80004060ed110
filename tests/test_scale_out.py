"""Scale-out (issue 12): checked merges, pickling, and ``ingest_files`` on every core.

- Merges use checked arithmetic: a forged snapshot whose COUNT cell is 2^63, merged into itself,
  is refused with ``LimitError`` and changes nothing (it used to wrap to 0 and the bucket
  vanished); loading refuses impossible states (numeric count above COUNT, COUNT cells that
  cannot sum, MIN/MAX without values) with a ``SnapshotError`` naming what is wrong.
- ``pickle`` carries an engine as its snapshot bytes plus its clock; the loaded engine answers
  every query exactly as the original, also across a ``multiprocessing`` spawn.
- ``ingest_files`` equals ingesting the files one by one for every calculation, with any number
  of threads, for .json/.ndjson/.gz; it is all or nothing and errors name file and offset.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

from eventtally import Engine, EventtallyIOError, JsonError, LimitError, SnapshotError, _core
from tests.test_query import INGEST, T0, Clock, ndjson
from tests.test_snapshot import FILTERS, assert_same_answers, engine_with, make_events

HEADER = struct.Struct("<8sIQI")
COUNT_ONLY = {
    "id": "c",
    "name": "count",
    "filter": None,
    "groupingItems": [],
    "intervalType": "MINUTE",
    "intervalCount": 1,
    "aggregations": [{"id": 1, "name": "n", "calculations": ["COUNT"], "calculationField": None}],
}
SUM_ONLY = {
    **COUNT_ONLY,
    "id": "s",
    "aggregations": [{"id": 1, "name": "v", "calculations": ["SUM"], "calculationField": "@.v"}],
}


# ------------------------------------------------------------------ forged snapshot bytes


def forged_snapshot(fdef: dict[str, Any], matched: int, numeric: tuple[int, float] | None) -> bytes:
    """A snapshot built byte by byte (docs/snapshot-format.md): one filter with no grouping,
    one cell at bucket T0, aggregation 1 with COUNT ``matched`` and, for a numeric
    aggregation, ``numeric`` = (count of values, the one value as SUM, MIN and MAX)."""
    engine = Engine(INGEST, [fdef])
    defs = json.dumps(
        {"ingests": engine.ingest_definitions(), "filters": engine.filter_definitions()},
        separators=(",", ":"),
        sort_keys=True,  # serde_json writes object keys in order
    ).encode()
    calc_bits = {"COUNT": 1, "SUM": 2}[fdef["aggregations"][0]["calculations"][0]]
    out = bytearray()
    out += struct.pack("<I", len(defs)) + defs
    out += struct.pack("<I", 1)  # filter state blocks
    out += struct.pack("<I", len(fdef["id"])) + fdef["id"].encode()
    out += struct.pack("<I", 1) + struct.pack("<I", 0)  # one grouping tuple: the empty key
    out += struct.pack("<I", 1)  # rows
    out += struct.pack("<q", T0 * 1000) + struct.pack("<I", 0)
    out += struct.pack("<I", 1)  # aggregations
    out += struct.pack("<BQ", calc_bits, matched)
    if numeric is None:
        out += b"\x00"
    else:
        n, v = numeric
        out += b"\x01" + struct.pack("<Qddd", n, v * n, v, v)
    out += b"\x00\x00"  # no distinct, no quantile columns
    out += struct.pack("<I", 0)  # tier section (version 2): no filter compacted yet
    payload = bytes(out)
    header = HEADER.pack(
        b"ETALLY\x00\x01", _core.SNAPSHOT_FORMAT_VERSION, len(payload), zlib.crc32(payload)
    )
    return header + payload


def count_of(engine: Engine, filter_id: str = "c", calculation: str = "COUNT") -> list[Any]:
    return engine.results(
        {
            "filterId": filter_id,
            "aggregationId": 1,
            "calculation": calculation,
            "timeframe": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:01:00Z"},
        }
    )


def test_the_forged_bytes_are_a_real_snapshot() -> None:
    """The hand-built layout is what the engine writes (so the refusals below are about the
    values, not the framing)."""
    forged = Engine.from_bytes(forged_snapshot(COUNT_ONLY, 3, None))
    real = Engine(INGEST, [COUNT_ONLY])
    real.ingest(ndjson([{"ts": T0}] * 3))
    assert forged.to_bytes() == real.to_bytes()


def test_a_count_of_two_to_the_63_merged_into_itself_is_refused() -> None:
    """It used to wrap to 0 and the bucket disappeared; now the merge is refused and the cell
    keeps its count."""
    data = forged_snapshot(COUNT_ONLY, 2**63, None)
    mine, theirs = Engine.from_bytes(data), Engine.from_bytes(data)
    before = count_of(mine)
    assert before == [{"dt": "2024-01-01T00:00:00Z", "groupings": None, "value": float(2**63)}]
    with pytest.raises(LimitError, match="overflow"):
        mine.merge(theirs)
    assert count_of(mine) == before
    assert mine.to_bytes() == data


def test_ingesting_into_a_full_counter_is_refused_and_changes_nothing() -> None:
    mine = Engine.from_bytes(forged_snapshot(COUNT_ONLY, 2**64 - 1, None))
    with pytest.raises(LimitError, match="overflow"):
        mine.ingest(ndjson([{"ts": T0 + 1}]))
    with pytest.raises(LimitError, match="overflow"):
        mine.apply(mine.prepare(ndjson([{"ts": T0 + 2}])))
    assert count_of(mine)[0]["value"] == float(2**64 - 1)
    # Another bucket has room.
    mine.ingest(ndjson([{"ts": T0 + 60}]))


def test_a_merge_that_fits_still_adds_exactly() -> None:
    data = forged_snapshot(COUNT_ONLY, 2**62, None)
    mine = Engine.from_bytes(data)
    mine.merge(Engine.from_bytes(data))
    assert count_of(mine)[0]["value"] == float(2**63)


@pytest.mark.parametrize(
    ("fdef", "matched", "numeric", "words"),
    [
        (SUM_ONLY, 2, (3, 1.5), "3 numeric values but a COUNT of 2"),
        (SUM_ONLY, 2, (0, 1.5), "without any numeric value"),
    ],
)
def test_impossible_states_are_refused_on_load(
    fdef: dict[str, Any], matched: int, numeric: tuple[int, float], words: str
) -> None:
    with pytest.raises(SnapshotError, match=words) as info:
        Engine.from_bytes(forged_snapshot(fdef, matched, numeric))
    assert "impossible state" in str(info.value)
    assert "filter 's'" in str(info.value) or 'filter "s"' in str(info.value)


def test_inverted_min_max_is_refused_on_load() -> None:
    data = bytearray(forged_snapshot(SUM_ONLY, 2, (2, 1.5)))
    # MIN is the second-to-last f64 before the two sketch flags and the empty tier section (a
    # u32): make it larger than MAX.
    at = len(data) - 4 - 2 - 16
    data[at : at + 8] = struct.pack("<d", 9.0)
    payload = bytes(data[HEADER.size :])
    data[: HEADER.size] = HEADER.pack(
        b"ETALLY\x00\x01", _core.SNAPSHOT_FORMAT_VERSION, len(payload), zlib.crc32(payload)
    )
    with pytest.raises(SnapshotError, match=r"MIN 9 and MAX 1\.5"):
        Engine.from_bytes(bytes(data))


def test_valid_numeric_state_loads() -> None:
    loaded = Engine.from_bytes(forged_snapshot(SUM_ONLY, 2, (2, 1.5)))
    assert count_of(loaded, "s", "SUM")[0]["value"] == 3.0


# ------------------------------------------------------------------ pickle


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return make_events(6000, seed=12)


def test_pickle_round_trip_answers_every_query(events: list[dict[str, Any]]) -> None:
    original = engine_with(events)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        loaded = pickle.loads(pickle.dumps(original, protocol=protocol))
        assert type(loaded) is Engine
        assert loaded is not original
        assert_same_answers(loaded, original)
        assert loaded.to_bytes() == original.to_bytes()
        assert loaded.filter_definitions() == original.filter_definitions()
        assert loaded.ingest_definitions() == original.ingest_definitions()


def test_pickle_carries_the_clock_and_stays_live(events: list[dict[str, Any]]) -> None:
    clock = Clock(T0 + 30 * 86_400)
    original = engine_with(events[:100], clock=clock)
    loaded = pickle.loads(pickle.dumps(original))
    assert isinstance(loaded._clock, Clock)
    assert loaded._clock() == clock()
    loaded.ingest(ndjson(events[100:200]))
    assert_same_answers(loaded, engine_with(events[:200]), avg_rel=1e-9)


def test_pickle_of_a_lambda_clock_fails_clearly() -> None:
    engine = Engine(INGEST, FILTERS, clock=lambda: 0.0)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(engine)


def test_pickle_refuses_forged_state() -> None:
    """Unpickling goes through snapshot validation: forged bytes in a pickle are refused."""
    reducer, (data, clock) = Engine(INGEST, [SUM_ONLY]).__reduce__()
    assert Engine.from_bytes(data).to_bytes() == data
    forged = forged_snapshot(SUM_ONLY, 1, (2, 1.0))
    crafted = pickle.dumps((reducer, (forged, clock)))
    reducer_back, args = pickle.loads(crafted)
    with pytest.raises(SnapshotError, match="2 numeric values but a COUNT of 1"):
        reducer_back(*args)


SPAWN_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    import pickle
    import sys

    def answer(engine):
        # Runs in a spawned interpreter: the engine arrived pickled.
        q = {"filterId": "n", "aggregationId": 1, "calculation": "SUM",
             "timeframe": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-03T00:00:00Z"}}
        engine.ingest('{"ts": 1704067300, "v": 2.5}')
        return engine.results(q), engine.to_bytes()

    if __name__ == "__main__":
        sys.path[:0] = sys.argv[1:]
        from test_snapshot import engine_with, make_events
        engine = engine_with(make_events(500, seed=3))
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            rows, data = pool.apply(answer, (engine,))
        engine.ingest('{"ts": 1704067300, "v": 2.5}')
        assert data == engine.to_bytes(), "state differs after the round trip"
        q = {"filterId": "n", "aggregationId": 1, "calculation": "SUM",
             "timeframe": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-03T00:00:00Z"}}
        assert rows == engine.results(q), (rows, engine.results(q))
        print("SPAWN-OK", len(rows))
    """
)


def test_engine_crosses_a_multiprocessing_spawn(tmp_path: Path) -> None:
    script = tmp_path / "spawn_engine.py"
    script.write_text(SPAWN_SCRIPT)
    here = str(Path(__file__).resolve().parent)
    done = subprocess.run(
        [sys.executable, str(script), here, str(Path(here).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "SPAWN-OK" in done.stdout


# ------------------------------------------------------------------ ingest_files


def write_files(tmp: Path, events: list[dict[str, Any]], parts: int) -> list[Path]:
    """``events`` spread over ``parts`` files of every supported kind."""
    paths = []
    for i in range(parts):
        chunk = events[i::parts]
        kind = i % 4
        if kind == 0:
            p = tmp / f"part{i}.ndjson.gz"
            p.write_bytes(gzip.compress(ndjson(chunk).encode()))
        elif kind == 1:
            p = tmp / f"part{i}.ndjson"
            p.write_text(ndjson(chunk) + "\n")
        elif kind == 2:
            p = tmp / f"part{i}.json"
            p.write_text(json.dumps(chunk))
        else:
            p = tmp / f"part{i}.jsonl.gz"
            p.write_bytes(gzip.compress(ndjson(chunk).encode()))
        paths.append(p)
    return paths


def sequential(paths: list[Path]) -> Engine:
    engine = Engine(INGEST, FILTERS, clock=Clock(T0 + 30 * 86_400))
    for p in paths:
        engine.ingest_file(p)
    return engine


@pytest.mark.parametrize("threads", [1, 2, 3, None])
def test_ingest_files_equals_one_by_one(
    tmp_path: Path, events: list[dict[str, Any]], threads: int | None
) -> None:
    paths = write_files(tmp_path, events, 7)
    want = sequential(paths)
    got = Engine(INGEST, FILTERS, clock=Clock(T0 + 30 * 86_400))
    calls: list[tuple[int, int]] = []
    stats = got.ingest_files(paths, threads=threads, progress=lambda d, t: calls.append((d, t)))
    assert_same_answers(got, want, avg_rel=1e-9)
    assert stats.events == len(events)
    total = sum(p.stat().st_size for p in paths)
    assert calls and calls[-1] == (total, total)
    assert all(d <= t == total for d, t in calls)


def test_ingest_file_splits_a_large_ndjson_file(tmp_path: Path) -> None:
    """A 40 MB uncompressed NDJSON file is split into line ranges (threads=2) and gives the
    answers of a single-threaded read."""
    events = make_events(20_000, seed=4)
    path = tmp_path / "big.ndjson"
    line = (ndjson(events) + "\n").encode()
    with path.open("wb") as fh:
        while fh.tell() < 40 << 20:
            fh.write(line)
    want = Engine(INGEST, FILTERS, clock=Clock(T0 + 30 * 86_400))
    want.ingest_file(path)
    got = Engine(INGEST, FILTERS, clock=Clock(T0 + 30 * 86_400))
    stats = got.ingest_file(path, threads=2)
    assert stats.events == want_events(path)
    assert_same_answers(got, want, avg_rel=1e-9)


def want_events(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def test_ingest_files_is_all_or_nothing_and_names_the_file(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    paths = write_files(tmp_path, events[:400], 3)
    bad = tmp_path / "bad.ndjson.gz"
    bad.write_bytes(gzip.compress(b'{"ts": 1704067200}\n{"ts": }\n'))
    engine = Engine(INGEST, FILTERS, clock=Clock(T0 + 30 * 86_400))
    before = engine.to_bytes()
    with pytest.raises(JsonError) as info:
        engine.ingest_files([*paths, bad], threads=2)
    assert str(bad) in str(info.value)
    assert 19 <= info.value.offset <= 27  # on the second line of the decompressed file
    assert engine.to_bytes() == before
    with pytest.raises(EventtallyIOError):
        engine.ingest_files([*paths, tmp_path / "missing.ndjson"])
    assert engine.to_bytes() == before


def test_ingest_files_progress_exception_stops_and_applies_nothing(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    paths = write_files(tmp_path, events[:400], 4)
    engine = Engine(INGEST, FILTERS, clock=Clock(T0 + 30 * 86_400))
    before = engine.to_bytes()

    def boom(done: int, total: int) -> None:
        raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        engine.ingest_files(paths, progress=boom)
    assert engine.to_bytes() == before


def test_ingest_files_argument_errors(tmp_path: Path) -> None:
    engine = Engine(INGEST, FILTERS)
    with pytest.raises(TypeError, match="list of paths"):
        engine.ingest_files(str(tmp_path / "x.ndjson"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        engine.ingest_files([], threads=0)
    assert engine.ingest_files([]).events == 0
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(Exception, match="unsupported file type"):
        engine.ingest_files([tmp_path / "x.csv"])
