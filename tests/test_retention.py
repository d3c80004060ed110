"""Retention tiers and compaction (decision 13) through the Python API, on simulated time.

An injected clock drives 40 days of minute-level events into two engines, one with retention
tiers compacted every simulated day and one without.  The compacted engine must answer its hour
buckets exactly as the uncompacted engine's hourly rollup, for every calculation; keep its minute
buckets inside the first tier unchanged; and hold nothing past its last tier.
"""

from __future__ import annotations

import json
import random
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import eventtally
from eventtally import ConfigError, Engine, SnapshotError
from tests.support import Clock, run_race_script

MINUTE = 60
HOUR = 3600
DAY = 86_400
#: 2024-03-01T00:00:00Z
T0 = 1_709_251_200
DAYS = 40

INGEST = {
    "id": "i",
    "timestamp": {"source": "PROPERTY", "path": "$.t", "format": "UNIX_SECONDS"},
}
AGGREGATIONS = [
    {
        "id": 1,
        "calculations": ["COUNT", "SUM", "AVG", "MIN", "MAX", "PERCENTILES"],
        "calculationField": "$.v",
    },
    {"id": 2, "calculations": ["APPROX_COUNT_DISTINCT"], "calculationField": "$.user"},
]
CALCS = [
    (1, "COUNT"),
    (1, "SUM"),
    (1, "AVG"),
    (1, "MIN"),
    (1, "MAX"),
    (1, "PERCENTILES"),
    (2, "APPROX_COUNT_DISTINCT"),
]
TIERS = [
    {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 7 * DAY},
    {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 30 * DAY},
    {"intervalType": "DAY", "intervalCount": 1, "keepSeconds": 35 * DAY},
]


def _filter(retention: list[dict[str, Any]] | None) -> dict[str, Any]:
    f: dict[str, Any] = {
        "id": "f",
        "intervalType": "MINUTE",
        "intervalCount": 1,
        "groupings": ["$.g"],
        "aggregations": AGGREGATIONS,
    }
    if retention is not None:
        f["retention"] = retention
    return f


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day_batch(day: int, rng: random.Random) -> bytes:
    """One simulated day: two events per minute for each of three groups."""
    events = []
    start = T0 + day * DAY
    for m in range(1440):
        for g in ("a", "b", "c"):
            for _ in range(2):
                events.append(
                    {
                        "t": start + m * MINUTE + rng.randrange(60),
                        "g": g,
                        "v": rng.randrange(10_000) / 8,
                        "user": f"u{rng.randrange(300)}",
                    }
                )
    return json.dumps(events).encode()


def _query(agg: int, calc: str, start: float, end: float, rollup: str | None = None) -> dict:
    q: dict[str, Any] = {
        "filterId": "f",
        "aggregationId": agg,
        "calculation": calc,
        "startTime": _iso(start),
        "endTime": _iso(end),
    }
    if calc == "PERCENTILES":
        q["percentile"] = 0.9
    if rollup:
        q["recalculatedInterval"] = {"type": rollup, "frequency": 1}
    return q


@pytest.fixture(scope="module")
def simulated() -> tuple[Engine, Engine, Clock, list[dict[str, Any]]]:
    """40 simulated days; the tiered engine is compacted after every day, as a server would."""
    clock = Clock(T0)
    tiered = Engine(INGEST, [_filter(TIERS)], clock=clock)
    plain = Engine(INGEST, [_filter(None)], clock=clock)
    rng = random.Random(10)
    reports = []
    for day in range(DAYS):
        body = _day_batch(day, rng)
        tiered.ingest(body)
        plain.ingest(body)
        clock.now = T0 + (day + 1) * DAY
        reports.append(tiered.compact())
    return tiered, plain, clock, reports


def test_hour_buckets_equal_the_hourly_rollup_of_the_uncompacted_engine(
    simulated: tuple[Engine, Engine, Clock, list[dict[str, Any]]],
) -> None:
    tiered, plain, clock, _ = simulated
    now = clock.now
    # The hour tier holds [now - 30 days, now - 7 days) (aligned to days).
    start, end = now - 30 * DAY, now - 7 * DAY
    for agg, calc in CALCS:
        got = tiered.results(_query(agg, calc, start, end))
        want = plain.results(_query(agg, calc, start, end, "HOUR"))
        assert len(got) == 23 * 24 * 3, calc
        assert got == want, calc


def test_minute_buckets_inside_the_first_tier_are_unchanged(
    simulated: tuple[Engine, Engine, Clock, list[dict[str, Any]]],
) -> None:
    tiered, plain, clock, _ = simulated
    start, end = clock.now - 7 * DAY, clock.now
    for agg, calc in CALCS:
        got = tiered.results(_query(agg, calc, start, end))
        assert len(got) == 7 * 1440 * 3, calc
        assert got == plain.results(_query(agg, calc, start, end)), calc


def test_rollups_coarser_than_the_tiers_give_the_uncompacted_numbers(
    simulated: tuple[Engine, Engine, Clock, list[dict[str, Any]]],
) -> None:
    tiered, plain, clock, _ = simulated
    # The day tier starts 35 days back; daily rollups over everything still held agree.
    start, end = clock.now - 35 * DAY, clock.now
    for agg, calc in CALCS:
        got = tiered.results(_query(agg, calc, start, end, "DAY"))
        assert got == plain.results(_query(agg, calc, start, end, "DAY")), calc
        assert len(got) == 35 * 3


def test_data_past_the_last_tier_is_gone(
    simulated: tuple[Engine, Engine, Clock, list[dict[str, Any]]],
) -> None:
    tiered, plain, clock, reports = simulated
    old = _query(1, "COUNT", T0, clock.now - 35 * DAY, "DAY")
    assert tiered.results(old) == []
    assert len(plain.results(old)) == 5 * 3
    assert sum(r["cells_dropped"] for r in reports) > 0
    assert sum(r["cells_merged"] for r in reports) > 0
    # State is bounded by the tiers: far smaller than the uncompacted engine's. (Under 55 %,
    # not a third: small PERCENTILES cells keep their values exactly, which weighs on the seven
    # days of minute cells both engines hold, and compacted hour cells keep up to 100 values on
    # the heap while a one-value minute cell costs only its 64-byte sketch; the year-long bound
    # is in benches/run_retention.py.)
    assert tiered.state_bytes() * 20 < plain.state_bytes() * 11


def test_the_answer_names_the_resolutions_it_used(
    simulated: tuple[Engine, Engine, Clock, list[dict[str, Any]]],
) -> None:
    tiered, _, clock, _ = simulated
    now = clock.now
    res = tiered.resolutions(_query(1, "COUNT", now - 20 * DAY, now))
    assert [(r["intervalType"], r["startTime"], r["endTime"]) for r in res] == [
        ("MINUTE", _iso(now - 7 * DAY), _iso(now)),
        ("HOUR", _iso(now - 20 * DAY), _iso(now - 7 * DAY)),
    ]
    only_days = tiered.resolutions(_query(1, "COUNT", now - 34 * DAY, now - 31 * DAY))
    assert [r["intervalType"] for r in only_days] == ["DAY"]
    usage = tiered.tier_usage()["f"]
    assert [(u["intervalType"], u["rows"]) for u in usage] == [
        ("MINUTE", 7 * 1440 * 3),
        ("HOUR", 23 * 24 * 3),
        ("DAY", 5 * 3),
    ]


def test_late_batches_older_than_a_horizon_are_counted_once_in_their_tier(
    simulated: tuple[Engine, Engine, Clock, list[dict[str, Any]]],
) -> None:
    tiered, plain, clock, _ = simulated
    a = Engine.from_bytes(tiered.to_bytes(), clock=clock)
    b = Engine.from_bytes(plain.to_bytes(), clock=clock)
    # Like a WAL replay after a compacted snapshot: events 20 days and 33 days old.
    late = json.dumps(
        [
            {"t": clock.now - 20 * DAY + 125, "g": "a", "v": 1e6, "user": "late"},
            {"t": clock.now - 33 * DAY + 7, "g": "z", "v": -5, "user": "late"},
            {"t": clock.now - 39 * DAY, "g": "a", "v": 3, "user": "gone"},
        ]
    )
    stats = a.ingest(late)
    b.ingest(late)
    assert stats.accepted == 3
    start, end = clock.now - 35 * DAY, clock.now
    for agg, calc in CALCS:
        got = a.results(_query(agg, calc, start, end, "DAY"))
        assert got == b.results(_query(agg, calc, start, end, "DAY")), calc
    hour = a.results(_query(1, "MAX", clock.now - 20 * DAY, clock.now - 20 * DAY + HOUR))
    assert {r["groupings"]["$.g"]: r["value"] for r in hour}["a"] == 1e6
    # The event past the last tier is not kept.
    assert a.results(_query(1, "COUNT", T0, clock.now - 35 * DAY)) == []


def test_compaction_is_idempotent_and_snapshots_keep_the_tiers(
    simulated: tuple[Engine, Engine, Clock, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    tiered, _, clock, _ = simulated
    copy = Engine.from_bytes(tiered.to_bytes(), clock=clock)
    again = copy.compact()
    assert (again["cells_merged"], again["cells_dropped"]) == (0, 0)
    assert copy.to_bytes() == tiered.to_bytes()
    path = tmp_path / "s.etsnap"
    copy.save(path)
    loaded = Engine.load(path, clock=clock)
    assert _rows(loaded) == _rows(tiered)
    assert loaded.filter_definitions()[0]["retention"] == TIERS
    # An explicit earlier `now` never un-compacts anything.
    assert loaded.compact(T0)["cells_merged"] == 0
    assert _rows(loaded) == _rows(tiered)


def test_merge_fits_both_states_to_the_later_tiers() -> None:
    clock = Clock(T0 + 10 * DAY)
    rng = random.Random(3)
    a = Engine(INGEST, [_filter(TIERS)], clock=clock)
    b = Engine(INGEST, [_filter(TIERS)], clock=clock)
    whole = Engine(INGEST, [_filter(None)], clock=clock)
    for day in range(10):
        body = _day_batch(day, rng)
        (a if day % 2 else b).ingest(body)
        whole.ingest(body)
    a.compact()  # b stays uncompacted: its minute rows must not merge into a's hours
    a.merge(b)
    start, end = T0, T0 + 10 * DAY
    for agg, calc in CALCS:
        got = a.results(_query(agg, calc, start, end, "DAY"))
        assert got == whole.results(_query(agg, calc, start, end, "DAY")), calc


def test_default_retention_applies_to_filters_without_their_own() -> None:
    clock = Clock(T0 + 3 * DAY)
    hourly = {**_filter(None), "id": "h", "intervalType": "HOUR"}
    e = Engine(INGEST, [_filter(None), hourly], clock=clock)
    e.ingest(_day_batch(0, random.Random(1)))
    default = [
        {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": DAY},
        {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 2 * DAY},
        {"intervalType": "DAY", "intervalCount": 1, "keepSeconds": 0},
    ]
    report = e.compact(default_retention=default)
    assert report["filters"] == 2
    usage = e.tier_usage()
    # Day 0 is older than two days: both filters now hold it as days.
    assert [(u["intervalType"], u["rows"]) for u in usage["f"]] == [
        ("MINUTE", 0),
        ("HOUR", 0),
        ("DAY", 3),
    ]
    assert [(u["intervalType"], u["rows"]) for u in usage["h"]] == [("HOUR", 0), ("DAY", 3)]
    # Without a default (and without their own tiers) nothing is compacted.
    plain = Engine(INGEST, [_filter(None)], clock=clock)
    plain.ingest(_day_batch(0, random.Random(1)))
    assert plain.compact()["filters"] == 0


@pytest.mark.parametrize(
    ("tiers", "field"),
    [
        ([{"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 60}], "retention[0]"),
        (
            [
                {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 600},
                {"intervalType": "MINUTE", "intervalCount": 7, "keepSeconds": 6000},
                {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 60000},
            ],
            "retention[2].intervalCount",
        ),
        (
            [
                {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 600},
                {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 60},
            ],
            "retention[1].keepSeconds",
        ),
        (
            [
                {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 0},
                {"intervalType": "HOUR", "intervalCount": 1, "keepSeconds": 0},
            ],
            "retention[0].keepSeconds",
        ),
        ([{"intervalType": "MINUTE", "intervalCount": 1}], "retention[0].keepSeconds"),
        ([{"intervalType": "MINUTE", "keepSeconds": "7d"}], "retention[0].keepSeconds"),
        ("forever", "retention"),
    ],
)
def test_invalid_retention_is_refused_naming_the_field(tiers: Any, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        Engine(INGEST, [_filter(tiers)])
    assert f"filters[0].{field}" in str(err.value)


def test_invalid_default_retention_names_the_field() -> None:
    e = Engine(INGEST, [_filter(None)])
    bad = [
        {"intervalType": "MINUTE", "intervalCount": 1, "keepSeconds": 600},
        {"intervalType": "WEEK", "intervalCount": 1, "keepSeconds": 6000},
        {"intervalType": "MONTH", "intervalCount": 1, "keepSeconds": 0},
    ]
    with pytest.raises(ConfigError, match=r"default_retention\[2\]\.intervalCount"):
        e.compact(default_retention=bad)


def _rows(e: Engine) -> dict[str, list[tuple[str, int]]]:
    """Rows per tier (bytes depend on buffer capacities, which a reload tightens)."""
    return {f: [(u["intervalType"], u["rows"]) for u in us] for f, us in e.tier_usage().items()}


DATA = Path(__file__).parent / "data" / "snapshots"


def test_version_1_snapshots_from_before_retention_still_load() -> None:
    v1 = (DATA / "v1-main-71c3196.etsnap").read_bytes()
    assert v1[8:12] == (1).to_bytes(4, "little")
    e = Engine.from_bytes(v1, clock=Clock(1_704_067_200 + 10 * DAY))
    before = e.results(_v1_query("HOUR"))
    assert sum(r["value"] for r in before) == 600
    report = e.compact(default_retention=TIERS)
    assert report["cells_merged"] > 0
    assert e.results(_v1_query(None)) == before  # hours now, the same numbers
    assert e.to_bytes()[8:12] == eventtally._core.SNAPSHOT_FORMAT_VERSION.to_bytes(4, "little")
    assert _rows(Engine.from_bytes(e.to_bytes())) == _rows(e)


def _v1_query(rollup: str | None) -> dict[str, Any]:
    q: dict[str, Any] = {"filterId": "f", "aggregationId": 1, "calculation": "COUNT"}
    if rollup:
        q["recalculatedInterval"] = {"type": rollup, "frequency": 1}
    return q


def test_a_corrupt_tier_section_is_refused() -> None:
    e = Engine(INGEST, [_filter(TIERS)], clock=Clock(T0 + 10 * DAY))
    e.ingest(_day_batch(0, random.Random(2)))
    e.compact()
    data = bytearray(e.to_bytes())
    # The tier section ends the payload; flip the last floor's top byte and fix the CRC so only
    # the layout check can catch it.
    data[-1] ^= 0x40
    payload = bytes(data[24:])
    data[20:24] = zlib.crc32(payload).to_bytes(4, "little")
    with pytest.raises(SnapshotError, match="tier"):
        Engine.from_bytes(bytes(data))


def test_a_compaction_racing_concurrent_batches_equals_compacting_after_them() -> None:
    """Differential: 4 threads apply batches (late ones inside the compacted range, young ones,
    new groups) while a compaction runs; the final state answers every calculation exactly as
    a copy that got the same batches first and was compacted after (``tests/race_compact.py``).

    It runs in a subprocess under a hard limit: a deadlock between the compaction's steps and
    the batches cannot be interrupted inside this process.
    """
    run_race_script("race_compact.py", rounds=3, deadline=120, timeout=600)


def test_batches_queued_during_compaction_steps_equal_compacting_after_them() -> None:
    """The same differential with the pending path forced: each compaction step keeps the state
    lock 3 ms longer (``hold_compaction_steps``), so the batches that arrive meanwhile are
    queued and applied by the step instead of waiting; the script checks some were
    (``batches_deferred``), that none was refused, and read-your-writes: after a batch's ingest
    returned, the next query counts it (``tests/race_compact.py --hold-us``)."""
    run_race_script(
        "race_compact.py", rounds=2, deadline=120, timeout=600, extra=("--hold-us", "3000")
    )
